/*
 * virtio-net (virtio spec v1.2, sec. 5.1): one receiveq/transmitq pair,
 * a MAC address and link status, no offloads, no control queue. Frames go
 * to and come from a network backend (netbackend.h), which the device owns.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_NET_H
#define MOONBOX_VIRTIO_NET_H

#include "moonbox/virtio_mmio.h"

#include "moonbox/virtio_netbackend.h"

/* Feature bits (sec. 5.1.3) and status (5.1.4). */
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1

#define MB_VIRTIO_NET_HDR 12 /* struct virtio_net_hdr_v1 (5.1.6) */
#define MB_VIRTIO_NET_CONFIG_SIZE 12

struct mb_virtio_net;

struct mb_virtio_net_config {
	uint8_t mac[6];
	struct mb_netbe *be; /* owned by the device from now on */
	const struct mb_clock *clock; /* fault delays; NULL: none (frames go at once) */
};

struct mb_virtio_net_stats {
	uint64_t rx_frames, rx_bytes, rx_dropped, rx_stalls;
	uint64_t tx_frames, tx_bytes, tx_dropped;
};

/* live: the driver rang since the last reset; waiting: the backend is
 * paused until receiveq gets buffers. A frame read from the backend and
 * not yet delivered is not part of the state (dropped by load: Ethernet
 * loses frames). */
#define MB_VIRTIO_NET_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, 2) \
	X(S, bytes, mac, 6) X(S, bool, live) X(S, bool, waiting) \
	X(S, ro_bool, link_up) X(S, ro_u32, pending_frame) \
	X(S, ro_u64, rx_frames) X(S, ro_u64, rx_bytes) X(S, ro_u64, rx_dropped) \
	X(S, ro_u64, rx_stalls) X(S, ro_u64, tx_frames) X(S, ro_u64, tx_bytes) \
	X(S, ro_u64, tx_dropped)
MB_STATE_STRUCT(mb_virtio_net_state, MB_VIRTIO_NET_STATE);
void mb_virtio_net_save(struct mb_virtio_net *n, struct mb_virtio *t,
			struct mb_virtio_net_state *st);
int mb_virtio_net_load(struct mb_virtio_net *n, struct mb_virtio *t,
		       const struct mb_virtio_net_state *st);

struct mb_virtio_net_attach_config {
	const char *name; /* NULL: "net0", "net1", ... */
	uint8_t mac[6];   /* all zero: 52:54:00 and 24 bits unique here */
	struct mb_netbe *be; /* owned by the device from now on (also on error) */
	uint64_t mmio_base, mmio_size; /* 0: a free 4K window */
	int irq;          /* 0: a free line */
};
int mb_virtio_net_attach(struct mb_machine *m,
			 const struct mb_virtio_net_attach_config *cfg,
			 struct mb_device **out);

struct mb_virtio_net *mb_virtio_net_new(const struct mb_virtio_net_config *cfg);
/* Call once the transport exists: receiving needs it. */
void mb_virtio_net_bind(struct mb_virtio_net *n, struct mb_virtio *t);
/* Frees the backend too. */
void mb_virtio_net_free(struct mb_virtio_net *n);
/* The backend's poll fd is readable: move frames into the guest. */
void mb_virtio_net_poll(struct mb_virtio_net *n);
uint64_t mb_virtio_net_features(struct mb_virtio_net *n);
struct mb_netbe *mb_virtio_net_backend(struct mb_virtio_net *n);
void mb_virtio_net_stats(struct mb_virtio_net *n, struct mb_virtio_net_stats *st);
extern const struct mb_virtio_dev_ops mb_virtio_net_ops;
/* Fault rules (moonbox/fault.h): every frame then asks s (see
 * mb_fault_site_install for the rules on replacing one). */
int mb_virtio_net_set_fault(struct mb_virtio_net *n, struct mb_fault_site *s);
/* An observer of every frame at the wire's end: rx frames as the backend
 * brings them (before rx faults), tx frames as they leave (after tx
 * faults). frame has room for MB_NETBE_MAX_FRAME bytes: the hook may
 * rewrite it and *len (14 bytes or more), or set *drop. Called on the
 * machine's event loop with no device lock held; with a hook, transmitted
 * frames leave from the event loop too. One per device; needs a clock. */
typedef void (*mb_virtio_net_hook_fn)(void *ctx, bool rx, uint8_t *frame,
				      uint32_t *len, bool *drop);
int mb_virtio_net_set_hook(struct mb_virtio_net *n, mb_virtio_net_hook_fn fn,
			   void *ctx);
/* Link status (VIRTIO_NET_S_LINK_UP, 5.1.4): a change interrupts the
 * driver with a config change. While down, no frame passes either way. */
void mb_virtio_net_set_link(struct mb_virtio_net *n, bool up);
bool mb_virtio_net_link(struct mb_virtio_net *n);

#endif
