/* The sink device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

static void test_state_round_trip(void **state)
{
	struct mb_null *n = mb_null_new(0x5a), *n2 = mb_null_new(0xff);
	uint8_t code = 0x42, v;
	mb_null_ops.write(n, 0, &code, 1);
	mb_null_ops.read(n, 0, &v, 1);
	struct mb_null_state a, b;
	mb_null_save(n, &a);
	assert_int_equal(mb_null_load(n2, &a), 0);
	mb_null_save(n2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_null_ops.read(n2, 0, &v, 1);
	assert_int_equal(v, 0x5a);
	mb_null_free(n);
	mb_null_free(n2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sink),
		cmocka_unit_test(test_state_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
