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
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
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

/* A window as a grant must be: whole pages inside one RAM region (a
 * memfd one, to be mapped). what names it in the message. */
static int check_window(const struct mb_dp_dmastate *d, struct mb_machine *m,
			const char *what, uint64_t base, uint64_t size)
{
	size_t ri;
	if (!size || base % PAGE || size % PAGE)
		return mb_seterr(-EINVAL, "%s: 0x%" PRIx64 "+0x%" PRIx64 " is not a "
				 "whole number of 4K pages", what, base, size);
	const struct mb_mem_region *r = region_of(m, base, size, &ri);
	if (!r)
		return mb_seterr(-EINVAL, "%s: 0x%" PRIx64 "+0x%" PRIx64 " is not "
				 "inside one RAM region", what, base, size);
	if (d->mode == MB_DP_DMA_GRANTED && mb_mem_region_fd(m->mem, ri) < 0)
		return mb_seterr(-ENOTSUP, "%s: region %s is not a memfd (mapped by "
				 "the caller)", what, r->name);
	return 0;
}

static size_t bitmap_words(uint64_t size)
{
	return (size / PAGE + 63) / 64;
}

/* The device's dirty map: a sealed memfd both sides map, a bitmap per
 * RAM region (each from a word boundary, laid out as mem.c's own), each
 * registered with the map as a source of its dirty log. Per device, not
 * per machine: a device can clear only bits of its own writes. */
static int dirty_init(struct mb_dp_dmastate *d, struct mb_machine *m)
{
	size_t words = 0;
	for (size_t i = 0; i < mb_mem_count(m->mem) && i < MB_DP_MAX_DREG; i++) {
		const struct mb_mem_region *r = mb_mem_region(m->mem, i);
		d->dreg[i].base = r->base, d->dreg[i].size = r->size;
		d->dreg[i].bit0 = (uint64_t)words * 64;
		words += bitmap_words(r->size);
		d->ndreg = (unsigned)i + 1;
	}
	size_t size = (words * sizeof(uint64_t) + PAGE - 1) & ~(size_t)(PAGE - 1);
	if (!size)
		size = PAGE;
	int fd = memfd_create("moonbox-dirty", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)size) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return mb_seterr(-e, "isolate: dirty map: %s", strerror(e));
	}
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		close(fd);
		return mb_seterr(-e, "isolate: dirty map: mmap: %s", strerror(e));
	}
	d->dirty_fd = fd, d->dirty = map, d->dirty_size = size;
	for (unsigned i = 0; i < d->ndreg; i++)
		if (mb_mem_dirty_source(m->mem, d->dreg[i].base,
					d->dirty + d->dreg[i].bit0 / 64, true))
			return -ENOMEM;
	return 0;
}

int mb_dp_dma_init(struct mb_dp_dmastate *d, struct mb_machine *m,
		   const struct mb_devproc_config *cfg)
{
	memset(d, 0, sizeof *d);
	pthread_mutex_init(&d->lock, NULL);
	d->mem = m->mem;
	d->dirty_fd = -1;
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
		char what[40];
		snprintf(what, sizeof what, "isolate: grants[%u]", i + 1);
		int rc = check_window(d, m, what, g->base, g->size);
		if (rc)
			return rc;
		for (unsigned j = 0; j < i; j++) {
			const struct mb_dp_grant *o = &cfg->grants[j];
			if (g->base < o->base + o->size && o->base < g->base + g->size)
				return mb_seterr(-EEXIST, "isolate: grants[%u] overlaps "
						 "grants[%u]", i + 1, j + 1);
		}
		d->g[d->n++] = *g;
	}
	d->ncreate = d->n;
	/* What the process writes through its own mappings, neither KVM's
	 * log nor mem.c's marks see: it marks them here. By messages the
	 * VMM writes, and marks, itself. */
	if (d->mode != MB_DP_DMA_MESSAGE)
		return dirty_init(d, m);
	return 0;
}

void mb_dp_dma_fini(struct mb_dp_dmastate *d)
{
	for (unsigned i = 0; d->dirty && i < d->ndreg; i++)
		mb_mem_dirty_source(d->mem, d->dreg[i].base, d->dirty + d->dreg[i].bit0 / 64,
				    false);
	if (d->dirty)
		munmap(d->dirty, d->dirty_size);
	if (d->dirty_fd >= 0)
		close(d->dirty_fd);
	d->dirty = NULL, d->dirty_fd = -1;
	pthread_mutex_destroy(&d->lock);
}

uint64_t mb_dp_dirty_bit(const struct mb_dp_dmastate *d, uint64_t gpa)
{
	for (unsigned i = 0; d->dirty && i < d->ndreg; i++)
		if (gpa >= d->dreg[i].base && gpa - d->dreg[i].base < d->dreg[i].size)
			return d->dreg[i].bit0 + (gpa - d->dreg[i].base) / PAGE;
	return MB_DP_NO_DIRTY;
}

