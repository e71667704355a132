/*
 * The vhost-user back-end side (QEMU docs/interop/vhost-user.rst,
 * "Front-end message types", "Ring states", "Memory access", "Inflight
 * I/O tracking"): cli/vhostserve.h. One connection at a time, one thread:
 * messages and kicks are served in turn from one poll loop, requests
 * complete before the next is taken (so a crash leaves at most the
 * request being served in flight, and the inflight region names it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cli/vhostserve.h"

enum {
	GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4,
	SET_MEM_TABLE = 5, SET_VRING_NUM = 8, SET_VRING_ADDR = 9,
	SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12,
	SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15,
	SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
	GET_CONFIG = 24, SET_CONFIG = 25, GET_INFLIGHT_FD = 31,
	SET_INFLIGHT_FD = 32, RESET_DEVICE = 34, GET_MAX_MEM_SLOTS = 36,
	ADD_MEM_REG = 37, REM_MEM_REG = 38, SET_STATUS = 39, GET_STATUS = 40,
};

#define HDR_VERSION 0x1u
#define HDR_VERSION_MASK 0x3u
#define HDR_REPLY 0x4u
#define HDR_NEED_REPLY 0x8u
#define F_PROTOCOL_FEATURES 30
enum {
	PF_MQ = 0, PF_REPLY_ACK = 3, PF_CONFIG = 9, PF_INFLIGHT_SHMFD = 12,
	PF_RESET_DEVICE = 13, PF_CONFIGURE_MEM_SLOTS = 15, PF_STATUS = 16,
};
const uint64_t vs_protocol_features =
	(1ull << PF_MQ) | (1ull << PF_REPLY_ACK) | (1ull << PF_CONFIG) |
	(1ull << PF_INFLIGHT_SHMFD) | (1ull << PF_RESET_DEVICE) |
	(1ull << PF_CONFIGURE_MEM_SLOTS) | (1ull << PF_STATUS);

#define VRING_IDX_MASK 0xffu  /* SET_VRING_KICK/CALL/ERR: bits 0-7 */
#define VRING_NOFD 0x100u     /* bit 8: no file descriptor */
#define MEM_TABLE_REGIONS 8   /* VHOST_MEMORY_BASELINE_NREGIONS */
#define MAX_CONFIG 256
#define MAX_REGION (1ull << 40) /* a region larger is refused */
#define MAX_INFLIGHT (16u << 20)
#define IO_TIMEOUT_S 5

struct mem_region {
	uint64_t gpa, size, uaddr, offset;
};
struct inflight_msg {
	uint64_t mmap_size, mmap_offset;
	uint16_t num_queues, queue_size;
	uint32_t padding;
};

/* Split inflight layout ("Inflight I/O tracking"): per queue a 16-byte
 * header (u64 features, u16 version, desc_num, last_batch_head, used_idx)
 * then desc_num DescStateSplit of 16 bytes (u8 inflight, 5 padding, u16
 * next, u64 counter); each queue's part padded to 64 bytes. */
#define INF_HDR 16
#define INF_DESC 16
static uint64_t inflight_stride(uint16_t qsize)
{
	return (INF_HDR + (uint64_t)INF_DESC * qsize + 63) & ~63ull;
}

/* Guest features the transport part honours: VERSION_1, INDIRECT_DESC,
 * EVENT_IDX (split rings only: never PACKED, ACCESS_PLATFORM). */
static uint64_t offered(const struct vs *s)
{
	return (s->m->features & 0xffffffull) | 1ull << VIRTIO_F_VERSION_1 |
	       1ull << VIRTIO_F_RING_INDIRECT_DESC | 1ull << VIRTIO_F_RING_EVENT_IDX |
	       1ull << F_PROTOCOL_FEATURES;
}

/* What this device offers: CONFIG only with a config space (QEMU warns
 * of a back-end offering CONFIG to a front-end that has none, rng). */
static uint64_t protocol_offered(const struct vs *s)
{
	return vs_protocol_features &
	       ~(s->m->config_size ? 0 : 1ull << PF_CONFIG);
}

static int drop(struct vs *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int drop(struct vs *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof s->why, fmt, ap);
	va_end(ap);
	return -1;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]), fds[i] = -1;
}

static void set_fd(int *slot, int fd)
{
	if (*slot >= 0)
		close(*slot);
	*slot = fd;
}

/* ---- replies ------------------------------------------------------------ */

static int reply(struct vs *s, uint32_t request, const void *p, uint32_t size,
		 int fd)
{
	struct {
		uint32_t request, flags, size;
	} h = { request, HDR_VERSION | HDR_REPLY, size };
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)p, size } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	if (fd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	size_t total = sizeof h + size;
	ssize_t n;
	do
		n = sendmsg(s->sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 || (size_t)n != total) /* a stream socket: short only on error */
		return drop(s, "reply to request %u: %s", request,
			    n < 0 ? strerror(errno) : "short write");
	return 0;
}

static int reply_u64(struct vs *s, uint32_t request, uint64_t v)
{
	return reply(s, request, &v, sizeof v, -1);
}

/* ---- memory ("Memory access") ------------------------------------------- */

static void region_unmap(struct vs_region *r)
{
	if (r->map)
		munmap(r->map, r->maplen);
	memset(r, 0, sizeof *r);
}

/* Check fd and map the region it backs. The file must be a regular file
 * sealed against shrinking (a truncate later would fault our accesses
 * with SIGBUS) and hold [offset, offset + size). fd is closed. */
