/*
 * virtio over MMIO, version 2 (virtio spec v1.2, sec. 4.2): the transport
 * every moonbox virtio device sits behind.
 *
 * Writing a device
 * ----------------
 * A device is a plain struct plus a `struct mb_virtio_dev_ops`: its ID,
 * queue count and size, its feature bits (the transport adds VERSION_1,
 * RING_INDIRECT_DESC and RING_EVENT_IDX), its config space, and three
 * callbacks:
 *
 *   notify(dev, t, qi)  the driver rang queue qi's doorbell. Runs on the
 *                       machine's event-loop thread (or the caller's, in
 *                       tests) with the transport lock held. Pop chains
 *                       with mb_vq_pop(mb_virtio_queue(t, qi), ...), loop
 *                       while mb_vq_arm() says more came, and hand each
 *                       chain back with mb_virtio_complete() - from any
 *                       thread, now or later (requests may stay in flight).
 *                       mb_vq_pop() < 0 means the queue is broken: stop, the
 *                       transport already set DEVICE_NEEDS_RESET.
 *   reset(dev)          the driver reset the device (status 0). Forget
 *                       in-flight work and return only when no request
 *                       touches guest memory any more (wait for workers).
 *   config_read/write   offsets relative to the config space (0x100).
 *
 * Threads and locks: register accesses (vCPU threads) and notify (event
 * loop) are serialised by the transport lock; completions take only the
 * queue's own lock and the interrupt lock, so a worker never waits for a
 * vCPU and reset can wait for workers.
 *
 * Interrupts: InterruptStatus bit 0 (used buffer) and bit 1 (config
 * change), sec. 4.2.2. Two ways to reach the guest, chosen by whoever
 * builds the transport:
 *   - a line (`irq`): level semantics, asserted while InterruptStatus != 0
 *     and lowered when InterruptACK clears it. When a new bit appears while
 *     the line is already up, the line is dropped and raised again, so an
 *     edge-triggered input (Linux programs the PC's ISA lines edge: no ELCR
 *     or MADT override names them level) still sees a fresh edge.
 *   - an irqfd (`irqfd` >= 0, KVM_IRQFD on the kernel irqchip): each write
 *     is a pulse, i.e. edge semantics, written whenever a new status bit
 *     appears. We do not use KVM_IRQFD_FLAG_RESAMPLE: KVM's IOAPIC runs ack
 *     notifiers only for level-triggered pins, so on the edge pins Linux
 *     gives these devices the resample never fires and the line would stay
 *     asserted (no further edges). Pulses from any thread need no lock.
 *
 * Doorbells: mb_virtio_doorbells() gives each queue an eventfd served on
 * the event loop. With KVM_IOEVENTFD (4-byte write of the queue index at
 * base + 0x50, datamatch) the vCPU never exits to userspace for a kick;
 * without it, the QueueNotify write handler signals the same eventfd.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_MMIO_H
#define MOONBOX_VIRTIO_MMIO_H

#include "moonbox/virtio_queue.h"
#include "moonbox/state.h"
#include "moonbox/device.h"

#define MB_VIRTIO_MAX_QUEUES 8
#define MB_VIRTIO_MMIO_SIZE 0x1000 /* the window each device gets */

/* Register offsets, sec. 4.2.2 table "MMIO Device Register Layout"; all
 * 32 bits wide, the device's config space from MB_VIRTIO_MMIO_CONFIG. */
