/*
 * Motorola MC146818 real-time clock and CMOS RAM, as on a PC: index port
 * 0x70 (bit 7 masks NMI), data port 0x71, interrupt on ISA IRQ 8.
 */
#ifndef MOONBOX_RTC_H
#define MOONBOX_RTC_H

#include "moonbox.h"

/* start_ns value meaning "the host's wall clock (UTC) now". */
#define MB_RTC_HOST_TIME INT64_MIN

struct mb_rtc;

struct mb_rtc_config {
	const struct mb_clock *clock;
	struct mb_irq irq;
	/* Unix time in ns that clock->now() at creation stands for; the RTC
	 * runs from there with the clock. MB_RTC_HOST_TIME: the host's UTC. */
	int64_t start_ns;
};

/* The registers while status B's SET holds updates (struct tm fields as
 * the guest wrote them, not normalised). */
#define MB_RTC_TM_STATE(X, S) \
	X(S, i64, sec) X(S, i64, min) X(S, i64, hour) X(S, i64, mday) \
	X(S, i64, mon) X(S, i64, year) X(S, i64, wday)
MB_STATE_STRUCT(mb_rtc_tm_state, MB_RTC_TM_STATE);

/* What the RTC needs to go on: the CMOS RAM (with the alarms, A and B),
 * the index, the time as Unix ns now (not a host clock value), the flags
 * found so far and since when; then views as the guest reads them. */
#define MB_RTC_STATE(X, S) \
	X(S, bytes, cmos, 128)  /* all 128 bytes; 0-9, 0x0c, 0x0d unused */ \
	X(S, u8, index) X(S, bool, nmi_masked) \
	X(S, i64, wall_ns)      /* Unix time in ns the RTC stands at now */ \
	X(S, sub, frozen, mb_rtc_tm_state) \
	X(S, u8, flags)         /* PF, AF, UF found so far (status C) */ \
	X(S, u64, eval_ago)     /* ns since the flags were last brought up to date */ \
	X(S, ro_u8, sec) X(S, ro_u8, min) X(S, ro_u8, hour) X(S, ro_u8, wday) \
	X(S, ro_u8, mday) X(S, ro_u8, mon) X(S, ro_u8, year) \
	X(S, ro_u8, century) X(S, ro_u8, sec_alarm) X(S, ro_u8, min_alarm) \
	X(S, ro_u8, hour_alarm) \
	X(S, ro_u8, a) X(S, ro_u8, b) \
	X(S, ro_u8, c)          /* the flags a read would return */ \
	X(S, ro_u8, d) X(S, ro_bool, irq_level) \
	X(S, ro_i64, unix_time) /* seconds the registers stand at */ \
	X(S, ro_u64, timer_ns)  /* next periodic/update/alarm check: ns, 0 none */
MB_STATE_STRUCT(mb_rtc_state, MB_RTC_STATE);
#define MB_RTC_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_rtc_attach_config {
	const char *name; /* NULL: "rtc" */
	unsigned irq;     /* 0: 8, the PC's */
	bool set_time;    /* false: start at the host's UTC now */
	int64_t time_ns;  /* Unix time in ns at attach, with set_time */
	/* CMOS bytes to write after creation (as mb_rtc_set_cmos does), for
	 * the indexes with cmos_given[i] set. */
	uint8_t cmos[128];
	bool cmos_given[128];
};

/* Ports 0x70-0x71 and the line. cfg may be NULL. */
int mb_rtc_attach(struct mb_machine *m, const struct mb_rtc_attach_config *cfg,
		  struct mb_device **out);

/* ---- the model on its own (unit tests, other boards) ------------------- */

/* NULL when out of memory or the clock has no timer for it. */
struct mb_rtc *mb_rtc_new(const struct mb_rtc_config *cfg);
void mb_rtc_free(struct mb_rtc *rtc);
/* Save (any time) and load (guest stopped) the state. Load checks every
 * field first (-EINVAL, message naming it) and changes nothing on error;
 * the RTC then stands at wall_ns, with its interrupt line and timer
 * recomputed. */
void mb_rtc_save(struct mb_rtc *rtc, struct mb_rtc_state *st);
int mb_rtc_load(struct mb_rtc *rtc, const struct mb_rtc_state *st);
#define mb_rtc_state(r, st) mb_rtc_save(r, st)
/* CMOS bytes 0x00-0x7f as the guest reads them; writes to 0x00-0x0d act as
 * guest writes (set the time, status registers), the rest is plain RAM
 * (0x32: century, BCD). */
int mb_rtc_set_cmos(struct mb_rtc *rtc, unsigned index, uint8_t value);
int mb_rtc_get_cmos(struct mb_rtc *rtc, unsigned index, uint8_t *value);

extern const struct mb_io_ops mb_rtc_ops; /* 0x70-0x71 */

/* Move the RTC's time by seconds (either way), now (F.rtc.jump). */
void mb_rtc_jump(struct mb_rtc *rtc, int64_t seconds);
struct mb_rtc *mb_rtc_of_device(struct mb_device *d); /* NULL: not an RTC */

#endif
