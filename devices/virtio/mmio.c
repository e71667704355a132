/*
 * virtio-mmio transport, version 2: the register file of virtio spec v1.2
 * sec. 4.2.2, the status state machine of sec. 2.1 and 3.1, interrupts
 * and doorbells. See mmio.h for how devices plug in.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "moonbox/virtio_mmio.h"

#define MAGIC 0x74726976u  /* "virt" */
#define VENDOR 0x584f424du /* "MBOX" */

/* What the transport itself offers on top of the device's bits. */
#define TRANSPORT_FEATURES                                                    \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_RING_INDIRECT_DESC) | \
	 (1ull << VIRTIO_F_RING_EVENT_IDX))

struct mb_virtio {
	const struct mb_virtio_dev_ops *ops; /* &ops_copy */
	/* A copy: a device whose ops live in its model (vhost_user.c) is
	 * freed before its transport, which still reads them. */
	struct mb_virtio_dev_ops ops_copy;
	void *dev;
	struct mb_mem *mem;
	uint64_t dev_features, drv_features;
	struct mb_irq irq;
	int irqfd;

	pthread_mutex_t lock; /* registers, queue setup, notify handling */
	uint32_t status, dev_sel, drv_sel, queue_sel, generation;

	pthread_mutex_t irq_lock; /* isr and the line */
	uint32_t isr;
	bool line;

	struct mb_vq vq[MB_VIRTIO_MAX_QUEUES];
	int kick[MB_VIRTIO_MAX_QUEUES]; /* doorbell eventfds, -1: none */
	struct mb_machine *m;
	uint64_t base;
	bool ioeventfd;
	bool handed; /* doorbells handed over by a VMM (a device process) */
	bool own_irqfd; /* irqfd handed over: closed with the transport */

	char why[160];
	bool logged, stray_logged;
	struct {
		_Atomic uint64_t notifies, interrupts, suppressed, faults, mmio;
	} st;
	/* NULL unless a virtio fault rule targets this device (fault.h). */
	struct mb_fault_site *_Atomic fault;
};

/* ---- interrupts ----------------------------------------------------------- */

static void interrupt(struct mb_virtio *t, uint32_t bits)
{
	pthread_mutex_lock(&t->irq_lock);
	bool fresh = (t->isr & bits) != bits;
	t->isr |= bits;
	if (fresh) {
		atomic_fetch_add(&t->st.interrupts, 1);
		if (t->irqfd >= 0) {
			uint64_t one = 1;
			if (write(t->irqfd, &one, 8) != 8)
				mb_irq_pulse(&t->irq);
		} else {
			if (t->line) /* re-edge for edge-triggered inputs */
				mb_irq_lower(&t->irq);
			mb_irq_raise(&t->irq);
			t->line = true;
		}
	}
	pthread_mutex_unlock(&t->irq_lock);
}

static void ack(struct mb_virtio *t, uint32_t bits)
{
	pthread_mutex_lock(&t->irq_lock);
	t->isr &= ~bits;
	if (!t->isr && t->line) {
		mb_irq_lower(&t->irq);
		t->line = false;
	}
	pthread_mutex_unlock(&t->irq_lock);
}

/* F.virtio.bad_used_id: the element names another descriptor than the
 * chain's head (2.7.8: the driver must not trust it; Linux says "id N is
 * not a head!" or "out of range" and stops using the queue). The chain
 * itself is never returned. */
static uint16_t used_id(struct mb_virtio *t, struct mb_fault_site *fs,
			struct mb_vq *q, uint16_t head)
{
	struct mb_fault_verdict v;
	mb_fault_virtio_decide(fs, (unsigned)(q - t->vq), &v);
	if (!v.bad_id)
		return head;
	return v.has_id ? v.used_id : (uint16_t)((head + 1u) % (q->num ? q->num : 1u));
}

void mb_virtio_complete(struct mb_virtio *t, struct mb_vq *q, uint16_t head,
			uint32_t len)
{
	struct mb_fault_site *fs = atomic_load_explicit(&t->fault, memory_order_acquire);
	if (__builtin_expect(fs != NULL, 0))
		head = used_id(t, fs, q, head);
	mb_vq_push(q, head, len);
	if (mb_vq_need_irq(q))
		interrupt(t, VIRTIO_MMIO_INT_VRING);
	else
		atomic_fetch_add(&t->st.suppressed, 1);
}

