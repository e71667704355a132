/*
 * A fake virtio driver for the unit tests: it talks to a transport only
 * through the virtio-mmio registers (include/moonbox/virtio_mmio.h, spec
 * v1.2 sec. 4.2.2) and keeps its rings in a fake guest memory, the way a
 * guest's driver does (sec. 3.1.1 setup, sec. 2.7 split rings).
 *
 * Queue q's rings sit at VD_DESC(q), VD_AVAIL(q), VD_USED(q): 4K each,
 * below 0x1000 + 0x3000 * MB_VIRTIO_MAX_QUEUES; buffers go above that.
 */
#ifndef VIRTIO_DRIVER_H
#define VIRTIO_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "moonbox/virtio_mmio.h"

#define VD_DESC(q) (0x1000u + 0x3000u * (q))
#define VD_AVAIL(q) (0x2000u + 0x3000u * (q))
#define VD_USED(q) (0x3000u + 0x3000u * (q))

struct vd {
	struct mb_virtio *t;
	struct mb_mem *mem;
	uint16_t num; /* entries per queue, from vd_setup */
	uint16_t avail[MB_VIRTIO_MAX_QUEUES]; /* the driver's avail idx */
};

/* A guest memory with `size` bytes of RAM at 0 (NULL: out of memory). */
struct mb_mem *vd_ram(uint64_t size);
void vd_attach(struct vd *d, struct mb_virtio *t, struct mb_mem *mem);

void *vd_gp(const struct vd *d, uint64_t gpa); /* host pointer to RAM */
uint32_t vd_rd(const struct vd *d, uint64_t reg);
void vd_wr(const struct vd *d, uint64_t reg, uint32_t v);

/* Reset, ACKNOWLEDGE | DRIVER, offer features, FEATURES_OK (asserted),
 * queues 0..nq-1 of num entries (zeroed rings, asserted ready),
 * DRIVER_OK. */
void vd_setup(struct vd *d, uint64_t features, unsigned nq, uint16_t num);
/* The same steps up to FEATURES_OK only: a device not yet live. */
void vd_negotiate(struct vd *d, uint64_t features);

/* Descriptor i of a table at `table` (a queue's VD_DESC(q) or an
 * indirect table) in mem. */
void vd_put_desc(struct mb_mem *mem, uint64_t table, unsigned i,
		 uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
void vd_desc(struct vd *d, unsigned q, unsigned i, uint64_t addr,
	     uint32_t len, uint16_t flags, uint16_t next);
/* Make chain `head` available (release store of avail->idx). */
void vd_offer(struct vd *d, unsigned q, uint16_t head);
/* One-buffer chain at descriptor i, offered. */
void vd_post(struct vd *d, unsigned q, unsigned i, uint64_t addr,
	     uint32_t len, uint16_t flags);
/* QueueNotify. */
void vd_kick(struct vd *d, unsigned q);

uint16_t vd_used_idx(const struct vd *d, unsigned q);
/* Used entry i (mod num): its length, and the chain's head in *id. */
uint32_t vd_used(const struct vd *d, unsigned q, unsigned i, uint32_t *id);
/* Spin (yielding) until used idx reaches idx; false after ~seconds. */
bool vd_wait_used(const struct vd *d, unsigned q, uint16_t idx);
/* EVENT_IDX (sec. 2.7.10): the driver's used_event, the device's
 * avail_event. */
void vd_set_used_event(struct vd *d, unsigned q, uint16_t v);
uint16_t vd_avail_event(const struct vd *d, unsigned q);

uint32_t vd_status(const struct vd *d);
void vd_status_add(const struct vd *d, uint32_t bits); /* Status |= bits */
/* Feature word sel (0: bits 0-31, 1: 32-63) the device offers / the
 * driver writes. */
uint32_t vd_dev_features(const struct vd *d, unsigned sel);
void vd_drv_features(const struct vd *d, unsigned sel, uint32_t v);
uint32_t vd_isr(const struct vd *d);     /* InterruptStatus */
void vd_ack(const struct vd *d, uint32_t bits); /* InterruptACK */

#endif
