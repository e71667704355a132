/*
 * Split virtqueues (virtio spec v1.2, sec. 2.7), shared by every virtio
 * device. The queue module knows guest memory and ring layout, nothing of
 * transports or devices: a device pops descriptor chains as iovecs that
 * point straight into guest RAM, and pushes them back to the used ring.
 *
 * Hostile drivers: every ring and buffer is checked with mb_mem_ptr (whole
 * range, writability for device-writable buffers). A malformed queue
 * (descriptor index out of range, loop or chain longer than the queue,
 * zero-length buffer, buffer outside RAM, nested indirect table, avail
 * index running more than the queue size ahead) marks the queue broken
 * and calls the fault callback once: the transport turns that into
 * DEVICE_NEEDS_RESET (sec. 2.1.2). A broken queue pops nothing more.
 *
 * Threads: pop/arm from one thread at a time (the transport serialises
 * notify handling); push/need_irq may come from any thread (their own lock).
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_QUEUE_H
#define MOONBOX_VIRTIO_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>


#define MB_VQ_MAX_SIZE 256 /* the largest queue a device offers */
#define MB_VQ_MAX_SEGS 256 /* buffers in one chain, indirect included */

/* Descriptor flags (sec. 2.7.5) and ring flags (2.7.6, 2.7.8). */
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

/* Feature bits the queue honours (sec. 6). */
#define VIRTIO_F_RING_INDIRECT_DESC 28
#define VIRTIO_F_RING_EVENT_IDX 29

/* One descriptor chain: device-readable buffers first (out), then
 * device-writable ones (in), as the spec requires of drivers (2.7.4.2). */
struct mb_vq_chain {
	uint16_t head;
	unsigned nout, nin;
	uint64_t out_len, in_len;
	struct iovec iov[MB_VQ_MAX_SEGS]; /* iov[0..nout) out, then nin in */
};

struct mb_vq {
	/* set by the driver through the transport (staged until ready) */
	uint16_t num;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool ready, broken;
	bool indirect, event_idx; /* negotiated features */

	/* host views of the rings, checked once when the queue goes ready */
	struct mb_mem *mem;
	uint8_t *desc, *avail, *used;
	unsigned gen; /* mb_mem_gen() they were checked at */
	bool remote;  /* memory by messages: rings fetched on every use */

	uint16_t last_avail; /* next avail entry to consume (popper only) */
	uint16_t used_idx;   /* our copy of used->idx (under lock) */
	uint16_t signalled;  /* used_idx at the last interrupt (EVENT_IDX) */
	bool signalled_valid;
	pthread_mutex_t lock;

	void (*fault)(void *ctx, struct mb_vq *q, const char *why);
	void *fault_ctx;
	char why[160]; /* the first fault, for state() and logs */
	uint64_t popped, pushed;
};

void mb_vq_init(struct mb_vq *q, struct mb_mem *mem);
void mb_vq_destroy(struct mb_vq *q);
/* Forget everything (device reset): not ready, not broken, indices 0. */
void mb_vq_reset(struct mb_vq *q);
/* Make the staged num/desc/avail/used live. Checks size (a power of two,
 * 1..max), alignment (2.7: 16, 2, 4) and that every ring lies in RAM.
 * Returns 0, or -EINVAL and a message in mb_errmsg(). */
int mb_vq_enable(struct mb_vq *q, uint16_t max, uint64_t features);

/* Under q->lock: ready, and the rings still in reachable memory (looked
 * up again after a region was revoked). Before a direct look at them. */
bool mb_vq_rings_ok(struct mb_vq *q);
/* Next available chain into c: 1, 0 when none, -EIO when the queue is (or
 * just became) broken. */
int mb_vq_pop(struct mb_vq *q, struct mb_vq_chain *c);
/* The chain whose head descriptor is head (not taken from the avail
 * ring): 1, 0 when the queue is not ready, -EIO when it is (or just
 * became) broken. */
int mb_vq_chain_at(struct mb_vq *q, uint16_t head, struct mb_vq_chain *c);
/* Give a chain back with len bytes written to its writable buffers. */
void mb_vq_push(struct mb_vq *q, uint16_t head, uint32_t len);
/* After pushes: does the driver want an interrupt? (2.7.7.2, 2.7.10) */
bool mb_vq_need_irq(struct mb_vq *q);
/* Done popping for now: with EVENT_IDX publish avail_event = last_avail
 * (2.7.10), then re-check. True when more chains arrived meanwhile, so
 * the caller pops again instead of missing them. */
bool mb_vq_arm(struct mb_vq *q);

/* The EVENT_IDX test of sec. 2.7.10 (vring_need_event in Linux). */
static inline bool mb_vq_need_event(uint16_t event, uint16_t new_idx,
				    uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

/* iovec helpers for devices: copy out of / into a list of buffers, and
 * carve a sub-list [off, off+len) (pointers only, no data copied). */
size_t mb_iov_to_buf(const struct iovec *iov, unsigned n, size_t off,
		     void *buf, size_t len);
size_t mb_iov_from_buf(const struct iovec *iov, unsigned n, size_t off,
		       const void *buf, size_t len);
unsigned mb_iov_slice(const struct iovec *iov, unsigned n, size_t off,
		      size_t len, struct iovec *out);

#endif
