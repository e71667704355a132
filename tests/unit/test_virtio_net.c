/* virtio-net behind the virtio-mmio transport, driven as a driver does
 * (registers, rings in a fake guest memory), its backend one end of a
 * socketpair and the test the other: transmit (header skipped, frames
 * split over buffers, runts dropped), receive (header, num_buffers, frames
 * dropped before the driver or when too big), backpressure (the backend
 * paused while receiveq is empty, resumed on the doorbell), config space,
 * a malformed chain and reset. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox/virtio_net.h"
#include "virtio_driver.h"

#define RAM (1u << 20)
#define N 8
#define BUF 0x10000u
#define HDR MB_VIRTIO_NET_HDR

struct fx {
	struct mb_mem *mem;
	struct mb_virtio_net *net;
	struct mb_virtio *t;
	struct mb_netbe *peer; /* the test's end of the cable */
	int raises, level;
	struct vd d;
	uint16_t next_desc;
};

static void irq_set(void *ctx, unsigned line, int level)
{
	struct fx *f = ctx;
	f->raises += level && !f->level;
	f->level = level;
}

/* ---- the driver's side (virtio_driver.h) ----------------------------------- */

/* A receive buffer at descriptor i (buffer BUF + i * 0x1000). */
static void post_rx(struct fx *f, unsigned i, uint32_t len, bool kick)
{
	vd_desc(&f->d, 0, i, BUF + 0x1000 * i, len, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, (uint16_t)i);
	if (kick)
		vd_kick(&f->d, 0);
}

/* A frame of len bytes whose bytes are seed, seed+1, ... */
static void frame(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i);
}

static void peer_send(struct fx *f, size_t len, uint8_t seed)
{
	static uint8_t buf[4096];
	frame(buf, len, seed);
	struct iovec v = { buf, len };
	assert_int_equal(mb_netbe_send(f->peer, &v, 1), 0);
}

/* Transmit header + frame split at `split` over two descriptors. */
static void transmit(struct fx *f, size_t len, size_t split, uint8_t seed)
{
	uint8_t *p = vd_gp(&f->d, BUF + 0x8000);
	memset(p, 0, HDR);
	frame(p + HDR, len, seed);
	vd_desc(&f->d, 1, 0, BUF + 0x8000, (uint32_t)split, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->d, 1, 1, BUF + 0x8000 + split, (uint32_t)(HDR + len - split), 0, 0);
	vd_offer(&f->d, 1, 0);
	vd_kick(&f->d, 1);
}

static bool pollfd_ready(struct fx *f)
{
	struct pollfd p = { mb_netbe_pollfd(mb_virtio_net_backend(f->net)), POLLIN, 0 };
	return poll(&p, 1, 0) == 1;
}

static struct mb_virtio_net_stats stats(struct fx *f)
{
	struct mb_virtio_net_stats st;
	mb_virtio_net_stats(f->net, &st);
	return st;
}

/* ---- fixture ----------------------------------------------------------------------- */

static int setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof f);
	*state = &f;
	if (!(f.mem = vd_ram(RAM)))
		return -1;
	struct mb_virtio_net_config nc = { { 0x52, 0x54, 0, 1, 2, 3 }, NULL };
	if (mb_netbe_pair(&nc.be, &f.peer))
		return -1;
	if (!(f.net = mb_virtio_net_new(&nc)))
		return -1;
	struct mb_virtio_config c = {
		&mb_virtio_net_ops, f.net, mb_virtio_net_features(f.net), f.mem,
		{ irq_set, &f, 5 }, -1,
	};
	if (!(f.t = mb_virtio_new(&c)))
		return -1;
	vd_attach(&f.d, f.t, f.mem);
	mb_virtio_net_bind(f.net, f.t);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	mb_virtio_net_free(f->net);
	mb_virtio_free(f->t);
	mb_netbe_free(f->peer);
	mb_mem_free(f->mem);
	return 0;
}

static uint64_t v1(void)
{
	return 1ull << VIRTIO_F_VERSION_1;
}

/* ---- cases ----------------------------------------------------------------------------- */

static void test_config(void **state)
{
	struct fx *f = *state;
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
	uint32_t feat = vd_dev_features(&f->d, 0);
	assert_true(feat & 1u << VIRTIO_NET_F_MAC);
	assert_false(feat & 1u << VIRTIO_NET_F_MRG_RXBUF);
	assert_false(feat & 1u << 0); /* no CSUM: no offloads */
	assert_true(feat & 1u << VIRTIO_NET_F_STATUS);
	uint8_t mac[6];
	for (unsigned i = 0; i < 6; i++)
		mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + i, &mac[i], 1);
	assert_memory_equal(mac, ((uint8_t[]){ 0x52, 0x54, 0, 1, 2, 3 }), 6);
	uint16_t status = 0;
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + 6, &status, 2);
	assert_int_equal(status, VIRTIO_NET_S_LINK_UP);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_SEL, 2);
	/* one pair, no control queue */
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
}