static int region_map(struct vs *s, const struct mem_region *m, int fd,
		      struct vs_region *out)
{
	struct stat st;
	int rc = -1;
	if (!m->size || m->size > MAX_REGION || m->offset > UINT64_MAX - m->size ||
	    m->gpa > UINT64_MAX - m->size || m->uaddr > UINT64_MAX - m->size) {
		drop(s, "memory region gpa 0x%" PRIx64 " size 0x%" PRIx64
		     " offset 0x%" PRIx64 ": out of range", m->gpa, m->size, m->offset);
		goto out;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size < m->offset + m->size) {
		drop(s, "memory region of 0x%" PRIx64 " bytes at offset 0x%" PRIx64
		     ": its file is not a regular file that large", m->size, m->offset);
		goto out;
	}
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
		drop(s, "memory region at gpa 0x%" PRIx64 ": its file is not sealed "
		     "against shrinking (F_SEAL_SHRINK)", m->gpa);
		goto out;
	}
	uint64_t start = m->offset & ~4095ull, lead = m->offset - start;
	void *p = mmap(NULL, m->size + lead, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		       (off_t)start);
	if (p == MAP_FAILED) {
		drop(s, "memory region at gpa 0x%" PRIx64 ": mmap: %s", m->gpa,
		     strerror(errno));
		goto out;
	}
	*out = (struct vs_region){ m->gpa, m->size, m->uaddr, p, m->size + lead,
				   (uint8_t *)p + lead };
	rc = 0;
out:
	close(fd);
	return rc;
}

static int ring_start(struct vs *s, unsigned qi);
static void ring_stop(struct vs *s, unsigned qi);

/* The memory map the queues see, rebuilt from reg[] after every change.
 * Running rings are looked up again in it (their indices kept); a ring
 * no longer in memory stops. */
static int mem_rebuild(struct vs *s)
{
	struct mb_mem *mem = mb_mem_new();
	if (!mem)
		return drop(s, "out of memory");
	for (unsigned i = 0; i < s->nreg; i++) {
		const struct vs_region *r = &s->reg[i];
		/* user addresses translate the rings: they may not overlap */
		for (unsigned j = 0; j < i; j++)
			if (r->uaddr < s->reg[j].uaddr + s->reg[j].size &&
			    s->reg[j].uaddr < r->uaddr + r->size) {
				mb_mem_free(mem);
				return drop(s, "memory regions overlap in user addresses "
					    "(0x%" PRIx64 ", 0x%" PRIx64 ")", r->uaddr,
					    s->reg[j].uaddr);
			}
		char name[16];
		snprintf(name, sizeof name, "vu%u", i);
		if (mb_mem_add(mem, r->gpa, r->size, 0, r->host, name)) {
			mb_mem_free(mem);
			return drop(s, "memory region gpa 0x%" PRIx64 "+0x%" PRIx64
				    ": %s", r->gpa, r->size, mb_errmsg());
		}
	}
	struct mb_mem *old = s->mem;
	s->mem = mem;
	for (unsigned qi = 0; qi < s->m->nqueues; qi++) {
		struct vs_ring *r = &s->r[qi];
		r->q.mem = mem;
		if (r->started) {
			uint16_t last = r->q.last_avail, used = r->q.used_idx;
			bool resume = r->resume;
			ring_stop(s, qi);
			if (ring_start(s, qi) == 0)
				r->q.last_avail = last, r->q.used_idx = used,
				r->resume = resume;
		}
	}
	mb_mem_free(old);
	return 0;
}

static void mem_clear(struct vs *s)
{
	for (unsigned i = 0; i < s->nreg; i++)
		region_unmap(&s->reg[i]);
	s->nreg = 0;
}

/* A user address range (a ring) to the guest address the queue code
 * takes, through the table only. */
static bool ua_to_gpa(const struct vs *s, uint64_t ua, uint64_t len, uint64_t *gpa)
{
	for (unsigned i = 0; i < s->nreg; i++) {
		const struct vs_region *r = &s->reg[i];
		if (ua >= r->uaddr && ua - r->uaddr < r->size &&
		    len <= r->size - (ua - r->uaddr)) {
			*gpa = r->gpa + (ua - r->uaddr);
			return true;
		}
	}
	return false;
}

/* ---- inflight tracking ("Inflight I/O tracking", split) ----------------- */

static uint8_t *inflight_q(struct vs *s, unsigned qi)
{
	if (!s->inflight || qi >= s->inflight_nq)
		return NULL;
	return s->inflight + qi * s->inflight_stride;
}