enum {
	MB_VIRTIO_MMIO_MAGIC_VALUE = 0x000, /* "virt" */
	MB_VIRTIO_MMIO_VERSION = 0x004,     /* 2 */
	MB_VIRTIO_MMIO_DEVICE_ID = 0x008,
	MB_VIRTIO_MMIO_VENDOR_ID = 0x00c,
	MB_VIRTIO_MMIO_DEVICE_FEATURES = 0x010,
	MB_VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014,
	MB_VIRTIO_MMIO_DRIVER_FEATURES = 0x020,
	MB_VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024,
	MB_VIRTIO_MMIO_QUEUE_SEL = 0x030,
	MB_VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034,
	MB_VIRTIO_MMIO_QUEUE_NUM = 0x038,
	MB_VIRTIO_MMIO_QUEUE_READY = 0x044,
	MB_VIRTIO_MMIO_QUEUE_NOTIFY = 0x050,
	MB_VIRTIO_MMIO_INTERRUPT_STATUS = 0x060,
	MB_VIRTIO_MMIO_INTERRUPT_ACK = 0x064,
	MB_VIRTIO_MMIO_STATUS = 0x070,
	MB_VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080,
	MB_VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084,
	MB_VIRTIO_MMIO_QUEUE_DRIVER_LOW = 0x090,
	MB_VIRTIO_MMIO_QUEUE_DRIVER_HIGH = 0x094,
	MB_VIRTIO_MMIO_QUEUE_DEVICE_LOW = 0x0a0,
	MB_VIRTIO_MMIO_QUEUE_DEVICE_HIGH = 0x0a4,
	MB_VIRTIO_MMIO_SHM_SEL = 0x0ac,
	MB_VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0,
	MB_VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4,
	MB_VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8,
	MB_VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc,
	MB_VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc,
	MB_VIRTIO_MMIO_CONFIG = 0x100,
};

/* InterruptStatus bits, sec. 4.2.2. */
#define VIRTIO_MMIO_INT_VRING 1u
#define VIRTIO_MMIO_INT_CONFIG 2u

/* Device status bits, sec. 2.1. */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

#define VIRTIO_F_VERSION_1 32

/* Device IDs, sec. 5. */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4

struct mb_virtio;

struct mb_virtio_dev_ops {
	const char *name;   /* "virtio-blk": logs and state() */
	uint32_t device_id;
	unsigned nqueues;   /* <= MB_VIRTIO_MAX_QUEUES */
	uint16_t queue_max; /* QueueNumMax, <= MB_VQ_MAX_SIZE */
	unsigned config_size;
	void (*config_read)(void *dev, uint64_t off, void *data, unsigned size);
	void (*config_write)(void *dev, uint64_t off, const void *data,
			     unsigned size); /* NULL: read-only config */
	void (*notify)(void *dev, struct mb_virtio *t, unsigned qi);
	void (*reset)(void *dev);
	/* Optional: the driver added status bits (sec. 2.1), called after
	 * the transport accepted them, transport lock held (vhost_user.c
	 * starts its back-end at DRIVER_OK). */
	void (*status)(void *dev, struct mb_virtio *t, uint32_t old,
		       uint32_t status);
};

struct mb_virtio_config {
	const struct mb_virtio_dev_ops *ops;
	void *dev;
	uint64_t features; /* device-specific feature bits */
	struct mb_mem *mem;
	struct mb_irq irq; /* used when irqfd < 0 */
	int irqfd;         /* >= 0: an eventfd KVM turns into a pulse */
};

struct mb_virtio *mb_virtio_new(const struct mb_virtio_config *cfg);
/* Doorbells on m's event loop; KVM_IOEVENTFD at base + 0x50 when it can. */
int mb_virtio_doorbells(struct mb_virtio *t, struct mb_machine *m,
			uint64_t base);
void mb_virtio_free(struct mb_virtio *t);
extern const struct mb_io_ops mb_virtio_mmio_ops;

/* For devices. */
struct mb_vq *mb_virtio_queue(struct mb_virtio *t, unsigned qi);
uint64_t mb_virtio_features(struct mb_virtio *t); /* negotiated */
/* Push a chain to the used ring and interrupt if the driver wants it. */
void mb_virtio_complete(struct mb_virtio *t, struct mb_vq *q, uint16_t head,
			uint32_t len);
