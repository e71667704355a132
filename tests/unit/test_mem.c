/* The guest memory map: what mb_mem_add accepts, and that translation only
 * ever hands out pointers wholly inside one region. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox.h"

#define MiB (1ull << 20)

static int setup(void **state)
{
	*state = mb_mem_new();
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	mb_mem_free(*state);
	return 0;
}

static void test_add_rules(void **state)
{
	struct mb_mem *m = *state;
	assert_int_equal(mb_mem_add(m, 0, MiB, 0, NULL, "low"), 0);
	assert_int_equal(mb_mem_add(m, 0x80000, MiB, 0, NULL, "clash"), -EEXIST);
	assert_non_null(strstr(mb_errmsg(), "clash"));
	assert_non_null(strstr(mb_errmsg(), "low"));
	/* containing and contained overlap too; touching does not */
	assert_int_equal(mb_mem_add(m, 0x1000, 0x1000, 0, NULL, "in"), -EEXIST);
	assert_int_equal(mb_mem_add(m, 2 * MiB, MiB, 0, NULL, "hi"), 0);
	assert_int_equal(mb_mem_add(m, 0, 4 * MiB, 0, NULL, "all"), -EEXIST);
	assert_int_equal(mb_mem_add(m, MiB, MiB, 0, NULL, "mid"), 0);
	assert_int_equal(mb_mem_add(m, 8 * MiB, 0, 0, NULL, "empty"), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "empty"));
	assert_int_equal(mb_mem_add(m, UINT64_MAX - 0xfff, 0x2000, 0, NULL, "wrap"),
			 -ERANGE);
	/* regions come back sorted by base */
	assert_int_equal(mb_mem_count(m), 3);
	assert_int_equal(mb_mem_region(m, 0)->base, 0);
	assert_int_equal(mb_mem_region(m, 1)->base, MiB);
	assert_string_equal(mb_mem_region(m, 2)->name, "hi");
	assert_null(mb_mem_region(m, 3));
}

static void test_unaligned_size(void **state)
{
	struct mb_mem *m = *state;
	/* page alignment is the machine's rule, not the map's */
	assert_int_equal(mb_mem_add(m, 0x10001, 0x1234, 0, NULL, "odd"), 0);
	assert_non_null(mb_mem_ptr(m, 0x10001, 0x1234, true));
	assert_null(mb_mem_ptr(m, 0x10001, 0x1235, true));
	assert_null(mb_mem_ptr(m, 0x10000, 1, false));
	assert_non_null(mb_mem_ptr(m, 0x11234, 1, false)); /* last byte */
	assert_null(mb_mem_ptr(m, 0x11235, 1, false));
}

/* Two adjacent regions and a hole: [1M,2M) [2M,3M) hole [4M,5M). */
static void layout(struct mb_mem *m)
{
	assert_int_equal(mb_mem_add(m, MiB, MiB, 0, NULL, "a"), 0);
	assert_int_equal(mb_mem_add(m, 2 * MiB, MiB, 0, NULL, "b"), 0);
	assert_int_equal(mb_mem_add(m, 4 * MiB, MiB, 0, NULL, "c"), 0);
}

static void test_ptr_bounds(void **state)
{
	struct mb_mem *m = *state;
	layout(m);
	assert_non_null(mb_mem_ptr(m, MiB, MiB, true));
	/* adjacent regions are separate mappings: no pointer across them */
	assert_null(mb_mem_ptr(m, 2 * MiB - 16, 32, false));
	assert_null(mb_mem_ptr(m, 3 * MiB - 1, 2, false)); /* into the hole */
	assert_null(mb_mem_ptr(m, 3 * MiB, 1, false));     /* in the hole */
	assert_null(mb_mem_ptr(m, 0, 1, false));           /* below everything */
	assert_null(mb_mem_ptr(m, 5 * MiB, 1, false));     /* above everything */
	/* len 0: a pointer inside a region, nothing in a hole */
	assert_non_null(mb_mem_ptr(m, MiB, 0, false));
	assert_null(mb_mem_ptr(m, 3 * MiB, 0, false));
	/* huge lengths must not wrap around past the check */
	assert_null(mb_mem_ptr(m, MiB, UINT64_MAX, false));
	assert_null(mb_mem_ptr(m, MiB + 16, UINT64_MAX - 15, false)); /* gpa+len == 0 */
	assert_null(mb_mem_ptr(m, 4 * MiB + 1, UINT64_MAX, false));
	assert_null(mb_mem_ptr(m, UINT64_MAX, 2, false));
}