static void inflight_free(struct vs *s)
{
	if (s->inflight)
		munmap(s->inflight, s->inflight_size);
	s->inflight = NULL;
	s->inflight_size = s->inflight_stride = 0;
	s->inflight_nq = s->inflight_qsize = 0;
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Taken from the avail ring: mark it before it is served. */
static void inflight_take(struct vs *s, unsigned qi, uint16_t head)
{
	uint8_t *r = inflight_q(s, qi);
	if (!r || head >= s->inflight_qsize)
		return;
	uint8_t *d = r + INF_HDR + INF_DESC * head;
	uint64_t c = s->r[qi].counter++;
	memcpy(d + 8, &c, 8);
	__atomic_store_n(d, 1, __ATOMIC_RELEASE);
}

/* Put in the used ring: the steps of "When supplying used buffers" for
 * a batch of one. Before the push: link it as the last batch; after:
 * clear it and record the used index. */
static void inflight_batch(struct vs *s, unsigned qi, uint16_t head)
{
	uint8_t *r = inflight_q(s, qi);
	if (!r || head >= s->inflight_qsize)
		return;
	uint8_t *d = r + INF_HDR + INF_DESC * head;
	put16(d + 6, get16(r + 12));
	put16(r + 12, head);
}

static void inflight_used(struct vs *s, unsigned qi, uint16_t head)
{
	uint8_t *r = inflight_q(s, qi);
	if (!r || head >= s->inflight_qsize)
		return;
	__atomic_store_n(r + INF_HDR + INF_DESC * head, 0, __ATOMIC_RELEASE);
	put16(r + 14, s->r[qi].q.used_idx);
}

static void serve(struct vs *s, unsigned qi, struct vs_ring *r);

/* A ring starting with a region: initialise it on first use, else
 * "When reconnecting": settle the last batch, then serve what it marks
 * in flight in the order it was taken. The avail position follows from
 * it: everything before used_idx + (in flight) was taken. */
static void inflight_resume(struct vs *s, unsigned qi)
{
	struct vs_ring *ring = &s->r[qi];
	uint8_t *r = inflight_q(s, qi);
	if (!r)
		return;
	uint16_t qsize = s->inflight_qsize, used = ring->q.used_idx;
	if (get16(r + 8) != 1 || get16(r + 10) != qsize) {
		/* version 0 (or not ours): a fresh region */
		memset(r, 0, s->inflight_stride);
		put16(r + 8, 1);
		put16(r + 10, qsize);
		put16(r + 14, used);
		ring->counter = 1;
		return;
	}
	uint16_t batch = (uint16_t)(used - get16(r + 14));
	uint16_t i = get16(r + 12);
	for (unsigned n = 0; n < batch && n < qsize && i < qsize; n++) {
		uint8_t *d = r + INF_HDR + INF_DESC * i;
		d[0] = 0;
		i = get16(d + 6);
	}
	put16(r + 14, used);
	uint16_t heads[VS_MAX_QUEUE_SIZE];
	uint64_t order[VS_MAX_QUEUE_SIZE], top = 0;
	unsigned n = 0;
	for (unsigned h = 0; h < qsize; h++) {
		uint8_t *d = r + INF_HDR + INF_DESC * h;
		uint64_t c;
		memcpy(&c, d + 8, 8);
		if (c > top)
			top = c;
		if (d[0] != 1)
			continue;
		if (h >= ring->num || n == ring->num) {
			d[0] = 0; /* not a head this ring can have */
			continue;
		}
		/* insertion by counter: at most 256 entries */
		unsigned k = n++;
		while (k && order[k - 1] > c)
			heads[k] = heads[k - 1], order[k] = order[k - 1], k--;
		heads[k] = (uint16_t)h, order[k] = c;
	}
	ring->counter = top + 1;
	ring->q.last_avail = (uint16_t)(used + n);
	for (unsigned k = 0; k < n; k++) {
		int rc = mb_vq_chain_at(&ring->q, heads[k], &ring->chain);
		if (rc <= 0)
			break;
		uint32_t len = s->m->request(s->m->dev, qi, &ring->chain);
		inflight_batch(s, qi, heads[k]);
		mb_vq_push(&ring->q, heads[k], len);
		inflight_used(s, qi, heads[k]);
		s->resubmitted++;
		s->requests++;
	}
	if (n && ring->call >= 0) {
		uint64_t one = 1;
		if (write(ring->call, &one, sizeof one) < 0) {
			/* a full counter already wakes the front-end */
		}
	}
}

/* ---- rings ("Ring states") ---------------------------------------------- */

static void ring_fault(void *ctx, struct mb_vq *q, const char *why)
{
	struct vs *s = ctx;
	fprintf(stderr, "moonbox-device: vhost-user %s: queue %u: %s\n",
		s->m->type, (unsigned)((struct vs_ring *)(void *)q - s->r), why);
}

static void ring_stop(struct vs *s, unsigned qi)
{
	struct vs_ring *r = &s->r[qi];
	if (r->started) {
		mb_vq_reset(&r->q);
		r->started = false;
	}
}

/* Start a ring: its size, addresses and kick are known. The addresses
 * are user addresses (no IOMMU_PLATFORM), translated through the table;
 * the queue code then bounds every ring and buffer. */
static int ring_start(struct vs *s, unsigned qi)
{
	struct vs_ring *r = &s->r[qi];
	uint64_t n = r->num, d, a, u;
	if (!ua_to_gpa(s, r->desc_ua, 16 * n, &d) ||
	    !ua_to_gpa(s, r->avail_ua, 6 + 2 * n, &a) ||
	    !ua_to_gpa(s, r->used_ua, 6 + 8 * n, &u)) {
		fprintf(stderr, "moonbox-device: vhost-user %s: queue %u: rings at "
			"0x%" PRIx64 "/0x%" PRIx64 "/0x%" PRIx64 " are not in the "
			"memory table\n", s->m->type, qi, r->desc_ua, r->avail_ua,
			r->used_ua);
		return -1;
	}
	mb_vq_reset(&r->q);
	r->q.mem = s->mem;
	r->q.num = r->num;
	r->q.desc_gpa = d, r->q.avail_gpa = a, r->q.used_gpa = u;
	if (mb_vq_enable(&r->q, s->m->queue_max, s->features)) {
		fprintf(stderr, "moonbox-device: vhost-user %s: queue %u: %s\n",
			s->m->type, qi, mb_errmsg());
		return -1;
	}
	/* SET_VRING_BASE: where the avail ring is taken from; the used
	 * index stays what the ring in memory says. */
	r->q.last_avail = r->base;
	r->started = true;
	/* With a region, what it marks is served first, once the ring is
	 * enabled (a disabled ring has no side effects, "Ring states"). */
	r->resume = inflight_q(s, qi) != NULL;
	return 0;
}

/* Try to start qi once everything it needs arrived (any order). */
static void ring_maybe_start(struct vs *s, unsigned qi)
{
	struct vs_ring *r = &s->r[qi];
	if (r->started || !r->have_num || !r->have_addr || !r->have_kick || !s->nreg)
		return;
	if (ring_start(s, qi) == 0 && r->enabled)
		serve(s, qi, r);
}

static void call(struct vs_ring *r)
{
	uint64_t one = 1;
	if (r->call >= 0 && write(r->call, &one, sizeof one) < 0) {
		/* EAGAIN: the counter is full, the front-end wakes anyway */
	}
}

/* Take every chain, serve it, give it back (sec. 2.7.13 device side),
 * marking it in the inflight region meanwhile. */
static void serve(struct vs *s, unsigned qi, struct vs_ring *r)
{
	if (!r->started || !r->enabled || r->q.broken)
		return;
	if (r->resume) {
		r->resume = false;
		inflight_resume(s, qi);
	}
	bool held = false; /* the model takes no more for now */
	do {
		bool any = false;
		for (;;) {
			if (s->m->can_serve && !s->m->can_serve(s->m->dev, qi)) {
				held = true; /* its buffers wait in the ring */
				break;
			}
			int rc = mb_vq_pop(&r->q, &r->chain);
			if (rc <= 0)
				break;
			uint16_t head = r->chain.head;
			inflight_take(s, qi, head);
			uint32_t len = s->m->request(s->m->dev, qi, &r->chain);
			inflight_batch(s, qi, head);
			mb_vq_push(&r->q, head, len);
			inflight_used(s, qi, head);
			s->requests++;
			any = true;
		}
		if (any && mb_vq_need_irq(&r->q))
			call(r);
	} while (!held && !r->q.broken && mb_vq_arm(&r->q));
}

void vs_kick(struct vs *s, unsigned qi)
{
	if (qi >= s->m->nqueues)
		return;
	struct vs_ring *r = &s->r[qi];
	uint64_t v;
	if (r->kick >= 0 && read(r->kick, &v, sizeof v) < 0) {
		/* EAGAIN: a spurious wake-up */
	}
	serve(s, qi, r);
}

void vs_serve(struct vs *s, unsigned qi)
{
	if (qi < s->m->nqueues)
		serve(s, qi, &s->r[qi]);
}

/* ---- connections -------------------------------------------------------- */

void vs_init(struct vs *s, const struct vs_model *m)
{
	memset(s, 0, sizeof *s);
	s->m = m; /* queue_max <= VS_MAX_QUEUE_SIZE, nqueues <= VS_MAX_QUEUES */
	s->sock = -1;
	for (unsigned i = 0; i < VS_MAX_QUEUES; i++) {
		mb_vq_init(&s->r[i].q, NULL);
		s->r[i].q.fault = ring_fault;
		s->r[i].q.fault_ctx = s;
		s->r[i].kick = s->r[i].call = s->r[i].err = -1;
	}
}

/* Every ring stopped and forgotten, as after RESET_DEVICE. */
static void rings_reset(struct vs *s)
{
	for (unsigned i = 0; i < VS_MAX_QUEUES; i++) {
		struct vs_ring *r = &s->r[i];
		ring_stop(s, i);
		set_fd(&r->kick, -1);
		set_fd(&r->call, -1);
		set_fd(&r->err, -1);
		r->num = r->base = 0;
		r->desc_ua = r->avail_ua = r->used_ua = 0;
		r->have_num = r->have_addr = r->have_kick = false;
		r->enabled = false;
		r->counter = 0;
	}
}

void vs_connect(struct vs *s, int sock)
{
	vs_disconnect(s);
	s->sock = sock;
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	s->why[0] = 0;
}

void vs_disconnect(struct vs *s)
{
	rings_reset(s);
	mem_clear(s);
	mb_mem_free(s->mem);
	s->mem = NULL;
	for (unsigned i = 0; i < VS_MAX_QUEUES; i++)
		s->r[i].q.mem = NULL;
	inflight_free(s);
	s->features = s->protocol = 0;
	s->features_set = false;
	s->status = 0;
	if (s->sock >= 0)
		close(s->sock);
	s->sock = -1;
}

/* ---- messages ----------------------------------------------------------- */

static bool has_pf(const struct vs *s, int bit) { return s->protocol >> bit & 1; }

/* A ring index in a vring state or address: bounded by our queue count. */
static int ring_of(struct vs *s, uint32_t request, uint32_t index, struct vs_ring **r)
{
	if (index >= s->m->nqueues)
		return drop(s, "request %u: ring %u (the device has %u)", request,
			    index, s->m->nqueues);
	*r = &s->r[index];
	return 0;
}

/* SET_VRING_KICK / CALL / ERR: u64 with the index in bits 0-7 and bit 8
 * for "no descriptor"; exactly one fd unless bit 8. */
static int vring_fd(struct vs *s, uint32_t request, const void *p, uint32_t size,
		    int *fds, unsigned nfds, unsigned *qi, int *fd)
{
	uint64_t v;
	if (size != 8)
		return drop(s, "request %u: payload of %u bytes, not 8", request, size);
	memcpy(&v, p, 8);
	bool nofd = v & VRING_NOFD;
	if (v & ~(uint64_t)(VRING_IDX_MASK | VRING_NOFD))
		return drop(s, "request %u: 0x%" PRIx64 " has unknown bits", request, v);
	if (nfds != (nofd ? 0u : 1u))
		return drop(s, "request %u: %u file descriptors with%s the no-fd flag",
			    request, nfds, nofd ? "" : "out");
	struct vs_ring *r;
	if (ring_of(s, request, (uint32_t)(v & VRING_IDX_MASK), &r))
		return -1;
	*qi = (unsigned)(v & VRING_IDX_MASK);
	*fd = nofd ? -1 : fds[0];
	if (!nofd)
		fds[0] = -1;
	return 0;
}

static int mem_table(struct vs *s, const uint8_t *p, uint32_t size, int *fds,
		     unsigned nfds)
{
	uint32_t n;
	if (size < 8)
		return drop(s, "SET_MEM_TABLE: payload of %u bytes", size);
	memcpy(&n, p, 4);
	/* QEMU sends the regions it has; some front-ends the whole table */
	if (n < 1 || n > MEM_TABLE_REGIONS ||
	    (size != 8 + 32 * n && size != 8 + 32 * MEM_TABLE_REGIONS))
		return drop(s, "SET_MEM_TABLE: %u regions in %u bytes", n, size);
	if (nfds != n)
		return drop(s, "SET_MEM_TABLE: %u regions with %u file descriptors",
			    n, nfds);
	/* The new table replaces the old one whole; running rings move to it
	 * with their indices (mem_rebuild), and the old mappings go last. */
	struct vs_region fresh[MEM_TABLE_REGIONS], old[VS_MAX_SLOTS];
	for (uint32_t i = 0; i < n; i++) {
		struct mem_region m;
		memcpy(&m, p + 8 + 32 * i, sizeof m);
		int fd = fds[i];
		fds[i] = -1;
		if (region_map(s, &m, fd, &fresh[i])) {
			while (i--)
				region_unmap(&fresh[i]);
			return -1;
		}
	}
	unsigned nold = s->nreg;
	memcpy(old, s->reg, sizeof old);
	memset(s->reg, 0, sizeof s->reg);
	memcpy(s->reg, fresh, n * sizeof *fresh);
	s->nreg = n;
	int rc = mem_rebuild(s);
	for (unsigned i = 0; i < nold; i++)
		region_unmap(&old[i]);
	if (rc)
		return -1;
	for (unsigned i = 0; i < s->m->nqueues; i++)
		ring_maybe_start(s, i);
	return 0;
}

static int add_mem_reg(struct vs *s, const uint8_t *p, uint32_t size, int *fds,
		       unsigned nfds)
{
	struct mem_region m;
	if (size != 8 + sizeof m || nfds != 1)
		return drop(s, "ADD_MEM_REG: %u bytes with %u file descriptors", size,
			    nfds);
	if (s->nreg == VS_MAX_SLOTS)
		return drop(s, "ADD_MEM_REG: more than %d regions", VS_MAX_SLOTS);
	memcpy(&m, p + 8, sizeof m);
	int fd = fds[0];
	fds[0] = -1;
	if (region_map(s, &m, fd, &s->reg[s->nreg]))
		return -1;
	s->nreg++;
	if (mem_rebuild(s)) {
		region_unmap(&s->reg[--s->nreg]);
		return -1;
	}
	for (unsigned i = 0; i < s->m->nqueues; i++)
		ring_maybe_start(s, i);
	return 0;
}

/* REM_MEM_REG: the region named by guest address, user address and size
 * (the offset is ignored); a descriptor, if one came, is closed. */
static int rem_mem_reg(struct vs *s, const uint8_t *p, uint32_t size, unsigned nfds)
{
	struct mem_region m;
	if (size != 8 + sizeof m || nfds > 1)
		return drop(s, "REM_MEM_REG: %u bytes with %u file descriptors", size,
			    nfds);
	memcpy(&m, p + 8, sizeof m);
	for (unsigned i = 0; i < s->nreg; i++) {
		struct vs_region *r = &s->reg[i];
		if (r->gpa != m.gpa || r->uaddr != m.uaddr || r->size != m.size)
			continue;
		struct vs_region gone = *r;
		memmove(r, r + 1, (s->nreg - i - 1) * sizeof *r);
		s->nreg--;
		memset(&s->reg[s->nreg], 0, sizeof s->reg[0]);
		int rc = mem_rebuild(s); /* rings in it stop before the unmap */
		region_unmap(&gone);
		return rc;
	}
	return drop(s, "REM_MEM_REG: no region at gpa 0x%" PRIx64 " uaddr 0x%" PRIx64
		    " size 0x%" PRIx64, m.gpa, m.uaddr, m.size);
}

/* GET_INFLIGHT_FD: a fresh region for num_queues x queue_size, a sealed
 * memfd, mapped here and handed to the front-end to keep. */
static int get_inflight(struct vs *s, const void *p, uint32_t size)
{
	struct inflight_msg in;
	if (size != sizeof in)
		return drop(s, "GET_INFLIGHT_FD: payload of %u bytes", size);
	memcpy(&in, p, sizeof in);
	if (!in.num_queues || in.num_queues > s->m->nqueues || !in.queue_size ||
	    in.queue_size > s->m->queue_max)
		return drop(s, "GET_INFLIGHT_FD: %u queues of %u (the device has %u "
			    "of at most %u)", in.num_queues, in.queue_size,
			    s->m->nqueues, s->m->queue_max);
	uint64_t stride = inflight_stride(in.queue_size);
	uint64_t total = stride * in.num_queues;
	int fd = memfd_create("moonbox-vhost-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return drop(s, "GET_INFLIGHT_FD: memfd_create: %s", strerror(errno));
	void *m = MAP_FAILED;
	if (ftruncate(fd, (off_t)total) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) ||
	    (m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
		    MAP_FAILED) {
		int e = errno;
		close(fd);
		return drop(s, "GET_INFLIGHT_FD: %s", strerror(e));
	}
	inflight_free(s);
	s->inflight = m;
	s->inflight_size = total;
	s->inflight_stride = stride;
	s->inflight_nq = in.num_queues;
	s->inflight_qsize = in.queue_size;
	struct inflight_msg out = { total, 0, in.num_queues, in.queue_size, 0 };
	int rc = reply(s, GET_INFLIGHT_FD, &out, sizeof out, fd);
	close(fd); /* ours is the mapping; the front-end keeps the fd */
	return rc;
}

/* SET_INFLIGHT_FD: the region to use (ours from GET_INFLIGHT_FD, or one a
 * previous back-end filled). Checked as a memory region is, and its
 * layout must be the one its sizes say. */
static int set_inflight(struct vs *s, const void *p, uint32_t size, int *fds,
			unsigned nfds)
{
	struct inflight_msg in;
	if (size != sizeof in || nfds != 1)
		return drop(s, "SET_INFLIGHT_FD: %u bytes with %u file descriptors",
			    size, nfds);
	memcpy(&in, p, sizeof in);
	int fd = fds[0];
	fds[0] = -1;
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);
	uint64_t stride = in.queue_size ? inflight_stride(in.queue_size) : 0;
	if (!in.num_queues || in.num_queues > s->m->nqueues || !in.queue_size ||
	    in.queue_size > s->m->queue_max || in.mmap_size > MAX_INFLIGHT ||
	    in.mmap_offset > MAX_INFLIGHT || (in.mmap_offset & 4095) ||
	    in.mmap_size < stride * in.num_queues || fstat(fd, &st) ||
	    !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size < in.mmap_offset + in.mmap_size || seals < 0 ||
	    !(seals & F_SEAL_SHRINK)) {
		close(fd);
		return drop(s, "SET_INFLIGHT_FD: region of %" PRIu64 " bytes at %" PRIu64
			    " for %u queues of %u: not a fitting sealed file",
			    in.mmap_size, in.mmap_offset, in.num_queues, in.queue_size);
	}
	void *m = mmap(NULL, in.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		       (off_t)in.mmap_offset);
	close(fd);
	if (m == MAP_FAILED)
		return drop(s, "SET_INFLIGHT_FD: mmap: %s", strerror(errno));
	inflight_free(s);
	s->inflight = m;
	s->inflight_size = in.mmap_size;
	s->inflight_stride = stride;
	s->inflight_nq = in.num_queues;
	s->inflight_qsize = in.queue_size;
	return 0;
}

static int get_config(struct vs *s, const uint8_t *p, uint32_t size)
{
	struct {
		uint32_t offset, size, flags;
		uint8_t data[MAX_CONFIG];
	} c;
	if (size < 12 || size > sizeof c)
		return drop(s, "GET_CONFIG: payload of %u bytes", size);
	memcpy(&c, p, 12);
	if (c.size != size - 12)
		return drop(s, "GET_CONFIG: asks %u bytes in a payload of %u", c.size,
			    size);
	if (c.offset > s->m->config_size || c.size > s->m->config_size - c.offset) {
		/* the spec's error answer: an empty payload */
		s->refused++;
		return reply(s, GET_CONFIG, NULL, 0, -1);
	}
	memset(c.data, 0, c.size);
	if (c.size)
		s->m->config_read(s->m->dev, c.offset, c.data, c.size);
	return reply(s, GET_CONFIG, &c, size, -1);
}

int vs_handle(struct vs *s, uint32_t request, uint32_t flags, const void *payload,
	      uint32_t size, int *fds, unsigned nfds)
{
	const uint8_t *p = payload;
	int rc = 0;     /* -1: drop the connection */
	uint64_t ack = 0; /* REPLY_ACK: non-zero refuses */
	bool replied = false;
	uint64_t v = 0;
	struct vs_ring *r = NULL;
	unsigned qi = 0;
	int fd = -1;
	s->messages++;
	if ((flags & HDR_VERSION_MASK) != HDR_VERSION || (flags & HDR_REPLY)) {
		rc = drop(s, "request %u: header flags 0x%x", request, flags);
		goto out;
	}
	/* Descriptors come only with the messages that carry them. */
	switch (request) {
	case SET_MEM_TABLE: case ADD_MEM_REG: case REM_MEM_REG: case SET_VRING_KICK:
	case SET_VRING_CALL: case SET_VRING_ERR: case SET_INFLIGHT_FD:
		break;
	default:
		if (nfds) {
			rc = drop(s, "request %u: %u unexpected file descriptors",
				  request, nfds);
			goto out;
		}
	}
	/* Requests whose payload is one u64 or a vring state (8 bytes). */
	switch (request) {
	case SET_FEATURES: case SET_PROTOCOL_FEATURES: case SET_VRING_NUM:
	case SET_VRING_BASE: case GET_VRING_BASE: case SET_VRING_ENABLE:
	case SET_STATUS:
		if (size != 8) {
			rc = drop(s, "request %u: payload of %u bytes, not 8", request,
				  size);
			goto out;
		}
		memcpy(&v, p, 8);
		break;
	case GET_FEATURES: case SET_OWNER: case RESET_OWNER:
	case GET_PROTOCOL_FEATURES: case GET_QUEUE_NUM: case RESET_DEVICE:
	case GET_MAX_MEM_SLOTS: case GET_STATUS:
		if (size) {
			rc = drop(s, "request %u: payload of %u bytes, not 0", request,
				  size);
			goto out;
		}
		break;
	}
	uint32_t index = (uint32_t)v, num = (uint32_t)(v >> 32);
	switch (request) {
	case GET_FEATURES:
		rc = reply_u64(s, request, offered(s));
		replied = true;
		break;
	case SET_FEATURES:
		if (v & ~offered(s)) {
			rc = drop(s, "SET_FEATURES 0x%" PRIx64 ": not offered", v);
			break;
		}
		s->features = v;
		s->features_set = true;
		if (s->m->set_features)
			s->m->set_features(s->m->dev, v);
		/* Without PROTOCOL_FEATURES a ring starts enabled ("Ring states"). */
		if (!(v >> F_PROTOCOL_FEATURES & 1))
			for (unsigned i = 0; i < s->m->nqueues; i++)
				s->r[i].enabled = true;
		break;
	case SET_OWNER:
		break;
	case RESET_OWNER: /* deprecated: disable every ring */
		for (unsigned i = 0; i < s->m->nqueues; i++)
			ring_stop(s, i);
		break;
	case GET_PROTOCOL_FEATURES:
		rc = reply_u64(s, request, protocol_offered(s));
		replied = true;
		break;
	case SET_PROTOCOL_FEATURES:
		if (v & ~protocol_offered(s)) {
			rc = drop(s, "SET_PROTOCOL_FEATURES 0x%" PRIx64 ": not offered", v);
			break;
		}
		s->protocol = v;
		break;
	case GET_QUEUE_NUM:
		rc = reply_u64(s, request, s->m->nqueues);
		replied = true;
		break;
	case GET_MAX_MEM_SLOTS:
		rc = reply_u64(s, request, VS_MAX_SLOTS);
		replied = true;
		break;
	case SET_MEM_TABLE:
		rc = mem_table(s, p, size, fds, nfds);
		break;
	case ADD_MEM_REG:
		if (!has_pf(s, PF_CONFIGURE_MEM_SLOTS)) {
			rc = drop(s, "ADD_MEM_REG without CONFIGURE_MEM_SLOTS");
			break;
		}
		rc = add_mem_reg(s, p, size, fds, nfds);
		break;
	case REM_MEM_REG:
		if (!has_pf(s, PF_CONFIGURE_MEM_SLOTS)) {
			rc = drop(s, "REM_MEM_REG without CONFIGURE_MEM_SLOTS");
			break;
		}
		rc = rem_mem_reg(s, p, size, nfds);
		break;
	case SET_VRING_NUM:
		if ((rc = ring_of(s, request, index, &r)))
			break;
		if (num == 0 || num > s->m->queue_max || (num & (num - 1))) {
			rc = drop(s, "SET_VRING_NUM: %u is not a power of two in 1..%u",
				  num, s->m->queue_max);
			break;
		}
		if (r->started) {
			ack = 1; /* not while the ring runs */
			break;
		}
		r->num = (uint16_t)num;
		r->have_num = true;
		break;
	case SET_VRING_ADDR: {
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} a;
		if (size != sizeof a) {
			rc = drop(s, "SET_VRING_ADDR: payload of %u bytes", size);
			break;
		}
		memcpy(&a, p, sizeof a);
		if ((rc = ring_of(s, request, a.index, &r)))
			break;
		if (a.flags) { /* VHOST_VRING_F_LOG: logging is never offered */
			rc = drop(s, "SET_VRING_ADDR: flags 0x%x", a.flags);
			break;
		}
		r->desc_ua = a.desc, r->avail_ua = a.avail, r->used_ua = a.used;
		r->have_addr = true;
		if (r->started) { /* moved while running: look them up again */
			uint16_t last = r->q.last_avail;
			ring_stop(s, index);
			r->base = last;
			if (ring_start(s, index))
				ack = 1;
		} else {
			ring_maybe_start(s, a.index);
		}
		break;
	}
	case SET_VRING_BASE:
		if ((rc = ring_of(s, request, index, &r)))
			break;
		if (num > 0xffff) {
			rc = drop(s, "SET_VRING_BASE: %u", num);
			break;
		}
		if (r->started) {
			ack = 1;
			break;
		}
		r->base = (uint16_t)num;
		break;
	case GET_VRING_BASE: {
		/* Stops the ring; the answer is where to start it again. */
		if ((rc = ring_of(s, request, index, &r)))
			break;
		uint32_t st[2] = { index, r->started ? r->q.last_avail : r->base };
		ring_stop(s, index);
		r->base = (uint16_t)st[1];
		set_fd(&r->kick, -1);
		r->have_kick = false;
		rc = reply(s, request, st, sizeof st, -1);
		replied = true;
		break;
	}
	case SET_VRING_KICK:
		if ((rc = vring_fd(s, request, p, size, fds, nfds, &qi, &fd)))
			break;
		set_fd(&s->r[qi].kick, fd);
		s->r[qi].have_kick = true;
		ring_maybe_start(s, qi);
		break;
	case SET_VRING_CALL:
		if ((rc = vring_fd(s, request, p, size, fds, nfds, &qi, &fd)))
			break;
		set_fd(&s->r[qi].call, fd);
		/* Completions made while it had no call fd would go unheard:
		 * one call now (a spurious one is harmless). */
		if (s->r[qi].started)
			call(&s->r[qi]);
		break;
	case SET_VRING_ERR:
		if ((rc = vring_fd(s, request, p, size, fds, nfds, &qi, &fd)))
			break;
		set_fd(&s->r[qi].err, fd); /* kept, never signalled */
		break;
	case SET_VRING_ENABLE:
		if ((rc = ring_of(s, request, index, &r)))
			break;
		if (num > 1) {
			rc = drop(s, "SET_VRING_ENABLE: %u", num);
			break;
		}
		r->enabled = num;
		serve(s, index, r);
		break;
	case GET_CONFIG:
		if (!has_pf(s, PF_CONFIG)) {
			rc = drop(s, "GET_CONFIG without PROTOCOL_F_CONFIG");
			break;
		}
		rc = get_config(s, p, size);
		replied = true;
		break;
	case SET_CONFIG:
		/* Nothing in these devices' config space is writable. */
		if (size < 12 || size > 12 + MAX_CONFIG) {
			rc = drop(s, "SET_CONFIG: payload of %u bytes", size);
			break;
		}
		ack = 1;
		s->refused++;
		break;
	case GET_INFLIGHT_FD:
		if (!has_pf(s, PF_INFLIGHT_SHMFD)) {
			rc = drop(s, "GET_INFLIGHT_FD without PROTOCOL_F_INFLIGHT_SHMFD");
			break;
		}
		rc = get_inflight(s, p, size);
		replied = true;
		break;
	case SET_INFLIGHT_FD:
		if (!has_pf(s, PF_INFLIGHT_SHMFD)) {
			rc = drop(s, "SET_INFLIGHT_FD without PROTOCOL_F_INFLIGHT_SHMFD");
			break;
		}
		rc = set_inflight(s, p, size, fds, nfds);
		break;
	case RESET_DEVICE:
		rings_reset(s);
		inflight_free(s);
		s->features = 0;
		s->features_set = false;
		s->status = 0;
		break;
	case SET_STATUS:
		if (v > 0xff) {
			rc = drop(s, "SET_STATUS 0x%" PRIx64, v);
			break;
		}
		s->status = (uint8_t)v;
		break;
	case GET_STATUS:
		rc = reply_u64(s, request, s->status);
		replied = true;
		break;
	default:
		/* Not ours (LOG_*, IOTLB, crypto, postcopy...): never negotiated. */
		s->refused++;
		if (size > VS_MAX_PAYLOAD)
			rc = drop(s, "request %u: payload of %u bytes", request, size);
		ack = 1;
		break;
	}
	/* REPLY_ACK: a request with no reply of its own answers 0 or not. */
	if (!rc && !replied && (flags & HDR_NEED_REPLY) && has_pf(s, PF_REPLY_ACK))
		rc = reply_u64(s, request, ack);
out:
	close_fds(fds, nfds);
	return rc;
}

