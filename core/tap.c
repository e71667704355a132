/*
 * Bus taps (moonbox/tap.h). The vCPU reads one published, immutable set
 * of taps; adding or removing one copies the set and publishes the copy
 * (the bus's own scheme), so a vCPU never takes a lock and never sees a
 * half-built set. Old sets and every tap entry stay allocated until the
 * machine goes, because a vCPU may still be scanning an old set.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

struct tapent {
	int id;
	bool removed;
	enum mb_space space;
	uint64_t base, len;
	unsigned access;
	mb_tap_fn fn;
	void *ctx;
	void (*free_ctx)(void *);
	_Atomic uint64_t count;
	struct tapent *all; /* every entry the machine made */
};

struct mb_tapset {
	unsigned n;
	struct tapent *t[MB_TAP_MAX];
	struct mb_tapset *old; /* sets this one replaced */
};

struct taps {
	pthread_mutex_t lock;
	int next_id;
	struct tapent *all;
	struct mb_tapset *cur; /* what m->taps points to, or a retired empty */
	struct mb_tapset *retired;
};

static void taps_free(void *arg)
{
	struct mb_machine *m = arg;
	struct taps *ts = m->tapreg;
	if (!ts)
		return;
	for (struct tapent *e = ts->all, *n; e; e = n) {
		n = e->all;
		if (e->free_ctx)
			e->free_ctx(e->ctx);
		free(e);
	}
	for (struct mb_tapset *s = ts->retired, *n; s; s = n) {
		n = s->old;
		free(s);
	}
	free(ts->cur);
	pthread_mutex_destroy(&ts->lock);
	free(ts);
	m->tapreg = NULL;
	atomic_store(&m->taps, NULL);
}

static struct taps *registry(struct mb_machine *m)
{
	if (m->tapreg)
		return m->tapreg;
	struct taps *ts = calloc(1, sizeof *ts);
	if (!ts)
		return NULL;
	pthread_mutex_init(&ts->lock, NULL);
	ts->next_id = 1;
	if (mb_machine_on_destroy(m, taps_free, m)) {
		free(ts);
		return NULL;
	}
	m->tapreg = ts;
	return ts;
}

/* Publish a copy of the current set with e added (or id taken out). */
static int publish(struct mb_machine *m, struct taps *ts, struct tapent *add,
		   int remove_id)
{
	struct mb_tapset *s = calloc(1, sizeof *s);
	if (!s)
		return mb_seterr(-ENOMEM, "tap: out of memory");
	const struct mb_tapset *c = ts->cur;
	for (unsigned i = 0; c && i < c->n; i++)
		if (c->t[i]->id != remove_id)
			s->t[s->n++] = c->t[i];
	if (add)
		s->t[s->n++] = add;
	if (ts->cur) { /* keep it: a vCPU may be reading it right now */
		ts->cur->old = ts->retired;
		ts->retired = ts->cur;
	}
	ts->cur = s;
	/* An empty set is published as NULL: the exit path's one branch. */
	atomic_store_explicit(&m->taps, s->n ? s : NULL, memory_order_release);
	return 0;
}

