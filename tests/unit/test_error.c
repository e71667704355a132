/* mb_seterr / mb_errmsg: codes, formatting, and context added on top of
 * the message below (the message passed back into its own setter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox.h"

static void test_code_and_message(void **state)
{
	assert_int_equal(mb_seterr(-22, "memory: %s is not a size", "12Q"), -22);
	assert_string_equal(mb_errmsg(), "memory: 12Q is not a size");
}

static void test_context_on_top(void **state)
{
	mb_seterr(-2, "/usr/local/libexec/moonbox/moonbox-launcher: not found");
	mb_seterr(-2, "seccomp: the launcher must start before the filters: %s", mb_errmsg());
	assert_string_equal(mb_errmsg(), "seccomp: the launcher must start before the "
					 "filters: /usr/local/libexec/moonbox/moonbox-launcher: not found");
	/* twice over */
	mb_seterr(-2, "run: %s", mb_errmsg());
	assert_true(strncmp(mb_errmsg(), "run: seccomp: the launcher", 26) == 0);
}

static void test_long_is_cut(void **state)
{
	char big[3000];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = 0;
	mb_seterr(-1, "%s", big);
	assert_true(strlen(mb_errmsg()) < sizeof big - 1);
	mb_seterr(-1, "a: %s", mb_errmsg()); /* a full message, again */
	assert_true(strncmp(mb_errmsg(), "a: xxx", 6) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_code_and_message),
		cmocka_unit_test(test_context_on_top),
		cmocka_unit_test(test_long_is_cut),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
