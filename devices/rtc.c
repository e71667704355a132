/*
 * MC146818 RTC (Motorola MC146818A data sheet). The time is not counted
 * register by register: the RTC stands for wall = base + clock now (ns),
 * and the registers are derived from that when read. Flags (PF, AF, UF)
 * are found lazily by looking at which periodic/second edges passed since
 * they were last evaluated; a timer only runs while an enabled interrupt
 * is due. Updates are instantaneous at each second boundary; UIP is high
 * for the 244 us before it (data sheet: tBUC), so a reader seeing UIP = 0
 * has at least 244 us to read consistent registers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moonbox.h"

#define NS 1000000000ll
#define UIP_NS 244000ll
#define NO_ALARM_LIMIT 86400 /* seconds scanned for a lazily found alarm */

enum {
	REG_SEC = 0, REG_SEC_ALARM = 1, REG_MIN = 2, REG_MIN_ALARM = 3,
	REG_HOUR = 4, REG_HOUR_ALARM = 5, REG_WDAY = 6, REG_MDAY = 7,
	REG_MON = 8, REG_YEAR = 9, REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c,
	REG_D = 0x0d, REG_CENTURY = 0x32,
	A_UIP = 0x80,
	B_SET = 0x80, B_PIE = 0x40, B_AIE = 0x20, B_UIE = 0x10, B_DM = 0x04,
	B_24H = 0x02,
	C_IRQF = 0x80, C_PF = 0x40, C_AF = 0x20, C_UF = 0x10,
	D_VRT = 0x80,
};

struct mb_rtc {
	pthread_mutex_t lock;
	const struct mb_clock *clock;
	struct mb_irq irq;
	struct mb_timer *timer;
	int64_t base;     /* wall ns = base + clock ns */
	uint8_t cmos[128]; /* RAM, alarms, A and B */
	uint8_t index;
	bool nmi_masked;
	struct tm frozen; /* the registers while SET holds updates */
	uint8_t flags;    /* PF, AF, UF found so far */
	uint64_t eval_ns; /* flags are known up to this clock time */
	bool line;
};

static uint8_t to_bcd(unsigned v) { return (uint8_t)(v / 10 << 4 | v % 10); }
static unsigned from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0xf); }

static uint64_t clock_ns(struct mb_rtc *r) { return r->clock->now(r->clock); }
static int64_t wall(const struct mb_rtc *r, uint64_t now) { return r->base + (int64_t)now; }

/* ---- register encoding ------------------------------------------------- */

static uint8_t enc(const struct mb_rtc *r, unsigned v)
{
	return r->cmos[REG_B] & B_DM ? (uint8_t)v : to_bcd(v);
}

static unsigned dec(const struct mb_rtc *r, uint8_t v)
{
	return r->cmos[REG_B] & B_DM ? v : from_bcd(v);
}

/* 12-hour mode: 1-12 with bit 7 for PM (data sheet, Table 3). */
static uint8_t enc_hour(const struct mb_rtc *r, unsigned h)
{
	if (r->cmos[REG_B] & B_24H)
		return enc(r, h);
	return (uint8_t)(enc(r, h % 12 ? h % 12 : 12) | (h >= 12 ? 0x80 : 0));
}

static unsigned dec_hour(const struct mb_rtc *r, uint8_t v)
{
	if (r->cmos[REG_B] & B_24H)
		return dec(r, v);
	return dec(r, v & 0x7f) % 12 + (v & 0x80 ? 12 : 0);
}

static unsigned century(const struct mb_rtc *r)
{
	unsigned c = from_bcd(r->cmos[REG_CENTURY]);
	return c >= 19 && c <= 99 ? c : 20;
}

