/*
 * Network backends: tap and Unix sockets (see netbackend.h). Every fd is
 * non-blocking; a frame that cannot go out at once is dropped, as on a
 * real wire, and the guest's TCP/ICMP deal with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "moonbox.h"
#include "moonbox/virtio_netbackend.h"

#define VNET_HDR 12 /* struct virtio_net_hdr_v1 (virtio spec v1.2, 5.1.6) */
#define MAX_IOV 260

enum kind { TAP, SOCK };

struct mb_netbe {
	enum kind kind;
	bool dgram;     /* SOCK: a zero-length read is a runt, not EOF */
	int ep;         /* the poll set: data fd (unless paused), listen fd */
	int fd;         /* tap or peer socket; -1: no peer */
	int listen_fd;  /* -1 unless listening */
	bool paused, in_set;
	char *path;     /* listener's socket, unlinked on free */
	char name[128];
};

static struct mb_netbe *be_new(enum kind kind)
{
	struct mb_netbe *be = calloc(1, sizeof *be);
	if (!be) {
		mb_seterr(-ENOMEM, "net backend: out of memory");
		return NULL;
	}
	be->kind = kind;
	be->fd = be->listen_fd = -1;
	be->ep = epoll_create1(EPOLL_CLOEXEC);
	if (be->ep < 0) {
		mb_seterr(-errno, "net backend: epoll: %s", strerror(errno));
		free(be);
		return NULL;
	}
	return be;
}

void mb_netbe_free(struct mb_netbe *be)
{
	if (!be)
		return;
	if (be->fd >= 0)
		close(be->fd);
	if (be->listen_fd >= 0)
		close(be->listen_fd);
	if (be->path)
		unlink(be->path);
	close(be->ep);
	free(be->path);
	free(be);
}

/* Keep the data fd in the poll set exactly when there is one and the
 * device wants frames. */
static void update_set(struct mb_netbe *be)
{
	bool want = be->fd >= 0 && !be->paused;
	if (want == be->in_set)
		return;
	struct epoll_event e = { .events = EPOLLIN, .data.fd = be->fd };
	epoll_ctl(be->ep, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, be->fd, &e);
	be->in_set = want;
}

static void drop_peer(struct mb_netbe *be)
{
	if (be->in_set)
		epoll_ctl(be->ep, EPOLL_CTL_DEL, be->fd, NULL);
	be->in_set = false;
	close(be->fd);
	/* atomic: mb_netbe_connected() reads it from any thread */
	__atomic_store_n(&be->fd, -1, __ATOMIC_RELAXED);
}

static void adopt(struct mb_netbe *be, int fd)
{
	if (be->fd >= 0)
		drop_peer(be); /* one peer at a time: the newest wins */
	__atomic_store_n(&be->fd, fd, __ATOMIC_RELAXED);
	update_set(be);
}

int mb_netbe_pollfd(struct mb_netbe *be)
{
	return be->ep;
}

void mb_netbe_pause(struct mb_netbe *be, bool paused)
{
	be->paused = paused;
	update_set(be);
}

bool mb_netbe_connected(struct mb_netbe *be)
{
	return __atomic_load_n(&be->fd, __ATOMIC_RELAXED) >= 0;
}

const char *mb_netbe_name(struct mb_netbe *be)
{
	return be->name;
}

/* ---- frames ------------------------------------------------------------------ */

static void accept_peers(struct mb_netbe *be)
{
	int c;
	while (be->listen_fd >= 0 &&
	       (c = accept4(be->listen_fd, NULL, NULL,
			    SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0)
		adopt(be, c);
}

ssize_t mb_netbe_recv(struct mb_netbe *be, void *buf, size_t len)
{
	accept_peers(be);
	if (be->fd < 0)
		return 0;
	ssize_t n;
	if (be->kind == TAP) {
		uint8_t hdr[VNET_HDR]; /* no offloads negotiated: nothing in it */
		struct iovec iov[2] = { { hdr, sizeof hdr }, { buf, len } };
		n = readv(be->fd, iov, 2);
		if (n >= 0)
			return n < VNET_HDR ? -EMSGSIZE : n - VNET_HDR;
	} else {
		n = recv(be->fd, buf, len, MSG_DONTWAIT | MSG_TRUNC);
		if (n == 0 && !be->dgram) { /* SEQPACKET end of stream */
			drop_peer(be);
			return 0;
		}
		if (n >= 0)
			return n == 0 || (size_t)n > len ? -EMSGSIZE : n;
		if (errno == ECONNRESET || errno == ENOTCONN) {
			drop_peer(be);
			return 0;
		}
	}
	return errno == EAGAIN || errno == EINTR ? 0 : -errno;
}

int mb_netbe_send(struct mb_netbe *be, const struct iovec *iov, unsigned n)
{
	if (be->fd < 0)
		return -ENOTCONN;
	if (n + 1 > MAX_IOV)
		return -EMSGSIZE;
	if (be->kind == TAP) {
		static const uint8_t hdr[VNET_HDR]; /* GSO_NONE, no checksum */
		struct iovec v[MAX_IOV];
		v[0] = (struct iovec){ (void *)hdr, sizeof hdr };
		memcpy(v + 1, iov, n * sizeof *iov);
		return writev(be->fd, v, (int)n + 1) < 0 ? -errno : 0;
	}
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = n };
	if (sendmsg(be->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
		return 0;
	int err = errno;
	if (err == EPIPE || err == ECONNRESET || err == ECONNREFUSED) {
		drop_peer(be);
		return -ENOTCONN;
	}
	return -err;
}

/* ---- tap ----------------------------------------------------------------------- */

struct mb_netbe *mb_netbe_tap(const char *ifname)
{
	struct ifreq ifr = { 0 };
	if (ifname && strlen(ifname) >= IFNAMSIZ) {
		mb_seterr(-EINVAL, "tap: interface name \"%s\" is longer than %d",
			  ifname, IFNAMSIZ - 1);
		return NULL;
	}
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		mb_seterr(-errno, "tap: /dev/net/tun: %s", strerror(errno));
		return NULL;
	}
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ifname)
		strcpy(ifr.ifr_name, ifname);
	int hdr = VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr)) {
		int err = errno;
		mb_seterr(-err, "tap: %s: %s%s", ifname && *ifname ? ifname : "(new)",
			  strerror(err), err == EPERM ? " (needs CAP_NET_ADMIN, or a "
			  "tap made with `ip tuntap add NAME mode tap user USER`)" : "");
		close(fd);
		return NULL;
	}
	/* The 12-byte header of VERSION_1 devices; no offloads (TUN_F_*). */
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) || ioctl(fd, TUNSETOFFLOAD, 0)) {
		mb_seterr(-errno, "tap: %s: %s", ifr.ifr_name, strerror(errno));
		close(fd);
		return NULL;
	}
	struct mb_netbe *be = be_new(TAP);
	if (!be) {
		close(fd);
		return NULL;
	}
	snprintf(be->name, sizeof be->name, "tap:%s", ifr.ifr_name);
	adopt(be, fd);
	return be;
}

