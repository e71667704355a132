/*
 * The machine's device inventory: names, ranges, lines, state and cleanup
 * of every device model an attach function wired in (moonbox/device.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

struct mb_device {
	struct mb_machine *m;
	char name[MB_DEVICE_NAME_MAX];
	const struct mb_device_ops *ops;
	void *impl;
	struct mb_device_range r[MB_DEVICE_MAX_RANGES];
	size_t nr;
	int irq;
	struct hook hook; /* frees the device with the machine */
};

struct mb_device *mb_machine_device(struct mb_machine *m, const char *name)
{
	for (size_t i = 0; i < m->ndevs; i++)
		if (strcmp(m->devs[i]->name, name) == 0)
			return m->devs[i];
	return NULL;
}

size_t mb_machine_ndevices(struct mb_machine *m)
{
	return m->ndevs;
}

struct mb_device *mb_machine_device_at(struct mb_machine *m, size_t i)
{
	return i < m->ndevs ? m->devs[i] : NULL;
}

/* "blk%u": the first free index; "pic": pic, pic#2, pic#3... */
static int default_name(struct mb_machine *m, const char *def, char *out)
{
	bool indexed = strstr(def, "%u") != NULL;
	for (unsigned i = indexed ? 0 : 1; i < 10000; i++) {
		if (indexed)
			snprintf(out, MB_DEVICE_NAME_MAX, def, i);
		else if (i == 1)
			snprintf(out, MB_DEVICE_NAME_MAX, "%s", def);
		else
			snprintf(out, MB_DEVICE_NAME_MAX, "%s#%u", def, i);
		if (!mb_machine_device(m, out))
			return 0;
	}
	return mb_seterr(-ENOSPC, "name: no free name like \"%s\"", def);
}

static void unmap_all(struct mb_device *d)
{
	for (size_t i = d->nr; i-- > 0;)
		mb_bus_unregister(d->r[i].space == MB_SPACE_PIO ? d->m->pio : d->m->mmio,
				  d->r[i].base);
	d->nr = 0;
}

/* Destroy hook: the vCPUs and the event loop are gone, buses too soon. */
static void destroy(void *p)
{
	struct mb_device *d = p;
	if (d->ops->free)
		d->ops->free(d->impl);
	free(d);
}

int mb_device_new(struct mb_machine *m, const char *name, const char *defname,
		  const struct mb_device_ops *ops, void *impl,
		  struct mb_device **out)
{
	int rc;
	struct mb_device *d = NULL;
	if (name && *name) {
		if (strlen(name) >= MB_DEVICE_NAME_MAX) {
			rc = mb_seterr(-EINVAL, "name: \"%s\" is longer than %d bytes",
				       name, MB_DEVICE_NAME_MAX - 1);
			goto fail;
		}
		if (mb_machine_device(m, name)) {
			rc = mb_seterr(-EEXIST, "name: \"%s\" is already a device of "
				       "this machine", name);
			goto fail;
		}
	}
	if (m->ndevs == m->capdevs) {
		size_t cap = m->capdevs ? 2 * m->capdevs : 16;
		struct mb_device **nd = realloc(m->devs, cap * sizeof *nd);
		if (!nd) {
			rc = mb_seterr(-ENOMEM, "%s: out of memory", ops->kind);
			goto fail;
		}
		m->devs = nd, m->capdevs = cap;
	}
	d = calloc(1, sizeof *d);
	if (!d) {
		rc = mb_seterr(-ENOMEM, "%s: out of memory", ops->kind);
		goto fail;
	}
	if (name && *name)
		snprintf(d->name, sizeof d->name, "%s", name);
	else if ((rc = default_name(m, defname ? defname : ops->kind, d->name)))
		goto fail;
	d->m = m, d->ops = ops, d->impl = impl, d->irq = -1;
	d->hook = (struct hook){ .fn = destroy, .arg = d, .embedded = true };
	mb_machine_push_hook(m, &d->hook);
	m->devs[m->ndevs++] = d;
	*out = d;
	return 0;
fail:
	free(d);
	if (ops->free)
		ops->free(impl);
	return rc;
}

