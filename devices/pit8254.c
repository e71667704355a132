/*
 * Intel 8254 PIT (82C54 data sheet, Intel 231244), as wired on a PC.
 *
 * Time model: the counters' CLK is a free-running 1.193182 MHz grid over
 * the clock's nanoseconds (tick T = floor(ns * f / 1e9)). A counter is a
 * "segment": a count n that enters the counting element (CE) at tick
 * `load` and then follows its mode's formula. Everything a guest sees (CE,
 * OUT, the next interrupt) is computed from the tick now, never by
 * accumulating steps, so nothing drifts. Writing a count or a gate edge
 * starts a new segment; the previous one is kept for the ticks before the
 * new one loads (mode 2/3 reloads at the end of a cycle).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

#define NS 1000000000ull
#define LATE_MAX 64 /* late ticks in flight; more are delivered on time */
#define NONE UINT64_MAX

struct seg {
	bool valid;
	bool frozen;   /* not counting (gate low): CE holds `held` */
	bool done;     /* modes 0,4: terminal count already passed */
	uint32_t n;    /* count loaded at `load` (modes 2,3: the reload N) */
	uint32_t held;
	uint32_t off;  /* mode 3: phase offset, to start in the low half */
	uint64_t load; /* tick at which n is in CE */
};

struct chan {
	uint8_t mode, raw_mode, rw, bcd;
	uint32_t cr;    /* count register: N, 1..65536 (BCD 1..10000) */
	struct seg cur, prev;
	uint32_t idle_ce; /* CE before any segment loads */
	bool gate;
	bool wmsb, rmsb;  /* LSB/MSB flip-flops */
	uint8_t wlsb;
	bool latched, latch_msb;
	uint16_t latch;
	bool status_latched;
	uint8_t status;
	uint64_t null_until; /* tick the written count loads; NONE: pending */
};

struct mb_pit {
	pthread_mutex_t lock;
	struct chan ch[3];
	const struct mb_clock *clock;
	struct mb_irq irq;
	struct mb_timer *timer;
	uint64_t base;     /* ticks added to the clock's: set by a load so that
			    * no loaded time lies before tick 0 */
	bool line;         /* level driven on irq */
	uint64_t armed_at; /* tick the timer's edge was computed from */
	uint64_t edges;
	uint8_t p61;       /* bits 0-3 as written */
	/* Re-injection (what KVM's PIT calls reinject): a tick the guest
	 * could not take yet is kept in backlog and pulsed after the
	 * controller reports the previous one acknowledged, so ticks late
	 * timers or a busy guest would merge are not lost. */
	bool reinject, inflight;
	uint32_t backlog, stale;
	/* NULL unless a fault rule targets this PIT (moonbox/fault.h). */
	struct mb_fault_site *_Atomic fault;
	struct mb_timer *late_timer;  /* pit.late: made with the site */
	uint64_t late[LATE_MAX];      /* clock ns at which late ticks are due */
	unsigned nlate;
	uint64_t lost;                /* ticks pit.drop consumed */
	mb_pit_observer *_Atomic obs; /* m:on("pit"), or NULL */
	mb_fault_ask_cancel *obs_cancel;
	void *obs_ctx;
};

#define BACKLOG_MAX 200 /* after a long pause, do not replay more than this */
#define STALE_MAX 8     /* periods without an ack: the request was dropped */

/* ---- the clock grid --------------------------------------------------- */

/* Split so that neither product overflows for any 64-bit time. */
static uint64_t ns_to_tick(uint64_t ns)
{
	return ns / NS * MB_PIT_HZ + ns % NS * MB_PIT_HZ / NS;
}

/* First nanosecond of tick t: ns_to_tick(tick_to_ns(t)) == t. */
static uint64_t tick_to_ns(uint64_t t)
{
	return t / MB_PIT_HZ * NS +
	       (t % MB_PIT_HZ * NS + MB_PIT_HZ - 1) / MB_PIT_HZ;
}

static uint64_t now_tick(struct mb_pit *pit)
{
	return ns_to_tick(pit->clock->now(pit->clock)) + pit->base;
}

static uint32_t modulus(const struct chan *c)
{
	return c->bcd ? 10000 : 65536;
}

static uint32_t wrap(const struct chan *c, int64_t v)
{
	int64_t m = modulus(c);
	return (uint32_t)(((v % m) + m) % m);
}

static uint16_t to_bcd(uint32_t v)
{
	return (uint16_t)(v % 10 | (v / 10 % 10) << 4 | (v / 100 % 10) << 8 |
			  (v / 1000 % 10) << 12);
}

static uint32_t from_bcd(uint16_t v)
{
	return (v & 0xf) + (v >> 4 & 0xf) * 10 + (v >> 8 & 0xf) * 100 +
	       (v >> 12 & 0xf) * 1000;
}

/* ---- counting: CE and OUT at a tick --------------------------------- */

/* Mode 3 (data sheet, "Mode 3"): even N counts N, N-2 .. 2 with OUT high,
 * then again low; odd N loads N-1 and is high one clock longer, so OUT is
 * high (N+1)/2 clocks and low (N-1)/2. */
