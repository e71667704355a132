/*
 * moonbox-device --vhost-user: moonbox's own virtio device models served
 * as vhost-user back-ends (QEMU docs/interop/vhost-user.rst; the front-end
 * is any vhost-user front-end: QEMU's vhost-user-blk, moonbox's own
 * mb.vhost_user). docs/vhost_user.md, "moonbox's devices as back-ends".
 *
 * The front-end is hostile: every message is checked (header, exact
 * payload size for its type, the file descriptors it carries, indices,
 * sizes), memory regions are mapped only after their file is checked, and
 * every address the rings and buffers name is translated through the
 * memory table and bounded by the queue code (devices/virtio/queue.c). A
 * malformed message ends the connection, never the process.
 *
 * Kept apart from main() so that fuzz/fuzz_vhost_backend.c can drive it.
 */
#ifndef MOONBOX_CLI_VHOSTSERVE_H
#define MOONBOX_CLI_VHOSTSERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "moonbox.h"

#define VS_MAX_QUEUES 8
#define VS_MAX_SLOTS 32   /* GET_MAX_MEM_SLOTS */
#define VS_MAX_FDS 8      /* file descriptors one message may carry */
#define VS_MAX_PAYLOAD 4096
/* The largest ring accepted: virtio's split-ring limit (QEMU's own
 * VIRTQUEUE_MAX_SIZE), which QEMU's vhost-user-blk uses by default. */
#define VS_MAX_QUEUE_SIZE 1024

/* A device model as the back-end serves it. */
struct vs_model {
	const char *type;   /* "blk", "rng" (the --vhost-user argument) */
	uint32_t device_id;
	unsigned nqueues;   /* GET_QUEUE_NUM */
	uint16_t queue_max; /* the largest ring accepted */
	uint64_t features;  /* device-specific bits (0-23) */
	unsigned config_size;
	void (*config_read)(void *dev, uint64_t off, void *data, unsigned size);
	/* Serve one chain popped from queue qi: the bytes written into its
	 * device-writable buffers (the used length). */
	uint32_t (*request)(void *dev, unsigned qi, const struct mb_vq_chain *c);
	/* Optional: may a chain be taken from qi now? (a console's receiveq
	 * waits for input: its buffers stay in the ring until then). */
	bool (*can_serve)(void *dev, unsigned qi);
	/* Optional: the features the front-end set (SET_FEATURES). */
	void (*set_features)(void *dev, uint64_t features);
	void *dev;
};

struct vs_region {
	uint64_t gpa, size, uaddr;
	uint8_t *map;  /* our mapping of the whole pages around it */
	size_t maplen;
	uint8_t *host; /* gpa's byte in map */
};

struct vs_ring {
	struct mb_vq q;
	uint16_t num, base;
	uint64_t desc_ua, avail_ua, used_ua;
	bool have_num, have_addr, have_kick; /* kick fd or the no-fd flag */
	bool started, enabled;
	bool resume; /* the inflight region is looked at before the next pop */
	int kick, call, err;
	uint64_t counter; /* inflight: the next fetch's order */
	struct mb_vq_chain chain;
};

struct vs {
	const struct vs_model *m;
	int sock; /* the connection; -1 between connections */
	uint64_t features, protocol;
	bool features_set;
	uint8_t status;
	struct vs_region reg[VS_MAX_SLOTS];
	unsigned nreg;
	struct mb_mem *mem; /* built from reg[]: the only way to guest memory */
	struct vs_ring r[VS_MAX_QUEUES];
	/* INFLIGHT_SHMFD: the region ("Inflight I/O tracking", split layout) */
	uint8_t *inflight;
	uint64_t inflight_size, inflight_stride;
	uint16_t inflight_nq, inflight_qsize;
	/* counters (stderr at the end of a connection) */
	uint64_t messages, requests, resubmitted, refused;
	char why[200]; /* why the last connection was dropped */
};

/* Offered to the front-end (GET_PROTOCOL_FEATURES): MQ, REPLY_ACK, CONFIG
 * (only for a model with a config space), INFLIGHT_SHMFD, RESET_DEVICE,
 * CONFIGURE_MEM_SLOTS, STATUS. */
extern const uint64_t vs_protocol_features;

void vs_init(struct vs *s, const struct vs_model *m);
/* A new front-end on sock (owned from now on). */
void vs_connect(struct vs *s, int sock);
/* Forget the connection: rings stopped, memory unmapped, fds closed. */
void vs_disconnect(struct vs *s);
/* Read one message from s->sock and act on it: 0, or -1 when the
 * connection must end (EOF, a malformed message: s->why says). */
int vs_receive(struct vs *s);
/* Act on one message (fds: what came with it, owned by the callee from
 * now on, closed when not kept). 0, or -1: drop the connection. */
int vs_handle(struct vs *s, uint32_t request, uint32_t flags, const void *payload,
	      uint32_t size, int *fds, unsigned nfds);
/* Queue qi's kick fd was readable (or a poll for a ring without one):
 * drain it and serve the ring. */
void vs_kick(struct vs *s, unsigned qi);
/* Serve queue qi now without touching its kick fd (new input for it, a
 * ring without a kick fd). */
void vs_serve(struct vs *s, unsigned qi);

/* moonbox-device --vhost-user ...: the whole program (argv as main's). */
int vs_main(int argc, char **argv);

#endif
