/*
 * DMA of a device process, the VMM's side (core/devproc_dma.h).
 *
 * A granted window is a slice of a RAM region's sealed memfd: the process
 * maps [offset, offset+size) and closes the descriptor before it reads a
 * guest byte, so from then on it holds that mapping and nothing else of
 * guest RAM (its sandbox refuses mremap, the one call that could grow a
 * file mapping). Splitting RAM into one memfd per window would give the
 * same property at the cost of a machine layout that depends on its
 * devices; a slice needs nothing of the machine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/devproc_dma.h"

#define PAGE 4096u

static const struct mb_mem_region *region_of(struct mb_machine *m, uint64_t base,
					     uint64_t size, size_t *idx)
{
	for (size_t i = 0; i < mb_mem_count(m->mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(m->mem, i);
		if (base >= r->base && base - r->base < r->size &&
		    size <= r->size - (base - r->base)) {
			*idx = i;
			return r;
		}
	}
	return NULL;
}

int mb_dp_dma_init(struct mb_dp_dmastate *d, struct mb_machine *m,
		   const struct mb_devproc_config *cfg)
{
	memset(d, 0, sizeof *d);
	pthread_mutex_init(&d->lock, NULL);
	d->mode = cfg->dma;
	if (d->mode > MB_DP_DMA_MESSAGE)
		return mb_seterr(-EINVAL, "isolate: dma: unknown mode %d", (int)d->mode);
	if (cfg->ngrants > MB_DP_MAX_MEM)
		return mb_seterr(-ENOSPC, "isolate: grants: %u, at most %d",
				 cfg->ngrants, MB_DP_MAX_MEM);
	if (d->mode == MB_DP_DMA_SHARED && cfg->ngrants)
		return mb_seterr(-EINVAL, "isolate: grants: only with dma = \"granted\" "
				 "or \"message\" (shared maps all RAM)");
	if (d->mode == MB_DP_DMA_GRANTED && !cfg->ngrants)
		return mb_seterr(-EINVAL, "isolate: dma = \"granted\" needs grants");
	for (unsigned i = 0; i < cfg->ngrants; i++) {
		const struct mb_dp_grant *g = &cfg->grants[i];
		size_t ri;
		if (!g->size || g->base % PAGE || g->size % PAGE)
			return mb_seterr(-EINVAL, "isolate: grants[%u]: 0x%" PRIx64 "+0x%"
					 PRIx64 " is not a whole number of 4K pages",
					 i + 1, g->base, g->size);
		const struct mb_mem_region *r = region_of(m, g->base, g->size, &ri);
		if (!r)
			return mb_seterr(-EINVAL, "isolate: grants[%u]: 0x%" PRIx64 "+0x%"
					 PRIx64 " is not inside one RAM region", i + 1,
					 g->base, g->size);
		if (d->mode == MB_DP_DMA_GRANTED && mb_mem_region_fd(m->mem, ri) < 0)
			return mb_seterr(-ENOTSUP, "isolate: grants[%u]: region %s is not "
					 "a memfd (mapped by the caller)", i + 1, r->name);
		for (unsigned j = 0; j < i; j++) {
			const struct mb_dp_grant *o = &cfg->grants[j];
			if (g->base < o->base + o->size && o->base < g->base + g->size)
				return mb_seterr(-EEXIST, "isolate: grants[%u] overlaps "
						 "grants[%u]", i + 1, j + 1);
		}
		d->g[d->n++] = *g;
	}
	return 0;
}

void mb_dp_dma_fini(struct mb_dp_dmastate *d)
{
	pthread_mutex_destroy(&d->lock);
}

unsigned mb_dp_dma_nmem(const struct mb_dp_dmastate *d, struct mb_machine *m)
{
	switch (d->mode) {
	case MB_DP_DMA_GRANTED:
		return d->n;
	default:
		return (unsigned)mb_mem_count(m->mem);
	}
}

int mb_dp_dma_mem(struct mb_dp_dmastate *d, struct mb_machine *m, int *fds,
		  struct mb_dp_mem *mem, unsigned *n)
{
	*n = 0;
	if (d->mode == MB_DP_DMA_MESSAGE) {
		/* The layout only (a placeholder descriptor each, so the
		 * numbers stay those of shared mode): the process keeps a
		 * shadow and asks for every byte. */
		for (size_t i = 0; i < mb_mem_count(m->mem) && i < MB_DP_MAX_MEM; i++) {
			const struct mb_mem_region *r = mb_mem_region(m->mem, i);
			int fd = eventfd(0, EFD_CLOEXEC);
			if (fd < 0) {
				mb_dp_dma_close_mem(mem, fds, *n);
				return mb_seterr(-errno, "isolate: eventfd: %s", strerror(errno));
			}
			mem[i] = (struct mb_dp_mem){ .base = r->base, .size = r->size,
						     .flags = MB_DP_MEM_REMOTE |
							      (r->flags & MB_MEM_READONLY) };
			snprintf(mem[i].name, sizeof mem[i].name, "%s", r->name);
			fds[i] = fd;
			(*n)++;
		}
		return 0;
	}
	if (d->mode != MB_DP_DMA_GRANTED)
		return 0;
	for (unsigned i = 0; i < d->n; i++) {
		const struct mb_dp_grant *g = &d->g[i];
		size_t ri;
		const struct mb_mem_region *r = region_of(m, g->base, g->size, &ri);
		int fd = r ? mb_mem_region_fd(m->mem, ri) : -1;
		struct mb_dp_mem *e = &mem[i];
		*e = (struct mb_dp_mem){ .base = g->base, .size = g->size,
					 .flags = r ? r->flags : 0 };
		snprintf(e->name, sizeof e->name, "grant%u", i);
		if (atomic_load(&d->revoked[i]) || fd < 0) {
			/* A revoked window keeps its slot, so the backend's
			 * descriptor numbers in the options stay right, but
			 * carries no memory: an empty eventfd. */
			if ((fd = eventfd(0, EFD_CLOEXEC)) < 0) {
				mb_dp_dma_close_mem(mem, fds, i);
				return mb_seterr(-errno, "isolate: eventfd: %s",
						 strerror(errno));
			}
			e->flags = MB_DP_MEM_REVOKED;
		} else {
			e->offset = g->base - r->base;
			e->fd_size = r->size;
		}
		fds[i] = fd;
		(*n)++;
	}
	return 0;
}

