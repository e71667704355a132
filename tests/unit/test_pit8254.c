/* 8254 PIT on a hand-driven clock (82C54 data sheet, "Modes"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/pit8254.h"
#include "moonbox/fault.h"
#include "fake_clock.h"

#define NS 1000000000ull

static struct fake_clock *fc;
static struct fake_irq irq0;
static struct mb_pit *pit;

static uint64_t tick_ns(uint64_t t)
{
	return t / MB_PIT_HZ * NS + (t % MB_PIT_HZ * NS + MB_PIT_HZ - 1) / MB_PIT_HZ;
}

/* Base tick: well away from 0, to catch grid mistakes. */
#define T0 1000000ull

static void at(uint64_t t)
{
	uint64_t ns = tick_ns(t);
	assert_true(ns >= fc->now);
	fake_clock_advance(fc, ns - fc->now);
}

static void out(unsigned port, uint8_t v)
{
	if (port == 0x61)
		mb_pit_port61_ops.write(pit, 0, &v, 1);
	else
		mb_pit_ops.write(pit, port - 0x40, &v, 1);
}

static uint8_t in(unsigned port)
{
	uint8_t v;
	if (port == 0x61)
		mb_pit_port61_ops.read(pit, 0, &v, 1);
	else
		mb_pit_ops.read(pit, port - 0x40, &v, 1);
	return v;
}

static uint16_t read16(unsigned port) /* LSB then MSB */
{
	uint16_t lo = in(port);
	return (uint16_t)(lo | in(port) << 8);
}

static void write16(unsigned port, uint16_t v)
{
	out(port, v & 0xff);
	out(port, v >> 8);
}

static uint8_t status(unsigned ch)
{
	out(0x43, (uint8_t)(0xe0 | 2u << ch)); /* read-back: status only */
	return in(0x40 + ch);
}

static bool out_pin(unsigned ch)
{
	struct mb_pit_state st;
	mb_pit_state(pit, &st);
	return st.channels[ch].out;
}

static int setup(void **state)
{
	fc = fake_clock_new(tick_ns(T0));
	irq0 = (struct fake_irq){ 0 };
	struct mb_pit_config cfg = { &fc->clock, fake_irq_line(&irq0) };
	pit = mb_pit_new(&cfg);
	return pit ? 0 : -1;
}

static int teardown(void **state)
{
	mb_pit_free(pit);
	fake_clock_free(fc);
	return 0;
}

/* Mode 0: OUT low after the control word and count; the count loads on
 * the next CLK and OUT goes high N+1 clocks after the write. */
static void test_mode0(void **state)
{
	out(0x43, 0x30); /* ch0, LSB/MSB, mode 0, binary */
	assert_int_equal(status(0) & 0x80, 0);
	write16(0x40, 5);
	assert_int_equal(status(0), 0x70); /* OUT 0, null count, rw 3, mode 0 */
	static const uint16_t seq[] = { 5, 4, 3, 2, 1, 0, 0xffff, 0xfffe };
	for (unsigned i = 0; i < 8; i++) {
		at(T0 + 1 + i);
		assert_int_equal(read16(0x40), seq[i]);
		assert_int_equal(out_pin(0), i >= 5);
		assert_int_equal(irq0.level, i >= 5);
	}
	assert_int_equal(status(0), 0xb0); /* OUT 1, count loaded */
	assert_int_equal(irq0.raises, 1);
	/* The raise happened at the terminal-count tick, not later. */
	assert_int_equal(fc->fired, 1);
	/* A new count: OUT (and the line) low at once. */
	write16(0x40, 2);
	assert_int_equal(irq0.level, 0);
	at(T0 + 8 + 3);
	assert_int_equal(irq0.level, 1);
	assert_int_equal(irq0.raises, 2);
}

static void test_mode0_irq_exact_time(void **state)
{
	out(0x43, 0x30);
	write16(0x40, 1000);
	fake_clock_advance(fc, tick_ns(T0 + 1001) - fc->now - 1);
	assert_int_equal(irq0.level, 0);
	fake_clock_advance(fc, 1);
	assert_int_equal(irq0.level, 1);
}

