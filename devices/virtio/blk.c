/*
 * virtio-blk, virtio spec v1.2 sec. 5.2. A request is a chain:
 *   out: struct { le32 type; le32 reserved; le64 sector; } then data (OUT)
 *        or discard segments { le64 sector; le32 num_sectors; le32 flags; }
 *   in:  data (IN, GET_ID), then one status byte, the chain's last byte.
 * Framing is free (sec. 2.6.4): the header may span buffers, so it is
 * gathered; data never is - preadv/pwritev take the guest buffers as
 * iovecs.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "moonbox/virtio_blk.h"
#include "devices/virtio/overlay.h"
#include "devices/virtio/wbcache.h"
#include "moonbox/sandbox.h"

#define SECTOR 512u
/* blk_size becomes the guest's logical block size (Linux virtio_blk):
 * 512 keeps every file system block size mountable. */
#define BLK_SIZE 512u
#define MAX_DISCARD_SEG 32u
#define MAX_WORKERS 8

struct req {
	struct mb_virtio_blk *b;
	struct mb_virtio *t;
	struct mb_vq *q;
	struct req *next;            /* work list or free list */
	struct req *older, *newer;   /* in flight, in the order popped */
	struct mb_vq_chain c;
	bool faulted;                /* v holds a fault decision */
	struct mb_fault_verdict v;
	struct mb_fault_held held;   /* parked by a hold fault */
	struct mb_fault_ask ask;     /* parked for an m:on function's answer */
};

struct hdr {
	uint32_t type, reserved;
	uint64_t sector;
};

struct mb_virtio_blk {
	struct mb_machine *m; /* attached to (NULL: not yet) */
	int fd;
	bool ro;
	struct mb_overlay *ovl; /* NULL: requests go to the file */
	struct mb_wbcache *wb;  /* cache = "writeback": the drive's cache */
	uint64_t sectors;       /* the capacity the guest sees */
	uint64_t image_sectors; /* the image's (a resize goes no further) */
	char serial[20]; /* VIRTIO_BLK_ID_BYTES, zero padded */

	pthread_mutex_t lock; /* the lists and counts below */
	pthread_cond_t work, done;
	struct req *head, *tail, *free;
	struct req *oldest, *newest; /* popped and not yet completed */
	unsigned inflight;
	_Atomic bool sync_failed;
	bool quit;
	unsigned nthreads;
	pthread_t th[MAX_WORKERS];

	struct {
		_Atomic uint64_t reads, writes, flushes, discards, get_ids, syncs;
		_Atomic uint64_t bytes_read, bytes_written, ioerr, unsupp;
	} st;
	uint64_t max_inflight;
	/* NULL unless a fault rule targets this disk (moonbox/fault.h). */
	struct mb_fault_site *_Atomic fault;
	/* NULL unless m:on("blk") watches this disk: told of every request
	 * taken from the ring, before the fault rules decide. */
	mb_blk_observer *_Atomic obs;
	mb_fault_ask_cancel *obs_cancel;
	void *obs_ctx;
	/* Resets under way: a request taken meanwhile is not asked about
	 * (the reset waits for it, and its caller may be the thread the
	 * answer needs: the script's, a device process's control thread). */
	_Atomic unsigned resetting;
};

/* ---- one request ------------------------------------------------------------ */

/* Move all of iov from/to the file at off, retrying short transfers.
 * Reads past the end of the file read zeros. */
