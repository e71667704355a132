/*
 * Motorola MC146818 real-time clock and CMOS RAM, as on a PC: index port
 * 0x70 (bit 7 masks NMI), data port 0x71, interrupt on ISA IRQ 8.
 */
#ifndef DEVICES_RTC_H
#define DEVICES_RTC_H

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

struct mb_rtc_state {
	uint8_t index, nmi_masked;
	/* time registers as the guest would read them (BCD/binary, 12/24h
	 * per status B) */
	uint8_t sec, min, hour, wday, mday, mon, year, century;
	uint8_t sec_alarm, min_alarm, hour_alarm;
	uint8_t a, b, c, d; /* c: the flags a read would return */
	uint8_t irq_level;
	int64_t unix_time; /* seconds the RTC stands at */
};

struct mb_rtc *mb_rtc_new(const struct mb_rtc_config *cfg);
void mb_rtc_free(struct mb_rtc *rtc);
void mb_rtc_state(struct mb_rtc *rtc, struct mb_rtc_state *st);
/* CMOS bytes 0x00-0x7f as the guest reads them; writes to 0x00-0x0d act as
 * guest writes (set the time, status registers), the rest is plain RAM
 * (0x32: century, BCD). */
int mb_rtc_set_cmos(struct mb_rtc *rtc, unsigned index, uint8_t value);
int mb_rtc_get_cmos(struct mb_rtc *rtc, unsigned index, uint8_t *value);

extern const struct mb_io_ops mb_rtc_ops; /* 0x70-0x71 */

#endif
