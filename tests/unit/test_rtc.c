/* MC146818 RTC on a hand-driven clock (Motorola MC146818A data sheet). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/rtc.h"
#include "fake_clock.h"

#define NS 1000000000ull
#define MS 1000000ull

static struct fake_clock *fc;
static struct fake_irq irq8;
static struct mb_rtc *rtc;

static uint8_t rd(uint8_t idx)
{
	uint8_t v;
	mb_rtc_ops.write(rtc, 0, &idx, 1);
	mb_rtc_ops.read(rtc, 1, &v, 1);
	return v;
}

static void wr(uint8_t idx, uint8_t v)
{
	mb_rtc_ops.write(rtc, 0, &idx, 1);
	mb_rtc_ops.write(rtc, 1, &v, 1);
}

/* 2024-02-29 23:59:58.5 UTC, a Thursday, leap day */
static int64_t start_ns(void)
{
	struct tm tm = { .tm_year = 124, .tm_mon = 1, .tm_mday = 29,
			 .tm_hour = 23, .tm_min = 59, .tm_sec = 58 };
	return (int64_t)timegm(&tm) * (int64_t)NS + 500 * (int64_t)MS;
}

static int setup(void **state)
{
	fc = fake_clock_new(123456789);
	irq8 = (struct fake_irq){ 0 };
	struct mb_rtc_config cfg = { &fc->clock, fake_irq_line(&irq8), start_ns() };
	rtc = mb_rtc_new(&cfg);
	return rtc ? 0 : -1;
}

static int teardown(void **state)
{
	mb_rtc_free(rtc);
	fake_clock_free(fc);
	return 0;
}

/* F.rtc.jump: the registers move by the jump at once, forwards over a
 * day boundary and back again; the phase within the second is kept. */
static void test_jump(void **state)
{
	mb_rtc_jump(rtc, 3600 + 2); /* 23:59:58.5 + 1 h 2 s: 2024-03-01 01:00:00.5 */
	assert_int_equal(rd(0x00), 0x00);
	assert_int_equal(rd(0x02), 0x00);
	assert_int_equal(rd(0x04), 0x01);
	assert_int_equal(rd(0x07), 0x01);
	assert_int_equal(rd(0x08), 0x03);
	fake_clock_advance(fc, 600 * MS); /* the second still ends on time */
	assert_int_equal(rd(0x00), 0x01);
	mb_rtc_jump(rtc, -86400); /* a day back: 2024-02-29 01:00:01 */
	assert_int_equal(rd(0x00), 0x01);
	assert_int_equal(rd(0x04), 0x01);
	assert_int_equal(rd(0x07), 0x29);
	assert_int_equal(rd(0x08), 0x02);
	/* With SET holding updates, the held registers move too. */
	wr(0x0b, 0x82);
	mb_rtc_jump(rtc, 60);
	assert_int_equal(rd(0x02), 0x01);
	/* Far jumps are clamped to the years the registers can hold. */
	wr(0x0b, 0x02);
	for (int i = 0; i < 10; i++)
		mb_rtc_jump(rtc, 100ll * 366 * 86400);
	assert_int_equal(rd(0x09), 0x91); /* 2191 */
}

static void test_bcd_24h(void **state)
{
	assert_int_equal(rd(0x0b), 0x02);
	assert_int_equal(rd(0x00), 0x58);
	assert_int_equal(rd(0x02), 0x59);
	assert_int_equal(rd(0x04), 0x23);
	assert_int_equal(rd(0x06), 0x05); /* Thursday: Sunday is 1 */
	assert_int_equal(rd(0x07), 0x29);
	assert_int_equal(rd(0x08), 0x02);
	assert_int_equal(rd(0x09), 0x24);
	assert_int_equal(rd(0x32), 0x20); /* century byte in CMOS RAM */
	assert_int_equal(rd(0x0d), 0x80); /* VRT */
	/* 1.5 s later: the leap day rolls into March. */
	fake_clock_advance(fc, 1500 * MS);
	assert_int_equal(rd(0x00), 0x00);
	assert_int_equal(rd(0x02), 0x00);
	assert_int_equal(rd(0x04), 0x00);
	assert_int_equal(rd(0x06), 0x06);
	assert_int_equal(rd(0x07), 0x01);
	assert_int_equal(rd(0x08), 0x03);
}

static void test_binary_and_12h(void **state)
{
	wr(0x0b, 0x06); /* binary, 24h */
	assert_int_equal(rd(0x00), 58);
	assert_int_equal(rd(0x04), 23);
	assert_int_equal(rd(0x09), 24);
	wr(0x0b, 0x04); /* binary, 12h: 11 PM */
	assert_int_equal(rd(0x04), 0x80 | 11);
	wr(0x0b, 0x00); /* BCD, 12h */
	assert_int_equal(rd(0x04), 0x91);
	fake_clock_advance(fc, 2 * NS); /* midnight is 12 AM */
	assert_int_equal(rd(0x04), 0x12);
	fake_clock_advance(fc, 12 * 3600 * NS); /* noon is 12 PM */
	assert_int_equal(rd(0x04), 0x92);
}

