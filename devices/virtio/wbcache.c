/*
 * The write-back cache (wbcache.h). An open-addressed table maps a sector
 * to its cached 512 bytes and the write request that put them there; the
 * request numbers let a power cut keep or lose whole writes. Requests run
 * on several worker threads: one lock serialises the table (the guest
 * orders dependent requests itself, as it must with a real drive).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moonbox.h"
#include "devices/virtio/wbcache.h"

#define SECTOR 512u
#define EMPTY UINT64_MAX
/* A drive writes its cache back on its own when it fills: past 64 MiB the
 * whole epoch goes to the image (and survives any later cut). */
#define CAP_SECTORS (64u << 11)

struct ent {
	uint64_t sector; /* EMPTY: free slot */
	uint64_t write;  /* the request that wrote it (1, 2, ... per epoch) */
	uint8_t *data;
};

struct mb_wbcache {
	int fd;
	uint64_t size;
	pthread_mutex_t lock;
	struct ent *t;
	size_t cap, n;  /* cap a power of two; n used */
	uint64_t writes; /* requests this epoch */
};

static int write_back(struct mb_wbcache *c,
		      bool (*keep)(const struct ent *e, uint64_t seed), uint64_t seed,
		      uint64_t *written);

static uint64_t hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	return x ^ (x >> 33);
}

static struct ent *slot(struct mb_wbcache *c, uint64_t sector)
{
	size_t i = hash(sector) & (c->cap - 1);
	while (c->t[i].sector != EMPTY && c->t[i].sector != sector)
		i = (i + 1) & (c->cap - 1);
	return &c->t[i];
}

static int grow(struct mb_wbcache *c)
{
	size_t cap = c->cap ? c->cap * 2 : 1024;
	struct ent *t = malloc(cap * sizeof *t);
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < cap; i++)
		t[i].sector = EMPTY;
	struct ent *old = c->t;
	size_t oldcap = c->cap;
	c->t = t, c->cap = cap;
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].sector != EMPTY)
			*slot(c, old[i].sector) = old[i];
	free(old);
	return 0;
}

struct mb_wbcache *mb_wbcache_new(int fd, uint64_t size)
{
	struct mb_wbcache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->fd = fd;
	c->size = size;
	pthread_mutex_init(&c->lock, NULL);
	if (grow(c)) {
		free(c);
		return NULL;
	}
	return c;
}

static void clear(struct mb_wbcache *c)
{
	for (size_t i = 0; i < c->cap; i++)
		if (c->t[i].sector != EMPTY) {
			free(c->t[i].data);
			c->t[i].sector = EMPTY;
		}
	c->n = 0;
	c->writes = 0;
}