void mb_virtio_config_changed(struct mb_virtio *t)
{
	t->generation++;
	if (t->status & VIRTIO_STATUS_DRIVER_OK)
		interrupt(t, VIRTIO_MMIO_INT_CONFIG);
}

void mb_virtio_config_change(struct mb_virtio *t)
{
	pthread_mutex_lock(&t->lock);
	mb_virtio_config_changed(t);
	pthread_mutex_unlock(&t->lock);
}

int mb_virtio_set_fault(struct mb_virtio *t, struct mb_fault_site *s)
{
	return mb_fault_site_install(&t->fault, s);
}

/* Sec. 2.1.2: set DEVICE_NEEDS_RESET and, once the driver is up, tell it
 * with a configuration change notification. Logged once per device. */
void mb_virtio_needs_reset(struct mb_virtio *t, const char *why)
{
	atomic_fetch_add(&t->st.faults, 1);
	if (!t->why[0])
		snprintf(t->why, sizeof t->why, "%s", why);
	if (!t->logged) {
		t->logged = true;
		fprintf(stderr, "moonbox: %s@0x%" PRIx64 ": %s; device needs reset\n",
			t->ops->name, t->base, why);
	}
	if (t->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	t->status |= VIRTIO_STATUS_NEEDS_RESET;
	if (t->status & VIRTIO_STATUS_DRIVER_OK)
		interrupt(t, VIRTIO_MMIO_INT_CONFIG);
}

void mb_virtio_interrupt(struct mb_virtio *t)
{
	interrupt(t, VIRTIO_MMIO_INT_VRING);
}

void mb_virtio_fail(struct mb_virtio *t, const char *why)
{
	pthread_mutex_lock(&t->lock);
	mb_virtio_needs_reset(t, why);
	pthread_mutex_unlock(&t->lock);
}

static void queue_fault(void *ctx, struct mb_vq *q, const char *why)
{
	struct mb_virtio *t = ctx;
	char msg[200];
	snprintf(msg, sizeof msg, "queue %d: %s", (int)(q - t->vq), why);
	mb_virtio_needs_reset(t, msg);
}

/* ---- life cycle ----------------------------------------------------------- */

struct mb_virtio *mb_virtio_new(const struct mb_virtio_config *cfg)
{
	if (!cfg->ops || cfg->ops->nqueues > MB_VIRTIO_MAX_QUEUES ||
	    cfg->ops->queue_max > MB_VQ_MAX_SIZE) {
		mb_seterr(-EINVAL, "virtio: bad device description");
		return NULL;
	}
	struct mb_virtio *t = calloc(1, sizeof *t);
	if (!t) {
		mb_seterr(-ENOMEM, "virtio: out of memory");
		return NULL;
	}
	t->ops_copy = *cfg->ops;
	t->ops = &t->ops_copy;
	t->dev = cfg->dev;
	t->mem = cfg->mem;
	t->dev_features = cfg->features | TRANSPORT_FEATURES;
	t->irq = cfg->irq;
	t->irqfd = cfg->irqfd;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->irq_lock, NULL);
	for (unsigned i = 0; i < MB_VIRTIO_MAX_QUEUES; i++) {
		mb_vq_init(&t->vq[i], cfg->mem);
		t->vq[i].fault = queue_fault;
		t->vq[i].fault_ctx = t;
		t->kick[i] = -1;
	}
	return t;
}

void mb_virtio_free(struct mb_virtio *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		if (t->kick[i] < 0)
			continue;
		if (t->m) {
			mb_machine_unwatch(t->m, t->kick[i]);
			if (t->ioeventfd)
				mb_machine_ioeventfd(t->m, t->kick[i],
						     t->base + MB_VIRTIO_MMIO_QUEUE_NOTIFY, 4, i, false);
		}
		close(t->kick[i]);
	}
	for (unsigned i = 0; i < MB_VIRTIO_MAX_QUEUES; i++)
		mb_vq_destroy(&t->vq[i]);
	if (t->own_irqfd)
		close(t->irqfd);
	mb_fault_site_put(atomic_load(&t->fault));
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->irq_lock);
	free(t);
}