static void test_update_in_progress(void **state)
{
	/* At .5 s: no update near. */
	assert_int_equal(rd(0x0a), 0x26);
	fake_clock_advance(fc, 500 * MS - 244000 - 1);
	assert_int_equal(rd(0x0a) & 0x80, 0x00);
	assert_int_equal(rd(0x00), 0x58);
	fake_clock_advance(fc, 1);
	assert_int_equal(rd(0x0a) & 0x80, 0x80); /* 244 us before */
	assert_int_equal(rd(0x00), 0x58);
	fake_clock_advance(fc, 243999);
	assert_int_equal(rd(0x0a) & 0x80, 0x80);
	fake_clock_advance(fc, 1);
	assert_int_equal(rd(0x0a) & 0x80, 0x00); /* updated */
	assert_int_equal(rd(0x00), 0x59);
	/* SET holds updates and UIP. */
	wr(0x0b, 0x82);
	fake_clock_advance(fc, NS - 100000);
	assert_int_equal(rd(0x0a) & 0x80, 0x00);
	assert_int_equal(rd(0x00), 0x59);
}

static void test_set_time(void **state)
{
	wr(0x0b, 0x82); /* SET */
	wr(0x32, 0x19); /* century first: a year write reads it */
	wr(0x04, 0x08);
	wr(0x02, 0x30);
	wr(0x00, 0x15);
	wr(0x07, 0x04);
	wr(0x08, 0x07);
	wr(0x09, 0x99);
	fake_clock_advance(fc, 10 * NS); /* frozen while SET */
	assert_int_equal(rd(0x00), 0x15);
	wr(0x0b, 0x02);
	fake_clock_advance(fc, 2 * NS);
	assert_int_equal(rd(0x00), 0x17);
	assert_int_equal(rd(0x04), 0x08);
	assert_int_equal(rd(0x06), 0x01); /* 1999-07-04 was a Sunday */
	struct mb_rtc_state st;
	mb_rtc_state(rtc, &st);
	assert_int_equal(st.unix_time, 931077017);
	/* A write while running moves the time at once. */
	wr(0x02, 0x45);
	assert_int_equal(rd(0x02), 0x45);
	assert_int_equal(rd(0x00), 0x17);
}

static void test_periodic_interrupt(void **state)
{
	/* PF without PIE: flag only, no line. */
	fake_clock_advance(fc, MS);
	assert_int_equal(rd(0x0c), 0x40);
	assert_int_equal(rd(0x0c), 0x00); /* read clears */
	assert_int_equal(irq8.raises, 0);
	assert_int_equal(fake_clock_armed(fc), 0);
	wr(0x0a, 0x20);  /* RS 0: no periodic */
	wr(0x0b, 0x42);  /* PIE */
	fake_clock_advance(fc, 10 * MS);
	assert_int_equal(irq8.raises, 0);
	wr(0x0a, 0x26);  /* 1024 Hz */
	unsigned n = 0;
	for (unsigned i = 0; i < 10000; i++) {
		fake_clock_advance(fc, 100000);
		if (irq8.level) {
			uint8_t c = rd(0x0c);
			assert_int_equal(c & 0xc0, 0xc0);
			assert_int_equal(irq8.level, 0);
			n++;
		}
	}
	assert_int_equal(n, 1024); /* one second of 976.5625 us periods */
	/* RS 15: 2 Hz. */
	wr(0x0a, 0x2f);
	rd(0x0c);
	unsigned before = irq8.raises;
	for (unsigned i = 0; i < 40; i++) {
		fake_clock_advance(fc, 100 * MS);
		if (irq8.level)
			rd(0x0c);
	}
	assert_int_equal(irq8.raises - before, 8);
}

static void test_update_interrupt(void **state)
{
	wr(0x0a, 0x20);
	wr(0x0b, 0x12); /* UIE */
	fake_clock_advance(fc, 500 * MS - 1);
	assert_int_equal(irq8.level, 0);
	fake_clock_advance(fc, 1);
	assert_int_equal(irq8.level, 1);
	assert_int_equal(rd(0x0c), 0x90);
	assert_int_equal(irq8.level, 0);
	/* SET clears UIE. */
	wr(0x0b, 0x92);
	assert_int_equal(rd(0x0b), 0x82);
}

