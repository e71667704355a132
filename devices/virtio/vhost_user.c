/*
 * vhost-user front-end on the virtio-mmio transport (QEMU
 * docs/interop/vhost-user.rst, "Front-end message types"; virtio v1.2).
 * See moonbox/vhost_user.h for the split of work and docs/vhost_user.md.
 *
 * Locks: the transport calls status/reset/config_* with its lock held;
 * every exchange on the socket also takes vu->lock, which the event loop's
 * socket watch takes alone. The watch never takes the transport lock while
 * holding vu->lock (it calls mb_virtio_fail after dropping it), so the
 * order is always transport -> vu.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "moonbox/vhost_user.h"
#include "moonbox/sandbox.h"

/* ---- the protocol ("Message types", "Protocol features") ---------------- */

enum {
	GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5,
	SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10,
	GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_CALL = 13,
	GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
	SET_BACKEND_REQ_FD = 21,
	GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18, GET_CONFIG = 24,
	SET_CONFIG = 25, GET_INFLIGHT_FD = 31, SET_INFLIGHT_FD = 32, RESET_DEVICE = 34, GET_MAX_MEM_SLOTS = 36,
	ADD_MEM_REG = 37, REM_MEM_REG = 38, SET_STATUS = 39,
};

#define HDR_VERSION 0x1u    /* flags bits 0-1 */
#define HDR_REPLY 0x4u
#define HDR_NEED_REPLY 0x8u
#define MAX_PAYLOAD 4096    /* nothing we read is larger */
#define MAX_REGIONS 8       /* VHOST_MEMORY_BASELINE_NREGIONS */
#define MAX_SLOTS 32        /* regions we track with CONFIGURE_MEM_SLOTS */
#define MAX_CONFIG 256      /* GET_CONFIG payload limit of the spec */
#define IO_TIMEOUT_S 5      /* a back-end that stalls loses its device */

#define F_PROTOCOL_FEATURES 30 /* VHOST_USER_F_PROTOCOL_FEATURES */
enum {
	PF_MQ = 0, PF_REPLY_ACK = 3, PF_BACKEND_REQ = 5, PF_CONFIG = 9, PF_INFLIGHT_SHMFD = 12,
	PF_RESET_DEVICE = 13,
	PF_CONFIGURE_MEM_SLOTS = 15, PF_STATUS = 16,
};
/* What moonbox speaks: the rest is never negotiated, so never sent. */
#define PF_WANTED                                                        \
	((1ull << PF_MQ) | (1ull << PF_REPLY_ACK) | (1ull << PF_CONFIG) |    \
	 (1ull << PF_RESET_DEVICE) | (1ull << PF_STATUS) |                    \
	 (1ull << PF_CONFIGURE_MEM_SLOTS) | (1ull << PF_INFLIGHT_SHMFD) |     \
	 (1ull << PF_BACKEND_REQ))
/* Back-end requests ("Back-end message types"): only this one is served. */
#define BACKEND_CONFIG_CHANGE_MSG 2

/* Feature bits the guest may see: device-specific ones (0-23) pass
 * through; of the reserved range only what this transport implements
 * (split rings, sec. 6): VERSION_1, INDIRECT_DESC, EVENT_IDX. */
#define GUEST_FEATURES                                                   \
	(0xffffffull | (1ull << VIRTIO_F_VERSION_1) | (1ull << 28) | (1ull << 29))

struct hdr {
	uint32_t request, flags, size;
};
struct vring_state {
	uint32_t index, num;
};
struct vring_addr {
	uint32_t index, flags;
	uint64_t desc, used, avail, log;
};
struct mem_region {
	uint64_t gpa, size, uaddr, offset;
};
struct mem_table {
	uint32_t nregions, padding;
	struct mem_region r[MAX_REGIONS];
};
struct mem_reg_msg { /* ADD_MEM_REG / REM_MEM_REG payload */
	uint64_t padding;
	struct mem_region r;
};
struct inflight_msg { /* GET_INFLIGHT_FD / SET_INFLIGHT_FD, 24 bytes */
	uint64_t mmap_size, mmap_offset;
	uint16_t num_queues, queue_size;
	uint32_t padding;
};
#define MAX_INFLIGHT (16u << 20) /* an inflight region larger is refused */
struct config_msg {
	uint32_t offset, size, flags;
	uint8_t data[MAX_CONFIG];
};

/* ---- the device --------------------------------------------------------- */

struct mb_vhost_user {
	struct mb_virtio_dev_ops ops;
	struct mb_device_ops dev_ops;
	struct mb_virtio_model model;
	struct mb_state_desc desc; /* ours: queues[] as long as nqueues */
	struct mb_field *fields;
	struct mb_machine *m; /* NULL: a bare model (fuzz/fuzz_vhost_user.c) */
	struct mb_mem *mem;
	struct mb_virtio *t;

	pthread_mutex_t lock; /* the socket and the protocol state */
	int sock;             /* -1: disconnected */
	bool watched;
	int req;              /* BACKEND_REQ: our end of the channel, or -1 */
	bool req_watched;
	pthread_mutex_t cfg_lock; /* config[]: vCPUs read it, the channel
				     refreshes it (a leaf lock) */
	_Atomic uint64_t backend_msgs, config_changes, refused;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t be_features, protocol;
	unsigned be_queues;
	unsigned max_slots; /* GET_MAX_MEM_SLOTS, capped at MAX_SLOTS */
	/* CONFIGURE_MEM_SLOTS: the regions this connection has (ADD_MEM_REG) */
	unsigned nslots;
	struct mem_region slot_reg[MAX_SLOTS];
	int slot_fd[MAX_SLOTS]; /* not ours: the memfd of mb_mem or bounce_fd */
	bool running; /* rings handed over since DRIVER_OK */
	bool started[MB_VIRTIO_MAX_QUEUES];
	int call[MB_VIRTIO_MAX_QUEUES];
	int kick[MB_VIRTIO_MAX_QUEUES]; /* ours when the transport has none */
	uint8_t config[MAX_CONFIG];
	pid_t child;
	int pidfd;
	char **argv;   /* spawn: our copy, NULL-terminated; NULL: socket mode */
	char dir[64];  /* spawn: the private directory of the socket */
	/* spawn, confined: MB_LAUNCH_* flags, the paths (owned, with what
	 * the argv names), what the last child got */
	unsigned launch_flags;
	char *sb_ro[MB_LAUNCH_MAX_PATHS + 1], *sb_rw[MB_LAUNCH_MAX_PATHS + 1];
	unsigned nro, nrw;
	struct mb_sandbox_report report;
	char why[160]; /* the last protocol error */
	_Atomic uint64_t messages, calls, disconnects, reconnects, spawns;

	/* INFLIGHT_SHMFD: the back-end's inflight region (GET_INFLIGHT_FD),
	 * kept across its crash and handed to its successor with
	 * SET_INFLIGHT_FD; dropped when the driver resets. */
	int inflight_fd;
	struct inflight_msg inflight;
	const uint8_t *inflight_map; /* read-only, only if sealed against shrink */
	bool resume;                 /* restarting rings after a crash */

	/* dma = "copy": shadow queues in a bounce memfd (see "copy mode") */
	bool copy;
	bool live;            /* DRIVER_OK seen, no reset since */
	pthread_mutex_t copy_lock; /* the shadow rings and slots */
	int bounce_fd;
	uint8_t *bounce;
	size_t bounce_size;
	struct shadow *sh;    /* one per queue */
	struct mb_timer *retry;
	_Atomic uint64_t resubmitted;
};

static bool has_pf(const struct mb_vhost_user *vu, unsigned bit)
{
	return vu->protocol >> bit & 1;
}

/* The connection is gone or unusable: forget it (vu->lock held). */
static void drop(struct mb_vhost_user *vu)
{
	if (vu->sock < 0)
		return;
	if (vu->watched)
		mb_machine_unwatch(vu->m, vu->sock);
	vu->watched = false;
	close(vu->sock);
	vu->sock = -1;
	if (vu->req >= 0) {
		if (vu->req_watched)
			mb_machine_unwatch(vu->m, vu->req);
		close(vu->req);
	}
	vu->req = -1;
	vu->req_watched = false;
	vu->running = false;
	memset(vu->started, 0, sizeof vu->started);
	vu->nslots = 0; /* a new back-end starts with no memory */
	vu->disconnects++;
}

/* A protocol failure: note why, drop the connection, -EPROTO. */
static int broken(struct mb_vhost_user *vu, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int broken(struct mb_vhost_user *vu, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(vu->why, sizeof vu->why, fmt, ap);
	va_end(ap);
	drop(vu);
	return mb_seterr(-EPROTO, "vhost-user: %s", vu->why);
}

static int send_msg(struct mb_vhost_user *vu, uint32_t req, uint32_t flags,
		    const void *payload, uint32_t size, const int *fds,
		    unsigned nfds)
{
	if (vu->sock < 0)
		return mb_seterr(-ENOTCONN, "vhost-user: no back-end connected%s%s",
				 vu->why[0] ? ": " : "", vu->why);
	struct hdr h = { req, HDR_VERSION | flags, size };
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)payload, size } };
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_REGIONS)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
	if (nfds) {
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	size_t total = sizeof h + size, done = 0;
	while (done < total) {
		ssize_t n = sendmsg(vu->sock, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return broken(vu, "request %u: send: %s", req,
				      n < 0 ? strerror(errno) : "closed");
		done += (size_t)n;
		mh.msg_control = NULL, mh.msg_controllen = 0; /* fds went once */
		while (n > 0 && mh.msg_iovlen) { /* skip what was sent */
			size_t k = (size_t)n < mh.msg_iov->iov_len ? (size_t)n
								   : mh.msg_iov->iov_len;
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + k;
			mh.msg_iov->iov_len -= k;
			n -= (ssize_t)k;
			if (!mh.msg_iov->iov_len)
				mh.msg_iov++, mh.msg_iovlen--;
		}
	}
	vu->messages++;
	return 0;
}

/* Read exactly len bytes; any descriptor the back-end attaches is closed
 * and makes the reply invalid (no request of ours expects one). */
static int read_full(struct mb_vhost_user *vu, void *buf, size_t len,
		     uint32_t req, int *fd_out)
{
	size_t done = 0;
	while (done < len) {
		union {
			char buf[CMSG_SPACE(sizeof(int) * 16)];
			struct cmsghdr align;
		} u;
		struct iovec iov = { (char *)buf + done, len - done };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = u.buf,
				     .msg_controllen = sizeof u.buf };
		ssize_t n = recvmsg(vu->sock, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		bool fds = false;
		if (n >= 0)
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
			     c = CMSG_NXTHDR(&mh, c)) {
				if (c->cmsg_level != SOL_SOCKET ||
				    c->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int fd;
					memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
					if (fd_out && *fd_out < 0 && k == 1 && !fds)
						*fd_out = fd; /* the one the reply may carry */
					else
						close(fd), fds = true;
				}
				if (!fd_out || k != 1)
					fds = true;
			}
		if (fds || (mh.msg_flags & MSG_CTRUNC))
			return broken(vu, "reply to request %u carried file "
				      "descriptors", req);
		if (fds && fd_out && *fd_out >= 0)
			close(*fd_out), *fd_out = -1;
		if (n < 0)
			return broken(vu, "reply to request %u: %s", req,
				      errno == EAGAIN ? "timed out" : strerror(errno));
		if (n == 0)
			return broken(vu, "back-end closed the connection "
				      "(waiting for the reply to request %u)", req);
		done += (size_t)n;
	}
	return 0;
}

