/*
 * vhost-user front-end (QEMU docs/interop/vhost-user.rst): a virtio device
 * whose queues a back-end process serves (qemu-storage-daemon, virtiofsd,
 * ...), behind moonbox's own virtio-mmio transport.
 *
 * moonbox keeps the registers, the feature negotiation (what it offers is
 * the back-end's GET_FEATURES masked to what the transport supports) and
 * the config space (a copy fetched with GET_CONFIG); at DRIVER_OK it hands
 * the back-end the guest RAM (SET_MEM_TABLE with the memfds), each ready
 * queue's rings, its doorbell eventfd (the transport's KVM ioeventfd) as
 * SET_VRING_KICK and an eventfd of its own as SET_VRING_CALL, which the
 * event loop turns into InterruptStatus bit 0 and an interrupt. On reset
 * it stops every queue with GET_VRING_BASE. Every reply is checked: a
 * hostile back-end breaks its device (DEVICE_NEEDS_RESET), never the VMM.
 * docs/vhost_user.md has the details.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_VHOST_USER_H
#define MOONBOX_VHOST_USER_H

#include <sys/types.h>

#include "moonbox/virtio_mmio.h"

#define VIRTIO_ID_FS 26

struct mb_vhost_user;

/* The state: the transport, up to 8 queues (a device lists as many as it
 * has), then what the back-end offered and counters. */
#define MB_VHOST_USER_STATE(X, S) MB_VIRTIO_DEV_STATE(X, S, MB_VIRTIO_MAX_QUEUES) \
	X(S, ro_u32, device_id) X(S, ro_u64, backend_features) \
	X(S, ro_u64, protocol_features) X(S, ro_bool, connected) \
	X(S, ro_bool, running) X(S, ro_u64, messages) X(S, ro_u64, calls) \
	X(S, ro_u64, disconnects) X(S, ro_u64, reconnects) X(S, ro_u32, pid) \
	X(S, ro_u64, spawns) X(S, ro_bool, copy) X(S, ro_u64, resubmitted) \
	X(S, ro_u32, in_flight) X(S, ro_u32, mem_slots) X(S, ro_u32, max_mem_slots) \
	X(S, ro_bool, inflight_region) X(S, ro_bool, backend_channel) \
	X(S, ro_u64, backend_messages) X(S, ro_u64, config_changes) \
	X(S, ro_u64, backend_refused)
MB_STATE_STRUCT(mb_vhost_user_state, MB_VHOST_USER_STATE);

struct mb_vhost_user_config {
	const char *name;   /* NULL: "blk0", "fs0", ... by device type */
	uint32_t device_id; /* VIRTIO_ID_BLOCK, VIRTIO_ID_FS, ... */
	/* Connect to a back-end listening here, or (fd >= 0) use this
	 * connected socket (the device owns it from the call on). */
	const char *socket;
	int fd;
	/* Or start the back-end (argv, NULL-terminated, argv[0] absolute)
	 * through the machine's launcher (moonbox/sandbox.h): moonbox binds
	 * a socket in a private directory and hands it over, bound but not
	 * listening, as fd 3 (qemu-storage-daemon: addr.type=fd,addr.str=3);
	 * an argument containing "{socket}" gets the path instead and then
	 * the back-end creates the socket itself (virtiofsd --socket-path).
	 * With socket given too, the program creates that socket (no fd 3)
	 * and moonbox dials it once it appears. A back-end that dies is started again when the driver resets. */
	const char *const *spawn;
	/* Confine the spawned back-end (moonbox/sandbox.h MB_LAUNCH_CONFINE;
	 * docs/vhost_user.md): no_new_privs, no core dumps, and Landlock
	 * leaving only the program, the shared libraries, sandbox_ro (read)
	 * and sandbox_rw (read-write) reachable by path. To sandbox_rw moonbox
	 * adds what the argv names: every filename=PATH (qemu-storage-
	 * daemon's images), addr.path=PATH's and the socket's directory,
	 * --shared-dir / shared-dir= (virtiofsd), moonbox-device's --blk-file=
	 * / --image=, --socket-path='s and --net-socket='s directory, and for
	 * --tap= /dev/net/tun and the host's network. virtiofsd (argv[0] named
	 * so) gets no Landlock: it builds its own mount namespace, which a
	 * Landlock domain forbids. Lists NULL-terminated, NULL: none. */
	bool confine;
	bool no_landlock;
	bool host_net; /* keep the host's network (else: a network namespace) */
	const char *const *sandbox_ro, *const *sandbox_rw;
	unsigned queues;     /* 0: the type's default (blk: num_queues) */
	uint16_t queue_size; /* QueueNumMax; 0: 256 */
	unsigned config_size; /* 0: the type's (blk 60, fs 40, ...) */
	const char *tag;     /* virtio-fs without PROTOCOL_F_CONFIG */
	/* dma = "copy": the back-end maps only bounce buffers moonbox fills
	 * from the guest's queues (shadow virtqueues), so moonbox holds every
	 * request and re-submits them to a restarted back-end. */
	bool copy;
	uint64_t mmio_base, mmio_size; /* 0: a free 4K window */
	int irq;             /* 0: a free line */
};

int mb_vhost_user_attach(struct mb_machine *m,
			 const struct mb_vhost_user_config *cfg,
			 struct mb_device **out);

/* The bare model without a machine (fuzzers, embedders with their own
 * transport): m may be NULL (no event loop: calls are not watched, a
 * spawn uses the process's launcher), mem is the RAM to share. Connects
 * and does the handshake. Then build a transport with
 * mb_vhost_user_ops(vu) and mb_vhost_user_features(vu) and bind it. */
int mb_vhost_user_new(struct mb_machine *m, struct mb_mem *mem,
		      const struct mb_vhost_user_config *cfg,
		      struct mb_vhost_user **out);
const struct mb_virtio_dev_ops *mb_vhost_user_ops(struct mb_vhost_user *vu);
uint64_t mb_vhost_user_features(struct mb_vhost_user *vu);
void mb_vhost_user_bind(struct mb_vhost_user *vu, struct mb_virtio *t);
void mb_vhost_user_free(struct mb_vhost_user *vu);
/* Serve what the back-end has sent on its request channel (BACKEND_REQ),
 * without waiting: for a bare model, which no event loop watches. */
void mb_vhost_user_poll(struct mb_vhost_user *vu);

/* The model of a placed vhost-user device (mb_virtio_dev_model), or NULL. */
struct mb_vhost_user *mb_vhost_user_of(struct mb_device *d);
/* The back-end moonbox started for it (0: none). */
pid_t mb_vhost_user_child(struct mb_vhost_user *vu);
/* What confines that back-end, as one line ("no_new_privs yes; rlimits
 * yes; landlock abi 6 (ro 2, rw 1); refused: ..."; "none" when not
 * confined): 0, or -ENOENT when moonbox spawned nothing. */
int mb_vhost_user_sandbox(struct mb_vhost_user *vu, char *buf, size_t len);

#endif