/* Mode 0: gate low suspends counting (channel 2, port 0x61 bit 0). */
static void test_mode0_gate(void **state)
{
	out(0x61, 0x01);
	out(0x43, 0xb0); /* ch2, LSB/MSB, mode 0 */
	write16(0x42, 10);
	at(T0 + 3); /* CE 8 */
	assert_int_equal(read16(0x42), 8);
	out(0x61, 0x00);
	at(T0 + 50);
	assert_int_equal(read16(0x42), 8);
	assert_int_equal(in(0x61) & 0x21, 0x00); /* gate, OUT2 low */
	out(0x61, 0x01);
	at(T0 + 57);
	assert_int_equal(read16(0x42), 1);
	assert_int_equal(in(0x61) & 0x20, 0x00);
	at(T0 + 58);
	assert_int_equal(read16(0x42), 0);
	assert_int_equal(in(0x61) & 0x21, 0x21);
	/* Channel 2 never touches the IRQ 0 line. */
	assert_int_equal(irq0.raises, 0);
}

/* Mode 1: the gate's rising edge triggers; OUT low from the next CLK for
 * N clocks; retriggerable. */
static void test_mode1(void **state)
{
	out(0x43, 0xb2); /* ch2, LSB/MSB, mode 1 */
	write16(0x42, 3);
	assert_true(out_pin(2));
	at(T0 + 10);
	assert_true(out_pin(2)); /* no trigger yet */
	assert_int_equal(status(2) & 0x40, 0x40); /* null count */
	out(0x61, 0x01);
	at(T0 + 11);
	assert_false(out_pin(2));
	assert_int_equal(read16(0x42), 3);
	at(T0 + 13);
	assert_int_equal(read16(0x42), 1);
	assert_false(out_pin(2));
	at(T0 + 14);
	assert_true(out_pin(2));
	assert_int_equal(status(2), 0xb2);
	/* Retrigger mid-count restarts the full count. */
	out(0x61, 0x00);
	out(0x61, 0x01);
	at(T0 + 15);
	assert_false(out_pin(2));
	out(0x61, 0x00);
	out(0x61, 0x01);
	at(T0 + 17);
	assert_false(out_pin(2));
	assert_int_equal(read16(0x42), 2);
	at(T0 + 19);
	assert_true(out_pin(2));
}

/* Mode 2: CE counts N..1, OUT low for the clock CE is 1; an interrupt per
 * period, the first N clocks after the load. */
static void test_mode2(void **state)
{
	out(0x43, 0x34); /* ch0, LSB/MSB, mode 2 */
	write16(0x40, 4);
	static const uint16_t seq[] = { 4, 3, 2, 1, 4, 3, 2, 1, 4 };
	for (unsigned i = 0; i < 9; i++) {
		at(T0 + 1 + i);
		assert_int_equal(read16(0x40), seq[i]);
		assert_int_equal(out_pin(0), seq[i] != 1);
	}
	/* Rising edges at T0+5 and T0+9. */
	assert_int_equal(irq0.raises, 2);
	assert_int_equal(irq0.level, 0); /* pulsed */
}

/* A new count in mode 2 takes effect at the end of the current cycle. */
static void test_mode2_new_count(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 10);
	at(T0 + 4); /* CE 7 */
	write16(0x40, 3);
	assert_int_equal(status(0) & 0x40, 0x40);
	at(T0 + 10);
	assert_int_equal(read16(0x40), 1);
	at(T0 + 11);
	assert_int_equal(read16(0x40), 3);
	assert_int_equal(status(0) & 0x40, 0);
	assert_int_equal(irq0.raises, 1);
	at(T0 + 14);
	assert_int_equal(read16(0x40), 3);
	assert_int_equal(irq0.raises, 2);
}

