/* cli/devserve_map.c (moonbox-device): a window granted at run time
 * (DMA_MAP with its memfd) and the dirty map. What a hostile VMM's
 * DMA_MAP may not do (a descriptor that is no sealed memfd, a window past
 * its end or not whole pages, flags, argsz, a dirty bit past the map, an
 * overlap), that only the window is mapped, that a revoked window comes
 * back at its old address, and that the device's writes are marked in
 * the dirty map at the bit the VMM named. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The device process's side is not part of the library: compiled in whole. */
#include "cli/devserve.c"
#include "cli/devserve_map.c"
#include "cli/devfault.c"

#define MEMFD 0x10000u /* the "region": 64 KiB */

static int memfd(size_t size, bool seal)
{
	int fd = memfd_create("t", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (seal)
		assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	return fd;
}

static int setup(void **state)
{
	struct mb_machine_config mc = { .headless = true };
	if (mb_machine_create(&mc, &ds_machine))
		return -1;
	int fd = memfd(4096, true); /* 32768 pages' bits */
	char msg[200];
	return ds_dirty_take(fd, 4096, msg, sizeof msg);
}

static int teardown(void **state)
{
	mb_machine_destroy(ds_machine);
	munmap(ds_dirty, 4096);
	ds_dirty = NULL;
	return 0;
}

static struct mb_dp_dma_map win(uint64_t addr, uint64_t off, uint64_t size)
{
	return (struct mb_dp_dma_map){ .argsz = sizeof(struct mb_dp_dma_map),
				       .flags = MB_DP_DMA_MAP_READ | MB_DP_DMA_MAP_WRITE,
				       .offset = off, .addr = addr, .size = size,
				       .dirty_bit = 100 };
}

static int map(struct mb_dp_dma_map q, int fd, const char *want)
{
	const char *why;
	int e = ds_dma_map((const uint8_t *)&q, sizeof q, fd, &why);
	if (want) {
		assert_int_equal(e, EINVAL);
		assert_non_null(strstr(why, want));
	}
	assert_int_equal(fcntl(fd, F_GETFD), -1); /* consumed either way */
	return e;
}

static void test_refused(void **state)
{
	const char *why;
	struct mb_dp_dma_map q = win(0x40000, 0x1000, 0x2000);
	int p[2];
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	map(q, p[0], "not a memfd sealed");
	map(q, memfd(MEMFD, false), "not a memfd sealed");
	map(win(0x40000, 0xf000, 0x2000), memfd(MEMFD, true), "outside its memfd");
	map(win(0x40000, 0x1000, 0x1800), memfd(MEMFD, true), "not whole pages");
	map(win(0x40800, 0x1000, 0x1000), memfd(MEMFD, true), "not whole pages");
	map(win(~0ull & ~0xfffull, 0, 0x2000), memfd(MEMFD, true), "not whole pages");
	q.flags = MB_DP_DMA_MAP_WRITE;
	map(q, memfd(MEMFD, true), "flags");
	q.flags = 0x7;
	map(q, memfd(MEMFD, true), "flags");
	q = win(0x40000, 0x1000, 0x2000);
	q.argsz = 32; /* vfio-user's, without the dirty bit */
	map(q, memfd(MEMFD, true), "argsz");
	q = win(0x40000, 0x1000, 0x2000);
	q.dirty_bit = 32768 - 1; /* the second page past the map */
	map(q, memfd(MEMFD, true), "dirty bit outside");
	q.dirty_bit = ~0ull - 1;
	map(q, memfd(MEMFD, true), "dirty bit outside");
	q = win(0x40000, 0x1000, 0x2000);
	assert_int_equal(ds_dma_map((const uint8_t *)&q, sizeof q, -1, &why), EINVAL);
	assert_non_null(strstr(why, "no memfd"));
	assert_int_equal(ds_dma_map((const uint8_t *)&q, sizeof q - 1, memfd(MEMFD, true),
				    &why), EINVAL);
	assert_int_equal(mb_mem_count(ds_machine->mem), 0); /* nothing mapped */
}

static void test_window(void **state)
{
	int fd = memfd(MEMFD, true);
	int keep = dup(fd);
	char *all = mmap(NULL, MEMFD, PROT_READ | PROT_WRITE, MAP_SHARED, keep, 0);
	assert_true(all != MAP_FAILED);
	memcpy(all + 0x3000, "window", 6);
	assert_int_equal(map(win(0x40000, 0x3000, 0x2000), fd, NULL), 0);
	struct mb_mem *mem = ds_machine->mem;
	assert_int_equal(mb_mem_count(mem), 1);
	char buf[8] = { 0 };
	assert_int_equal(mb_mem_read(mem, 0x40000, buf, 6), 0);
	assert_string_equal(buf, "window");
	assert_null(mb_mem_ptr(mem, 0x3f000, 1, false)); /* the memfd's other pages */
	assert_null(mb_mem_ptr(mem, 0x42000, 1, false));
	assert_null(mb_mem_ptr(mem, 0x41fff, 2, false));
	/* a write marks its page at the VMM's bit: 100 + page 1 */
	assert_int_equal(mb_mem_write(mem, 0x41010, "x", 1), 0);
	assert_true(all[0x4010] == 'x');
	assert_int_equal(ds_dirty[1], 1ull << (101 - 64));
	assert_int_equal(ds_dirty[0], 0);
	/* through a pointer for writing, too */
	assert_non_null(mb_mem_ptr(mem, 0x40000, 8, true));
	assert_int_equal(ds_dirty[1], 1ull << (101 - 64) | 1ull << (100 - 64));
	/* an overlap is refused; the same window again is nothing new */
	map(win(0x41000, 0, 0x2000), memfd(MEMFD, true), "overlaps");
	assert_int_equal(map(win(0x40000, 0x3000, 0x2000), memfd(MEMFD, true), NULL), 0);
	assert_int_equal(mb_mem_count(mem), 1);
	/* revoked (DMA_UNMAP), then granted again: at its old address */
	uint8_t *host = mb_mem_region(mem, 0)->host;
	struct mb_dp_unmap u = { sizeof u, 0, 0x40000, 0x2000 };
	const char *why;
	assert_int_equal(ds_unmap((const uint8_t *)&u, sizeof u, &why), 0);
	assert_int_not_equal(mb_mem_read(mem, 0x40000, buf, 1), 0);
	struct mb_dp_dma_map q = win(0x40000, 0x3000, 0x2000);
	q.flags = MB_DP_DMA_MAP_READ; /* not as it was */
	map(q, memfd(MEMFD, true), "other access");
	assert_int_equal(map(win(0x40000, 0x3000, 0x2000), memfd(MEMFD, true), NULL), 0);
	assert_ptr_equal(mb_mem_region(mem, 0)->host, host);
	memset(buf, 0, sizeof buf);
	/* another memfd: this one is its memory now */
	assert_int_equal(mb_mem_read(mem, 0x40000, buf, 6), 0);
	assert_int_equal(buf[0], 0);
	munmap(all, MEMFD);
	close(keep);
}

static void test_live_add(void **state)
{
	/* a second window below the first: appended out of order, found */
	struct mb_mem *mem = ds_machine->mem;
	assert_int_equal(map(win(0x80000, 0, 0x1000), memfd(MEMFD, true), NULL), 0);
	assert_int_equal(map(win(0x20000, 0, 0x1000), memfd(MEMFD, true), NULL), 0);
	assert_non_null(mb_mem_ptr(mem, 0x20000, 0x1000, false));
	assert_non_null(mb_mem_ptr(mem, 0x80000, 0x1000, false));
	assert_null(mb_mem_ptr(mem, 0x21000, 1, false));
	assert_null(mb_mem_ptr(mem, 0x1f000, 0x2000, false));
}

static void test_control(void **state)
{
	/* a descriptor with another command: refused, closed */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	ds_ctl_fd = sv[0];
	struct mb_dp_hdr h = { .id = 3, .cmd = MB_DP_SAVE, .size = sizeof h };
	int fd = memfd(MEMFD, true);
	ds_control_map((const uint8_t *)&h, sizeof h, fd);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	struct mb_dp_hdr a;
	assert_true(recv(sv[1], &a, sizeof a, MSG_DONTWAIT) >= (ssize_t)sizeof a);
	assert_true(a.flags & MB_DP_F_ERROR);
	assert_int_equal(a.id, 3);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_refused), T(test_window), T(test_live_add), T(test_control),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
