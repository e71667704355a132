/*
 * Copy-on-write disk overlay (overlay.h). The map is a sorted array of
 * (block index, block) pairs: campaigns write few blocks, and a sorted
 * array is copied by a memcpy. Reads take the lock shared, writes and
 * restores exclusive; a block shared with a kept state (refs > 1) is
 * copied before it is written.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moonbox.h"
#include "moonbox/virtio_queue.h"
#include "devices/virtio/overlay.h"

#define BLOCK 4096u

struct block {
	_Atomic unsigned refs;
	uint8_t data[BLOCK];
};

struct map {
	size_t n, cap;
	uint64_t *at;     /* block index, ascending */
	struct block **b;
};

struct mb_overlay_kept {
	struct map map;
};

struct mb_overlay {
	pthread_rwlock_t lock;
	int fd;
	uint64_t size;
	struct map map;
};

static void unref(struct block *b)
{
	if (atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

static void map_clear(struct map *m)
{
	for (size_t i = 0; i < m->n; i++)
		unref(m->b[i]);
	free(m->at);
	free(m->b);
	memset(m, 0, sizeof *m);
}

/* dst = a copy of src sharing its blocks; dst is empty. */
static int map_copy(struct map *dst, const struct map *src)
{
	if (!src->n)
		return 0;
	dst->at = malloc(src->n * sizeof *dst->at);
	dst->b = malloc(src->n * sizeof *dst->b);
	if (!dst->at || !dst->b) {
		free(dst->at);
		free(dst->b);
		dst->at = NULL, dst->b = NULL;
		return -ENOMEM;
	}
	memcpy(dst->at, src->at, src->n * sizeof *dst->at);
	memcpy(dst->b, src->b, src->n * sizeof *dst->b);
	for (size_t i = 0; i < src->n; i++)
		atomic_fetch_add(&src->b[i]->refs, 1);
	dst->n = dst->cap = src->n;
	return 0;
}

/* The position of block index k, or where it would go. */
static size_t find(const struct map *m, uint64_t k, bool *hit)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->at[mid] < k)
			lo = mid + 1;
		else
			hi = mid;
	}
	*hit = lo < m->n && m->at[lo] == k;
	return lo;
}

static int insert(struct map *m, size_t pos, uint64_t k, struct block *b)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		uint64_t *at = realloc(m->at, cap * sizeof *at);
		if (!at)
			return -ENOMEM;
		m->at = at;
		struct block **nb = realloc(m->b, cap * sizeof *nb);
		if (!nb)
			return -ENOMEM;
		m->b = nb, m->cap = cap;
	}
	memmove(m->at + pos + 1, m->at + pos, (m->n - pos) * sizeof *m->at);
	memmove(m->b + pos + 1, m->b + pos, (m->n - pos) * sizeof *m->b);
	m->at[pos] = k, m->b[pos] = b;
	m->n++;
	return 0;
}

struct mb_overlay *mb_overlay_new(int fd, uint64_t size)
{
	struct mb_overlay *o = calloc(1, sizeof *o);
	if (!o)
		return NULL;
	pthread_rwlock_init(&o->lock, NULL);
	o->fd = fd;
	o->size = size;
	return o;
}

void mb_overlay_free(struct mb_overlay *o)
{
	if (!o)
		return;
	map_clear(&o->map);
	pthread_rwlock_destroy(&o->lock);
	free(o);
}

