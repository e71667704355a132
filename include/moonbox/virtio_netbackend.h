/*
 * Network backends for virtio-net: where the guest's Ethernet frames go.
 *   tap     a Linux tap interface (/dev/net/tun, IFF_TAP | IFF_NO_PI |
 *           IFF_VNET_HDR; needs CAP_NET_ADMIN or a tap owned by the user)
 *   socket  a Unix SOCK_SEQPACKET socket, one frame per message, no
 *           header: two moonbox VMs (or a test) on a virtual cable. One
 *           side listens on PATH and takes the newest peer, the other
 *           connects to it.
 *   pair    both ends of a socketpair: two VMs in one process
 * The API speaks bare frames; the tap backend adds and strips the 12-byte
 * virtio_net_hdr_v1 the kernel exchanges (all zero: no offloads yet).
 *
 * Readiness: mb_netbe_pollfd() is one fd (an epoll set of the backend's
 * own fds) to watch on the event loop; it is readable when recv may have a
 * frame or a peer is waiting to connect. mb_netbe_pause() takes the data
 * fd out of that set, so a device without buffers stops being woken
 * (backpressure) without unwatching anything.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_NETBACKEND_H
#define MOONBOX_VIRTIO_NETBACKEND_H

#include <stdbool.h>
#include <sys/types.h>
#include <sys/uio.h>

#define MB_NETBE_MAX_FRAME 65536 /* the largest frame recv hands out */

struct mb_netbe;

/* Each returns NULL with a message in mb_errmsg() on failure. */
struct mb_netbe *mb_netbe_tap(const char *ifname); /* "" or NULL: kernel picks */
struct mb_netbe *mb_netbe_socket(const char *path, bool listen);
/* A connected SOCK_SEQPACKET/SOCK_DGRAM socket, or a tap another backend
 * set up (a device process gets its tap this way), as a backend. */
struct mb_netbe *mb_netbe_fd(int fd, const char *name);
/* A copy of be's data descriptor (for a device process; be keeps its own),
 * or -errno: a listening backend has none yet. */
int mb_netbe_take_fd(struct mb_netbe *be);
int mb_netbe_pair(struct mb_netbe **a, struct mb_netbe **b);
void mb_netbe_free(struct mb_netbe *be);

int mb_netbe_pollfd(struct mb_netbe *be);
/* One frame into buf: its length, 0 when none is waiting, -EMSGSIZE when
 * it was longer than len (dropped), other negative codes on errors. */
ssize_t mb_netbe_recv(struct mb_netbe *be, void *buf, size_t len);
/* One frame from the buffers: 0, or a negative code (-EAGAIN when the
 * other end is full, -ENOTCONN without a peer): the frame is dropped. */
int mb_netbe_send(struct mb_netbe *be, const struct iovec *iov, unsigned n);
void mb_netbe_pause(struct mb_netbe *be, bool paused);
bool mb_netbe_connected(struct mb_netbe *be);
/* "tap:tap0", "socket:/run/x.sock", "pair" */
const char *mb_netbe_name(struct mb_netbe *be);

#endif