/* Sec. 2.4 / 4.2.3.1: writing 0 to Status resets the device. */
static void reset(struct mb_virtio *t)
{
	if (t->ops->reset)
		t->ops->reset(t->dev); /* returns once nothing is in flight */
	for (unsigned i = 0; i < MB_VIRTIO_MAX_QUEUES; i++)
		mb_vq_reset(&t->vq[i]);
	t->status = 0;
	t->dev_sel = t->drv_sel = t->queue_sel = 0;
	t->drv_features = 0;
	t->why[0] = 0;
	t->logged = false;
	pthread_mutex_lock(&t->irq_lock);
	t->isr = 0;
	if (t->line)
		mb_irq_lower(&t->irq);
	t->line = false;
	pthread_mutex_unlock(&t->irq_lock);
}

/* ---- doorbells ------------------------------------------------------------ */

void mb_virtio_kick(struct mb_virtio *t, unsigned qi)
{
	pthread_mutex_lock(&t->lock);
	atomic_fetch_add(&t->st.notifies, 1);
	struct mb_vq *q = qi < t->ops->nqueues ? &t->vq[qi] : NULL;
	if (t->status & VIRTIO_STATUS_NEEDS_RESET) {
		/* stopped until the driver resets us */
	} else if (!(t->status & VIRTIO_STATUS_DRIVER_OK)) {
		/* Not live yet (or a doorbell that raced a reset): nothing to
		 * serve and nothing the driver could be told; note it once. */
		if (!t->stray_logged)
			fprintf(stderr, "moonbox: %s@0x%" PRIx64 ": notify of queue %u "
				"before DRIVER_OK ignored\n", t->ops->name, t->base, qi);
		t->stray_logged = true;
	} else if (!q || !q->ready) {
		char why[96];
		snprintf(why, sizeof why, "notify of queue %u, which is not set up",
			 qi);
		mb_virtio_needs_reset(t, why);
	} else if (!q->broken) {
		t->ops->notify(t->dev, t, qi);
	}
	pthread_mutex_unlock(&t->lock);
}

static void on_kick(void *opaque, int fd)
{
	struct mb_virtio *t = opaque;
	uint64_t n;
	if (read(fd, &n, 8) != 8)
		return;
	for (unsigned i = 0; i < t->ops->nqueues; i++)
		if (t->kick[i] == fd)
			mb_virtio_kick(t, i);
}

int mb_virtio_doorbells(struct mb_virtio *t, struct mb_machine *m,
			uint64_t base)
{
	t->m = m;
	t->base = base;
	t->ioeventfd = true;
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		t->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (t->kick[i] < 0)
			return mb_seterr(-errno, "virtio: eventfd: %s", strerror(errno));
		int rc = mb_machine_watch(m, t->kick[i], on_kick, t);
		if (rc)
			return rc;
		if (t->ioeventfd &&
		    mb_machine_ioeventfd(m, t->kick[i], base + MB_VIRTIO_MMIO_QUEUE_NOTIFY, 4, i,
					 true)) {
			/* Fall back to the MMIO handler for every queue. */
			for (unsigned j = 0; j < i; j++)
				mb_machine_ioeventfd(m, t->kick[j],
						     base + MB_VIRTIO_MMIO_QUEUE_NOTIFY, 4, j, false);
			t->ioeventfd = false;
		}
	}
	return 0;
}

int mb_virtio_doorbell_give(struct mb_virtio *t, unsigned qi, int fd)
{
	if (qi >= t->ops->nqueues || !t->m)
		return mb_seterr(-EINVAL, "virtio: no queue %u to give a doorbell", qi);
	if (t->kick[qi] >= 0) {
		mb_machine_unwatch(t->m, t->kick[qi]);
		if (t->ioeventfd)
			mb_machine_ioeventfd(t->m, t->kick[qi],
					     t->base + MB_VIRTIO_MMIO_QUEUE_NOTIFY, 4, qi, false);
		close(t->kick[qi]);
	}
	t->kick[qi] = fd;
	t->handed = true;
	return mb_machine_watch(t->m, fd, on_kick, t);
}