void mb_dp_dma_close_mem(const struct mb_dp_mem *mem, const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (mem[i].flags & (MB_DP_MEM_REVOKED | MB_DP_MEM_REMOTE))
			close(fds[i]); /* ours; RAM memfds belong to the machine */
}

int mb_dp_dma_find(const struct mb_dp_dmastate *d, uint64_t base)
{
	for (unsigned i = 0; i < d->n; i++)
		if (d->g[i].base == base)
			return (int)i;
	return -1;
}

/* Is [addr, addr+len) inside one live grant (no grants: anywhere)? */
static bool granted(struct mb_dp_dmastate *d, uint64_t addr, uint64_t len)
{
	if (!d->n)
		return true;
	for (unsigned i = 0; i < d->n; i++) {
		const struct mb_dp_grant *g = &d->g[i];
		if (addr >= g->base && addr - g->base < g->size &&
		    len <= g->size - (addr - g->base))
			return !atomic_load(&d->revoked[i]);
	}
	return false;
}

size_t mb_dp_dma_serve(struct mb_dp_dmastate *d, struct mb_machine *m, const char *name,
		       const uint8_t *msg, size_t n, uint8_t *out, size_t max)
{
	struct mb_dp_hdr q, *h = (void *)out;
	struct mb_dp_dma_rw rw;
	const char *bad = NULL;
	char why[160];
	if (n < sizeof q + sizeof rw || max < sizeof *h + sizeof rw + 160)
		return 0; /* too short to answer: the device waits and times out */
	memcpy(&q, msg, sizeof q);
	memcpy(&rw, msg + sizeof q, sizeof rw);
	bool wr = q.cmd == MB_DP_DMA_WRITE;
	size_t room = max - sizeof *h - sizeof rw;
	if (q.size != n || (q.cmd != MB_DP_DMA_READ && !wr))
		bad = "malformed";
	else if (d->mode == MB_DP_DMA_SHARED)
		bad = "not in message mode";
	else if (!rw.count || rw.count > MB_DP_DMA_MAX || rw.count > room ||
		 (wr && n != sizeof q + sizeof rw + rw.count) ||
		 (!wr && n != sizeof q + sizeof rw))
		bad = "bad count";
	else if (!granted(d, rw.addr, rw.count))
		bad = "outside its grants";
	*h = (struct mb_dp_hdr){ .id = q.id, .cmd = q.cmd, .flags = MB_DP_F_REPLY };
	uint8_t *data = out + sizeof *h + sizeof rw;
	int rc = 0;
	if (!bad) {
		rc = wr ? mb_mem_write(m->mem, rw.addr, msg + sizeof q + sizeof rw, rw.count)
			: mb_mem_read(m->mem, rw.addr, data, rw.count);
		if (rc)
			bad = "not in guest RAM";
	}
	if (bad) {
		snprintf(why, sizeof why, "%s: DMA %s 0x%" PRIx64 "+0x%" PRIx64 " refused: %s",
			 name, wr ? "write" : "read", rw.addr, rw.count, bad);
		atomic_fetch_add(&d->refused, 1);
		pthread_mutex_lock(&d->lock);
		bool first = !d->why[0];
		snprintf(d->why, sizeof d->why, "%s", why);
		pthread_mutex_unlock(&d->lock);
		if (first) /* once: a hostile device must not flood the log */
			fprintf(stderr, "moonbox: %s\n", why);
		size_t k = strlen(why);
		h->flags |= MB_DP_F_ERROR;
		h->error = EFAULT;
		memcpy(out + sizeof *h, why, k);
		h->size = (uint32_t)(sizeof *h + k);
		return h->size;
	}
	atomic_fetch_add(wr ? &d->writes : &d->reads, 1);
	atomic_fetch_add(&d->bytes, rw.count);
	memcpy(out + sizeof *h, &rw, sizeof rw);
	h->size = (uint32_t)(sizeof *h + sizeof rw + (wr ? 0 : rw.count));
	return h->size;
}