/* Mode 2 gate: low forces OUT high and stops; rising edge reloads. */
static void test_mode2_gate(void **state)
{
	out(0x61, 0x01);
	out(0x43, 0xb4);
	write16(0x42, 5);
	at(T0 + 5); /* CE 1, OUT low */
	assert_false(out_pin(2));
	out(0x61, 0x00);
	assert_true(out_pin(2));
	at(T0 + 20);
	assert_int_equal(read16(0x42), 1);
	out(0x61, 0x01);
	at(T0 + 21);
	assert_int_equal(read16(0x42), 5);
	at(T0 + 25);
	assert_false(out_pin(2));
}

/* Mode 3 square wave: even N halves of N/2; odd N high (N+1)/2, low
 * (N-1)/2, CE counting by two from N or N-1. */
static void test_mode3(void **state)
{
	out(0x43, 0x36); /* ch0, LSB/MSB, mode 3 */
	write16(0x40, 4);
	static const uint16_t ce4[] = { 4, 2, 4, 2, 4, 2 };
	static const bool out4[] = { 1, 1, 0, 0, 1, 1 };
	for (unsigned i = 0; i < 6; i++) {
		at(T0 + 1 + i);
		assert_int_equal(read16(0x40), ce4[i]);
		assert_int_equal(out_pin(0), out4[i]);
	}
	assert_int_equal(irq0.raises, 1); /* rising edge at T0+5 */

	out(0x43, 0xb6); /* ch2 mode 3, odd count */
	out(0x61, 0x01);
	uint64_t t = T0 + 10;
	at(t);
	write16(0x42, 5);
	static const uint16_t ce5[] = { 4, 2, 0, 4, 2, 4, 2, 0, 4, 2 };
	static const bool out5[] = { 1, 1, 1, 0, 0, 1, 1, 1, 0, 0 };
	for (unsigned i = 0; i < 10; i++) {
		at(t + 1 + i);
		assert_int_equal(read16(0x42), ce5[i]);
		assert_int_equal(!!(in(0x61) & 0x20), out5[i]);
	}
}

/* Mode 3: a new count waits for the end of the current half-cycle. */
static void test_mode3_new_count(void **state)
{
	out(0x43, 0x36);
	write16(0x40, 8);
	at(T0 + 2); /* high half, CE 6 */
	write16(0x40, 4);
	at(T0 + 4); /* still the old half: CE 2 */
	assert_int_equal(read16(0x40), 2);
	assert_true(out_pin(0));
	at(T0 + 5); /* new count, low half */
	assert_int_equal(read16(0x40), 4);
	assert_false(out_pin(0));
	at(T0 + 7); /* high again after 2 */
	assert_true(out_pin(0));
	assert_int_equal(irq0.raises, 1);
}

/* Mode 4: OUT high, one clock low when CE reaches 0, once. */
static void test_mode4(void **state)
{
	out(0x43, 0x38);
	write16(0x40, 3);
	static const uint16_t seq[] = { 3, 2, 1, 0, 0xffff, 0xfffe };
	for (unsigned i = 0; i < 6; i++) {
		at(T0 + 1 + i);
		assert_int_equal(read16(0x40), seq[i]);
		assert_int_equal(out_pin(0), i != 3);
	}
	assert_int_equal(irq0.raises, 1);
	at(T0 + 70000);
	assert_int_equal(irq0.raises, 1); /* no strobe on wrap */
}

/* Mode 5: like mode 4, started by a gate rising edge. */
static void test_mode5(void **state)
{
	out(0x43, 0xba);
	write16(0x42, 2);
	at(T0 + 5);
	assert_true(out_pin(2));
	out(0x61, 0x01);
	at(T0 + 6);
	assert_int_equal(read16(0x42), 2);
	at(T0 + 8);
	assert_int_equal(read16(0x42), 0);
	assert_false(out_pin(2));
	at(T0 + 9);
	assert_true(out_pin(2));
}

