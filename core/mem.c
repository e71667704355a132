/*
 * The guest-physical memory map. This file is the only place that turns a
 * guest address into a host pointer, and it does so only when the whole
 * range lies inside one region: a guest-controlled address or length can
 * never reach host memory outside guest RAM.
 */
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

#define MAXREG 64

struct mb_mem {
	size_t n;
	struct mb_mem_region r[MAXREG]; /* sorted by base */
	bool owned[MAXREG];
	int fd[MAXREG]; /* the sealed memfd behind an owned region, or -1 */
	uint64_t *dirty[MAXREG]; /* moonbox's own writes, bit per 4K page */
	int any[MAXREG];         /* a bit of dirty[i] may be set */
	/* A bitmap the size of dirty[i], all zero between uses: where
	 * snapshot.c gathers KVM's dirty log and ours, so a restore neither
	 * allocates nor scans a bitmap that nothing was written to. */
	uint64_t *log[MAXREG];
	/* Bumped when a region is revoked: whoever kept a pointer looks
	 * again (virtio rings, moonbox/virtio_queue.h). */
	_Atomic unsigned gen;
	const struct mb_mem_remote_ops *rops; /* MB_MEM_REMOTE regions */
	void *rctx;
	/* A device process's map: writes to region i are marked in sink[i]
	 * (the VMM's bitmap, shared), bit sink0[i] for its first page,
	 * instead of dirty[i], which nobody there takes. */
	uint64_t *sink[MAXREG];
	uint64_t sink0[MAXREG];
	/* The VMM's map: bitmaps device processes mark (mb_mem_dirty_source),
	 * each for the region at base, taken with dirty[i]. */
	struct dsrc {
		uint64_t base;
		uint64_t *bits;
	} *src;
	size_t nsrc;
};

#define DPAGE 4096u

static size_t dirty_words(uint64_t size)
{
	return (size / DPAGE + 63) / 64;
}