void mb_wbcache_free(struct mb_wbcache *c)
{
	if (!c)
		return;
	clear(c);
	free(c->t);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Copy one sector between the iovec at byte pos and buf. */
static void iov_sector(const struct iovec *iov, unsigned n, uint64_t pos,
		       uint8_t *buf, bool to_iov)
{
	unsigned done = 0;
	for (unsigned i = 0; i < n && done < SECTOR; i++) {
		if (pos >= iov[i].iov_len) {
			pos -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - pos;
		if (k > SECTOR - done)
			k = SECTOR - done;
		uint8_t *p = (uint8_t *)iov[i].iov_base + pos;
		if (to_iov)
			memcpy(p, buf + done, k);
		else
			memcpy(buf + done, p, k);
		done += (unsigned)k;
		pos = 0;
	}
}

static int pread_all(int fd, uint8_t *b, size_t len, uint64_t off)
{
	while (len) {
		ssize_t k = pread(fd, b, len, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0) { /* past the end of a sparse tail: zeros */
			memset(b, 0, len);
			return 0;
		}
		b += k, off += (uint64_t)k, len -= (size_t)k;
	}
	return 0;
}

static int pwrite_all(int fd, const uint8_t *b, size_t len, uint64_t off)
{
	while (len) {
		ssize_t k = pwrite(fd, b, len, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		b += k, off += (uint64_t)k, len -= (size_t)k;
	}
	return 0;
}

int mb_wbcache_read(struct mb_wbcache *c, const struct iovec *iov, unsigned n,
		    uint64_t off, uint64_t len)
{
	uint8_t buf[SECTOR];
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	for (uint64_t p = 0; p < len && !rc; p += SECTOR) {
		struct ent *e = slot(c, (off + p) / SECTOR);
		if (e->sector != EMPTY)
			memcpy(buf, e->data, SECTOR);
		else if ((rc = pread_all(c->fd, buf, SECTOR, off + p)))
			break;
		iov_sector(iov, n, p, buf, true);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int mb_wbcache_write(struct mb_wbcache *c, const struct iovec *iov, unsigned n,
		     uint64_t off, uint64_t len)
{
	int rc = 0;
	pthread_mutex_lock(&c->lock);
	if (c->n + len / SECTOR > CAP_SECTORS && (rc = write_back(c, NULL, 0, NULL))) {
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	uint64_t w = ++c->writes;
	for (uint64_t p = 0; p < len; p += SECTOR) {
		if ((c->n + 1) * 4 > c->cap * 3 && (rc = grow(c)))
			break;
		struct ent *e = slot(c, (off + p) / SECTOR);
		if (e->sector == EMPTY) {
			if (!(e->data = malloc(SECTOR))) {
				rc = -ENOMEM;
				break;
			}
			e->sector = (off + p) / SECTOR;
			c->n++;
		}
		e->write = w;
		iov_sector(iov, n, p, e->data, false);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void mb_wbcache_forget(struct mb_wbcache *c, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&c->lock);
	/* Rebuild without the range (deleting from linear probing in place
	 * would break other chains). */
	for (size_t i = 0; i < c->cap; i++) {
		struct ent *e = &c->t[i];
		if (e->sector != EMPTY && e->sector >= off / SECTOR &&
		    e->sector < (off + len) / SECTOR) {
			free(e->data);
			e->sector = EMPTY;
			c->n--;
		}
	}
	struct ent *old = c->t;
	size_t cap = c->cap;
	struct ent *t = malloc(cap * sizeof *t);
	if (t) {
		for (size_t i = 0; i < cap; i++)
			t[i].sector = EMPTY;
		c->t = t;
		for (size_t i = 0; i < cap; i++)
			if (old[i].sector != EMPTY)
				*slot(c, old[i].sector) = old[i];
		free(old);
	}
	/* without memory the old table stays: lookups may miss a moved entry
	 * and read the image, which a discard zeroed anyway */
	pthread_mutex_unlock(&c->lock);
}

/* Write back the entries keep() selects; then empty the cache. */
static int write_back(struct mb_wbcache *c,
		      bool (*keep)(const struct ent *e, uint64_t seed), uint64_t seed,
		      uint64_t *written)
{
	int rc = 0;
	for (size_t i = 0; i < c->cap; i++) {
		struct ent *e = &c->t[i];
		if (e->sector == EMPTY || (keep && !keep(e, seed)))
			continue;
		int r = pwrite_all(c->fd, e->data, SECTOR, e->sector * SECTOR);
		if (r && !rc)
			rc = r;
		if (!r && written)
			(*written)++;
	}
	if (!rc && fdatasync(c->fd))
		rc = -errno;
	clear(c);
	return rc;
}

int mb_wbcache_flush(struct mb_wbcache *c)
{
	pthread_mutex_lock(&c->lock);
	int rc = write_back(c, NULL, 0, NULL);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* The seeded coin of a write or of a sector: a bijective mix (the fault
 * engine's generator, mb_fault_hash) of the seed and what it decides. */
static bool keep_write(const struct ent *e, uint64_t seed)
{
	return mb_fault_hash(seed, 1, e->write) & 1;
}

static bool keep_sector(const struct ent *e, uint64_t seed)
{
	return mb_fault_hash(seed, 2, e->sector) & 1;
}

int mb_wbcache_power_cut(struct mb_wbcache *c, enum mb_power_cut model,
			 uint64_t seed, struct mb_power_cut_result *r)
{
	struct mb_power_cut_result res = { 0 };
	pthread_mutex_lock(&c->lock);
	res.cached = c->n;
	res.writes = c->writes;
	int rc;
	if (model == MB_CUT_DROP) {
		clear(c);
		rc = fdatasync(c->fd) ? -errno : 0;
	} else {
		rc = write_back(c, model == MB_CUT_SUBSET ? keep_write : keep_sector,
				seed, &res.written);
	}
	pthread_mutex_unlock(&c->lock);
	if (r)
		*r = res;
	return rc;
}

uint64_t mb_wbcache_sectors(struct mb_wbcache *c)
{
	pthread_mutex_lock(&c->lock);
	uint64_t n = c->n;
	pthread_mutex_unlock(&c->lock);
	return n;
}
