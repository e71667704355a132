/*
 * virtio-blk (virtio spec v1.2, sec. 5.2) over a host file: read, write,
 * flush (fdatasync), get-id, discard (FALLOC_FL_PUNCH_HOLE). Data moves
 * with preadv/pwritev straight between the file and guest buffers; with
 * threads > 0, requests run on that many workers, several in flight, and
 * a flush waits for the requests popped before it.
 */
#ifndef MOONBOX_VIRTIO_BLK_H
#define MOONBOX_VIRTIO_BLK_H

#include "moonbox/virtio_mmio.h"

struct mb_virtio; /* moonbox.h may include this before virtio_mmio.h ends */
struct mb_vq_chain;

/* Request types and status (sec. 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2

/* Feature bits (sec. 5.2.3). */
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13

#define MB_VIRTIO_BLK_CONFIG_SIZE 60

struct mb_virtio_blk;

struct mb_virtio_blk_config {
	const char *image;
	bool readonly;
	const char *serial; /* up to 20 bytes; NULL: "" */
	unsigned threads;   /* 0: run requests in notify() */
};

struct mb_virtio_blk_stats {
	uint64_t reads, writes, flushes, discards, get_ids;
	uint64_t syncs; /* fdatasync calls made for FLUSH requests */
	uint64_t bytes_read, bytes_written;
	uint64_t ioerr, unsupp, max_inflight;
};

/* Opens the image (errors name it). */
struct mb_virtio_blk *mb_virtio_blk_new(const struct mb_virtio_blk_config *cfg);
void mb_virtio_blk_free(struct mb_virtio_blk *b);
uint64_t mb_virtio_blk_features(struct mb_virtio_blk *b);
uint64_t mb_virtio_blk_capacity(struct mb_virtio_blk *b); /* 512-byte sectors */
void mb_virtio_blk_stats(struct mb_virtio_blk *b, struct mb_virtio_blk_stats *st);
extern const struct mb_virtio_dev_ops mb_virtio_blk_ops;

/* Execute one request now: returns the bytes written into the chain's
 * writable buffers (the used length), status byte included. */
uint32_t mb_virtio_blk_request(struct mb_virtio_blk *b,
			       const struct mb_vq_chain *c);

#endif
