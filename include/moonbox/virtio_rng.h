/* virtio-rng / entropy device (virtio spec v1.2, sec. 5.4): every
 * device-writable buffer is filled from getrandom(2). */
#ifndef MOONBOX_VIRTIO_RNG_H
#define MOONBOX_VIRTIO_RNG_H

#include "moonbox/virtio_mmio.h"

struct mb_virtio; /* moonbox.h may include this before virtio_mmio.h ends */
struct mb_vq_chain;

struct mb_virtio_rng;

struct mb_virtio_rng *mb_virtio_rng_new(void);
void mb_virtio_rng_free(struct mb_virtio_rng *r);
uint64_t mb_virtio_rng_bytes(struct mb_virtio_rng *r);
extern const struct mb_virtio_dev_ops mb_virtio_rng_ops;

#endif
