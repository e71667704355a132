/* virtio-blk behind the virtio-mmio transport, driven the way a driver
 * does (registers, rings in a fake guest memory) against a temporary image:
 * request parsing (bad header, bad sector, read-only, unknown type), data
 * paths, durability (every FLUSH reaches fdatasync, after the writes before
 * it), the status state machine, DEVICE_NEEDS_RESET and interrupts. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox/fault.h"
#include "moonbox/virtio_blk.h"
#include "virtio_driver.h"

/* ---- the device's calls into the file system ---------------------------------
 * The page cache hides a FLUSH that never syncs and a write that should
 * not have been made, so the test stands between blk.c and libc: these
 * definitions win over libc's for the whole program (libmoonbox.a is linked
 * in statically), count each call, may fail fdatasync, then call libc's. */
static struct {
	_Atomic unsigned syncs, pwritevs, fallocates;
	int sync_errno;            /* fdatasync fails with this (0: it works) */
	void (*on_sync)(int fd);   /* and sees the file first */
	bool fake_sync;            /* skip the real fdatasync */
} io;

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int fdatasync(int fd)
{
	io.syncs++;
	if (io.on_sync)
		io.on_sync(fd);
	if (io.sync_errno) {
		errno = io.sync_errno;
		return -1;
	}
	return io.fake_sync ? 0 : REAL(fdatasync)(fd);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	io.pwritevs++;
	return REAL(pwritev)(fd, iov, n, off);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	io.fallocates++;
	return REAL(fallocate)(fd, mode, off, len);
}

#define RAM (1u << 20)
#define HDR 0x10000u
#define DATA 0x20000u
#define STATUS 0x30000u
#define N 8
#define SECTORS 128

struct fx {
	struct mb_mem *mem;
	struct mb_virtio_blk *blk;
	struct mb_virtio *t;
	struct vd d;
	char path[64];
	int fd;
	int level, raises;
};

static void irq_set(void *ctx, unsigned line, int level)
{
	struct fx *f = ctx;
	f->raises += level && !f->level;
	f->level = level;
}

static int make(struct fx *f, bool ro, unsigned threads)
{
	struct mb_virtio_blk_config bc = { f->path, ro, "sn-1", threads };
	f->blk = mb_virtio_blk_new(&bc);
	if (!f->blk)
		return -1;
	struct mb_virtio_config c = {
		&mb_virtio_blk_ops, f->blk, mb_virtio_blk_features(f->blk), f->mem,
		{ irq_set, f, 5 }, -1,
	};
	f->t = mb_virtio_new(&c);
	vd_attach(&f->d, f->t, f->mem);
	return f->t ? 0 : -1;
}

static void unmake(struct fx *f)
{
	mb_virtio_blk_free(f->blk);
	mb_virtio_free(f->t);
}

static int setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof f);
	if (!(f.mem = vd_ram(RAM)))
		return -1;
	memset(&io, 0, sizeof io);
	strcpy(f.path, "/tmp/mb-blk-XXXXXX");
	f.fd = mkstemp(f.path);
	uint8_t sec[512];
	for (unsigned s = 0; s < SECTORS; s++) {
		memset(sec, (int)s, sizeof sec);
		if (write(f.fd, sec, sizeof sec) != sizeof sec)
			return -1;
	}
	*state = &f;
	return make(&f, false, 0);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	unmake(f);
	close(f->fd);
	unlink(f->path);
	mb_mem_free(f->mem);
	return 0;
}

/* One request: header, optional data, status; kick; return used len. */
static uint32_t request(struct fx *f, uint32_t type, uint64_t sector,
			uint32_t data_len, bool data_in)
{
	struct { uint32_t type, reserved; uint64_t sector; } h = { type, 0, sector };
	memcpy(vd_gp(&f->d, HDR), &h, sizeof h);
	*(uint8_t *)vd_gp(&f->d, STATUS) = 0xee;
	if (data_len) {
		vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
		vd_desc(&f->d, 0, 1, DATA, data_len,
			VIRTQ_DESC_F_NEXT | (data_in ? VIRTQ_DESC_F_WRITE : 0), 2);
	} else {
		vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 2);
	}
	vd_desc(&f->d, 0, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	uint16_t before = vd_used_idx(&f->d, 0);
	vd_kick(&f->d, 0);
	assert_int_equal((uint16_t)(vd_used_idx(&f->d, 0) - before), 1);
	uint32_t id;
	uint32_t len = vd_used(&f->d, 0, before, &id);
	assert_int_equal(id, 0);
	return len;
}

static uint8_t status(struct fx *f)
{
	return *(uint8_t *)vd_gp(&f->d, STATUS);
}