static void mode3(uint32_t n, uint64_t kk, uint32_t *ce, bool *out)
{
	uint64_t ph = kk % n, hi = (n + 1) / 2;
	uint64_t j = ph < hi ? ph : ph - hi;
	*out = ph < hi;
	*ce = (uint32_t)((n & 1 ? n - 1 : n) - 2 * j);
}

static void eval_seg(const struct chan *c, const struct seg *s, uint64_t t,
		     uint32_t *ce, bool *out)
{
	uint64_t k = t - s->load;
	if (s->frozen) {
		*ce = s->held;
		*out = c->mode == 0 ? s->done : true;
		return;
	}
	switch (c->mode) {
	case 0: /* interrupt on terminal count */
	case 1: /* hardware one-shot: low from trigger to terminal count */
		*ce = wrap(c, (int64_t)s->n - (int64_t)(k % modulus(c)));
		*out = s->done || k >= s->n;
		break;
	case 4: /* strobes: one clock low when CE reaches 0 */
	case 5:
		*ce = wrap(c, (int64_t)s->n - (int64_t)(k % modulus(c)));
		*out = s->done || k != s->n;
		break;
	case 2: /* rate generator: low for the clock CE is 1 */
		*ce = wrap(c, (int64_t)s->n - (int64_t)(k % s->n));
		*out = s->n < 2 || k % s->n != s->n - 1;
		break;
	default:
		mode3(s->n, k + s->off, ce, out);
		*ce = wrap(c, *ce);
		break;
	}
}

static void eval(const struct chan *c, uint64_t t, uint32_t *ce, bool *out)
{
	if (c->cur.valid && t >= c->cur.load) {
		eval_seg(c, &c->cur, t, ce, out);
	} else if (c->cur.valid && c->prev.valid && t >= c->prev.load) {
		eval_seg(c, &c->prev, t, ce, out);
	} else {
		/* After a mode's control word OUT is low in mode 0, else high. */
		*ce = c->idle_ce;
		*out = c->mode != 0;
	}
}

/* Smallest k' > k (relative to the segment) where OUT rises, or NONE. */
static uint64_t seg_rise(const struct chan *c, const struct seg *s, uint64_t k)
{
	if (s->frozen)
		return NONE;
	switch (c->mode) {
	case 0:
	case 1:
		return !s->done && k < s->n ? s->n : NONE;
	case 4:
	case 5:
		return !s->done && k < s->n + 1ull ? s->n + 1ull : NONE;
	case 2:
		return s->n < 2 ? NONE : (k / s->n + 1) * s->n;
	default:
		return s->n < 2 ? NONE : ((k + s->off) / s->n + 1) * s->n - s->off;
	}
}

/* The first tick after t at which OUT goes low to high, or NONE. */
static uint64_t next_rise(const struct chan *c, uint64_t t)
{
	const struct seg *cur = &c->cur, *prev = &c->prev;
	uint64_t r;
	bool before, at;
	uint32_t ce;
	if (!cur->valid)
		return NONE;
	if (t >= cur->load) {
		r = seg_rise(c, cur, t - cur->load);
		return r == NONE ? NONE : cur->load + r;
	}
	if (prev->valid && t >= prev->load) {
		r = seg_rise(c, prev, t - prev->load);
		if (r != NONE && prev->load + r < cur->load)
			return prev->load + r;
	}
	eval(c, cur->load - 1, &ce, &before);
	eval_seg(c, cur, cur->load, &ce, &at);
	if (!before && at)
		return cur->load;
	r = seg_rise(c, cur, 0);
	return r == NONE ? NONE : cur->load + r;
}

/* ---- channel 0's interrupt line ----------------------------------------- */

static bool tick_faulted(struct mb_pit *pit, struct mb_fault_site *fs);
static void deliver_level(struct mb_pit *pit);

/* Modes 0 and 1 hold the line at OUT (a level that changes on writes and
 * at terminal count); the periodic and strobe modes pulse it at each
 * rising edge, which is all the edge-triggered IRQ0 sees anyway. */
static void irq_update(struct mb_pit *pit, uint64_t t)
{
	struct chan *c = &pit->ch[0];
	uint32_t ce;
	bool out;
	eval(c, t, &ce, &out);
	bool want = c->mode <= 1 && out;
	if (want != pit->line) {
		pit->line = want;
		struct mb_fault_site *fs =
			want ? atomic_load_explicit(&pit->fault, memory_order_acquire) : NULL;
		if (__builtin_expect(fs != NULL, 0) && tick_faulted(pit, fs)) {
			/* the OUT edge is taken; the line stays low */
		} else if (want) {
			deliver_level(pit);
		} else {
			mb_irq_set(&pit->irq, 0);
		}
	}
	uint64_t r = next_rise(c, t);
	pit->armed_at = t;
	if (pit->timer)
		pit->clock->timer_mod(pit->timer,
				      r == NONE ? 0 : tick_to_ns(r - pit->base));
}