static uint8_t tm_reg(const struct mb_rtc *r, const struct tm *tm, unsigned i)
{
	switch (i) {
	case REG_SEC: return enc(r, (unsigned)tm->tm_sec);
	case REG_MIN: return enc(r, (unsigned)tm->tm_min);
	case REG_HOUR: return enc_hour(r, (unsigned)tm->tm_hour);
	case REG_WDAY: return enc(r, (unsigned)tm->tm_wday + 1);
	case REG_MDAY: return enc(r, (unsigned)tm->tm_mday);
	case REG_MON: return enc(r, (unsigned)tm->tm_mon + 1);
	default: return enc(r, (unsigned)(tm->tm_year + 1900) % 100);
	}
}

static void secs_tm(int64_t secs, struct tm *tm)
{
	time_t t = (time_t)secs;
	gmtime_r(&t, tm);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

static void now_tm(struct mb_rtc *r, uint64_t now, struct tm *tm)
{
	if (r->cmos[REG_B] & B_SET)
		*tm = r->frozen;
	else
		secs_tm(floor_div(wall(r, now), NS), tm);
}

/* Make the RTC stand at tm now, keeping the phase within the second. */
static void set_time(struct mb_rtc *r, uint64_t now, struct tm *tm)
{
	int64_t w = wall(r, now);
	int64_t phase = w - floor_div(w, NS) * NS;
	int64_t secs = (int64_t)timegm(tm);
	/* The guest controls every field (century 0x32 up to 99, binary
	 * years up to 255): wall time in ns must stay representable, with
	 * room for the clock and the edge sums in update(), so clamp to the
	 * years ~1748-2191 (found by fuzz/fuzz_devregs.c). */
	const int64_t lim = 7000000000ll;
	secs = secs > lim ? lim : secs < -lim ? -lim : secs;
	r->base = secs * NS + phase - (int64_t)now;
}

/* ---- flags and the interrupt ----------------------------------------- */

/* The periodic rate from A's RS bits, as a count of 32.768 kHz cycles
 * (data sheet, Table 5): RS 1 and 2 repeat RS 8 and 9. */
static int64_t period_cycles(const struct mb_rtc *r)
{
	unsigned rs = r->cmos[REG_A] & 0x0f;
	if (!rs)
		return 0;
	return rs <= 2 ? 1ll << (rs + 6) : 1ll << (rs - 1);
}

static int64_t ns_to_cyc(int64_t ns)
{
	return floor_div(ns, NS) * 32768 + (ns - floor_div(ns, NS) * NS) * 32768 / NS;
}

static int64_t cyc_to_ns(int64_t c)
{
	int64_t q = floor_div(c, 32768), m = c - q * 32768;
	return q * NS + (m * NS + 32767) / 32768;
}

static bool alarm_match(const struct mb_rtc *r, const struct tm *tm)
{
	static const unsigned alarm[3] = { REG_SEC_ALARM, REG_MIN_ALARM,
					   REG_HOUR_ALARM };
	for (unsigned i = 0; i < 3; i++) {
		uint8_t a = r->cmos[alarm[i]];
		/* 11xxxxxx is "don't care" (data sheet, "Alarm") */
		if ((a & 0xc0) != 0xc0 && a != tm_reg(r, tm, alarm[i] - 1))
			return false;
	}
	return true;
}

/* Fold in the edges that passed in (eval_ns, now]. */
static void evaluate(struct mb_rtc *r, uint64_t now)
{
	int64_t from = wall(r, r->eval_ns), to = wall(r, now);
	r->eval_ns = now;
	if (to <= from)
		return;
	int64_t p = period_cycles(r);
	if (p && floor_div(ns_to_cyc(to), p) > floor_div(ns_to_cyc(from), p))
		r->flags |= C_PF;
	if (r->cmos[REG_B] & B_SET)
		return;
	int64_t s0 = floor_div(from, NS), s1 = floor_div(to, NS);
	if (s1 == s0)
		return;
	r->flags |= C_UF;
	for (int64_t s = s1; s > s0 && s1 - s < NO_ALARM_LIMIT; s--) {
		struct tm tm;
		secs_tm(s, &tm);
		if (alarm_match(r, &tm)) {
			r->flags |= C_AF;
			break;
		}
	}
}

static bool irqf(const struct mb_rtc *r)
{
	return r->flags & r->cmos[REG_B] & (B_PIE | B_AIE | B_UIE);
}

/* The clock time of the next edge that could raise IRQF, or 0: none. */
static uint64_t next_edge(const struct mb_rtc *r, uint64_t now)
{
	int64_t next = INT64_MAX, w = wall(r, now);
	uint8_t b = r->cmos[REG_B];
	int64_t p = period_cycles(r);
	if (irqf(r))
		return 0; /* nothing more to tell until C is read */
	if ((b & B_PIE) && p)
		next = cyc_to_ns((floor_div(ns_to_cyc(w), p) + 1) * p);
	if ((b & (B_UIE | B_AIE)) && !(b & B_SET)) {
		int64_t s = (floor_div(w, NS) + 1) * NS;
		if (s < next)
			next = s;
	}
	return next == INT64_MAX ? 0 : (uint64_t)(next - r->base);
}

/* Drive the line from IRQF and arm the timer for the next edge that
 * could raise it. */
static void update(struct mb_rtc *r, uint64_t now)
{
	bool level = irqf(r);
	if (level != r->line) {
		r->line = level;
		mb_irq_set(&r->irq, level);
	}
	r->clock->timer_mod(r->timer, next_edge(r, now));
}

static void on_timer(void *opaque)
{
	struct mb_rtc *r = opaque;
	pthread_mutex_lock(&r->lock);
	uint64_t now = clock_ns(r);
	evaluate(r, now);
	update(r, now);
	pthread_mutex_unlock(&r->lock);
}

/* ---- registers -------------------------------------------------------- */

static uint8_t reg_peek(struct mb_rtc *r, unsigned i, uint64_t now)
{
	struct tm tm;
	switch (i) {
	case REG_SEC: case REG_MIN: case REG_HOUR: case REG_WDAY:
	case REG_MDAY: case REG_MON: case REG_YEAR:
		now_tm(r, now, &tm);
		return tm_reg(r, &tm, i);
	case REG_A: {
		int64_t w = wall(r, now);
		bool uip = !(r->cmos[REG_B] & B_SET) &&
			   w - floor_div(w, NS) * NS >= NS - UIP_NS;
		return (uint8_t)(r->cmos[REG_A] | (uip ? A_UIP : 0));
	}
	case REG_C:
		evaluate(r, now);
		return (uint8_t)(r->flags | (irqf(r) ? C_IRQF : 0));
	case REG_D:
		return D_VRT; /* the battery is always good */
	default:
		return r->cmos[i];
	}
}

static uint8_t reg_read(struct mb_rtc *r, unsigned i, uint64_t now)
{
	uint8_t v = reg_peek(r, i, now);
	if (i == REG_C) { /* reading C clears every flag and IRQF */
		r->flags = 0;
		update(r, now);
	}
	return v;
}

static void reg_write(struct mb_rtc *r, unsigned i, uint8_t v, uint64_t now)
{
	struct tm tm;
	evaluate(r, now); /* flags up to now belong to the old settings */
	switch (i) {
	case REG_SEC: case REG_MIN: case REG_HOUR: case REG_WDAY:
	case REG_MDAY: case REG_MON: case REG_YEAR:
		now_tm(r, now, &tm);
		switch (i) {
		case REG_SEC: tm.tm_sec = (int)dec(r, v); break;
		case REG_MIN: tm.tm_min = (int)dec(r, v); break;
		case REG_HOUR: tm.tm_hour = (int)dec_hour(r, v); break;
		case REG_WDAY: break; /* derived from the date */
		case REG_MDAY: tm.tm_mday = (int)dec(r, v); break;
		case REG_MON: tm.tm_mon = (int)dec(r, v) - 1; break;
		default: tm.tm_year = (int)(century(r) * 100 + dec(r, v)) - 1900;
		}
		if (r->cmos[REG_B] & B_SET)
			r->frozen = tm;
		else
			set_time(r, now, &tm);
		break;
	case REG_A:
		r->cmos[REG_A] = v & 0x7f; /* UIP is read-only */
		break;
	case REG_B:
		if ((v & B_SET) && !(r->cmos[REG_B] & B_SET))
			now_tm(r, now, &r->frozen);
		if (!(v & B_SET) && (r->cmos[REG_B] & B_SET))
			set_time(r, now, &r->frozen);
		if (v & B_SET) /* SET clears UIE (data sheet, register B) */
			v &= (uint8_t)~B_UIE;
		r->cmos[REG_B] = v;
		break;
	case REG_C:
	case REG_D:
		break; /* read-only */
	default:
		r->cmos[i] = v;
	}
	update(r, now);
}

static void rtc_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_rtc *r = dev;
	uint8_t *p = data;
	memset(data, 0xff, size);
	if (off != 1)
		return; /* the index port is write-only on a PC */
	pthread_mutex_lock(&r->lock);
	p[0] = reg_read(r, r->index, clock_ns(r));
	pthread_mutex_unlock(&r->lock);
}

