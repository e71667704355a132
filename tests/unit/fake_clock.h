/*
 * A hand-driven clock for unit tests: now() returns a settable time and
 * fake_clock_advance() fires due timers in deadline order, each at its own
 * deadline (now() inside a callback returns that deadline).
 *
 * With `late` set, it is a busy host instead: every timer fires `late` ns
 * after its deadline (now() inside the callback returns deadline + late),
 * so a periodic device finds several of its periods already past when its
 * callback runs.
 */
#ifndef FAKE_CLOCK_H
#define FAKE_CLOCK_H

#include "moonbox.h"

struct fake_clock {
	struct mb_clock clock; /* first: &fc->clock is what devices get */
	uint64_t now;
	struct mb_timer *timers; /* every timer made, armed or not */
	uint64_t fired;          /* callbacks run so far */
	uint64_t late;           /* ns each timer fires after its deadline */
};

struct fake_clock *fake_clock_new(uint64_t start_ns);
void fake_clock_free(struct fake_clock *fc);
/* Move time forward by ns, firing every timer due on the way (due: its
 * deadline + late is not after the new time). */
void fake_clock_advance(struct fake_clock *fc, uint64_t ns);
/* Deadline of the earliest armed timer, or 0 when none is armed. */
uint64_t fake_clock_next(const struct fake_clock *fc);
/* Number of timers currently armed. */
unsigned fake_clock_armed(const struct fake_clock *fc);

/* An interrupt line recorder to hand to devices as their struct mb_irq. */
struct fake_irq {
	int level;
	unsigned raises, lowers; /* transitions seen */
};

static inline void fake_irq_set(void *ctx, unsigned line, int level)
{
	struct fake_irq *fi = ctx;
	if (level && !fi->level)
		fi->raises++;
	if (!level && fi->level)
		fi->lowers++;
	fi->level = level != 0;
}

static inline struct mb_irq fake_irq_line(struct fake_irq *fi)
{
	struct mb_irq irq = { .set = fake_irq_set, .ctx = fi, .line = 0 };
	return irq;
}

#endif