void mb_virtio_irqfd_give(struct mb_virtio *t, int fd)
{
	pthread_mutex_lock(&t->irq_lock);
	if (t->own_irqfd)
		close(t->irqfd);
	t->irqfd = fd;
	t->own_irqfd = true;
	pthread_mutex_unlock(&t->irq_lock);
}

int mb_virtio_doorbell_take(struct mb_virtio *t, unsigned qi)
{
	if (qi >= t->ops->nqueues || t->kick[qi] < 0)
		return -1;
	if (t->m)
		mb_machine_unwatch(t->m, t->kick[qi]);
	return t->kick[qi];
}

void mb_virtio_offer_mask(struct mb_virtio *t, uint64_t mask)
{
	t->dev_features &= mask;
}

/* A QueueNotify that reached us as an MMIO exit (no ioeventfd, or a value
 * no ioeventfd matched): hand it to the event loop like a doorbell. */
static void mmio_notify(struct mb_virtio *t, uint32_t qi)
{
	atomic_fetch_add(&t->st.mmio, 1);
	if (qi < t->ops->nqueues && t->kick[qi] >= 0) {
		uint64_t one = 1;
		if (write(t->kick[qi], &one, 8) == 8)
			return;
	}
	pthread_mutex_unlock(&t->lock); /* no event loop: serve it here */
	mb_virtio_kick(t, qi);
	pthread_mutex_lock(&t->lock);
}

/* ---- registers ------------------------------------------------------------ */

static struct mb_vq *sel_queue(struct mb_virtio *t)
{
	return t->queue_sel < t->ops->nqueues ? &t->vq[t->queue_sel] : NULL;
}

static uint32_t read_reg(struct mb_virtio *t, uint64_t off)
{
	struct mb_vq *q = sel_queue(t);
	switch (off) {
	case MB_VIRTIO_MMIO_MAGIC_VALUE: return MAGIC;
	case MB_VIRTIO_MMIO_VERSION: return 2;
	case MB_VIRTIO_MMIO_DEVICE_ID: return t->ops->device_id;
	case MB_VIRTIO_MMIO_VENDOR_ID: return VENDOR;
	case MB_VIRTIO_MMIO_DEVICE_FEATURES:
		return t->dev_sel < 2 ? (uint32_t)(t->dev_features >> (32 * t->dev_sel))
				      : 0;
	case MB_VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? t->ops->queue_max : 0;
	case MB_VIRTIO_MMIO_QUEUE_READY: return q && q->ready;
	case MB_VIRTIO_MMIO_INTERRUPT_STATUS: {
		pthread_mutex_lock(&t->irq_lock);
		uint32_t v = t->isr;
		pthread_mutex_unlock(&t->irq_lock);
		return v;
	}
	case MB_VIRTIO_MMIO_STATUS: return t->status;
	case MB_VIRTIO_MMIO_SHM_LEN_LOW: case MB_VIRTIO_MMIO_SHM_LEN_HIGH: return ~0u; /* no shared memory */
	case MB_VIRTIO_MMIO_CONFIG_GENERATION: return t->generation;
	default: return 0;
	}
}

/* Sec. 3.1.1 and 2.2.2: FEATURES_OK only for a subset of what we offer,
 * with VERSION_1 (this is a modern-only device). */
static bool features_ok(struct mb_virtio *t)
{
	return !(t->drv_features & ~t->dev_features) &&
	       (t->drv_features >> VIRTIO_F_VERSION_1 & 1);
}

#define STATUS_BITS                                                     \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |                  \
	 VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK |               \
	 VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)

static void write_status(struct mb_virtio *t, uint32_t v)
{
	if (v == 0) {
		reset(t);
		return;
	}
	v &= STATUS_BITS; /* bits sec. 2.1 does not define are not kept */
	uint32_t old = t->status;
	if (old & ~v & ~VIRTIO_STATUS_NEEDS_RESET)
		return; /* drivers only add bits (sec. 2.1.1) */
	v |= old & VIRTIO_STATUS_NEEDS_RESET;
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
	    !features_ok(t))
		v &= ~VIRTIO_STATUS_FEATURES_OK; /* the driver reads it back */
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK)) {
		t->status = v & ~VIRTIO_STATUS_DRIVER_OK;
		mb_virtio_needs_reset(t, "DRIVER_OK without FEATURES_OK");
		return;
	}
	t->status = v;
	if (t->ops->status && (v & ~old))
		t->ops->status(t->dev, t, old, v);
}

