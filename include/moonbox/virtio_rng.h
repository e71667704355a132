/* virtio-rng / entropy device (virtio spec v1.2, sec. 5.4): every
 * device-writable buffer is filled from getrandom(2). */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_RNG_H
#define MOONBOX_VIRTIO_RNG_H

#include "moonbox/virtio_mmio.h"


struct mb_virtio_rng;

#define MB_VIRTIO_RNG_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, 1) \
	X(S, ro_u64, bytes)
MB_STATE_STRUCT(mb_virtio_rng_state, MB_VIRTIO_RNG_STATE);
void mb_virtio_rng_save(struct mb_virtio_rng *r, struct mb_virtio *t,
			struct mb_virtio_rng_state *st);
int mb_virtio_rng_load(struct mb_virtio_rng *r, struct mb_virtio *t,
		       const struct mb_virtio_rng_state *st);

struct mb_virtio_rng_attach_config {
	const char *name; /* NULL: "rng0", "rng1", ... */
	uint64_t mmio_base, mmio_size; /* 0: a free 4K window */
	int irq;          /* 0: a free line */
};
/* cfg may be NULL (a free window and line). */
int mb_virtio_rng_attach(struct mb_machine *m,
			 const struct mb_virtio_rng_attach_config *cfg,
			 struct mb_device **out);

struct mb_virtio_rng *mb_virtio_rng_new(void);
void mb_virtio_rng_free(struct mb_virtio_rng *r);
uint64_t mb_virtio_rng_bytes(struct mb_virtio_rng *r);
extern const struct mb_virtio_dev_ops mb_virtio_rng_ops;

#endif
