/*
 * virtio-net, virtio spec v1.2 sec. 5.1, with one queue pair (5.1.2:
 * receiveq1 = 0, transmitq1 = 1) and no control queue.
 *
 * Every buffer starts with struct virtio_net_hdr_v1 (5.1.6: 12 bytes with
 * VERSION_1). No offload is offered, so the driver's header carries
 * nothing we need and ours is all zero but num_buffers = 1 (5.1.6.3.1).
 *
 * Without MRG_RXBUF a received frame must fit one chain (5.1.6.3.1); the
 * Linux driver then posts header + 1518-byte buffers. MRG_RXBUF would
 * spread a frame over several chains, which must all reach the used ring
 * before the driver may see the first: left out until the queue module
 * can publish several used entries at once.
 *
 * Receive runs on the event loop when the backend has frames, transmit on
 * the transmitq doorbell. A frame read while receiveq is empty stays
 * pending, and the backend is paused (stops waking us) until the driver
 * posts buffers: backpressure down to the peer's socket or the tap queue.
 *
 * Faults (moonbox/fault.h, docs/faults.md): with a fault site (or the link
 * set down) every frame takes the slow path: one decision per frame, in
 * ring order (tx) or backend order (rx), then a queue per direction whose
 * frames leave at their due time on the machine's clock, in order (a
 * delayed frame holds back the ones behind it; only reorder passes).
 * Without a site: one predictable branch per frame.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moonbox/virtio_net.h"

enum { RXQ = 0, TXQ = 1 };

#define QMAX 1024 /* frames a direction's queue holds; more are dropped */

/* A frame on its way through the fault path, due at `due` (clock ns). */
struct nframe {
	struct nframe *next;
	uint64_t due;
	uint32_t len;
	uint8_t data[];
};

/* One direction of the fault path (index RXQ or TXQ). */
struct ndir {
	struct nframe *head, *tail;
	unsigned n;
	uint64_t last_due;   /* no frame leaves before the one ahead of it */
	uint64_t busy_until; /* rate: when the wire is free again */
	struct nframe *held; /* reorder: the frame waiting for held_left more */
	unsigned held_left;
	uint64_t ordinal;    /* frames asked about */
};

struct mb_virtio_net {
	struct mb_netbe *be;
	struct mb_virtio *t;
	uint8_t mac[6];

	/* Serialises the backend and receiveq between poll (event loop) and
	 * doorbells/reset (transport lock held; taken before ours). */
	pthread_mutex_t lock;
	bool live;    /* the driver rang a doorbell since the last reset */
	bool waiting; /* backend paused until receiveq gets buffers */
	size_t pend_len; /* a frame read and not yet delivered, or 0 */
	uint8_t *pend;
	struct mb_vq_chain rx, tx;
	struct iovec txv[MB_VQ_MAX_SEGS];

	/* NULL unless a fault rule targets this device (moonbox/fault.h). */
	struct mb_fault_site *_Atomic fault;
	bool link_down;      /* config status without LINK_UP: no frame passes */
	bool slowpath;       /* a site, the link down or a hook (under lock) */
	const struct mb_clock *clock;
	struct mb_timer *timer; /* the fault queues' next due frame */
	struct ndir dir[2];
	uint8_t *scratch;    /* a transmitted frame, linearised (slow path) */
	/* An observer (m:on "net"): called with n->lock released, on the
	 * event loop only, never under the transport lock (its function may
	 * read the device's state). Set once. */
	mb_virtio_net_hook_fn hook;
	void *hook_ctx;
	uint8_t *hookbuf;    /* a departing frame, for the hook to change */
	uint64_t resets;     /* a reset while the lock was released drops it */

	struct {
		_Atomic uint64_t rx_frames, rx_bytes, rx_dropped, rx_stalls;
		_Atomic uint64_t tx_frames, tx_bytes, tx_dropped;
	} st;
};

/* ---- receive: backend -> receiveq ---------------------------------------------- */

/* Put the pending frame into the next receive chain: 1 done, 0 no chain
 * (the caller pauses the backend), -1 the queue is broken. */