/* The reply to req: header checked (version, reply bit, same request) and
 * a payload of exactly want bytes. */
static int recv_reply_fd(struct mb_vhost_user *vu, uint32_t req,
			 void *payload, uint32_t want, int *fd)
{
	struct hdr h;
	int rc = read_full(vu, &h, sizeof h, req, fd);
	if (rc)
		return rc;
	if ((h.flags & 3) != HDR_VERSION || !(h.flags & HDR_REPLY))
		return broken(vu, "reply to request %u: bad flags 0x%x", req,
			      h.flags);
	if (h.request != req)
		return broken(vu, "reply to request %u names request %u", req,
			      h.request);
	if (h.size != want)
		return broken(vu, "reply to request %u: %u bytes of payload, "
			      "expected %u", req, h.size, want);
	return read_full(vu, payload, want, req, fd);
}

static int recv_reply(struct mb_vhost_user *vu, uint32_t req, void *payload,
		      uint32_t want)
{
	return recv_reply_fd(vu, req, payload, want, NULL);
}

/* A request with a u64 reply (GET_FEATURES, ...). */
static int get_u64(struct mb_vhost_user *vu, uint32_t req, uint64_t *out)
{
	int rc = send_msg(vu, req, 0, NULL, 0, NULL, 0);
	return rc ? rc : recv_reply(vu, req, out, sizeof *out);
}

/* A request without a reply; with REPLY_ACK negotiated, wait for the ack
 * (sec. "REPLY_ACK": 0 is success). */
static int request(struct mb_vhost_user *vu, uint32_t req, const void *payload,
		   uint32_t size, const int *fds, unsigned nfds)
{
	bool ack = has_pf(vu, PF_REPLY_ACK);
	int rc = send_msg(vu, req, ack ? HDR_NEED_REPLY : 0, payload, size, fds,
			  nfds);
	if (rc || !ack)
		return rc;
	uint64_t v;
	if ((rc = recv_reply(vu, req, &v, sizeof v)))
		return rc;
	if (v)
		return broken(vu, "back-end refused request %u (0x%" PRIx64 ")",
			      req, v);
	return 0;
}

static int set_u64(struct mb_vhost_user *vu, uint32_t req, uint64_t v)
{
	return request(vu, req, &v, sizeof v, NULL, 0);
}

static int set_state(struct mb_vhost_user *vu, uint32_t req, uint32_t i,
		     uint32_t num)
{
	struct vring_state s = { i, num };
	return request(vu, req, &s, sizeof s, NULL, 0);
}

/* ---- connecting --------------------------------------------------------- */

static void on_socket(void *opaque, int fd);
static void on_backend_req(void *opaque, int fd);

/* "SET_BACKEND_REQ_FD": a socketpair whose other end the back-end writes
 * its own requests to; we serve them from the event loop. */
static int backend_channel(struct mb_vhost_user *vu)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return mb_seterr(-errno, "vhost-user: socketpair: %s", strerror(errno));
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	int rc = request(vu, SET_BACKEND_REQ_FD, NULL, 0, &sv[1], 1);
	close(sv[1]);
	if (rc) {
		close(sv[0]);
		return rc;
	}
	vu->req = sv[0];
	return 0;
}

static int dial(struct mb_vhost_user *vu)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return mb_seterr(-errno, "socket: %s", strerror(errno));
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	memcpy(a.sun_path, vu->path, sizeof a.sun_path);
	if (connect(s, (struct sockaddr *)&a, sizeof a)) {
		int err = errno;
		close(s);
		return mb_seterr(-err, "socket: %s: connect: %s", vu->path,
				 strerror(err));
	}
	return s;
}

static int fix_config(struct mb_vhost_user *vu, const char *tag);

/* GET_CONFIG into the copy the driver reads (with PF_CONFIG); once the
 * device is set up, moonbox's own values are put back on top (num_queues,
 * copy mode's limits: a reconnect or a config change must not undo them). */
static int get_config(struct mb_vhost_user *vu)
{
	if (!has_pf(vu, PF_CONFIG) || !vu->ops.config_size)
		return 0;
	struct config_msg c = { 0, vu->ops.config_size, 0, { 0 } };
	uint32_t len = 12 + vu->ops.config_size;
	int rc;
	if ((rc = send_msg(vu, GET_CONFIG, 0, &c, len, NULL, 0)) ||
	    (rc = recv_reply(vu, GET_CONFIG, &c, len)))
		return rc;
	if (c.offset != 0 || c.size != vu->ops.config_size)
		return broken(vu, "GET_CONFIG: reply for offset %u size %u, "
			      "asked 0 and %u", c.offset, c.size,
			      vu->ops.config_size);
	pthread_mutex_lock(&vu->cfg_lock);
	memcpy(vu->config, c.data, vu->ops.config_size);
	if (vu->ops.nqueues)
		fix_config(vu, NULL);
	pthread_mutex_unlock(&vu->cfg_lock);
	return 0;
}

/* A fresh connection: the handshake of "Starting and stopping rings"
 * before any ring exists. Fills the features, protocol features, queue
 * count and config; first tells whether a reconnected back-end still
 * offers what the driver was offered (same = must match). */
static int handshake(struct mb_vhost_user *vu, int s, bool same)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	vu->sock = s;
	vu->protocol = 0;
	vu->why[0] = 0;
	uint64_t f, pf = 0;
	int rc = get_u64(vu, GET_FEATURES, &f);
	if (rc)
		return rc;
	if (same && f != vu->be_features)
		return broken(vu, "the back-end came back with features 0x%" PRIx64
			      ", not 0x%" PRIx64, f, vu->be_features);
	if (!(f >> VIRTIO_F_VERSION_1 & 1))
		return broken(vu, "back-end features 0x%" PRIx64 " lack "
			      "VIRTIO_F_VERSION_1 (virtio-mmio v2 is modern only)", f);
	vu->be_features = f;
	if (f >> F_PROTOCOL_FEATURES & 1) {
		if ((rc = get_u64(vu, GET_PROTOCOL_FEATURES, &pf)))
			return rc;
		pf &= PF_WANTED;
		/* Not yet acked: REPLY_ACK applies from the next request. */
		if ((rc = send_msg(vu, SET_PROTOCOL_FEATURES, 0, &pf, sizeof pf,
				   NULL, 0)))
			return rc;
		vu->protocol = pf;
	}
	if ((rc = request(vu, SET_OWNER, NULL, 0, NULL, 0)))
		return rc;
	vu->be_queues = 1;
	if (has_pf(vu, PF_MQ)) {
		uint64_t n;
		if ((rc = get_u64(vu, GET_QUEUE_NUM, &n)))
			return rc;
		if (n < 1 || n > 0xffff)
			return broken(vu, "GET_QUEUE_NUM: %" PRIu64 " queues", n);
		vu->be_queues = (unsigned)n;
	}
	vu->nslots = 0;
	vu->max_slots = MAX_REGIONS;
	if (has_pf(vu, PF_CONFIGURE_MEM_SLOTS)) {
		/* "GET_MAX_MEM_SLOTS": how many ADD_MEM_REG regions it holds */
		uint64_t n;
		if ((rc = get_u64(vu, GET_MAX_MEM_SLOTS, &n)))
			return rc;
		if (n < 1)
			return broken(vu, "GET_MAX_MEM_SLOTS: %" PRIu64 " slots", n);
		vu->max_slots = n < MAX_SLOTS ? (unsigned)n : MAX_SLOTS;
	}
	if (has_pf(vu, PF_BACKEND_REQ) && (rc = backend_channel(vu)))
		return rc;
	if ((rc = get_config(vu)))
		return rc;
	if (same) { /* a reconnect: at attach, placement watches it */
		if ((rc = mb_machine_watch(vu->m, s, on_socket, vu)))
			return broken(vu, "%s", mb_errmsg());
		vu->watched = true;
		if (vu->req >= 0) {
			if ((rc = mb_machine_watch(vu->m, vu->req, on_backend_req, vu)))
				return broken(vu, "%s", mb_errmsg());
			vu->req_watched = true;
		}
	}
	return 0;
}

static void recover(struct mb_vhost_user *vu);

/* The connection went bad (vu->lock held, already dropped): true when the
 * guest must be told (DEVICE_NEEDS_RESET); in copy mode or with an
 * inflight region moonbox repairs it behind the guest's back instead
 * (not yet live: DRIVER_OK reconnects). */
static bool lost_backend(struct mb_vhost_user *vu)
{
	if ((!vu->copy && vu->inflight_fd < 0) || !vu->path[0])
		return true; /* nothing to repair with, or nowhere to dial */
	if (vu->live)
		recover(vu);
	return false;
}

/* Read exactly len bytes from the back-end's channel; descriptors are
 * closed and counted. 0, or -1 at EOF, error or timeout. */