static uint64_t vfeat(void)
{
	return 1ull << VIRTIO_F_VERSION_1;
}

static void test_registers(void **state)
{
	struct fx *f = *state;
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM_MAX), MB_VQ_MAX_SIZE);
	assert_int_equal(vd_dev_features(&f->d, 1) & 1, 1); /* VERSION_1: bit 32 */
	assert_true(vd_dev_features(&f->d, 0) & 1u << VIRTIO_BLK_F_FLUSH);
	assert_true(vd_dev_features(&f->d, 0) & 1u << VIRTIO_F_RING_EVENT_IDX);
	uint64_t cap = 0;
	uint32_t v;
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG, &cap, 8);
	assert_int_equal(cap, SECTORS);
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + 20, &v, 4);
	assert_int_equal(v, 512); /* blk_size */
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + 12, &v, 4);
	assert_int_equal(v, MB_VQ_MAX_SIZE - 2); /* seg_max */
	v = 0x1234;
	mb_virtio_mmio_ops.read(f->t, MB_VIRTIO_MMIO_CONFIG + MB_VIRTIO_BLK_CONFIG_SIZE,
				&v, 4);
	assert_int_equal(v, 0); /* past the config space */
	uint16_t h = 0xffff; /* registers are 32-bit only */
	mb_virtio_mmio_ops.read(f->t, 0, &h, 2);
	assert_int_equal(h, 0);
}

static void test_feature_negotiation(void **state)
{
	struct fx *f = *state;
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS,
	      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	vd_drv_features(&f->d, 0, 1u << VIRTIO_BLK_F_FLUSH); /* no VERSION_1 */
	vd_status_add(&f->d, VIRTIO_STATUS_FEATURES_OK);
	assert_false(vd_status(&f->d) & VIRTIO_STATUS_FEATURES_OK);
	vd_drv_features(&f->d, 1, 1 | 1u << 7); /* VERSION_1 + unoffered 39 */
	vd_status_add(&f->d, VIRTIO_STATUS_FEATURES_OK);
	assert_false(vd_status(&f->d) & VIRTIO_STATUS_FEATURES_OK);
	vd_wr(&f->d, MB_VIRTIO_MMIO_DRIVER_FEATURES, 1);
	vd_status_add(&f->d, VIRTIO_STATUS_FEATURES_OK);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_FEATURES_OK);
	/* features are frozen after FEATURES_OK */
	vd_drv_features(&f->d, 0, 0);
	assert_int_equal(mb_virtio_features(f->t) & 1u << VIRTIO_BLK_F_FLUSH,
			 1u << VIRTIO_BLK_F_FLUSH);
}

static void test_driver_ok_needs_features_ok(void **state)
{
	struct fx *f = *state;
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE |
	      VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, 0); /* reset clears it */
	assert_int_equal(vd_status(&f->d), 0);
}

static void test_read(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 3, 1024, true), 1025);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	uint8_t *d = vd_gp(&f->d, DATA);
	assert_int_equal(d[0], 3);
	assert_int_equal(d[511], 3);
	assert_int_equal(d[512], 4);
	/* interrupt: level while InterruptStatus != 0, lowered by the ACK */
	assert_int_equal(f->level, 1);
	assert_int_equal(vd_isr(&f->d), 1);
	vd_ack(&f->d, 1);
	assert_int_equal(f->level, 0);
	assert_int_equal(vd_isr(&f->d), 0);
}

static void test_write(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	memset(vd_gp(&f->d, DATA), 0xab, 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 7, 512, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	uint8_t b[512];
	assert_int_equal(pread(f->fd, b, 512, 7 * 512), 512);
	assert_int_equal(b[0], 0xab);
	assert_int_equal(b[511], 0xab);
	assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
}

static void test_bad_sector(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, SECTORS, 512, true), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, SECTORS - 1, 1024, true), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, UINT64_MAX, 512, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	/* not a whole number of sectors */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 0, 100, true), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	/* the last sector is fine */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, SECTORS - 1, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
}

static void test_unknown_type(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	assert_int_equal(request(f, 99, 0, 0, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_UNSUPP);
}

static void test_get_id(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	memset(vd_gp(&f->d, DATA), 0x55, 20);
	assert_int_equal(request(f, VIRTIO_BLK_T_GET_ID, 0, 20, true), 21);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vd_gp(&f->d, DATA), "sn-1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
}

static void test_bad_header(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	vd_desc(&f->d, 0, 0, HDR, 8, VIRTQ_DESC_F_NEXT, 2); /* 8 of 16 bytes */
	vd_desc(&f->d, 0, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), 1);
}

