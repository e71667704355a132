/* The sink of port80.h. Counters are relaxed atomics: no lock needed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

struct mb_null {
	uint8_t fill;
	uint64_t last_write, reads, writes;
};

static void null_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_null *n = dev;
	memset(data, __atomic_load_n(&n->fill, __ATOMIC_RELAXED), size);
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

MB_STATE_DESC(mb_null_state, MB_NULL_STATE, MB_NULL_STATE_VERSION);

void mb_null_save(struct mb_null *n, struct mb_null_state *st)
{
	memset(st, 0, sizeof(*st));
	st->fill = __atomic_load_n(&n->fill, __ATOMIC_RELAXED);
	st->last_write = __atomic_load_n(&n->last_write, __ATOMIC_RELAXED);
	st->reads = __atomic_load_n(&n->reads, __ATOMIC_RELAXED);
	st->writes = __atomic_load_n(&n->writes, __ATOMIC_RELAXED);
}

int mb_null_load(struct mb_null *n, const struct mb_null_state *st)
{
	__atomic_store_n(&n->fill, st->fill, __ATOMIC_RELAXED);
	__atomic_store_n(&n->last_write, st->last_write, __ATOMIC_RELAXED);
	__atomic_store_n(&n->reads, st->reads, __ATOMIC_RELAXED);
	__atomic_store_n(&n->writes, st->writes, __ATOMIC_RELAXED);
	return 0;
}

static int dev_save(void *impl, void *st)
{
	mb_null_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_null_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_null_free(impl);
}

static const struct mb_device_ops null_dev_ops = {
	.kind = "port80", .state = &mb_null_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

int mb_null_attach(struct mb_machine *m, const struct mb_null_attach_config *cfg,
		   struct mb_device **out)
{
	static const struct mb_null_attach_config none;
	if (!cfg)
		cfg = &none;
	enum mb_space space = cfg->size ? cfg->space : MB_SPACE_PIO;
	uint64_t base = cfg->size ? cfg->base : 0x80, size = cfg->size ? cfg->size : 1;
	struct mb_null *n = mb_null_new(cfg->fill_set ? cfg->fill : 0xff);
	if (!n)
		return mb_seterr(-ENOMEM, "port80: out of memory");
	struct mb_device *d;
	int rc;
	if ((rc = mb_device_new(m, cfg->name, "port80", &null_dev_ops, n, &d)))
		return rc;
	if ((rc = mb_device_map(d, space, base, size, &mb_null_ops, n))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
