/* The sink of port80.h. Counters are relaxed atomics: no lock needed. */
#include <stdlib.h>
#include <string.h>

#include "devices/port80.h"

struct mb_null {
	uint8_t fill;
	uint64_t last_write, reads, writes;
};

static void null_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_null *n = dev;
	memset(data, n->fill, size);
	__atomic_add_fetch(&n->reads, 1, __ATOMIC_RELAXED);
}

static void null_write(void *dev, uint64_t off, const void *data,
		       unsigned size)
{
	struct mb_null *n = dev;
	__atomic_store_n(&n->last_write, mb_io_get(data, size),
			 __ATOMIC_RELAXED);
	__atomic_add_fetch(&n->writes, 1, __ATOMIC_RELAXED);
}

const struct mb_io_ops mb_null_ops = { null_read, null_write };

struct mb_null *mb_null_new(uint8_t fill)
{
	struct mb_null *n = calloc(1, sizeof(*n));
	if (n)
		n->fill = fill;
	return n;
}

void mb_null_free(struct mb_null *n)
{
	free(n);
}

void mb_null_state(struct mb_null *n, struct mb_null_state *st)
{
	st->fill = n->fill;
	st->last_write = __atomic_load_n(&n->last_write, __ATOMIC_RELAXED);
	st->reads = __atomic_load_n(&n->reads, __ATOMIC_RELAXED);
	st->writes = __atomic_load_n(&n->writes, __ATOMIC_RELAXED);
}