static void arm_late(struct mb_pit *pit)
{
	uint64_t first = 0;
	for (unsigned i = 0; i < pit->nlate; i++)
		if (!first || pit->late[i] < first)
			first = pit->late[i];
	pit->clock->timer_mod(pit->late_timer, first);
}

/* A tick through the fault site (pit->lock held): true when the fault
 * took it. pit.drop consumes it: not delivered and, with re-injection,
 * not owed either (the PIT stops waiting for its ack, so the backlog
 * does not bring it back). pit.late keeps it for ms of guest time. */
static bool tick_faulted(struct mb_pit *pit, struct mb_fault_site *fs)
{
	struct mb_fault_verdict v;
	mb_fault_pit_decide(fs, &v);
	if (v.drop) {
		pit->lost++;
		pit->inflight = false;
		return true;
	}
	if (v.delay_ms && pit->late_timer && pit->nlate < LATE_MAX) {
		pit->late[pit->nlate++] =
			pit->clock->now(pit->clock) + (uint64_t)v.delay_ms * 1000000u;
		arm_late(pit);
		return true;
	}
	return false;
}

static void deliver(struct mb_pit *pit)
{
	pit->edges++;
	mb_irq_pulse(&pit->irq);
}

/* Modes 0/1: OUT rose and the line follows it (a tick too). */
static void deliver_level(struct mb_pit *pit)
{
	pit->edges++;
	mb_pit_observer *ob = atomic_load_explicit(&pit->obs, memory_order_acquire);
	if (__builtin_expect(ob != NULL, 0))
		ob(pit->obs_ctx, pit, pit->edges, false);
	mb_irq_set(&pit->irq, 1);
}

static void pulse(struct mb_pit *pit)
{
	struct mb_fault_site *fs = atomic_load_explicit(&pit->fault, memory_order_acquire);
	if (__builtin_expect(fs != NULL, 0) && tick_faulted(pit, fs))
		return;
	/* An m:on("pit") function is asked: mb_pit_answer delivers it. */
	mb_pit_observer *ob = atomic_load_explicit(&pit->obs, memory_order_acquire);
	if (__builtin_expect(ob != NULL, 0) && ob(pit->obs_ctx, pit, pit->edges + 1, true))
		return;
	deliver(pit);
}

void mb_pit_answer(struct mb_pit *pit, const struct mb_fault_verdict *v)
{
	pthread_mutex_lock(&pit->lock);
	if (v && v->drop) { /* as pit.drop: consumed, not owed */
		pit->lost++;
		pit->inflight = false;
	} else if (v && v->delay_ms && pit->nlate < LATE_MAX) {
		pit->late[pit->nlate++] =
			pit->clock->now(pit->clock) + (uint64_t)v->delay_ms * 1000000u;
		arm_late(pit);
	} else {
		deliver(pit);
	}
	pthread_mutex_unlock(&pit->lock);
}

/* The late ticks that are due, each a pulse (late ticks due together
 * merge in the controller, as late timer ticks do). */
static void on_late(void *opaque)
{
	struct mb_pit *pit = opaque;
	pthread_mutex_lock(&pit->lock);
	uint64_t now = pit->clock->now(pit->clock);
	for (unsigned i = 0; i < pit->nlate;) {
		if (pit->late[i] <= now) {
			pit->late[i] = pit->late[--pit->nlate];
			deliver(pit);
			mb_pit_observer *ob =
				atomic_load_explicit(&pit->obs, memory_order_acquire);
			if (ob) /* told, not asked: it was decided already */
				ob(pit->obs_ctx, pit, pit->edges, false);
		} else {
			i++;
		}
	}
	arm_late(pit);
	pthread_mutex_unlock(&pit->lock);
}

static void on_timer(void *opaque)
{
	struct mb_pit *pit = opaque;
	pthread_mutex_lock(&pit->lock);
	uint64_t t = now_tick(pit);
	struct chan *c = &pit->ch[0];
	uint32_t due = 0;
	if (c->mode > 1)
		for (uint64_t r = next_rise(c, pit->armed_at);
		     r != NONE && r <= t && due <= BACKLOG_MAX; r = next_rise(c, r))
			due++;
	if (!pit->reinject) {
		/* One pulse even if the timer ran late by several periods:
		 * the PIC would merge them into one request anyway. */
		if (due)
			pulse(pit);
	} else if (due) {
		pit->backlog += due;
		if (pit->backlog > BACKLOG_MAX)
			pit->backlog = BACKLOG_MAX;
		/* An unacknowledged pulse for too long was lost (the guest
		 * re-initialised its PIC, say): stop waiting for it. */
		if (pit->inflight && ++pit->stale > STALE_MAX)
			pit->inflight = false;
		if (!pit->inflight) {
			pit->backlog--;
			pit->inflight = true;
			pit->stale = 0;
			pulse(pit);
		}
	}
	irq_update(pit, t);
	pthread_mutex_unlock(&pit->lock);
}

