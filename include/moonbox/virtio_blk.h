/*
 * virtio-blk (virtio spec v1.2, sec. 5.2) over a host file: read, write,
 * flush (fdatasync), get-id, discard (FALLOC_FL_PUNCH_HOLE). Data moves
 * with preadv/pwritev straight between the file and guest buffers; with
 * threads > 0, requests run on that many workers, several in flight, and
 * a flush waits for the requests popped before it.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_BLK_H
#define MOONBOX_VIRTIO_BLK_H

#include "moonbox/virtio_mmio.h"


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
struct mb_fault_site;

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

/* The state: the transport and its queue, then the disk. Counters are
 * read-only in Lua and restored by load. */
#define MB_VIRTIO_BLK_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, 1) \
	X(S, ro_u64, capacity) X(S, ro_bool, readonly) \
	X(S, bool, sync_failed) /* every later FLUSH fails (blk.c) */ \
	X(S, ro_u64, reads) X(S, ro_u64, writes) X(S, ro_u64, flushes) \
	X(S, ro_u64, syncs) X(S, ro_u64, discards) X(S, ro_u64, get_ids) \
	X(S, ro_u64, bytes_read) X(S, ro_u64, bytes_written) \
	X(S, ro_u64, ioerr) X(S, ro_u64, unsupp) X(S, ro_u64, max_inflight)
MB_STATE_STRUCT(mb_virtio_blk_state, MB_VIRTIO_BLK_STATE);

/* Wait until the workers finished every popped request (the guest
 * stopped: nothing new is popped meanwhile). */
void mb_virtio_blk_quiesce(struct mb_virtio_blk *b);
/* Save (after quiesce) and load (guest stopped, checked first). */
void mb_virtio_blk_save(struct mb_virtio_blk *b, struct mb_virtio *t,
			struct mb_virtio_blk_state *st);
int mb_virtio_blk_load(struct mb_virtio_blk *b, struct mb_virtio *t,
		       const struct mb_virtio_blk_state *st);

struct mb_virtio_blk_attach_config {
	const char *name;   /* NULL: "blk0", "blk1", ... */
	const char *image;
	bool readonly;
	const char *serial; /* up to 20 bytes; NULL: "" */
	unsigned threads;   /* requests in flight at once; 0: 2 */
	bool overlay;       /* copy-on-write in memory: mb_virtio_blk_use_overlay */
	bool writeback;     /* a volatile write-back cache: mb_virtio_blk_use_wbcache */
	uint64_t mmio_base, mmio_size; /* 0: a free 4K window */
	int irq;            /* 0: a free line */
	int image_fd;       /* > 0: the image already open (duplicated; image
			     * only names it): a device process's disk */
};
int mb_virtio_blk_attach(struct mb_machine *m,
			 const struct mb_virtio_blk_attach_config *cfg,
			 struct mb_device **out);

/* Opens the image (errors name it). */
struct mb_virtio_blk *mb_virtio_blk_new(const struct mb_virtio_blk_config *cfg);
/* Before the first request: writes go to a copy-on-write overlay in memory
 * (devices/virtio/overlay.h) kept and put back by in-memory snapshots; the
 * image is reopened read-only and never written. 0 or -errno. */
int mb_virtio_blk_use_overlay(struct mb_virtio_blk *b, const char *image);
void mb_virtio_blk_free(struct mb_virtio_blk *b);
/* Before the first request: a volatile write-back cache in front of the
 * image (devices/virtio/wbcache.h): writes stay in memory until a FLUSH.
 * mb_virtio_blk_power_cut: the power goes; the model decides what of the
 * unflushed writes reaches the image (machine paused). 0 or -errno. */
enum mb_power_cut {
	MB_CUT_DROP,   /* nothing unflushed survives */
	MB_CUT_SUBSET, /* a seeded subset of the epoch's writes, each whole */
	MB_CUT_TORN,   /* a seeded subset of the epoch's sectors (torn pages) */
};
struct mb_power_cut_result {
	uint64_t cached;  /* sectors the cache held */
	uint64_t written; /* of them, sectors the cut let reach the image */
	uint64_t writes;  /* write requests of the epoch */
};
int mb_virtio_blk_use_wbcache(struct mb_virtio_blk *b);
int mb_virtio_blk_power_cut(struct mb_virtio_blk *b, enum mb_power_cut model,
			    uint64_t seed, struct mb_power_cut_result *r);
uint64_t mb_virtio_blk_features(struct mb_virtio_blk *b);
uint64_t mb_virtio_blk_capacity(struct mb_virtio_blk *b); /* 512-byte sectors */
/* Blocks of 4 KiB written to the overlay (0 without one). */
size_t mb_virtio_blk_overlay_blocks(struct mb_virtio_blk *b);
void mb_virtio_blk_stats(struct mb_virtio_blk *b, struct mb_virtio_blk_stats *st);
extern const struct mb_virtio_dev_ops mb_virtio_blk_ops;

/* Fault injection (moonbox/fault.h): requests are offered to site as the
 * device takes them from the ring. Takes a reference; -EBUSY when another
 * plan's site is already there. */
int mb_virtio_blk_set_fault(struct mb_virtio_blk *b, struct mb_fault_site *s);
/* m:on("blk"): fn(ctx, b, event, ask) for every request taken from the
 * ring, after the fault rules decided (on the thread that serves the
 * doorbell, the transport's lock held: record it and return). fn returns
 * true when it took the ask (an m:on function is asked about the
 * request): the request stays in flight, parked, until ask->answer.
 * cancel(ctx, b) at a reset and at free: every ask still pending is
 * answered in it. One observer per disk, set once (-EBUSY). */
struct mb_fault_blk_event;
struct mb_fault_ask;
typedef bool mb_blk_observer(void *ctx, struct mb_virtio_blk *b,
			     const struct mb_fault_blk_event *e, struct mb_fault_ask *ask);
typedef void mb_fault_ask_cancel(void *ctx, const void *dev);
int mb_virtio_blk_set_observer(struct mb_virtio_blk *b, mb_blk_observer *fn,
			       mb_fault_ask_cancel *cancel, void *ctx);
/* F.virtio.config_change { capacity }: the disk shows sectors (at most the
 * image's), the config generation moves on, a config interrupt. */
int mb_virtio_blk_check_resize(struct mb_virtio_blk *b, uint64_t sectors);
void mb_virtio_blk_resize(struct mb_virtio_blk *b, struct mb_virtio *t,
			  uint64_t sectors);

/* Execute one request now: returns the bytes written into the chain's
 * writable buffers (the used length), status byte included. */
uint32_t mb_virtio_blk_request(struct mb_virtio_blk *b,
			       const struct mb_vq_chain *c);

#endif