static void test_split_header(void **state)
{
	struct fx *f = *state; /* framing is free (sec. 2.6.4) */
	vd_setup(&f->d, vfeat(), 1, N);
	struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_IN, 0, 9 };
	memcpy(vd_gp(&f->d, HDR), &h, 16);
	vd_desc(&f->d, 0, 0, HDR, 5, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->d, 0, 1, HDR + 5, 11, VIRTQ_DESC_F_NEXT, 3);
	/* data and status share one writable buffer */
	vd_desc(&f->d, 0, 3, DATA, 513, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
	uint8_t *d = vd_gp(&f->d, DATA);
	assert_int_equal(d[0], 9);
	assert_int_equal(d[512], VIRTIO_BLK_S_OK);
}

static void test_no_status_byte(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	vd_desc(&f->d, 0, 0, HDR, 16, 0, 0);
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
	assert_int_equal(vd_used_idx(&f->d, 0), 1);
	assert_int_equal(vd_used(&f->d, 0, 0, NULL), 0);
}

static void test_discard(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct { uint64_t sector; uint32_t num, flags; } seg = { 8, 8, 0 };
	memcpy(vd_gp(&f->d, DATA), &seg, 16);
	assert_int_equal(request(f, VIRTIO_BLK_T_DISCARD, 0, 16, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	uint8_t b[512];
	assert_int_equal(pread(f->fd, b, 512, 8 * 512), 512);
	assert_int_equal(b[0], 0);
	seg.sector = SECTORS - 1, seg.num = 2; /* past the end */
	memcpy(vd_gp(&f->d, DATA), &seg, 16);
	assert_int_equal(request(f, VIRTIO_BLK_T_DISCARD, 0, 16, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
}

static void test_readonly(void **state)
{
	struct fx *f = *state; /* the image file is writable: the device refuses */
	assert_int_equal(access(f->path, W_OK), 0);
	unmake(f);
	assert_int_equal(make(f, true, 0), 0);
	assert_true(vd_dev_features(&f->d, 0) & 1u << VIRTIO_BLK_F_RO);
	assert_false(vd_dev_features(&f->d, 0) & 1u << VIRTIO_BLK_F_DISCARD);
	vd_setup(&f->d, vfeat(), 1, N);
	memset(vd_gp(&f->d, DATA), 0xcd, 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 1, 512, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	struct { uint64_t sector; uint32_t num, flags; } seg = { 0, 8, 0 };
	memcpy(vd_gp(&f->d, DATA), &seg, 16);
	assert_int_equal(request(f, VIRTIO_BLK_T_DISCARD, 0, 16, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	/* refused before the file was touched: no write, no hole punched */
	assert_int_equal(io.pwritevs, 0);
	assert_int_equal(io.fallocates, 0);
	uint8_t b[512];
	for (unsigned s = 0; s < 8; s++) {
		assert_int_equal(pread(f->fd, b, 512, s * 512), 512);
		assert_int_equal(b[0], s); /* unchanged */
		assert_int_equal(b[511], s);
	}
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 1, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.writes, 0);
	assert_int_equal(st.discards, 0);
	assert_int_equal(st.ioerr, 2);
}

/* Durability, sec. 5.2.6.2: a FLUSH makes the completed writes durable.
 * Each one is one fdatasync, and its status is that call's. */
static void test_flush_syncs(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	memset(vd_gp(&f->d, DATA), 0x77, 512);
	for (unsigned i = 1; i <= 3; i++) {
		assert_int_equal(request(f, VIRTIO_BLK_T_OUT, i, 512, false), 1);
		assert_int_equal(io.syncs, i - 1); /* a write alone does not sync */
		assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
		assert_int_equal(status(f), VIRTIO_BLK_S_OK);
		assert_int_equal(io.syncs, i);
	}
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.flushes, 3);
	assert_int_equal(st.syncs, 3);
	assert_int_equal(st.ioerr, 0);
}

static void test_flush_sync_fails(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	memset(vd_gp(&f->d, DATA), 0x77, 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 4, 512, false), 1);
	io.sync_errno = EIO;
	assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(io.syncs, 1);
	/* Linux reports a writeback error to one fdatasync only and may have
	 * dropped the dirty pages: a later sync that succeeds proves nothing,
	 * so every later FLUSH fails too. */
	io.sync_errno = 0;
	assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.flushes, 2);
	assert_int_equal(st.ioerr, 2);
	/* reads and writes go on */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 4, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(*(uint8_t *)vd_gp(&f->d, DATA), 0x77);
}

/* With workers, a write and the FLUSH after it are in flight together:
 * the sync must come after the write reached the file. The write is made
 * long (15.6 MiB from one aliased 64 KiB buffer) so that a flush that does
 * not wait overtakes it. */
#define BIG_SEGS 250u
#define BIG_SECTORS (BIG_SEGS * 128u)
static struct {
	struct mb_virtio_blk *blk;
	int fd;
	ssize_t got;
	uint8_t last[512];
	uint64_t writes;
} seen;

static void look_at_file(int fd) /* on a worker: no cmocka asserts here */
{
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(seen.blk, &st);
	seen.writes = st.writes;
	seen.got = pread(seen.fd, seen.last, 512, (BIG_SECTORS - 1) * 512ull);
}

static void test_flush_after_inflight_write(void **state)
{
	struct fx *f = *state;
	assert_int_equal(ftruncate(f->fd, BIG_SECTORS * 512ull), 0);
	unmake(f);
	assert_int_equal(make(f, false, 2), 0);
	vd_setup(&f->d, vfeat() | 1ull << VIRTIO_F_RING_INDIRECT_DESC, 1, N);
	seen.fd = f->fd, seen.blk = f->blk;
	io.on_sync = look_at_file;
	io.fake_sync = true;
	/* chain 0: OUT at sector 0 through an indirect table of header,
	 * BIG_SEGS x 64 KiB, status */
	struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_OUT, 0, 0 };
	memcpy(vd_gp(&f->d, HDR), &h, 16);
	memset(vd_gp(&f->d, DATA), 0x5a, 0x10000);
	const uint64_t table = 0x40000;
	for (unsigned i = 0; i < BIG_SEGS + 2; i++) {
		uint64_t addr = i == 0 ? HDR : i <= BIG_SEGS ? DATA : STATUS;
		uint32_t len = i == 0 ? 16 : i <= BIG_SEGS ? 0x10000 : 1;
		uint16_t fl = i <= BIG_SEGS ? VIRTQ_DESC_F_NEXT : VIRTQ_DESC_F_WRITE;
		uint16_t next = (uint16_t)(i + 1);
		vd_put_desc(f->mem, table, i, addr, len, fl, next);
	}
	vd_desc(&f->d, 0, 0, table, 16 * (BIG_SEGS + 2), VIRTQ_DESC_F_INDIRECT, 0);
	/* chain 1: FLUSH */
	h.type = VIRTIO_BLK_T_FLUSH;
	memcpy(vd_gp(&f->d, HDR + 16), &h, 16);
	vd_desc(&f->d, 0, 1, HDR + 16, 16, VIRTQ_DESC_F_NEXT, 2);
	vd_desc(&f->d, 0, 2, STATUS + 1, 1, VIRTQ_DESC_F_WRITE, 0);
	*(uint8_t *)vd_gp(&f->d, STATUS) = *(uint8_t *)vd_gp(&f->d, STATUS + 1) = 0xee;
	vd_offer(&f->d, 0, 0);
	vd_offer(&f->d, 0, 1);
	vd_kick(&f->d, 0); /* both start together */
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, 0); /* reset waits for both */
	assert_int_equal(io.syncs, 1);
	assert_int_equal(*(uint8_t *)vd_gp(&f->d, STATUS), VIRTIO_BLK_S_OK);
	assert_int_equal(*(uint8_t *)vd_gp(&f->d, STATUS + 1), VIRTIO_BLK_S_OK);
	assert_int_equal(seen.writes, 1); /* the write had completed */
	assert_int_equal(seen.got, 512);
	assert_int_equal(seen.last[0], 0x5a); /* and its last sector was in the file */
	assert_int_equal(seen.last[511], 0x5a);
}

static void test_malformed_needs_reset(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 0); /* loop */
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(vd_isr(&f->d), 2); /* configuration change interrupt */
	assert_int_equal(f->level, 1);
	char why[160];
	assert_non_null(strstr(mb_virtio_fault(f->t, why, sizeof why), "loop"));
	struct mb_virtio_mmio_state ts;
	struct mb_virtq_state qs[1];
	mb_virtio_save(f->t, &ts, qs);
	assert_true(qs[0].broken);
	/* nothing more is served until a reset */
	vd_kick(&f->d, 0);
	assert_int_equal(vd_used_idx(&f->d, 0), 0);
	vd_setup(&f->d, vfeat(), 1, N); /* resets (status 0) and sets up again */
	assert_int_equal(f->level, 0);
	assert_false(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 0, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
}

static void test_notify_before_setup(void **state)
{
	struct fx *f = *state;
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vd_kick(&f->d, 0); /* before DRIVER_OK: ignored */
	assert_int_equal(vd_status(&f->d), VIRTIO_STATUS_ACKNOWLEDGE);
	vd_setup(&f->d, vfeat(), 1, N);
	vd_kick(&f->d, 3); /* live device, no such queue */
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	assert_int_equal(vd_isr(&f->d), 2);
	assert_int_equal(f->level, 1);
}

static void test_bad_queue_setup(void **state)
{
	struct fx *f = *state;
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS,
	      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_SEL, 0);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM, 6); /* not a power of two */
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_DESC_LOW, VD_DESC(0));
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_DRIVER_LOW, VD_AVAIL(0));
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_DEVICE_LOW, VD_USED(0));
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_READY, 1);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_READY), 0);
	assert_true(vd_status(&f->d) & VIRTIO_STATUS_NEEDS_RESET);
	vd_wr(&f->d, MB_VIRTIO_MMIO_QUEUE_SEL, 5); /* a queue that does not exist */
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
}

