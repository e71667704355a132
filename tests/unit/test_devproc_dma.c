/* DMA of a device process, the VMM's side (core/devproc_dma.c): which
 * grants are accepted, the memfd windows a granted device gets, and the
 * check of every DMA_READ / DMA_WRITE a device sends against its grants. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/devproc_dma.h"

#define RAM 0x10000

static struct mb_machine *m;

static int setup(void **state)
{
	struct mb_machine_config mc = { .headless = true };
	if (mb_machine_create(&mc, &m) || mb_mem_add(m->mem, 0, RAM, 0, NULL, "ram"))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	mb_machine_destroy(m);
	return 0;
}

static int init(struct mb_dp_dmastate *d, enum mb_dp_dma mode,
		const struct mb_dp_grant *g, unsigned n)
{
	struct mb_devproc_config c = { .dma = mode, .grants = g, .ngrants = n };
	return mb_dp_dma_init(d, m, &c);
}

static void test_grant_rules(void **state)
{
	struct mb_dp_dmastate d;
	const struct mb_dp_grant ok[] = { { 0x1000, 0x2000 } };
	const struct mb_dp_grant odd[] = { { 0x1000, 0x800 } };
	const struct mb_dp_grant out[] = { { RAM - 0x1000, 0x2000 } };
	const struct mb_dp_grant both[] = { { 0x1000, 0x2000 }, { 0x2000, 0x1000 } };
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, ok, 1), 0);
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, NULL, 0), -EINVAL);
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_SHARED, ok, 1), -EINVAL);
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, odd, 1), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "4K pages"));
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_MESSAGE, out, 1), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "not inside one RAM region"));
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, both, 2), -EEXIST);
	mb_dp_dma_fini(&d);
}

static void test_windows(void **state)
{
	struct mb_dp_dmastate d;
	const struct mb_dp_grant g[] = { { 0x3000, 0x1000 }, { 0x8000, 0x2000 } };
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, g, 2), 0);
	assert_int_equal(mb_dp_dma_nmem(&d, m), 2);
	atomic_store(&d.revoked[1], true);
	int fds[MB_DP_MAX_MEM];
	struct mb_dp_mem mem[MB_DP_MAX_MEM];
	unsigned n;
	assert_int_equal(mb_dp_dma_mem(&d, m, fds, mem, &n), 0);
	assert_int_equal(n, 2); /* a revoked grant keeps its slot */
	assert_int_equal(fds[0], mb_mem_region_fd(m->mem, 0));
	assert_int_equal(mem[0].offset, 0x3000);
	assert_int_equal(mem[0].size, 0x1000);
	assert_int_equal(mem[0].fd_size, RAM);
	assert_true(mem[1].flags & MB_DP_MEM_REVOKED);
	assert_int_not_equal(fds[1], mb_mem_region_fd(m->mem, 0));
	mb_dp_dma_close_mem(mem, fds, n);
	assert_int_equal(fcntl(fds[1], F_GETFD), -1); /* the placeholder closed */
	assert_int_equal(fcntl(fds[0], F_GETFD) >= 0, 1); /* RAM's fd stays */
	mb_dp_dma_fini(&d);
}

/* A request as a device sends it; the reply into out; its length. */
static size_t ask(struct mb_dp_dmastate *d, uint16_t cmd, uint64_t addr, uint64_t count,
		  const void *data, uint8_t *out)
{
	static uint8_t msg[256];
	struct mb_dp_hdr h = { .id = 7, .cmd = cmd };
	struct mb_dp_dma_rw rw = { addr, count };
	size_t n = sizeof h + sizeof rw + (data ? count : 0);
	h.size = (uint32_t)n;
	memcpy(msg, &h, sizeof h);
	memcpy(msg + sizeof h, &rw, sizeof rw);
	if (data)
		memcpy(msg + sizeof h + sizeof rw, data, count);
	return mb_dp_dma_serve(d, m, "dev", msg, n, out, 4096);
}