/* The config space changed: bump ConfigGeneration, interrupt. */
void mb_virtio_config_changed(struct mb_virtio *t);
/* The device cannot go on: DEVICE_NEEDS_RESET (sec. 2.1.2), logged once. */
void mb_virtio_needs_reset(struct mb_virtio *t, const char *why);
/* Run queue qi's notify handler now (what a doorbell does). */
void mb_virtio_kick(struct mb_virtio *t, unsigned qi);

/* For devices whose queues someone else serves (vhost_user.c):
 * stop serving queue qi's doorbell on the event loop and return its
 * eventfd, still owned (closed) by the transport; -1 when it has none.
 * Guest kicks (KVM ioeventfd or QueueNotify writes) keep signalling it. */
int mb_virtio_doorbell_take(struct mb_virtio *t, unsigned qi);
/* A device process (core/devproc.c, moonbox-device): queue qi's doorbell
 * is fd from now on (the VMM's KVM ioeventfd, handed over: the transport
 * owns it), served on this machine's event loop; and interrupts go to
 * irqfd (the VMM's KVM irqfd; edge, as place.c's). 0 or -errno. */
int mb_virtio_doorbell_give(struct mb_virtio *t, unsigned qi, int fd);
void mb_virtio_irqfd_give(struct mb_virtio *t, int fd);
/* A used-buffer notification that did not come through
 * mb_virtio_complete: InterruptStatus bit 0, then the line or irqfd. */
void mb_virtio_interrupt(struct mb_virtio *t);
/* Offer only the feature bits in mask (transport bits included). */
void mb_virtio_offer_mask(struct mb_virtio *t, uint64_t mask);
/* mb_virtio_needs_reset from a thread that does not hold the transport
 * lock (an event-loop callback). */
void mb_virtio_fail(struct mb_virtio *t, const char *why);
/* mb_virtio_config_changed from a thread that does not hold the lock. */
void mb_virtio_config_change(struct mb_virtio *t);
/* Fault injection (F.virtio.*): every used element asks s (a reference
 * is taken, put when the transport goes). */
struct mb_fault_site;
int mb_virtio_set_fault(struct mb_virtio *t, struct mb_fault_site *s);

/* Why the device needs a reset (sec. 2.1.2), copied into buf; "" when it
 * does not. Not part of the state: a load leaves it empty. */
const char *mb_virtio_fault(struct mb_virtio *t, char *buf, size_t len);

/* ---- state (moonbox/state.h) ------------------------------------------ */

/* One queue as the driver set it up, and where the device is in it:
 * avail_idx (the driver's index in guest RAM) and the counters are only
 * reported. signalled/signalled_valid: the used index at the last
 * interrupt (EVENT_IDX, sec. 2.7.10). */
#define MB_VIRTQ_STATE(X, S) \
	X(S, u16, num) X(S, bool, ready) X(S, bool, broken) \
	X(S, u64, desc) X(S, u64, driver) X(S, u64, device) \
	X(S, u16, last_avail) X(S, u16, used_idx) \
	X(S, u16, signalled) X(S, bool, signalled_valid) \
	X(S, ro_u16, avail_idx) X(S, ro_u64, popped) X(S, ro_u64, pushed)
MB_STATE_STRUCT(mb_virtq_state, MB_VIRTQ_STATE);

/* The transport's registers, then read-only facts and counters. */
#define MB_VIRTIO_MMIO_STATE(X, S) \
	X(S, u32, status) X(S, ro_u64, device_features) X(S, u64, driver_features) \
	X(S, u32, device_features_sel) X(S, u32, driver_features_sel) \
	X(S, u32, queue_sel) X(S, u32, isr) X(S, u32, config_generation) \
	X(S, ro_bool, ioeventfd) X(S, ro_bool, irqfd) \
	X(S, ro_u64, notifications) X(S, ro_u64, mmio_notifications) \
	X(S, ro_u64, interrupts) X(S, ro_u64, suppressed_interrupts) \
	X(S, ro_u64, faults)
MB_STATE_STRUCT(mb_virtio_mmio_state, MB_VIRTIO_MMIO_STATE);