static void test_alarm(void **state)
{
	wr(0x0a, 0x20);
	wr(0x01, 0x01); /* 00:00:01 */
	wr(0x03, 0x00);
	wr(0x05, 0x00);
	wr(0x0b, 0x22); /* AIE */
	fake_clock_advance(fc, 1500 * MS); /* 00:00:00: no match yet */
	assert_int_equal(irq8.level, 0);
	assert_int_equal(rd(0x0c), 0x10); /* UF without UIE: flag only */
	fake_clock_advance(fc, 1 * NS);
	assert_int_equal(irq8.level, 1);
	assert_int_equal(rd(0x0c), 0xb0);
	/* Don't-care values match every second. */
	wr(0x01, 0xc0);
	wr(0x03, 0xff);
	wr(0x05, 0xc0);
	fake_clock_advance(fc, NS);
	assert_int_equal(rd(0x0c), 0xb0);
	/* Flags found lazily: alarm passed while nobody looked. */
	wr(0x0b, 0x02);
	wr(0x01, 0x30);
	wr(0x03, 0xc0);
	fake_clock_advance(fc, 100 * NS);
	assert_int_equal(rd(0x0c), 0x30);
}

static void test_cmos_and_nmi(void **state)
{
	struct mb_rtc_state st;
	uint8_t idx = 0x80 | 0x40, v = 0x5a;
	mb_rtc_ops.write(rtc, 0, &idx, 1);
	mb_rtc_ops.write(rtc, 1, &v, 1);
	mb_rtc_state(rtc, &st);
	assert_int_equal(st.nmi_masked, 1);
	assert_int_equal(st.index, 0x40);
	assert_int_equal(rd(0x40), 0x5a);
	mb_rtc_state(rtc, &st);
	assert_int_equal(st.nmi_masked, 0);
	assert_int_equal(mb_rtc_set_cmos(rtc, 0x10, 0x42), 0);
	assert_int_equal(rd(0x10), 0x42);
	uint8_t got;
	assert_int_equal(mb_rtc_get_cmos(rtc, 0x10, &got), 0);
	assert_int_equal(got, 0x42);
	assert_int_equal(mb_rtc_set_cmos(rtc, 0x80, 0), -22);
	wr(0x0d, 0x00); /* read-only */
	assert_int_equal(rd(0x0d), 0x80);
	uint8_t p;
	mb_rtc_ops.read(rtc, 0, &p, 1);
	assert_int_equal(p, 0xff);
}

/* The periodic interrupt armed at 1024 Hz and an alarm set: the state
 * loads into an RTC made at another time on another clock, saves the same,
 * and both raise the same interrupts and read the same time afterwards. */
static void test_state_round_trip(void **state)
{
	wr(0x0a, 0x26);        /* 1024 Hz */
	wr(0x01, 0x05);        /* alarm at xx:xx:05 */
	wr(0x03, 0xc0);
	wr(0x05, 0xc0);
	wr(0x0b, 0x62);        /* PIE | AIE | 24h */
	wr(0x40, 0xa5);        /* plain CMOS RAM */
	fake_clock_advance(fc, 3 * MS);
	assert_true(irq8.level);
	rd(0x0c);              /* acknowledge: armed for the next period */
	assert_false(irq8.level);
	fake_clock_advance(fc, MS / 3);
	uint8_t idx = 0x8b;    /* NMI masked, index B */
	mb_rtc_ops.write(rtc, 0, &idx, 1);
	struct mb_rtc_state a, b;
	mb_rtc_save(rtc, &a);
	assert_true(a.timer_ns > 0 && a.timer_ns < MS);

	struct fake_clock *fc2 = fake_clock_new(5 * NS);
	struct fake_irq irq2 = { 0 };
	struct mb_rtc_config cfg = { &fc2->clock, fake_irq_line(&irq2), 0 };
	struct mb_rtc *r2 = mb_rtc_new(&cfg);
	assert_int_equal(mb_rtc_load(r2, &a), 0);
	mb_rtc_save(r2, &b);
	assert_memory_equal(&a, &b, sizeof a);

	for (int i = 0; i < 20; i++) {
		fake_clock_advance(fc, MS / 2);
		fake_clock_advance(fc2, MS / 2);
		assert_int_equal(irq8.level, irq2.level);
		if (irq8.level) {
			struct mb_rtc *keep = rtc;
			uint8_t c1 = rd(0x0c);
			rtc = r2;
			uint8_t c2 = rd(0x0c);
			rtc = keep;
			assert_int_equal(c1, c2);
		}
	}
	assert_true(irq8.raises >= 10);
	assert_int_equal(irq8.raises - 1, irq2.raises);
	fake_clock_advance(fc, 7 * NS);
	fake_clock_advance(fc2, 7 * NS);
	mb_rtc_save(rtc, &a);
	mb_rtc_save(r2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	assert_int_equal(a.c & 0x20, 0x20); /* the alarm passed on both */

	b = a;
	b.flags = 0x80;
	assert_int_equal(mb_rtc_load(r2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "flags"));
	b = a;
	b.cmos_len = 12;
	assert_int_equal(mb_rtc_load(r2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "cmos"));
	mb_rtc_save(r2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_rtc_free(r2);
	fake_clock_free(fc2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bcd_24h, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jump, setup, teardown),
		cmocka_unit_test_setup_teardown(test_binary_and_12h, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_in_progress, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_periodic_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alarm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cmos_and_nmi, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