static void test_serve(void **state)
{
	struct mb_dp_dmastate d;
	const struct mb_dp_grant g[] = { { 0x1000, 0x2000 }, { 0x8000, 0x1000 } };
	uint8_t out[4096], buf[16];
	struct mb_dp_hdr *h = (void *)out;
	assert_int_equal(init(&d, MB_DP_DMA_MESSAGE, g, 2), 0);
	/* inside: written, then read back */
	size_t n = ask(&d, MB_DP_DMA_WRITE, 0x2ff8, 8, "granted!", out);
	assert_int_equal(n, sizeof *h + sizeof(struct mb_dp_dma_rw));
	assert_int_equal(h->flags, MB_DP_F_REPLY);
	assert_int_equal(h->id, 7);
	assert_int_equal(mb_mem_read(m->mem, 0x2ff8, buf, 8), 0);
	assert_memory_equal(buf, "granted!", 8);
	n = ask(&d, MB_DP_DMA_READ, 0x2ff8, 8, NULL, out);
	assert_int_equal(n, sizeof *h + sizeof(struct mb_dp_dma_rw) + 8);
	assert_memory_equal(out + sizeof *h + sizeof(struct mb_dp_dma_rw), "granted!", 8);
	assert_int_equal(atomic_load(&d.reads), 1);
	assert_int_equal(atomic_load(&d.writes), 1);
	assert_int_equal(atomic_load(&d.refused), 0);
	/* one byte past the grant's end, or between grants: refused, RAM
	 * untouched, counted, the reply says why */
	n = ask(&d, MB_DP_DMA_WRITE, 0x2ff9, 8, "XXXXXXXX", out);
	assert_true(h->flags & MB_DP_F_ERROR);
	assert_int_equal(h->error, EFAULT);
	assert_int_equal(n, h->size);
	assert_int_equal(mb_mem_read(m->mem, 0x2ff8, buf, 8), 0);
	assert_memory_equal(buf, "granted!", 8);
	assert_non_null(strstr(d.why, "outside its grants"));
	ask(&d, MB_DP_DMA_READ, 0x5000, 4, NULL, out);
	assert_true(h->flags & MB_DP_F_ERROR);
	assert_int_equal(atomic_load(&d.refused), 2);
	/* revoked: refused from then on */
	ask(&d, MB_DP_DMA_READ, 0x8000, 4, NULL, out);
	assert_false(h->flags & MB_DP_F_ERROR);
	atomic_store(&d.revoked[1], true);
	ask(&d, MB_DP_DMA_READ, 0x8000, 4, NULL, out);
	assert_true(h->flags & MB_DP_F_ERROR);
	/* malformed: no count, a size that lies, a count larger than sent */
	ask(&d, MB_DP_DMA_READ, 0x1000, 0, NULL, out);
	assert_true(h->flags & MB_DP_F_ERROR);
	uint8_t msg[64] = { 0 };
	struct mb_dp_hdr q = { .cmd = MB_DP_DMA_WRITE, .size = 60 };
	struct mb_dp_dma_rw rw = { 0x1000, 40 };
	memcpy(msg, &q, sizeof q);
	memcpy(msg + sizeof q, &rw, sizeof rw);
	mb_dp_dma_serve(&d, m, "dev", msg, 48, out, sizeof out);
	assert_true(h->flags & MB_DP_F_ERROR);
	assert_int_equal(mb_dp_dma_serve(&d, m, "dev", msg, 8, out, sizeof out), 0);
	mb_dp_dma_fini(&d);
	/* no grants: all RAM, and nothing outside it */
	assert_int_equal(init(&d, MB_DP_DMA_MESSAGE, NULL, 0), 0);
	ask(&d, MB_DP_DMA_READ, RAM - 4, 4, NULL, out);
	assert_false(h->flags & MB_DP_F_ERROR);
	ask(&d, MB_DP_DMA_READ, RAM - 4, 8, NULL, out);
	assert_true(h->flags & MB_DP_F_ERROR);
	assert_non_null(strstr(d.why, "not in guest RAM"));
	mb_dp_dma_fini(&d);
	/* shared mode maps RAM: it never asks */
	assert_int_equal(init(&d, MB_DP_DMA_SHARED, NULL, 0), 0);
	ask(&d, MB_DP_DMA_READ, 0x1000, 4, NULL, out);
	assert_true(h->flags & MB_DP_F_ERROR);
	mb_dp_dma_fini(&d);
}