static void test_latch(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 1000);
	at(T0 + 101); /* CE 900 */
	out(0x43, 0x00); /* latch ch0 */
	at(T0 + 200);
	out(0x43, 0x00); /* ignored: already latched */
	assert_int_equal(in(0x40), 900 & 0xff);
	at(T0 + 300);
	assert_int_equal(in(0x40), 900 >> 8);
	/* Latch released: live again. */
	assert_int_equal(read16(0x40), 701);
	/* LSB-only and MSB-only counters. */
	out(0x43, 0x54); /* ch1, LSB only, mode 2 */
	out(0x41, 0x34);
	at(T0 + 302);
	assert_int_equal(in(0x41), 0x33);
	assert_int_equal(in(0x41), 0x33);
	out(0x43, 0xa4); /* ch2, MSB only, mode 2 */
	out(0x61, 1);
	out(0x42, 0x12); /* N = 0x1200 */
	at(T0 + 302 + 2);
	assert_int_equal(in(0x42), 0x11);
}

static void test_readback(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 0x1234);
	/* Null count until the next CLK loads the count. */
	assert_int_equal(status(0), 0xf4);
	at(T0 + 1);
	assert_int_equal(status(0), 0xb4);
	/* Mode bits read back as written: 6 is mode 2 with M2 set. */
	out(0x43, 0x3c);
	assert_int_equal(status(0), 0xfc);
}

static void test_readback_status_count(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 0x1234);
	at(T0 + 0x11);
	out(0x43, 0xc2); /* latch count and status of ch0 */
	at(T0 + 0x100);
	out(0x43, 0xc2); /* both ignored: still latched */
	assert_int_equal(in(0x40), 0xb4); /* OUT 1, loaded, rw 3, mode 2 */
	assert_int_equal(in(0x40), 0x24); /* 0x1234 - 0x10 */
	assert_int_equal(in(0x40), 0x12);
	/* Status alone, then count alone, for two channels at once. */
	out(0x43, 0xb0); /* ch2 LSB/MSB mode 0 */
	out(0x43, 0x57); /* ch1 LSB only, mode 3, BCD */
	out(0x43, 0xec); /* status of ch1 and ch2 */
	assert_int_equal(in(0x42), 0x70); /* OUT 0, null, rw 3, mode 0 */
	assert_int_equal(in(0x41), 0xd7); /* OUT 1, null, rw 1, mode 3, BCD */
	out(0x41, 0x20);
	at(T0 + 0x102); /* BCD 20 by twos: 20, 18 */
	out(0x43, 0xd4); /* count only, ch1 */
	at(T0 + 0x110);
	assert_int_equal(in(0x41), 0x18);
	assert_int_equal(in(0x41), 0x10); /* unlatched: live, low half, 10 */
}

static void test_bcd(void **state)
{
	out(0x43, 0x35); /* ch0, LSB/MSB, mode 2, BCD */
	write16(0x40, 0x0100);
	at(T0 + 2);
	assert_int_equal(read16(0x40), 0x0099);
	at(T0 + 100);
	assert_int_equal(read16(0x40), 0x0001);
	at(T0 + 101);
	assert_int_equal(read16(0x40), 0x0100);
	/* 0 is 10000 in BCD: mode 0 wraps 0000 -> 9999. */
	out(0x43, 0x31);
	write16(0x40, 0x0000);
	at(T0 + 102);
	assert_int_equal(read16(0x40), 0x0000);
	at(T0 + 103);
	assert_int_equal(read16(0x40), 0x9999);
}

/* 1 kHz on channel 0 for ten minutes of irregular clock steps: every
 * period gives exactly one edge, no drift. */
static void test_no_drift(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 1193);
	uint64_t start = T0 + 1;
	uint64_t step = 7777777; /* ns, not a multiple of anything */
	while (fc->now < tick_ns(T0) + 600 * NS)
		fake_clock_advance(fc, step);
	uint64_t t = fc->now / NS * MB_PIT_HZ + fc->now % NS * MB_PIT_HZ / NS;
	uint64_t expect = (t - start) / 1193;
	assert_int_equal(irq0.raises, expect);
	assert_true(expect > 599000 && expect < 601000);
}

