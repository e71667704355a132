/*
 * virtio-net (virtio spec v1.2, sec. 5.1): one receiveq/transmitq pair,
 * a MAC address and link status, no offloads, no control queue. Frames go
 * to and come from a network backend (netbackend.h), which the device owns.
 */
#ifndef MOONBOX_VIRTIO_NET_H
#define MOONBOX_VIRTIO_NET_H

#include "moonbox/virtio_mmio.h"

struct mb_virtio; /* moonbox.h may include this before virtio_mmio.h ends */
struct mb_vq_chain;
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
};

struct mb_virtio_net_stats {
	uint64_t rx_frames, rx_bytes, rx_dropped, rx_stalls;
	uint64_t tx_frames, tx_bytes, tx_dropped;
};

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

#endif
