/*
 * The dispatch bus: an address space of device ranges.
 *
 * vCPU threads look ranges up on every exit, so lookup takes no lock: the
 * ranges live in an immutable table sorted by base, found by binary search.
 * Registration (rare) builds a new table under a mutex and publishes it with
 * one release store. Old tables are kept on a list until mb_bus_reclaim()
 * (called by the machine when no vCPU can be looking) or the bus is freed,
 * so a reader that loaded a table a moment ago never touches freed memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

struct range {
	const struct mb_io_ops *ops;
	void *dev;
	char name[32];
};

struct table {
	struct table *older; /* retired tables, freed by mb_bus_reclaim */
	size_t n;
	uint64_t *base;      /* sorted; separate arrays keep the search dense */
	uint64_t *last;      /* inclusive end: base + len - 1 never overflows */
	struct range *r;
};

struct mb_bus {
	_Atomic(struct table *) tbl;
	pthread_mutex_t lock;
	uint64_t limit; /* highest address + 1, 0 for the full 64-bit space */
	char name[16];
	bool log;
	atomic_uint_fast64_t unclaimed_reads, unclaimed_writes;
};

/* One allocation per table: arrays of n (at least 1) entries each. */
static struct table *table_new(size_t n)
{
	size_t cap = n ? n : 1;
	size_t sz = sizeof(struct table) + cap * 2 * sizeof(uint64_t) +
		    cap * sizeof(struct range);
	struct table *t = calloc(1, sz);
	if (!t)
		return NULL;
	t->n = n;
	t->base = (uint64_t *)(t + 1);
	t->last = t->base + cap;
	t->r = (struct range *)(t->last + cap);
	return t;
}

static void table_free(struct table *t)
{
	while (t) {
		struct table *o = t->older;
		free(t);
		t = o;
	}
}

struct mb_bus *mb_bus_new(const char *name, uint64_t limit)
{
	struct mb_bus *bus = calloc(1, sizeof *bus);
	struct table *t = table_new(0);
	if (!bus || !t) {
		free(bus), free(t);
		return NULL;
	}
	atomic_init(&bus->tbl, t);
	pthread_mutex_init(&bus->lock, NULL);
	bus->limit = limit;
	snprintf(bus->name, sizeof bus->name, "%s", name ? name : "bus");
	return bus;
}

void mb_bus_free(struct mb_bus *bus)
{
	if (!bus)
		return;
	table_free(atomic_load(&bus->tbl));
	pthread_mutex_destroy(&bus->lock);
	free(bus);
}

/* Index of the last range with base <= addr, or -1. */
static inline long find(const struct table *t, uint64_t addr)
{
	size_t lo = 0, n = t->n;
	if (!n || addr < t->base[0])
		return -1;
	/* Branch-free halving: lo stays on a base <= addr; the compiler
	 * turns the select into a cmov, so no mispredictions. */
	while (n > 1) {
		size_t half = n / 2;
		lo = t->base[lo + half] <= addr ? lo + half : lo;
		n -= half;
	}
	return (long)lo;
}

static void publish(struct mb_bus *bus, struct table *nt, struct table *old)
{
	nt->older = old;
	atomic_store_explicit(&bus->tbl, nt, memory_order_release);
}