static int deliver(struct mb_virtio_net *n, struct mb_vq *q, const uint8_t *buf,
		   size_t len)
{
	int rc;
	while ((rc = mb_vq_pop(q, &n->rx)) == 0)
		if (!mb_vq_arm(q)) /* EVENT_IDX: kick us at the next buffer */
			return 0;
	if (rc < 0)
		return -1;
	const struct iovec *in = n->rx.iov + n->rx.nout;
	uint32_t used = 0;
	if (n->rx.in_len >= MB_VIRTIO_NET_HDR + len) {
		uint8_t hdr[MB_VIRTIO_NET_HDR] = { 0 };
		hdr[10] = 1; /* num_buffers (le16) */
		mb_iov_from_buf(in, n->rx.nin, 0, hdr, sizeof hdr);
		mb_iov_from_buf(in, n->rx.nin, sizeof hdr, buf, len);
		used = (uint32_t)(sizeof hdr + len);
		n->st.rx_frames++;
		n->st.rx_bytes += len;
	} else {
		/* Too big for the buffer: drop it; the driver counts a
		 * length error for a used length shorter than a header. */
		n->st.rx_dropped++;
	}
	mb_virtio_complete(n->t, q, n->rx.head, used);
	return 1;
}

/* ---- the fault path (n->lock held) ------------------------------------------------ */

/* The one branch a frame pays when nothing is set (n->lock held). */
static bool slow(struct mb_virtio_net *n)
{
	return n->slowpath;
}

static void update_slow(struct mb_virtio_net *n)
{
	n->slowpath = atomic_load_explicit(&n->fault, memory_order_acquire) ||
		      n->link_down || n->hook;
}

/* The hook on buf (MB_NETBE_MAX_FRAME bytes), n->lock released meanwhile:
 * false when the frame is gone (dropped by the hook, or a reset). */
static bool hooked(struct mb_virtio_net *n, bool rx, uint8_t *buf, uint32_t *len)
{
	bool drop = false;
	uint64_t resets = n->resets;
	pthread_mutex_unlock(&n->lock);
	n->hook(n->hook_ctx, rx, buf, len, &drop);
	pthread_mutex_lock(&n->lock);
	if (*len < 14 || *len > MB_NETBE_MAX_FRAME)
		drop = true; /* not a frame */
	return !drop && resets == n->resets;
}

static uint64_t now(struct mb_virtio_net *n)
{
	return n->clock ? n->clock->now(n->clock) : 0;
}

static void dropped(struct mb_virtio_net *n, int d)
{
	if (d == RXQ)
		n->st.rx_dropped++;
	else
		n->st.tx_dropped++;
}

static struct nframe *nframe_new(const uint8_t *buf, uint32_t len, uint64_t due)
{
	struct nframe *f = malloc(sizeof *f + len);
	if (f) {
		f->next = NULL, f->due = due, f->len = len;
		memcpy(f->data, buf, len);
	}
	return f;
}

static void push(struct mb_virtio_net *n, int d, struct nframe *f)
{
	struct ndir *q = &n->dir[d];
	if (f->due < q->last_due)
		f->due = q->last_due; /* in order: never before the frame ahead */
	q->last_due = f->due;
	if (q->tail)
		q->tail->next = f;
	else
		q->head = f;
	q->tail = f;
	q->n++;
}

/* A reordered frame goes right after the frame that ended its wait. */
static void release_held(struct mb_virtio_net *n, int d)
{
	struct ndir *q = &n->dir[d];
	struct nframe *h = q->held;
	q->held = NULL;
	h->due = 0;
	push(n, d, h);
}

/* A frame no fault holds, with nothing queued ahead of it: sent or
 * delivered at once (true), or false when it must queue (no receive
 * buffer; a hook, which runs on the event loop, for tx). */
static bool pass(struct mb_virtio_net *n, int d, const uint8_t *buf, uint32_t len)
{
	if (d == TXQ) {
		if (n->hook)
			return false;
		struct iovec v = { (void *)buf, len };
		if (mb_netbe_send(n->be, &v, 1)) {
			n->st.tx_dropped++;
		} else {
			n->st.tx_frames++;
			n->st.tx_bytes += len;
		}
		return true;
	}
	struct mb_vq *vq = n->t ? mb_virtio_queue(n->t, RXQ) : NULL;
	return vq && deliver(n, vq, buf, len) > 0; /* else queued: the loop pauses */
}

