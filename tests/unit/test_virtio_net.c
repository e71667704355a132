/* virtio-net behind the virtio-mmio transport, driven as a driver does
 * (registers, rings in a fake guest memory), its backend one end of a
 * socketpair and the test the other: transmit (header skipped, frames
 * split over buffers, runts dropped), receive (header, num_buffers, frames
 * dropped before the driver or when too big), backpressure (the backend
 * paused while receiveq is empty, resumed on the doorbell), config space,
 * a malformed chain and reset. Faults (moonbox/fault.h) on the device in
 * isolation, with a hand-driven clock: drop (p, nth, the burst model),
 * duplicate, corrupt, reorder, delay with jitter, rate, link down/up, and
 * the same seed giving the same trace. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox/virtio_net.h"
#include "virtio_driver.h"
#include "fake_clock.h"

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
	struct fake_clock *fc;      /* fault cases only */
	struct mb_fault_plan *plan; /* fault cases only */
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

static int setup_with(void **state, struct fake_clock *fc)
{
	static struct fx f;
	memset(&f, 0, sizeof f);
	*state = &f;
	f.fc = fc;
	if (!(f.mem = vd_ram(RAM)))
		return -1;
	struct mb_virtio_net_config nc = { { 0x52, 0x54, 0, 1, 2, 3 }, NULL,
					   fc ? &fc->clock : NULL };
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

static int setup(void **state)
{
	return setup_with(state, NULL);
}

/* A device with a clock and a plan (seed 42) whose site it asks. */
static int setup_fault(void **state)
{
	struct fake_clock *fc = fake_clock_new(1000000000ull);
	if (!fc || setup_with(state, fc))
		return -1;
	struct fx *f = *state;
	struct mb_fault_plan_config pc = { .seed = 42 };
	if (mb_fault_plan_new(NULL, &pc, &f->plan))
		return -1;
	return mb_virtio_net_set_fault(f->net, mb_fault_plan_site(f->plan, "net0"));
}

static int teardown(void **state)
{
	struct fx *f = *state;
	mb_virtio_net_free(f->net);
	mb_virtio_free(f->t);
	mb_netbe_free(f->peer);
	mb_mem_free(f->mem);
	mb_fault_plan_free(f->plan);
	if (f->fc)
		fake_clock_free(f->fc);
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

/* ---- faults -------------------------------------------------------------------------- */

static unsigned add_rule(struct fx *f, struct mb_fault_rule r)
{
	snprintf(r.dev, sizeof r.dev, "net0");
	r.first = 1, r.last = 0;
	int id = mb_fault_plan_add(f->plan, &r);
	assert_true(id > 0);
	return (unsigned)id;
}

static struct mb_fault_rule_stats rstats(struct fx *f, unsigned id)
{
	struct mb_fault_rule_stats st;
	assert_int_equal(mb_fault_plan_stats(f->plan, id, &st), 0);
	return st;
}

/* The first byte of each frame the peer has (its seed), -1 after the last. */
static int peer_next(struct fx *f, size_t *len)
{
	static uint8_t got[4096];
	ssize_t n = mb_netbe_recv(f->peer, got, sizeof got);
	if (len)
		*len = n > 0 ? (size_t)n : 0;
	return n > 0 ? got[0] : -1;
}

/* Post n receive buffers (descriptors 0..n-1). */
static void post_many(struct fx *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		post_rx(f, i, 2048, i == n - 1);
}

/* The seed byte of received frame i (in used-ring order). */
static int rx_seed(struct fx *f, unsigned i)
{
	uint32_t id;
	vd_used(&f->d, 0, i, &id);
	return *(uint8_t *)vd_gp(&f->d, BUF + 0x1000 * id + HDR);
}

static double unit01(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53;
}

/* nth = 2 on tx: the second frame never reaches the wire. */
static void test_fault_drop_nth(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	unsigned id = add_rule(f, (struct mb_fault_rule){
		.action = MB_FAULT_NET_DROP, .ops = MB_FAULT_OP_WRITE, .nth = 2 });
	for (uint8_t i = 0; i < 3; i++)
		transmit(f, 60, HDR, i);
	assert_int_equal(peer_next(f, NULL), 0);
	assert_int_equal(peer_next(f, NULL), 2);
	assert_int_equal(peer_next(f, NULL), -1);
	assert_int_equal(vd_used_idx(&f->d, 1), 3); /* the guest got every buffer back */
	assert_int_equal(stats(f).tx_dropped, 1);
	assert_int_equal(rstats(f, id).matched, 3);
	assert_int_equal(rstats(f, id).fired, 1);
}

/* p = 0.3 on rx: exactly the frames whose hash is below 0.3 are lost. */
static void test_fault_drop_p(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, 64);
	unsigned id = add_rule(f, (struct mb_fault_rule){
		.action = MB_FAULT_NET_DROP, .ops = MB_FAULT_OP_READ, .has_p = true, .p = 0.3 });
	for (unsigned i = 0; i < 40; i++)
		post_rx(f, i, 2048, false);
	vd_kick(&f->d, 0);
	unsigned lost = 0, got = 0;
	for (unsigned i = 0; i < 40; i++) {
		peer_send(f, 60, (uint8_t)i);
		mb_virtio_net_poll(f->net);
		bool drop = unit01(mb_fault_hash(42, id, i + 1)) < 0.3;
		lost += drop;
		if (!drop) /* in order, the survivors */
			assert_int_equal(rx_seed(f, got++), i);
	}
	assert_true(lost > 0 && lost < 40);
	assert_int_equal(vd_used_idx(&f->d, 0), 40 - lost);
	assert_int_equal(stats(f).rx_dropped, lost);
	assert_int_equal(rstats(f, id).fired, lost);
}

/* The burst model: the chain moves on its own stream, a frame is lost
 * with `loss` in the bad state and `good_loss` in the good one. */
static void test_fault_drop_burst(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	struct mb_fault_rule r = { .action = MB_FAULT_NET_DROP, .ops = MB_FAULT_OP_WRITE,
				   .has_burst = true, .ge_enter = 0.1, .ge_leave = 0.3,
				   .ge_loss = 0.9, .ge_good_loss = 0.02 };
	unsigned id = add_rule(f, r);
	bool bad = false;
	unsigned lost = 0, runs = 0;
	bool prev = false;
	for (unsigned i = 0; i < 300; i++) {
		uint64_t o = i + 1;
		double u = unit01(mb_fault_hash(42, id, o ^ MB_FAULT_STREAM_STATE));
		bad = bad ? !(u < r.ge_leave) : u < r.ge_enter;
		bool drop = unit01(mb_fault_hash(42, id, o ^ MB_FAULT_STREAM_LOSS)) <
			    (bad ? r.ge_loss : r.ge_good_loss);
		transmit(f, 60, HDR, (uint8_t)i);
		assert_int_equal(peer_next(f, NULL), drop ? -1 : (int)(uint8_t)i);
		lost += drop;
		runs += drop && !prev;
		prev = drop;
	}
	assert_int_equal(stats(f).tx_dropped, lost);
	assert_true(lost > 20);
	assert_true(lost > runs * 2); /* bursty: losses come in runs */
}

/* copies = 2: the frame and two more, identical, in a row. */
static void test_fault_duplicate(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	post_many(f, 5);
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DUPLICATE,
					    .ops = MB_FAULT_OP_READ, .nth = 1, .pulses = 2 });
	peer_send(f, 80, 7);
	peer_send(f, 80, 8);
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 4);
	int want[] = { 7, 7, 7, 8 };
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(vd_used(&f->d, 0, i, NULL), HDR + 80);
		assert_int_equal(rx_seed(f, i), want[i]);
	}
}

