/* virtio-console behind the virtio-mmio transport, driven as a driver
 * does (registers, rings in a fake guest memory) with a fake backend:
 * output chains, input into posted buffers with backpressure (refused
 * bytes, accept() when buffers come, nothing before the port's first
 * output), config space, emerg_wr, EVENT_IDX, a malformed chain, reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox/virtio_console.h"
#include "virtio_driver.h"

#define RAM (1u << 20)
#define N 8
#define BUF 0x10000u

struct fx {
	struct mb_mem *mem;
	struct mb_virtio_console *con;
	struct mb_virtio *t;
	struct mb_chr chr;
	char out[256];
	size_t out_len;
	int accepts, raises, level;
	struct vd d;
};

/* ---- a backend that records ----------------------------------------------- */

static void chr_write(struct mb_chr *c, const void *buf, size_t len)
{
	struct fx *f = (struct fx *)((char *)c - offsetof(struct fx, chr));
	memcpy(f->out + f->out_len, buf, len);
	f->out_len += len;
}

static void chr_accept(struct mb_chr *c)
{
	struct fx *f = (struct fx *)((char *)c - offsetof(struct fx, chr));
	f->accepts++;
}

static const struct mb_chr_ops chr_ops = { chr_write, chr_accept, NULL };

static void irq_set(void *ctx, unsigned line, int level)
{
	struct fx *f = ctx;
	f->raises += level && !f->level;
	f->level = level;
}

/* ---- the driver's side (virtio_driver.h) ----------------------------------- */

/* Post one device-writable receive buffer at descriptor i. */
static void post_rx(struct fx *f, unsigned i, uint32_t len)
{
	vd_desc(&f->d, 0, i, BUF + 0x1000 * i, len, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, (uint16_t)i);
	vd_kick(&f->d, 0);
}

/* The port's first output (the guest's hvc is up): opens input. */
static void hello(struct fx *f)
{
	*(char *)vd_gp(&f->d, BUF + 0xf000) = '>';
	vd_desc(&f->d, 1, N - 1, BUF + 0xf000, 1, 0, 0);
	vd_offer(&f->d, 1, N - 1);
	vd_kick(&f->d, 1);
}

static size_t input(struct fx *f, const char *s)
{
	return f->chr.rx(f->chr.rx_dev, (const uint8_t *)s, strlen(s));
}

/* ---- fixture ------------------------------------------------------------------ */

static int make(struct fx *f, uint16_t cols, uint16_t rows)
{
	memset(f, 0, sizeof *f);
	f->chr.ops = &chr_ops;
	if (!(f->mem = vd_ram(RAM)))
		return -1;
	struct mb_virtio_console_config cc = { &f->chr, cols, rows };
	if (!(f->con = mb_virtio_console_new(&cc)))
		return -1;
	struct mb_virtio_config c = {
		&mb_virtio_console_ops, f->con, mb_virtio_console_features(f->con),
		f->mem, { irq_set, f, 5 }, -1,
	};
	if (!(f->t = mb_virtio_new(&c)))
		return -1;
	vd_attach(&f->d, f->t, f->mem);
	mb_virtio_console_bind(f->con, f->t);
	return 0;
}

static int setup(void **state)
{
	static struct fx f;
	*state = &f;
	return make(&f, 0, 0);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	mb_virtio_console_free(f->con);
	assert_null(f->chr.rx); /* detached from the backend */
	mb_virtio_free(f->t);
	mb_mem_free(f->mem);
	return 0;
}

static uint64_t v1(void)
{
	return 1ull << VIRTIO_F_VERSION_1;
}

/* ---- cases ---------------------------------------------------------------------- */

static void test_registers_and_config(void **state)
{
	struct fx *f = *state;
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_CONSOLE);
	uint32_t feat = vd_dev_features(&f->d, 0);
	assert_true(feat & 1u << VIRTIO_CONSOLE_F_EMERG_WRITE);
	assert_false(feat & 1u << VIRTIO_CONSOLE_F_SIZE);
	assert_false(feat & 1u << VIRTIO_CONSOLE_F_MULTIPORT);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_SEL, 1);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM_MAX), MB_VQ_MAX_SIZE);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_SEL, 2);
	/* no control queues */
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG + 4), 1); /* max_nr_ports */
}

static void test_size(void **state)
{
	struct fx g;
	assert_int_equal(make(&g, 132, 43), 0);
	assert_true(vd_dev_features(&g.d, 0) & 1u << VIRTIO_CONSOLE_F_SIZE);
	uint16_t v = 0;
	mb_virtio_mmio_ops.read(g.t, MB_VIRTIO_MMIO_CONFIG, &v, 2);
	assert_int_equal(v, 132);
	mb_virtio_mmio_ops.read(g.t, MB_VIRTIO_MMIO_CONFIG + 2, &v, 2);
	assert_int_equal(v, 43);
	void *s = &g;
	teardown(&s);
}