/* One frame into direction d's fault path: decided, then queued (or
 * dropped), with its copies. */
static void faulted(struct mb_virtio_net *n, int d, const uint8_t *buf, uint32_t len)
{
	struct ndir *q = &n->dir[d];
	struct mb_fault_site *fs = atomic_load_explicit(&n->fault, memory_order_acquire);
	struct mb_fault_verdict v = { 0 };
	if (n->link_down) { /* no carrier: the wire carries nothing */
		dropped(n, d);
		return;
	}
	if (fs)
		mb_fault_net_maybe(fs, d == RXQ, ++q->ordinal, len, &v); /* v stays 0: none */
	if (v.drop) {
		dropped(n, d);
		return;
	}
	/* The clock only when a fault needs it (it takes the loop's lock). */
	bool timed = v.delay_ms || v.rate || v.reorder;
	uint64_t t = timed ? now(n) : 0, due = t + v.delay_ms * 1000000ull;
	if (v.rate) { /* a wire of v.rate bytes/s: wait for it, or tail-drop */
		uint64_t start = q->busy_until > due ? q->busy_until : due;
		uint64_t end = start + (uint64_t)((double)len * 1e9 / (double)v.rate);
		if (end - t > v.rate_ms * 1000000ull) {
			dropped(n, d);
			return;
		}
		q->busy_until = due = end;
	}
	unsigned copies = 1 + v.dup;
	if (copies == 1 && due <= t && !v.reorder && !q->head && !q->held &&
	    !v.corrupt && pass(n, d, buf, len))
		return; /* nothing to hold it for: no queue, no copy */
	if (q->n + copies > QMAX) {
		dropped(n, d);
		return;
	}
	for (unsigned i = 0; i < copies; i++) {
		struct nframe *f = nframe_new(buf, len, due);
		if (!f) {
			dropped(n, d);
			return;
		}
		if (i == 0 && v.corrupt) /* the copies are copies of the corrupt frame */
			mb_fault_net_corrupt(&v, f->data, len);
		if (i == 0)
			buf = f->data;
		if (i == 0 && v.reorder && !q->held) {
			/* held back until v.reorder later frames went, or its time */
			f->due = t + v.reorder_ms * 1000000ull;
			q->held = f;
			q->held_left = v.reorder;
			continue;
		}
		push(n, d, f);
		if (i == 0 && q->held && q->held != f && --q->held_left == 0)
			release_held(n, d);
	}
}

static void free_dir(struct ndir *q)
{
	for (struct nframe *f = q->head, *next; f; f = next)
		next = f->next, free(f);
	free(q->held);
	uint64_t o = q->ordinal; /* the fault events' count goes on */
	memset(q, 0, sizeof *q);
	q->ordinal = o;
}

/* Send the transmit queue's due frames. */
static void drain_tx(struct mb_virtio_net *n, uint64_t t)
{
	struct ndir *q = &n->dir[TXQ];
	if (q->held && q->held->due <= t)
		release_held(n, TXQ);
	struct nframe *f;
	while ((f = q->head) && f->due <= t) {
		if (!(q->head = f->next))
			q->tail = NULL;
		q->n--;
		struct iovec v = { f->data, f->len };
		if (n->hook) { /* what the guest sent, after any tx fault */
			uint32_t len = f->len;
			memcpy(n->hookbuf, f->data, len);
			bool keep = hooked(n, false, n->hookbuf, &len);
			v = (struct iovec){ n->hookbuf, len };
			if (!keep) {
				n->st.tx_dropped++;
				free(f);
				continue;
			}
		}
		if (mb_netbe_send(n->be, &v, 1)) {
			n->st.tx_dropped++;
		} else {
			n->st.tx_frames++;
			n->st.tx_bytes += f->len;
		}
		free(f);
	}
}

/* Deliver the receive queue's due frames: 1 all done, 0 no buffers, -1
 * a broken queue (as deliver()). */