/* A device's state lists the transport first, then its NQ queues, then its
 * own fields: `#define MB_FOO_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, 2) ...`.
 * In the device's save/load, MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
 * copies the transport fields from `ts` into `st` (PUT: back). */
#define MB_VIRTIO_DEV_STATE(X, S, NQ) \
	MB_VIRTIO_MMIO_STATE(X, S) X(S, arr, queues, NQ, mb_virtq_state)
#define MB_VIRTIO_ST_GET(S, t, n) st->n = ts->n;
#define MB_VIRTIO_ST_PUT(S, t, n) ts->n = st->n;

/* Fill ts and qs[0..nqueues) (a consistent copy under the locks). */
void mb_virtio_save(struct mb_virtio *t, struct mb_virtio_mmio_state *ts,
		    struct mb_virtq_state *qs);
/* Check everything (status bits, features offered, queue sizes, rings in
 * guest RAM, indices), then restore: -EINVAL with the field named
 * ("queues[1].num: ...") and nothing changed on error. Guest stopped. */
int mb_virtio_load(struct mb_virtio *t, const struct mb_virtio_mmio_state *ts,
		   const struct mb_virtq_state *qs);

/* ---- a virtio device in a machine (devices/virtio/place.c) -------------- */

/* What a device model tells the placement: its transport ops, how to
 * save/load/quiesce/free it (the transport part is done for it), and an
 * optional bind once the transport exists. */
struct mb_virtio_model {
	const struct mb_virtio_dev_ops *ops;
	const struct mb_device_ops *dev_ops; /* kind, state: see place.c */
	void (*save)(void *dev, struct mb_virtio *t, void *st);
	int (*load)(void *dev, struct mb_virtio *t, const void *st);
	void (*quiesce)(void *dev); /* NULL: nothing runs on its own */
	void (*bind)(void *dev, struct mb_virtio *t);
	void (*free)(void *dev); /* before the transport: blk joins workers */
	/* Optional: mb_device_ops keep/put_back, for the model (blk overlay) */
	int (*keep)(void *dev, void **kept);
	int (*put_back)(void *dev, const void *kept);
};

/* Where: mmio_base/mmio_size 0: a free 4K window from the machine's
 * allocator; irq 0: a free line (virtio never takes line 0). */
struct mb_virtio_place {
	const char *name;    /* NULL: defname's first free index */
	const char *defname; /* "blk%u" */
	uint64_t mmio_base, mmio_size;
	int irq;
};

struct mb_virtio_dev; /* the placed device: mb_device_impl() of it */

/* Take the window and line, an irqfd with the kernel irqchip, build the
 * transport around dev, bind it, ring doorbells, map the window and
 * announce it for virtio_mmio.device=. From the call on, the machine owns
 * dev (freed on failure too); a failure leaves no trace in m. */
int mb_virtio_place(struct mb_machine *m, const struct mb_virtio_place *p,
		    const struct mb_virtio_model *model, void *dev,
		    uint64_t features, struct mb_device **out);
/* Generic mb_device_ops callbacks for a model's dev_ops. */
int mb_virtio_dev_save(void *impl, void *st);
int mb_virtio_dev_load(void *impl, const void *st);
void mb_virtio_dev_quiesce(void *impl);
int mb_virtio_dev_keep(void *impl, void **kept);
int mb_virtio_dev_put_back(void *impl, const void *kept);
void mb_virtio_dev_free(void *impl);
/* The model and transport of a placed device (NULL: not a virtio one). */
void *mb_virtio_dev_model(struct mb_device *d);
struct mb_virtio *mb_virtio_dev_transport(struct mb_device *d);
/* Watch fd on the machine's event loop for the device's model, unwatched
 * before the model is freed (virtio-net's backend). */
int mb_virtio_dev_watch(struct mb_device *d, int fd,
			void (*fn)(void *opaque, int fd), void *opaque);

#endif