static void test_event_idx_suppression(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat() | 1ull << VIRTIO_F_RING_EVENT_IDX, 1, N);
	vd_set_used_event(&f->d, 0, 5); /* only wants to hear past entry 5 */
	request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	assert_int_equal(f->raises, 1); /* the first always signals */
	vd_ack(&f->d, VIRTIO_MMIO_INT_VRING);
	for (int i = 0; i < 4; i++)
		request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	assert_int_equal(f->raises, 1); /* used idx 2..5: suppressed */
	request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	assert_int_equal(f->raises, 2); /* idx 6 passes used_event 5 */
	assert_int_equal(vd_avail_event(&f->d, 0), 6);
}

static void test_workers_in_flight(void **state)
{
	struct fx *f = *state;
	unmake(f);
	assert_int_equal(make(f, false, 2), 0);
	vd_setup(&f->d, vfeat(), 1, N);
	struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_IN, 0, 0 };
	for (unsigned i = 0; i < 4; i++) { /* 4 reads of 2 sectors each */
		h.sector = 2 * i;
		memcpy(vd_gp(&f->d, HDR + 16 * i), &h, 16);
		vd_desc(&f->d, 0, 2 * i, HDR + 16 * i, 16, VIRTQ_DESC_F_NEXT,
			(uint16_t)(2 * i + 1));
		vd_desc(&f->d, 0, 2 * i + 1, DATA + 0x1000 * i, 1025,
			VIRTQ_DESC_F_WRITE, 0);
		vd_offer(&f->d, 0, (uint16_t)(2 * i));
	}
	vd_kick(&f->d, 0);
	assert_true(vd_wait_used(&f->d, 0, 4));
	assert_int_equal(vd_used_idx(&f->d, 0), 4);
	for (unsigned i = 0; i < 4; i++) {
		uint8_t *d = vd_gp(&f->d, DATA + 0x1000 * i);
		assert_int_equal(d[0], 2 * i);
		assert_int_equal(d[512], 2 * i + 1);
		assert_int_equal(d[1024], VIRTIO_BLK_S_OK);
	}
	/* reset waits for the workers: nothing in flight */
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, 0);
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.reads, 4);
	assert_int_equal(st.bytes_read, 4 * 1024);
}

