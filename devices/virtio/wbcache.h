/*
 * A volatile write-back cache in front of a disk image (virtio_blk
 * cache = "writeback"), the model of a drive's write cache for crash tests:
 * writes land in memory, per 512-byte sector; reads see them; FLUSH writes
 * every cached sector to the image and fdatasyncs it. Nothing reaches the
 * image between flushes, so a power cut (mb_wbcache_power_cut) decides,
 * from a seed, what of the last epoch survives:
 *   DROP    nothing that was not flushed;
 *   SUBSET  a random subset of the epoch's writes (each whole);
 *   TORN    per 4 KiB page of the epoch, a random subset of its sectors.
 */
#ifndef MB_VIRTIO_WBCACHE_H
#define MB_VIRTIO_WBCACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct mb_wbcache;

#include "moonbox.h" /* enum mb_power_cut, struct mb_power_cut_result */

/* Over fd (not owned; written by flushes and cuts), size bytes. */
struct mb_wbcache *mb_wbcache_new(int fd, uint64_t size);
void mb_wbcache_free(struct mb_wbcache *c);
/* Whole sectors at off (bytes); 0 or -errno. */
int mb_wbcache_read(struct mb_wbcache *c, const struct iovec *iov, unsigned n,
		    uint64_t off, uint64_t len);
int mb_wbcache_write(struct mb_wbcache *c, const struct iovec *iov, unsigned n,
		     uint64_t off, uint64_t len);
/* A discard: the sectors read as zeros, at once durable (the image's hole
 * is punched by the caller); the cache forgets them. */
void mb_wbcache_forget(struct mb_wbcache *c, uint64_t off, uint64_t len);
/* Write back every cached sector, then fdatasync; 0 or -errno. */
int mb_wbcache_flush(struct mb_wbcache *c);
/* The power goes: apply the model to the unflushed epoch, fdatasync the
 * image, empty the cache. */
int mb_wbcache_power_cut(struct mb_wbcache *c, enum mb_power_cut model,
			 uint64_t seed, struct mb_power_cut_result *r);
uint64_t mb_wbcache_sectors(struct mb_wbcache *c); /* cached now */

#endif
