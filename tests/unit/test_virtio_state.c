/* virtio device state, for every device: a driver sets the queues up and
 * uses them, save -> load into a fresh transport and device (on a fresh
 * guest memory holding a copy of the first) -> save gives the same struct,
 * and the driver goes on with the loaded device. blk saves with a request
 * in flight on a worker (the save waits for it), console with input it
 * refused for lack of buffers, net after frames both ways. Load errors
 * name the field and change nothing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox/virtio_blk.h"
#include "moonbox/virtio_console.h"
#include "moonbox/virtio_net.h"
#include "moonbox/virtio_rng.h"
#include "virtio_driver.h"

#define RAM (1u << 20)
#define N 16
#define BUF 0x40000u
#define V1 (1ull << VIRTIO_F_VERSION_1)
#define EVENT_IDX (1ull << VIRTIO_F_RING_EVENT_IDX)

static void irq_set(void *ctx, unsigned line, int level) {}

static struct mb_virtio *transport(const struct mb_virtio_dev_ops *ops,
				   void *dev, uint64_t features,
				   struct mb_mem *mem)
{
	struct mb_virtio_config c = { ops, dev, features, mem,
				      { irq_set, NULL, 5 }, -1 };
	struct mb_virtio *t = mb_virtio_new(&c);
	assert_non_null(t);
	return t;
}

/* The fresh machine's memory: the same layout, the first one's bytes (a
 * snapshot restores RAM before the devices). */
static struct mb_mem *clone_ram(struct mb_mem *src)
{
	struct mb_mem *mem = vd_ram(RAM);
	assert_non_null(mem);
	memcpy(mb_mem_ptr(mem, 0, RAM, false), mb_mem_ptr(src, 0, RAM, false), RAM);
	return mem;
}

/* The same driver, now talking to the loaded device. */
static struct vd moved(const struct vd *d, struct mb_virtio *t,
		       struct mb_mem *mem)
{
	struct vd n = *d;
	n.t = t, n.mem = mem;
	return n;
}

/* Load errors name the field, and a failed load changes nothing; a
 * driver's unoffered features before FEATURES_OK are no error. */
#define LOAD_ERRORS(ST, load, save, dev, t, a, q)                            \
	do {                                                                  \
		struct ST c_, now_;                                           \
		char want_[32];                                               \
		snprintf(want_, sizeof want_, "queues[%d].num", (q) + 1);     \
		c_ = (a), c_.queues[q].num = 6;                               \
		assert_int_equal(load(dev, t, &c_), -EINVAL);                 \
		assert_non_null(strstr(mb_errmsg(), want_));                  \
		c_ = (a), c_.queues[q].desc = 2 * RAM;                        \
		assert_int_equal(load(dev, t, &c_), -EINVAL);                 \
		assert_non_null(strstr(mb_errmsg(), "descriptor ring"));      \
		c_ = (a), c_.status = 0x10;                                   \
		assert_int_equal(load(dev, t, &c_), -EINVAL);                 \
		assert_non_null(strstr(mb_errmsg(), "status"));               \
		c_ = (a), c_.driver_features |= 1ull << 60;                   \
		assert_int_equal(load(dev, t, &c_), -EINVAL);                 \
		assert_non_null(strstr(mb_errmsg(), "driver_features"));      \
		/* before FEATURES_OK any bits may have been written */       \
		c_ = (a), c_.status = 3, c_.driver_features |= 1ull << 60;    \
		assert_int_equal(load(dev, t, &c_), 0);                       \
		assert_int_equal(load(dev, t, &(a)), 0);                      \
		save(dev, t, &now_);                                          \
		assert_memory_equal(&now_, &(a), sizeof now_);                \
	} while (0)

/* ---- rng ----------------------------------------------------------------------- */