static void test_open_error_names_file(void **state)
{
	(void)state;
	struct mb_virtio_blk_config c = { "/nonexistent/x.img", false, NULL, 0 };
	assert_null(mb_virtio_blk_new(&c));
	assert_non_null(strstr(mb_errmsg(), "/nonexistent/x.img"));
}

/* ---- fault actions on the device (core/fault.c decides, blk.c acts) ------------ */

/* A plan without a machine with one rule on this disk. */
static struct mb_fault_plan *fault_plan(struct fx *f, struct mb_fault_rule r)
{
	struct mb_fault_plan_config c = { 1, NULL, NULL };
	struct mb_fault_plan *p;
	assert_int_equal(mb_fault_plan_new(NULL, &c, &p), 0);
	strcpy(r.dev, "blk0");
	assert_int_equal(mb_fault_plan_add(p, &r), 1);
	assert_int_equal(mb_virtio_blk_set_fault(f->blk, mb_fault_plan_site(p, "blk0")), 0);
	return p;
}

static uint64_t rule_fired(struct mb_fault_plan *p)
{
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(p, 1, &st);
	return st.fired;
}

/* error, latency and corrupt acting on the device's requests (the
 * engine's verdicts are tested in test_fault.c) */
static void test_fault_error_latency_corrupt(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_plan *p = fault_plan(f, (struct mb_fault_rule){
		.action = MB_FAULT_BLK_ERROR, .ops = MB_FAULT_OP_READ, .first = 8,
		.last = 9, .status = VIRTIO_BLK_S_UNSUPP });
	memset(vd_gp(&f->d, DATA), 0x77, 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 9, 512, true), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(((uint8_t *)vd_gp(&f->d, DATA))[0], 0x77); /* nothing read */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 10, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 8, 512, false), 1); /* a write */
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(rule_fired(p), 1);
	mb_fault_plan_free(p);

	/* threads = 0: the kick itself waits ms */
	p = fault_plan(f, (struct mb_fault_rule){ .action = MB_FAULT_BLK_LATENCY,
		.first = 1, .last = 0, .ms = 40, .nth = 1 });
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 3, 512, true), 513);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	int64_t ms = (int64_t)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	assert_true(ms >= 40);
	assert_int_equal(rule_fired(p), 1);
	mb_fault_plan_free(p);

	/* corrupt: one bit per sector of the range, the status OK */
	p = fault_plan(f, (struct mb_fault_rule){ .action = MB_FAULT_BLK_CORRUPT,
		.ops = MB_FAULT_OP_READ, .first = 5, .last = 5, .bytes = 1 });
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 4, 3 * 512, true), 3 * 512 + 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	uint8_t want[3 * 512];
	assert_int_equal(pread(f->fd, want, sizeof want, 4 * 512), (ssize_t)sizeof want);
	const uint8_t *got = vd_gp(&f->d, DATA);
	unsigned flipped[3] = { 0, 0, 0 };
	for (unsigned i = 0; i < sizeof want; i++)
		flipped[i / 512] += (unsigned)__builtin_popcount(got[i] ^ want[i]);
	assert_int_equal(flipped[0], 0); /* sector 4: outside the range */
	assert_int_equal(flipped[1], 1); /* sector 5: one bit */
	assert_int_equal(flipped[2], 0);
	assert_int_equal(rule_fired(p), 1);
	mb_fault_plan_free(p);
}