/* bits = 5 from offset 14: exactly 5 bits differ, none in the header,
 * at the positions the seed gives; the guest's buffer is not touched. */
static void test_fault_corrupt(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	unsigned id = add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_CORRUPT,
		.ops = MB_FAULT_OP_WRITE, .bytes = 5, .offset = 14 });
	transmit(f, 200, HDR, 0);
	uint8_t want[200], got[256];
	frame(want, sizeof want, 0);
	assert_int_equal(mb_netbe_recv(f->peer, got, sizeof got), 200);
	unsigned diff = 0;
	for (unsigned i = 0; i < 200; i++)
		diff += (unsigned)__builtin_popcount(got[i] ^ want[i]);
	assert_int_equal(diff, 5);
	assert_memory_equal(got, want, 14);
	struct mb_fault_verdict v = { .corrupt = true, .key = mb_fault_hash(42, id, 1),
				      .bytes = 5, .first = 14 };
	mb_fault_net_corrupt(&v, want, sizeof want);
	assert_memory_equal(got, want, 200);
	uint8_t clean[200];
	frame(clean, sizeof clean, 0);
	assert_memory_equal((uint8_t *)vd_gp(&f->d, BUF + 0x8000) + HDR, clean, 200);
}

/* gap = 2: A waits for two later frames (B C A D); a lone held frame
 * goes after its ms. */
