/* 4 KiB read requests per second at queue depth 1 and 16, no guest: a
 * fake driver (registers through the machine's MMIO bus, one split queue
 * in guest RAM) against moonbox's in-process virtio-blk and against
 * qemu-storage-daemon through the vhost-user front-end in shared and in
 * copy mode (dma = "copy": bounce buffers), on images of the same size,
 * rounds interleaved. The driver keeps QD requests in the ring and waits
 * for completions by watching the used index (sched_yield between looks),
 * the same way for every device. A fourth device, moonbox's own
 * virtio-blk served by `moonbox-device --vhost-user blk` (when built),
 * runs the same rounds. Prints one line per depth:
 *   qd=N inproc_rps=... vhost_rps=... ratio=... copy_rps=...
 *   copy_ratio=... mbdev_rps=... mbdev_ratio=...
 * (ratios against the in-process model)
 *   build/bench/vhost_user [SECONDS_PER_ROUND] (default 1, 3 rounds)  */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moonbox.h"
#include "bench/bench.h"

#define QSD "/usr/bin/qemu-storage-daemon"
#define NUM 64 /* descriptors: 3 per request, up to 16 in flight */
#define QDMAX 16
#define RING 0x100000ull
#define BUF 0x200000ull

extern char **environ;

struct drv {
	struct mb_machine *m;
	uint64_t base;
	uint16_t avail, used;
};

static void wr(struct drv *d, uint64_t off, uint32_t v)
{
	uint8_t b[4];
	mb_io_put(b, 4, v);
	mb_bus_write(mb_machine_mmio(d->m), d->base + off, b, 4);
}

static uint32_t rd(struct drv *d, uint64_t off)
{
	uint8_t b[4];
	mb_bus_read(mb_machine_mmio(d->m), d->base + off, b, 4);
	return (uint32_t)mb_io_get(b, 4);
}

/* Sec. 3.1.1 with VERSION_1 only; one queue at RING + 64K * slot. */
static int setup(struct drv *d, struct mb_device *dev, unsigned slot)
{
	struct mb_mem *mem = mb_machine_mem(d->m);
	d->base = mb_device_range(dev, 0)->base;
	uint64_t r = RING + 0x10000 * slot;
	static const uint8_t zero[0x3000];
	mb_mem_write(mem, r, zero, sizeof zero);
	wr(d, 0x70, 0), wr(d, 0x70, 1), wr(d, 0x70, 3);
	wr(d, 0x24, 1), wr(d, 0x20, 1), wr(d, 0x24, 0), wr(d, 0x20, 0);
	wr(d, 0x70, 11);
	wr(d, 0x30, 0), wr(d, 0x38, NUM);
	wr(d, 0x80, (uint32_t)r), wr(d, 0x90, (uint32_t)(r + 0x1000));
	wr(d, 0xa0, (uint32_t)(r + 0x2000)), wr(d, 0x44, 1);
	wr(d, 0x70, 15);
	return rd(d, 0x70) == 15 ? 0 : -1;
}

/* Request k of a slot: its 3 descriptors at 3k, header at buf + 0x2000k,
 * status 0x20 after it, data at +0x1000. Sector: any in the first 4 MiB. */
static void post(struct drv *d, unsigned slot, unsigned k, uint64_t sector)
{
	struct mb_mem *mem = mb_machine_mem(d->m);
	uint64_t r = RING + 0x10000 * slot, b = BUF + 0x40000 * slot + 0x2000 * k;
	struct { uint32_t type, rsv; uint64_t sector; } hdr = { 0, 0, sector };
	uint16_t h = (uint16_t)(3 * k);
	struct { uint64_t addr; uint32_t len; uint16_t flags, next; } desc[3] = {
		{ b, 16, 1, (uint16_t)(h + 1) }, { b + 0x1000, 4096, 3, (uint16_t)(h + 2) },
		{ b + 0x20, 1, 2, 0 } };
	uint8_t st = 0xff;
	mb_mem_write(mem, b, &hdr, sizeof hdr);
	mb_mem_write(mem, b + 0x20, &st, 1);
	mb_mem_write(mem, r + 16 * h, desc, sizeof desc);
	mb_mem_write(mem, r + 0x1000 + 4 + 2 * (d->avail % NUM), &h, 2);
	d->avail++;
}