int mb_bus_register(struct mb_bus *bus, uint64_t base, uint64_t len,
		    const struct mb_io_ops *ops, void *dev, const char *name)
{
	if (!name)
		name = "device";
	if (!len)
		return mb_seterr(-EINVAL, "%s: %s: zero-length range at 0x%" PRIx64,
				 bus->name, name, base);
	uint64_t last = base + len - 1;
	if (last < base || (bus->limit && last >= bus->limit))
		return mb_seterr(-ERANGE,
				 "%s: %s: range 0x%" PRIx64 "+0x%" PRIx64
				 " is outside the address space",
				 bus->name, name, base, len);
	pthread_mutex_lock(&bus->lock);
	struct table *t = atomic_load_explicit(&bus->tbl, memory_order_relaxed);
	long i = find(t, last); /* the only candidate overlapping [base, last] */
	if (i >= 0 && t->last[i] >= base) {
		int rc = mb_seterr(-EEXIST,
				   "%s: %s at 0x%" PRIx64 "-0x%" PRIx64
				   " overlaps %s at 0x%" PRIx64 "-0x%" PRIx64,
				   bus->name, name, base, last, t->r[i].name,
				   t->base[i], t->last[i]);
		pthread_mutex_unlock(&bus->lock);
		return rc;
	}
	struct table *nt = table_new(t->n + 1);
	if (!nt) {
		pthread_mutex_unlock(&bus->lock);
		return mb_seterr(-ENOMEM, "%s: out of memory", bus->name);
	}
	size_t at = (size_t)(i + 1), tail = t->n - at;
	memcpy(nt->base, t->base, at * sizeof *t->base);
	memcpy(nt->last, t->last, at * sizeof *t->last);
	memcpy(nt->r, t->r, at * sizeof *t->r);
	nt->base[at] = base;
	nt->last[at] = last;
	nt->r[at].ops = ops;
	nt->r[at].dev = dev;
	snprintf(nt->r[at].name, sizeof nt->r[at].name, "%s", name);
	memcpy(nt->base + at + 1, t->base + at, tail * sizeof *t->base);
	memcpy(nt->last + at + 1, t->last + at, tail * sizeof *t->last);
	memcpy(nt->r + at + 1, t->r + at, tail * sizeof *t->r);
	publish(bus, nt, t);
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

int mb_bus_unregister(struct mb_bus *bus, uint64_t base)
{
	pthread_mutex_lock(&bus->lock);
	struct table *t = atomic_load_explicit(&bus->tbl, memory_order_relaxed);
	long i = find(t, base);
	if (i < 0 || t->base[i] != base) {
		pthread_mutex_unlock(&bus->lock);
		return mb_seterr(-ENOENT, "%s: no range starts at 0x%" PRIx64,
				 bus->name, base);
	}
	struct table *nt = table_new(t->n - 1);
	if (!nt) {
		pthread_mutex_unlock(&bus->lock);
		return mb_seterr(-ENOMEM, "%s: out of memory", bus->name);
	}
	size_t at = (size_t)i, tail = t->n - at - 1;
	memcpy(nt->base, t->base, at * sizeof *t->base);
	memcpy(nt->last, t->last, at * sizeof *t->last);
	memcpy(nt->r, t->r, at * sizeof *t->r);
	memcpy(nt->base + at, t->base + at + 1, tail * sizeof *t->base);
	memcpy(nt->last + at, t->last + at + 1, tail * sizeof *t->last);
	memcpy(nt->r + at, t->r + at + 1, tail * sizeof *t->r);
	publish(bus, nt, t);
	pthread_mutex_unlock(&bus->lock);
	return 0;
}

/* The range holding the whole access [addr, addr+size), or NULL. An access
 * that straddles a range end is unclaimed: a device never sees an offset
 * past its own size. */
static inline const struct range *lookup(struct mb_bus *bus, uint64_t addr,
					 unsigned size, uint64_t *off)
{
	const struct table *t =
		atomic_load_explicit(&bus->tbl, memory_order_acquire);
	long i = find(t, addr);
	if (i < 0 || addr + size - 1 > t->last[i] || addr + size - 1 < addr)
		return NULL;
	*off = addr - t->base[i];
	return &t->r[i];
}

bool mb_bus_read(struct mb_bus *bus, uint64_t addr, void *data, unsigned size)
{
	uint64_t off;
	const struct range *r = lookup(bus, addr, size, &off);
	if (r && r->ops && r->ops->read) {
		r->ops->read(r->dev, off, data, size);
		return true;
	}
	memset(data, 0xff, size);
	if (r && r->ops)
		return true; /* write-only device: reads float high */
	atomic_fetch_add_explicit(&bus->unclaimed_reads, 1, memory_order_relaxed);
	if (bus->log)
		fprintf(stderr, "moonbox: %s: unclaimed read 0x%" PRIx64 "/%u\n",
			bus->name, addr, size);
	return false;
}

bool mb_bus_write(struct mb_bus *bus, uint64_t addr, const void *data,
		  unsigned size)
{
	uint64_t off;
	const struct range *r = lookup(bus, addr, size, &off);
	if (r && r->ops) {
		if (r->ops->write)
			r->ops->write(r->dev, off, data, size);
		return true;
	}
	atomic_fetch_add_explicit(&bus->unclaimed_writes, 1, memory_order_relaxed);
	if (bus->log)
		fprintf(stderr,
			"moonbox: %s: unclaimed write 0x%" PRIx64 "/%u = 0x%" PRIx64 "\n",
			bus->name, addr, size, mb_io_get(data, size));
	return false;
}

void mb_bus_reclaim(struct mb_bus *bus)
{
	pthread_mutex_lock(&bus->lock);
	struct table *t = atomic_load_explicit(&bus->tbl, memory_order_relaxed);
	table_free(t->older);
	t->older = NULL;
	pthread_mutex_unlock(&bus->lock);
}

void mb_bus_stats(struct mb_bus *bus, struct mb_bus_stats *st)
{
	st->unclaimed_reads = atomic_load(&bus->unclaimed_reads);
	st->unclaimed_writes = atomic_load(&bus->unclaimed_writes);
	st->ranges = atomic_load(&bus->tbl)->n;
}

void mb_bus_set_log(struct mb_bus *bus, bool on)
{
	bus->log = on;
}

const char *mb_bus_owner(struct mb_bus *bus, uint64_t addr)
{
	uint64_t off;
	const struct range *r = lookup(bus, addr, 1, &off);
	return r ? r->name : NULL;
}

int mb_bus_foreach(struct mb_bus *bus,
		   int (*fn)(void *opaque, const struct mb_bus_range *r),
		   void *opaque)
{
	/* Under the lock: no registration replaces (or reclaims) the table
	 * meanwhile; fn must not register on this bus. */
	pthread_mutex_lock(&bus->lock);
	struct table *t = atomic_load_explicit(&bus->tbl, memory_order_relaxed);
	int rc = 0;
	for (size_t i = 0; i < t->n && !rc; i++) {
		struct mb_bus_range r = { .base = t->base[i],
					  .len = t->last[i] - t->base[i] + 1,
					  .name = t->r[i].name, .dev = t->r[i].dev };
		rc = fn(opaque, &r);
	}
	pthread_mutex_unlock(&bus->lock);
	return rc;
}

const char *mb_bus_name(const struct mb_bus *bus) { return bus->name; }