static void test_fault_reorder(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_REORDER,
		.ops = MB_FAULT_OP_WRITE, .every = 4, .pulses = 2, .ms = 50 });
	/* matches 4, 8: frames 3 and 7 are held */
	for (uint8_t i = 0; i < 7; i++)
		transmit(f, 60, HDR, i);
	int want[] = { 0, 1, 2, 4, 5, 3, 6 };
	for (unsigned i = 0; i < 7; i++)
		assert_int_equal(peer_next(f, NULL), want[i]);
	assert_int_equal(peer_next(f, NULL), -1);
	transmit(f, 60, HDR, 7); /* held, nothing follows */
	assert_int_equal(peer_next(f, NULL), -1);
	fake_clock_advance(f->fc, 49000000);
	assert_int_equal(peer_next(f, NULL), -1);
	fake_clock_advance(f->fc, 1000000);
	assert_int_equal(peer_next(f, NULL), 7);
}

/* ms = 10, jitter = 20, on rx: each frame is due 10-30 ms later, the
 * amount the seed gives, and none overtakes the one before. */
static void test_fault_delay(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	post_many(f, 8);
	unsigned id = add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DELAY,
		.ops = MB_FAULT_OP_READ, .ms = 10, .jitter = 20 });
	uint64_t due[8], last = 0;
	for (unsigned i = 0; i < 8; i++) {
		peer_send(f, 60, (uint8_t)i);
		uint64_t ms = 10 + mb_fault_hash(42, id, (i + 1) ^ MB_FAULT_STREAM_JITTER) % 21;
		due[i] = ms > last ? ms : last; /* in order */
		last = due[i];
	}
	mb_virtio_net_poll(f->net);
	assert_int_equal(vd_used_idx(&f->d, 0), 0);
	unsigned seen = 0;
	for (uint64_t t = 1; t <= 31; t++) {
		fake_clock_advance(f->fc, 1000000);
		unsigned want = 0;
		while (want < 8 && due[want] <= t)
			want++;
		assert_int_equal(vd_used_idx(&f->d, 0), want);
		for (; seen < want; seen++)
			assert_int_equal(rx_seed(f, seen), seen);
	}
	assert_int_equal(seen, 8);
	assert_int_equal(fake_clock_armed(f->fc), 0);
}

/* 1000 bytes/s, 100-byte frames: one each 100 ms; a frame that would
 * wait more than max_wait_ms (250) is dropped. */
static void test_fault_rate(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_RATE,
		.ops = MB_FAULT_OP_WRITE, .rate = 1000, .ms = 250 });
	for (uint8_t i = 0; i < 3; i++)
		transmit(f, 100, HDR, i);
	assert_int_equal(stats(f).tx_dropped, 1); /* the third: 300 ms */
	assert_int_equal(peer_next(f, NULL), -1);
	fake_clock_advance(f->fc, 100000000);
	assert_int_equal(peer_next(f, NULL), 0);
	assert_int_equal(peer_next(f, NULL), -1);
	fake_clock_advance(f->fc, 100000000);
	assert_int_equal(peer_next(f, NULL), 1);
	assert_int_equal(stats(f).tx_frames, 2);
}

/* Link down: status 0 with a config interrupt (5.1.4, 4.2.2.1), nothing
 * passes either way; up again: LINK_UP, another interrupt, frames pass. */
static void test_fault_link(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, v1(), 2, N);
	post_many(f, 4);
	uint32_t gen = vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG_GENERATION);
	int raises = f->raises;
	mb_virtio_net_set_link(f->net, false);
	assert_false(mb_virtio_net_link(f->net));
	uint16_t status = 1;
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + 6, &status, 2);
	assert_int_equal(status, 0);
	assert_true(vd_isr(&f->d) & VIRTIO_MMIO_INT_CONFIG);
	assert_int_equal(f->raises, raises + 1);
	assert_int_not_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG_GENERATION), gen);
	vd_ack(&f->d, VIRTIO_MMIO_INT_CONFIG);
	transmit(f, 60, HDR, 1);
	peer_send(f, 60, 2);
	mb_virtio_net_poll(f->net);
	assert_int_equal(peer_next(f, NULL), -1);
	assert_int_equal(vd_used_idx(&f->d, 0), 0);
	assert_int_equal(stats(f).tx_dropped, 1);
	assert_int_equal(stats(f).rx_dropped, 1);
	mb_virtio_net_set_link(f->net, false); /* no change: no interrupt */
	assert_int_equal(vd_isr(&f->d) & VIRTIO_MMIO_INT_CONFIG, 0);
	mb_virtio_net_set_link(f->net, true);
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + 6, &status, 2);
	assert_int_equal(status, VIRTIO_NET_S_LINK_UP);
	assert_true(vd_isr(&f->d) & VIRTIO_MMIO_INT_CONFIG);
	transmit(f, 60, HDR, 3);
	assert_int_equal(peer_next(f, NULL), 3);
}