int mb_dp_dma_grant(struct mb_dp_dmastate *d, struct mb_machine *m, const char *name,
		    uint64_t base, uint64_t size)
{
	if (d->mode == MB_DP_DMA_SHARED)
		return mb_seterr(-EINVAL, "%s: dma is \"shared\" (all RAM, nothing to "
				 "grant)", name);
	unsigned n = atomic_load(&d->n);
	if (d->mode == MB_DP_DMA_MESSAGE && !n)
		return mb_seterr(-EINVAL, "%s: dma = \"message\" without grants reaches "
				 "all RAM: nothing to grant", name);
	int rc = check_window(d, m, name, base, size);
	if (rc)
		return rc;
	for (unsigned i = 0; i < n; i++) {
		const struct mb_dp_grant *o = &d->g[i];
		if (!(base < o->base + o->size && o->base < base + size))
			continue;
		bool rev = atomic_load(&d->revoked[i]);
		if (o->base == base && o->size == size) {
			if (!rev)
				return mb_seterr(-EEXIST, "%s: 0x%" PRIx64 "+0x%" PRIx64
						 " is granted already (grants[%u])", name,
						 base, size, i + 1);
			if (d->mode == MB_DP_DMA_MESSAGE)
				atomic_store(&d->revoked[i], false);
			return (int)i; /* the same window again: its old slot */
		}
		/* A revoked window keeps its place in the process's map (a
		 * guard over it): only the same window can come back there. */
		return mb_seterr(-EEXIST, "%s: 0x%" PRIx64 "+0x%" PRIx64 " overlaps %sgrants"
				 "[%u] (0x%" PRIx64 "+0x%" PRIx64 ")%s", name, base, size,
				 rev ? "revoked " : "", i + 1, o->base, o->size,
				 rev ? ": grant that window again, whole" : "");
	}
	if (n == MB_DP_MAX_MEM)
		return mb_seterr(-ENOSPC, "%s: 0x%" PRIx64 "+0x%" PRIx64 ": more than %d "
				 "grants (a revoked one keeps its slot: grant its window "
				 "again)", name, base, size, MB_DP_MAX_MEM);
	d->g[n] = (struct mb_dp_grant){ base, size };
	atomic_store(&d->revoked[n], d->mode == MB_DP_DMA_GRANTED);
	atomic_store_explicit(&d->n, n + 1, memory_order_release);
	return (int)n;
}

int mb_dp_dma_map_of(const struct mb_dp_dmastate *d, struct mb_machine *m, unsigned i,
		     struct mb_dp_dma_map *out, int *fd)
{
	const struct mb_dp_grant *g = &d->g[i];
	size_t ri;
	const struct mb_mem_region *r = i < d->n ? region_of(m, g->base, g->size, &ri) : NULL;
	if (!r || (*fd = mb_mem_region_fd(m->mem, ri)) < 0)
		return mb_seterr(-ENOENT, "grant %u: not in a memfd region", i + 1);
	*out = (struct mb_dp_dma_map){
		.argsz = sizeof *out,
		.flags = MB_DP_DMA_MAP_READ |
			 ((r->flags & MB_MEM_READONLY) ? 0 : MB_DP_DMA_MAP_WRITE),
		.offset = g->base - r->base, .addr = g->base, .size = g->size,
		.dirty_bit = mb_dp_dirty_bit(d, g->base),
	};
	return 0;
}

unsigned mb_dp_dma_nmem(const struct mb_dp_dmastate *d, struct mb_machine *m)
{
	switch (d->mode) {
	case MB_DP_DMA_GRANTED:
		return d->ncreate;
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
							      (r->flags & MB_MEM_READONLY),
						     .dirty_bit = MB_DP_NO_DIRTY };
			snprintf(mem[i].name, sizeof mem[i].name, "%s", r->name);
			fds[i] = fd;
			(*n)++;
		}
		return 0;
	}
	if (d->mode != MB_DP_DMA_GRANTED)
		return 0;
	/* The CREATE's slots only: those granted at run time follow as
	 * DMA_MAPs (their number must not move the backend's fds). */
	for (unsigned i = 0; i < d->ncreate; i++) {
		const struct mb_dp_grant *g = &d->g[i];
		size_t ri;
		const struct mb_mem_region *r = region_of(m, g->base, g->size, &ri);
		int fd = r ? mb_mem_region_fd(m->mem, ri) : -1;
		struct mb_dp_mem *e = &mem[i];
		*e = (struct mb_dp_mem){ .base = g->base, .size = g->size,
					 .flags = r ? r->flags : 0,
					 .dirty_bit = mb_dp_dirty_bit(d, g->base) };
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
			e->dirty_bit = MB_DP_NO_DIRTY;
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
	unsigned n = atomic_load_explicit(&d->n, memory_order_acquire);
	if (!n)
		return true;
	for (unsigned i = 0; i < n; i++) {
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