static void test_fault_lying_flush(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_plan *p = fault_plan(f, (struct mb_fault_rule){
		.action = MB_FAULT_BLK_LYING_FLUSH, .first = 1, .last = 0, .count = 1 });
	assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK); /* acknowledged... */
	assert_int_equal(io.syncs, 0);                 /* ...and never synced */
	assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(io.syncs, 1);                 /* count = 1: the next one syncs */
	struct mb_virtio_blk_stats st;
	mb_virtio_blk_stats(f->blk, &st);
	assert_int_equal(st.flushes - st.syncs, 1);    /* the lie, counted */
	assert_int_equal(rule_fired(p), 1);
	mb_fault_plan_free(p);
}

static void test_fault_torn_write(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_plan *p = fault_plan(f, (struct mb_fault_rule){
		.action = MB_FAULT_BLK_TORN_WRITE, .first = 10, .last = 10, .keep = 1 });
	memset(vd_gp(&f->d, DATA), 0xab, 4 * 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 10, 4 * 512, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK); /* the guest is told it went well */
	uint8_t b[4 * 512];
	assert_int_equal(pread(f->fd, b, sizeof b, 10 * 512), (ssize_t)sizeof b);
	assert_int_equal(b[0], 0xab);
	assert_int_equal(b[511], 0xab);
	assert_int_equal(b[512], 11);       /* sectors 11-13 keep their old bytes */
	assert_int_equal(b[3 * 512], 13);
	/* keep = 0: nothing at all reaches the file */
	mb_fault_plan_free(p);
	p = fault_plan(f, (struct mb_fault_rule){
		.action = MB_FAULT_BLK_TORN_WRITE, .first = 1, .last = 0, .keep = 0 });
	unsigned before = io.pwritevs;
	memset(vd_gp(&f->d, DATA), 0xcd, 512);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 20, 512, false), 1);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(io.pwritevs, before);
	assert_int_equal(pread(f->fd, b, 512, 20 * 512), 512);
	assert_int_equal(b[0], 20);
	mb_fault_plan_free(p);
}

static void test_fault_bad_blocks_heal(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_plan *p = fault_plan(f, (struct mb_fault_rule){
		.action = MB_FAULT_BLK_BAD, .first = 20, .last = 23 });
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 19, 1024, true), 1); /* 19-20 */
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 24, 512, true), 513);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	memset(vd_gp(&f->d, DATA), 0x5a, 1024);
	assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 20, 1024, false), 1); /* heals 20-21 */
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 20, 1024, true), 1025);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(((uint8_t *)vd_gp(&f->d, DATA))[0], 0x5a);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 21, 1024, true), 1); /* 22 still bad */
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	assert_int_equal(rule_fired(p), 2);
	mb_fault_plan_free(p);
}