/* One run of 64 frames each way under p = 0.5 drop, jittered delay and
 * corruption; the trace without its times. */
static char *trace_run_with(const char *path, const char *replay, unsigned longer,
			    const char *save)
{
	struct fx *f;
	void *st;
	assert_int_equal(setup_fault(&st), 0);
	f = st;
	mb_fault_plan_free(f->plan);
	/* a replay takes the trace's seed, whatever is given here */
	struct mb_fault_plan_config pc = { .seed = replay ? 99 : 7, .trace = path,
					   .replay = replay };
	assert_int_equal(mb_fault_plan_new(NULL, &pc, &f->plan), 0);
	assert_int_equal(mb_virtio_net_set_fault(f->net,
		mb_fault_plan_site(f->plan, "net0")), 0);
	vd_setup(&f->d, v1(), 2, 128);
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DROP, .has_p = true, .p = 0.5 });
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DELAY, .ms = 1, .jitter = 5,
					    .has_p = true, .p = 0.5 });
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_CORRUPT,
					    .ops = MB_FAULT_OP_WRITE, .bytes = 1, .every = 3 });
	for (unsigned i = 0; i < 64; i++)
		post_rx(f, i, 2048, false);
	vd_kick(&f->d, 0);
	for (unsigned i = 0; i < 64; i++) {
		transmit(f, 60 + i + (i == 40 ? longer : 0), HDR, (uint8_t)i);
		peer_send(f, 60 + i, (uint8_t)i);
		mb_virtio_net_poll(f->net);
		fake_clock_advance(f->fc, 2000000);
	}
	teardown(&st);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	static char out[2][1 << 16];
	static int k;
	char *o = out[k++ & 1], line[512];
	size_t n = 0;
	FILE *raw = save ? fopen(save, "w") : NULL; /* the trace as written */
	while (fgets(line, sizeof line, fp)) {
		if (raw)
			fputs(line, raw);
		char *g = strstr(line, ",\"guest_ns\"");
		if (g)
			strcpy(g, "}\n");
		size_t l = strlen(line);
		assert_true(n + l < sizeof out[0]);
		memcpy(o + n, line, l + 1);
		n += l;
	}
	fclose(fp);
	if (raw)
		fclose(raw);
	remove(path);
	return o;
}

static char *trace_run(const char *path)
{
	return trace_run_with(path, NULL, 0, NULL);
}

/* Replay: the recorded decisions again (the same trace); a frame of
 * another length where the trace has one is a divergence, after which
 * nothing more is decided. */
static void test_fault_replay(void **state)
{
	(void)state;
	char a[] = "/tmp/mb-net-trace-XXXXXX", b[] = "/tmp/mb-net-replay-XXXXXX";
	int fa = mkstemp(a), fb = mkstemp(b);
	assert_true(fa >= 0 && fb >= 0);
	close(fa), close(fb);
	char c[] = "/tmp/mb-net-trace-XXXXXX";
	int fc = mkstemp(c);
	assert_true(fc >= 0);
	close(fc);
	char *t1 = trace_run_with(c, NULL, 0, a);
	char *t2 = trace_run_with(b, a, 0, NULL);
	assert_string_equal(t1, t2);
	size_t whole = strlen(t1); /* t3 reuses t1's buffer */
	char *t3 = trace_run_with(b, a, 1, NULL); /* tx frame 41 one byte longer */
	assert_non_null(strstr(mb_errmsg(), "diverged"));
	assert_non_null(strstr(mb_errmsg(), "sectors 41+101"));
	assert_true(strlen(t3) < whole);
	remove(a);
}

static void test_fault_same_seed_same_trace(void **state)
{
	(void)state;
	char path[] = "/tmp/mb-net-trace-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	char *a = strdup(trace_run(path));
	assert_non_null(strstr(a, "\"action\":\"net.drop\""));
	assert_non_null(strstr(a, "\"action\":\"net.delay\""));
	assert_non_null(strstr(a, "\"action\":\"net.corrupt\""));
	assert_true(strlen(a) > 64 * 3 * 50);
	for (int i = 0; i < 9; i++) /* ten runs in all */
		assert_string_equal(a, trace_run(path));
	free(a);
}