static int drain_rx(struct mb_virtio_net *n, struct mb_vq *vq, uint64_t t)
{
	struct ndir *q = &n->dir[RXQ];
	if (q->held && q->held->due <= t)
		release_held(n, RXQ);
	struct nframe *f;
	while ((f = q->head) && f->due <= t) {
		int rc = deliver(n, vq, f->data, f->len);
		if (rc <= 0)
			return rc;
		if (!(q->head = f->next))
			q->tail = NULL;
		q->n--;
		free(f);
	}
	return 1;
}

/* The timer at the earliest due frame, or off. */
static void arm(struct mb_virtio_net *n)
{
	if (!n->timer)
		return;
	uint64_t next = 0;
	for (int d = 0; d < 2; d++) {
		struct ndir *q = &n->dir[d];
		if (d == RXQ && n->waiting)
			continue; /* no buffers: the doorbell polls, not the clock */
		/* a head due at 0 (no fault took the time) is due now */
		uint64_t x[2] = { q->head ? (q->head->due ? q->head->due : 1) : 0,
				  q->held ? q->held->due : 0 };
		for (int i = 0; i < 2; i++)
			if (x[i] && (!next || x[i] < next))
				next = x[i];
	}
	n->clock->timer_mod(n->timer, next);
}

void mb_virtio_net_poll(struct mb_virtio_net *n)
{
	pthread_mutex_lock(&n->lock);
	struct mb_vq *q = n->t ? mb_virtio_queue(n->t, RXQ) : NULL;
	bool faults = slow(n);
	uint64_t t = faults ? now(n) : 0;
	while (!n->waiting) {
		if (faults && n->live && q && drain_rx(n, q, t) <= 0) {
			n->waiting = true;
			n->st.rx_stalls++;
			mb_netbe_pause(n->be, true);
			break;
		}
		if (!n->pend_len) {
			ssize_t r = mb_netbe_recv(n->be, n->pend, MB_NETBE_MAX_FRAME);
			if (r == -EMSGSIZE) {
				n->st.rx_dropped++;
				continue;
			}
			if (r <= 0)
				break;
			n->pend_len = (size_t)r;
		}
		if (!n->live || !q) { /* no driver: the wire drops it */
			n->st.rx_dropped++;
			n->pend_len = 0;
			continue;
		}
		if (faults) { /* decided now, delivered from the queue */
			uint32_t len = (uint32_t)n->pend_len;
			n->pend_len = 0;
			/* the hook sees what the wire brought, before rx faults */
			if (!n->hook || hooked(n, true, n->pend, &len))
				faulted(n, RXQ, n->pend, len);
			else
				n->st.rx_dropped++;
			if (!n->live) /* a reset meanwhile */
				break;
			continue;
		}
		int rc = deliver(n, q, n->pend, n->pend_len);
		if (rc > 0)
			n->pend_len = 0;
		if (rc <= 0) {
			/* No buffers (or a broken queue, until reset): stop
			 * reading, keep the frame. */
			n->waiting = true;
			n->st.rx_stalls++;
			mb_netbe_pause(n->be, true);
		}
	}
	if (faults) {
		drain_tx(n, t);
		arm(n);
	}
	pthread_mutex_unlock(&n->lock);
}

static void on_timer(void *opaque)
{
	mb_virtio_net_poll(opaque); /* due frames both ways, then re-armed */
}

/* ---- transmit: transmitq -> backend ---------------------------------------------- */

static void send_chain(struct mb_virtio_net *n)
{
	const struct mb_vq_chain *c = &n->tx;
	/* 5.1.6.2: header, then the frame; framing is free (2.6.4). */
	uint64_t len = c->out_len - MB_VIRTIO_NET_HDR;
	if (c->out_len < MB_VIRTIO_NET_HDR + 14 || len > MB_NETBE_MAX_FRAME) {
		n->st.tx_dropped++; /* runt or giant: not a frame */
		return;
	}
	unsigned k = mb_iov_slice(c->iov, c->nout, MB_VIRTIO_NET_HDR, len, n->txv);
	if (slow(n)) {
		/* Read in place when it is one piece (the chain is ours until
		 * completed); whatever is kept for later is copied. */
		const uint8_t *frame = n->txv[0].iov_base;
		if (k != 1) {
			mb_iov_to_buf(n->txv, k, 0, n->scratch, len);
			frame = n->scratch;
		}
		faulted(n, TXQ, frame, (uint32_t)len);
		if (!n->hook) /* else the event loop sends it (the hook's thread) */
			drain_tx(n, now(n));
		arm(n);
		return;
	}
	if (mb_netbe_send(n->be, n->txv, k)) {
		n->st.tx_dropped++;
		return;
	}
	n->st.tx_frames++;
	n->st.tx_bytes += len;
}