void mb_pit_irq_acked(void *opaque)
{
	struct mb_pit *pit = opaque;
	pthread_mutex_lock(&pit->lock);
	pit->inflight = false;
	if (pit->reinject && pit->backlog) {
		pit->backlog--;
		pit->inflight = true;
		pit->stale = 0;
		pulse(pit);
	}
	pthread_mutex_unlock(&pit->lock);
}

void mb_pit_set_reinject(struct mb_pit *pit, bool on)
{
	pthread_mutex_lock(&pit->lock);
	pit->reinject = on;
	pit->backlog = 0;
	pit->inflight = false;
	pthread_mutex_unlock(&pit->lock);
}

/* ---- programming ------------------------------------------------------ */

static void set_seg(struct chan *c, uint64_t t, uint32_t n, uint64_t load,
		    bool keep_prev)
{
	uint32_t ce;
	bool out;
	eval(c, t, &ce, &out);
	c->idle_ce = ce;
	c->prev = c->cur;
	c->prev.valid = keep_prev && c->cur.valid;
	memset(&c->cur, 0, sizeof(c->cur));
	c->cur.valid = true;
	c->cur.n = c->cur.held = n;
	c->cur.load = load;
	c->cur.frozen = !c->gate && c->mode != 1 && c->mode != 5;
}

/* Stop counting, keeping CE (gate low in modes 0, 2, 3, 4; mode 0's
 * first LSB of a two-byte count). */
static void freeze(struct chan *c, uint64_t t, bool keep_done)
{
	struct seg *s = &c->cur;
	if (!s->valid || s->frozen)
		return;
	if (t < s->load) {
		s->frozen = true;
		s->held = s->n;
		return;
	}
	uint32_t ce;
	bool out;
	eval_seg(c, s, t, &ce, &out);
	bool done = keep_done && (c->mode == 0 ? out : t - s->load >= s->n);
	memset(s, 0, sizeof(*s));
	s->valid = s->frozen = true;
	s->held = s->n = ce;
	s->load = t;
	s->done = done;
	c->prev.valid = false;
}

/* A complete count was written (data sheet, "Counter Loading"). */
static void load_count(struct chan *c, uint64_t t, uint16_t raw)
{
	uint32_t n = c->bcd ? from_bcd(raw) : raw;
	c->cr = n ? n : modulus(c);
	switch (c->mode) {
	case 0: /* OUT low at once, new count on the next CLK */
	case 4: /* new count on the next CLK, the old goes on until then */
		set_seg(c, t, c->cr, t + 1, c->mode == 4);
		c->null_until = t + 1;
		break;
	case 1:
	case 5: /* waits for a gate trigger */
		c->null_until = NONE;
		break;
	default: /* 2, 3 */
		if (!c->cur.valid) {
			set_seg(c, t, c->cr, t + 1, false);
			c->null_until = t + 1;
		} else if (c->cur.frozen) {
			c->null_until = NONE; /* loads at the gate trigger */
		} else if (t < c->cur.load) {
			c->cur.n = c->cr; /* replaces a reload not yet done */
			if (c->cur.off)
				c->cur.off = (c->cr + 1) / 2;
			c->null_until = c->cur.load;
		} else {
			/* Mode 2: loaded at the end of the current cycle;
			 * mode 3: at the end of the current half-cycle. */
			struct seg *s = &c->cur;
			uint64_t kk = t - s->load + s->off, ph = kk % s->n;
			uint64_t hi = (s->n + 1) / 2, end;
			uint32_t off = 0;
			if (c->mode == 3 && ph < hi) {
				end = kk - ph + hi;
				off = (c->cr + 1) / 2;
			} else {
				end = kk - ph + s->n;
			}
			uint64_t load = s->load + end - s->off;
			set_seg(c, t, c->cr, load, true);
			c->cur.off = off;
			c->null_until = load;
		}
		break;
	}
}

static void control_word(struct mb_pit *pit, uint8_t v, uint64_t t)
{
	unsigned sc = v >> 6;
	if (sc == 3) { /* read-back (data sheet, "Read-Back Command") */
		for (unsigned i = 0; i < 3; i++) {
			struct chan *c = &pit->ch[i];
			if (!(v & (2u << i)))
				continue;
			uint32_t ce;
			bool out;
			eval(c, t, &ce, &out);
			if (!(v & 0x20) && !c->latched) {
				c->latched = true;
				c->latch_msb = false;
				c->latch = c->bcd ? to_bcd(ce) : (uint16_t)ce;
			}
			if (!(v & 0x10) && !c->status_latched) {
				c->status_latched = true;
				c->status = (uint8_t)(out << 7 |
					(t < c->null_until) << 6 |
					c->rw << 4 | c->raw_mode << 1 | c->bcd);
			}
		}
		return;
	}
	struct chan *c = &pit->ch[sc];
	if (!(v & 0x30)) { /* counter latch: a second one is ignored */
		if (!c->latched) {
			uint32_t ce;
			bool out;
			eval(c, t, &ce, &out);
			c->latched = true;
			c->latch_msb = false;
			c->latch = c->bcd ? to_bcd(ce) : (uint16_t)ce;
		}
		return;
	}
	uint32_t ce;
	bool out;
	eval(c, t, &ce, &out);
	c->idle_ce = ce;
	c->rw = v >> 4 & 3;
	c->raw_mode = v >> 1 & 7;
	c->mode = c->raw_mode > 5 ? c->raw_mode - 4 : c->raw_mode;
	c->bcd = v & 1;
	c->cur.valid = c->prev.valid = false;
	c->wmsb = c->rmsb = false;
	c->latched = c->status_latched = false;
	c->null_until = NONE;
}