static void rtc_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_rtc *r = dev;
	const uint8_t *p = data;
	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < size && off + i < 2; i++) {
		if (off + i == 0) {
			r->index = p[i] & 0x7f;
			r->nmi_masked = p[i] & 0x80;
		} else {
			reg_write(r, r->index, p[i], clock_ns(r));
		}
	}
	pthread_mutex_unlock(&r->lock);
}

const struct mb_io_ops mb_rtc_ops = { rtc_read, rtc_write };

/* ---- outside access, life cycle, state -------------------------------- */

int mb_rtc_set_cmos(struct mb_rtc *r, unsigned index, uint8_t value)
{
	if (index > 0x7f)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	reg_write(r, index, value, clock_ns(r));
	pthread_mutex_unlock(&r->lock);
	return 0;
}

int mb_rtc_get_cmos(struct mb_rtc *r, unsigned index, uint8_t *value)
{
	if (index > 0x7f)
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	*value = reg_peek(r, index, clock_ns(r));
	pthread_mutex_unlock(&r->lock);
	return 0;
}

struct mb_rtc *mb_rtc_new(const struct mb_rtc_config *cfg)
{
	struct mb_rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	r->clock = cfg->clock;
	r->irq = cfg->irq;
	r->timer = r->clock->timer_new(r->clock, on_timer, r);
	if (!r->timer) {
		pthread_mutex_destroy(&r->lock);
		free(r);
		return NULL;
	}
	int64_t start = cfg->start_ns;
	if (start == MB_RTC_HOST_TIME) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		start = (int64_t)ts.tv_sec * NS + ts.tv_nsec;
	}
	uint64_t now = clock_ns(r);
	r->base = start - (int64_t)now;
	r->eval_ns = now;
	/* What a PC BIOS leaves: 32.768 kHz divider, 1024 Hz periodic rate
	 * selected (not enabled), 24-hour BCD. */
	r->cmos[REG_A] = 0x26;
	r->cmos[REG_B] = B_24H;
	struct tm tm;
	now_tm(r, now, &tm);
	r->cmos[REG_CENTURY] = to_bcd((unsigned)(tm.tm_year + 1900) / 100);
	return r;
}