static void transmit(struct mb_virtio_net *n, struct mb_virtio *t)
{
	struct mb_vq *q = mb_virtio_queue(t, TXQ);
	do {
		int rc;
		while ((rc = mb_vq_pop(q, &n->tx)) > 0) {
			send_chain(n);
			mb_virtio_complete(t, q, n->tx.head, 0);
		}
		if (rc < 0)
			return;
	} while (mb_vq_arm(q));
}

/* ---- transport callbacks ------------------------------------------------------------ */

static void net_notify(void *dev, struct mb_virtio *t, unsigned qi)
{
	struct mb_virtio_net *n = dev;
	pthread_mutex_lock(&n->lock);
	n->live = true;
	bool resume = qi == RXQ && n->waiting;
	if (resume) {
		n->waiting = false;
		mb_netbe_pause(n->be, false);
	}
	if (qi == TXQ)
		transmit(n, t);
	if (resume && n->hook) /* not under the transport lock: the loop polls */
		n->clock->timer_mod(n->timer, 1);
	pthread_mutex_unlock(&n->lock);
	if (resume && !n->hook)
		mb_virtio_net_poll(n); /* the pending frame, then more */
}

static void net_reset(void *dev)
{
	struct mb_virtio_net *n = dev;
	pthread_mutex_lock(&n->lock); /* waits for a poll under way */
	n->live = false;
	n->pend_len = 0;
	n->resets++;
	free_dir(&n->dir[RXQ]); /* frames on the wire are lost with the device */
	free_dir(&n->dir[TXQ]);
	arm(n);
	if (n->waiting) { /* drain and drop until the driver is back */
		n->waiting = false;
		mb_netbe_pause(n->be, false);
	}
	pthread_mutex_unlock(&n->lock);
}

/* struct virtio_net_config (5.1.4): mac, status, max_virtqueue_pairs,
 * mtu. Read-only for the driver. */
static void net_config_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_virtio_net *n = dev;
	uint8_t cfg[MB_VIRTIO_NET_CONFIG_SIZE];
	memcpy(cfg, n->mac, 6);
	pthread_mutex_lock(&n->lock);
	mb_io_put(cfg + 6, 2, n->link_down ? 0 : VIRTIO_NET_S_LINK_UP);
	pthread_mutex_unlock(&n->lock);
	mb_io_put(cfg + 8, 2, 1);
	mb_io_put(cfg + 10, 2, 1500); /* valid with VIRTIO_NET_F_MTU only */
	memcpy(data, cfg + off, size);
}

const struct mb_virtio_dev_ops mb_virtio_net_ops = {
	.name = "virtio-net",
	.device_id = VIRTIO_ID_NET,
	.nqueues = 2,
	.queue_max = MB_VQ_MAX_SIZE,
	.config_size = MB_VIRTIO_NET_CONFIG_SIZE,
	.config_read = net_config_read,
	.notify = net_notify,
	.reset = net_reset,
};

/* ---- life cycle ------------------------------------------------------------------------ */