/* Mark [off, off+len) of region i written (from any thread). */
static void mark(struct mb_mem *mem, size_t i, uint64_t off, uint64_t len)
{
	uint64_t *d = mem->dirty[i];
	if (!len)
		return;
	uint64_t *s = __atomic_load_n(&mem->sink[i], __ATOMIC_ACQUIRE);
	if (s) { /* bounds checked by mb_mem_dirty_sink's caller */
		uint64_t b = __atomic_load_n(&mem->sink0[i], __ATOMIC_RELAXED);
		for (uint64_t p = b + off / DPAGE; p <= b + (off + len - 1) / DPAGE; p++)
			__atomic_fetch_or(&s[p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
		return;
	}
	if (!d)
		return;
	for (uint64_t p = off / DPAGE; p <= (off + len - 1) / DPAGE; p++)
		__atomic_fetch_or(&d[p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
	/* After the bits: a taker that clears the flag first and then scans
	 * sees every bit, or the flag stays set for the next take. */
	if (!__atomic_load_n(&mem->any[i], __ATOMIC_RELAXED))
		__atomic_store_n(&mem->any[i], 1, __ATOMIC_RELEASE);
}

void mb_mem_take_dirty(struct mb_mem *mem, size_t i, uint64_t *out)
{
	size_t n = dirty_words(mem->r[i].size);
	/* Device processes' marks: a hostile one may set any bit (a page
	 * copied back for nothing) or clear its own (its own writes kept). */
	for (size_t k = 0; k < mem->nsrc; k++) {
		if (mem->src[k].base != mem->r[i].base)
			continue;
		uint64_t *b = mem->src[k].bits;
		for (size_t w = 0; w < n; w++)
			if (__atomic_load_n(&b[w], __ATOMIC_RELAXED))
				out[w] |= __atomic_exchange_n(&b[w], 0, __ATOMIC_RELAXED);
	}
	if (!mem->dirty[i] || !__atomic_exchange_n(&mem->any[i], 0, __ATOMIC_ACQUIRE))
		return;
	for (size_t w = 0; w < n; w++)
		if (__atomic_load_n(&mem->dirty[i][w], __ATOMIC_RELAXED))
			out[w] |= __atomic_exchange_n(&mem->dirty[i][w], 0,
						      __ATOMIC_RELAXED);
}

uint64_t *mb_mem_log(struct mb_mem *mem, size_t i)
{
	return mem->log[i];
}

struct mb_mem *mb_mem_new(void)
{
	return calloc(1, sizeof(struct mb_mem));
}

void mb_mem_free(struct mb_mem *mem)
{
	if (!mem)
		return;
	for (size_t i = 0; i < mem->n; i++) {
		if (mem->owned[i])
			munmap(mem->r[i].host, mem->r[i].size);
		if (mem->fd[i] >= 0)
			close(mem->fd[i]);
		free(mem->dirty[i]);
		free(mem->log[i]);
	}
	free(mem->src);
	free(mem);
}

int mb_mem_add(struct mb_mem *mem, uint64_t base, uint64_t size,
	       unsigned flags, void *host, const char *name)
{
	if (!name)
		name = "ram";
	if (!size)
		return mb_seterr(-EINVAL, "memory: region %s has size 0", name);
	if (base + size < base)
		return mb_seterr(-ERANGE, "memory: region %s wraps around", name);
	if (mem->n == MAXREG)
		return mb_seterr(-ENOSPC, "memory: more than %d regions", MAXREG);
	size_t at = 0;
	while (at < mem->n && mem->r[at].base < base)
		at++;
	for (size_t i = 0; i < mem->n; i++) {
		const struct mb_mem_region *o = &mem->r[i];
		if (base < o->base + o->size && o->base < base + size)
			return mb_seterr(-EEXIST,
					 "memory: region %s at 0x%" PRIx64
					 "+0x%" PRIx64 " overlaps %s at 0x%" PRIx64
					 "+0x%" PRIx64,
					 name, base, size, o->name, o->base, o->size);
	}
	bool owned = !host;
	int fd = -1;
	if (owned) {
		/* RAM moonbox allocates lives in a sealed memfd, mapped
		 * shared: a device process or a vhost-user back-end can map
		 * the very same pages from the fd, and the seals let it
		 * trust the size it checks (no shrink under its mapping). */
		fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0)
			return mb_seterr(-errno, "memory: memfd for %s: %s",
					 name, strerror(errno));
		if (ftruncate(fd, (off_t)size) ||
		    fcntl(fd, F_ADD_SEALS,
			  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
			int e = errno;
			close(fd);
			return mb_seterr(-e, "memory: cannot size %" PRIu64
					 " bytes for %s: %s", size, name,
					 strerror(e));
		}
		host = mmap(NULL, size, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_NORESERVE, fd, 0);
		if (host == MAP_FAILED) {
			int e = errno;
			close(fd);
			return mb_seterr(-e, "memory: cannot map %" PRIu64
					 " bytes for %s: %s", size, name,
					 strerror(e));
		}
	}
	memmove(&mem->r[at + 1], &mem->r[at], (mem->n - at) * sizeof mem->r[0]);
	size_t words = dirty_words(size) ? dirty_words(size) : 1;
	uint64_t *dirty = calloc(words, sizeof *dirty);
	uint64_t *log = calloc(words, sizeof *log);
	if (!dirty || !log) {
		free(dirty);
		free(log);
		if (owned)
			munmap(host, size);
		if (fd >= 0)
			close(fd);
		return mb_seterr(-ENOMEM, "memory: out of memory for %s", name);
	}
	memmove(&mem->owned[at + 1], &mem->owned[at], (mem->n - at) * sizeof(bool));
	memmove(&mem->fd[at + 1], &mem->fd[at], (mem->n - at) * sizeof(int));
	mem->fd[at] = fd;
	memmove(&mem->dirty[at + 1], &mem->dirty[at], (mem->n - at) * sizeof dirty);
	memmove(&mem->log[at + 1], &mem->log[at], (mem->n - at) * sizeof log);
	memmove(&mem->any[at + 1], &mem->any[at], (mem->n - at) * sizeof(int));
	memmove(&mem->sink[at + 1], &mem->sink[at], (mem->n - at) * sizeof dirty);
	memmove(&mem->sink0[at + 1], &mem->sink0[at], (mem->n - at) * sizeof(uint64_t));
	mem->sink[at] = NULL;
	mem->sink0[at] = 0;
	mem->dirty[at] = dirty;
	mem->log[at] = log;
	mem->any[at] = 0;
	struct mb_mem_region *r = &mem->r[at];
	r->base = base;
	r->size = size;
	r->host = host;
	r->flags = flags;
	snprintf(r->name, sizeof r->name, "%s", name);
	mem->owned[at] = owned;
	__atomic_store_n(&mem->n, mem->n + 1, __ATOMIC_RELEASE);
	return 0;
}

static const struct mb_mem_region *find(const struct mb_mem *mem, uint64_t gpa)
{
	/* Few regions: a linear scan is fastest. Not stopped at the first
	 * base past gpa: windows granted at run time are appended
	 * (mb_mem_add_live), out of order. gpa < base wraps to more than
	 * any size (base + size does not wrap). */
	size_t n = __atomic_load_n(&mem->n, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n; i++) {
		const struct mb_mem_region *r = &mem->r[i];
		if (gpa - r->base < r->size)
			return r;
	}
	return NULL;
}

void *mb_mem_ptr(struct mb_mem *mem, uint64_t gpa, uint64_t len, bool write)
{
	const struct mb_mem_region *r = find(mem, gpa);
	if (!r)
		return NULL;
	unsigned f = __atomic_load_n(&r->flags, __ATOMIC_ACQUIRE);
	if ((f & MB_MEM_REVOKED) || (write && (f & MB_MEM_READONLY)))
		return NULL;
	uint64_t off = gpa - r->base;
	if (len > r->size - off) /* off < size, so this cannot underflow */
		return NULL;
	if (__builtin_expect(f & MB_MEM_REMOTE, 0))
		return mem->rops && !mem->rops->fetch(mem->rctx, gpa, r->host + off, len)
			       ? r->host + off : NULL;
	if (write) /* the caller is about to write: restores must see it */
		mark(mem, (size_t)(r - mem->r), off, len);
	return r->host + off;
}

static int walk(struct mb_mem *mem, uint64_t gpa, void *buf, size_t len,
		int dir, bool move);

static int copy(struct mb_mem *mem, uint64_t gpa, void *buf, size_t len,
		int dir)
{
	/* A copy may span adjacent regions; every piece is checked before
	 * the first byte moves, so a failed write changes nothing. */
	if (dir == 0)
		return walk(mem, gpa, buf, len, 0, true);
	int rc = walk(mem, gpa, buf, len, dir, false);
	return rc ? rc : walk(mem, gpa, buf, len, dir, true);
}

static int walk(struct mb_mem *mem, uint64_t gpa, void *buf, size_t len,
		int dir, bool move)
{
	uint8_t *b = buf;
	while (len) {
		const struct mb_mem_region *r = find(mem, gpa);
		if (!r || (__atomic_load_n(&r->flags, __ATOMIC_ACQUIRE) & MB_MEM_REVOKED))
			return mb_seterr(-EFAULT,
					 "guest address 0x%" PRIx64 " is not in RAM", gpa);
		if (dir > 0 && (r->flags & MB_MEM_READONLY))
			return mb_seterr(-EFAULT, "guest address 0x%" PRIx64
					 " is read-only (%s)", gpa, r->name);
		uint64_t off = gpa - r->base, n = r->size - off;
		if (n > len)
			n = len;
		if (move && (r->flags & MB_MEM_REMOTE)) {
			int rc = !mem->rops ? -EFAULT
				 : dir == 0 ? mem->rops->fetch(mem->rctx, gpa, b, n)
					    : mem->rops->store(mem->rctx, gpa, b, n);
			if (rc)
				return mb_seterr(-EFAULT, "guest address 0x%" PRIx64
						 ": DMA refused", gpa);
		} else if (move && dir == 0)
			memcpy(b, r->host + off, n);
		else if (move) {
			memcpy(r->host + off, b, n);
			mark(mem, (size_t)(r - mem->r), off, n);
		}
		b += n, gpa += n, len -= n;
	}
	return 0;
}

int mb_mem_read(struct mb_mem *mem, uint64_t gpa, void *buf, size_t len)
{
	return copy(mem, gpa, buf, len, 0);
}

int mb_mem_write(struct mb_mem *mem, uint64_t gpa, const void *buf, size_t len)
{
	return copy(mem, gpa, (void *)buf, len, 1);
}

int mb_mem_load(struct mb_mem *mem, uint64_t gpa, const void *buf, size_t len)
{
	return copy(mem, gpa, (void *)buf, len, -1);
}

size_t mb_mem_count(const struct mb_mem *mem)
{
	return __atomic_load_n(&mem->n, __ATOMIC_ACQUIRE);
}

const struct mb_mem_region *mb_mem_region(const struct mb_mem *mem, size_t i)
{
	return i < mb_mem_count(mem) ? &mem->r[i] : NULL;
}

int mb_mem_region_fd(const struct mb_mem *mem, size_t i)
{
	if (i >= mem->n)
		return mb_seterr(-EINVAL, "memory: no region %zu", i);
	if (mem->fd[i] < 0)
		return mb_seterr(-ENOENT, "memory: region %s is not backed by "
				 "a memfd (the caller mapped it)", mem->r[i].name);
	return mem->fd[i];
}

int mb_memfd_check(int fd, uint64_t size)
{
	struct stat st;
	if (fstat(fd, &st))
		return mb_seterr(-errno, "memfd %d: fstat: %s", fd, strerror(errno));
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
		return mb_seterr(-EINVAL, "memfd %d: size %lld, expected %" PRIu64,
				 fd, (long long)st.st_size, size);
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0)
		return mb_seterr(-EINVAL, "memfd %d: not a sealable memfd: %s",
				 fd, strerror(errno));
	if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
		return mb_seterr(-EPERM, "memfd %d: not sealed against "
				 "shrink and grow (seals 0x%x)", fd, seals);
	return 0;
}

uint64_t mb_mem_resident(const struct mb_mem *mem)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t total = 0;
	unsigned char vec[4096];
	for (size_t i = 0; i < mem->n; i++) {
		const struct mb_mem_region *r = &mem->r[i];
		uint64_t pages = (r->size + page - 1) / page;
		for (uint64_t p = 0; p < pages; p += sizeof vec) {
			uint64_t k = pages - p < sizeof vec ? pages - p : sizeof vec;
			if (mincore(r->host + p * page, k * page, vec))
				break;
			for (uint64_t j = 0; j < k; j++)
				total += (vec[j] & 1) ? (uint64_t)page : 0;
		}
	}
	return total;
}

int mb_mem_revoke(struct mb_mem *mem, size_t i)
{
	if (i >= mem->n)
		return mb_seterr(-EINVAL, "memory: no region %zu", i);
	__atomic_fetch_or(&mem->r[i].flags, MB_MEM_REVOKED, __ATOMIC_RELEASE);
	atomic_fetch_add(&mem->gen, 1);
	return 0;
}

int mb_mem_add_live(struct mb_mem *mem, uint64_t base, uint64_t size, unsigned flags,
		    void *host, const char *name, uint64_t *sink, uint64_t sink0)
{
	if (!name)
		name = "ram";
	if (!size || !host || base + size < base)
		return mb_seterr(-EINVAL, "memory: region %s: bad size or mapping", name);
	size_t n = mem->n; /* the one writer */
	if (n == MAXREG)
		return mb_seterr(-ENOSPC, "memory: more than %d regions", MAXREG);
	for (size_t i = 0; i < n; i++) {
		const struct mb_mem_region *o = &mem->r[i];
		if (base < o->base + o->size && o->base < base + size)
			return mb_seterr(-EEXIST, "memory: region %s at 0x%" PRIx64 "+0x%"
					 PRIx64 " overlaps %s", name, base, size, o->name);
	}
	size_t words = dirty_words(size) ? dirty_words(size) : 1;
	uint64_t *dirty = calloc(words, sizeof *dirty), *log = calloc(words, sizeof *log);
	if (!dirty || !log) {
		free(dirty);
		free(log);
		return mb_seterr(-ENOMEM, "memory: out of memory for %s", name);
	}
	/* Everything of slot n before n is published: a reader that sees
	 * the new count sees the whole region, sink included. */
	mem->r[n] = (struct mb_mem_region){ .base = base, .size = size, .host = host,
					    .flags = flags };
	snprintf(mem->r[n].name, sizeof mem->r[n].name, "%s", name);
	mem->owned[n] = false;
	mem->fd[n] = -1;
	mem->dirty[n] = dirty, mem->log[n] = log, mem->any[n] = 0;
	mem->sink[n] = sink, mem->sink0[n] = sink0;
	__atomic_store_n(&mem->n, n + 1, __ATOMIC_RELEASE);
	atomic_fetch_add(&mem->gen, 1);
	return 0;
}

int mb_mem_unrevoke(struct mb_mem *mem, size_t i)
{
	if (i >= mb_mem_count(mem))
		return mb_seterr(-EINVAL, "memory: no region %zu", i);
	__atomic_fetch_and(&mem->r[i].flags, ~(unsigned)MB_MEM_REVOKED, __ATOMIC_RELEASE);
	atomic_fetch_add(&mem->gen, 1);
	return 0;
}

void mb_mem_dirty_sink(struct mb_mem *mem, size_t i, uint64_t *bits, uint64_t bit0)
{
	if (i >= mb_mem_count(mem))
		return;
	/* A window granted again may be in use (a revoked region's lookups
	 * fail, but one may have begun before): the bit, then the map. */
	__atomic_store_n(&mem->sink0[i], bit0, __ATOMIC_RELAXED);
	__atomic_store_n(&mem->sink[i], bits, __ATOMIC_RELEASE);
}

int mb_mem_dirty_source(struct mb_mem *mem, uint64_t base, uint64_t *bits, bool add)
{
	for (size_t k = 0; k < mem->nsrc; k++)
		if (mem->src[k].bits == bits && mem->src[k].base == base) {
			if (!add)
				mem->src[k] = mem->src[--mem->nsrc];
			return 0;
		}
	if (!add)
		return 0;
	struct dsrc *s = realloc(mem->src, (mem->nsrc + 1) * sizeof *s);
	if (!s)
		return mb_seterr(-ENOMEM, "memory: out of memory");
	mem->src = s;
	s[mem->nsrc++] = (struct dsrc){ base, bits };
	return 0;
}

unsigned mb_mem_gen(struct mb_mem *mem)
{
	return atomic_load_explicit(&mem->gen, memory_order_acquire);
}

void mb_mem_set_remote(struct mb_mem *mem, const struct mb_mem_remote_ops *ops, void *ctx)
{
	mem->rops = ops, mem->rctx = ctx;
}

bool mb_mem_is_remote(const struct mb_mem *mem)
{
	return mem->rops != NULL;
}

void mb_mem_written(struct mb_mem *mem, uint64_t gpa, uint64_t len)
{
	const struct mb_mem_region *r = find(mem, gpa);
	if (!r || !len)
		return;
	uint64_t off = gpa - r->base;
	if (len > r->size - off)
		return;
	if (r->flags & MB_MEM_REMOTE) {
		if (mem->rops)
			mem->rops->store(mem->rctx, gpa, r->host + off, len);
		return;
	}
	mark(mem, (size_t)(r - mem->r), off, len);
}