/* Block k of the image into buf (zeros past its end). */
static int base_read(struct mb_overlay *o, uint64_t k, uint8_t *buf)
{
	size_t got = 0;
	while (got < BLOCK) {
		ssize_t r = pread(o->fd, buf + got, BLOCK - got, (off_t)(k * BLOCK + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	memset(buf + got, 0, BLOCK - got);
	return 0;
}

int mb_overlay_read(struct mb_overlay *o, const struct iovec *iov, unsigned n,
		    uint64_t off, uint64_t len)
{
	uint8_t tmp[BLOCK];
	int rc = 0;
	pthread_rwlock_rdlock(&o->lock);
	for (uint64_t done = 0; done < len && !rc;) {
		uint64_t k = (off + done) / BLOCK, in = (off + done) % BLOCK;
		uint64_t piece = BLOCK - in < len - done ? BLOCK - in : len - done;
		bool hit;
		size_t pos = find(&o->map, k, &hit);
		const uint8_t *src = tmp;
		if (hit)
			src = o->map.b[pos]->data;
		else
			rc = base_read(o, k, tmp);
		mb_iov_from_buf(iov, n, done, src + in, piece);
		done += piece;
	}
	pthread_rwlock_unlock(&o->lock);
	return rc;
}

/* Block k, private to the current map (copied from a shared block or the
 * image first, unless whole is set: the caller overwrites all of it). */
static struct block *own(struct mb_overlay *o, uint64_t k, bool whole, int *rc)
{
	bool hit;
	size_t pos = find(&o->map, k, &hit);
	if (hit && atomic_load(&o->map.b[pos]->refs) == 1)
		return o->map.b[pos];
	struct block *b = malloc(sizeof *b);
	if (!b) {
		*rc = -ENOMEM;
		return NULL;
	}
	atomic_init(&b->refs, 1);
	if (hit)
		memcpy(b->data, o->map.b[pos]->data, BLOCK);
	else if (!whole && (*rc = base_read(o, k, b->data))) {
		free(b);
		return NULL;
	}
	if (hit) {
		unref(o->map.b[pos]);
		o->map.b[pos] = b;
	} else if ((*rc = insert(&o->map, pos, k, b))) {
		free(b);
		return NULL;
	}
	return b;
}

static int put(struct mb_overlay *o, const struct iovec *iov, unsigned n,
	       uint64_t off, uint64_t len)
{
	int rc = 0;
	pthread_rwlock_wrlock(&o->lock);
	for (uint64_t done = 0; done < len;) {
		uint64_t k = (off + done) / BLOCK, in = (off + done) % BLOCK;
		uint64_t piece = BLOCK - in < len - done ? BLOCK - in : len - done;
		struct block *b = own(o, k, piece == BLOCK, &rc);
		if (!b)
			break;
		if (iov)
			mb_iov_to_buf(iov, n, done, b->data + in, piece);
		else
			memset(b->data + in, 0, piece);
		done += piece;
	}
	pthread_rwlock_unlock(&o->lock);
	return rc;
}

int mb_overlay_write(struct mb_overlay *o, const struct iovec *iov, unsigned n,
		     uint64_t off, uint64_t len)
{
	return put(o, iov, n, off, len);
}

int mb_overlay_zero(struct mb_overlay *o, uint64_t off, uint64_t len)
{
	return put(o, NULL, 0, off, len);
}

size_t mb_overlay_blocks(struct mb_overlay *o)
{
	pthread_rwlock_rdlock(&o->lock);
	size_t n = o->map.n;
	pthread_rwlock_unlock(&o->lock);
	return n;
}

int mb_overlay_keep(struct mb_overlay *o, struct mb_overlay_kept **out)
{
	*out = NULL;
	pthread_rwlock_rdlock(&o->lock); /* refs are atomic: readers may share */
	int rc = 0;
	if (o->map.n) {
		struct mb_overlay_kept *k = calloc(1, sizeof *k);
		if (!k || (rc = map_copy(&k->map, &o->map))) {
			free(k);
			rc = -ENOMEM;
		} else {
			*out = k;
		}
	}
	pthread_rwlock_unlock(&o->lock);
	return rc;
}

int mb_overlay_put_back(struct mb_overlay *o, const struct mb_overlay_kept *k)
{
	struct map fresh = { 0 };
	/* A kept state read from a file may be of a smaller disk. */
	if (k && k->map.n && k->map.at[k->map.n - 1] >= (o->size + BLOCK - 1) / BLOCK)
		return mb_seterr(-EINVAL, "the overlay holds block %llu, past the end of "
				 "the %llu-byte disk", (unsigned long long)k->map.at[k->map.n - 1],
				 (unsigned long long)o->size);
	if (k && map_copy(&fresh, &k->map))
		return mb_seterr(-ENOMEM, "out of memory for the overlay's map");
	pthread_rwlock_wrlock(&o->lock);
	map_clear(&o->map);
	o->map = fresh;
	pthread_rwlock_unlock(&o->lock);
	return 0;
}

void mb_overlay_drop(struct mb_overlay_kept *k)
{
	if (!k)
		return;
	map_clear(&k->map);
	free(k);
}

size_t mb_overlay_kept_blocks(const struct mb_overlay_kept *k)
{
	return k ? k->map.n : 0;
}

#define KEPT_HDR 16u
#define KEPT_REC (8u + BLOCK)

uint64_t mb_overlay_kept_size(const struct mb_overlay_kept *k)
{
	return k && k->map.n ? KEPT_HDR + (uint64_t)k->map.n * KEPT_REC : 0;
}

int mb_overlay_kept_write(const struct mb_overlay_kept *k,
			  int (*put)(void *ctx, const void *p, size_t n), void *ctx)
{
	if (!k || !k->map.n)
		return 0;
	uint32_t h[2] = { BLOCK, 0 };
	uint64_t n = k->map.n;
	int rc = put(ctx, h, sizeof h);
	if (!rc)
		rc = put(ctx, &n, sizeof n);
	for (size_t i = 0; i < k->map.n && !rc; i++)
		if (!(rc = put(ctx, &k->map.at[i], sizeof k->map.at[i])))
			rc = put(ctx, k->map.b[i]->data, BLOCK);
	return rc;
}

int mb_overlay_kept_read(const void *buf, size_t len, struct mb_overlay_kept **out)
{
	const uint8_t *p = buf;
	uint32_t h[2];
	uint64_t n;
	*out = NULL;
	if (len < KEPT_HDR)
		return mb_seterr(-EINVAL, "overlay blocks: %zu bytes is too short", len);
	memcpy(h, p, sizeof h);
	memcpy(&n, p + 8, sizeof n);
	if (h[0] != BLOCK || h[1])
		return mb_seterr(-EINVAL, "overlay blocks: block size %u, this moonbox "
				 "uses %u", h[0], BLOCK);
	if (n > (len - KEPT_HDR) / KEPT_REC || len - KEPT_HDR != n * KEPT_REC)
		return mb_seterr(-EINVAL, "overlay blocks: %llu blocks do not fill %zu "
				 "bytes", (unsigned long long)n, len);
	if (!n)
		return 0;
	struct mb_overlay_kept *k = calloc(1, sizeof *k);
	if (!k || !(k->map.at = malloc(n * sizeof *k->map.at)) ||
	    !(k->map.b = calloc(n, sizeof *k->map.b))) {
		mb_overlay_drop(k);
		return mb_seterr(-ENOMEM, "overlay blocks: out of memory");
	}
	k->map.cap = n;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *r = p + KEPT_HDR + i * KEPT_REC;
		uint64_t at;
		memcpy(&at, r, sizeof at);
		if (i && at <= k->map.at[i - 1]) {
			unsigned long long prev = k->map.at[i - 1];
			mb_overlay_drop(k);
			return mb_seterr(-EINVAL, "overlay blocks: block %llu after %llu "
					 "(the indices must ascend)", (unsigned long long)at,
					 prev);
		}
		struct block *b = malloc(sizeof *b);
		if (!b) {
			mb_overlay_drop(k);
			return mb_seterr(-ENOMEM, "overlay blocks: out of memory");
		}
		atomic_init(&b->refs, 1);
		memcpy(b->data, r + 8, BLOCK);
		k->map.at[i] = at, k->map.b[i] = b;
		k->map.n = i + 1;
	}
	*out = k;
	return 0;
}