static void test_fault_hold_release(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_rule r = { .action = MB_FAULT_BLK_HOLD, .first = 5, .last = 5,
				   .count = 1 };
	strcpy(r.tag, "x");
	struct mb_fault_plan *p = fault_plan(f, r);
	struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_IN, 0, 5 };
	memcpy(vd_gp(&f->d, HDR), &h, sizeof h);
	*(uint8_t *)vd_gp(&f->d, STATUS) = 0xee;
	vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->d, 0, 1, DATA, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	vd_desc(&f->d, 0, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	uint16_t before = vd_used_idx(&f->d, 0);
	vd_kick(&f->d, 0);
	assert_int_equal(vd_used_idx(&f->d, 0), before); /* parked */
	assert_int_equal(status(f), 0xee);
	assert_int_equal(mb_fault_plan_held(p, "x"), 1);
	assert_int_equal(mb_fault_plan_release(p, "y"), 0);
	/* another request is not held up by it */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 6, 512, true), 513);
	assert_int_equal(mb_fault_plan_release(p, "x"), 1);
	assert_int_equal((uint16_t)(vd_used_idx(&f->d, 0) - before), 2);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	assert_int_equal(mb_fault_plan_release(p, "x"), 0);
	assert_int_equal(mb_fault_plan_held(p, NULL), 0);
	mb_fault_plan_free(p);
}

/* A closed plan's site gives way to the next plan's. */
static void test_fault_plan_replaced(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_rule r = { .action = MB_FAULT_BLK_ERROR, .first = 1, .last = 0,
				   .status = VIRTIO_BLK_S_IOERR };
	struct mb_fault_plan *p1 = fault_plan(f, r);
	struct mb_fault_plan_config c = { 1, NULL, NULL };
	struct mb_fault_plan *p2;
	assert_int_equal(mb_fault_plan_new(NULL, &c, &p2), 0);
	assert_int_equal(mb_virtio_blk_set_fault(f->blk, mb_fault_plan_site(p2, "blk0")),
			 -EBUSY);
	mb_fault_plan_close(p1);
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 1, 512, true), 513); /* closed: none */
	r.status = VIRTIO_BLK_S_UNSUPP;
	strcpy(r.dev, "blk0");
	assert_int_equal(mb_fault_plan_add(p2, &r), 1);
	assert_int_equal(mb_virtio_blk_set_fault(f->blk, mb_fault_plan_site(p2, "blk0")), 0);
	request(f, VIRTIO_BLK_T_IN, 1, 512, true);
	assert_int_equal(status(f), VIRTIO_BLK_S_UNSUPP);
	mb_fault_plan_free(p1);
	mb_fault_plan_free(p2);
}

/* F.virtio.bad_used_id on the transport: the 2nd used element names
 * descriptor head + 1 (not a head: the chain at 0 is), the 3rd the id the
 * rule gives; the 1st and 4th are right. */
static void test_fault_bad_used_id(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	struct mb_fault_plan_config c = { 1, NULL, NULL };
	struct mb_fault_plan *p;
	assert_int_equal(mb_fault_plan_new(NULL, &c, &p), 0);
	struct mb_fault_rule r = { .action = MB_FAULT_VIRTIO_BAD_USED_ID,
				   .first = 0, .last = 0, .nth = 2 };
	strcpy(r.dev, "blk0");
	assert_int_equal(mb_fault_plan_add(p, &r), 1);
	r.nth = 3, r.has_id = true, r.id = 77;
	assert_int_equal(mb_fault_plan_add(p, &r), 2);
	r.first = r.last = 1; /* a queue the disk does not use */
	r.nth = 0, r.has_id = false;
	assert_int_equal(mb_fault_plan_add(p, &r), 3);
	assert_int_equal(mb_virtio_set_fault(f->t, mb_fault_plan_site(p, "blk0")), 0);
	static const uint32_t want[] = { 0, 1, 77, 0 };
	for (unsigned i = 0; i < 4; i++) {
		struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_IN, 0, i };
		memcpy(vd_gp(&f->d, HDR), &h, sizeof h);
		vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
		vd_desc(&f->d, 0, 1, DATA, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
		vd_desc(&f->d, 0, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
		vd_offer(&f->d, 0, 0);
		vd_kick(&f->d, 0);
		assert_int_equal(vd_used_idx(&f->d, 0), i + 1);
		uint32_t id;
		assert_int_equal(vd_used(&f->d, 0, i, &id), 513);
		assert_int_equal(id, want[i]);
	}
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(p, 3, &st);
	assert_int_equal(st.matched, 0); /* queue 1 saw nothing */
	mb_fault_plan_free(p);
}

/* F.virtio.config_change { capacity }: the disk shrinks, ConfigGeneration
 * moves on, a config interrupt (5.2.4); reads past the new end fail; it
 * may not grow past the image. */
static void test_fault_resize(void **state)
{
	struct fx *f = *state;
	vd_setup(&f->d, vfeat(), 1, N);
	uint32_t gen = vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG_GENERATION);
	int raises = f->raises;
	assert_int_equal(mb_virtio_blk_check_resize(f->blk, SECTORS + 1), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "capacity: 129"));
	mb_virtio_blk_resize(f->blk, f->t, 64);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG), 64);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG_GENERATION), gen + 1);
	assert_int_equal(vd_isr(&f->d) & VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_CONFIG);
	assert_int_equal(f->raises, raises + 1);
	request(f, VIRTIO_BLK_T_IN, 63, 512, true);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK);
	request(f, VIRTIO_BLK_T_IN, 64, 512, true);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR);
	mb_virtio_blk_resize(f->blk, f->t, SECTORS); /* back to the image's size */
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG), SECTORS);
	assert_int_equal(vd_rd(&f->d, MB_VIRTIO_MMIO_CONFIG_GENERATION), gen + 2);
}

