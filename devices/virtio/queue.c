/*
 * Split virtqueues, virtio spec v1.2 sec. 2.7. Layout in guest memory:
 *   descriptor table: num x { le64 addr; le32 len; le16 flags; le16 next }
 *   avail ring: le16 flags, le16 idx, le16 ring[num], le16 used_event
 *   used ring:  le16 flags, le16 idx, {le32 id, le32 len}[num], le16 avail_event
 * x86 is little-endian, so fields are read as they are.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "moonbox/virtio_queue.h"

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

void mb_vq_init(struct mb_vq *q, struct mb_mem *mem)
{
	memset(q, 0, sizeof *q);
	q->mem = mem;
	pthread_mutex_init(&q->lock, NULL);
}

void mb_vq_destroy(struct mb_vq *q)
{
	pthread_mutex_destroy(&q->lock);
}

void mb_vq_reset(struct mb_vq *q)
{
	pthread_mutex_lock(&q->lock);
	q->num = 0;
	q->desc_gpa = q->avail_gpa = q->used_gpa = 0;
	q->ready = q->broken = q->indirect = q->event_idx = false;
	q->desc = q->avail = q->used = NULL;
	q->last_avail = q->used_idx = q->signalled = 0;
	q->signalled_valid = false;
	q->why[0] = 0;
	pthread_mutex_unlock(&q->lock);
}

int mb_vq_enable(struct mb_vq *q, uint16_t max, uint64_t features)
{
	uint64_t n = q->num;
	if (n == 0 || n > max || (n & (n - 1)))
		return mb_seterr(-EINVAL, "queue size %u is not a power of two "
				 "in 1..%u", q->num, max);
	/* Alignment of the three parts, sec. 2.7 table "Virtqueue Part". */
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return mb_seterr(-EINVAL, "rings misaligned (desc 0x%" PRIx64
				 ", driver 0x%" PRIx64 ", device 0x%" PRIx64 ")",
				 q->desc_gpa, q->avail_gpa, q->used_gpa);
	unsigned gen = mb_mem_gen(q->mem);
	uint8_t *d = mb_mem_ptr(q->mem, q->desc_gpa, 16 * n, false);
	uint8_t *a = mb_mem_ptr(q->mem, q->avail_gpa, 6 + 2 * n, false);
	uint8_t *u = mb_mem_ptr(q->mem, q->used_gpa, 6 + 8 * n, true);
	if (!d || !a || !u)
		return mb_seterr(-EINVAL, "%s ring of a %u-entry queue is not in "
				 "guest RAM", !d ? "descriptor" : !a ? "driver"
				 : "device", q->num);
	pthread_mutex_lock(&q->lock);
	q->desc = d, q->avail = a, q->used = u;
	q->gen = gen;
	q->remote = mb_mem_is_remote(q->mem);
	q->indirect = features >> VIRTIO_F_RING_INDIRECT_DESC & 1;
	q->event_idx = features >> VIRTIO_F_RING_EVENT_IDX & 1;
	/* The driver zeroes the rings; indices start from the used ring. */
	q->used_idx = __atomic_load_n((uint16_t *)(u + 2), __ATOMIC_ACQUIRE);
	q->last_avail = q->used_idx;
	q->signalled_valid = false;
	q->broken = false;
	q->ready = true;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