static void set_half(uint64_t *x, bool hi, uint32_t v)
{
	*x = hi ? (*x & 0xffffffffu) | (uint64_t)v << 32
		: (*x & ~0xffffffffull) | v;
}

static void write_queue(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	struct mb_vq *q = sel_queue(t);
	if (!q)
		return;
	if (off == MB_VIRTIO_MMIO_QUEUE_READY) {
		if (!v) { /* sec. 4.2.2: stop using the queue */
			pthread_mutex_lock(&q->lock);
			q->ready = false;
			pthread_mutex_unlock(&q->lock);
			return;
		}
		if (!q->ready && mb_vq_enable(q, t->ops->queue_max, t->drv_features)) {
			char why[200];
			snprintf(why, sizeof why, "queue %u: %s", t->queue_sel,
				 mb_errmsg());
			mb_virtio_needs_reset(t, why);
		}
		return;
	}
	if (q->ready)
		return; /* the driver must not change a live queue (4.2.2.2) */
	switch (off) {
	case MB_VIRTIO_MMIO_QUEUE_NUM: q->num = v > 0xffff ? 0 : (uint16_t)v; break;
	case MB_VIRTIO_MMIO_QUEUE_DESC_LOW: case MB_VIRTIO_MMIO_QUEUE_DESC_HIGH:
		set_half(&q->desc_gpa, off == MB_VIRTIO_MMIO_QUEUE_DESC_HIGH, v); break;
	case MB_VIRTIO_MMIO_QUEUE_DRIVER_LOW: case MB_VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		set_half(&q->avail_gpa, off == MB_VIRTIO_MMIO_QUEUE_DRIVER_HIGH, v); break;
	case MB_VIRTIO_MMIO_QUEUE_DEVICE_LOW: case MB_VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		set_half(&q->used_gpa, off == MB_VIRTIO_MMIO_QUEUE_DEVICE_HIGH, v); break;
	}
}

static void write_reg(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	switch (off) {
	case MB_VIRTIO_MMIO_DEVICE_FEATURES_SEL: t->dev_sel = v; break;
	case MB_VIRTIO_MMIO_DRIVER_FEATURES_SEL: t->drv_sel = v; break;
	case MB_VIRTIO_MMIO_DRIVER_FEATURES:
		/* Only while negotiating (sec. 3.1.1 steps 4-5). */
		if (t->drv_sel < 2 && !(t->status & VIRTIO_STATUS_FEATURES_OK))
			set_half(&t->drv_features, t->drv_sel == 1, v);
		break;
	case MB_VIRTIO_MMIO_QUEUE_SEL: t->queue_sel = v; break;
	case MB_VIRTIO_MMIO_QUEUE_NOTIFY: mmio_notify(t, v); break;
	case MB_VIRTIO_MMIO_INTERRUPT_ACK: ack(t, v); break;
	case MB_VIRTIO_MMIO_STATUS: write_status(t, v); break;
	case MB_VIRTIO_MMIO_QUEUE_NUM: case MB_VIRTIO_MMIO_QUEUE_READY: case MB_VIRTIO_MMIO_QUEUE_DESC_LOW: case MB_VIRTIO_MMIO_QUEUE_DESC_HIGH:
	case MB_VIRTIO_MMIO_QUEUE_DRIVER_LOW: case MB_VIRTIO_MMIO_QUEUE_DRIVER_HIGH: case MB_VIRTIO_MMIO_QUEUE_DEVICE_LOW: case MB_VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		write_queue(t, off, v);
		break;
	}
}

static void mmio_read(void *opaque, uint64_t off, void *data, unsigned size)
{
	struct mb_virtio *t = opaque;
	memset(data, 0, size);
	pthread_mutex_lock(&t->lock);
	if (off >= MB_VIRTIO_MMIO_CONFIG) {
		off -= MB_VIRTIO_MMIO_CONFIG;
		if (off + size <= t->ops->config_size && t->ops->config_read)
			t->ops->config_read(t->dev, off, data, size);
	} else if (size == 4 && !(off & 3)) { /* registers are 32-bit (4.2.2) */
		mb_io_put(data, 4, read_reg(t, off));
	}
	pthread_mutex_unlock(&t->lock);
}

