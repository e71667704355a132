/*
 * moonbox-device's guest memory given after the CREATE's (cli/devserve.h,
 * docs/devproc.md "DMA"): a window granted at run time (DMA_MAP, its memfd
 * passed with the message), and the dirty map in which the device marks
 * the pages it writes through its own mappings, which neither KVM's dirty
 * log nor the VMM's own marks can see.
 *
 * A hostile VMM may send anything: the memfd is checked (a regular memfd
 * sealed against shrink and grow, the window inside it), the window must
 * be whole pages and not overlap another, and a mark never lands outside
 * the dirty map.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/devserve.h"

uint64_t *ds_dirty;
uint64_t ds_dirty_bits;

#define PAGE 4096u
#define MAX_WINDOW (1ull << 40) /* more than any guest's RAM */

int ds_dirty_take(int fd, uint64_t size, char *msg, size_t len)
{
	if (size == 0 || size % PAGE || size > MAX_WINDOW / (8 * PAGE) ||
	    mb_memfd_check(fd, size)) {
		snprintf(msg, len, "dirty map: %s", *mb_errmsg() ? mb_errmsg() : "bad size");
		return -1;
	}
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		snprintf(msg, len, "dirty map: mmap: %s", strerror(errno));
		return -1;
	}
	close(fd);
	ds_dirty = map;
	ds_dirty_bits = size * 8;
	return 0;
}

bool ds_dirty_fits(uint64_t bit, uint64_t size)
{
	uint64_t pages = (size + PAGE - 1) / PAGE;
	return bit <= ds_dirty_bits && pages <= ds_dirty_bits - bit;
}

void ds_dirty_sink(size_t i, uint64_t bit)
{
	if (ds_dirty && bit != MB_DP_NO_DIRTY)
		mb_mem_dirty_sink(ds_machine->mem, i, ds_dirty, bit);
}

/* The region at base of size bytes, or -1. */
static long region_at(uint64_t base, uint64_t size)
{
	struct mb_mem *mem = ds_machine->mem;
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		if (r->base == base && r->size == size)
			return (long)i;
	}
	return -1;
}

int ds_dma_map(const uint8_t *pl, size_t len, int fd, const char **why)
{
	struct mb_dp_dma_map q;
	struct stat st;
	void *host = MAP_FAILED;
	*why = NULL;
	if (len != sizeof q) {
		*why = "DMA_MAP: wrong size";
		goto out;
	}
	memcpy(&q, pl, sizeof q);
	if (q.argsz != sizeof q)
		*why = "DMA_MAP: argsz is not 40 (vfio-user's 32 and moonbox's dirty bit)";
	else if (fd < 0)
		*why = "DMA_MAP: no memfd with it (a window is mapped, or refused)";
	else if (!(q.flags & MB_DP_DMA_MAP_READ) ||
		 (q.flags & ~(MB_DP_DMA_MAP_READ | MB_DP_DMA_MAP_WRITE)))
		*why = "DMA_MAP: flags other than readable (+ writeable)";
	else if (!q.size || q.size > MAX_WINDOW || (q.addr | q.size | q.offset) % PAGE ||
		 q.addr + q.size < q.addr)
		*why = "DMA_MAP: the window is not whole pages";
	else if (fstat(fd, &st) || mb_memfd_check(fd, (uint64_t)st.st_size))
		*why = "DMA_MAP: not a memfd sealed against shrink and grow";
	else if (q.offset > (uint64_t)st.st_size || q.size > (uint64_t)st.st_size - q.offset)
		*why = "DMA_MAP: the window is outside its memfd";
	else if (ds_dirty && q.dirty_bit != MB_DP_NO_DIRTY &&
		 !ds_dirty_fits(q.dirty_bit, q.size))
		*why = "DMA_MAP: dirty bit outside the dirty map";
	if (*why)
		goto out;
	bool rw = q.flags & MB_DP_DMA_MAP_WRITE;
	unsigned fl = rw ? 0 : MB_MEM_READONLY;
	int prot = PROT_READ | (rw ? PROT_WRITE : 0);
	struct mb_mem *mem = ds_machine->mem;
	long i = region_at(q.addr, q.size);
	if (i >= 0) {
		const struct mb_mem_region *r = mb_mem_region(mem, (size_t)i);
		unsigned f = __atomic_load_n(&r->flags, __ATOMIC_ACQUIRE);
		if (!(f & MB_MEM_REVOKED))
			goto out; /* mapped already (a restart's and the script's) */
		if ((f & MB_MEM_READONLY) != fl) {
			*why = "DMA_MAP: the window comes back with other access";
			goto out;
		}
		/* A revoked window again: its memory over the guard, at the
		 * same address (pointers kept from before see it again, as
		 * the map does once the flag goes). */
		if (mmap(r->host, r->size, prot, MAP_FIXED | MAP_SHARED, fd,
			 (off_t)q.offset) == MAP_FAILED) {
			*why = "DMA_MAP: cannot map";
			goto out;
		}
		ds_dirty_sink((size_t)i, q.dirty_bit);
		mb_mem_unrevoke(mem, (size_t)i);
		goto out;
	}
	host = mmap(NULL, q.size, prot, MAP_SHARED, fd, (off_t)q.offset);
	if (host == MAP_FAILED) {
		*why = "DMA_MAP: cannot map";
		goto out;
	}
	char name[32];
	snprintf(name, sizeof name, "grant@%llx", (unsigned long long)q.addr);
	bool mark = ds_dirty && q.dirty_bit != MB_DP_NO_DIRTY;
	if (mb_mem_add_live(mem, q.addr, q.size, fl, host, name, mark ? ds_dirty : NULL,
			    mark ? q.dirty_bit : 0)) {
		munmap(host, q.size);
		*why = "DMA_MAP: the window overlaps one the device has";
	}
out:
	if (fd >= 0)
		close(fd); /* the mapping stays; the memfd goes */
	return *why ? EINVAL : 0;
}

void ds_control_map(const uint8_t *msg, ssize_t n, int fd)
{
	struct mb_dp_hdr q;
	if (n < (ssize_t)sizeof q || n > MB_DP_MAX_MSG) {
		if (fd >= 0)
			close(fd);
		return;
	}
	memcpy(&q, msg, sizeof q);
	if (q.size != (uint32_t)n || q.cmd != MB_DP_DMA_MAP) {
		if (fd >= 0)
			close(fd); /* a descriptor with anything else: not ours */
		if (q.size == (uint32_t)n)
			ds_fail(&q, EINVAL, "a descriptor with a message other than DMA_MAP");
		return;
	}
	const char *why;
	size_t len = (size_t)n - sizeof q;
	if (ds_dma_map(msg + sizeof q, len, fd, &why))
		ds_fail(&q, EINVAL, why);
	else
		ds_reply(&q, 0, msg + sizeof q, len);
}

ssize_t ds_recv_ctl(int sock, void *buf, size_t len, int *fd)
{
	union {
		char b[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			     .msg_controllen = sizeof u.b };
	*fd = -1;
	ssize_t n = recvmsg(sock, &mh, MSG_TRUNC | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return n;
	/* One descriptor is the most a message carries: any others go. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t j = 0; j < k; j++) {
			int f;
			memcpy(&f, CMSG_DATA(c) + j * sizeof(int), sizeof f);
			if (*fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
	return n;
}