/* The observer: rx frames before rx faults, tx frames as they leave
 * (after tx faults, from the clock's thread); it may change or drop them. */
struct seen { unsigned n; int first[8]; bool rx[8]; };

static void observe(void *ctx, bool rx, uint8_t *frame, uint32_t *len, bool *drop)
{
	struct seen *w = ctx;
	if (w->n < 8)
		w->first[w->n] = frame[0], w->rx[w->n] = rx;
	w->n++;
	if (frame[0] == 1) /* drop seed 1 */
		*drop = true;
	if (frame[0] == 2) { /* seed 2 grows to 90 bytes of 0xee */
		memset(frame, 0xee, 90);
		*len = 90;
	}
}

static void test_fault_hook(void **state)
{
	struct fx *f = *state;
	struct seen w = { 0 };
	vd_setup(&f->d, v1(), 2, N);
	post_many(f, 4);
	assert_int_equal(mb_virtio_net_set_hook(f->net, observe, &w), 0);
	assert_int_equal(mb_virtio_net_set_hook(f->net, observe, &w), -EBUSY);
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DROP,
					    .ops = MB_FAULT_OP_READ, .nth = 1 });
	add_rule(f, (struct mb_fault_rule){ .action = MB_FAULT_NET_DROP,
					    .ops = MB_FAULT_OP_WRITE, .nth = 1 });
	peer_send(f, 60, 0); /* seen, then dropped by the rx rule */
	peer_send(f, 60, 1); /* dropped by the hook */
	peer_send(f, 60, 2); /* rewritten */
	mb_virtio_net_poll(f->net);
	assert_int_equal(w.n, 3);
	assert_int_equal(vd_used_idx(&f->d, 0), 1);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), HDR + 90);
	assert_int_equal(rx_seed(f, 0), 0xee);
	transmit(f, 60, HDR, 5); /* dropped by the tx rule: never seen */
	transmit(f, 60, HDR, 6);
	assert_int_equal(w.n, 3); /* tx leaves from the clock's thread */
	assert_int_equal(peer_next(f, NULL), -1);
	fake_clock_advance(f->fc, 1);
	assert_int_equal(w.n, 4);
	assert_false(w.rx[3]);
	assert_int_equal(w.first[3], 6);
	assert_int_equal(peer_next(f, NULL), 6);
	assert_int_equal(peer_next(f, NULL), -1);
}

/* The engine checks net rules like every other (the message names the
 * field). */
static void test_fault_rule_errors(void **state)
{
	struct fx *f = *state;
	struct mb_fault_rule r = { .action = MB_FAULT_NET_DUPLICATE, .pulses = 0 };
	snprintf(r.dev, sizeof r.dev, "net0");
	assert_int_equal(mb_fault_plan_add(f->plan, &r), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "copies: 0"));
	r = (struct mb_fault_rule){ .action = MB_FAULT_NET_DROP, .has_burst = true,
				    .ge_enter = 1.5 };
	snprintf(r.dev, sizeof r.dev, "net0");
	assert_int_equal(mb_fault_plan_add(f->plan, &r), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "burst:"));
	r = (struct mb_fault_rule){ .action = MB_FAULT_NET_LINK, .nth = 1 };
	snprintf(r.dev, sizeof r.dev, "net0");
	assert_int_equal(mb_fault_plan_add(f->plan, &r), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "no conditions"));
	r = (struct mb_fault_rule){ .action = MB_FAULT_NET_RATE, .rate = 1, .ms = 10 };
	snprintf(r.dev, sizeof r.dev, "net0");
	assert_int_equal(mb_fault_plan_add(f->plan, &r), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "bytes_per_s: 1"));
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
		cmocka_unit_test_setup_teardown(test_fault_drop_nth, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_drop_p, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_drop_burst, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_duplicate, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_corrupt, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_reorder, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_delay, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_rate, setup_fault, teardown),
		cmocka_unit_test_setup_teardown(test_fault_link, setup_fault, teardown),
		cmocka_unit_test(test_fault_same_seed_same_trace),
		cmocka_unit_test_setup_teardown(test_fault_hook, setup_fault, teardown),
		cmocka_unit_test(test_fault_replay),
		cmocka_unit_test_setup_teardown(test_fault_rule_errors, setup_fault, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
