/* The ACPI PM1 blocks (devices/acpi_pm.c): registers, SLP_EN, state. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/acpi_pm.h"

static unsigned sleeps, last_typ;

static void on_sleep(void *opaque, unsigned typ)
{
	(void)opaque;
	sleeps++, last_typ = typ;
}

static void out16(struct mb_acpi_pm *p, unsigned off, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	mb_acpi_pm_ops.write(p, off, b, 2);
}

static uint16_t in16(struct mb_acpi_pm *p, unsigned off)
{
	uint8_t b[2];
	mb_acpi_pm_ops.read(p, off, b, 2);
	return (uint16_t)(b[0] | b[1] << 8);
}

static void test_registers_and_sleep(void **unused)
{
	struct mb_acpi_pm *p = mb_acpi_pm_new(
		&(struct mb_acpi_pm_config){ on_sleep, NULL });
	sleeps = 0;
	out16(p, 2, 0x0121);
	assert_int_equal(in16(p, 2), 0x0121);
	assert_int_equal(in16(p, 4) & 1, 1); /* SCI_EN: always ACPI mode */
	out16(p, 4, 0x3400);                 /* SLP_TYP 5 | SLP_EN */
	assert_int_equal(sleeps, 1);
	assert_int_equal(last_typ, MB_ACPI_PM_S5_TYP);
	assert_int_equal(in16(p, 4) & 0x2000, 0); /* write-only */
	mb_acpi_pm_free(p);
}

/* Mid-activity (PM1_EN set, SLP_TYP latched, a sleep seen): a fresh
 * model loaded from the state saves the same and reads the same. */
static void test_state_round_trip(void **unused)
{
	struct mb_acpi_pm *p = mb_acpi_pm_new(NULL), *p2 = mb_acpi_pm_new(NULL);
	out16(p, 2, 0x0120);
	out16(p, 4, 0x3400);
	out16(p, 4, 0x0c00); /* SLP_TYP 3, no SLP_EN */
	struct mb_acpi_pm_state a, b;
	mb_acpi_pm_save(p, &a);
	assert_int_equal(a.en, 0x0120);
	assert_int_equal(a.cnt, 0x0c00);
	assert_int_equal(a.sleeps, 1);
	assert_int_equal(mb_acpi_pm_load(p2, &a), 0);
	mb_acpi_pm_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	for (unsigned off = 0; off < 6; off += 2)
		assert_int_equal(in16(p, off), in16(p2, off));
	b = a;
	b.cnt |= 0x2000;
	assert_int_equal(mb_acpi_pm_load(p2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "cnt"));
	mb_acpi_pm_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a); /* unchanged by the refusal */
	mb_acpi_pm_free(p);
	mb_acpi_pm_free(p2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registers_and_sleep),
		cmocka_unit_test(test_state_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