static void counter_write(struct chan *c, uint8_t v, uint64_t t)
{
	switch (c->rw) {
	case 1:
		load_count(c, t, v);
		break;
	case 2:
		load_count(c, t, (uint16_t)(v << 8));
		break;
	case 3:
		if (!c->wmsb) {
			c->wlsb = v;
			c->wmsb = true;
			/* Mode 0: writing the first byte stops counting and
			 * sets OUT low at once. */
			if (c->mode == 0 && c->cur.valid) {
				freeze(c, t, false);
				c->cur.done = false;
			}
		} else {
			c->wmsb = false;
			load_count(c, t, (uint16_t)(c->wlsb | v << 8));
		}
		break;
	}
}

static uint8_t counter_read(struct chan *c, uint64_t t)
{
	if (c->status_latched) {
		c->status_latched = false;
		return c->status;
	}
	uint16_t v;
	bool *msb;
	if (c->latched) {
		v = c->latch;
		msb = &c->latch_msb;
	} else {
		uint32_t ce;
		bool out;
		eval(c, t, &ce, &out);
		v = c->bcd ? to_bcd(ce) : (uint16_t)ce;
		msb = &c->rmsb;
	}
	uint8_t r;
	if (c->rw == 3) {
		r = *msb ? v >> 8 : v & 0xff;
		*msb = !*msb;
		if (c->latched && !*msb)
			c->latched = false;
	} else {
		r = c->rw == 2 ? v >> 8 : v & 0xff;
		c->latched = false;
	}
	return r;
}

static void set_gate(struct chan *c, bool level, uint64_t t)
{
	if (level == c->gate)
		return;
	c->gate = level;
	switch (c->mode) {
	case 0:
	case 4: /* gate low suspends counting, high resumes it */
		if (!level) {
			freeze(c, t, true);
		} else if (c->cur.valid && c->cur.frozen) {
			c->cur.frozen = false;
			c->cur.n = c->cur.held;
			if (c->cur.load < t)
				c->cur.load = t;
		}
		break;
	case 2:
	case 3: /* low: OUT high, stop; rising edge: reload next CLK */
		if (!level) {
			freeze(c, t, false);
		} else if (c->cur.valid) {
			set_seg(c, t, c->cr, t + 1, true);
			if (c->null_until > t + 1)
				c->null_until = t + 1;
		}
		break;
	default: /* 1, 5: the rising edge triggers, next CLK loads */
		if (level) {
			set_seg(c, t, c->cr, t + 1, true);
			if (c->null_until > t + 1)
				c->null_until = t + 1;
		}
		break;
	}
}

/* ---- ports ----------------------------------------------------------- */

static void pit_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_pit *pit = dev;
	const uint8_t *p = data;
	pthread_mutex_lock(&pit->lock);
	uint64_t t = now_tick(pit);
	for (unsigned i = 0; i < size && off + i < 4; i++) {
		if (off + i == 3)
			control_word(pit, p[i], t);
		else
			counter_write(&pit->ch[off + i], p[i], t);
	}
	irq_update(pit, t);
	pthread_mutex_unlock(&pit->lock);
}

static void pit_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_pit *pit = dev;
	uint8_t *p = data;
	pthread_mutex_lock(&pit->lock);
	uint64_t t = now_tick(pit);
	for (unsigned i = 0; i < size; i++)
		/* the control register cannot be read (82C54: no-op) */
		p[i] = off + i < 3 ? counter_read(&pit->ch[off + i], t) : 0xff;
	pthread_mutex_unlock(&pit->lock);
}

/* Port 0x61 (PC/AT system control port B): 0 gate2, 1 speaker data,
 * 2-3 parity/channel check enables (kept), 4 refresh toggle (flips every
 * 15.085 us), 5 OUT2, 6-7 error status (never set). */
static uint8_t p61_value(struct mb_pit *pit, uint64_t ns)
{
	uint32_t ce;
	bool out2;
	eval(&pit->ch[2], ns_to_tick(ns) + pit->base, &ce, &out2);
	return (uint8_t)((pit->p61 & 0x0f) | (ns / 15085 & 1) << 4 |
			 out2 << 5);
}

static void p61_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_pit *pit = dev;
	pthread_mutex_lock(&pit->lock);
	uint8_t v = p61_value(pit, pit->clock->now(pit->clock));
	pthread_mutex_unlock(&pit->lock);
	memset(data, 0xff, size);
	*(uint8_t *)data = v;
}

