/* The minimal 8042: its own commands and the reset line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/i8042.h"

static unsigned resets;
static void on_reset(void *opaque) { resets++; }

static void out(struct mb_i8042 *k, unsigned port, uint8_t v)
{
	(port == 0x64 ? &mb_i8042_cmd_ops : &mb_i8042_data_ops)->write(k, 0, &v, 1);
}

static uint8_t in(struct mb_i8042 *k, unsigned port)
{
	uint8_t v;
	(port == 0x64 ? &mb_i8042_cmd_ops : &mb_i8042_data_ops)->read(k, 0, &v, 1);
	return v;
}

static void test_commands(void **state)
{
	struct mb_i8042_config cfg = { on_reset, NULL };
	struct mb_i8042 *k = mb_i8042_new(&cfg);
	assert_int_equal(in(k, 0x64), 0x00); /* idle, not busy */
	out(k, 0x64, 0xaa);
	assert_int_equal(in(k, 0x64), 0x0d); /* OBF, system flag, command */
	assert_int_equal(in(k, 0x60), 0x55);
	assert_int_equal(in(k, 0x64) & 1, 0);
	out(k, 0x64, 0x60);
	out(k, 0x60, 0x47);
	out(k, 0x64, 0x20);
	assert_int_equal(in(k, 0x60), 0x47);
	assert_int_equal(resets, 0);
	out(k, 0x64, 0xfe);
	assert_int_equal(resets, 1);
	out(k, 0x64, 0xff); /* pulses nothing */
	assert_int_equal(resets, 1);
	out(k, 0x64, 0xd1);
	out(k, 0x60, 0x00); /* output port bit 0 low */
	assert_int_equal(resets, 2);
	struct mb_i8042_state st;
	mb_i8042_state(k, &st);
	assert_int_equal(st.resets, 2);
	assert_int_equal(st.ctr, 0x47);
	mb_i8042_free(k);
}

/* A reply byte waiting and a command expecting its data byte. */
static void test_state_round_trip(void **state)
{
	struct mb_i8042 *k = mb_i8042_new(NULL), *k2 = mb_i8042_new(NULL);
	out(k, 0x64, 0xaa);  /* self test: 0x55 waits */
	out(k, 0x64, 0xd1);  /* output port byte follows */
	struct mb_i8042_state a, b;
	mb_i8042_save(k, &a);
	assert_true(a.obf);
	assert_int_equal(a.pending, 0xd1);
	assert_int_equal(mb_i8042_load(k2, &a), 0);
	mb_i8042_save(k2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	assert_int_equal(in(k, 0x64), in(k2, 0x64));
	assert_int_equal(in(k2, 0x60), 0x55);
	assert_int_equal(in(k, 0x60), 0x55);
	out(k, 0x60, 0x03);
	out(k2, 0x60, 0x03);
	mb_i8042_save(k, &a);
	mb_i8042_save(k2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	assert_int_equal(a.outport, 0x03);
	b.pending = 0x55;
	assert_int_equal(mb_i8042_load(k2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "pending"));
	mb_i8042_save(k2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_i8042_free(k);
	mb_i8042_free(k2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_state_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