static void test_port61(void **state)
{
	out(0x61, 0x03);
	assert_int_equal(in(0x61) & 0x0f, 0x03);
	uint8_t a = in(0x61) & 0x10;
	fake_clock_advance(fc, 15085);
	uint8_t b = in(0x61) & 0x10;
	assert_int_not_equal(a, b);
	struct mb_pit_state st;
	mb_pit_state(pit, &st);
	assert_int_equal(st.channels[2].gate, 1);
	assert_int_equal(st.channels[0].gate, 1);
}

/* Re-injection: ticks the guest has not acknowledged wait in a backlog
 * and are pulsed one per acknowledgement, none lost, none doubled. */
static void test_reinject(void **state)
{
	mb_pit_set_reinject(pit, true);
	out(0x43, 0x34); /* channel 0, lohi, mode 2 */
	write16(0x40, 1000);
	at(T0 + 1);
	unsigned base = irq0.raises;
	at(T0 + 1 + 5 * 1000 + 10); /* five periods, no acknowledgement */
	assert_int_equal(irq0.raises - base, 1);
	for (int i = 0; i < 4; i++)
		mb_pit_irq_acked(pit);
	assert_int_equal(irq0.raises - base, 5);
	mb_pit_irq_acked(pit); /* nothing owed: no pulse */
	assert_int_equal(irq0.raises - base, 5);
	at(T0 + 1 + 6 * 1000 + 10); /* the next period goes out at once */
	assert_int_equal(irq0.raises - base, 6);
	/* Acknowledgements that never come (PIC re-initialised): after a few
	 * periods the PIT stops waiting and goes on. */
	at(T0 + 1 + 30 * 1000 + 10);
	assert_true(irq0.raises - base >= 7);
}

/* A plan with one rule on this PIT (no machine: the site by hand). */
static struct mb_fault_plan *pit_plan(struct mb_fault_rule r)
{
	struct mb_fault_plan_config c = { .seed = 1 };
	struct mb_fault_plan *p;
	assert_int_equal(mb_fault_plan_new(NULL, &c, &p), 0);
	snprintf(r.dev, sizeof r.dev, "pit");
	r.first = 1, r.last = 0;
	assert_int_equal(mb_fault_plan_add(p, &r), 1);
	assert_int_equal(mb_pit_set_fault(pit, mb_fault_plan_site(p, "pit")), 0);
	return p;
}

/* F.pit.drop: the tick is consumed. With re-injection on, the PIT does
 * not wait for the acknowledgement of a tick the guest never saw, so the
 * next period goes out on time and nothing is owed. */
static void test_fault_drop_bypasses_reinject(void **state)
{
	mb_pit_set_reinject(pit, true);
	struct mb_fault_plan *p = pit_plan((struct mb_fault_rule){
		.action = MB_FAULT_PIT_DROP, .nth = 2 });
	out(0x43, 0x34); /* channel 0, lohi, mode 2 */
	write16(0x40, 1000);
	at(T0 + 1);
	unsigned base = irq0.raises;
	at(T0 + 1 + 1000 + 10); /* period 1: delivered */
	assert_int_equal(irq0.raises - base, 1);
	mb_pit_irq_acked(pit);
	at(T0 + 1 + 2000 + 10); /* period 2: dropped */
	assert_int_equal(irq0.raises - base, 1);
	assert_int_equal(mb_pit_lost_ticks(pit), 1);
	at(T0 + 1 + 3000 + 10); /* period 3: at once, no ack awaited */
	assert_int_equal(irq0.raises - base, 2);
	mb_pit_irq_acked(pit);
	struct mb_pit_state st;
	mb_pit_state(pit, &st);
	assert_int_equal(st.backlog, 0); /* the dropped tick is not owed */
	struct mb_fault_rule_stats rs;
	assert_int_equal(mb_fault_plan_stats(p, 1, &rs), 0);
	assert_int_equal(rs.matched, 3);
	assert_int_equal(rs.fired, 1);
	mb_fault_plan_free(p);
}

