/* Cost of fault injection when it is off: the virtio-blk request path
 * (mb_virtio_blk_request, one 512-byte read from a page-cached image)
 *   none:   no plan at all;
 *   other:  a plan with a rule on another device (this disk's site pointer
 *           stays NULL: the one branch every request pays);
 *   miss:   a rule on this disk that never matches: it takes writes, the
 *           requests are reads;
 *   range:  a rule on this disk for reads of sectors the requests never
 *           touch (same op: only the sector range tells them apart).
 * Both misses are answered from the site's summary, without the plan's
 * lock (core/fault.c, may_match). Interleaved rounds, best of each, in
 * the thread's CPU time.
 * Prints one line:
 *   fault none_ns=A other_ns=B miss_ns=C range_ns=D */
#include "moonbox.h"
#include "bench.h"

#include <unistd.h>

#define ITERS 50000
#define ROUNDS 21

static double run(struct mb_virtio_blk *b, struct mb_vq_chain *c)
{
	/* The thread's CPU time: on a shared host wall time also counts the
	 * time other processes ran (as bench/net_fault.c). */
	uint64_t t = bench_ns(CLOCK_THREAD_CPUTIME_ID);
	for (unsigned i = 0; i < ITERS; i++)
		mb_virtio_blk_request(b, c);
	return (double)(bench_ns(CLOCK_THREAD_CPUTIME_ID) - t) / ITERS;
}

int main(void)
{
	char path[] = "/tmp/mb-bench-fault-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, 1 << 20))
		return 1;
	close(fd);
	struct mb_virtio_blk_config bc = { path, false, "", 0 };
	struct mb_virtio_blk *none = mb_virtio_blk_new(&bc), *other = mb_virtio_blk_new(&bc),
			     *miss = mb_virtio_blk_new(&bc), *range = mb_virtio_blk_new(&bc);
	unlink(path);
	if (!none || !other || !miss || !range)
		return 1;
	struct mb_fault_plan_config pc = { 1, NULL, NULL };
	struct mb_fault_plan *p;
	if (mb_fault_plan_new(NULL, &pc, &p))
		return 1;
	struct mb_fault_rule r = { .action = MB_FAULT_BLK_ERROR, .ops = MB_FAULT_OP_WRITE,
				   .first = 100, .last = 101, .status = VIRTIO_BLK_S_IOERR };
	strcpy(r.dev, "blk1");
	mb_fault_plan_add(p, &r); /* on a disk this bench never touches */
	strcpy(r.dev, "blk0");
	mb_fault_plan_add(p, &r); /* writes to 100-101: reads never match */
	mb_virtio_blk_set_fault(miss, mb_fault_plan_site(p, "blk0"));
	r.ops = MB_FAULT_OP_READ;
	strcpy(r.dev, "blk2");
	mb_fault_plan_add(p, &r); /* reads of 100-101: the requests read sector 0 */
	mb_virtio_blk_set_fault(range, mb_fault_plan_site(p, "blk2"));

	static uint8_t hdr[16], data[512], status;
	struct mb_vq_chain c = { .nout = 1, .nin = 2, .out_len = 16, .in_len = 513 };
	c.iov[0] = (struct iovec){ hdr, 16 };
	c.iov[1] = (struct iovec){ data, 512 };
	c.iov[2] = (struct iovec){ &status, 1 };
	/* Best of the rounds per disk; each round starts at the next disk, so
	 * no disk always runs first (or last) in a round: the position in
	 * the round moved the ratios by ~1 % here. */
	struct mb_virtio_blk *disk[4] = { none, other, miss, range };
	double best[4] = { 1e30, 1e30, 1e30, 1e30 };
	for (int i = 0; i < ROUNDS; i++)
		for (int k = 0; k < 4; k++) {
			int d = (i + k) % 4;
			double t = run(disk[d], &c);
			best[d] = t < best[d] ? t : best[d];
		}
	printf("fault none_ns=%.1f other_ns=%.1f miss_ns=%.1f range_ns=%.1f\n", best[0],
	       best[1], best[2], best[3]);
	mb_virtio_blk_free(none);
	mb_virtio_blk_free(other);
	mb_virtio_blk_free(miss);
	mb_virtio_blk_free(range);
	mb_fault_plan_free(p);
	return 0;
}