static int fault(struct mb_vq *q, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Under q->lock. The rings were checked when the queue went ready; a
 * region revoked since (a device process's DMA grant, docs/devproc.md)
 * changes the map's generation: look them up again. False: gone. */
static bool rings_still(struct mb_vq *q)
{
	unsigned gen = mb_mem_gen(q->mem);
	uint8_t *d = mb_mem_ptr(q->mem, q->desc_gpa, 16u * q->num, false);
	uint8_t *a = mb_mem_ptr(q->mem, q->avail_gpa, 6u + 2u * q->num, false);
	uint8_t *u = mb_mem_ptr(q->mem, q->used_gpa, 6u + 8u * q->num, true);
	if (!d || !a || !u) {
		q->ready = false; /* nothing touches them any more */
		return false;
	}
	/* Stored only when they moved: in message mode this runs at every use
	 * while another thread may read the pointers (mb_vq_arm under the
	 * transport's lock; TSan), and the shadow's pointers do not move. */
	if (q->desc != d || q->avail != a || q->used != u)
		q->desc = d, q->avail = a, q->used = u;
	if (q->gen != gen)
		q->gen = gen;
	return true;
}

/* One predictable branch while nothing was revoked. */
#define RINGS_MOVED(q) \
	__builtin_expect((q)->remote || mb_mem_gen((q)->mem) != (q)->gen, 0)

bool mb_vq_rings_ok(struct mb_vq *q)
{
	return q->ready && (!RINGS_MOVED(q) || rings_still(q));
}

static int fault(struct mb_vq *q, const char *fmt, ...)
{
	if (q->broken)
		return -EIO;
	q->broken = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q->why, sizeof q->why, fmt, ap);
	va_end(ap);
	if (q->fault)
		q->fault(q->fault_ctx, q, q->why);
	return -EIO;
}

/* Copy a descriptor out of guest memory once: the driver may change it
 * while we look (no double fetch). */
static void get_desc(const uint8_t *table, unsigned i, struct desc *d)
{
	memcpy(&d->addr, table + 16 * i, 8);
	memcpy(&d->len, table + 16 * i + 8, 4);
	memcpy(&d->flags, table + 16 * i + 12, 2);
	memcpy(&d->next, table + 16 * i + 14, 2);
}

/* Sec. 2.7.5.3: an indirect descriptor holds a table of len/16 entries,
 * may not be combined with NEXT, and tables do not nest. */
static int walk(struct mb_vq *q, uint16_t head, struct mb_vq_chain *c)
{
	const uint8_t *table = q->desc;
	unsigned max = q->num, i = head, n = 0;
	bool indirect = false;
	c->head = head;
	c->nout = c->nin = 0;
	c->out_len = c->in_len = 0;
	for (;;) {
		struct desc d;
		if (i >= max)
			return fault(q, "descriptor %u out of range (%u entries%s)",
				     i, max, indirect ? ", indirect" : "");
		if (++n > max)
			return fault(q, "chain from head %u is longer than %u "
				     "descriptors (a loop?)", head, max);
		get_desc(table, i, &d);
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			if (!q->indirect)
				return fault(q, "indirect descriptor without "
					     "VIRTIO_F_RING_INDIRECT_DESC");
			if (indirect)
				return fault(q, "nested indirect table");
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return fault(q, "indirect descriptor with NEXT");
			if (d.len == 0 || d.len % 16 || d.len / 16 > MB_VQ_MAX_SEGS)
				return fault(q, "indirect table of %u bytes "
					     "(16 x 1..%d)", d.len, MB_VQ_MAX_SEGS);
			table = mb_mem_ptr(q->mem, d.addr, d.len, false);
			if (!table)
				return fault(q, "indirect table 0x%" PRIx64 "+%u is not "
					     "in guest RAM", d.addr, d.len);
			indirect = true;
			max = d.len / 16, i = 0, n = 0;
			continue;
		}
		bool w = d.flags & VIRTQ_DESC_F_WRITE;
		if (d.len == 0)
			return fault(q, "zero-length buffer in chain %u", head);
		if (!w && c->nin)
			return fault(q, "readable buffer after a writable one in "
				     "chain %u", head);
		if (c->nout + c->nin == MB_VQ_MAX_SEGS)
			return fault(q, "chain %u has more than %d buffers", head,
				     MB_VQ_MAX_SEGS);
		void *p = mb_mem_ptr(q->mem, d.addr, d.len, w);
		if (!p)
			return fault(q, "buffer 0x%" PRIx64 "+%u is not in guest %s",
				     d.addr, d.len, w ? "writable RAM" : "RAM");
		uint64_t *tot = w ? &c->in_len : &c->out_len;
		if (*tot + d.len > UINT32_MAX)
			return fault(q, "chain %u is larger than 4 GiB", head);
		*tot += d.len;
		c->iov[c->nout + c->nin] = (struct iovec){ p, d.len };
		if (w)
			c->nin++;
		else
			c->nout++;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 1;
		i = d.next;
	}
}