/* F.pit.late: the tick goes out ms of clock time later, once. */
static void test_fault_late(void **state)
{
	struct mb_fault_plan *p = pit_plan((struct mb_fault_rule){
		.action = MB_FAULT_PIT_LATE, .ms = 5, .nth = 1 });
	out(0x43, 0x34);
	write16(0x40, 1000); /* ~838 us a period */
	at(T0 + 1);
	unsigned base = irq0.raises;
	at(T0 + 1 + 1000 + 10); /* period 1: held back */
	assert_int_equal(irq0.raises - base, 0);
	uint64_t due = tick_ns(T0 + 1 + 1000) + 5000000; /* 5 ms after the tick */
	fake_clock_advance(fc, due - 1 - fc->now); /* periods 2-6 on time */
	uint64_t ticks = fc->now / NS * MB_PIT_HZ + fc->now % NS * MB_PIT_HZ / NS;
	unsigned periods = (unsigned)((ticks - (T0 + 1)) / 1000);
	assert_int_equal(periods, 6);
	assert_int_equal(irq0.raises - base, periods - 1);
	fake_clock_advance(fc, 1); /* and the late one */
	assert_int_equal(irq0.raises - base, periods);
	struct mb_fault_rule_stats rs;
	assert_int_equal(mb_fault_plan_stats(p, 1, &rs), 0);
	assert_int_equal(rs.fired, 1);
	mb_fault_plan_free(p);
}

static void test_no_reinject_one_pulse_per_period(void **state)
{
	out(0x43, 0x34);
	write16(0x40, 1000);
	at(T0 + 1);
	unsigned base = irq0.raises;
	at(T0 + 1 + 5 * 1000 + 10);
	assert_int_equal(irq0.raises - base, 5);
}

/* ---- a busy host: timers that fire late ---------------------------- */

#define PERIOD 1000u     /* ticks: channel 0's count in these tests */
#define BACKLOG_MAX 200u /* devices/pit8254.c: most ticks owed at once */

/* Channel 0 in mode 2 with count PERIOD, loaded at T0 + 1: OUT rises at
 * T0 + 1 + k * PERIOD, k >= 1. */
static void rate_generator(void)
{
	out(0x43, 0x34);
	write16(0x40, PERIOD);
}

/* Every timer fires this many ticks after its deadline. */
static void set_late(uint64_t ticks)
{
	fc->late = tick_ns(T0 + ticks) - tick_ns(T0);
}

/* Acknowledge until an acknowledgement brings no new pulse: how many it
 * took (the ticks the PIT still owed). */
static unsigned drain(void)
{
	unsigned n = 0;
	for (;;) {
		unsigned before = irq0.raises;
		mb_pit_irq_acked(pit);
		if (irq0.raises == before)
			return n;
		assert_int_equal(irq0.raises, before + 1);
		assert_true(++n <= 10 * BACKLOG_MAX);
	}
}

static uint64_t edges(void)
{
	struct mb_pit_state st;
	mb_pit_state(pit, &st);
	return st.irq_edges;
}

/* Without re-injection a timer that ran late by several periods gives one
 * pulse (the PIC would merge the requests anyway), and the next deadline
 * follows the counter, not the late firing. */
static void test_late_timer_merges(void **state)
{
	rate_generator();
	set_late(5 * PERIOD + PERIOD / 2);
	/* Firings near T0 + 6501 (periods 1-6), 12501 (7-12), 18501 (13-18). */
	at(T0 + 18 * PERIOD + 600);
	assert_int_equal(fc->fired, 3);
	assert_int_equal(irq0.raises, 3);
	assert_int_equal(edges(), 3);
	/* On time again: one pulse per period, at the period's own tick. */
	fc->late = 0;
	at(T0 + 1 + 19 * PERIOD - 1);
	assert_int_equal(irq0.raises, 3);
	at(T0 + 1 + 19 * PERIOD);
	assert_int_equal(irq0.raises, 4);
	at(T0 + 1 + 21 * PERIOD);
	assert_int_equal(irq0.raises, 6);
	assert_int_equal(edges(), 6);
	assert_int_equal(fc->fired, 6);
}