/* 5.1.6.2: the header is skipped however the chain is split. */
static void test_transmit(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	uint8_t got[2048], want[2048];
	size_t splits[] = { HDR, 4, HDR + 20 };
	for (unsigned i = 0; i < 3; i++) {
		transmit(f, 60 + i, splits[i], (uint8_t)i);
		frame(want, 60 + i, (uint8_t)i);
		assert_int_equal(mb_netbe_recv(f->peer, got, sizeof got), 60 + i);
		assert_memory_equal(got, want, 60 + i);
		assert_int_equal(vd_used_idx(&f->d, 1), i + 1);
		assert_int_equal(vd_used(&f->d, 1, i, NULL), 0);
	}
	assert_int_equal(stats(f).tx_frames, 3);
	assert_int_equal(stats(f).tx_bytes, 60 + 61 + 62);
}

static void test_transmit_runt(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	transmit(f, 4, HDR, 0); /* shorter than an Ethernet header */
	assert_int_equal(vd_used_idx(&f->d, 1), 1);
	uint8_t got[64];
	assert_int_equal(mb_netbe_recv(f->peer, got, sizeof got), 0);
	assert_int_equal(stats(f).tx_dropped, 1);
}

/* 5.1.6.3/5.1.6.4: header with num_buffers = 1, then the frame. */
static void test_receive(void **state)
{
	struct fx *f = *state;
	peer_send(f, 60, 9);
	mb_virtio_net_poll(f->net);
	assert_int_equal(stats(f).rx_dropped, 1); /* no driver: the wire drops */
	vd_setup(&f->d, v1(), 2, N);
	post_rx(f, 0, HDR + 1518, true);
	post_rx(f, 1, HDR + 1518, true);
	int raises = f->raises;
	peer_send(f, 1514, 3);
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 1);
	uint32_t id;
	assert_int_equal(vd_used(&f->d, 0, 0, &id), HDR + 1514);
	assert_int_equal(id, 0);
	uint8_t *p = vd_gp(&f->d, BUF), want[1514];
	uint8_t hdr[HDR] = { [10] = 1 };
	assert_memory_equal(p, hdr, HDR);
	frame(want, sizeof want, 3);
	assert_memory_equal(p + HDR, want, sizeof want);
	assert_int_equal(f->raises, raises + 1);
	assert_int_equal(stats(f).rx_frames, 1);
	assert_int_equal(stats(f).rx_bytes, 1514);
}

/* A frame larger than the buffer is dropped, the buffer returned empty. */
static void test_receive_too_big(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	post_rx(f, 0, 100, true);
	post_rx(f, 1, 100, true);
	peer_send(f, 200, 0);
	peer_send(f, 80, 0);
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 2);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), 0);
	assert_int_equal(vd_used(&f->d, 0, 1, NULL), HDR + 80);
	assert_int_equal(stats(f).rx_dropped, 1);
}

/* With receiveq empty the frame waits and the backend stops waking us;
 * the doorbell for new buffers delivers it and the rest. */
static void test_backpressure(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1() | 1ull << VIRTIO_F_RING_EVENT_IDX, 2, N);
	post_rx(f, 0, 2048, true);
	for (uint8_t i = 0; i < 3; i++)
		peer_send(f, 100 + i, i);
	assert_true(pollfd_ready(f));
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 1);
	assert_int_equal(stats(f).rx_stalls, 1);
	assert_false(pollfd_ready(f)); /* paused, frames still queued */
	uint16_t avail_event = vd_avail_event(&f->d, 0);
	assert_int_equal(avail_event, 1); /* 2.7.10: kick us for the next */
	post_rx(f, 1, 2048, false);
	post_rx(f, 2, 2048, true);
	assert_int_equal(vd_used_idx(&f->d, 0), 3);
	assert_int_equal(vd_used(&f->d, 0, 1, NULL), HDR + 101);
	assert_int_equal(vd_used(&f->d, 0, 2, NULL), HDR + 102);
	assert_int_equal(*(uint8_t *)vd_gp(&f->d, BUF + 0x2000 + HDR), 2);
	assert_false(pollfd_ready(f)); /* all read; waiting for buffers again */
	assert_int_equal(stats(f).rx_frames, 3);
	assert_int_equal(stats(f).rx_dropped, 0);
}

/* A bad receive chain breaks the queue; reset brings the device back and
 * drops what was pending. */
static void test_bad_chain_and_reset(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	vd_desc(&f->d, 0, 0, RAM - 8, 2048, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
	peer_send(f, 64, 0);
	mb_virtio_net_poll(f->net);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	assert_false(pollfd_ready(f)); /* stopped: no busy loop */
	vd_setup(&f->d, v1(), 2, N); /* reset: the pending frame is dropped */
	post_rx(f, 0, 2048, true);
	peer_send(f, 70, 0);
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 1);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), HDR + 70);
}

/* The peer hanging up is not an error: frames to it are dropped. */
static void test_peer_gone(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	mb_netbe_free(f->peer);
	f->peer = NULL;
	mb_virtio_net_poll(f->net); /* sees end of stream */
	assert_false(mb_netbe_connected(mb_virtio_net_backend(f->net)));
	transmit(f, 60, HDR, 0);
	assert_int_equal(vd_used_idx(&f->d, 1), 1);
	assert_int_equal(stats(f).tx_dropped, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transmit_runt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_chain_and_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_gone, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