static int chan_read(int fd, void *buf, size_t len, unsigned *nfds)
{
	for (size_t done = 0; done < len;) {
		union {
			char c[CMSG_SPACE(sizeof(int) * 16)];
			struct cmsghdr align;
		} u;
		struct iovec iov = { (char *)buf + done, len - done };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = u.c, .msg_controllen = sizeof u.c };
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0 || n == 0)
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
			     c = CMSG_NXTHDR(&mh, c)) {
				if (c->cmsg_level != SOL_SOCKET ||
				    c->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int f;
					memcpy(&f, CMSG_DATA(c) + i * sizeof f, sizeof f);
					close(f);
				}
				*nfds += (unsigned)k;
			}
		if (mh.msg_flags & MSG_CTRUNC)
			*nfds += 1;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* One message from the back-end (vu->lock held). Served: CONFIG_CHANGE_MSG
 * (with PF_CONFIG): the config is fetched again and *changed set. Anything
 * else is refused, with a non-zero reply when the back-end asks for one
 * ("REPLY_ACK"). A malformed message breaks the connection (-EPROTO); the
 * channel closing quietly is no error (it just ends). */
static int serve_backend(struct mb_vhost_user *vu, bool *changed)
{
	struct hdr h;
	unsigned nfds = 0;
	uint8_t junk[MAX_PAYLOAD];
	if (chan_read(vu->req, &h, sizeof h, &nfds)) {
		if (vu->req_watched)
			mb_machine_unwatch(vu->m, vu->req);
		close(vu->req);
		vu->req = -1, vu->req_watched = false;
		return 0;
	}
	if ((h.flags & 3) != HDR_VERSION || (h.flags & HDR_REPLY) ||
	    h.size > MAX_PAYLOAD)
		return broken(vu, "back-end request %u: flags 0x%x, %u bytes of "
			      "payload", h.request, h.flags, h.size);
	if (chan_read(vu->req, junk, h.size, &nfds))
		return broken(vu, "back-end request %u: payload cut short",
			      h.request);
	vu->backend_msgs++;
	bool ok = h.request == BACKEND_CONFIG_CHANGE_MSG && !h.size && !nfds &&
		  has_pf(vu, PF_CONFIG);
	if (!ok)
		vu->refused++;
	if (h.flags & HDR_NEED_REPLY) { /* answer first: it may wait on it */
		struct { struct hdr h; uint64_t v; } __attribute__((packed)) r = {
			{ h.request, HDR_VERSION | HDR_REPLY, 8 }, ok ? 0 : 1 };
		if (send(vu->req, &r, sizeof r, MSG_NOSIGNAL) != (ssize_t)sizeof r)
			return broken(vu, "back-end request %u: reply: %s", h.request,
				      strerror(errno));
	}
	if (!ok)
		return 0;
	int rc = get_config(vu);
	if (!rc) {
		vu->config_changes++;
		*changed = true;
	}
	return rc;
}

static void on_backend_req(void *opaque, int fd)
{
	struct mb_vhost_user *vu = opaque;
	bool changed = false, fail = false;
	pthread_mutex_lock(&vu->lock);
	if (vu->req == fd && vu->req >= 0 && serve_backend(vu, &changed))
		fail = lost_backend(vu);
	pthread_mutex_unlock(&vu->lock);
	if (changed && vu->t) /* sec. 4.2.2: generation and interrupt */
		mb_virtio_config_change(vu->t);
	if (fail && vu->t) {
		char why[200];
		snprintf(why, sizeof why, "vhost-user: %s", vu->why);
		mb_virtio_fail(vu->t, why);
	}
}

/* Back-ends talk only when asked: anything readable while nobody waits
 * for a reply is the end of the connection (or a message we never
 * negotiated, BACKEND_REQ goes through its own channel). */
static void on_socket(void *opaque, int fd)
{
	struct mb_vhost_user *vu = opaque;
	bool lost = false;
	pthread_mutex_lock(&vu->lock);
	if (vu->sock == fd) {
		char c;
		ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			snprintf(vu->why, sizeof vu->why,
				 "back-end closed the connection");
			lost = true;
		} else if (n > 0) {
			snprintf(vu->why, sizeof vu->why, "back-end sent a message "
				 "nobody asked for");
			lost = true;
		}
		if (lost)
			drop(vu);
	}
	if (lost)
		lost = lost_backend(vu);
	pthread_mutex_unlock(&vu->lock);
	if (lost) {
		char why[200];
		snprintf(why, sizeof why, "vhost-user: %s", vu->why);
		mb_virtio_fail(vu->t, why);
	}
}

/* ---- spawned back-ends ---------------------------------------------------- */

static void end_child(struct mb_vhost_user *vu)
{
	if (vu->pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, vu->pidfd, SIGKILL, NULL, 0);
		close(vu->pidfd);
	}
	if (vu->child && vu->m) {
		int st;
		mb_launch_status(vu->m, vu->child, &st); /* forget it */
	}
	vu->pidfd = -1;
	vu->child = 0;
}

/* Has the child exited? (its pidfd turns readable) */
static bool child_gone(struct mb_vhost_user *vu)
{
	struct pollfd p = { vu->pidfd, POLLIN, 0 };
	return vu->pidfd < 0 || poll(&p, 1, 0) != 0;
}

static bool wants_path(const char *arg)
{
	return strstr(arg, "{socket}") != NULL;
}

/* arg with every "{socket}" replaced by the socket's path (malloc'd). */
static char *expand(const char *arg, const char *path)
{
	size_t n = strlen(arg) + 1;
	for (const char *p = arg; (p = strstr(p, "{socket}")); p += 8)
		n += strlen(path);
	char *out = malloc(n), *o = out;
	if (!out)
		return NULL;
	for (const char *p = arg; *p;) {
		if (!strncmp(p, "{socket}", 8)) {
			o = stpcpy(o, path);
			p += 8;
		} else {
			*o++ = *p++;
		}
	}
	*o = 0;
	return out;
}

/* Start the back-end and connect to it: a fresh socket in our private
 * directory, bound (not listening) and passed as fd 3 unless the argv
 * names {socket}; then dial until it listens (5 s), or until it dies. */
static int spawn(struct mb_vhost_user *vu)
{
	end_child(vu);
	unlink(vu->path);
	bool by_path = !vu->dir[0]; /* the caller's socket: the program makes it */
	for (char **a = vu->argv; *a; a++)
		by_path |= wants_path(*a);
	int bound = -1, rc;
	if (!by_path) {
		bound = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		memcpy(a.sun_path, vu->path, sizeof a.sun_path);
		if (bound < 0 || bind(bound, (struct sockaddr *)&a, sizeof a)) {
			rc = mb_seterr(-errno, "spawn: socket %s: %s", vu->path,
				       strerror(errno));
			if (bound >= 0)
				close(bound);
			return rc;
		}
	}
	const char *argv[MB_LAUNCH_MAX_ARGS + 1] = { 0 };
	char *owned[MB_LAUNCH_MAX_ARGS] = { 0 };
	for (unsigned i = 0; vu->argv[i]; i++) {
		argv[i] = vu->argv[i];
		if (wants_path(argv[i]) && !(argv[i] = owned[i] = expand(argv[i], vu->path))) {
			rc = mb_seterr(-ENOMEM, "spawn: out of memory");
			goto out;
		}
	}
	struct mb_launch l = { .argv = argv, .fds = &bound, .nfds = bound >= 0 ? 1 : 0,
			       .flags = vu->launch_flags,
			       .ro = (const char *const *)vu->sb_ro,
			       .rw = (const char *const *)vu->sb_rw,
			       .report = &vu->report };
	rc = mb_launch(vu->m, &l, &vu->child, &vu->pidfd);
	if (rc) {
		char why[200];
		snprintf(why, sizeof why, "%s", mb_errmsg());
		vu->child = 0, vu->pidfd = -1;
		rc = mb_seterr(rc, "spawn: %s: %s", argv[0], why);
		goto out;
	}
	vu->spawns++;
	rc = -ETIMEDOUT;
	for (int tries = 0; tries < 500; tries++) { /* 10 ms apart */
		int s = dial(vu);
		if (s >= 0) {
			rc = s;
			break;
		}
		if (child_gone(vu)) {
			int st = 0;
			mb_launch_status(vu->m, vu->child, &st);
			vu->child = 0; /* reported: end_child must not ask again */
			rc = mb_seterr(-ECHILD, "spawn: %s exited (wait status 0x%x) "
				       "before it listened", argv[0], st);
			break;
		}
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	if (rc == -ETIMEDOUT)
		mb_seterr(rc, "spawn: %s did not listen on %s within 5 s", argv[0],
			  vu->path);
	if (rc < 0)
		end_child(vu);
out:
	if (bound >= 0)
		close(bound);
	for (unsigned i = 0; i < MB_LAUNCH_MAX_ARGS; i++)
		free(owned[i]);
	return rc;
}

static void reconnect_now(void *arg)
{
	struct mb_vhost_user *vu = arg;
	int s = vu->argv ? spawn(vu) : dial(vu);
	if (s < 0)
		return;
	if (handshake(vu, s, true) == 0)
		vu->reconnects++;
}

/* After a crash: dial the socket again, or start the back-end again (the
 * driver is resetting). Dialling and spawning name a path, which no
 * seccomp list of moonbox's threads allows (docs/sandbox.md): a filtered
 * thread (the event loop's retry timer, a vCPU's reset) has the script's
 * thread do it and waits, holding vu->lock for it meanwhile. */
static void reconnect(struct mb_vhost_user *vu)
{
	if (vu->sock >= 0 || !vu->path[0])
		return;
	if (mb_seccomp_filtered())
		mb_machine_call_main(vu->m, reconnect_now, vu);
	else
		reconnect_now(vu);
}

/* ---- the rings ---------------------------------------------------------- */

/* With CONFIGURE_MEM_SLOTS the table goes region by region ("Memory
 * region description", ADD_MEM_REG / REM_MEM_REG): regions this
 * connection has that are no longer wanted are removed, missing ones
 * added, so a restart of the rings on the same connection sends nothing. */
static int mem_slots(struct mb_vhost_user *vu, const struct mem_region *want,
		     const int *fds, unsigned n)
{
	int rc;
	for (unsigned i = 0; i < vu->nslots;) {
		bool keep = false;
		for (unsigned j = 0; j < n; j++)
			keep |= !memcmp(&want[j], &vu->slot_reg[i], sizeof *want);
		if (keep) {
			i++;
			continue;
		}
		/* The spec identifies the region by its addresses and size;
		 * libvhost-user (QEMU 7.2) also wants its fd, as QEMU sends. */
		struct mem_reg_msg r = { 0, vu->slot_reg[i] };
		if ((rc = request(vu, REM_MEM_REG, &r, sizeof r, &vu->slot_fd[i], 1)))
			return rc;
		vu->nslots--;
		vu->slot_reg[i] = vu->slot_reg[vu->nslots];
		vu->slot_fd[i] = vu->slot_fd[vu->nslots];
	}
	for (unsigned j = 0; j < n; j++) {
		bool have = false;
		for (unsigned i = 0; i < vu->nslots; i++)
			have |= !memcmp(&want[j], &vu->slot_reg[i], sizeof *want);
		if (have)
			continue;
		if (vu->nslots == vu->max_slots)
			return mb_seterr(-E2BIG, "vhost-user: more than %u RAM "
					 "regions (GET_MAX_MEM_SLOTS)", vu->max_slots);
		struct mem_reg_msg r = { 0, want[j] };
		if ((rc = request(vu, ADD_MEM_REG, &r, sizeof r, &fds[j], 1)))
			return rc;
		vu->slot_fd[vu->nslots] = fds[j];
		vu->slot_reg[vu->nslots++] = want[j];
	}
	return 0;
}

/* The back-end addresses guest RAM by our virtual addresses (the memory
 * table's userspace_addr): every region moonbox backs with a memfd. */
static int mem_table(struct mb_vhost_user *vu)
{
	struct mb_mem *mem = vu->mem;
	struct mem_table tab = { 0 };
	struct mem_region reg[MAX_SLOTS];
	int fds[MAX_SLOTS];
	unsigned n = 0;
	bool slots = has_pf(vu, PF_CONFIGURE_MEM_SLOTS);
	unsigned cap = slots ? vu->max_slots : MAX_REGIONS;
	if (vu->copy) { /* only the bounce memory: guest RAM stays ours */
		reg[0] = (struct mem_region){ 0, vu->bounce_size,
					      (uint64_t)(uintptr_t)vu->bounce, 0 };
		fds[0] = vu->bounce_fd;
		n = 1;
	}
	for (size_t i = 0; i < mb_mem_count(mem) && !vu->copy; i++) {
		int fd = mb_mem_region_fd(mem, i);
		if (fd < 0)
			continue; /* a mapping of the caller's: not shareable */
		if (n == cap)
			return mb_seterr(-E2BIG, "vhost-user: more than %u RAM "
					 "regions", cap);
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		reg[n] = (struct mem_region){ r->base, r->size,
					      (uint64_t)(uintptr_t)r->host, 0 };
		fds[n++] = fd;
	}
	if (!n)
		return mb_seterr(-ENOTSUP, "vhost-user: no guest RAM can be "
				 "shared (no memfd-backed region)");
	if (slots)
		return mem_slots(vu, reg, fds, n);
	tab.nregions = n;
	memcpy(tab.r, reg, n * sizeof *reg);
	return request(vu, SET_MEM_TABLE, &tab,
		       8 + n * (uint32_t)sizeof(struct mem_region), fds, n);
}

/* Is [p, p+len) inside a region the back-end maps? */
static bool shared(struct mb_vhost_user *vu, const void *p, size_t len)
{
	struct mb_mem *mem = vu->mem;
	uintptr_t a = (uintptr_t)p;
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		uintptr_t h = (uintptr_t)r->host;
		if (mb_mem_region_fd(mem, i) >= 0 && a >= h && a - h + len <= r->size)
			return true;
	}
	return false;
}