/* With re-injection the periods a late timer found past all go into the
 * backlog: one pulse now, the others one per acknowledgement, so every
 * period is delivered exactly once. */
static void test_late_timer_reinject(void **state)
{
	mb_pit_set_reinject(pit, true);
	rate_generator();
	set_late(5 * PERIOD + PERIOD / 2);
	at(T0 + 12 * PERIOD + 600); /* two firings, twelve periods, no ack */
	assert_int_equal(fc->fired, 2);
	assert_int_equal(irq0.raises, 1);
	assert_int_equal(drain(), 11);
	assert_int_equal(irq0.raises, 12);
	assert_int_equal(edges(), 12);
	/* Nothing owed: the next late firing (six periods) pulses at once. */
	at(T0 + 18 * PERIOD + 600);
	assert_int_equal(irq0.raises, 13);
	assert_int_equal(drain(), 5);
	assert_int_equal(irq0.raises, 18);
}

/* After a pause far longer than BACKLOG_MAX periods the PIT replays
 * BACKLOG_MAX ticks, not the whole pause, and never owes more than
 * BACKLOG_MAX however many pauses pile up unacknowledged. */
static void test_backlog_max(void **state)
{
	mb_pit_set_reinject(pit, true);
	rate_generator();
	set_late(1000 * PERIOD + PERIOD / 2);
	/* First firing near T0 + 1001501: 1000 periods past, one pulse, the
	 * rest owed, capped. */
	at(T0 + 1001 * PERIOD + 800);
	assert_int_equal(fc->fired, 1);
	assert_int_equal(irq0.raises, 1);
	/* A second such pause, still without an ack: nothing new goes out
	 * (one is in flight) and the backlog stays at its cap. */
	at(T0 + 2002 * PERIOD + 800);
	assert_int_equal(fc->fired, 2);
	assert_int_equal(irq0.raises, 1);
	assert_int_equal(drain(), BACKLOG_MAX);
	assert_int_equal(irq0.raises, 1 + BACKLOG_MAX);
	/* On time again: the next period is one pulse, at once. */
	fc->late = 0;
	at(T0 + 1 + 2003 * PERIOD);
	assert_int_equal(fc->fired, 3);
	assert_int_equal(irq0.raises, 2 + BACKLOG_MAX);
	assert_int_equal(drain(), 0);
	assert_int_equal(edges(), 2 + BACKLOG_MAX);
}

/* One long pause alone: BACKLOG_MAX ticks in all, the first at once. */
static void test_backlog_max_one_pause(void **state)
{
	mb_pit_set_reinject(pit, true);
	rate_generator();
	set_late(1000 * PERIOD + PERIOD / 2);
	at(T0 + 1001 * PERIOD + 800);
	assert_int_equal(irq0.raises, 1);
	assert_int_equal(drain(), BACKLOG_MAX - 1);
	assert_int_equal(irq0.raises, BACKLOG_MAX);
}

/* Both PITs read the same port: the global `pit` points at each in turn. */
static uint8_t in_of(struct mb_pit *p, unsigned port)
{
	struct mb_pit *keep = pit;
	pit = p;
	uint8_t v = in(port);
	pit = keep;
	return v;
}

/* Save in the middle of activity (channel 0 counting in mode 2 with a
 * half-read latch, channel 1 between the bytes of a count, channel 2
 * counting in mode 0), load into a fresh PIT: the same state, and the same
 * behaviour afterwards, also in a PIT whose clock stands at 0. */