int mb_device_map(struct mb_device *d, enum mb_space space, uint64_t base,
		  uint64_t size, const struct mb_io_ops *io, void *opaque)
{
	if (d->nr == MB_DEVICE_MAX_RANGES)
		return mb_seterr(-ENOSPC, "%s: more than %d ranges", d->name,
				 MB_DEVICE_MAX_RANGES);
	struct mb_bus *bus = space == MB_SPACE_PIO ? d->m->pio : d->m->mmio;
	int rc = mb_bus_register(bus, base, size, io, opaque, d->name);
	if (rc)
		return rc;
	d->r[d->nr++] = (struct mb_device_range){ space, base, size };
	return 0;
}

/* The line counts one more user (allocated or claimed) until
 * mb_device_remove releases it; an error here leaves it as it was. */
int mb_device_irq(struct mb_device *d, int line, struct mb_irq *out)
{
	unsigned l;
	int rc;
	if (line < 0) {
		if ((rc = mb_machine_alloc_irq(d->m, &l)))
			return rc;
	} else {
		l = (unsigned)line;
		if ((rc = mb_machine_claim_irq(d->m, l)))
			return rc;
	}
	if ((rc = mb_machine_irq(d->m, l, out))) {
		mb_machine_release_irq(d->m, l);
		return mb_seterr(rc, "irq: %u is not an interrupt line of this "
				 "machine", l);
	}
	d->irq = (int)l;
	return 0;
}

void mb_device_remove(struct mb_device *d)
{
	struct mb_machine *m = d->m;
	unmap_all(d);
	if (d->irq >= 0)
		mb_machine_release_irq(m, (unsigned)d->irq); /* others may share it */
	mb_machine_drop_hook(m, &d->hook);
	for (size_t i = 0; i < m->ndevs; i++)
		if (m->devs[i] == d) {
			memmove(&m->devs[i], &m->devs[i + 1],
				(m->ndevs - i - 1) * sizeof *m->devs);
			m->ndevs--;
			break;
		}
	destroy(d);
}

const char *mb_device_name(const struct mb_device *d) { return d->name; }
const struct mb_device_ops *mb_device_ops_of(const struct mb_device *d)
{
	return d->ops;
}
const char *mb_device_kind(const struct mb_device *d) { return d->ops->kind; }
void *mb_device_impl(const struct mb_device *d) { return d->impl; }
struct mb_machine *mb_device_machine(const struct mb_device *d) { return d->m; }
int mb_device_irq_line(const struct mb_device *d) { return d->irq; }
size_t mb_device_nranges(const struct mb_device *d) { return d->nr; }

const struct mb_device_range *mb_device_range(const struct mb_device *d,
					      size_t i)
{
	return i < d->nr ? &d->r[i] : NULL;
}

const struct mb_state_desc *mb_device_state_desc(const struct mb_device *d)
{
	return d->ops->save ? d->ops->state : NULL;
}

int mb_device_save(struct mb_device *d, void *st)
{
	if (!d->ops->state || !d->ops->save)
		return mb_seterr(-ENOTSUP, "%s: a %s has no state", d->name,
				 d->ops->kind);
	memset(st, 0, d->ops->state->size);
	return d->ops->save(d->impl, st);
}

int mb_device_load(struct mb_device *d, const void *st)
{
	if (!d->ops->state || !d->ops->load)
		return mb_seterr(-ENOTSUP, "%s: a %s has no state to load", d->name,
				 d->ops->kind);
	if (!mb_machine_paused(d->m))
		return mb_seterr(-EBUSY, "%s: the machine is running (pause it "
				 "first)", d->name);
	return d->ops->load(d->impl, st);
}

void mb_device_quiesce(struct mb_device *d)
{
	if (d->ops->quiesce)
		d->ops->quiesce(d->impl);
}

int mb_device_keep(struct mb_device *d, void **kept, void (**drop)(void *))
{
	*kept = NULL;
	*drop = d->ops->drop;
	return d->ops->keep ? d->ops->keep(d->impl, kept) : 0;
}

int mb_device_put_back(struct mb_device *d, const void *kept)
{
	return d->ops->put_back ? d->ops->put_back(d->impl, kept) : 0;
}