struct mb_virtio_net *mb_virtio_net_new(const struct mb_virtio_net_config *cfg)
{
	struct mb_virtio_net *n = calloc(1, sizeof *n);
	if (n) {
		n->pend = malloc(MB_NETBE_MAX_FRAME);
		n->scratch = malloc(MB_NETBE_MAX_FRAME);
	}
	if (n && cfg->clock)
		n->timer = cfg->clock->timer_new(cfg->clock, on_timer, n);
	if (!n || !n->pend || !n->scratch || (cfg->clock && !n->timer)) {
		if (n) {
			free(n->pend);
			free(n->scratch);
		}
		free(n);
		mb_seterr(-ENOMEM, "virtio-net: out of memory");
		return NULL;
	}
	memcpy(n->mac, cfg->mac, 6);
	n->be = cfg->be;
	n->clock = cfg->clock;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

int mb_virtio_net_set_hook(struct mb_virtio_net *n, mb_virtio_net_hook_fn fn,
			   void *ctx)
{
	if (!n->timer)
		return mb_seterr(-ENOTSUP, "virtio-net: frame events need the "
				 "machine's clock");
	uint8_t *buf = malloc(MB_NETBE_MAX_FRAME);
	if (!buf)
		return mb_seterr(-ENOMEM, "virtio-net: out of memory");
	pthread_mutex_lock(&n->lock);
	int rc = n->hook ? mb_seterr(-EBUSY, "virtio-net: already observed") : 0;
	if (!rc) {
		n->hookbuf = buf, buf = NULL;
		n->hook_ctx = ctx;
		n->hook = fn;
		update_slow(n);
	}
	pthread_mutex_unlock(&n->lock);
	free(buf);
	return rc;
}

int mb_virtio_net_set_fault(struct mb_virtio_net *n, struct mb_fault_site *s)
{
	int rc = mb_fault_site_install(&n->fault, s);
	pthread_mutex_lock(&n->lock);
	update_slow(n);
	pthread_mutex_unlock(&n->lock);
	return rc;
}

void mb_virtio_net_set_link(struct mb_virtio_net *n, bool up)
{
	pthread_mutex_lock(&n->lock);
	bool changed = n->link_down == up;
	n->link_down = !up;
	update_slow(n);
	pthread_mutex_unlock(&n->lock);
	/* 5.1.4: the driver learns a status change from a configuration
	 * change notification (4.2.2.1: InterruptStatus bit 1). */
	if (changed && n->t)
		mb_virtio_config_changed(n->t);
}

bool mb_virtio_net_link(struct mb_virtio_net *n)
{
	pthread_mutex_lock(&n->lock);
	bool up = !n->link_down;
	pthread_mutex_unlock(&n->lock);
	return up;
}

void mb_virtio_net_bind(struct mb_virtio_net *n, struct mb_virtio *t)
{
	n->t = t;
}

void mb_virtio_net_free(struct mb_virtio_net *n)
{
	if (!n)
		return;
	if (n->timer)
		n->clock->timer_free(n->timer);
	mb_netbe_free(n->be);
	free_dir(&n->dir[RXQ]);
	free_dir(&n->dir[TXQ]);
	mb_fault_site_put(atomic_load(&n->fault));
	pthread_mutex_destroy(&n->lock);
	free(n->pend);
	free(n->scratch);
	free(n->hookbuf);
	free(n);
}

uint64_t mb_virtio_net_features(struct mb_virtio_net *n)
{
	return 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS;
}

struct mb_netbe *mb_virtio_net_backend(struct mb_virtio_net *n)
{
	return n->be;
}

void mb_virtio_net_stats(struct mb_virtio_net *n, struct mb_virtio_net_stats *st)
{
	st->rx_frames = n->st.rx_frames;
	st->rx_bytes = n->st.rx_bytes;
	st->rx_dropped = n->st.rx_dropped;
	st->rx_stalls = n->st.rx_stalls;
	st->tx_frames = n->st.tx_frames;
	st->tx_bytes = n->st.tx_bytes;
	st->tx_dropped = n->st.tx_dropped;
}

/* ---- state and the machine ------------------------------------------------- */

MB_STATE_DESC(mb_virtio_net_state, MB_VIRTIO_NET_STATE, 1);

void mb_virtio_net_save(struct mb_virtio_net *n, struct mb_virtio *t,
			struct mb_virtio_net_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	memset(st, 0, sizeof *st);
	mb_virtio_save(t, ts, st->queues);
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
	memcpy(st->mac, n->mac, 6);
	st->mac_len = 6;
	pthread_mutex_lock(&n->lock);
	st->live = n->live;
	st->waiting = n->waiting;
	st->pending_frame = (uint32_t)n->pend_len;
	bool down = n->link_down;
	pthread_mutex_unlock(&n->lock);
	/* a cable (a peer) and no net.link fault holding the link down */
	st->link_up = n->be && mb_netbe_connected(n->be) && !down;
#define G(f) st->f = n->st.f;
	G(rx_frames) G(rx_bytes) G(rx_dropped) G(rx_stalls)
	G(tx_frames) G(tx_bytes) G(tx_dropped)
#undef G
}

int mb_virtio_net_load(struct mb_virtio_net *n, struct mb_virtio *t,
		       const struct mb_virtio_net_state *st)
{
	if (st->mac_len != 6)
		return mb_seterr(-EINVAL, "mac: %u bytes, not 6", st->mac_len);
	if (st->mac[0] & 1)
		return mb_seterr(-EINVAL, "mac: a multicast address");
	struct mb_virtio_mmio_state tss, *ts = &tss;
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_PUT, _)
	int rc = mb_virtio_load(t, ts, st->queues);
	if (rc)
		return rc;
	memcpy(n->mac, st->mac, 6);
	pthread_mutex_lock(&n->lock);
	n->live = st->live;
	n->waiting = st->waiting;
	n->pend_len = 0;
	if (n->be)
		mb_netbe_pause(n->be, n->waiting);
	pthread_mutex_unlock(&n->lock);
#define P(f) n->st.f = st->f;
	P(rx_frames) P(rx_bytes) P(rx_dropped) P(rx_stalls)
	P(tx_frames) P(tx_bytes) P(tx_dropped)
#undef P
	return 0;
}