/* One message off the stream: the header with its descriptors, then the
 * payload (at most VS_MAX_PAYLOAD). */
int vs_receive(struct vs *s)
{
	struct {
		uint32_t request, flags, size;
	} h;
	int fds[VS_MAX_FDS];
	unsigned nfds = 0;
	union {
		char buf[CMSG_SPACE(sizeof(int) * VS_MAX_FDS)];
		struct cmsghdr align;
	} u;
	static uint8_t payload[VS_MAX_PAYLOAD];
	size_t got = 0;
	while (got < sizeof h) {
		struct iovec iov = { (uint8_t *)&h + got, sizeof h - got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = u.buf, .msg_controllen = sizeof u.buf };
		ssize_t n = recvmsg(s->sock, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (unsigned i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
				if (nfds < VS_MAX_FDS)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
		if (n <= 0 || (mh.msg_flags & MSG_CTRUNC)) {
			close_fds(fds, nfds);
			if (n == 0 && got == 0)
				return drop(s, "the front-end closed the connection");
			return drop(s, "reading a message header: %s",
				    n < 0 ? strerror(errno) : n == 0 ? "end of stream"
								     : "too many descriptors");
		}
		got += (size_t)n;
	}
	if (h.size > VS_MAX_PAYLOAD) {
		close_fds(fds, nfds);
		return drop(s, "request %u: payload of %u bytes (at most %d)", h.request,
			    h.size, VS_MAX_PAYLOAD);
	}
	for (got = 0; got < h.size;) {
		ssize_t n = recv(s->sock, payload + got, h.size - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close_fds(fds, nfds);
			return drop(s, "request %u: payload: %s", h.request,
				    n < 0 ? strerror(errno) : "end of stream");
		}
		got += (size_t)n;
	}
	return vs_handle(s, h.request, h.flags, payload, h.size, fds, nfds);
}