static void p61_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_pit *pit = dev;
	uint8_t v = *(const uint8_t *)data;
	pthread_mutex_lock(&pit->lock);
	pit->p61 = v & 0x0f;
	set_gate(&pit->ch[2], v & 1, now_tick(pit));
	pthread_mutex_unlock(&pit->lock);
}

const struct mb_io_ops mb_pit_ops = { pit_read, pit_write };
const struct mb_io_ops mb_pit_port61_ops = { p61_read, p61_write };

void mb_pit_set_gate(struct mb_pit *pit, unsigned ch, bool level)
{
	if (ch > 2)
		return;
	pthread_mutex_lock(&pit->lock);
	uint64_t t = now_tick(pit);
	set_gate(&pit->ch[ch], level, t);
	if (ch == 2)
		pit->p61 = (uint8_t)((pit->p61 & ~1u) | level);
	irq_update(pit, t);
	pthread_mutex_unlock(&pit->lock);
}

/* ---- life cycle and state -------------------------------------------- */

struct mb_pit *mb_pit_new(const struct mb_pit_config *cfg)
{
	struct mb_pit *pit = calloc(1, sizeof(*pit));
	if (!pit)
		return NULL;
	pthread_mutex_init(&pit->lock, NULL);
	pit->clock = cfg->clock;
	pit->irq = cfg->irq;
	for (unsigned i = 0; i < 3; i++) {
		struct chan *c = &pit->ch[i];
		c->gate = i < 2; /* channel 2's gate starts low (port 0x61) */
		c->rw = 3;
		c->cr = 65536;
		c->null_until = NONE;
	}
	pit->timer = pit->clock->timer_new(pit->clock, on_timer, pit);
	if (!pit->timer) {
		pthread_mutex_destroy(&pit->lock);
		free(pit);
		return NULL;
	}
	return pit;
}

int mb_pit_set_fault(struct mb_pit *pit, struct mb_fault_site *s)
{
	if (!pit->late_timer &&
	    !(pit->late_timer = pit->clock->timer_new(pit->clock, on_late, pit)))
		return mb_seterr(-ENOMEM, "pit8254: out of timers");
	return mb_fault_site_install(&pit->fault, s);
}

int mb_pit_set_observer(struct mb_pit *pit, mb_pit_observer *fn,
			mb_fault_ask_cancel *cancel, void *ctx)
{
	mb_pit_observer *old = atomic_load(&pit->obs);
	if (old && (old != fn || pit->obs_ctx != ctx))
		return mb_seterr(-EBUSY, "pit8254: already observed");
	/* an answer may make a tick late */
	if (!pit->late_timer &&
	    !(pit->late_timer = pit->clock->timer_new(pit->clock, on_late, pit)))
		return mb_seterr(-ENOMEM, "pit8254: out of timers");
	pit->obs_ctx = ctx;
	pit->obs_cancel = cancel;
	atomic_store_explicit(&pit->obs, fn, memory_order_release);
	return 0;
}

uint64_t mb_pit_lost_ticks(struct mb_pit *pit)
{
	pthread_mutex_lock(&pit->lock);
	uint64_t n = pit->lost;
	pthread_mutex_unlock(&pit->lock);
	return n;
}

void mb_pit_free(struct mb_pit *pit)
{
	if (!pit)
		return;
	mb_pit_observer *ob = atomic_load(&pit->obs);
	if (ob && pit->obs_cancel) /* no answer after this */
		pit->obs_cancel(pit->obs_ctx, pit);
	pit->clock->timer_free(pit->timer);
	if (pit->late_timer)
		pit->clock->timer_free(pit->late_timer);
	mb_fault_site_put(atomic_load(&pit->fault));
	pthread_mutex_destroy(&pit->lock);
	free(pit);
}

MB_STATE_DESC(mb_pit_seg_state, MB_PIT_SEG_STATE, MB_PIT_STATE_VERSION);
MB_STATE_DESC(mb_pit_channel_state, MB_PIT_CHANNEL_STATE, MB_PIT_STATE_VERSION);
MB_STATE_DESC(mb_pit_state, MB_PIT_STATE, MB_PIT_STATE_VERSION);

static void seg_save(const struct seg *g, uint64_t t, struct mb_pit_seg_state *s)
{
	s->valid = g->valid;
	s->frozen = g->frozen;
	s->done = g->done;
	s->n = g->n;
	s->held = g->held;
	s->off = g->off;
	s->load_in = (int64_t)(g->load - t);
}