/* ---- Unix sockets ------------------------------------------------------------------ */

struct mb_netbe *mb_netbe_fd(int fd, const char *name)
{
	int type = 0;
	socklen_t tl = sizeof type;
	struct stat st;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) && errno == ENOTSOCK &&
	    !fstat(fd, &st) && S_ISCHR(st.st_mode)) {
		/* a tap set up by whoever opened it (mb_netbe_tap, in the VMM
		 * of a device process): the same vnet header */
		struct mb_netbe *be = be_new(TAP);
		if (!be)
			return NULL;
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		snprintf(be->name, sizeof be->name, "%s", name ? name : "tap");
		adopt(be, fd);
		return be;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) ||
	    (type != SOCK_SEQPACKET && type != SOCK_DGRAM)) {
		mb_seterr(-EINVAL, "net backend: fd %d is not a SOCK_SEQPACKET or "
			  "SOCK_DGRAM socket", fd);
		return NULL;
	}
	struct mb_netbe *be = be_new(SOCK);
	if (!be)
		return NULL;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	be->dgram = type == SOCK_DGRAM;
	snprintf(be->name, sizeof be->name, "%s", name ? name : "socket");
	adopt(be, fd);
	return be;
}

int mb_netbe_take_fd(struct mb_netbe *be)
{
	if (be->listen_fd >= 0)
		return mb_seterr(-EINVAL, "%s: a listening backend takes its peer "
				 "later (give the device process a tap, a connected "
				 "socket or an mb.netpair() end)", be->name);
	if (be->fd < 0)
		return mb_seterr(-ENOTCONN, "%s: no peer", be->name);
	int fd = fcntl(be->fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return mb_seterr(-errno, "%s: dup: %s", be->name, strerror(errno));
	return fd;
}

int mb_netbe_pair(struct mb_netbe **a, struct mb_netbe **b)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return mb_seterr(-errno, "net pair: socketpair: %s", strerror(errno));
	*a = mb_netbe_fd(sv[0], "pair");
	*b = *a ? mb_netbe_fd(sv[1], "pair") : NULL;
	if (!*b) {
		if (*a)
			mb_netbe_free(*a);
		else
			close(sv[0]);
		close(sv[1]);
		*a = NULL;
		return -ENOMEM;
	}
	return 0;
}

struct mb_netbe *mb_netbe_socket(const char *path, bool listen_)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof a.sun_path) {
		mb_seterr(-ENAMETOOLONG, "socket: %s is too long for a Unix socket "
			  "path", path);
		return NULL;
	}
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		mb_seterr(-errno, "socket: %s", strerror(errno));
		return NULL;
	}
	if (listen_) {
		unlink(path); /* a stale socket from an earlier run */
		if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4)) {
			mb_seterr(-errno, "socket: %s: %s", path, strerror(errno));
			close(fd);
			return NULL;
		}
	} else if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		/* A Unix connect completes at once or not at all. */
		mb_seterr(-errno, "socket: %s: connect: %s (is the listening side "
			  "up?)", path, strerror(errno));
		close(fd);
		return NULL;
	}
	struct mb_netbe *be = be_new(SOCK);
	if (!be) {
		close(fd);
		return NULL;
	}
	snprintf(be->name, sizeof be->name, "socket:%s", path);
	if (!listen_) {
		adopt(be, fd);
		return be;
	}
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
	be->listen_fd = fd;
	be->path = strdup(path);
	if (!be->path || epoll_ctl(be->ep, EPOLL_CTL_ADD, fd, &e)) {
		mb_seterr(-ENOMEM, "socket: %s: cannot watch it", path);
		mb_netbe_free(be);
		return NULL;
	}
	return be;
}
