/*
 * Late interrupts (F.irq.delay, docs/faults.md): a rising edge the fault
 * site delays is kept here and driven on a timer of the machine's clock
 * (guest-visible time: it stands still while the machine is held). A
 * fixed pool, made when the machine's lines first get a fault site (on
 * the thread that runs Lua), so that deciding allocates nothing.
 */
#include <errno.h>
#include <stdlib.h>

#include "core/internal.h"

#define NDELAYS 64 /* edges in flight at once; more are delivered on time */

struct slot {
	struct mb_irq_delays *d;
	struct mb_timer *t;
	unsigned line;
	bool busy;
};

struct mb_irq_delays {
	struct mb_machine *m;
	pthread_mutex_t lock; /* busy flags */
	_Atomic uint8_t level[64]; /* what the devices drive, per line */
	struct slot s[NDELAYS];
};

static void fire(void *opaque)
{
	struct slot *sl = opaque;
	struct mb_irq_delays *d = sl->d;
	pthread_mutex_lock(&d->lock);
	unsigned line = sl->line;
	sl->busy = false;
	pthread_mutex_unlock(&d->lock);
	/* Raised, then left where the device drives it now: a device that
	 * lowered the line meanwhile gets a pulse (an edge-triggered input
	 * latches it all the same). */
	mb_machine_irq_edge(d->m, line,
			    atomic_load_explicit(&d->level[line & 63], memory_order_relaxed));
}

int mb_irq_delays_init(struct mb_machine *m)
{
	if (m->irq_delays)
		return 0;
	struct mb_irq_delays *d = calloc(1, sizeof *d);
	if (!d)
		return mb_seterr(-ENOMEM, "faults: out of memory");
	d->m = m;
	pthread_mutex_init(&d->lock, NULL);
	const struct mb_clock *c = mb_machine_clock(m);
	for (unsigned i = 0; i < NDELAYS; i++) {
		d->s[i].d = d;
		if (!(d->s[i].t = c->timer_new(c, fire, &d->s[i]))) {
			m->irq_delays = d;
			mb_irq_delays_free(m);
			return mb_seterr(-ENOMEM, "faults: out of timers");
		}
	}
	m->irq_delays = d;
	return 0;
}

void mb_irq_delays_free(struct mb_machine *m)
{
	struct mb_irq_delays *d = m->irq_delays;
	if (!d)
		return;
	const struct mb_clock *c = mb_machine_clock(m);
	for (unsigned i = 0; i < NDELAYS; i++)
		if (d->s[i].t)
			c->timer_free(d->s[i].t);
	pthread_mutex_destroy(&d->lock);
	free(d);
	m->irq_delays = NULL;
}

void mb_irq_delays_level(struct mb_machine *m, unsigned line, int level)
{
	if (m->irq_delays)
		atomic_store_explicit(&m->irq_delays->level[line & 63], level != 0,
				      memory_order_relaxed);
}

bool mb_irq_delay(struct mb_machine *m, unsigned line, uint32_t ms)
{
	struct mb_irq_delays *d = m->irq_delays;
	if (!d)
		return false;
	struct slot *sl = NULL;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < NDELAYS && !sl; i++)
		if (!d->s[i].busy)
			sl = &d->s[i], sl->busy = true, sl->line = line;
	pthread_mutex_unlock(&d->lock);
	if (!sl)
		return false;
	const struct mb_clock *c = mb_machine_clock(m);
	c->timer_mod(sl->t, c->now(c) + (uint64_t)ms * 1000000u);
	return true;
}