/* m:on("blk") asks (moonbox/fault.h): an observer that takes a request
 * parks it until the ask's answer; a reset cancels it (the request runs,
 * unanswered) so the reset does not wait on the answer. */
static struct {
	struct mb_fault_ask *ask;
	unsigned asked, cancels;
} ob;

static bool take_sector5(void *ctx, struct mb_virtio_blk *b,
			 const struct mb_fault_blk_event *e, struct mb_fault_ask *ask)
{
	ob.asked++;
	if (e->sector != 5)
		return false;
	ob.ask = ask;
	return true;
}

static void cancel_asks(void *ctx, const void *dev)
{
	struct mb_fault_ask *a = ob.ask;
	ob.ask = NULL;
	if (a) {
		ob.cancels++;
		a->answer(a->arg, NULL);
	}
}

static void post_read5(struct fx *f)
{
	struct { uint32_t type, reserved; uint64_t sector; } h = { VIRTIO_BLK_T_IN, 0, 5 };
	memcpy(vd_gp(&f->d, HDR), &h, sizeof h);
	*(uint8_t *)vd_gp(&f->d, STATUS) = 0xee;
	vd_desc(&f->d, 0, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_desc(&f->d, 0, 1, DATA, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	vd_desc(&f->d, 0, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_offer(&f->d, 0, 0);
	vd_kick(&f->d, 0);
}

static void test_asked_answer_and_reset_cancel(void **state)
{
	struct fx *f = *state;
	memset(&ob, 0, sizeof ob);
	vd_setup(&f->d, vfeat(), 1, N);
	assert_int_equal(mb_virtio_blk_set_observer(f->blk, take_sector5, cancel_asks, &ob), 0);
	uint16_t before = vd_used_idx(&f->d, 0);
	post_read5(f);
	assert_int_equal(vd_used_idx(&f->d, 0), before); /* parked */
	assert_non_null(ob.ask);
	/* another request is not held up by it */
	assert_int_equal(request(f, VIRTIO_BLK_T_IN, 6, 512, true), 513);
	struct mb_fault_verdict v = { .error = true, .status = VIRTIO_BLK_S_IOERR };
	struct mb_fault_ask *a = ob.ask;
	ob.ask = NULL;
	a->answer(a->arg, &v);
	assert_int_equal((uint16_t)(vd_used_idx(&f->d, 0) - before), 2);
	assert_int_equal(status(f), VIRTIO_BLK_S_IOERR); /* the answer's error */

	post_read5(f); /* parked again; the driver resets the device */
	assert_non_null(ob.ask);
	assert_int_equal(status(f), 0xee);
	vd_wr(&f->d, MB_VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(ob.cancels, 1);
	assert_null(ob.ask);
	assert_int_equal(status(f), VIRTIO_BLK_S_OK); /* ran, unanswered */
	assert_int_equal(ob.asked, 3);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_registers), T(test_feature_negotiation),
		T(test_driver_ok_needs_features_ok), T(test_read), T(test_write),
		T(test_bad_sector), T(test_unknown_type), T(test_get_id),
		T(test_bad_header), T(test_split_header), T(test_no_status_byte),
		T(test_discard), T(test_readonly), T(test_flush_syncs),
		T(test_flush_sync_fails), T(test_flush_after_inflight_write),
		T(test_malformed_needs_reset),
		T(test_notify_before_setup), T(test_bad_queue_setup),
		T(test_event_idx_suppression), T(test_workers_in_flight),
		T(test_open_error_names_file), T(test_fault_error_latency_corrupt), T(test_fault_lying_flush),
		T(test_fault_torn_write), T(test_fault_bad_blocks_heal),
		T(test_fault_hold_release), T(test_fault_plan_replaced),
		T(test_fault_bad_used_id), T(test_fault_resize),
		T(test_asked_answer_and_reset_cancel),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