static uint16_t avail_idx(struct mb_vq *q)
{
	/* Acquire: ring entries and descriptors are read after the index the
	 * driver published them with (sec. 2.7.13.3's write barrier pairs
	 * with this). */
	return __atomic_load_n((uint16_t *)(q->avail + 2), __ATOMIC_ACQUIRE);
}

/* Whether chains may be taken: -EIO when broken (or the rings went away
 * with a revoked grant, which breaks it), 0 before the queue is ready, 1. */
static int usable(struct mb_vq *q)
{
	if (q->broken)
		return -EIO;
	if (!q->ready)
		return 0;
	if (RINGS_MOVED(q)) {
		pthread_mutex_lock(&q->lock);
		bool ok = rings_still(q);
		pthread_mutex_unlock(&q->lock);
		if (!ok)
			return fault(q, "rings are no longer in guest RAM the device "
				     "may reach (a revoked grant)");
	}
	return 1;
}

int mb_vq_pop(struct mb_vq *q, struct mb_vq_chain *c)
{
	int rc = usable(q);
	if (rc <= 0)
		return rc;
	uint16_t idx = avail_idx(q);
	uint16_t pending = (uint16_t)(idx - q->last_avail);
	if (pending == 0)
		return 0;
	if (pending > q->num)
		return fault(q, "driver index %u is %u entries ahead of %u in a "
			     "%u-entry queue", idx, pending, q->last_avail, q->num);
	uint16_t head;
	memcpy(&head, q->avail + 4 + 2 * (q->last_avail % q->num), 2);
	q->last_avail++;
	rc = walk(q, head, c);
	if (rc > 0)
		q->popped++;
	return rc;
}

/* A chain by its head, not from the avail ring: a vhost-user back-end
 * resubmitting what its inflight region marks as taken and not used
 * ("Inflight I/O tracking"). The head is bounded as any other index. */
int mb_vq_chain_at(struct mb_vq *q, uint16_t head, struct mb_vq_chain *c)
{
	int rc = usable(q);
	if (rc <= 0)
		return rc;
	rc = walk(q, head, c);
	if (rc > 0)
		q->popped++;
	return rc;
}

/* The used ring was mapped once, at setup: every write to it marks it
 * again, or an in-memory restore (dirty pages only) would leave the
 * trial's used entries and indices in guest RAM (KVM does not log what
 * moonbox writes). One lookup and one or two page bits. */
static void used_written(struct mb_vq *q)
{
	/* The elements and avail_event before the index: over messages
	 * (dma = "message") they land in that order. */
	mb_mem_written(q->mem, q->used_gpa + 4, 8u * q->num + 2);
	mb_mem_written(q->mem, q->used_gpa, 4);
}

/* Memory by messages: the chain's device-writable buffers (len bytes
 * in all) go back to the guest before its used element does. The chain
 * is walked again from the descriptors as they are now, bounded as in
 * walk(); a driver that changed them meanwhile gets its own memory
 * overwritten with what the device saw, within what the VMM grants. */
