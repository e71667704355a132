/*
 * A copy-on-write overlay over a disk image (virtio_blk disk = "overlay"):
 * writes land in 4 KiB blocks held in memory, reads take a block when the
 * overlay has one and the image otherwise; the image is never written.
 *
 * Blocks are reference counted and never changed while shared, so keeping
 * the overlay's state (an in-memory snapshot) copies only the map of
 * written blocks, and putting it back replaces the map: the cost follows
 * the blocks written, not the disk size. A kept state is independent of
 * the overlay (it may be dropped after the disk is gone).
 */
#ifndef MB_VIRTIO_OVERLAY_H
#define MB_VIRTIO_OVERLAY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct mb_overlay;
struct mb_overlay_kept;

/* Over the first size bytes of fd (not owned, only read). NULL: no memory. */
struct mb_overlay *mb_overlay_new(int fd, uint64_t size);
void mb_overlay_free(struct mb_overlay *o);
/* Move len bytes at off between the disk as the guest sees it and iov;
 * 0 or -errno (the image could not be read, no memory). */
int mb_overlay_read(struct mb_overlay *o, const struct iovec *iov, unsigned n,
		    uint64_t off, uint64_t len);
int mb_overlay_write(struct mb_overlay *o, const struct iovec *iov, unsigned n,
		     uint64_t off, uint64_t len);
/* Discard: the range reads as zeros afterwards (whole blocks). */
int mb_overlay_zero(struct mb_overlay *o, uint64_t off, uint64_t len);
/* Blocks written (held in memory). */
size_t mb_overlay_blocks(struct mb_overlay *o);

/* The current state (*out NULL when nothing was written); 0 or -ENOMEM. */
int mb_overlay_keep(struct mb_overlay *o, struct mb_overlay_kept **out);
/* Make the overlay what k was (NULL: nothing written). 0 or -ENOMEM
 * (the overlay is unchanged then). */
int mb_overlay_put_back(struct mb_overlay *o, const struct mb_overlay_kept *k);
void mb_overlay_drop(struct mb_overlay_kept *k);
size_t mb_overlay_kept_blocks(const struct mb_overlay_kept *k);

/* A kept state as bytes, for snapshot files (docs/snapshot.md, "KEPT"):
 * u32 block size (4096), u32 0, u64 blocks, then per block u64 index and
 * 4096 bytes, indices strictly ascending. size: the bytes write gives;
 * write passes them to put (0 or what put returned); read makes a kept
 * state of p (validated whole: -EINVAL with mb_errmsg() saying what is
 * wrong; *out NULL for no blocks). put_back refuses (-EINVAL) blocks past
 * the end of the disk. */
uint64_t mb_overlay_kept_size(const struct mb_overlay_kept *k);
int mb_overlay_kept_write(const struct mb_overlay_kept *k,
			  int (*put)(void *ctx, const void *p, size_t n), void *ctx);
int mb_overlay_kept_read(const void *p, size_t len, struct mb_overlay_kept **out);

#endif