static void test_state_round_trip(void **state)
{
	at(T0 + 10);
	out(0x43, 0x34); /* ch0, LSB/MSB, mode 2 */
	write16(0x40, 1000);
	out(0x43, 0xb0); /* ch2, LSB/MSB, mode 0 */
	write16(0x42, 50000);
	out(0x61, 0x01); /* gate 2 high */
	out(0x43, 0x70); /* ch1, LSB/MSB, mode 0: only the LSB written */
	out(0x41, 0x12);
	at(T0 + 2500);
	out(0x43, 0x00); /* latch ch0 */
	uint8_t lsb = in(0x40);
	at(T0 + 2600);
	struct mb_pit_state a, b;
	mb_pit_save(pit, &a);
	assert_int_equal(a.channels[0].mode, 2);
	assert_true(a.channels[0].count_latched);

	struct fake_irq irq2 = { 0 };
	struct mb_pit_config cfg = { &fc->clock, fake_irq_line(&irq2) };
	struct mb_pit *p2 = mb_pit_new(&cfg);
	assert_non_null(p2);
	assert_int_equal(mb_pit_load(p2, &a), 0);
	mb_pit_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);

	struct fake_clock *fc0 = fake_clock_new(0);
	struct fake_irq irq3 = { 0 };
	struct mb_pit_config cfg0 = { &fc0->clock, fake_irq_line(&irq3) };
	struct mb_pit *p3 = mb_pit_new(&cfg0);
	assert_int_equal(mb_pit_load(p3, &a), 0);
	mb_pit_save(p3, &b);
	/* Another grid phase: ns round differently; port 0x61's refresh
	 * toggle follows the host clock. */
	assert_true(b.timer_ns + 1 >= a.timer_ns && b.timer_ns <= a.timer_ns + 1);
	b.timer_ns = a.timer_ns;
	b.port61 = (uint8_t)((b.port61 & ~0x10) | (a.port61 & 0x10));
	assert_memory_equal(&a, &b, sizeof a);

	/* The latch's MSB, then the counts after 7777 more ticks. */
	uint8_t msb = in(0x40);
	assert_int_equal(in_of(p2, 0x40), msb);
	assert_int_equal(in_of(p3, 0x40), msb);
	assert_int_equal(lsb | msb << 8, 1000 - (2500 - 11) % 1000);
	unsigned r0 = irq0.raises, r2 = irq2.raises, r3 = irq3.raises;
	at(T0 + 2600 + 7777);
	fake_clock_advance(fc0, tick_ns(7777));
	mb_pit_save(pit, &a);
	mb_pit_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_pit_save(p3, &b);
	assert_int_equal(a.channels[0].count, b.channels[0].count);
	assert_int_equal(a.channels[2].count, b.channels[2].count);
	assert_int_equal(a.irq_edges, b.irq_edges);
	assert_int_equal(irq0.raises - r0, irq2.raises - r2);
	assert_int_equal(irq0.raises - r0, irq3.raises - r3);
	assert_true(irq0.raises - r0 >= 7);
	for (unsigned ch = 0; ch < 3; ch++) {
		out(0x43, (uint8_t)(0xc0 | 2u << ch)); /* read-back: count and status */
		struct mb_pit *keep = pit;
		pit = p2;
		out(0x43, (uint8_t)(0xc0 | 2u << ch));
		pit = keep;
		for (int i = 0; i < 3; i++)
			assert_int_equal(in(0x40 + ch), in_of(p2, 0x40 + ch));
	}

	/* A bad field is named, and nothing changes. */
	mb_pit_save(p2, &a);
	b = a;
	b.channels[1].mode = 7;
	assert_int_equal(mb_pit_load(p2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "channels[2].mode"));
	b = a;
	b.channels[0].reload = 0;
	assert_int_equal(mb_pit_load(p2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "channels[1].reload"));
	mb_pit_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_pit_free(p3);
	fake_clock_free(fc0);
	mb_pit_free(p2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reinject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_drop_bypasses_reinject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_late, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_reinject_one_pulse_per_period, setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_timer_merges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_late_timer_reinject, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backlog_max, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backlog_max_one_pause, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode0_irq_exact_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode0_gate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode2_new_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode2_gate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode3, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode3_new_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mode5, setup, teardown),
		cmocka_unit_test_setup_teardown(test_latch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readback_status_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bcd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_drift, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port61, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
