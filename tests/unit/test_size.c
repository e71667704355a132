/* mb_parse_size: suffixes, hex, sums and differences, and what is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "moonbox.h"

static uint64_t ok(const char *s)
{
	uint64_t v = 0;
	assert_int_equal(mb_parse_size(s, &v), 0);
	return v;
}

static void bad(const char *s)
{
	uint64_t v = 12345;
	assert_true(mb_parse_size(s, &v) < 0);
	assert_int_equal(v, 12345); /* untouched on error */
}

static void test_valid(void **state)
{
	assert_int_equal(ok("256M"), 256ull << 20);
	assert_int_equal(ok("4G-256K"), (4ull << 30) - (256ull << 10));
	assert_int_equal(ok("0x1000"), 0x1000);
	assert_int_equal(ok("1M+4K"), (1ull << 20) + 4096);
	assert_int_equal(ok("1KiB"), 1024);
	assert_int_equal(ok("2MB"), 2ull << 20);
	assert_int_equal(ok("1T"), 1ull << 40);
	assert_int_equal(ok("0"), 0);
	assert_int_equal(ok("4096"), 4096);
	assert_int_equal(ok(" 1M + 4K "), (1ull << 20) + 4096);
	assert_int_equal(ok("0xfee00000"), 0xfee00000ull);
	assert_int_equal(ok("18446744073709551615"), UINT64_MAX);
	assert_int_equal(ok("16777215T"), 16777215ull << 40);
	assert_int_equal(ok("1G-1G"), 0);
}

static void test_invalid(void **state)
{
	bad("12Q");
	bad("");
	bad(NULL);
	bad("M");
	bad("-1");
	bad("1M+");
	bad("1M 4K");
	bad("0x");
	bad("1.5G");
	/* overflow, in every place it can happen */
	bad("18446744073709551616");
	bad("16777216T");
	bad("0xffffffffffffffff+1");
	bad("1K-2K");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