static int xfer(int fd, struct iovec *iov, unsigned n, off_t off, bool out)
{
	while (n) {
		ssize_t r = out ? pwritev(fd, iov, (int)n, off)
				: preadv(fd, iov, (int)n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {
			if (out)
				return -EIO;
			for (unsigned i = 0; i < n; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		off += r;
		while (n && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++, n--;
		}
		if (n) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static bool in_range(struct mb_virtio_blk *b, uint64_t sector, uint64_t n)
{
	return sector <= b->sectors && n <= b->sectors - sector;
}

/* IN and OUT: data must be whole sectors inside the disk (5.2.6.2). */
static uint8_t rw(struct mb_virtio_blk *b, const struct mb_vq_chain *c,
		  uint64_t sector, bool out, uint32_t *written,
		  const struct mb_fault_verdict *v)
{
	struct iovec data[MB_VQ_MAX_SEGS];
	unsigned n;
	uint64_t len;
	if (out) {
		len = c->out_len - 16;
		n = mb_iov_slice(c->iov, c->nout, 16, len, data);
	} else {
		len = c->in_len - 1;
		n = mb_iov_slice(c->iov + c->nout, c->nin, 0, len, data);
	}
	if (len % SECTOR || !in_range(b, sector, len / SECTOR))
		return VIRTIO_BLK_S_IOERR;
	if (out && b->ro)
		return VIRTIO_BLK_S_IOERR; /* and no data written (5.2.6.2) */
	if (out && v && v->torn && (uint64_t)v->keep * SECTOR < len) {
		/* A torn write: the first keep sectors reach the file, the
		 * rest never does, and the guest is told it all went well. */
		len = (uint64_t)v->keep * SECTOR;
		n = mb_iov_slice(c->iov, c->nout, 16, len, data);
	}
	if (len && (b->ovl ? (out ? mb_overlay_write(b->ovl, data, n, sector * SECTOR, len)
				 : mb_overlay_read(b->ovl, data, n, sector * SECTOR, len))
		    : b->wb ? (out ? mb_wbcache_write(b->wb, data, n, sector * SECTOR, len)
				   : mb_wbcache_read(b->wb, data, n, sector * SECTOR, len))
			  : xfer(b->fd, data, n, (off_t)(sector * SECTOR), out)))
		return VIRTIO_BLK_S_IOERR;
	if (v && !out)
		mb_fault_blk_corrupt(v, data, n, sector, len);
	if (out) {
		atomic_fetch_add(&b->st.writes, 1);
		atomic_fetch_add(&b->st.bytes_written, len);
	} else {
		atomic_fetch_add(&b->st.reads, 1);
		atomic_fetch_add(&b->st.bytes_read, len);
		*written += (uint32_t)len;
	}
	return VIRTIO_BLK_S_OK;
}

/* FLUSH: fdatasync. Once one has failed, Linux may have dropped the dirty
 * pages and reports the error to that one call only (a later fdatasync
 * succeeds): every later FLUSH fails, as QEMU's file-posix does. */
static uint8_t flush(struct mb_virtio_blk *b, const struct mb_fault_verdict *v)
{
	atomic_fetch_add(&b->st.flushes, 1);
	if (atomic_load(&b->sync_failed))
		return VIRTIO_BLK_S_IOERR;
	if (v && v->lie)
		return VIRTIO_BLK_S_OK; /* a lying flush: flushes - syncs counts them */
	if (b->ovl) /* the overlay is memory: nothing to make durable */
		return VIRTIO_BLK_S_OK;
	atomic_fetch_add(&b->st.syncs, 1);
	if (b->wb ? mb_wbcache_flush(b->wb) == 0 : fdatasync(b->fd) == 0)
		return VIRTIO_BLK_S_OK;
	atomic_store(&b->sync_failed, true);
	return VIRTIO_BLK_S_IOERR;
}

static uint8_t discard(struct mb_virtio_blk *b, const struct mb_vq_chain *c)
{
	uint64_t len = c->out_len - 16;
	if (b->ro)
		return VIRTIO_BLK_S_IOERR;
	if (len == 0 || len % 16 || len / 16 > MAX_DISCARD_SEG)
		return VIRTIO_BLK_S_IOERR;
	for (uint64_t off = 16; off < c->out_len; off += 16) {
		struct { uint64_t sector; uint32_t num, flags; } s;
		mb_iov_to_buf(c->iov, c->nout, off, &s, 16);
		if (s.flags & ~1u) /* only VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP */
			return VIRTIO_BLK_S_UNSUPP;
		if (!in_range(b, s.sector, s.num))
			return VIRTIO_BLK_S_IOERR;
		if (s.num && b->wb)
			mb_wbcache_forget(b->wb, s.sector * SECTOR, (uint64_t)s.num * SECTOR);
		if (s.num && b->ovl) {
			if (mb_overlay_zero(b->ovl, s.sector * SECTOR,
					    (uint64_t)s.num * SECTOR))
				return VIRTIO_BLK_S_IOERR;
		} else if (s.num && fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       (off_t)(s.sector * SECTOR),
				       (off_t)s.num * SECTOR))
			return VIRTIO_BLK_S_IOERR;
	}
	atomic_fetch_add(&b->st.discards, 1);
	return VIRTIO_BLK_S_OK;
}

/* The header, read once from guest memory; false when it is too short. */
static bool header(const struct mb_vq_chain *c, struct hdr *h)
{
	if (c->out_len < sizeof *h)
		return false;
	mb_iov_to_buf(c->iov, c->nout, 0, h, sizeof *h);
	return true;
}

/* h: the chain's header, NULL when it has none; v: a fault decision
 * for it, or NULL. */
static uint32_t execute(struct mb_virtio_blk *b, const struct mb_vq_chain *c,
			const struct hdr *h, const struct mb_fault_verdict *v)
{
	uint32_t written = 0;
	uint8_t status;
	if (c->in_len == 0) {
		/* Nowhere to put a status: hand it back untouched. */
		atomic_fetch_add(&b->st.ioerr, 1);
		return 0;
	}
	const struct iovec *in = c->iov + c->nout;
	if (!h) {
		status = VIRTIO_BLK_S_IOERR; /* header too short */
		goto done;
	}
	if (v && v->ms) {
		struct timespec ts = { v->ms / 1000, (long)(v->ms % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
	}
	if (v && v->error) {
		status = v->status; /* the file is not touched */
		goto done;
	}
	switch (h->type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		status = rw(b, c, h->sector, h->type == VIRTIO_BLK_T_OUT, &written, v);
		break;
	case VIRTIO_BLK_T_FLUSH:
		status = flush(b, v);
		break;
	case VIRTIO_BLK_T_GET_ID: {
		size_t n = c->in_len - 1 < sizeof b->serial ? c->in_len - 1
							    : sizeof b->serial;
		written = (uint32_t)mb_iov_from_buf(in, c->nin, 0, b->serial, n);
		atomic_fetch_add(&b->st.get_ids, 1);
		status = VIRTIO_BLK_S_OK;
		break;
	}
	case VIRTIO_BLK_T_DISCARD:
		status = discard(b, c);
		break;
	default:
		status = VIRTIO_BLK_S_UNSUPP;
	}
done:
	if (status == VIRTIO_BLK_S_IOERR)
		atomic_fetch_add(&b->st.ioerr, 1);
	else if (status == VIRTIO_BLK_S_UNSUPP)
		atomic_fetch_add(&b->st.unsupp, 1);
	mb_iov_from_buf(in, c->nin, c->in_len - 1, &status, 1);
	return written + 1;
}

/* The fault site: the event a request is, and the plan's decision. Runs
 * as the request leaves the ring, in ring order, so decisions do not
 * depend on which worker gets there first. */
static bool classify(const struct mb_vq_chain *c, const struct hdr *h,
		     struct mb_fault_blk_event *out)
{
	struct mb_fault_blk_event e = { 0, 0, 0 };
	if (!h)
		return false;
	switch (h->type) {
	case VIRTIO_BLK_T_IN:
		e = (struct mb_fault_blk_event){ MB_FAULT_OP_READ, h->sector,
			c->in_len ? (c->in_len - 1) / SECTOR : 0 };
		break;
	case VIRTIO_BLK_T_OUT:
		e = (struct mb_fault_blk_event){ MB_FAULT_OP_WRITE, h->sector,
			(c->out_len - 16) / SECTOR };
		break;
	case VIRTIO_BLK_T_FLUSH:
		e.op = MB_FAULT_OP_FLUSH;
		break;
	case VIRTIO_BLK_T_DISCARD: /* the first segment stands for the request */
		e.op = MB_FAULT_OP_DISCARD;
		if (c->out_len >= 32) {
			struct { uint64_t sector; uint32_t num, flags; } seg;
			mb_iov_to_buf(c->iov, c->nout, 16, &seg, 16);
			e.sector = seg.sector, e.nsectors = seg.num;
		}
		break;
	default:
		return false;
	}
	*out = e;
	return true;
}

/* h: the chain's header (read once: the decision and the request see the
 * same bytes), NULL when it has none. */
static bool fault_decide(struct mb_fault_site *s, const struct mb_vq_chain *c,
			 const struct hdr *h, struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e;
	if (!classify(c, h, &e) || !mb_fault_blk_maybe(s, &e, v))
		return false; /* no rule here can match: v is not read */
	return v->error || v->ms || v->corrupt || v->lie || v->torn || v->hold;
}

/* A request leaving the ring, when a fault site or an observer is set
 * (the caller's one branch): the rules decide; *ask: the observer is to
 * be asked about *e once the request is in flight. */
static bool watched(struct mb_virtio_blk *b, struct mb_fault_site *fs, mb_blk_observer *ob,
		    const struct mb_vq_chain *c, struct mb_fault_verdict *v,
		    struct mb_fault_blk_event *e, bool *ask)
{
	struct hdr h;
	const struct hdr *hp = header(c, &h) ? &h : NULL;
	*ask = ob && !atomic_load(&b->resetting) &&
	       classify(c, hp, e);
	return fs && fault_decide(fs, c, hp, v);
}

int mb_virtio_blk_set_observer(struct mb_virtio_blk *b, mb_blk_observer *fn,
			       mb_fault_ask_cancel *cancel, void *ctx)
{
	mb_blk_observer *old = atomic_load(&b->obs);
	if (old && (old != fn || b->obs_ctx != ctx))
		return mb_seterr(-EBUSY, "virtio_blk: already observed");
	b->obs_ctx = ctx;
	b->obs_cancel = cancel;
	atomic_store_explicit(&b->obs, fn, memory_order_release);
	return 0;
}

static struct mb_fault_site *fault_site(struct mb_virtio_blk *b)
{
	return atomic_load_explicit(&b->fault, memory_order_acquire);
}

int mb_virtio_blk_set_fault(struct mb_virtio_blk *b, struct mb_fault_site *s)
{
	return mb_fault_site_install(&b->fault, s);
}

uint32_t mb_virtio_blk_request(struct mb_virtio_blk *b,
			       const struct mb_vq_chain *c)
{
	struct hdr h;
	struct mb_fault_verdict v;
	const struct hdr *hp = header(c, &h) ? &h : NULL;
	struct mb_fault_site *fs = fault_site(b);
	bool f = __builtin_expect(fs != NULL, 0) && fault_decide(fs, c, hp, &v);
	return execute(b, c, hp, f ? &v : NULL);
}

/* ---- requests in flight ------------------------------------------------------ */

static void finish(struct mb_virtio_blk *b, struct req *r)
{
	struct hdr h;
	bool has = header(&r->c, &h);
	if (has && h.type == VIRTIO_BLK_T_FLUSH) {
		/* A FLUSH must cover the writes completed before it (5.2.6.2);
		 * it waits for every request popped before it, so a write still
		 * running on another worker is in the file before the sync. The
		 * oldest request never waits: no deadlock. */
		pthread_mutex_lock(&b->lock);
		while (b->oldest != r)
			pthread_cond_wait(&b->done, &b->lock);
		pthread_mutex_unlock(&b->lock);
	}
	uint32_t len = execute(b, &r->c, has ? &h : NULL, r->faulted ? &r->v : NULL);
	mb_virtio_complete(r->t, r->q, r->c.head, len);
	pthread_mutex_lock(&b->lock);
	*(r->older ? &r->older->newer : &b->oldest) = r->newer;
	*(r->newer ? &r->newer->older : &b->newest) = r->older;
	r->next = b->free;
	b->free = r;
	b->inflight--;
	pthread_cond_broadcast(&b->done); /* reset, and flushes waiting */
	pthread_mutex_unlock(&b->lock);
}

static void *worker(void *arg)
{
	struct mb_virtio_blk *b = arg;
	pthread_mutex_lock(&b->lock);
	for (;;) {
		while (!b->head && !b->quit)
			pthread_cond_wait(&b->work, &b->lock);
		if (!b->head)
			break;
		struct req *r = b->head;
		mb_seccomp_point(b->m, MB_THREAD_WORKER); /* before guest data */
		b->head = r->next;
		if (!b->head)
			b->tail = NULL;
		pthread_mutex_unlock(&b->lock);
		finish(b, r);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

/* Under the lock, which it drops: a worker takes r, or we run it here. */
static void start(struct mb_virtio_blk *b, struct req *r)
{
	if (b->nthreads) {
		if (b->tail)
			b->tail->next = r;
		else
			b->head = r;
		b->tail = r;
		pthread_cond_signal(&b->work);
		pthread_mutex_unlock(&b->lock);
	} else {
		pthread_mutex_unlock(&b->lock);
		finish(b, r);
	}
}

/* A held request released (plan:release, a reset, the plan closed): it
 * runs now, with the rest of its verdict. While the disk is being freed
 * it is dropped: the rings are going away. */
static void parked_run(struct req *r)
{
	struct mb_virtio_blk *b = r->b;
	pthread_mutex_lock(&b->lock);
	if (b->quit) {
		*(r->older ? &r->older->newer : &b->oldest) = r->newer;
		*(r->newer ? &r->newer->older : &b->newest) = r->older;
		b->inflight--;
		pthread_mutex_unlock(&b->lock);
		free(r);
		return;
	}
	start(b, r);
}

static void held_release(void *arg)
{
	struct req *r = arg;
	r->v.hold = false;
	parked_run(r);
}

/* An m:on function's answer (or none: v NULL) to a parked request: its
 * error or latency joins what the rules decided, then it runs (or waits
 * for its hold's release). */
static void asked_answer(void *arg, const struct mb_fault_verdict *v)
{
	struct req *r = arg;
	if (!r->faulted)
		memset(&r->v, 0, sizeof r->v);
	if (v && v->error && !r->v.error)
		r->v.error = true, r->v.status = v->status, r->faulted = true;
	if (v && v->ms > r->v.ms)
		r->v.ms = v->ms, r->faulted = true;
	struct mb_fault_site *fs = fault_site(r->b);
	if (r->faulted && r->v.hold && fs)
		mb_fault_hold(fs, r->v.tag, &r->held, held_release, r);
	else
		parked_run(r);
}

static struct req *req_get(struct mb_virtio_blk *b)
{
	pthread_mutex_lock(&b->lock);
	struct req *r = b->free;
	if (r)
		b->free = r->next;
	pthread_mutex_unlock(&b->lock);
	return r ? r : malloc(sizeof *r);
}

/* A request in flight that a rule decided on or an observer is to be
 * asked about (no lock held). */
static void watched_start(struct mb_virtio_blk *b, struct req *r,
			  struct mb_fault_site *fs, mb_blk_observer *ob,
			  const struct mb_fault_blk_event *e, bool ask)
{
	/* In flight (a reset waits for it), parked until the m:on function
	 * answers: asked_answer runs it. */
	r->ask.answer = asked_answer, r->ask.arg = r;
	if (ask && ob(b->obs_ctx, b, e, &r->ask)) {
		/* A reset that began after watched() looked may have cancelled
		 * before this ask was taken: cancel again (the reset's flag is
		 * set before its cancel, so one of the two sees the other). */
		if (atomic_load(&b->resetting) && b->obs_cancel)
			b->obs_cancel(b->obs_ctx, b);
		return;
	}
	if (r->faulted && r->v.hold) {
		/* In flight but parked: plan:release(tag) starts it. */
		mb_fault_hold(fs, r->v.tag, &r->held, held_release, r);
	} else {
		pthread_mutex_lock(&b->lock);
		start(b, r); /* unlocks */
	}
}

/* The driver rang: pop every chain and start it (sec. 2.7.13 device side). */
static void blk_notify(void *dev, struct mb_virtio *t, unsigned qi)
{
	struct mb_virtio_blk *b = dev;
	struct mb_vq *q = mb_virtio_queue(t, qi);
	do {
		for (;;) {
			struct req *r = req_get(b);
			if (!r)
				return; /* out of memory: the next kick retries */
			int rc = mb_vq_pop(q, &r->c);
			struct mb_fault_site *fs = fault_site(b);
			mb_blk_observer *ob =
				atomic_load_explicit(&b->obs, memory_order_acquire);
			struct mb_fault_blk_event e;
			bool ask = false;
			r->faulted = __builtin_expect(((uintptr_t)fs | (uintptr_t)ob) != 0, 0) &&
				     rc > 0 && watched(b, fs, ob, &r->c, &r->v, &e, &ask);
			pthread_mutex_lock(&b->lock);
			if (rc <= 0) {
				r->next = b->free;
				b->free = r;
				pthread_mutex_unlock(&b->lock);
				if (rc < 0)
					return;
				break;
			}
			r->b = b, r->t = t, r->q = q, r->next = NULL;
			r->older = b->newest, r->newer = NULL;
			*(b->newest ? &b->newest->newer : &b->oldest) = r;
			b->newest = r;
			if (++b->inflight > b->max_inflight)
				b->max_inflight = b->inflight;
			if (__builtin_expect(r->faulted | ask, 0)) { /* one branch */
				pthread_mutex_unlock(&b->lock);
				watched_start(b, r, fs, ob, &e, ask);
			} else {
				start(b, r); /* unlocks */
			}
		}
	} while (mb_vq_arm(q));
}

/* Reset: every request in flight completes before the rings go away. */
static void blk_reset(void *dev)
{
	struct mb_virtio_blk *b = dev;
	mb_blk_observer *ob = atomic_load(&b->obs);
	atomic_fetch_add(&b->resetting, 1);
	if (ob && b->obs_cancel) /* asked ones go on unanswered */
		b->obs_cancel(b->obs_ctx, b);
	mb_fault_site_release(fault_site(b)); /* held ones complete first */
	pthread_mutex_lock(&b->lock);
	while (b->inflight)
		pthread_cond_wait(&b->done, &b->lock);
	pthread_mutex_unlock(&b->lock);
	atomic_fetch_sub(&b->resetting, 1);
}

/* Config layout, sec. 5.2.4 (fields we do not offer stay 0). */
static void blk_config_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_virtio_blk *b = dev;
	uint8_t cfg[MB_VIRTIO_BLK_CONFIG_SIZE] = { 0 };
	uint32_t seg_max = MB_VQ_MAX_SIZE - 2, blk = BLK_SIZE;
	uint32_t max_discard = UINT32_MAX / SECTOR, dseg = MAX_DISCARD_SEG;
	uint32_t dalign = 4096 / SECTOR; /* discard in whole pages */
	memcpy(cfg + 0, &b->sectors, 8);        /* capacity */
	memcpy(cfg + 12, &seg_max, 4);          /* seg_max */
	memcpy(cfg + 20, &blk, 4);              /* blk_size */
	memcpy(cfg + 36, &max_discard, 4);      /* max_discard_sectors */
	memcpy(cfg + 40, &dseg, 4);             /* max_discard_seg */
	memcpy(cfg + 44, &dalign, 4);           /* discard_sector_alignment */
	memcpy(data, cfg + off, size);
}

const struct mb_virtio_dev_ops mb_virtio_blk_ops = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.nqueues = 1,
	.queue_max = MB_VQ_MAX_SIZE,
	.config_size = MB_VIRTIO_BLK_CONFIG_SIZE,
	.config_read = blk_config_read,
	.notify = blk_notify,
	.reset = blk_reset,
};

/* ---- life cycle ----------------------------------------------------------------- */

static struct mb_virtio_blk *blk_new(const struct mb_virtio_blk_config *cfg,
				     int image_fd);

struct mb_virtio_blk *mb_virtio_blk_new(const struct mb_virtio_blk_config *cfg)
{
	return blk_new(cfg, 0);
}

/* image_fd > 0: the image already open (a device process's disk). */
static struct mb_virtio_blk *blk_new(const struct mb_virtio_blk_config *cfg,
				     int image_fd)
{
	const char *serial = cfg->serial ? cfg->serial : "";
	if (strlen(serial) > 20) {
		mb_seterr(-EINVAL, "serial: \"%s\" is longer than 20 bytes", serial);
		return NULL;
	}
	int fd = image_fd > 0
			 ? fcntl(image_fd, F_DUPFD_CLOEXEC, 3)
			 : open(cfg->image, (cfg->readonly ? O_RDONLY : O_RDWR) |
					    O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st)) {
		mb_seterr(-errno, "%s: %s", cfg->image, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < SECTOR) {
		mb_seterr(-EINVAL, "%s: not a regular file of at least 512 bytes",
			  cfg->image);
		close(fd);
		return NULL;
	}
	struct mb_virtio_blk *b = calloc(1, sizeof *b);
	if (!b) {
		close(fd);
		mb_seterr(-ENOMEM, "virtio-blk: out of memory");
		return NULL;
	}
	b->fd = fd;
	b->ro = cfg->readonly;
	b->sectors = b->image_sectors = (uint64_t)st.st_size / SECTOR;
	memcpy(b->serial, serial, strlen(serial));
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->work, NULL);
	pthread_cond_init(&b->done, NULL);
	unsigned n = cfg->threads > MAX_WORKERS ? MAX_WORKERS : cfg->threads;
	for (; b->nthreads < n; b->nthreads++)
		if (pthread_create(&b->th[b->nthreads], NULL, worker, b))
			break;
	return b;
}

static int use_overlay(struct mb_virtio_blk *b, const char *image, int ifd)
{
	if (b->ovl)
		return 0;
	/* the overlay never writes it */
	int fd = ifd > 0 ? fcntl(ifd, F_DUPFD_CLOEXEC, 3)
			 : open(image, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mb_seterr(-errno, "%s: %s", image, strerror(errno));
	if (!(b->ovl = mb_overlay_new(fd, b->sectors * SECTOR))) {
		close(fd);
		return mb_seterr(-ENOMEM, "virtio-blk: out of memory");
	}
	close(b->fd);
	b->fd = fd;
	return 0;
}

int mb_virtio_blk_use_overlay(struct mb_virtio_blk *b, const char *image)
{
	return use_overlay(b, image, 0);
}

void mb_virtio_blk_free(struct mb_virtio_blk *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->quit = true; /* workers drain the list, then leave */
	pthread_cond_broadcast(&b->work);
	pthread_mutex_unlock(&b->lock);
	mb_blk_observer *ob = atomic_load(&b->obs);
	if (ob && b->obs_cancel) /* drops what is asked about */
		b->obs_cancel(b->obs_ctx, b);
	mb_fault_site_release(fault_site(b)); /* drops what is held */
	for (unsigned i = 0; i < b->nthreads; i++)
		pthread_join(b->th[i], NULL);
	for (struct req *r = b->free, *n; r; r = n) {
		n = r->next;
		free(r);
	}
	mb_wbcache_free(b->wb);
	mb_overlay_free(b->ovl);
	close(b->fd);
	mb_fault_site_put(fault_site(b));
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->work);
	pthread_cond_destroy(&b->done);
	free(b);
}

uint64_t mb_virtio_blk_features(struct mb_virtio_blk *b)
{
	uint64_t f = 1ull << VIRTIO_BLK_F_SEG_MAX | 1ull << VIRTIO_BLK_F_BLK_SIZE |
		     1ull << VIRTIO_BLK_F_FLUSH;
	return f | (b->ro ? 1ull << VIRTIO_BLK_F_RO : 1ull << VIRTIO_BLK_F_DISCARD);
}

int mb_virtio_blk_check_resize(struct mb_virtio_blk *b, uint64_t sectors)
{
	if (sectors > b->image_sectors)
		return mb_seterr(-EINVAL, "capacity: %llu sectors is more than the image "
				 "holds (%llu)", (unsigned long long)sectors,
				 (unsigned long long)b->image_sectors);
	return 0;
}

/* 5.2.4: a capacity change is a config change (generation, interrupt).
 * Requests already taken keep the bounds they were checked against. */
void mb_virtio_blk_resize(struct mb_virtio_blk *b, struct mb_virtio *t,
			  uint64_t sectors)
{
	if (mb_virtio_blk_check_resize(b, sectors))
		return;
	__atomic_store_n(&b->sectors, sectors, __ATOMIC_RELAXED);
	mb_virtio_config_change(t);
}

uint64_t mb_virtio_blk_capacity(struct mb_virtio_blk *b)
{
	return b->sectors;
}

int mb_virtio_blk_use_wbcache(struct mb_virtio_blk *b)
{
	if (b->ovl)
		return mb_seterr(-EINVAL, "cache: a write-back cache over an overlay "
				 "has nothing to lose (the overlay is memory)");
	if (b->ro)
		return mb_seterr(-EINVAL, "cache: a readonly disk has no writes to cache");
	if (!b->wb && !(b->wb = mb_wbcache_new(b->fd, b->sectors * SECTOR)))
		return mb_seterr(-ENOMEM, "cache: out of memory");
	return 0;
}

int mb_virtio_blk_power_cut(struct mb_virtio_blk *b, enum mb_power_cut model,
			    uint64_t seed, struct mb_power_cut_result *r)
{
	if (!b->wb)
		return mb_seterr(-EINVAL, "power_cut: the disk has no write-back cache "
				 "(cache = \"writeback\")");
	mb_virtio_blk_quiesce(b); /* nothing in flight while the power goes */
	int rc = mb_wbcache_power_cut(b->wb, model, seed, r);
	return rc ? mb_seterr(rc, "power_cut: writing the image: %s", strerror(-rc)) : 0;
}

size_t mb_virtio_blk_overlay_blocks(struct mb_virtio_blk *b)
{
	return b->ovl ? mb_overlay_blocks(b->ovl) : 0;
}

void mb_virtio_blk_stats(struct mb_virtio_blk *b, struct mb_virtio_blk_stats *st)
{
	st->reads = b->st.reads;
	st->writes = b->st.writes;
	st->flushes = b->st.flushes;
	st->discards = b->st.discards;
	st->get_ids = b->st.get_ids;
	st->syncs = b->st.syncs;
	st->bytes_read = b->st.bytes_read;
	st->bytes_written = b->st.bytes_written;
	st->ioerr = b->st.ioerr;
	st->unsupp = b->st.unsupp;
	pthread_mutex_lock(&b->lock);
	st->max_inflight = b->max_inflight;
	pthread_mutex_unlock(&b->lock);
}

/* ---- state and the machine ------------------------------------------------- */

MB_STATE_DESC(mb_virtio_blk_state, MB_VIRTIO_BLK_STATE, 1);

void mb_virtio_blk_quiesce(struct mb_virtio_blk *b)
{
	blk_reset(b); /* waits for inflight == 0, forgets nothing */
}

void mb_virtio_blk_save(struct mb_virtio_blk *b, struct mb_virtio *t,
			struct mb_virtio_blk_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	struct mb_virtio_blk_stats s;
	memset(st, 0, sizeof *st);
	mb_virtio_save(t, ts, st->queues);
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
	mb_virtio_blk_stats(b, &s);
	st->capacity = b->sectors;
	st->readonly = b->ro;
	st->sync_failed = b->sync_failed;
#define G(n) st->n = s.n;
	G(reads) G(writes) G(flushes) G(syncs) G(discards) G(get_ids)
	G(bytes_read) G(bytes_written) G(ioerr) G(unsupp) G(max_inflight)
#undef G
}

int mb_virtio_blk_load(struct mb_virtio_blk *b, struct mb_virtio *t,
		       const struct mb_virtio_blk_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_PUT, _)
	int rc = mb_virtio_load(t, ts, st->queues);
	if (rc)
		return rc;
	b->sync_failed = st->sync_failed;
#define P(n) b->st.n = st->n;
	P(reads) P(writes) P(flushes) P(syncs) P(discards) P(get_ids)
	P(bytes_read) P(bytes_written) P(ioerr) P(unsupp)
#undef P
	pthread_mutex_lock(&b->lock);
	b->max_inflight = st->max_inflight;
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static void m_save(void *dev, struct mb_virtio *t, void *st)
{
	mb_virtio_blk_save(dev, t, st);
}

static int m_load(void *dev, struct mb_virtio *t, const void *st)
{
	return mb_virtio_blk_load(dev, t, st);
}

static void m_quiesce(void *dev)
{
	mb_virtio_blk_quiesce(dev);
}

static void m_free(void *dev)
{
	mb_virtio_blk_free(dev);
}

/* In-memory snapshots keep the overlay's blocks by reference. */
static int m_keep(void *dev, void **kept)
{
	struct mb_virtio_blk *b = dev;
	uint64_t cached = b->wb ? mb_wbcache_sectors(b->wb) : 0;
	if (cached) /* volatile data no snapshot records: refuse, never lose it */
		return mb_seterr(-EBUSY, "snapshot: a virtio_blk disk has %llu sectors "
				 "in its write-back cache not flushed (let the guest "
				 "sync, or power_cut first)", (unsigned long long)cached);
	return b->ovl ? mb_overlay_keep(b->ovl, (struct mb_overlay_kept **)kept) : 0;
}

static int m_put_back(void *dev, const void *kept)
{
	struct mb_virtio_blk *b = dev;
	return b->ovl ? mb_overlay_put_back(b->ovl, kept) : 0;
}

static void m_drop(void *kept)
{
	mb_overlay_drop(kept);
}

/* Snapshot files hold the overlay's blocks (overlay.h has the layout). */
static uint64_t m_kept_size(const void *kept)
{
	return mb_overlay_kept_size(kept);
}

static int m_kept_write(const void *kept,
			int (*put)(void *ctx, const void *p, size_t n), void *ctx)
{
	return mb_overlay_kept_write(kept, put, ctx);
}

static int m_kept_read(const void *p, size_t len, void **kept)
{
	return mb_overlay_kept_read(p, len, (struct mb_overlay_kept **)kept);
}

static const struct mb_device_ops blk_dev_ops = {
	.kind = "virtio_blk", .state = &mb_virtio_blk_state_desc,
	.save = mb_virtio_dev_save, .load = mb_virtio_dev_load,
	.quiesce = mb_virtio_dev_quiesce, .free = mb_virtio_dev_free,
	.keep = mb_virtio_dev_keep, .put_back = mb_virtio_dev_put_back,
	.drop = m_drop, .kept_size = m_kept_size, .kept_write = m_kept_write,
	.kept_read = m_kept_read,
};

static const struct mb_virtio_model blk_model = {
	.ops = &mb_virtio_blk_ops, .dev_ops = &blk_dev_ops, .save = m_save,
	.load = m_load, .quiesce = m_quiesce, .free = m_free,
	.keep = m_keep, .put_back = m_put_back,
};

int mb_virtio_blk_attach(struct mb_machine *m,
			 const struct mb_virtio_blk_attach_config *cfg,
			 struct mb_device **out)
{
	if (!cfg->image)
		return mb_seterr(-EINVAL, "image: missing (a disk image file)");
	if (cfg->serial && strlen(cfg->serial) > 20)
		return mb_seterr(-EINVAL, "serial: \"%s\" is longer than 20 bytes",
				 cfg->serial);
	if (cfg->threads > MAX_WORKERS)
		return mb_seterr(-EINVAL, "threads: %u is more than %d", cfg->threads,
				 MAX_WORKERS);
	struct mb_virtio_blk_config c = {
		.image = cfg->image, .readonly = cfg->readonly,
		.serial = cfg->serial ? cfg->serial : "",
		.threads = cfg->threads ? cfg->threads : 2,
	};
	struct mb_virtio_blk *b = blk_new(&c, cfg->image_fd);
	if (!b)
		return -EINVAL; /* the message names the image */
	int rc = cfg->overlay ? use_overlay(b, cfg->image, cfg->image_fd) : 0;
	if (!rc && cfg->writeback)
		rc = mb_virtio_blk_use_wbcache(b);
	if (rc) {
		mb_virtio_blk_free(b);
		return rc;
	}
	b->m = m;
	struct mb_virtio_place p = { cfg->name, "blk%u", cfg->mmio_base,
				     cfg->mmio_size, cfg->irq };
	return mb_virtio_place(m, &p, &blk_model, b, mb_virtio_blk_features(b),
			       out);
}
