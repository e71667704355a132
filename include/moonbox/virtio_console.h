/*
 * virtio-console (virtio spec v1.2, sec. 5.3), port 0 only (no MULTIPORT):
 * receiveq (0) carries host input into guest buffers, transmitq (1) guest
 * output to a console backend (struct mb_chr). Linux shows it as hvc0.
 */
#ifndef MOONBOX_VIRTIO_CONSOLE_H
#define MOONBOX_VIRTIO_CONSOLE_H

#include "moonbox/virtio_mmio.h"

struct mb_virtio; /* moonbox.h may include this before virtio_mmio.h ends */
struct mb_vq_chain;

/* Feature bits (sec. 5.3.3). */
#define VIRTIO_CONSOLE_F_SIZE 0
#define VIRTIO_CONSOLE_F_MULTIPORT 1
#define VIRTIO_CONSOLE_F_EMERG_WRITE 2

#define MB_VIRTIO_CONSOLE_CONFIG_SIZE 12

struct mb_virtio_console;

struct mb_virtio_console_config {
	/* The backend. The device sets chr->rx/rx_dev and calls
	 * mb_chr_accept() once the guest posts buffers after it refused
	 * input. NULL: output dropped, no input. */
	struct mb_chr *chr;
	uint16_t cols, rows; /* both non-zero: offer VIRTIO_CONSOLE_F_SIZE */
};

struct mb_virtio_console_stats {
	uint64_t tx_bytes, rx_bytes; /* guest -> backend, backend -> guest */
	uint64_t emerg_bytes;        /* written through emerg_wr */
	uint64_t rx_stalls;          /* input refused for lack of buffers */
};

struct mb_virtio_console *
mb_virtio_console_new(const struct mb_virtio_console_config *cfg);
/* Call mb_virtio_console_bind() once the transport exists: input needs it. */
void mb_virtio_console_bind(struct mb_virtio_console *c, struct mb_virtio *t);
/* Detaches from the backend (chr->rx = NULL) and frees. */
void mb_virtio_console_free(struct mb_virtio_console *c);
uint64_t mb_virtio_console_features(struct mb_virtio_console *c);
void mb_virtio_console_stats(struct mb_virtio_console *c,
			     struct mb_virtio_console_stats *st);
extern const struct mb_virtio_dev_ops mb_virtio_console_ops;

#endif
