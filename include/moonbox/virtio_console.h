/*
 * virtio-console (virtio spec v1.2, sec. 5.3), port 0 only (no MULTIPORT):
 * receiveq (0) carries host input into guest buffers, transmitq (1) guest
 * output to a console backend (struct mb_chr). Linux shows it as hvc0.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VIRTIO_CONSOLE_H
#define MOONBOX_VIRTIO_CONSOLE_H

#include "moonbox/virtio_mmio.h"


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

/* open: the port wrote since the last reset; owed: input was refused for
 * lack of buffers (the backend is told when new ones come). */
#define MB_VIRTIO_CONSOLE_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, 2) \
	X(S, bool, open) X(S, bool, owed) X(S, ro_u16, cols) X(S, ro_u16, rows) \
	X(S, ro_u64, tx_bytes) X(S, ro_u64, rx_bytes) X(S, ro_u64, emerg_bytes) \
	X(S, ro_u64, rx_stalls)
MB_STATE_STRUCT(mb_virtio_console_state, MB_VIRTIO_CONSOLE_STATE);
void mb_virtio_console_save(struct mb_virtio_console *c, struct mb_virtio *t,
			    struct mb_virtio_console_state *st);
int mb_virtio_console_load(struct mb_virtio_console *c, struct mb_virtio *t,
			   const struct mb_virtio_console_state *st);

struct mb_virtio_console_attach_config {
	const char *name; /* NULL: "console0", "console1", ... */
	struct mb_chr *chr;
	uint16_t cols, rows;
	uint64_t mmio_base, mmio_size; /* 0: a free 4K window */
	int irq;          /* 0: a free line */
};
int mb_virtio_console_attach(struct mb_machine *m,
			     const struct mb_virtio_console_attach_config *cfg,
			     struct mb_device **out);

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
