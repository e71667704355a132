/* The hand-driven clock of fake_clock.h. */
#include <stdlib.h>

#include "fake_clock.h"

struct mb_timer {
	struct fake_clock *fc;
	void (*cb)(void *opaque);
	void *opaque;
	uint64_t deadline; /* 0: disarmed */
	struct mb_timer *next;
};

static uint64_t fc_now(const struct mb_clock *c)
{
	return ((const struct fake_clock *)c->ctx)->now;
}

static struct mb_timer *fc_timer_new(const struct mb_clock *c,
				     void (*cb)(void *opaque), void *opaque)
{
	struct fake_clock *fc = c->ctx;
	struct mb_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->fc = fc;
	t->cb = cb;
	t->opaque = opaque;
	t->next = fc->timers;
	fc->timers = t;
	return t;
}

static void fc_timer_mod(struct mb_timer *t, uint64_t deadline)
{
	t->deadline = deadline;
}

static void fc_timer_free(struct mb_timer *t)
{
	if (!t)
		return;
	struct mb_timer **pp = &t->fc->timers;
	while (*pp && *pp != t)
		pp = &(*pp)->next;
	if (*pp)
		*pp = t->next;
	free(t);
}

struct fake_clock *fake_clock_new(uint64_t start_ns)
{
	struct fake_clock *fc = calloc(1, sizeof(*fc));
	if (!fc)
		return NULL;
	fc->now = start_ns;
	fc->clock.now = fc_now;
	fc->clock.timer_new = fc_timer_new;
	fc->clock.timer_mod = fc_timer_mod;
	fc->clock.timer_free = fc_timer_free;
	fc->clock.ctx = fc;
	return fc;
}

void fake_clock_free(struct fake_clock *fc)
{
	if (!fc)
		return;
	while (fc->timers) {
		struct mb_timer *t = fc->timers;
		fc->timers = t->next;
		free(t);
	}
	free(fc);
}

static struct mb_timer *earliest(const struct fake_clock *fc)
{
	struct mb_timer *best = NULL;
	for (struct mb_timer *t = fc->timers; t; t = t->next)
		if (t->deadline && (!best || t->deadline < best->deadline))
			best = t;
	return best;
}

uint64_t fake_clock_next(const struct fake_clock *fc)
{
	struct mb_timer *t = earliest(fc);
	return t ? t->deadline : 0;
}

unsigned fake_clock_armed(const struct fake_clock *fc)
{
	unsigned n = 0;
	for (struct mb_timer *t = fc->timers; t; t = t->next)
		n += t->deadline != 0;
	return n;
}

void fake_clock_advance(struct fake_clock *fc, uint64_t ns)
{
	uint64_t target = fc->now + ns;
	struct mb_timer *t;
	/* Every timer is late by the same amount: deadline order is firing
	 * order. */
	while ((t = earliest(fc)) && t->deadline + fc->late <= target) {
		/* A deadline in the past fires "now", as a real clock would. */
		if (t->deadline + fc->late > fc->now)
			fc->now = t->deadline + fc->late;
		t->deadline = 0;
		fc->fired++;
		t->cb(t->opaque);
	}
	fc->now = target;
}