/* Where the back-end takes up the ring: after a crash, at the used
 * index (everything not completed is taken again; with an inflight
 * region the back-end corrects that itself, "Inflight I/O tracking"). */
static uint16_t resume_base(struct mb_vhost_user *vu, struct mb_vq *q)
{
	if (!vu->resume)
		return q->last_avail;
	return __atomic_load_n((uint16_t *)q->used + 1, __ATOMIC_ACQUIRE);
}

static int start_queue(struct mb_vhost_user *vu, unsigned i)
{
	struct mb_vq *q = mb_virtio_queue(vu->t, i);
	unsigned n = q->num;
	if (!shared(vu, q->desc, 16u * n) || !shared(vu, q->avail, 6 + 2u * n) ||
	    !shared(vu, q->used, 6 + 8u * n))
		return mb_seterr(-EINVAL, "vhost-user: queue %u: rings outside "
				 "the RAM shared with the back-end", i);
	int kick = mb_virtio_doorbell_take(vu->t, i);
	if (kick < 0) { /* no event loop: vu_notify signals our own eventfd */
		if (vu->kick[i] < 0 &&
		    (vu->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
			return mb_seterr(-errno, "vhost-user: eventfd: %s",
					 strerror(errno));
		kick = vu->kick[i];
	}
	struct vring_addr a = { i, 0, (uint64_t)(uintptr_t)q->desc,
				(uint64_t)(uintptr_t)q->used,
				(uint64_t)(uintptr_t)q->avail, 0 };
	int rc;
	/* Order of "Starting and stopping rings"; CALL before KICK so that a
	 * kick already pending when the ring starts cannot complete unseen. */
	if ((rc = set_state(vu, SET_VRING_NUM, i, n)) ||
	    (rc = request(vu, SET_VRING_ADDR, &a, sizeof a, NULL, 0)) ||
	    (rc = set_state(vu, SET_VRING_BASE, i, resume_base(vu, q))))
		return rc;
	uint64_t idx = i;
	if ((rc = request(vu, SET_VRING_CALL, &idx, sizeof idx, &vu->call[i], 1)) ||
	    (rc = request(vu, SET_VRING_KICK, &idx, sizeof idx, &kick, 1)))
		return rc;
	vu->started[i] = true;
	/* With PROTOCOL_FEATURES rings start disabled ("Ring states"). */
	if (vu->be_features >> F_PROTOCOL_FEATURES & 1)
		rc = set_state(vu, SET_VRING_ENABLE, i, 1);
	uint64_t one = 1;
	if (!rc && vu->resume && write(kick, &one, 8) != 8) {
		/* re-kick after a crash; a full counter is a kick pending */
	}
	return rc;
}

static int start_shadow(struct mb_vhost_user *vu, unsigned i);

/* ---- inflight tracking ("Inflight I/O tracking") -------------------------
 *
 * A back-end that offers INFLIGHT_SHMFD keeps, in shared memory it
 * allocates, which descriptors it has taken from the avail ring and not
 * yet put in the used ring. moonbox asks for that memory once
 * (GET_INFLIGHT_FD) and keeps the fd; after a crash the restarted
 * back-end gets the same memory (SET_INFLIGHT_FD) and resubmits what was
 * in flight, so in shared mode too a crash need not reach the guest.
 */

static void inflight_free(struct mb_vhost_user *vu)
{
	if (vu->inflight_map)
		munmap((void *)vu->inflight_map, vu->inflight.mmap_size);
	if (vu->inflight_fd >= 0)
		close(vu->inflight_fd);
	vu->inflight_map = NULL;
	vu->inflight_fd = -1;
}

/* How many descriptors the region marks in flight (the split layout of
 * the spec: per queue u64 features, u16 version, desc_num,
 * last_batch_head, used_idx, then desc_num 16-byte DescStateSplit whose
 * first byte is `inflight`). Only a report: a region that does not look
 * like that counts 0. */
static unsigned inflight_count(struct mb_vhost_user *vu)
{
	const struct inflight_msg *in = &vu->inflight;
	if (!vu->inflight_map || !in->num_queues)
		return 0;
	uint64_t stride = in->mmap_size / in->num_queues;
	unsigned n = 0;
	for (unsigned q = 0; q < in->num_queues; q++) {
		const uint8_t *r = vu->inflight_map + q * stride;
		uint16_t version = (uint16_t)mb_io_get(r + 8, 2);
		uint16_t num = (uint16_t)mb_io_get(r + 10, 2);
		if (version != 1 || num > in->queue_size || 16 + 16ull * num > stride)
			continue;
		for (unsigned d = 0; d < num; d++)
			n += r[16 + 16 * d] == 1;
	}
	return n;
}

/* GET_INFLIGHT_FD (first start after a reset), then SET_INFLIGHT_FD. The
 * reply is hostile: its sizes must be what we asked for and fit the fd. */
static int inflight_set(struct mb_vhost_user *vu)
{
	if (!has_pf(vu, PF_INFLIGHT_SHMFD) || vu->copy)
		return 0;
	int rc;
	if (vu->inflight_fd < 0) {
		struct inflight_msg in = { 0, 0, (uint16_t)vu->ops.nqueues,
					   vu->ops.queue_max, 0 };
		int fd = -1;
		if ((rc = send_msg(vu, GET_INFLIGHT_FD, 0, &in, sizeof in, NULL, 0)) ||
		    (rc = recv_reply_fd(vu, GET_INFLIGHT_FD, &in, sizeof in, &fd))) {
			if (fd >= 0)
				close(fd);
			return rc;
		}
		struct stat sb;
		if (fd < 0)
			return broken(vu, "GET_INFLIGHT_FD: reply without a file "
				      "descriptor");
		if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || !in.mmap_size ||
		    in.mmap_size > MAX_INFLIGHT || in.mmap_offset > MAX_INFLIGHT ||
		    in.mmap_offset + in.mmap_size > (uint64_t)sb.st_size ||
		    in.num_queues != vu->ops.nqueues ||
		    in.queue_size != vu->ops.queue_max) {
			close(fd);
			return broken(vu, "GET_INFLIGHT_FD: region of %" PRIu64
				      " bytes at %" PRIu64 " for %u queues of %u, "
				      "not a fitting file", in.mmap_size,
				      in.mmap_offset, in.num_queues, in.queue_size);
		}
		vu->inflight = in;
		vu->inflight_fd = fd;
		/* Mapped for the report only, and only when the back-end
		 * cannot shrink it under us (a SIGBUS in the VMM). */
		int seals = fcntl(fd, F_GET_SEALS);
		if (seals >= 0 && (seals & F_SEAL_SHRINK) && !(in.mmap_offset & 4095)) {
			void *p = mmap(NULL, in.mmap_size, PROT_READ, MAP_SHARED, fd,
				       (off_t)in.mmap_offset);
			if (p != MAP_FAILED)
				vu->inflight_map = p;
		}
	}
	return request(vu, SET_INFLIGHT_FD, &vu->inflight, sizeof vu->inflight,
		       &vu->inflight_fd, 1);
}

static int start(struct mb_vhost_user *vu)
{
	uint64_t f = mb_virtio_features(vu->t) |
		     (vu->be_features & (1ull << F_PROTOCOL_FEATURES));
	if (vu->copy) /* the shadow rings are plain split rings */
		f &= ~((1ull << 28) | (1ull << 29));
	int rc;
	if ((rc = set_u64(vu, SET_FEATURES, f)) || (rc = inflight_set(vu)) ||
	    (rc = mem_table(vu)))
		return rc;
	for (unsigned i = 0; i < vu->ops.nqueues; i++) {
		struct mb_vq *q = mb_virtio_queue(vu->t, i);
		if (q->ready &&
		    (rc = vu->copy ? start_shadow(vu, i) : start_queue(vu, i)))
			return rc;
	}
	vu->running = true;
	return 0;
}

/* GET_VRING_BASE stops a ring; the reply names it and its next index. */
static int stop(struct mb_vhost_user *vu)
{
	int rc = 0;
	for (unsigned i = 0; i < vu->ops.nqueues && !rc; i++) {
		if (!vu->started[i])
			continue;
		struct vring_state s = { i, 0 };
		if ((rc = send_msg(vu, GET_VRING_BASE, 0, &s, sizeof s, NULL, 0)) ||
		    (rc = recv_reply(vu, GET_VRING_BASE, &s, sizeof s)))
			break;
		if (s.index != i)
			rc = broken(vu, "GET_VRING_BASE %u: reply for ring %u", i,
				    s.index);
		vu->started[i] = false;
	}
	if (!rc && has_pf(vu, PF_RESET_DEVICE))
		rc = request(vu, RESET_DEVICE, NULL, 0, NULL, 0);
	if (!rc && has_pf(vu, PF_STATUS))
		rc = set_u64(vu, SET_STATUS, 0);
	vu->running = false;
	return rc;
}


/* ---- copy mode: shadow virtqueues -------------------------------------------
 *
 * The back-end maps only a bounce memfd. moonbox pops the guest's chains
 * itself (mb_vq_pop), copies what the device reads into a slot of the
 * bounce memory, posts a two-descriptor chain (readable part, writable
 * part) on a shadow split ring there, and kicks; when the back-end calls,
 * it copies the writable part back into the guest's buffers and completes
 * the guest chain. Every request the back-end has not answered is still
 * in a slot, so after a crash moonbox starts the back-end again (or dials
 * again), gives it fresh shadow rings and posts every busy slot again: the
 * guest sees a slower request, never an error. Requests must be
 * idempotent for that (blk reads and writes are; a back-end that had
 * written half a request writes it again whole).
 */

#define SH_SLOTS 32u            /* requests in flight per queue */
#define SH_NUM (2 * SH_SLOTS)   /* shadow ring size: two descriptors a slot */
#define SH_SLOT_BYTES 0x21000u  /* 132 KiB: a blk request of 32 x 4 KiB */
#define SH_RINGS 0x1000u        /* desc at 0, avail at 0x400, used at 0x800 */
#define SH_AREA (SH_RINGS + SH_SLOTS * SH_SLOT_BYTES)

struct slot {
	struct mb_vq_chain c;
	uint32_t out, in; /* bytes readable, writable */
};

struct shadow {
	uint8_t *base;  /* this queue's area in the bounce memory */
	uint64_t gpa;   /* its address in the back-end's memory table */
	uint16_t avail_idx, used_seen;
	uint32_t busy;  /* slots holding a guest request */
	struct slot slot[SH_SLOTS];
};

struct sh_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

static int bounce_new(struct mb_vhost_user *vu)
{
	vu->bounce_size = (size_t)vu->ops.nqueues * SH_AREA;
	vu->bounce_fd = memfd_create("moonbox-vhost-bounce", MFD_CLOEXEC |
				     MFD_ALLOW_SEALING);
	if (vu->bounce_fd < 0 || ftruncate(vu->bounce_fd, (off_t)vu->bounce_size))
		return mb_seterr(-errno, "dma: bounce memory: %s", strerror(errno));
	fcntl(vu->bounce_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	vu->bounce = mmap(NULL, vu->bounce_size, PROT_READ | PROT_WRITE,
			  MAP_SHARED, vu->bounce_fd, 0);
	if (vu->bounce == MAP_FAILED) {
		vu->bounce = NULL;
		return mb_seterr(-errno, "dma: bounce memory: %s", strerror(errno));
	}
	vu->sh = calloc(vu->ops.nqueues, sizeof *vu->sh);
	if (!vu->sh)
		return mb_seterr(-ENOMEM, "dma: out of memory");
	for (unsigned i = 0; i < vu->ops.nqueues; i++) {
		vu->sh[i].base = vu->bounce + (size_t)i * SH_AREA;
		vu->sh[i].gpa = (uint64_t)i * SH_AREA;
	}
	return 0;
}

static uint8_t *slot_buf(struct shadow *sh, unsigned s)
{
	return sh->base + SH_RINGS + (size_t)s * SH_SLOT_BYTES;
}

/* Post slot s on the shadow ring (copy_lock held). */
static void post(struct shadow *sh, unsigned s)
{
	struct slot *sl = &sh->slot[s];
	struct sh_desc *d = (struct sh_desc *)sh->base;
	uint64_t buf = sh->gpa + SH_RINGS + (uint64_t)s * SH_SLOT_BYTES;
	unsigned head = 2 * s;
	if (sl->out && sl->in) {
		d[head] = (struct sh_desc){ buf, sl->out, 1, (uint16_t)(head + 1) };
		d[head + 1] = (struct sh_desc){ buf + sl->out, sl->in, 2, 0 };
	} else {
		d[head] = (struct sh_desc){ buf, sl->out ? sl->out : sl->in,
					    sl->out ? 0 : 2, 0 };
	}
	uint16_t *avail = (uint16_t *)(sh->base + 0x400);
	avail[2 + sh->avail_idx % SH_NUM] = (uint16_t)head;
	sh->avail_idx++;
	__atomic_store_n(&avail[1], sh->avail_idx, __ATOMIC_RELEASE);
}

static void shadow_kick(struct mb_vhost_user *vu, unsigned qi)
{
	uint64_t one = 1;
	if (vu->kick[qi] >= 0 && write(vu->kick[qi], &one, 8) != 8) {
		/* a full counter: kicks are pending anyway */
	}
}

/* Fresh shadow rings for queue i on a (re)started back-end, then every
 * request still held posted again (vu->lock held). */
static int start_shadow(struct mb_vhost_user *vu, unsigned i)
{
	struct shadow *sh = &vu->sh[i];
	if (vu->kick[i] < 0 &&
	    (vu->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return mb_seterr(-errno, "vhost-user: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&vu->copy_lock);
	memset(sh->base, 0, SH_RINGS);
	sh->avail_idx = sh->used_seen = 0;
	unsigned again = 0;
	for (unsigned s = 0; s < SH_SLOTS; s++)
		if (sh->busy >> s & 1)
			post(sh, s), again++;
	pthread_mutex_unlock(&vu->copy_lock);
	vu->resubmitted += again;
	struct vring_addr a = { i, 0, (uint64_t)(uintptr_t)sh->base,
				(uint64_t)(uintptr_t)(sh->base + 0x800),
				(uint64_t)(uintptr_t)(sh->base + 0x400), 0 };
	uint64_t idx = i;
	int rc;
	if ((rc = set_state(vu, SET_VRING_NUM, i, SH_NUM)) ||
	    (rc = request(vu, SET_VRING_ADDR, &a, sizeof a, NULL, 0)) ||
	    (rc = set_state(vu, SET_VRING_BASE, i, 0)) ||
	    (rc = request(vu, SET_VRING_CALL, &idx, sizeof idx, &vu->call[i], 1)) ||
	    (rc = request(vu, SET_VRING_KICK, &idx, sizeof idx, &vu->kick[i], 1)))
		return rc;
	vu->started[i] = true;
	if (vu->be_features >> F_PROTOCOL_FEATURES & 1)
		rc = set_state(vu, SET_VRING_ENABLE, i, 1);
	shadow_kick(vu, i);
	return rc;
}

/* The guest kicked (transport lock held): move chains into free slots. */
static void pump(struct mb_vhost_user *vu, struct mb_virtio *t, unsigned qi)
{
	struct shadow *sh = &vu->sh[qi];
	struct mb_vq *q = mb_virtio_queue(t, qi);
	bool posted = false;
	char why[120] = "";
	pthread_mutex_lock(&vu->copy_lock);
	for (;;) {
		int rc = 0;
		while (sh->busy != (uint32_t)((1ull << SH_SLOTS) - 1)) {
			unsigned s = (unsigned)__builtin_ctz(~sh->busy);
			struct slot *sl = &sh->slot[s];
			if ((rc = mb_vq_pop(q, &sl->c)) <= 0)
				break;
			if (sl->c.out_len + sl->c.in_len > SH_SLOT_BYTES) {
				snprintf(why, sizeof why, "dma copy: a request of %llu "
					 "bytes, more than a slot (%u)",
					 (unsigned long long)(sl->c.out_len + sl->c.in_len),
					 SH_SLOT_BYTES);
				rc = -1;
				break;
			}
			sl->out = (uint32_t)sl->c.out_len;
			sl->in = (uint32_t)sl->c.in_len;
			mb_iov_to_buf(sl->c.iov, sl->c.nout, 0, slot_buf(sh, s), sl->out);
			sh->busy |= 1u << s;
			post(sh, s);
			posted = true;
		}
		if (rc < 0 || sh->busy == (uint32_t)((1ull << SH_SLOTS) - 1) ||
		    !mb_vq_arm(q))
			break;
	}
	pthread_mutex_unlock(&vu->copy_lock);
	if (why[0])
		mb_virtio_needs_reset(t, why);
	if (posted)
		shadow_kick(vu, qi);
}

/* The back-end called: copy answers back, complete the guest's chains.
 * Returns a bit per queue that freed slots (to pump again). */
static unsigned collect(struct mb_vhost_user *vu, char *why, size_t len)
{
	unsigned freed = 0;
	pthread_mutex_lock(&vu->copy_lock);
	for (unsigned qi = 0; qi < vu->ops.nqueues && !why[0]; qi++) {
		struct shadow *sh = &vu->sh[qi];
		struct mb_vq *q = mb_virtio_queue(vu->t, qi);
		uint8_t *used = sh->base + 0x800;
		uint16_t idx = __atomic_load_n((uint16_t *)(used + 2), __ATOMIC_ACQUIRE);
		if ((uint16_t)(idx - sh->used_seen) > SH_NUM) {
			snprintf(why, len, "dma copy: queue %u: used index %u jumped "
				 "from %u", qi, idx, sh->used_seen);
			break;
		}
		while (sh->used_seen != idx) {
			uint32_t e[2];
			memcpy(e, used + 4 + 8 * (sh->used_seen % SH_NUM), 8);
			unsigned s = e[0] / 2;
			if (e[0] >= SH_NUM || (e[0] & 1) || !(sh->busy >> s & 1)) {
				snprintf(why, len, "dma copy: queue %u: used id %u is "
					 "no request in flight", qi, e[0]);
				break;
			}
			struct slot *sl = &sh->slot[s];
			uint32_t n = e[1] < sl->in ? e[1] : sl->in;
			mb_iov_from_buf(sl->c.iov + sl->c.nout, sl->c.nin, 0,
					slot_buf(sh, s) + sl->out, n);
			mb_virtio_complete(vu->t, q, sl->c.head, n);
			sh->busy &= ~(1u << s);
			sh->used_seen++;
			freed |= 1u << qi;
		}
	}
	pthread_mutex_unlock(&vu->copy_lock);
	return freed;
}

static void retry_cb(void *opaque)
{
	struct mb_vhost_user *vu = opaque;
	pthread_mutex_lock(&vu->lock);
	if (vu->sock < 0 && vu->live)
		recover(vu);
	pthread_mutex_unlock(&vu->lock);
}

/* Connection lost while the driver is live (vu->lock held): reconnect or
 * start the back-end again and hand it every held request; if that fails,
 * try again in 100 ms. */
static void recover(struct mb_vhost_user *vu)
{
	drop(vu);
	reconnect(vu);
	if (vu->sock >= 0) {
		/* shared mode: the guest's own rings, taken up where they are */
		unsigned held = vu->copy ? 0 : inflight_count(vu);
		vu->resume = !vu->copy;
		int rc = start(vu);
		vu->resume = false;
		if (!rc) {
			vu->resubmitted += held;
			return;
		}
	}
	drop(vu);
	if (vu->retry) {
		const struct mb_clock *c = mb_machine_clock(vu->m);
		c->timer_mod(vu->retry, c->now(c) + 100000000ull);
	}
}

/* ---- transport callbacks (transport lock held) ---------------------------- */

static void vu_status(void *dev, struct mb_virtio *t, uint32_t old,
		      uint32_t status)
{
	struct mb_vhost_user *vu = dev;
	int rc = 0;
	pthread_mutex_lock(&vu->lock);
	if (has_pf(vu, PF_STATUS) && vu->sock >= 0)
		rc = set_u64(vu, SET_STATUS, status);
	if (!rc && (status & ~old & VIRTIO_STATUS_DRIVER_OK) && !vu->running) {
		vu->live = true;
		rc = start(vu);
		if (rc && vu->copy) { /* requests wait in the guest's ring */
			recover(vu);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&vu->lock);
	if (rc)
		mb_virtio_needs_reset(t, mb_errmsg());
}

static void vu_reset(void *dev)
{
	struct mb_vhost_user *vu = dev;
	pthread_mutex_lock(&vu->lock);
	if (vu->sock >= 0 && (vu->running || has_pf(vu, PF_STATUS)))
		stop(vu); /* a failure drops the connection: dialled below */
	memset(vu->started, 0, sizeof vu->started);
	vu->running = false;
	vu->live = false;
	inflight_free(vu); /* the driver forgot its requests: so do we */
	if (vu->copy) {
		pthread_mutex_lock(&vu->copy_lock);
		for (unsigned i = 0; i < vu->ops.nqueues; i++)
			vu->sh[i].busy = 0;
		pthread_mutex_unlock(&vu->copy_lock);
	}
	reconnect(vu);
	pthread_mutex_unlock(&vu->lock);
}

/* A doorbell the transport served itself (it has no event loop, or the
 * kick came before DRIVER_OK handed its eventfd over): pass it on. */
static void vu_notify(void *dev, struct mb_virtio *t, unsigned qi)
{
	struct mb_vhost_user *vu = dev;
	if (vu->copy) {
		pump(vu, t, qi);
		return;
	}
	uint64_t one = 1;
	if (qi < MB_VIRTIO_MAX_QUEUES && vu->kick[qi] >= 0 &&
	    write(vu->kick[qi], &one, 8) != 8) {
		/* the counter is full: the back-end has kicks pending anyway */
	}
}

static void vu_config_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_vhost_user *vu = dev;
	pthread_mutex_lock(&vu->cfg_lock);
	memcpy(data, vu->config + off, size); /* off + size checked by mmio.c */
	pthread_mutex_unlock(&vu->cfg_lock);
}

static void vu_config_write(void *dev, uint64_t off, const void *data,
			    unsigned size)
{
	struct mb_vhost_user *vu = dev;
	pthread_mutex_lock(&vu->cfg_lock);
	memcpy(vu->config + off, data, size);
	pthread_mutex_unlock(&vu->cfg_lock);
	pthread_mutex_lock(&vu->lock);
	int rc = 0;
	if (has_pf(vu, PF_CONFIG) && vu->sock >= 0) {
		struct config_msg c = { (uint32_t)off, size, 0, { 0 } };
		memcpy(c.data, data, size);
		rc = request(vu, SET_CONFIG, &c, 12 + size, NULL, 0);
	}
	pthread_mutex_unlock(&vu->lock);
	if (rc)
		mb_virtio_needs_reset(vu->t, mb_errmsg());
}

/* ---- interrupts --------------------------------------------------------- */

static void on_call(void *opaque, int fd)
{
	struct mb_vhost_user *vu = opaque;
	uint64_t n;
	if (read(fd, &n, 8) != 8)
		return;
	vu->calls++;
	if (!vu->copy) {
		mb_virtio_interrupt(vu->t);
		return;
	}
	char why[160] = "";
	unsigned freed = collect(vu, why, sizeof why);
	if (why[0])
		mb_virtio_fail(vu->t, why);
	for (unsigned qi = 0; qi < vu->ops.nqueues; qi++)
		if (freed >> qi & 1) /* more may wait in the guest's ring */
			mb_virtio_kick(vu->t, qi);
}

/* ---- state, placement, life cycle --------------------------------------- */

MB_STATE_DESC(mb_vhost_user_state, MB_VHOST_USER_STATE, 1);

static void m_save(void *dev, struct mb_virtio *t, void *p)
{
	struct mb_vhost_user *vu = dev;
	struct mb_vhost_user_state *st = p;
	struct mb_virtio_mmio_state tss, *ts = &tss;
	memset(st, 0, sizeof *st);
	mb_virtio_save(t, ts, st->queues);
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
	pthread_mutex_lock(&vu->lock);
	st->device_id = vu->ops.device_id;
	st->backend_features = vu->be_features;
	st->protocol_features = vu->protocol;
	st->connected = vu->sock >= 0;
	st->running = vu->running;
	st->messages = vu->messages;
	st->calls = vu->calls;
	st->disconnects = vu->disconnects;
	st->reconnects = vu->reconnects;
	st->pid = (uint32_t)vu->child; /* a respawn changes it (TSan) */
	st->spawns = vu->spawns;
	st->copy = vu->copy;
	st->resubmitted = vu->resubmitted;
	if (has_pf(vu, PF_CONFIGURE_MEM_SLOTS)) {
		st->mem_slots = vu->nslots;
		st->max_mem_slots = vu->max_slots;
	}
	st->inflight_region = vu->inflight_fd >= 0;
	st->backend_channel = vu->req >= 0;
	st->backend_messages = vu->backend_msgs;
	st->config_changes = vu->config_changes;
	st->backend_refused = vu->refused;
	pthread_mutex_unlock(&vu->lock);
	if (vu->copy) { /* requests moonbox holds for the back-end */
		pthread_mutex_lock(&vu->copy_lock);
		for (unsigned i = 0; i < vu->ops.nqueues; i++)
			st->in_flight += (uint32_t)__builtin_popcount(vu->sh[i].busy);
		pthread_mutex_unlock(&vu->copy_lock);
	}
}

static int m_load(void *dev, struct mb_virtio *t, const void *st)
{
	(void)dev, (void)t, (void)st;
	return mb_seterr(-ENOTSUP, "vhost-user: the back-end holds the queues' "
			 "state; a vhost-user device cannot be restored");
}

static void vu_free(struct mb_vhost_user *vu)
{
	pthread_mutex_lock(&vu->lock);
	drop(vu);
	pthread_mutex_unlock(&vu->lock);
	for (unsigned i = 0; i < MB_VIRTIO_MAX_QUEUES; i++) {
		if (vu->call[i] >= 0) {
			if (vu->m)
				mb_machine_unwatch(vu->m, vu->call[i]);
			close(vu->call[i]);
		}
		if (vu->kick[i] >= 0)
			close(vu->kick[i]);
	}
	if (vu->retry)
		mb_machine_clock(vu->m)->timer_free(vu->retry);
	end_child(vu); /* our back-end goes with its device */
	inflight_free(vu);
	if (vu->bounce)
		munmap(vu->bounce, vu->bounce_size);
	if (vu->bounce_fd >= 0)
		close(vu->bounce_fd);
	free(vu->sh);
	pthread_mutex_destroy(&vu->copy_lock);
	if (vu->argv && vu->dir[0]) {
		unlink(vu->path);
		rmdir(vu->dir);
	}
	if (vu->argv) {
		for (unsigned i = 0; i < vu->nro; i++)
			free(vu->sb_ro[i]);
		for (unsigned i = 0; i < vu->nrw; i++)
			free(vu->sb_rw[i]);
		for (char **a = vu->argv; *a; a++)
			free(*a);
		free(vu->argv);
	}
	pthread_mutex_destroy(&vu->lock);
	pthread_mutex_destroy(&vu->cfg_lock);
	free(vu->fields);
	free(vu);
}

static void m_free(void *dev)
{
	vu_free(dev);
}

static void m_bind(void *dev, struct mb_virtio *t)
{
	struct mb_vhost_user *vu = dev;
	vu->t = t;
	mb_virtio_offer_mask(t, vu->be_features & GUEST_FEATURES);
}

static const char *defname(uint32_t id)
{
	switch (id) {
	case VIRTIO_ID_BLOCK: return "blk%u";
	case VIRTIO_ID_FS: return "fs%u";
	case VIRTIO_ID_NET: return "net%u";
	case VIRTIO_ID_CONSOLE: return "console%u";
	case VIRTIO_ID_RNG: return "rng%u";
	default: return "vhost%u";
	}
}

/* virtio v1.2 config layouts: blk 5.2.4 (through write_zeroes_may_unmap),
 * fs 5.11.4 (tag[36], num_request_queues), net 5.1.4 (mac, status,
 * max_virtqueue_pairs, mtu), console 5.3.4 (cols, rows, max_nr_ports,
 * emerg_wr); rng has none. */
static unsigned config_size(uint32_t id)
{
	switch (id) {
	case VIRTIO_ID_BLOCK: return 60;
	case VIRTIO_ID_FS: return 40;
	case VIRTIO_ID_NET: return 12;
	case VIRTIO_ID_CONSOLE: return 12;
	default: return 0;
	}
}

static unsigned default_queues(struct mb_vhost_user *vu)
{
	switch (vu->ops.device_id) {
	case VIRTIO_ID_BLOCK: {
		/* VIRTIO_BLK_F_MQ (12): num_queues at offset 34 */
		unsigned n = vu->be_features >> 12 & 1
				     ? (unsigned)mb_io_get(vu->config + 34, 2) : 1;
		return n ? n : 1;
	}
	case VIRTIO_ID_FS: return 2; /* hiprio + one request queue */
	case VIRTIO_ID_NET: case VIRTIO_ID_CONSOLE: return 2;
	default: return 1;
	}
}

/* The config the driver reads when the back-end has none to give, and
 * the values only moonbox knows (how many queues it wired). */
static int fix_config(struct mb_vhost_user *vu, const char *tag)
{
	unsigned nq = vu->ops.nqueues;
	if (vu->ops.device_id == VIRTIO_ID_BLOCK) {
		if (!has_pf(vu, PF_CONFIG))
			return mb_seterr(-ENOTSUP, "vhost-user: a blk back-end without "
					 "VHOST_USER_PROTOCOL_F_CONFIG has no capacity "
					 "to report");
		if (vu->be_features >> 12 & 1)
			mb_io_put(vu->config + 34, 2, nq);
		if (vu->copy) {
			/* Requests must fit a bounce slot: at most 32 segments
			 * (SEG_MAX, offset 12) of 4 KiB (SIZE_MAX, offset 8). */
			if ((vu->be_features & 6) != 6)
				return mb_seterr(-ENOTSUP, "dma: \"copy\" needs a blk "
						 "back-end offering SIZE_MAX and SEG_MAX");
			uint32_t seg = (uint32_t)mb_io_get(vu->config + 12, 4);
			uint32_t sz = (uint32_t)mb_io_get(vu->config + 8, 4);
			mb_io_put(vu->config + 12, 4, seg && seg < 32 ? seg : 32);
			mb_io_put(vu->config + 8, 4, sz && sz < 4096 ? sz : 4096);
		}
	} else if (vu->ops.device_id == VIRTIO_ID_FS && !has_pf(vu, PF_CONFIG)) {
		if (!tag || !*tag || strlen(tag) > 36)
			return mb_seterr(-EINVAL, "tag: the back-end does not give "
					 "the config space: give a tag of 1-36 bytes");
		memcpy(vu->config, tag, strlen(tag));
		mb_io_put(vu->config + 36, 4, nq - 1);
	}
	return 0;
}

static int copy_argv(struct mb_vhost_user *vu, const char *const *argv)
{
	unsigned n = 0;
	while (argv[n])
		n++;
	if (n > MB_LAUNCH_MAX_ARGS || argv[0][0] != '/')
		return mb_seterr(-EINVAL, "spawn: %u arguments (at most %d), "
				 "\"%s\" first (an absolute path)", n,
				 MB_LAUNCH_MAX_ARGS, argv[0]);
	if (!(vu->argv = calloc(n + 1, sizeof *vu->argv)))
		return mb_seterr(-ENOMEM, "spawn: out of memory");
	for (unsigned i = 0; i < n; i++)
		if (!(vu->argv[i] = strdup(argv[i])))
			return mb_seterr(-ENOMEM, "spawn: out of memory");
	return 0;
}

/* One more sandbox path (a copy of n bytes of p; dir: its directory). */
static int sb_add(struct mb_vhost_user *vu, bool rw, const char *p, size_t n,
		  bool dir)
{
	unsigned *count = rw ? &vu->nrw : &vu->nro;
	char **list = rw ? vu->sb_rw : vu->sb_ro;
	if (n == 0 || p[0] != '/')
		return mb_seterr(-EINVAL, "sandbox: \"%.*s\" is not an absolute "
				 "path", (int)n, p);
	if (*count == MB_LAUNCH_MAX_PATHS)
		return mb_seterr(-E2BIG, "sandbox: more than %d paths",
				 MB_LAUNCH_MAX_PATHS);
	char *c = strndup(p, n);
	if (!c)
		return mb_seterr(-ENOMEM, "sandbox: out of memory");
	if (dir) {
		char *slash = strrchr(c, '/');
		slash[slash == c] = 0; /* "/x" -> "/" */
	}
	list[(*count)++] = c;
	return 0;
}

/* The value of key (e.g. "filename=") in a comma-separated option
 * string, as QEMU writes them; n its length. */
static const char *opt_value(const char *arg, const char *key, size_t *n)
{
	size_t k = strlen(key);
	for (const char *p = arg; p; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (!strncmp(p, key, k)) {
			const char *v = p + k, *e = strchr(v, ',');
			*n = e ? (size_t)(e - v) : strlen(v);
			return v;
		}
	}
	return NULL;
}

/* The rest of arg after key when arg starts with it: an option of the
 * --name=VALUE form, whose value may hold commas. */
static const char *whole(const char *arg, const char *key)
{
	size_t k = strlen(key);
	return strncmp(arg, key, k) || !arg[k] ? NULL : arg + k;
}

static bool named(const char *path, const char *prog)
{
	const char *b = strrchr(path, '/');
	return !strcmp(b ? b + 1 : path, prog);
}

/* The confinement of a spawned back-end: the caller's paths and what the
 * argv names (moonbox/vhost_user.h). */
static int sandbox_plan(struct mb_vhost_user *vu,
			const struct mb_vhost_user_config *cfg)
{
	int rc = 0;
	if (!cfg->confine)
		return 0;
	vu->launch_flags = MB_LAUNCH_CONFINE;
	/* virtiofsd makes its own namespaces and sandbox (and needs the
	 * mount calls a Landlock domain forbids); anything else starts as
	 * pid 1 of a new pid namespace (in a user namespace of its own) */
	if (named(vu->argv[0], "virtiofsd"))
		vu->launch_flags |= MB_LAUNCH_NO_LANDLOCK;
	else
		vu->launch_flags |= MB_LAUNCH_NEWPID |
				    (cfg->host_net ? 0 : MB_LAUNCH_NEWNET);
	if (cfg->no_landlock)
		vu->launch_flags |= MB_LAUNCH_NO_LANDLOCK;
	for (unsigned i = 0; !rc && cfg->sandbox_ro && cfg->sandbox_ro[i]; i++)
		rc = sb_add(vu, false, cfg->sandbox_ro[i], strlen(cfg->sandbox_ro[i]), false);
	for (unsigned i = 0; !rc && cfg->sandbox_rw && cfg->sandbox_rw[i]; i++)
		rc = sb_add(vu, true, cfg->sandbox_rw[i], strlen(cfg->sandbox_rw[i]), false);
	for (unsigned i = 1; !rc && vu->argv[i]; i++) {
		const char *a = vu->argv[i], *v;
		size_t n;
		if ((v = opt_value(a, "filename=", &n)) && n)
			rc = sb_add(vu, true, v, n, false);
		else if ((v = opt_value(a, "addr.path=", &n)) && n)
			rc = sb_add(vu, true, v, n, true);
		else if ((v = opt_value(a, "--shared-dir=", &n)) && n)
			rc = sb_add(vu, true, v, n, false);
		else if (!strcmp(a, "--shared-dir") && vu->argv[i + 1])
			rc = sb_add(vu, true, vu->argv[i + 1], strlen(vu->argv[i + 1]), false);
		/* moonbox-device --vhost-user's own options (its usage text):
		 * the image, the socket it listens on or the cable it dials
		 * (their directory), a tap, which lives in the host's netns */
		else if ((v = whole(a, "--blk-file=")) || (v = whole(a, "--image=")))
			rc = sb_add(vu, true, v, strlen(v), false);
		else if (((v = whole(a, "--socket-path=")) || (v = whole(a, "--net-socket="))) &&
			 !wants_path(v)) /* {socket}: vu->path, below */
			rc = sb_add(vu, true, v, strlen(v), true);
		else if (whole(a, "--tap=")) {
			vu->launch_flags &= ~MB_LAUNCH_NEWNET;
			rc = sb_add(vu, true, "/dev/net/tun", strlen("/dev/net/tun"), false);
		}
	}
	/* the socket a back-end creates itself: in its directory */
	if (!rc && vu->path[0])
		rc = sb_add(vu, true, vu->path, strlen(vu->path), true);
	return rc;
}

int mb_vhost_user_sandbox(struct mb_vhost_user *vu, char *buf, size_t len)
{
	if (!vu->argv)
		return -ENOENT;
	if (!(vu->launch_flags & MB_LAUNCH_CONFINE)) {
		snprintf(buf, len, "none (sandbox = false)");
		return 0;
	}
	pthread_mutex_lock(&vu->lock);
	struct mb_sandbox_report r = vu->report;
	pthread_mutex_unlock(&vu->lock);
	char ll[48] = "no";
	if (r.landlock_abi)
		snprintf(ll, sizeof ll, "abi %d (ro %u, rw %u)", r.landlock_abi,
			 vu->nro, vu->nrw);
	unsigned f = vu->launch_flags;
	snprintf(buf, len, "no_new_privs %s; rlimits %s; userns+pidns %s; "
		 "netns+ipcns+utsns %s; landlock %s%s%s",
		 r.no_new_privs ? "yes" : "no", r.rlimits ? "yes" : "no",
		 r.pidns ? "yes" : (f & MB_LAUNCH_NEWPID) ? "refused" : "no",
		 r.netns ? "yes" : (f & MB_LAUNCH_NEWNET) ? "refused" : "no", ll,
		 r.refused[0] ? "; refused: " : "", r.refused);
	return 0;
}

int mb_vhost_user_new(struct mb_machine *m, struct mb_mem *mem,
		      const struct mb_vhost_user_config *cfg,
		      struct mb_vhost_user **out)
{
	struct mb_vhost_user *vu = calloc(1, sizeof *vu);
	if (!vu) {
		if (cfg->fd >= 0)
			close(cfg->fd);
		return mb_seterr(-ENOMEM, "vhost-user: out of memory");
	}
	pthread_mutex_init(&vu->lock, NULL);
	pthread_mutex_init(&vu->cfg_lock, NULL);
	vu->sock = -1;
	vu->req = -1;
	vu->pidfd = -1;
	vu->m = m;
	vu->mem = mem;
	vu->bounce_fd = -1;
	vu->inflight_fd = -1;
	vu->copy = cfg->copy;
	pthread_mutex_init(&vu->copy_lock, NULL);
	for (unsigned i = 0; i < MB_VIRTIO_MAX_QUEUES; i++)
		vu->call[i] = vu->kick[i] = -1;
	int rc, s = cfg->fd;
	if (cfg->socket) {
		if (strlen(cfg->socket) >= sizeof vu->path) {
			rc = mb_seterr(-ENAMETOOLONG, "socket: \"%s\" is longer than "
				       "%zu bytes", cfg->socket, sizeof vu->path - 1);
			goto fail;
		}
		strcpy(vu->path, cfg->socket);
		if (s < 0 && !cfg->spawn && (s = dial(vu)) < 0) {
			rc = s;
			goto fail;
		}
	}
	if (cfg->spawn && cfg->spawn[0]) {
		if ((rc = copy_argv(vu, cfg->spawn)))
			goto fail;
		if (!vu->path[0]) { /* ours, in a private directory */
			strcpy(vu->dir, "/tmp/moonbox-vhost-XXXXXX");
			if (!mkdtemp(vu->dir)) {
				rc = mb_seterr(-errno, "spawn: mkdtemp: %s", strerror(errno));
				vu->dir[0] = 0;
				goto fail;
			}
			snprintf(vu->path, sizeof vu->path, "%s/sock", vu->dir);
		}
		if ((rc = sandbox_plan(vu, cfg)))
			goto fail;
		if ((s = spawn(vu)) < 0) {
			rc = s;
			goto fail;
		}
	}
	if (s < 0) {
		rc = mb_seterr(-EINVAL, "vhost-user: no socket");
		goto fail;
	}
	vu->ops = (struct mb_virtio_dev_ops){
		.name = "vhost-user", .device_id = cfg->device_id,
		.queue_max = cfg->queue_size ? cfg->queue_size : MB_VQ_MAX_SIZE,
		.config_size = cfg->config_size ? cfg->config_size
						: config_size(cfg->device_id),
		.config_read = vu_config_read, .config_write = vu_config_write,
		.notify = vu_notify, .reset = vu_reset, .status = vu_status,
	};
	if (vu->ops.config_size > MAX_CONFIG || vu->ops.queue_max > MB_VQ_MAX_SIZE ||
	    (vu->ops.queue_max & (vu->ops.queue_max - 1))) {
		close(s);
		rc = mb_seterr(-EINVAL, "vhost-user: config_size %u (at most %d) or "
			       "queue_size %u (a power of two, at most %d)",
			       vu->ops.config_size, MAX_CONFIG, vu->ops.queue_max,
			       MB_VQ_MAX_SIZE);
		goto fail;
	}
	/* No machine yet: handshake() does not watch (placement does). */
	pthread_mutex_lock(&vu->lock);
	rc = handshake(vu, s, false);
	pthread_mutex_unlock(&vu->lock);
	if (rc)
		goto fail;
	unsigned nq = cfg->queues ? cfg->queues : default_queues(vu);
	if (nq > MB_VIRTIO_MAX_QUEUES || nq > vu->be_queues ||
	    (cfg->device_id == VIRTIO_ID_FS && nq < 2)) {
		rc = mb_seterr(-EINVAL, "queues: %u is not 1-%u (the back-end "
			       "serves %u%s)", nq, MB_VIRTIO_MAX_QUEUES, vu->be_queues,
			       cfg->device_id == VIRTIO_ID_FS ? "; fs needs 2+" : "");
		goto fail;
	}
	vu->ops.nqueues = nq;
	if ((rc = fix_config(vu, cfg->tag)))
		goto fail;
	if (vu->copy) {
		if ((rc = bounce_new(vu)))
			goto fail;
	}
	if (m && !(vu->retry = mb_machine_clock(m)->timer_new(
			   mb_machine_clock(m), retry_cb, vu))) {
		rc = mb_seterr(-ENOMEM, "vhost-user: out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < nq; i++) {
		vu->call[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vu->call[i] < 0) {
			rc = mb_seterr(-errno, "vhost-user: eventfd: %s", strerror(errno));
			goto fail;
		}
	}
	/* The state lists the queues this device has. */
	const struct mb_state_desc *d = &mb_vhost_user_state_desc;
	vu->fields = malloc(d->nfields * sizeof *vu->fields);
	if (!vu->fields) {
		rc = mb_seterr(-ENOMEM, "vhost-user: out of memory");
		goto fail;
	}
	memcpy(vu->fields, d->fields, d->nfields * sizeof *vu->fields);
	for (size_t i = 0; i < d->nfields; i++)
		if (vu->fields[i].type == MB_FT_ARRAY &&
		    !strcmp(vu->fields[i].name, "queues"))
			vu->fields[i].n = nq;
	vu->desc = *d;
	vu->desc.fields = vu->fields;
	vu->dev_ops = (struct mb_device_ops){
		.kind = "virtio_vhost_user", .state = &vu->desc,
		.save = mb_virtio_dev_save, .load = mb_virtio_dev_load,
		.quiesce = mb_virtio_dev_quiesce, .free = mb_virtio_dev_free,
	};
	vu->model = (struct mb_virtio_model){
		.ops = &vu->ops, .dev_ops = &vu->dev_ops, .save = m_save,
		.load = m_load, .bind = m_bind, .free = m_free,
	};
	*out = vu;
	return 0;
fail:
	vu_free(vu);
	return rc;
}

const struct mb_virtio_dev_ops *mb_vhost_user_ops(struct mb_vhost_user *vu)
{
	return &vu->ops;
}

uint64_t mb_vhost_user_features(struct mb_vhost_user *vu)
{
	return vu->be_features & 0xffffff;
}

void mb_vhost_user_bind(struct mb_vhost_user *vu, struct mb_virtio *t)
{
	m_bind(vu, t);
}

void mb_vhost_user_free(struct mb_vhost_user *vu)
{
	if (vu)
		vu_free(vu);
}

int mb_vhost_user_attach(struct mb_machine *m,
			 const struct mb_vhost_user_config *cfg,
			 struct mb_device **out)
{
	struct mb_vhost_user *vu;
	int rc = mb_vhost_user_new(m, mb_machine_mem(m), cfg, &vu);
	if (rc)
		return rc;
	unsigned nq = vu->ops.nqueues;
	struct mb_virtio_place p = { cfg->name, defname(cfg->device_id),
				     cfg->mmio_base, cfg->mmio_size, cfg->irq };
	struct mb_device *dev;
	rc = mb_virtio_place(m, &p, &vu->model, vu, vu->be_features & 0xffffff,
			     &dev); /* from here the machine frees vu */
	if (rc)
		return rc;
	for (unsigned i = 0; i < nq && !rc; i++)
		rc = mb_machine_watch(m, vu->call[i], on_call, vu);
	pthread_mutex_lock(&vu->lock);
	if (!rc && vu->sock >= 0 &&
	    !(rc = mb_machine_watch(m, vu->sock, on_socket, vu)))
		vu->watched = true;
	if (!rc && vu->req >= 0 &&
	    !(rc = mb_machine_watch(m, vu->req, on_backend_req, vu)))
		vu->req_watched = true;
	pthread_mutex_unlock(&vu->lock);
	if (rc) {
		mb_device_remove(dev);
		return rc;
	}
	*out = dev;
	return 0;
}

struct mb_vhost_user *mb_vhost_user_of(struct mb_device *d)
{
	return strcmp(mb_device_kind(d), "virtio_vhost_user") == 0
		       ? mb_virtio_dev_model(d)
		       : NULL;
}

pid_t mb_vhost_user_child(struct mb_vhost_user *vu)
{
	return vu->child;
}

void mb_vhost_user_poll(struct mb_vhost_user *vu)
{
	pthread_mutex_lock(&vu->lock);
	int fd = vu->req;
	pthread_mutex_unlock(&vu->lock);
	struct pollfd p = { fd, POLLIN, 0 };
	if (fd >= 0 && poll(&p, 1, 0) > 0)
		on_backend_req(vu, fd);
}
