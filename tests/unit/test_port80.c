/* The sink device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "moonbox/port80.h"

static void test_sink(void **state)
{
	struct mb_null *n = mb_null_new(0xff);
	uint8_t buf[4] = { 0 };
	mb_null_ops.read(n, 0, buf, 4);
	assert_int_equal(mb_io_get(buf, 4), 0xffffffff);
	uint8_t code[2] = { 0x34, 0x12 };
	mb_null_ops.write(n, 0, code, 2);
	struct mb_null_state st;
	mb_null_state(n, &st);
	assert_int_equal(st.last_write, 0x1234);
	assert_int_equal(st.reads, 1);
	assert_int_equal(st.writes, 1);
	mb_null_free(n);
	n = mb_null_new(0x00);
	mb_null_ops.read(n, 0, buf, 2);
	assert_int_equal(buf[0] | buf[1], 0);
	mb_null_free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