static void mmio_write(void *opaque, uint64_t off, const void *data,
		       unsigned size)
{
	struct mb_virtio *t = opaque;
	pthread_mutex_lock(&t->lock);
	if (off >= MB_VIRTIO_MMIO_CONFIG) {
		off -= MB_VIRTIO_MMIO_CONFIG;
		if (off + size <= t->ops->config_size && t->ops->config_write)
			t->ops->config_write(t->dev, off, data, size);
	} else if (size == 4 && !(off & 3)) {
		write_reg(t, off, (uint32_t)mb_io_get(data, 4));
	}
	pthread_mutex_unlock(&t->lock);
}

const struct mb_io_ops mb_virtio_mmio_ops = { mmio_read, mmio_write };

/* ---- for devices and inspection -------------------------------------------- */

struct mb_vq *mb_virtio_queue(struct mb_virtio *t, unsigned qi)
{
	return qi < t->ops->nqueues ? &t->vq[qi] : NULL;
}

uint64_t mb_virtio_features(struct mb_virtio *t)
{
	return t->drv_features;
}

const char *mb_virtio_fault(struct mb_virtio *t, char *buf, size_t len)
{
	pthread_mutex_lock(&t->lock);
	snprintf(buf, len, "%s", t->why);
	pthread_mutex_unlock(&t->lock);
	return buf;
}

/* ---- state ------------------------------------------------------------------ */

MB_STATE_DESC(mb_virtq_state, MB_VIRTQ_STATE, 1);
MB_STATE_DESC(mb_virtio_mmio_state, MB_VIRTIO_MMIO_STATE, 1);

void mb_virtio_save(struct mb_virtio *t, struct mb_virtio_mmio_state *ts,
		    struct mb_virtq_state *qs)
{
	memset(ts, 0, sizeof *ts);
	pthread_mutex_lock(&t->lock);
	ts->status = t->status;
	ts->device_features = t->dev_features;
	ts->driver_features = t->drv_features;
	ts->device_features_sel = t->dev_sel;
	ts->driver_features_sel = t->drv_sel;
	ts->queue_sel = t->queue_sel;
	ts->config_generation = t->generation;
	ts->ioeventfd = (t->ioeventfd && t->m) || t->handed;
	ts->irqfd = t->irqfd >= 0;
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		struct mb_vq *q = &t->vq[i];
		struct mb_virtq_state *s = &qs[i];
		memset(s, 0, sizeof *s);
		pthread_mutex_lock(&q->lock);
		s->num = q->num;
		s->ready = q->ready;
		s->broken = q->broken;
		s->desc = q->desc_gpa;
		s->driver = q->avail_gpa;
		s->device = q->used_gpa;
		s->last_avail = q->last_avail;
		s->used_idx = q->used_idx;
		s->signalled = q->signalled;
		s->signalled_valid = q->signalled_valid;
		if (mb_vq_rings_ok(q))
			s->avail_idx = __atomic_load_n((uint16_t *)(q->avail + 2),
						       __ATOMIC_ACQUIRE);
		s->popped = q->popped;
		s->pushed = q->pushed;
		pthread_mutex_unlock(&q->lock);
	}
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_lock(&t->irq_lock);
	ts->isr = t->isr;
	pthread_mutex_unlock(&t->irq_lock);
	ts->notifications = t->st.notifies;
	ts->mmio_notifications = t->st.mmio;
	ts->interrupts = t->st.interrupts;
	ts->suppressed_interrupts = t->st.suppressed;
	ts->faults = t->st.faults;
}


/* A ready queue: its rings in RAM (a scratch mb_vq does the checks of
 * QueueReady), the driver at most num entries ahead, and no more chains
 * out than the queue holds. */