void mb_pit_save(struct mb_pit *pit, struct mb_pit_state *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&pit->lock);
	uint64_t ns = pit->clock->now(pit->clock), t = ns_to_tick(ns) + pit->base;
	for (unsigned i = 0; i < 3; i++) {
		const struct chan *c = &pit->ch[i];
		struct mb_pit_channel_state *s = &st->channels[i];
		uint32_t ce;
		bool out;
		eval(c, t, &ce, &out);
		s->mode = c->mode;
		s->raw_mode = c->raw_mode;
		s->rw = c->rw;
		s->bcd = c->bcd;
		s->gate = c->gate;
		s->reload = c->cr;
		seg_save(&c->cur, t, &s->cur);
		seg_save(&c->prev, t, &s->prev);
		s->idle_count = c->idle_ce;
		s->write_msb = c->wmsb;
		s->write_lsb = c->wlsb;
		s->read_msb = c->rmsb;
		s->count_latched = c->latched;
		s->latch_msb = c->latch_msb;
		s->latch = c->latch;
		s->status_latched = c->status_latched;
		s->status = c->status;
		s->null_ticks = c->null_until == NONE ? -1
			: c->null_until > t ? (int64_t)(c->null_until - t) : 0;
		s->out = out;
		s->null_count = t < c->null_until;
		s->count = c->bcd ? to_bcd(ce) : (uint16_t)ce;
	}
	st->port61_bits = pit->p61;
	st->irq_level = pit->line;
	st->armed_ago = t - pit->armed_at;
	st->backlog = pit->backlog;
	st->inflight = pit->inflight;
	st->stale = pit->stale;
	st->port61 = p61_value(pit, ns);
	uint64_t r = next_rise(&pit->ch[0], pit->armed_at);
	if (r != NONE)
		st->timer_ns = r > t ? tick_to_ns(r - pit->base) - ns : 0;
	st->irq_edges = pit->edges;
	pthread_mutex_unlock(&pit->lock);
}

/* Loaded times stay within +-2^62 ticks (~120000 years): no sum overflows. */
#define TICKS_MAX (INT64_C(1) << 62)

static int seg_check(const struct mb_pit_seg_state *s, unsigned i,
		     const char *which, uint8_t mode)
{
	if (!s->valid)
		return 0;
	if (s->n > 65536 || s->held > 65536 || s->off > 65536)
		return mb_seterr(-EINVAL, "channels[%u].%s.%s: more than 65536", i,
				 which, s->n > 65536 ? "n" : s->held > 65536 ?
				 "held" : "off");
	if (!s->frozen && (mode == 2 || mode == 3) && s->n == 0)
		return mb_seterr(-EINVAL, "channels[%u].%s.n: 0 in mode %u (a "
				 "count is 1-65536)", i, which, mode);
	if (s->load_in > TICKS_MAX || s->load_in < -TICKS_MAX)
		return mb_seterr(-EINVAL, "channels[%u].%s.load_in: %lld ticks is "
				 "too far", i, which, (long long)s->load_in);
	return 0;
}

static int check(const struct mb_pit_state *st)
{
	int rc;
	for (unsigned i = 0; i < 3; i++) {
		const struct mb_pit_channel_state *s = &st->channels[i];
		unsigned n = i + 1; /* as Lua numbers them */
		if (s->mode > 5)
			return mb_seterr(-EINVAL, "channels[%u].mode: %u is not 0-5", n,
					 s->mode);
		if (s->raw_mode > 7 ||
		    (s->raw_mode > 5 ? s->raw_mode - 4 : s->raw_mode) != s->mode)
			return mb_seterr(-EINVAL, "channels[%u].raw_mode: %u is not "
					 "mode %u as written", n, s->raw_mode, s->mode);
		if (s->rw < 1 || s->rw > 3)
			return mb_seterr(-EINVAL, "channels[%u].rw: %u is not 1-3", n,
					 s->rw);
		/* Not 1-10000 with BCD: a control word keeps the count register
		 * (found by fuzz/fuzz_devregs.c). */
		if (s->reload < 1 || s->reload > 65536)
			return mb_seterr(-EINVAL, "channels[%u].reload: %u is not "
					 "1-65536", n, s->reload);
		/* A count of 0 loads 65536 (sec. "Counter loading"): the
		 * counting element can hold it until its first decrement. */
		if (s->idle_count > 65536)
			return mb_seterr(-EINVAL, "channels[%u].idle_count: %u is more "
					 "than 65536", n, s->idle_count);
		if (s->null_ticks < -1 || s->null_ticks > TICKS_MAX)
			return mb_seterr(-EINVAL, "channels[%u].null_ticks: %lld is not "
					 "-1 or 0-2^62", n, (long long)s->null_ticks);
		if ((rc = seg_check(&s->cur, n, "cur", s->mode)) ||
		    (rc = seg_check(&s->prev, n, "prev", s->mode)))
			return rc;
	}
	if (st->port61_bits & ~0x0f)
		return mb_seterr(-EINVAL, "port61_bits: 0x%x has bits beyond 0x0f",
				 st->port61_bits);
	if (st->armed_ago > (uint64_t)TICKS_MAX)
		return mb_seterr(-EINVAL, "armed_ago: %llu ticks is too far",
				 (unsigned long long)st->armed_ago);
	if (st->backlog > BACKLOG_MAX)
		return mb_seterr(-EINVAL, "backlog: %u is more than %u", st->backlog,
				 BACKLOG_MAX);
	return 0;
}

