/* The dispatch bus: overlap rules, dispatch, widths, unclaimed accesses,
 * limits, many ranges, and lookups racing registration. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox.h"

/* A device that records its last access and answers reads with `value`. */
struct rec {
	int reads, writes;
	uint64_t off, value;
	unsigned size;
	uint8_t data[8];
};

static void rec_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct rec *r = dev;
	r->reads++, r->off = off, r->size = size;
	mb_io_put(data, size, r->value);
}

static void rec_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct rec *r = dev;
	r->writes++, r->off = off, r->size = size;
	memcpy(r->data, data, size);
}

static const struct mb_io_ops rec_ops = { rec_read, rec_write };

static int setup(void **state)
{
	*state = mb_bus_new("mmio", 0);
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	mb_bus_free(*state);
	return 0;
}

static int reg(struct mb_bus *b, uint64_t base, uint64_t len, void *dev,
	       const char *name)
{
	return mb_bus_register(b, base, len, &rec_ops, dev, name);
}

/* Existing range [0x100, 0x1ff]; probe every boundary around it. */
static void test_overlap_boundaries(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { 0 };
	assert_int_equal(reg(b, 0x100, 0x100, &d, "old"), 0);
	/* ends at base-1: fine; ends at base: refused */
	assert_int_equal(reg(b, 0xf0, 0x10, &d, "below"), 0);
	assert_int_equal(mb_bus_unregister(b, 0xf0), 0);
	assert_int_equal(reg(b, 0xf0, 0x11, &d, "new"), -EEXIST);
	/* starts at the last byte: refused; at last+1: fine */
	assert_int_equal(reg(b, 0x1ff, 0x10, &d, "new"), -EEXIST);
	assert_int_equal(reg(b, 0x200, 0x10, &d, "above"), 0);
	/* containing, contained, identical, single bytes at both ends */
	assert_int_equal(reg(b, 0x80, 0x300, &d, "new"), -EEXIST);
	assert_int_equal(reg(b, 0x140, 0x10, &d, "new"), -EEXIST);
	assert_int_equal(reg(b, 0x100, 0x100, &d, "new"), -EEXIST);
	assert_int_equal(reg(b, 0x100, 1, &d, "new"), -EEXIST);
	assert_int_equal(reg(b, 0x1ff, 1, &d, "new"), -EEXIST);
	/* spanning the gap between two ranges */
	assert_int_equal(reg(b, 0x0, 0x1000, &d, "new"), -EEXIST);
	/* a refused range left nothing behind */
	struct mb_bus_stats st;
	mb_bus_stats(b, &st);
	assert_int_equal(st.ranges, 2);
	/* filling a gap exactly works */
	assert_int_equal(mb_bus_unregister(b, 0x200), 0);
	assert_int_equal(reg(b, 0x300, 0x10, &d, "far"), 0);
	assert_int_equal(reg(b, 0x200, 0x100, &d, "gap"), 0);
	assert_int_equal(reg(b, 0, 0, &d, "empty"), -EINVAL);
}

static void test_overlap_message(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { 0 };
	assert_int_equal(reg(b, 0x3f8, 8, &d, "uart0"), 0);
	assert_int_equal(reg(b, 0x3fc, 8, &d, "intruder"), -EEXIST);
	const char *msg = mb_errmsg();
	assert_non_null(strstr(msg, "uart0"));
	assert_non_null(strstr(msg, "intruder"));
	assert_non_null(strstr(msg, "0x3f8"));
}

static void test_base_and_last_byte(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { .value = 0x5a };
	uint8_t v = 0;
	assert_int_equal(reg(b, 0x1000, 0x40, &d, "dev"), 0);
	assert_true(mb_bus_read(b, 0x1000, &v, 1));
	assert_int_equal(d.off, 0);
	assert_int_equal(v, 0x5a);
	assert_true(mb_bus_write(b, 0x103f, &v, 1));
	assert_int_equal(d.off, 0x3f);
	/* one byte either side is nobody's */
	assert_false(mb_bus_read(b, 0xfff, &v, 1));
	assert_false(mb_bus_write(b, 0x1040, &v, 1));
	assert_int_equal(d.reads, 1);
	assert_int_equal(d.writes, 1);
	assert_string_equal(mb_bus_owner(b, 0x103f), "dev");
	assert_null(mb_bus_owner(b, 0x1040));
}

static void test_widths_little_endian(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { .value = 0x8877665544332211ull };
	const uint8_t in[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 };
	assert_int_equal(reg(b, 0x2000, 0x10, &d, "dev"), 0);
	for (unsigned size = 1; size <= 8; size *= 2) {
		uint8_t out[8];
		memset(out, 0, sizeof out);
		assert_true(mb_bus_read(b, 0x2008, out, size));
		assert_int_equal(d.size, size);
		assert_int_equal(d.off, 8);
		assert_memory_equal(out, in, size); /* low byte first */
		for (unsigned i = size; i < 8; i++)
			assert_int_equal(out[i], 0); /* nothing past size */
		assert_true(mb_bus_write(b, 0x2008, in, size));
		assert_int_equal(d.size, size);
		assert_memory_equal(d.data, in, size);
		assert_int_equal(mb_io_get(d.data, size),
				 d.value & (size == 8 ? ~0ull : (1ull << (8 * size)) - 1));
	}
}

