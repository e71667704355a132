/* The copy-on-write disk overlay (devices/virtio/overlay.c): reads see the
 * image until a block is written, writes never reach the image (unaligned
 * ones merge with it), a kept state comes back whole after later writes,
 * a kept state outlives the overlay, and discards read as zeros. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/overlay.h"

#define SIZE (64u * 1024)

static int image(uint8_t *want)
{
	char path[] = "/tmp/mb-ovl-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	for (unsigned i = 0; i < SIZE; i++)
		want[i] = (uint8_t)(i * 7 + i / 4096);
	assert_int_equal(pwrite(fd, want, SIZE, 0), SIZE);
	return fd;
}

static void rd(struct mb_overlay *o, uint64_t off, void *buf, size_t len)
{
	struct iovec v = { buf, len };
	assert_int_equal(mb_overlay_read(o, &v, 1, off, len), 0);
}

static void wr(struct mb_overlay *o, uint64_t off, const void *buf, size_t len)
{
	struct iovec v = { (void *)buf, len };
	assert_int_equal(mb_overlay_write(o, &v, 1, off, len), 0);
}

static void test_reads_image_writes_stay_in_memory(void **state)
{
	static uint8_t want[SIZE], got[SIZE], file[SIZE];
	int fd = image(want);
	struct mb_overlay *o = mb_overlay_new(fd, SIZE);
	rd(o, 0, got, SIZE);
	assert_memory_equal(got, want, SIZE);
	/* 1000 bytes across the boundary of blocks 1 and 2, unaligned */
	uint8_t x[1000];
	memset(x, 0xab, sizeof x);
	wr(o, 2 * 4096 - 300, x, sizeof x);
	memcpy(want + 2 * 4096 - 300, x, sizeof x);
	rd(o, 0, got, SIZE);
	assert_memory_equal(got, want, SIZE);
	assert_int_equal(mb_overlay_blocks(o), 2);
	assert_int_equal(pread(fd, file, SIZE, 0), SIZE);
	assert_int_not_equal(memcmp(file, want, SIZE), 0); /* image untouched */
	assert_int_equal(file[2 * 4096 - 300], (uint8_t)((2 * 4096 - 300) * 7 + 1));
	/* a discard reads as zeros */
	assert_int_equal(mb_overlay_zero(o, 8 * 4096, 4096), 0);
	rd(o, 8 * 4096, got, 4096);
	for (unsigned i = 0; i < 4096; i++)
		assert_int_equal(got[i], 0);
	mb_overlay_free(o);
	close(fd);
}

static void test_keep_and_put_back(void **state)
{
	static uint8_t base[SIZE], at_keep[SIZE], got[SIZE];
	int fd = image(base);
	struct mb_overlay *o = mb_overlay_new(fd, SIZE);
	struct mb_overlay_kept *empty, *k;
	assert_int_equal(mb_overlay_keep(o, &empty), 0);
	assert_null(empty);
	uint8_t a[4096], b[512];
	memset(a, 1, sizeof a);
	memset(b, 2, sizeof b);
	wr(o, 4096, a, sizeof a);
	assert_int_equal(mb_overlay_keep(o, &k), 0);
	assert_int_equal(mb_overlay_kept_blocks(k), 1);
	rd(o, 0, at_keep, SIZE);
	/* the kept block is shared: writing it copies it first */
	wr(o, 4096 + 100, b, sizeof b);
	wr(o, 10 * 4096, b, sizeof b);
	rd(o, 0, got, SIZE);
	assert_int_equal(got[4096 + 100], 2);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(mb_overlay_put_back(o, k), 0);
		rd(o, 0, got, SIZE);
		assert_memory_equal(got, at_keep, SIZE);
		wr(o, 4096, b, sizeof b); /* and again after each put back */
	}
	assert_int_equal(mb_overlay_put_back(o, empty), 0);
	rd(o, 0, got, SIZE);
	assert_memory_equal(got, base, SIZE);
	assert_int_equal(mb_overlay_blocks(o), 0);
	mb_overlay_free(o);
	/* k outlives the overlay it came from */
	assert_int_equal(mb_overlay_kept_blocks(k), 1);
	mb_overlay_drop(k);
	close(fd);
}

struct sink {
	uint8_t buf[4 * 4104 + 16];
	size_t n;
};

static int sink_put(void *ctx, const void *p, size_t n)
{
	struct sink *k = ctx;
	assert_true(k->n + n <= sizeof k->buf);
	memcpy(k->buf + k->n, p, n);
	k->n += n;
	return 0;
}

/* A kept state to bytes (snapshot files) and back: the same disk; bad
 * bytes refused, never half-read; blocks past a smaller disk refused. */
static void test_kept_bytes(void **state)
{
	static uint8_t base[SIZE], want[SIZE], got[SIZE];
	int fd = image(base);
	struct mb_overlay *o = mb_overlay_new(fd, SIZE);
	struct mb_overlay_kept *k, *back;
	uint8_t a[512];
	memset(a, 0x5a, sizeof a);
	wr(o, 3 * 4096 + 512, a, sizeof a);
	wr(o, 9 * 4096, a, sizeof a);
	rd(o, 0, want, SIZE);
	assert_int_equal(mb_overlay_keep(o, &k), 0);
	static struct sink sk;
	assert_int_equal(mb_overlay_kept_size(k), 16 + 2 * 4104);
	assert_int_equal(mb_overlay_kept_write(k, sink_put, &sk), 0);
	assert_int_equal(sk.n, 16 + 2 * 4104);
	assert_int_equal(mb_overlay_kept_read(sk.buf, sk.n, &back), 0);
	assert_int_equal(mb_overlay_kept_blocks(back), 2);
	assert_int_equal(mb_overlay_put_back(o, NULL), 0);
	assert_int_equal(mb_overlay_put_back(o, back), 0);
	rd(o, 0, got, SIZE);
	assert_memory_equal(got, want, SIZE);
	mb_overlay_drop(back);
	/* cut short, a wrong block size, indices out of order */
	assert_int_equal(mb_overlay_kept_read(sk.buf, sk.n - 1, &back), -EINVAL);
	assert_null(back);
	sk.buf[1] = 0x20; /* 8192 */
	assert_int_equal(mb_overlay_kept_read(sk.buf, sk.n, &back), -EINVAL);
	sk.buf[1] = 0x10; /* 4096 again */
	uint64_t nine = 9;
	memcpy(sk.buf + 16 + 4104, &nine, 8);
	memcpy(sk.buf + 16, &nine, 8);
	assert_int_equal(mb_overlay_kept_read(sk.buf, sk.n, &back), -EINVAL);
	assert_null(back);
	/* a block past the end of a smaller disk */
	uint64_t far = SIZE / 4096;
	memcpy(sk.buf + 16, &far, 8);
	far++;
	memcpy(sk.buf + 16 + 4104, &far, 8);
	assert_int_equal(mb_overlay_kept_read(sk.buf, sk.n, &back), 0);
	assert_int_equal(mb_overlay_put_back(o, back), -EINVAL);
	rd(o, 0, got, SIZE);
	assert_memory_equal(got, want, SIZE); /* unchanged */
	mb_overlay_drop(back);
	mb_overlay_drop(k);
	mb_overlay_free(o);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads_image_writes_stay_in_memory),
		cmocka_unit_test(test_keep_and_put_back),
		cmocka_unit_test(test_kept_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