static void m_save(void *dev, struct mb_virtio *t, void *st)
{
	mb_virtio_net_save(dev, t, st);
}

static int m_load(void *dev, struct mb_virtio *t, const void *st)
{
	return mb_virtio_net_load(dev, t, st);
}

static void m_bind(void *dev, struct mb_virtio *t)
{
	mb_virtio_net_bind(dev, t);
}

static void m_free(void *dev)
{
	mb_virtio_net_free(dev);
}

static const struct mb_device_ops net_dev_ops = {
	.kind = "virtio_net", .state = &mb_virtio_net_state_desc,
	.save = mb_virtio_dev_save, .load = mb_virtio_dev_load,
	.quiesce = mb_virtio_dev_quiesce, .free = mb_virtio_dev_free,
};

static const struct mb_virtio_model net_model = {
	.ops = &mb_virtio_net_ops, .dev_ops = &net_dev_ops, .save = m_save,
	.load = m_load, .bind = m_bind, .free = m_free,
};

static void on_frames(void *opaque, int fd)
{
	mb_virtio_net_poll(opaque);
}

/* 52:54:00 (the locally administered prefix QEMU made usual) and 24 bits
 * from the process id and a counter: unique within this process, and
 * across processes unless their ids collide modulo 65536. */
static void default_mac(uint8_t mac[6])
{
	static _Atomic unsigned counter;
	unsigned pid = (unsigned)getpid() & 0xffff;
	mac[0] = 0x52, mac[1] = 0x54, mac[2] = 0x00;
	mac[3] = (uint8_t)(pid >> 8), mac[4] = (uint8_t)pid;
	mac[5] = (uint8_t)atomic_fetch_add(&counter, 1);
}

int mb_virtio_net_attach(struct mb_machine *m,
			 const struct mb_virtio_net_attach_config *cfg,
			 struct mb_device **out)
{
	static const uint8_t zero[6];
	if (!cfg->be)
		return mb_seterr(-EINVAL, "be: missing (a network backend)");
	if (cfg->mac[0] & 1) {
		mb_netbe_free(cfg->be);
		return mb_seterr(-EINVAL, "mac: a multicast address");
	}
	struct mb_virtio_net_config c = { .be = cfg->be, .clock = mb_machine_clock(m) };
	if (memcmp(cfg->mac, zero, 6))
		memcpy(c.mac, cfg->mac, 6);
	else
		default_mac(c.mac);
	struct mb_virtio_net *n = mb_virtio_net_new(&c);
	if (!n) {
		mb_netbe_free(cfg->be);
		return -ENOMEM;
	}
	struct mb_virtio_place p = { cfg->name, "net%u", cfg->mmio_base,
				     cfg->mmio_size, cfg->irq };
	struct mb_device *d;
	int rc = mb_virtio_place(m, &p, &net_model, n, mb_virtio_net_features(n),
				 &d);
	if (rc)
		return rc;
	if ((rc = mb_virtio_dev_watch(d, mb_netbe_pollfd(cfg->be), on_frames, n))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