static void write_back(struct mb_vq *q, uint16_t head, uint32_t len)
{
	const uint8_t *table = q->desc;
	unsigned max = q->num, i = head, n = 0;
	bool indirect = false;
	while (len && i < max && ++n <= max) {
		struct desc d;
		get_desc(table, i, &d);
		if ((d.flags & VIRTQ_DESC_F_INDIRECT) && !indirect) {
			if (d.len == 0 || d.len % 16 || d.len / 16 > MB_VQ_MAX_SEGS ||
			    !(table = mb_mem_ptr(q->mem, d.addr, d.len, false)))
				return;
			indirect = true;
			max = d.len / 16, i = 0, n = 0;
			continue;
		}
		if (d.flags & VIRTQ_DESC_F_WRITE) {
			uint32_t k = d.len < len ? d.len : len;
			mb_mem_written(q->mem, d.addr, k);
			len -= k;
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return;
		i = d.next;
	}
}

void mb_vq_push(struct mb_vq *q, uint16_t head, uint32_t len)
{
	pthread_mutex_lock(&q->lock);
	if (q->ready && RINGS_MOVED(q))
		rings_still(q);
	if (q->ready && q->remote)
		write_back(q, head, len);
	if (q->ready) {
		uint8_t *e = q->used + 4 + 8 * (q->used_idx % q->num);
		uint32_t id = head;
		memcpy(e, &id, 4);
		memcpy(e + 4, &len, 4);
		q->used_idx++;
		q->pushed++;
		/* Release: the element is visible before the index (2.7.8.2). */
		__atomic_store_n((uint16_t *)(q->used + 2), q->used_idx,
				 __ATOMIC_RELEASE);
		used_written(q);
	}
	pthread_mutex_unlock(&q->lock);
}

bool mb_vq_need_irq(struct mb_vq *q)
{
	bool need;
	pthread_mutex_lock(&q->lock);
	if (q->ready && RINGS_MOVED(q))
		rings_still(q);
	if (!q->ready) {
		pthread_mutex_unlock(&q->lock);
		return false;
	}
	/* Full barrier: our used->idx store must be visible before we read
	 * the driver's suppression fields, or both sides may sleep (2.7.7.2). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (q->event_idx) {
		uint16_t ev;
		memcpy(&ev, q->avail + 4 + 2 * q->num, 2); /* used_event */
		need = !q->signalled_valid ||
		       mb_vq_need_event(ev, q->used_idx, q->signalled);
		q->signalled = q->used_idx;
		q->signalled_valid = true;
	} else {
		uint16_t flags;
		memcpy(&flags, q->avail, 2);
		need = !(flags & VIRTQ_AVAIL_F_NO_INTERRUPT);
	}
	pthread_mutex_unlock(&q->lock);
	return need;
}

bool mb_vq_arm(struct mb_vq *q)
{
	if (!q->ready || q->broken)
		return false;
	if (RINGS_MOVED(q)) {
		pthread_mutex_lock(&q->lock);
		bool ok = rings_still(q);
		pthread_mutex_unlock(&q->lock);
		if (!ok)
			return false;
	}
	if (q->event_idx) {
		/* avail_event: notify us when you add the entry after these. */
		__atomic_store_n((uint16_t *)(q->used + 4 + 8 * q->num),
				 q->last_avail, __ATOMIC_RELAXED);
		used_written(q);
		/* Publish before re-reading the index (2.7.10). */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	}
	return avail_idx(q) != q->last_avail;
}

/* ---- iovec helpers ------------------------------------------------------ */

size_t mb_iov_to_buf(const struct iovec *iov, unsigned n, size_t off,
		     void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - off;
		if (k > len - done)
			k = len - done;
		memcpy((uint8_t *)buf + done, (uint8_t *)iov[i].iov_base + off, k);
		done += k;
		off = 0;
	}
	return done;
}

size_t mb_iov_from_buf(const struct iovec *iov, unsigned n, size_t off,
		       const void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - off;
		if (k > len - done)
			k = len - done;
		memcpy((uint8_t *)iov[i].iov_base + off, (const uint8_t *)buf + done, k);
		done += k;
		off = 0;
	}
	return done;
}

unsigned mb_iov_slice(const struct iovec *iov, unsigned n, size_t off,
		      size_t len, struct iovec *out)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t take = iov[i].iov_len - off;
		if (take > len)
			take = len;
		out[k++] = (struct iovec){ (uint8_t *)iov[i].iov_base + off, take };
		len -= take;
		off = 0;
	}
	return k;
}