void mb_rtc_free(struct mb_rtc *r)
{
	if (!r)
		return;
	r->clock->timer_free(r->timer);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

MB_STATE_DESC(mb_rtc_tm_state, MB_RTC_TM_STATE, MB_RTC_STATE_VERSION);
MB_STATE_DESC(mb_rtc_state, MB_RTC_STATE, MB_RTC_STATE_VERSION);

void mb_rtc_save(struct mb_rtc *r, struct mb_rtc_state *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&r->lock);
	uint64_t now = clock_ns(r);
	memcpy(st->cmos, r->cmos, sizeof r->cmos);
	st->cmos_len = sizeof r->cmos;
	st->index = r->index;
	st->nmi_masked = r->nmi_masked;
	st->wall_ns = wall(r, now);
	st->frozen.sec = r->frozen.tm_sec;
	st->frozen.min = r->frozen.tm_min;
	st->frozen.hour = r->frozen.tm_hour;
	st->frozen.mday = r->frozen.tm_mday;
	st->frozen.mon = r->frozen.tm_mon;
	st->frozen.year = r->frozen.tm_year;
	st->frozen.wday = r->frozen.tm_wday;
	st->flags = r->flags;
	st->eval_ago = now - r->eval_ns;
	st->sec = reg_peek(r, REG_SEC, now);
	st->min = reg_peek(r, REG_MIN, now);
	st->hour = reg_peek(r, REG_HOUR, now);
	st->wday = reg_peek(r, REG_WDAY, now);
	st->mday = reg_peek(r, REG_MDAY, now);
	st->mon = reg_peek(r, REG_MON, now);
	st->year = reg_peek(r, REG_YEAR, now);
	st->century = r->cmos[REG_CENTURY];
	st->sec_alarm = r->cmos[REG_SEC_ALARM];
	st->min_alarm = r->cmos[REG_MIN_ALARM];
	st->hour_alarm = r->cmos[REG_HOUR_ALARM];
	st->a = reg_peek(r, REG_A, now);
	st->b = r->cmos[REG_B];
	/* C as a read would return it, without folding in (a save has no
	 * side effects): the flags found so far plus the edges since. */
	uint8_t flags = r->flags;
	uint64_t eval = r->eval_ns;
	st->c = reg_peek(r, REG_C, now);
	r->flags = flags;
	r->eval_ns = eval;
	st->d = D_VRT;
	st->irq_level = r->line;
	struct tm tm;
	now_tm(r, now, &tm);
	st->unix_time = (int64_t)timegm(&tm);
	uint64_t next = next_edge(r, now);
	st->timer_ns = next > now ? next - now : 0;
	pthread_mutex_unlock(&r->lock);
}