static void test_copy_across(void **state)
{
	struct mb_mem *m = *state;
	layout(m);
	uint8_t in[64], out[64];
	for (unsigned i = 0; i < sizeof in; i++)
		in[i] = (uint8_t)(i * 7 + 1);
	/* adjacent regions: a copy spans them */
	assert_int_equal(mb_mem_write(m, 2 * MiB - 32, in, sizeof in), 0);
	assert_int_equal(mb_mem_read(m, 2 * MiB - 32, out, sizeof out), 0);
	assert_memory_equal(in, out, sizeof in);
	uint8_t *b = mb_mem_ptr(m, 2 * MiB, 32, false);
	assert_non_null(b);
	assert_memory_equal(b, in + 32, 32);
	/* a hole stops it */
	assert_int_equal(mb_mem_read(m, 3 * MiB - 32, out, sizeof out), -EFAULT);
	assert_int_equal(mb_mem_write(m, 3 * MiB, in, 1), -EFAULT);
	assert_int_equal(mb_mem_read(m, 0, out, 1), -EFAULT);
	/* len 0 does nothing and succeeds */
	assert_int_equal(mb_mem_read(m, MiB, out, 0), 0);
}

static void test_readonly(void **state)
{
	struct mb_mem *m = *state;
	const uint64_t rom = 0xfffc0000;
	assert_int_equal(mb_mem_add(m, rom, 0x40000, MB_MEM_READONLY, NULL, "bios"), 0);
	assert_null(mb_mem_ptr(m, rom, 16, true));
	assert_non_null(mb_mem_ptr(m, rom, 16, false));
	const char code[] = "\xea\x5b\xe0\x00\xf0";
	assert_int_equal(mb_mem_load(m, rom + 0x3fff0, code, 5), 0);
	assert_int_equal(mb_mem_write(m, rom + 0x3fff0, "xxxxx", 5), -EFAULT);
	char back[5];
	assert_int_equal(mb_mem_read(m, rom + 0x3fff0, back, 5), 0);
	assert_memory_equal(back, code, 5); /* the ROM kept its bytes */
}

static void test_host_mapping(void **state)
{
	struct mb_mem *m = *state;
	static uint8_t buf[8192] __attribute__((aligned(4096)));
	assert_int_equal(mb_mem_add(m, 0x7000, sizeof buf, 0, buf, "given"), 0);
	assert_ptr_equal(mb_mem_ptr(m, 0x7010, 4, true), buf + 0x10);
	assert_int_equal(mb_mem_write(m, 0x8000, "hi", 2), 0);
	assert_memory_equal(buf + 0x1000, "hi", 2);
	/* teardown frees the map but must leave buf alone */
}

static void test_resident(void **state)
{
	struct mb_mem *m = *state;
	assert_int_equal(mb_mem_add(m, 0, 64 * MiB, 0, NULL, "ram"), 0);
	uint64_t before = mb_mem_resident(m);
	uint8_t *p = mb_mem_ptr(m, 0, 64 * MiB, true);
	for (unsigned i = 0; i < 16; i++)
		p[i * 4 * MiB] = 1; /* one page in each 4 MiB */
	uint64_t after = mb_mem_resident(m);
	assert_true(after >= before + 16 * 4096);
	assert_true(after <= 64 * MiB);
	assert_true(before < 16 * 4096); /* untouched RAM is not resident */
}

static void test_too_many(void **state)
{
	struct mb_mem *m = *state;
	int rc = 0;
	unsigned n = 0;
	while (n < 1000 && (rc = mb_mem_add(m, n * 0x10000ull, 0x1000, 0, NULL, "r")) == 0)
		n++;
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(mb_mem_count(m), n);
	assert_non_null(mb_mem_ptr(m, (n - 1) * 0x10000ull, 0x1000, true));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_add_rules),   T(test_unaligned_size), T(test_ptr_bounds),
		T(test_copy_across), T(test_readonly),       T(test_host_mapping),
		T(test_resident),    T(test_too_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
