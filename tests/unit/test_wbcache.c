/* The write-back cache model (devices/virtio/wbcache.h) over a temporary
 * image: writes stay in memory and reads see them; the image changes only
 * at a flush; a power cut keeps nothing (drop), whole writes (subset) or
 * sectors (torn), the same for the same seed; discards forget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/virtio/wbcache.h"

#define S 512
#define SECTORS 256

static int image(void)
{
	char path[] = "/tmp/mb-wbcache-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, SECTORS * S), 0);
	return fd;
}

/* Write n sectors of byte v at sector s through the cache (one request). */
static void put(struct mb_wbcache *c, uint64_t s, unsigned n, uint8_t v)
{
	uint8_t *b = malloc((size_t)n * S);
	memset(b, v, (size_t)n * S);
	struct iovec io[2] = { { b, S / 2 }, { b + S / 2, (size_t)n * S - S / 2 } };
	assert_int_equal(mb_wbcache_write(c, io, 2, s * S, (uint64_t)n * S), 0);
	free(b);
}

static uint8_t cached_byte(struct mb_wbcache *c, uint64_t s)
{
	uint8_t b[S];
	struct iovec io = { b, S };
	assert_int_equal(mb_wbcache_read(c, &io, 1, s * S, S), 0);
	return b[0];
}

static uint8_t image_byte(int fd, uint64_t s)
{
	uint8_t b = 0xee;
	assert_int_equal(pread(fd, &b, 1, (off_t)(s * S)), 1);
	return b;
}

static void test_write_read_flush(void **state)
{
	int fd = image();
	struct mb_wbcache *c = mb_wbcache_new(fd, SECTORS * S);
	put(c, 10, 3, 0xaa);
	put(c, 11, 1, 0xbb); /* overwrites the middle sector */
	assert_int_equal(cached_byte(c, 10), 0xaa);
	assert_int_equal(cached_byte(c, 11), 0xbb);
	assert_int_equal(cached_byte(c, 12), 0xaa);
	assert_int_equal(cached_byte(c, 13), 0); /* from the image */
	assert_int_equal(image_byte(fd, 10), 0);  /* nothing written yet */
	assert_int_equal(mb_wbcache_sectors(c), 3);
	assert_int_equal(mb_wbcache_flush(c), 0);
	assert_int_equal(image_byte(fd, 10), 0xaa);
	assert_int_equal(image_byte(fd, 11), 0xbb);
	assert_int_equal(image_byte(fd, 12), 0xaa);
	assert_int_equal(mb_wbcache_sectors(c), 0);
	assert_int_equal(cached_byte(c, 11), 0xbb); /* now from the image */
	mb_wbcache_free(c);
	close(fd);
}

static void test_cut_drop(void **state)
{
	int fd = image();
	struct mb_wbcache *c = mb_wbcache_new(fd, SECTORS * S);
	put(c, 1, 1, 0x11);
	assert_int_equal(mb_wbcache_flush(c), 0); /* durable */
	put(c, 1, 1, 0x22);
	put(c, 2, 4, 0x33);
	struct mb_power_cut_result r;
	assert_int_equal(mb_wbcache_power_cut(c, MB_CUT_DROP, 1, &r), 0);
	assert_int_equal(r.cached, 5);
	assert_int_equal(r.written, 0);
	assert_int_equal(r.writes, 2);
	assert_int_equal(image_byte(fd, 1), 0x11); /* the flushed value */
	assert_int_equal(image_byte(fd, 2), 0);
	assert_int_equal(cached_byte(c, 1), 0x11); /* the cache is empty */
	mb_wbcache_free(c);
	close(fd);
}

/* The image after a cut of writes 1..16 (each 4 sectors of byte w). */
static void cut_image(enum mb_power_cut model, uint64_t seed, uint8_t out[64])
{
	int fd = image();
	struct mb_wbcache *c = mb_wbcache_new(fd, SECTORS * S);
	for (unsigned w = 1; w <= 16; w++)
		put(c, (w - 1) * 4, 4, (uint8_t)w);
	struct mb_power_cut_result r;
	assert_int_equal(mb_wbcache_power_cut(c, model, seed, &r), 0);
	assert_int_equal(r.cached, 64);
	for (unsigned s = 0; s < 64; s++)
		out[s] = image_byte(fd, s);
	mb_wbcache_free(c);
	close(fd);
}

static void test_cut_subset_whole_writes(void **state)
{
	uint8_t a[64], b[64], d[64];
	cut_image(MB_CUT_SUBSET, 42, a);
	cut_image(MB_CUT_SUBSET, 42, b);
	cut_image(MB_CUT_SUBSET, 43, d);
	assert_memory_equal(a, b, 64); /* the same seed, the same image */
	assert_memory_not_equal(a, d, 64);
	unsigned kept = 0;
	for (unsigned w = 0; w < 16; w++) { /* each write whole or not at all */
		for (unsigned k = 1; k < 4; k++)
			assert_int_equal(a[w * 4 + k], a[w * 4]);
		assert_true(a[w * 4] == 0 || a[w * 4] == w + 1);
		kept += a[w * 4] != 0;
	}
	assert_true(kept > 0 && kept < 16); /* 2^-16 odds each way */
}

static void test_cut_torn_sectors(void **state)
{
	uint8_t a[64], b[64];
	cut_image(MB_CUT_TORN, 7, a);
	cut_image(MB_CUT_TORN, 7, b);
	assert_memory_equal(a, b, 64);
	unsigned torn = 0;
	for (unsigned w = 0; w < 16; w++) {
		unsigned n = 0;
		for (unsigned k = 0; k < 4; k++) {
			assert_true(a[w * 4 + k] == 0 || a[w * 4 + k] == w + 1);
			n += a[w * 4 + k] != 0;
		}
		torn += n > 0 && n < 4;
	}
	assert_true(torn > 0); /* some page kept only part of its sectors */
}

static void test_forget(void **state)
{
	int fd = image();
	struct mb_wbcache *c = mb_wbcache_new(fd, SECTORS * S);
	for (unsigned s = 0; s < 100; s++)
		put(c, s, 1, (uint8_t)(s + 1));
	mb_wbcache_forget(c, 20 * S, 10 * S);
	assert_int_equal(mb_wbcache_sectors(c), 90);
	for (unsigned s = 0; s < 100; s++) /* every other entry still found */
		assert_int_equal(cached_byte(c, s), s >= 20 && s < 30 ? 0 : s + 1);
	mb_wbcache_free(c);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_read_flush),
		cmocka_unit_test(test_cut_drop),
		cmocka_unit_test(test_cut_subset_whole_writes),
		cmocka_unit_test(test_cut_torn_sectors),
		cmocka_unit_test(test_forget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