static void test_revoked_region(void **state)
{
	struct mb_mem *mem = mb_mem_new();
	uint8_t b[4];
	assert_int_equal(mb_mem_add(mem, 0x1000, 0x1000, 0, NULL, "a"), 0);
	unsigned gen = mb_mem_gen(mem);
	assert_non_null(mb_mem_ptr(mem, 0x1000, 4, false));
	assert_int_equal(mb_mem_revoke(mem, 0), 0);
	assert_int_not_equal(mb_mem_gen(mem), gen);
	assert_null(mb_mem_ptr(mem, 0x1000, 4, false));
	assert_null(mb_mem_ptr(mem, 0x1800, 4, true));
	assert_int_equal(mb_mem_read(mem, 0x1000, b, 4), -EFAULT);
	assert_int_equal(mb_mem_write(mem, 0x1000, b, 4), -EFAULT);
	assert_int_equal(mb_mem_revoke(mem, 1), -EINVAL);
	mb_mem_free(mem);
}

/* Grants at run time: the same rules as the CREATE's, each error naming
 * the window; the same window again takes its revoked slot; the DMA_MAP
 * of a slot and its dirty bit (the limit: tests/lua/test_isolate.lua). */
static void test_grant_runtime(void **state)
{
	struct mb_dp_dmastate d;
	const struct mb_dp_grant g[] = { { 0x3000, 0x1000 } };
	assert_int_equal(init(&d, MB_DP_DMA_GRANTED, g, 1), 0);
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x5001, 0x1000), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "dev: 0x5001+0x1000 is not a whole number"));
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", RAM - 0x1000, 0x2000), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "not inside one RAM region"));
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x2000, 0x2000), -EEXIST);
	assert_non_null(strstr(mb_errmsg(), "overlaps grants[1] (0x3000+0x1000)"));
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x8000, 0x2000), 1);
	assert_true(atomic_load(&d.revoked[1])); /* until its DMA_MAP is done */
	atomic_store(&d.revoked[1], false);
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x8000, 0x2000), -EEXIST);
	assert_non_null(strstr(mb_errmsg(), "granted already"));
	atomic_store(&d.revoked[1], true); /* revoked: the same window again */
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x8000, 0x2000), 1);
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x9000, 0x1000), -EEXIST);
	assert_non_null(strstr(mb_errmsg(), "overlaps revoked grants[2]"));
	assert_int_equal(d.n, 2);
	assert_int_equal(mb_dp_dma_nmem(&d, m), 1); /* fds: the CREATE's only */
	struct mb_dp_dma_map q;
	int fd;
	assert_int_equal(mb_dp_dma_map_of(&d, m, 1, &q, &fd), 0);
	assert_int_equal(fd, mb_mem_region_fd(m->mem, 0));
	assert_int_equal(q.argsz, sizeof q);
	assert_int_equal(q.flags, MB_DP_DMA_MAP_READ | MB_DP_DMA_MAP_WRITE);
	assert_int_equal(q.offset, 0x8000);
	assert_int_equal(q.addr, 0x8000);
	assert_int_equal(q.size, 0x2000);
	assert_int_equal(q.dirty_bit, 8); /* page 8 of the one region */
	mb_dp_dma_fini(&d);
	/* shared: nothing to grant; message without grants: all RAM already */
	assert_int_equal(init(&d, MB_DP_DMA_SHARED, NULL, 0), 0);
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x1000, 0x1000), -EINVAL);
	mb_dp_dma_fini(&d);
	assert_int_equal(init(&d, MB_DP_DMA_MESSAGE, NULL, 0), 0);
	assert_int_equal(mb_dp_dma_grant(&d, m, "dev", 0x1000, 0x1000), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "nothing to grant"));
	assert_int_equal(d.dirty_fd, -1); /* the VMM writes, and marks */
	mb_dp_dma_fini(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grant_rules),
		cmocka_unit_test(test_windows),
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_revoked_region),
		cmocka_unit_test(test_grant_runtime),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