int mb_tap_add(struct mb_machine *m, enum mb_space space, uint64_t base,
	       uint64_t len, unsigned access, mb_tap_fn fn, void *ctx,
	       void (*free_ctx)(void *), int *id)
{
	if (space != MB_SPACE_PIO && space != MB_SPACE_MMIO)
		return mb_seterr(-EINVAL, "tap: unknown space %d", (int)space);
	if (!len || base + len < base || (space == MB_SPACE_PIO && base + len > 0x10000))
		return mb_seterr(-EINVAL, "tap: range 0x%" PRIx64 "+0x%" PRIx64
				 " is empty or beyond the %s space", base, len,
				 space == MB_SPACE_PIO ? "port" : "address");
	if (!access || (access & ~(unsigned)MB_TAP_RW))
		return mb_seterr(-EINVAL, "tap: access 0x%x is not read, write "
				 "or both", access);
	if (!fn)
		return mb_seterr(-EINVAL, "tap: no function");
	struct taps *ts = registry(m);
	if (!ts)
		return mb_seterr(-ENOMEM, "tap: out of memory");
	pthread_mutex_lock(&ts->lock);
	int rc = 0;
	if (ts->cur && ts->cur->n >= MB_TAP_MAX) {
		rc = mb_seterr(-ENOSPC, "tap: more than %d taps", MB_TAP_MAX);
		goto out;
	}
	struct tapent *e = calloc(1, sizeof *e);
	if (!e) {
		rc = mb_seterr(-ENOMEM, "tap: out of memory");
		goto out;
	}
	*e = (struct tapent){ .id = ts->next_id, .space = space, .base = base,
			      .len = len, .access = access, .fn = fn,
			      .ctx = ctx, .free_ctx = free_ctx };
	if ((rc = publish(m, ts, e, 0))) {
		free(e);
		goto out;
	}
	e->all = ts->all;
	ts->all = e;
	if (id)
		*id = ts->next_id;
	ts->next_id++;
out:
	pthread_mutex_unlock(&ts->lock);
	return rc;
}

static struct tapent *find(struct taps *ts, int id)
{
	for (struct tapent *e = ts ? ts->all : NULL; e; e = e->all)
		if (e->id == id)
			return e;
	return NULL;
}

int mb_tap_remove(struct mb_machine *m, int id)
{
	struct taps *ts = m->tapreg;
	if (!ts)
		return mb_seterr(-ENOENT, "tap: no tap %d", id);
	pthread_mutex_lock(&ts->lock);
	struct tapent *e = find(ts, id);
	int rc;
	if (!e || e->removed)
		rc = mb_seterr(-ENOENT, "tap: no tap %d", id);
	else if (!(rc = publish(m, ts, NULL, id)))
		e->removed = true;
	pthread_mutex_unlock(&ts->lock);
	return rc;
}

int64_t mb_tap_count(struct mb_machine *m, int id)
{
	struct taps *ts = m->tapreg;
	if (!ts)
		return mb_seterr(-ENOENT, "tap: no tap %d", id);
	pthread_mutex_lock(&ts->lock);
	struct tapent *e = find(ts, id);
	int64_t n = e ? (int64_t)atomic_load(&e->count) :
			mb_seterr(-ENOENT, "tap: no tap %d", id);
	pthread_mutex_unlock(&ts->lock);
	return n;
}

/* The slow half of an exit with taps set (run.c checked m->taps). */
void mb_tap_access(struct vcpu *v, const struct mb_tapset *s,
		   enum mb_space space, uint64_t addr, void *data,
		   unsigned size, bool write)
{
	struct mb_machine *m = v->m;
	struct mb_bus *bus = space == MB_SPACE_PIO ? m->pio : m->mmio;
	unsigned want = write ? MB_TAP_WRITE : MB_TAP_READ;
	if (!write)
		mb_bus_read(bus, addr, data, size);
	struct mb_tap_event ev = { .space = space, .addr = addr, .size = size,
				   .write = write, .cpu = v->idx,
				   .value = mb_io_get(data, size) };
	bool drop = false;
	for (unsigned i = 0; i < s->n; i++) {
		struct tapent *e = s->t[i];
		/* an access that overlaps the range, as the bus would match */
		if (e->space != space || !(e->access & want) ||
		    addr + size <= e->base || addr >= e->base + e->len)
			continue;
		ev.count = atomic_fetch_add(&e->count, 1);
		if (e->fn(e->ctx, &ev) == MB_TAP_DROP && write)
			drop = true;
		/* a function may only narrow the value to the access size */
		if (size < 8)
			ev.value &= (1ull << (8 * size)) - 1;
	}
	mb_io_put(data, size, ev.value);
	if (write && !drop)
		mb_bus_write(bus, addr, data, size);
}