struct seen {
	unsigned n;
	uint64_t base[4], len[4];
	char name[4][32];
};

static int collect(void *opaque, const struct mb_bus_range *r)
{
	struct seen *s = opaque;
	s->base[s->n] = r->base, s->len[s->n] = r->len;
	snprintf(s->name[s->n], sizeof s->name[0], "%s", r->name);
	return ++s->n == 3 ? 42 : 0; /* the third stops the walk */
}

static void test_foreach(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { 0 };
	struct seen s = { 0 };
	assert_int_equal(mb_bus_foreach(b, collect, &s), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(reg(b, 0x9000, 0x10, &d, "c"), 0);
	assert_int_equal(reg(b, 0x1000, 0x100, &d, "a"), 0);
	assert_int_equal(reg(b, 0x5000, 1, &d, "b"), 0);
	assert_int_equal(reg(b, 0xa000, 8, &d, "d"), 0);
	assert_int_equal(mb_bus_foreach(b, collect, &s), 42);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.base[0], 0x1000);
	assert_int_equal(s.len[0], 0x100);
	assert_string_equal(s.name[0], "a");
	assert_int_equal(s.base[1], 0x5000);
	assert_int_equal(s.len[1], 1);
	assert_string_equal(s.name[2], "c");
	assert_string_equal(mb_bus_name(b), "mmio");
}

static void test_unregister_reregister(void **state)
{
	struct mb_bus *b = *state;
	struct rec d1 = { .value = 1 }, d2 = { .value = 2 };
	uint8_t v;
	assert_int_equal(reg(b, 0x4000, 0x10, &d1, "one"), 0);
	assert_int_equal(mb_bus_unregister(b, 0x4001), -ENOENT); /* not a base */
	assert_int_equal(mb_bus_unregister(b, 0x4000), 0);
	assert_int_equal(mb_bus_unregister(b, 0x4000), -ENOENT);
	assert_false(mb_bus_read(b, 0x4000, &v, 1));
	assert_int_equal(reg(b, 0x4000, 0x10, &d2, "two"), 0);
	assert_true(mb_bus_read(b, 0x4004, &v, 1));
	assert_int_equal(v, 2);
	assert_int_equal(d1.reads, 0);
	assert_string_equal(mb_bus_owner(b, 0x4000), "two");
}