/* Reads at depth qd for secs; requests/s, -1 on a failed or lost one. */
static double rate(struct drv *d, unsigned slot, double secs, unsigned qd)
{
	struct mb_mem *mem = mb_machine_mem(d->m);
	uint64_t r = RING + 0x10000 * slot, n = 0, t0 = bench_ns(CLOCK_MONOTONIC),
		 end = t0 + (uint64_t)(secs * 1e9), last = t0;
	volatile uint16_t *used = mb_mem_ptr(mem, r + 0x2000 + 2, 2, false);
	uint64_t seq = 0;
	unsigned out = 0;
	for (unsigned k = 0; k < qd; k++, out++)
		post(d, slot, k, (seq++ * 8) % 8192);
	for (;;) {
		__atomic_thread_fence(__ATOMIC_RELEASE);
		mb_mem_write(mem, r + 0x1000 + 2, &d->avail, 2);
		wr(d, 0x50, 0);
		while (*used == d->used) {
			if (bench_ns(CLOCK_MONOTONIC) - last > 5000000000ull)
				return -1;
			sched_yield();
		}
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		bool more = bench_ns(CLOCK_MONOTONIC) < end;
		for (uint16_t u = *used; d->used != u; d->used++) {
			uint32_t id;
			uint8_t st;
			mb_mem_read(mem, r + 0x2000 + 4 + 8 * (d->used % NUM), &id, 4);
			if (id % 3 || id / 3 >= qd)
				return -1;
			mb_mem_read(mem, BUF + 0x40000 * slot + 0x2000 * (id / 3) + 0x20, &st, 1);
			if (st != 0)
				return -1;
			n++, out--;
			if (more)
				post(d, slot, id / 3, (seq++ * 8) % 8192), out++;
		}
		last = bench_ns(CLOCK_MONOTONIC);
		if (!out)
			break;
	}
	return n / ((bench_ns(CLOCK_MONOTONIC) - t0) / 1e9);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 1;
	if (access(QSD, X_OK)) {
		printf("vhost_user: skipped (no %s)\n", QSD);
		return 0;
	}
	char dir[] = "/tmp/mb-bench-vhost-XXXXXX", img[64], img2[64], sock[64], sockc[64],
	     arg1[128], arg3[160], arg1c[128], arg3c[160];
	if (!mkdtemp(dir))
		return 1;
	snprintf(img, sizeof img, "%s/disk.img", dir);
	snprintf(img2, sizeof img2, "%s/copy.img", dir);
	snprintf(sock, sizeof sock, "%s/blk.sock", dir);
	snprintf(sockc, sizeof sockc, "%s/copy.sock", dir);
	for (int i = 0; i < 2; i++) {
		FILE *f = fopen(i ? img2 : img, "w");
		if (!f || ftruncate(fileno(f), 4 << 20))
			return 1;
		fclose(f);
	}
	/* one qemu-storage-daemon per front-end mode, each its own image
	 * (an export serves one front-end at a time) */
	snprintf(arg1, sizeof arg1, "driver=file,node-name=f0,filename=%s", img);
	snprintf(arg3, sizeof arg3, "type=vhost-user-blk,id=e0,node-name=d0,"
		 "addr.type=unix,addr.path=%s,writable=on", sock);
	snprintf(arg1c, sizeof arg1c, "driver=file,node-name=f0,filename=%s", img2);
	snprintf(arg3c, sizeof arg3c, "type=vhost-user-blk,id=e0,node-name=d0,"
		 "addr.type=unix,addr.path=%s,writable=on", sockc);
	char *qargv[] = { QSD, "--blockdev", arg1, "--blockdev",
			  "driver=raw,node-name=d0,file=f0", "--export", arg3, NULL };
	char *qargvc[] = { QSD, "--blockdev", arg1c, "--blockdev",
			   "driver=raw,node-name=d0,file=f0", "--export", arg3c, NULL };
	pid_t pid, cpid = -1, mpid = -1;
	if (posix_spawn(&pid, QSD, NULL, NULL, qargv, environ))
		return 1;
	if (posix_spawn(&cpid, QSD, NULL, NULL, qargvc, environ))
		cpid = -1;
	char mbd[4096], sock2[64], sarg[96], iarg[96];
	snprintf(sock2, sizeof sock2, "%s/mbd.sock", dir);
	snprintf(sarg, sizeof sarg, "--socket-path=%s", sock2);
	snprintf(iarg, sizeof iarg, "--blk-file=%s", img);
	char *margv[] = { mbd, "--vhost-user", "blk", sarg, iarg, NULL };
	if (mb_libexec_path("moonbox-device", mbd, sizeof mbd) ||
	    posix_spawn(&mpid, mbd, NULL, NULL, margv, environ))
		mpid = -1;
	struct stat sb;
	for (int i = 0; i < 500 && (stat(sock, &sb) || (cpid > 0 && stat(sockc, &sb)) ||
				    (mpid > 0 && stat(sock2, &sb))); i++)
		usleep(10000);

	struct mb_machine_config mc = { .cpus = 1 };
	struct mb_machine *m = NULL;
	struct mb_device *blk, *vu, *md = NULL, *cp = NULL;
	struct mb_virtio_blk_attach_config bc = { .image = img };
	struct mb_vhost_user_config vc = { .device_id = VIRTIO_ID_BLOCK,
					   .socket = sock, .fd = -1 };
	int rc = 1;
	if (mb_machine_create(&mc, &m) || mb_machine_add_memory(m, 0, 16 << 20, NULL, false, "ram") ||
	    mb_virtio_blk_attach(m, &bc, &blk) || mb_vhost_user_attach(m, &vc, &vu)) {
		fprintf(stderr, "vhost_user bench: %s\n", mb_errmsg());
		goto out;
	}
	struct mb_vhost_user_config cc = { .device_id = VIRTIO_ID_BLOCK,
					   .socket = sockc, .fd = -1, .copy = true };
	if (cpid > 0 && mb_vhost_user_attach(m, &cc, &cp)) {
		fprintf(stderr, "vhost_user bench: copy mode: %s\n", mb_errmsg());
		cp = NULL;
	}
	struct mb_vhost_user_config mdc = { .device_id = VIRTIO_ID_BLOCK,
					    .socket = sock2, .fd = -1 };
	if (mpid > 0 && mb_vhost_user_attach(m, &mdc, &md)) {
		fprintf(stderr, "vhost_user bench: moonbox-device: %s\n", mb_errmsg());
		md = NULL;
	}
	struct drv a = { m, 0, 0, 0 }, b = { m, 0, 0, 0 }, c = { m, 0, 0, 0 },
		   e = { m, 0, 0, 0 };
	if (setup(&a, blk, 0) || setup(&b, vu, 1) || (md && setup(&c, md, 2)) ||
	    (cp && setup(&e, cp, 3))) {
		fprintf(stderr, "vhost_user bench: device setup failed\n");
		goto out;
	}
	static const unsigned depths[] = { 1, QDMAX };
	for (unsigned q = 0; q < 2; q++) {
		unsigned qd = depths[q];
		double best_a = 0, best_b = 0, best_c = 0, best_e = 0;
		for (int r = 0; r < 3; r++) { /* interleaved: host noise hits all */
			double x = rate(&a, 0, secs, qd), y = rate(&b, 1, secs, qd);
			double z = md ? rate(&c, 2, secs, qd) : 0;
			double w = cp ? rate(&e, 3, secs, qd) : 0;
			if (x < 0 || y < 0 || z < 0 || w < 0) {
				fprintf(stderr, "vhost_user bench: a request failed "
					"(qd %u)\n", qd);
				goto out;
			}
			best_a = x > best_a ? x : best_a;
			best_b = y > best_b ? y : best_b;
			best_c = z > best_c ? z : best_c;
			best_e = w > best_e ? w : best_e;
		}
		printf("qd=%u inproc_rps=%.0f vhost_rps=%.0f ratio=%.3f", qd, best_a,
		       best_b, best_b / best_a);
		if (cp)
			printf(" copy_rps=%.0f copy_ratio=%.3f", best_e, best_e / best_a);
		if (md)
			printf(" mbdev_rps=%.0f mbdev_ratio=%.3f", best_c, best_c / best_a);
		printf("\n");
	}
	rc = 0;
out:
	if (m)
		mb_machine_destroy(m);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	if (cpid > 0) {
		kill(cpid, SIGKILL);
		waitpid(cpid, NULL, 0);
	}
	unlink(sockc);
	unlink(img2);
	if (mpid > 0) {
		kill(mpid, SIGKILL);
		waitpid(mpid, NULL, 0);
	}
	unlink(sock2);
	unlink(img);
	unlink(sock);
	rmdir(dir);
	return rc;
}