static int check_queue(struct mb_virtio *t, unsigned i,
		       const struct mb_virtq_state *s, uint64_t features)
{
	if (!s->ready)
		return 0;
	struct mb_vq q;
	mb_vq_init(&q, t->mem);
	q.num = s->num;
	q.desc_gpa = s->desc, q.avail_gpa = s->driver, q.used_gpa = s->device;
	int rc = mb_vq_enable(&q, t->ops->queue_max, features);
	char why[200];
	snprintf(why, sizeof why, "%s", rc ? mb_errmsg() : "");
	mb_vq_destroy(&q);
	if (rc)
		return mb_seterr(-EINVAL, "queues[%u]: %s", i + 1, why);
	if ((uint16_t)(s->last_avail - s->used_idx) > s->num)
		return mb_seterr(-EINVAL, "queues[%u].last_avail: %u is more than "
				 "num (%u) ahead of used_idx %u", i + 1,
				 s->last_avail, s->num, s->used_idx);
	/* The driver's avail index is guest RAM, which the guest may have set
	 * to anything the device has not looked at yet: not an error here,
	 * the next notify finds it and sets NEEDS_RESET (queue.c). */
	return 0;
}

int mb_virtio_load(struct mb_virtio *t, const struct mb_virtio_mmio_state *ts,
		   const struct mb_virtq_state *qs)
{
	if (ts->status & ~STATUS_BITS)
		return mb_seterr(-EINVAL, "status: 0x%x has bits beyond 0x%x",
				 ts->status, STATUS_BITS);
	/* Before FEATURES_OK a driver may have written any bits (the device
	 * refuses them then, features_ok()): a state saved at that point loads. */
	if ((ts->status & VIRTIO_STATUS_FEATURES_OK) &&
	    (ts->driver_features & ~t->dev_features))
		return mb_seterr(-EINVAL, "driver_features: 0x%" PRIx64 " has bits "
				 "the device does not offer (0x%" PRIx64 ") with FEATURES_OK",
				 ts->driver_features, t->dev_features);
	if (ts->isr & ~(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG))
		return mb_seterr(-EINVAL, "isr: 0x%x has bits beyond 0x3", ts->isr);
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		const struct mb_virtq_state *s = &qs[i];
		if (s->num > t->ops->queue_max ||
		    (s->ready && (!s->num || (s->num & (s->num - 1)))))
			return mb_seterr(-EINVAL, "queues[%u].num: %u is not a power "
					 "of two in 1..%u", i + 1, s->num,
					 t->ops->queue_max);
		int rc = check_queue(t, i, s, ts->driver_features);
		if (rc)
			return rc;
	}
	pthread_mutex_lock(&t->lock);
	t->status = ts->status;
	t->drv_features = ts->driver_features;
	t->dev_sel = ts->device_features_sel;
	t->drv_sel = ts->driver_features_sel;
	t->queue_sel = ts->queue_sel;
	t->generation = ts->config_generation;
	for (unsigned i = 0; i < t->ops->nqueues; i++) {
		const struct mb_virtq_state *s = &qs[i];
		struct mb_vq *q = &t->vq[i];
		mb_vq_reset(q);
		q->num = s->num;
		q->desc_gpa = s->desc, q->avail_gpa = s->driver, q->used_gpa = s->device;
		if (s->ready)
			mb_vq_enable(q, t->ops->queue_max, t->drv_features); /* checked */
		pthread_mutex_lock(&q->lock);
		q->last_avail = s->last_avail;
		q->used_idx = s->used_idx;
		q->signalled = s->signalled;
		q->signalled_valid = s->signalled_valid;
		q->broken = s->broken;
		q->popped = s->popped;
		q->pushed = s->pushed;
		pthread_mutex_unlock(&q->lock);
	}
	t->st.notifies = ts->notifications;
	t->st.mmio = ts->mmio_notifications;
	t->st.interrupts = ts->interrupts;
	t->st.suppressed = ts->suppressed_interrupts;
	t->st.faults = ts->faults;
	pthread_mutex_unlock(&t->lock);
	/* The line follows InterruptStatus (level); an irqfd pulses once so a
	 * pending status is not lost on an edge input. */
	pthread_mutex_lock(&t->irq_lock);
	t->isr = ts->isr;
	bool up = t->isr != 0;
	if (t->irqfd >= 0) {
		uint64_t one = 1;
		if (up && write(t->irqfd, &one, 8) != 8)
			mb_irq_pulse(&t->irq);
	} else if (up != t->line) {
		if (up)
			mb_irq_raise(&t->irq);
		else
			mb_irq_lower(&t->irq);
		t->line = up;
	}
	pthread_mutex_unlock(&t->irq_lock);
	return 0;
}