static void seg_load(struct seg *g, uint64_t t, const struct mb_pit_seg_state *s)
{
	g->valid = s->valid;
	g->frozen = s->frozen;
	g->done = s->done;
	g->n = s->n;
	g->held = s->held;
	g->off = s->off;
	g->load = t + (uint64_t)s->load_in;
}

int mb_pit_load(struct mb_pit *pit, const struct mb_pit_state *st)
{
	int rc = check(st);
	if (rc)
		return rc;
	pthread_mutex_lock(&pit->lock);
	/* The PIT's own time starts late enough that every time in the past
	 * of the state is a tick >= 0. */
	uint64_t t0 = ns_to_tick(pit->clock->now(pit->clock)), need = st->armed_ago;
	for (unsigned i = 0; i < 3; i++) {
		const struct mb_pit_channel_state *s = &st->channels[i];
		if (s->cur.load_in < 0 && (uint64_t)-s->cur.load_in > need)
			need = (uint64_t)-s->cur.load_in;
		if (s->prev.load_in < 0 && (uint64_t)-s->prev.load_in > need)
			need = (uint64_t)-s->prev.load_in;
	}
	pit->base = need > t0 ? need - t0 : 0;
	uint64_t t = t0 + pit->base;
	for (unsigned i = 0; i < 3; i++) {
		struct chan *c = &pit->ch[i];
		const struct mb_pit_channel_state *s = &st->channels[i];
		c->mode = s->mode;
		c->raw_mode = s->raw_mode;
		c->rw = s->rw;
		c->bcd = s->bcd;
		c->gate = s->gate;
		c->cr = s->reload;
		seg_load(&c->cur, t, &s->cur);
		seg_load(&c->prev, t, &s->prev);
		c->idle_ce = s->idle_count;
		c->wmsb = s->write_msb;
		c->wlsb = s->write_lsb;
		c->rmsb = s->read_msb;
		c->latched = s->count_latched;
		c->latch_msb = s->latch_msb;
		c->latch = s->latch;
		c->status_latched = s->status_latched;
		c->status = s->status;
		c->null_until = s->null_ticks < 0 ? NONE : t + (uint64_t)s->null_ticks;
	}
	pit->p61 = st->port61_bits;
	pit->line = st->irq_level;
	pit->armed_at = t - st->armed_ago;
	pit->backlog = st->backlog;
	pit->inflight = st->inflight;
	pit->stale = st->stale;
	pit->edges = st->irq_edges;
	mb_irq_set(&pit->irq, pit->line);
	/* The edge due next, counted from where the saved PIT left off: one
	 * already past fires at once, and on_timer counts what it missed. */
	uint64_t r = next_rise(&pit->ch[0], pit->armed_at);
	if (pit->timer)
		pit->clock->timer_mod(pit->timer,
				      r == NONE ? 0 : tick_to_ns(r - pit->base));
	pthread_mutex_unlock(&pit->lock);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

static int dev_save(void *impl, void *st)
{
	mb_pit_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_pit_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_pit_free(impl);
}

static const struct mb_device_ops pit_dev_ops;

struct mb_pit *mb_pit_of_device(struct mb_device *d)
{
	return d && mb_device_ops_of(d) == &pit_dev_ops ? mb_device_impl(d) : NULL;
}

static const struct mb_device_ops pit_dev_ops = {
	.kind = "pit8254", .state = &mb_pit_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

/* KVM's PIT, listed so that every PC has a "pit" (its state is KVM's). */
static const struct mb_device_ops kernel_pit_ops = { .kind = "pit8254" };

int mb_pit_attach(struct mb_machine *m, const struct mb_pit_attach_config *cfg,
		  struct mb_device **out)
{
	static const struct mb_pit_attach_config none;
	if (!cfg)
		cfg = &none;
	struct mb_device *d;
	int rc;
	if (mb_machine_kernel_pit(m)) {
		if ((rc = mb_device_new(m, cfg->name, "pit", &kernel_pit_ops, NULL,
					&d)))
			return rc;
		*out = d;
		return 0;
	}
	/* The line is filled in by mb_device_irq, before any port exists. */
	struct mb_pit_config pc = { .clock = mb_machine_clock(m) };
	struct mb_pit *pit = mb_pit_new(&pc);
	if (!pit)
		return mb_seterr(-ENOMEM, "pit8254: out of memory");
	if ((rc = mb_device_new(m, cfg->name, "pit", &pit_dev_ops, pit, &d)))
		return rc;
	if ((rc = mb_device_irq(d, (int)cfg->irq, &pit->irq)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0x40, 4, &mb_pit_ops, pit)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0x61, 1, &mb_pit_port61_ops, pit))) {
		mb_device_remove(d);
		return rc;
	}
	/* With moonbox's PIC, no tick is lost to a late timer or busy guest. */
	if (!cfg->no_reinject &&
	    mb_machine_irq_on_ack(m, cfg->irq, mb_pit_irq_acked, pit) == 0)
		mb_pit_set_reinject(pit, true);
	*out = d;
	return 0;
}