/* 5.3.6.2: output is the readable buffers, whatever their split. */
static void test_output(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	memcpy(vd_gp(&f->d, BUF), "hello ", 6);
	memcpy(vd_gp(&f->d, BUF + 0x100), "world", 5);
	vd_desc(&f->d, 1, 0, BUF, 6, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->d, 1, 1, BUF + 0x100, 5, 0, 0);
	vd_offer(&f->d, 1, 0);
	int raises = f->raises;
	vd_kick(&f->d, 1);
	assert_int_equal(f->out_len, 11);
	assert_memory_equal(f->out, "hello world", 11);
	assert_int_equal(vd_used_idx(&f->d, 1), 1);
	assert_int_equal(vd_used(&f->d, 1, 0, NULL), 0);
	assert_int_equal(f->raises, raises + 1);
	struct mb_virtio_console_stats st;
	mb_virtio_console_stats(f->con, &st);
	assert_int_equal(st.tx_bytes, 11);
}

/* Input waits in the backend until the driver posts buffers. */
static void test_input_backpressure(void **state)
{
	struct fx *f = *state;
	assert_int_equal(input(f, "abc"), 0); /* no driver yet */
	vd_setup(&f->d, v1(), 2, N);
	post_rx(f, 0, 2);
	assert_int_equal(input(f, "abc"), 0); /* the port has not written */
	assert_int_equal(f->accepts, 0);
	hello(f);
	assert_int_equal(f->accepts, 1); /* the refused bytes are asked for */
	assert_int_equal(input(f, "abc"), 2);
	assert_memory_equal(vd_gp(&f->d, BUF), "ab", 2);
	uint32_t id;
	assert_int_equal(vd_used(&f->d, 0, 0, &id), 2);
	assert_int_equal(id, 0);
	assert_int_equal(input(f, "c"), 0); /* out of buffers */
	post_rx(f, 1, 64);
	assert_int_equal(f->accepts, 2);
	post_rx(f, 2, 64);
	assert_int_equal(f->accepts, 2); /* nothing owed any more */
	assert_int_equal(input(f, "c"), 1);
	assert_int_equal(*(char *)vd_gp(&f->d, BUF + 0x1000), 'c');
	assert_int_equal(vd_used_idx(&f->d, 0), 2);
	struct mb_virtio_console_stats st;
	mb_virtio_console_stats(f->con, &st);
	assert_int_equal(st.rx_bytes, 3);
	assert_int_equal(st.rx_stalls, 4); /* "abc" 3 times, then "c" */
}

/* Input spread over several buffers, each filled in turn. */
static void test_input_spans_buffers(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	hello(f);
	post_rx(f, 0, 3);
	post_rx(f, 1, 3);
	assert_int_equal(input(f, "12345"), 5);
	assert_int_equal(vd_used_idx(&f->d, 0), 2);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), 3);
	assert_int_equal(vd_used(&f->d, 0, 1, NULL), 2);
	assert_memory_equal(vd_gp(&f->d, BUF + 0x1000), "45", 2);
}

/* 2.7.10: once out of buffers the device publishes avail_event, so the
 * driver kicks for the next one. */
static void test_event_idx(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1() | 1ull << VIRTIO_F_RING_EVENT_IDX, 2, N);
	hello(f);
	post_rx(f, 0, 4);
	post_rx(f, 1, 4);
	assert_int_equal(input(f, "0123456789"), 8);
	uint16_t avail_event = vd_avail_event(&f->d, 0);
	assert_int_equal(avail_event, 2);
}

/* 5.3.4: emerg_wr outputs a character, with or without queues. */
static void test_emerg_write(void **state)
{
	struct fx *f = *state;
	uint32_t ch = 'X';
	mb_virtio_mmio_ops.write(f->t, MB_VIRTIO_MMIO_CONFIG + 8, &ch, 4);
	assert_int_equal(f->out_len, 1);
	assert_int_equal(f->out[0], 'X');
	ch = 7; /* cols is read-only */
	mb_virtio_mmio_ops.write(f->t, MB_VIRTIO_MMIO_CONFIG, &ch, 2);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG), 0);
}

/* A hostile chain: DEVICE_NEEDS_RESET, nothing read outside RAM, input
 * refused; a reset brings the device back. */
static void test_bad_chain_and_reset(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	vd_desc(&f->d, 1, 0, RAM - 4, 64, 0, 0); /* runs off the end of RAM */
	vd_offer(&f->d, 1, 0);
	vd_kick(&f->d, 1);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(f->out_len, 0);
	vd_desc(&f->d, 0, 0, RAM + 0x1000, 16, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	assert_int_equal(input(f, "x"), 0);
	vd_setup(&f->d, v1(), 2, N); /* starts with a reset */
	post_rx(f, 0, 8);
	assert_int_equal(input(f, "x"), 0); /* closed until the port writes */
	hello(f);
	assert_int_equal(input(f, "x"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registers_and_config, setup, teardown),
		cmocka_unit_test(test_size),
		cmocka_unit_test_setup_teardown(test_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_input_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_input_spans_buffers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_idx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emerg_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_chain_and_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