#define TIME_MAX (INT64_C(1) << 62) /* ns, any direction: no sum overflows */

int mb_rtc_load(struct mb_rtc *r, const struct mb_rtc_state *st)
{
	if (st->cmos_len != 128)
		return mb_seterr(-EINVAL, "cmos: %u bytes, not 128", st->cmos_len);
	if (st->cmos[REG_A] & A_UIP)
		return mb_seterr(-EINVAL, "cmos: [0x0a] = 0x%x sets UIP (read-only)",
				 st->cmos[REG_A]);
	if (st->index > 0x7f)
		return mb_seterr(-EINVAL, "index: 0x%x is beyond 0x7f", st->index);
	/* set_time clamps to +-7e9 s plus the phase within a second; leave
	 * room for centuries of running after that (found by fuzz_devregs),
	 * short of the sums in update() overflowing. */
	if (st->wall_ns > 8000000000ll * NS || st->wall_ns < -8000000000ll * NS)
		return mb_seterr(-EINVAL, "wall_ns: %lld is beyond +-8e18 (years "
				 "~1716-2223)", (long long)st->wall_ns);
	const int64_t *tmf = &st->frozen.sec;
	static const char *const tmn[] = { "sec", "min", "hour", "mday", "mon",
					   "year", "wday" };
	for (int i = 0; i < 7; i++)
		if (tmf[i] < -100000 || tmf[i] > 100000)
			return mb_seterr(-EINVAL, "frozen.%s: %lld is not within "
					 "+-100000", tmn[i], (long long)tmf[i]);
	if (st->flags & ~(C_PF | C_AF | C_UF))
		return mb_seterr(-EINVAL, "flags: 0x%x is not PF, AF, UF (0x70)",
				 st->flags);
	if (st->eval_ago > (uint64_t)TIME_MAX)
		return mb_seterr(-EINVAL, "eval_ago: %llu ns is too far",
				 (unsigned long long)st->eval_ago);
	pthread_mutex_lock(&r->lock);
	uint64_t now = clock_ns(r);
	memcpy(r->cmos, st->cmos, sizeof r->cmos);
	r->index = st->index;
	r->nmi_masked = st->nmi_masked;
	r->base = st->wall_ns - (int64_t)now;
	memset(&r->frozen, 0, sizeof r->frozen);
	r->frozen.tm_sec = (int)st->frozen.sec;
	r->frozen.tm_min = (int)st->frozen.min;
	r->frozen.tm_hour = (int)st->frozen.hour;
	r->frozen.tm_mday = (int)st->frozen.mday;
	r->frozen.tm_mon = (int)st->frozen.mon;
	r->frozen.tm_year = (int)st->frozen.year;
	r->frozen.tm_wday = (int)st->frozen.wday;
	r->flags = st->flags;
	r->eval_ns = now - st->eval_ago; /* may wrap: wall() takes it signed */
	update(r, now);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

static int dev_save(void *impl, void *st)
{
	mb_rtc_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_rtc_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_rtc_free(impl);
}

/* F.rtc.jump (docs/faults.md): the wall clock moves by `seconds` at once,
 * as if the battery-backed oscillator had skipped. Flags due before the
 * jump are folded in first; the jump itself passes no update or alarm
 * edge (a step, not elapsed time), whichever way it goes. */
void mb_rtc_jump(struct mb_rtc *r, int64_t seconds)
{
	pthread_mutex_lock(&r->lock);
	uint64_t now = clock_ns(r);
	evaluate(r, now);
	/* Within set_time's years (~1748-2191), however many jumps. */
	const int64_t lim = 7000000000ll;
	int64_t secs = floor_div(wall(r, now), NS) + seconds;
	secs = secs > lim ? lim : secs < -lim ? -lim : secs;
	int64_t w = wall(r, now);
	r->base = secs * NS + (w - floor_div(w, NS) * NS) - (int64_t)now;
	r->eval_ns = now;
	if (r->cmos[REG_B] & B_SET) { /* the held registers move with it */
		int64_t f = (int64_t)timegm(&r->frozen) + seconds;
		secs_tm(f > lim ? lim : f < -lim ? -lim : f, &r->frozen);
	}
	update(r, now);
	pthread_mutex_unlock(&r->lock);
}

static const struct mb_device_ops rtc_dev_ops;

struct mb_rtc *mb_rtc_of_device(struct mb_device *d)
{
	return d && mb_device_ops_of(d) == &rtc_dev_ops ? mb_device_impl(d) : NULL;
}

static const struct mb_device_ops rtc_dev_ops = {
	.kind = "rtc", .state = &mb_rtc_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

int mb_rtc_attach(struct mb_machine *m, const struct mb_rtc_attach_config *cfg,
		  struct mb_device **out)
{
	static const struct mb_rtc_attach_config none;
	if (!cfg)
		cfg = &none;
	struct mb_rtc_config rc_ = {
		.clock = mb_machine_clock(m),
		.start_ns = cfg->set_time ? cfg->time_ns : MB_RTC_HOST_TIME,
	};
	struct mb_rtc *r = mb_rtc_new(&rc_);
	if (!r)
		return mb_seterr(-ENOMEM, "rtc: out of memory");
	struct mb_device *d;
	int rc;
	if ((rc = mb_device_new(m, cfg->name, "rtc", &rtc_dev_ops, r, &d)))
		return rc;
	/* The line before the ports and the CMOS writes (which may enable an
	 * interrupt). */
	if ((rc = mb_device_irq(d, cfg->irq ? (int)cfg->irq : 8, &r->irq)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0x70, 2, &mb_rtc_ops, r))) {
		mb_device_remove(d);
		return rc;
	}
	for (unsigned i = 0; i < 128; i++)
		if (cfg->cmos_given[i])
			mb_rtc_set_cmos(r, i, cfg->cmos[i]);
	*out = d;
	return 0;
}