static void test_rng(void **unused)
{
	struct mb_mem *m1 = vd_ram(RAM);
	struct mb_virtio_rng *r1 = mb_virtio_rng_new(), *r2 = mb_virtio_rng_new();
	struct mb_virtio *t1 = transport(&mb_virtio_rng_ops, r1, 0, m1);
	struct vd d;
	vd_attach(&d, t1, m1);
	vd_setup(&d, V1, 1, N);
	vd_post(&d, 0, 0, BUF, 64, VIRTQ_DESC_F_WRITE);
	vd_kick(&d, 0);
	assert_int_equal(vd_used_idx(&d, 0), 1);
	struct mb_virtio_rng_state a, b;
	mb_virtio_rng_save(r1, t1, &a);
	assert_true(a.queues[0].ready);
	assert_int_equal(a.queues[0].num, N);
	assert_int_equal(a.queues[0].used_idx, 1);
	assert_int_equal(a.bytes, 64);
	assert_int_equal(a.status, 15);

	struct mb_mem *m2 = clone_ram(m1);
	struct mb_virtio *t2 = transport(&mb_virtio_rng_ops, r2, 0, m2);
	assert_int_equal(mb_virtio_rng_load(r2, t2, &a), 0);
	mb_virtio_rng_save(r2, t2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	LOAD_ERRORS(mb_virtio_rng_state, mb_virtio_rng_load, mb_virtio_rng_save,
		    r2, t2, a, 0);

	struct vd d2 = moved(&d, t2, m2);
	vd_post(&d2, 0, 1, BUF + 0x1000, 32, VIRTQ_DESC_F_WRITE);
	vd_kick(&d2, 0);
	assert_int_equal(vd_used_idx(&d2, 0), 2);
	assert_int_equal(vd_used(&d2, 0, 1, NULL), 32);
	assert_int_equal(mb_virtio_rng_bytes(r2), 96);
	mb_virtio_free(t1), mb_virtio_free(t2);
	mb_virtio_rng_free(r1), mb_virtio_rng_free(r2);
	mb_mem_free(m1), mb_mem_free(m2);
}

/* ---- blk --------------------------------------------------------------------------- */

/* FLUSH's fdatasync (libmoonbox.a is linked statically: this one wins)
 * takes its time, so the request is still on its worker when the test
 * saves. */
static struct {
	_Atomic int started, done;
} sync_;

int fdatasync(int fd)
{
	atomic_store(&sync_.started, 1);
	usleep(200 * 1000);
	atomic_store(&sync_.done, 1);
	return 0;
}

#define HDR 0x10000u
#define STATUS 0x11000u
#define DATA 0x20000u

/* Request k: descriptors 3k (header), 3k+1 (data, if any), 3k+2 (status). */
static void blk_request(struct vd *d, unsigned k, uint32_t type,
			uint64_t sector, uint32_t data_len)
{
	struct { uint32_t type, reserved; uint64_t sector; } h = { type, 0, sector };
	memcpy(vd_gp(d, HDR + 16 * k), &h, 16);
	*(uint8_t *)vd_gp(d, STATUS + k) = 0xee;
	unsigned i = 3 * k;
	if (data_len) {
		vd_desc(d, 0, i, HDR + 16 * k, 16, VIRTQ_DESC_F_NEXT, i + 1);
		vd_desc(d, 0, i + 1, DATA + 0x1000 * k, data_len,
			VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, i + 2);
	} else {
		vd_desc(d, 0, i, HDR + 16 * k, 16, VIRTQ_DESC_F_NEXT, i + 2);
	}
	vd_desc(d, 0, i + 2, STATUS + k, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(d, 0, (uint16_t)i);
	vd_kick(d, 0);
}

static struct mb_virtio_blk *blk_new(const char *path)
{
	struct mb_virtio_blk_config bc = { path, false, "sn", 2 };
	struct mb_virtio_blk *b = mb_virtio_blk_new(&bc);
	assert_non_null(b);
	return b;
}

static void test_blk(void **unused)
{
	char path[] = "/tmp/mb-blkstate-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	uint8_t sec[512];
	for (unsigned s = 0; s < 64; s++) {
		memset(sec, (int)s, sizeof sec);
		assert_int_equal(write(fd, sec, sizeof sec), sizeof sec);
	}
	struct mb_mem *m1 = vd_ram(RAM);
	struct mb_virtio_blk *b1 = blk_new(path), *b2 = blk_new(path);
	uint64_t feat = mb_virtio_blk_features(b1);
	struct mb_virtio *t1 = transport(&mb_virtio_blk_ops, b1, feat, m1);
	struct vd d;
	vd_attach(&d, t1, m1);
	vd_setup(&d, V1 | EVENT_IDX, 1, N);
	blk_request(&d, 0, VIRTIO_BLK_T_IN, 3, 512);
	assert_true(vd_wait_used(&d, 0, 1));
	blk_request(&d, 1, VIRTIO_BLK_T_FLUSH, 0, 0);
	while (!atomic_load(&sync_.started))
		usleep(1000);
	assert_false(atomic_load(&sync_.done)); /* in flight now */
	assert_int_equal(vd_used_idx(&d, 0), 1);

	struct mb_virtio_blk_state a, b;
	mb_virtio_blk_quiesce(b1); /* what mb_device_save does first */
	mb_virtio_blk_save(b1, t1, &a);
	assert_true(atomic_load(&sync_.done)); /* the save waited for it */
	assert_int_equal(a.queues[0].used_idx, 2);
	assert_int_equal(a.queues[0].last_avail, 2);
	assert_int_equal(vd_used_idx(&d, 0), 2);
	uint32_t id;
	assert_int_equal(vd_used(&d, 0, 1, &id), 1);
	assert_int_equal(id, 3); /* the FLUSH's head */
	assert_int_equal(*(uint8_t *)vd_gp(&d, STATUS + 1), VIRTIO_BLK_S_OK);
	assert_int_equal(a.reads, 1);
	assert_int_equal(a.flushes, 1);
	assert_int_equal(a.capacity, 64);
	assert_true(a.queues[0].signalled_valid); /* EVENT_IDX: last interrupt */
	assert_int_equal(a.queues[0].signalled, 2);

	struct mb_mem *m2 = clone_ram(m1);
	struct mb_virtio *t2 = transport(&mb_virtio_blk_ops, b2, feat, m2);
	assert_int_equal(mb_virtio_blk_load(b2, t2, &a), 0);
	mb_virtio_blk_save(b2, t2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	LOAD_ERRORS(mb_virtio_blk_state, mb_virtio_blk_load, mb_virtio_blk_save,
		    b2, t2, a, 0);

	struct vd d2 = moved(&d, t2, m2);
	blk_request(&d2, 2, VIRTIO_BLK_T_IN, 7, 512);
	assert_true(vd_wait_used(&d2, 0, 3));
	assert_int_equal(vd_used(&d2, 0, 2, &id), 513);
	assert_int_equal(id, 6);
	assert_int_equal(*(uint8_t *)vd_gp(&d2, STATUS + 2), VIRTIO_BLK_S_OK);
	assert_int_equal(*(uint8_t *)vd_gp(&d2, DATA + 0x2000), 7);
	mb_virtio_blk_free(b1), mb_virtio_blk_free(b2);
	mb_virtio_free(t1), mb_virtio_free(t2);
	mb_mem_free(m1), mb_mem_free(m2);
	close(fd);
	unlink(path);
}

/* ---- console ------------------------------------------------------------------------- */

struct rec {
	struct mb_chr chr;
	int accepts;
};

static void rec_write(struct mb_chr *c, const void *buf, size_t len) {}

static void rec_accept(struct mb_chr *c)
{
	((struct rec *)c)->accepts++;
}

static const struct mb_chr_ops rec_ops = { rec_write, rec_accept, NULL };

static size_t input(struct rec *r, const char *s)
{
	return r->chr.rx(r->chr.rx_dev, (const uint8_t *)s, strlen(s));
}

static struct mb_virtio_console *con_new(struct rec *r)
{
	r->chr.ops = &rec_ops;
	struct mb_virtio_console_config cc = { &r->chr, 0, 0 };
	struct mb_virtio_console *c = mb_virtio_console_new(&cc);
	assert_non_null(c);
	return c;
}

static void test_console(void **unused)
{
	struct rec r1 = { 0 }, r2 = { 0 };
	struct mb_mem *m1 = vd_ram(RAM);
	struct mb_virtio_console *c1 = con_new(&r1), *c2 = con_new(&r2);
	uint64_t feat = mb_virtio_console_features(c1);
	struct mb_virtio *t1 = transport(&mb_virtio_console_ops, c1, feat, m1);
	mb_virtio_console_bind(c1, t1);
	struct vd d;
	vd_attach(&d, t1, m1);
	vd_setup(&d, V1, 2, N);
	memcpy(vd_gp(&d, BUF + 0xf000), "hi", 2); /* the port's first output */
	vd_post(&d, 1, 0, BUF + 0xf000, 2, 0);
	vd_kick(&d, 1);
	vd_post(&d, 0, 0, BUF, 2, VIRTQ_DESC_F_WRITE);
	vd_kick(&d, 0);
	assert_int_equal(input(&r1, "abc"), 2);
	assert_int_equal(input(&r1, "c"), 0); /* refused: no buffer */
	struct mb_virtio_console_state a, b;
	mb_virtio_console_save(c1, t1, &a);
	assert_true(a.open);
	assert_true(a.owed); /* the backend is owed an accept() */
	assert_int_equal(a.rx_stalls, 2);
	assert_int_equal(a.queues[0].used_idx, 1);
	assert_int_equal(a.queues[1].used_idx, 1);

	struct mb_mem *m2 = clone_ram(m1);
	struct mb_virtio *t2 = transport(&mb_virtio_console_ops, c2, feat, m2);
	mb_virtio_console_bind(c2, t2);
	assert_int_equal(mb_virtio_console_load(c2, t2, &a), 0);
	mb_virtio_console_save(c2, t2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	LOAD_ERRORS(mb_virtio_console_state, mb_virtio_console_load,
		    mb_virtio_console_save, c2, t2, a, 1);

	struct vd d2 = moved(&d, t2, m2);
	vd_post(&d2, 0, 1, BUF + 0x1000, 8, VIRTQ_DESC_F_WRITE);
	vd_kick(&d2, 0);
	assert_int_equal(r2.accepts, 1); /* the loaded device owed it */
	assert_int_equal(input(&r2, "c"), 1);
	assert_int_equal(vd_used_idx(&d2, 0), 2);
	assert_int_equal(vd_used(&d2, 0, 1, NULL), 1);
	assert_int_equal(*(char *)vd_gp(&d2, BUF + 0x1000), 'c');
	mb_virtio_console_free(c1), mb_virtio_console_free(c2);
	mb_virtio_free(t1), mb_virtio_free(t2);
	mb_mem_free(m1), mb_mem_free(m2);
}

/* ---- net ---------------------------------------------------------------------------- */

#define NHDR MB_VIRTIO_NET_HDR

static struct mb_virtio_net *net_new(struct mb_netbe **peer)
{
	struct mb_virtio_net_config nc = { { 0x52, 0x54, 0, 1, 2, 3 }, NULL, NULL };
	assert_int_equal(mb_netbe_pair(&nc.be, peer), 0);
	struct mb_virtio_net *n = mb_virtio_net_new(&nc);
	assert_non_null(n);
	return n;
}

/* A 60-byte frame of `seed` bytes after the header, descriptor i of the
 * transmit queue. */
static void transmit(struct vd *d, unsigned i, uint8_t seed)
{
	uint8_t *p = vd_gp(d, BUF + 0x8000 + 0x100 * i);
	memset(p, 0, NHDR);
	memset(p + NHDR, seed, 60);
	vd_post(d, 1, i, BUF + 0x8000 + 0x100 * i, NHDR + 60, 0);
	vd_kick(d, 1);
}

static void peer_send(struct mb_netbe *peer, uint8_t seed)
{
	uint8_t f[80];
	memset(f, seed, sizeof f);
	struct iovec v = { f, sizeof f };
	assert_int_equal(mb_netbe_send(peer, &v, 1), 0);
}

static void test_net(void **unused)
{
	struct mb_netbe *p1, *p2;
	struct mb_mem *m1 = vd_ram(RAM);
	struct mb_virtio_net *n1 = net_new(&p1), *n2 = net_new(&p2);
	uint64_t feat = mb_virtio_net_features(n1);
	struct mb_virtio *t1 = transport(&mb_virtio_net_ops, n1, feat, m1);
	mb_virtio_net_bind(n1, t1);
	struct vd d;
	vd_attach(&d, t1, m1);
	vd_setup(&d, V1, 2, N);
	uint8_t got[256];
	transmit(&d, 0, 0x11);
	transmit(&d, 1, 0x22);
	assert_int_equal(mb_netbe_recv(p1, got, sizeof got), 60);
	assert_int_equal(mb_netbe_recv(p1, got, sizeof got), 60);
	vd_post(&d, 0, 0, BUF, 2048, VIRTQ_DESC_F_WRITE);
	vd_kick(&d, 0);
	peer_send(p1, 0x33);
	mb_virtio_net_poll(n1);
	assert_int_equal(vd_used_idx(&d, 0), 1);
	struct mb_virtio_net_state a, b;
	mb_virtio_net_save(n1, t1, &a);
	assert_int_equal(a.tx_frames, 2);
	assert_int_equal(a.rx_frames, 1);
	assert_int_equal(a.queues[1].used_idx, 2);
	assert_int_equal(a.mac_len, 6);

	struct mb_mem *m2 = clone_ram(m1);
	struct mb_virtio *t2 = transport(&mb_virtio_net_ops, n2, feat, m2);
	mb_virtio_net_bind(n2, t2);
	assert_int_equal(mb_virtio_net_load(n2, t2, &a), 0);
	mb_virtio_net_save(n2, t2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	LOAD_ERRORS(mb_virtio_net_state, mb_virtio_net_load, mb_virtio_net_save,
		    n2, t2, a, 1);
	struct mb_virtio_net_state c = a;
	c.mac[0] = 1;
	assert_int_equal(mb_virtio_net_load(n2, t2, &c), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "mac"));

	struct vd d2 = moved(&d, t2, m2);
	transmit(&d2, 2, 0x44);
	assert_int_equal(vd_used_idx(&d2, 1), 3);
	assert_int_equal(mb_netbe_recv(p2, got, sizeof got), 60);
	assert_int_equal(got[0], 0x44);
	vd_post(&d2, 0, 1, BUF + 0x1000, 2048, VIRTQ_DESC_F_WRITE);
	vd_kick(&d2, 0);
	peer_send(p2, 0x55);
	mb_virtio_net_poll(n2);
	assert_int_equal(vd_used_idx(&d2, 0), 2);
	assert_int_equal(vd_used(&d2, 0, 1, NULL), NHDR + 80);
	mb_virtio_net_free(n1), mb_virtio_net_free(n2);
	mb_virtio_free(t1), mb_virtio_free(t2);
	mb_netbe_free(p1), mb_netbe_free(p2);
	mb_mem_free(m1), mb_mem_free(m2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rng), cmocka_unit_test(test_blk),
		cmocka_unit_test(test_console), cmocka_unit_test(test_net),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