/* 4096 ranges registered in a shuffled order; each one found. */
static void test_4096_ranges(void **state)
{
	struct mb_bus *b = *state;
	enum { N = 4096 };
	static unsigned order[N];
	static struct rec devs[N];
	char name[16];
	for (unsigned i = 0; i < N; i++)
		order[i] = i;
	srand(42);
	for (unsigned i = N - 1; i > 0; i--) {
		unsigned j = (unsigned)rand() % (i + 1), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	for (unsigned k = 0; k < N; k++) {
		unsigned i = order[k];
		devs[i].value = i;
		snprintf(name, sizeof name, "r%u", i);
		assert_int_equal(reg(b, 0x10000 + i * 0x100ull, 0x80, &devs[i], name), 0);
	}
	struct mb_bus_stats st;
	mb_bus_stats(b, &st);
	assert_int_equal(st.ranges, N);
	for (unsigned i = 0; i < N; i++) {
		uint64_t base = 0x10000 + i * 0x100ull;
		uint32_t v = 0;
		assert_true(mb_bus_read(b, base + 0x7c, &v, 4));
		assert_int_equal(v, i);
		assert_int_equal(devs[i].off, 0x7c);
		assert_false(mb_bus_read(b, base + 0x80, &v, 1)); /* the gap */
		snprintf(name, sizeof name, "r%u", i);
		assert_string_equal(mb_bus_owner(b, base), name);
	}
}

static void test_unclaimed(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { 0 };
	uint8_t buf[8];
	struct mb_bus_stats st;
	memset(buf, 0, sizeof buf);
	assert_false(mb_bus_read(b, 0x9000, buf, 4));
	for (int i = 0; i < 4; i++)
		assert_int_equal(buf[i], 0xff);
	assert_int_equal(buf[4], 0); /* only `size` bytes filled */
	assert_false(mb_bus_write(b, 0x9000, buf, 8));
	assert_false(mb_bus_write(b, 0x9000, buf, 1));
	mb_bus_stats(b, &st);
	assert_int_equal(st.unclaimed_reads, 1);
	assert_int_equal(st.unclaimed_writes, 2);
	/* straddling a range end is unclaimed, never seen by the device */
	assert_int_equal(reg(b, 0xa000, 4, &d, "small"), 0);
	assert_false(mb_bus_read(b, 0xa002, buf, 4));
	assert_false(mb_bus_write(b, 0xa003, buf, 2));
	assert_false(mb_bus_read(b, 0x9fff, buf, 2)); /* straddles the base */
	assert_true(mb_bus_read(b, 0xa000, buf, 4));
	assert_int_equal(d.reads + d.writes, 1);
	mb_bus_stats(b, &st);
	assert_int_equal(st.unclaimed_reads, 3);
	assert_int_equal(st.unclaimed_writes, 3);
	/* a device without handlers claims: reads float high, not counted */
	static const struct mb_io_ops none = { NULL, NULL };
	assert_int_equal(mb_bus_register(b, 0xb000, 4, &none, NULL, "mute"), 0);
	memset(buf, 0, sizeof buf);
	assert_true(mb_bus_read(b, 0xb000, buf, 2));
	assert_int_equal(buf[0] & buf[1], 0xff);
	assert_true(mb_bus_write(b, 0xb000, buf, 2));
	mb_bus_stats(b, &st);
	assert_int_equal(st.unclaimed_reads, 3);
	/* logging on: still no crash, still counted */
	mb_bus_set_log(b, true);
	assert_false(mb_bus_write(b, 0xc000, buf, 1));
	mb_bus_set_log(b, false);
}

static void test_top_of_address_space(void **state)
{
	struct mb_bus *b = *state;
	struct rec d = { .value = 7 };
	uint8_t buf[8];
	assert_int_equal(reg(b, UINT64_MAX - 0xff, 0x101, &d, "wrap"), -ERANGE);
	assert_int_equal(reg(b, UINT64_MAX - 0xff, 0x100, &d, "top"), 0);
	assert_true(mb_bus_read(b, UINT64_MAX, buf, 1));
	assert_int_equal(d.off, 0xff);
	assert_true(mb_bus_read(b, UINT64_MAX - 7, buf, 8));
	assert_false(mb_bus_read(b, UINT64_MAX - 3, buf, 8)); /* wraps */
}

static void test_pio_limit(void **state)
{
	struct mb_bus *b = mb_bus_new("pio", 0x10000);
	struct rec d = { 0 };
	assert_int_equal(reg(b, 0xfff0, 0x10, &d, "top"), 0);
	assert_int_equal(reg(b, 0xffe0, 0x11, &d, "x"), -EEXIST);
	assert_int_equal(mb_bus_unregister(b, 0xfff0), 0);
	assert_int_equal(reg(b, 0xfff0, 0x11, &d, "x"), -ERANGE);
	assert_int_equal(reg(b, 0x10000, 1, &d, "x"), -ERANGE);
	assert_non_null(strstr(mb_errmsg(), "x"));
	assert_int_equal(reg(b, 0xffff, 1, &d, "last"), 0);
	mb_bus_free(b);
}

/* ---- lookups racing registration ------------------------------------ */

enum { STABLE = 64, VOLATILE = 16, ROUNDS = 100 };

struct race {
	struct mb_bus *bus;
	struct rec stable[STABLE], vol;
	atomic_bool done;
	atomic_long lookups, failures;
};

static uint64_t stable_base(unsigned i) { return 0x100000 + i * 0x1000ull; }

/* Readers run on two threads at once: this handler only reads its device. */
static void stable_read(void *dev, uint64_t off, void *data, unsigned size)
{
	mb_io_put(data, size, ((const struct rec *)dev)->value);
}
static const struct mb_io_ops stable_ops = { stable_read, NULL };

static void *reader(void *arg)
{
	struct race *r = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;
	long n = 0;
	while (!atomic_load(&r->done) || n < 10000) {
		unsigned i = (unsigned)rand_r(&seed) % STABLE;
		uint64_t v = 0;
		/* stable devices answer with their index + 1 */
		if (!mb_bus_read(r->bus, stable_base(i) + 8, &v, 8) || v != i + 1)
			atomic_fetch_add(&r->failures, 1);
		/* a volatile range: any answer is fine, only no crash */
		mb_bus_owner(r->bus, stable_base(i) + 0x800);
		n++;
	}
	atomic_fetch_add(&r->lookups, n);
	return NULL;
}

static void test_concurrent_lookups(void **state)
{
	static struct race r;
	r.bus = *state;
	for (unsigned i = 0; i < STABLE; i++) {
		r.stable[i].value = i + 1;
		assert_int_equal(mb_bus_register(r.bus, stable_base(i), 0x100,
						 &stable_ops, &r.stable[i], "s"), 0);
	}
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r), 0);
	int bad = 0;
	for (unsigned k = 0; k < ROUNDS; k++) {
		for (unsigned i = 0; i < VOLATILE; i++)
			bad += reg(r.bus, stable_base(i * 4) + 0x800, 0x100, &r.vol, "v") != 0;
		for (unsigned i = 0; i < VOLATILE; i++)
			bad += mb_bus_unregister(r.bus, stable_base(i * 4) + 0x800) != 0;
	}
	atomic_store(&r.done, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(bad, 0);
	assert_int_equal(atomic_load(&r.failures), 0);
	assert_true(atomic_load(&r.lookups) >= 20000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_overlap_boundaries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overlap_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_base_and_last_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_widths_little_endian, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unregister_reregister, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_4096_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unclaimed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_top_of_address_space, setup, teardown),
		cmocka_unit_test(test_pio_limit),
		cmocka_unit_test_setup_teardown(test_concurrent_lookups, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
