/*
 * The device's side of the device-process protocol (docs/devproc.md):
 * what moonbox-device does with each message once its device exists, kept
 * apart from main() and the Lua constructor so that fuzz/fuzz_devserve.c
 * can drive it with a hostile VMM's messages. One device per process.
 */
#ifndef MOONBOX_CLI_DEVSERVE_H
#define MOONBOX_CLI_DEVSERVE_H

#include <stdbool.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/internal.h"
#include "moonbox/devproc.h"

/* What is served (set by whoever built the device). */
extern struct mb_machine *ds_machine;
extern struct mb_device *ds_device;
extern struct mb_dp_report ds_rep;
/* Where replies and events go (moonbox-device: MB_DP_FD_CONTROL and
 * MB_DP_FD_EVENTS; the fuzzer: its own sockets). */
extern int ds_ctl_fd, ds_evt_fd;

/* The headless machine's interrupt controller (lines become events) and
 * its stop hook and console sink: what crosses back to the VMM. */
extern const struct mb_intc_ops ds_intc;
void ds_on_stop(void *ctx, enum mb_stop reason, int code, const char *msg);
bool ds_out_sink(const void *b, size_t len);
/* An isolated Lua device's log line to the VMM; its fatal end (lmodule.c). */
void ds_log(const char *line, size_t len);
void ds_fatal(int code, const char *why);
/* Fill ds_rep from ds_device (name, kind, ranges, line, state, virtio);
 * -E2BIG for a device with more ranges than a report holds. */
int ds_report(void);

/* Posted-write rings (docs/devproc.md, "Posted writes"): one per channel,
 * emptied by the channel's thread before each message it takes and by a
 * ring thread woken by the doorbell. pend: what the ring thread's writes
 * caused, for the channel's next reply. go: what a dead predecessor left
 * in a ring waits for the VMM's first word (its state comes first). */
struct ds_pend {
	uint64_t seq;
	bool stopped;
	struct mb_dp_stop stop;
};
struct ds_ring {
	struct mb_dp_ring *r; /* shared with the VMM */
	int bell;
	uint32_t tail; /* ours: what we did */
	bool go; /* read without the lock (the ring thread's spin): atomic */
	pthread_mutex_t lock;
	struct ds_pend pend;
};
extern struct ds_ring ds_rings[MB_DP_MAX_CHAN];
extern unsigned ds_nring;
/* Channel ch's thread, before each message: its ring done first. */
void ds_ring_take(unsigned ch);
void *ds_ring_thread(void *ring);

/* One message of n bytes (n as recv(MSG_TRUNC) gave it) from an access
 * channel: builds the reply in reply (room for a header and a struct
 * mb_dp_reply) and returns its size, or 0: no reply (garbled input; the
 * VMM times out). */
size_t ds_access(const void *msg, ssize_t n, void *reply);
/* One message from the control socket: acted on, replied to ds_ctl_fd. */
void ds_control(const uint8_t *msg, ssize_t n);
/* Map one memory entry of a CREATE into ds_machine (fd in [lo, hi)):
 * checked with mb_memfd_check, only [offset, offset+size) mapped, the fd
 * closed; a revoked slot maps nothing. 0, or -1 with msg set. */
int ds_map_mem(const struct mb_dp_mem *r, int lo, int hi, const char *name,
	       char *msg, size_t len);
/* dma = "message": how long a DMA request waits for the VMM (2000 ms),
 * and the id the next one will carry (the fuzzer puts it in replies). */
extern int ds_dma_timeout_ms;
uint16_t ds_dma_next_id(void);
/* DMA_UNMAP of a granted window (len payload bytes at pl): 0 or errno. */
int ds_unmap(const uint8_t *pl, size_t len, const char **why);
/* Fault rules inside the model (cli/devfault.c, docs/devproc.md): FAULT_ARM
 * (0 or errno with why), FAULT_RELEASE, and the question to the VMM. */
int ds_fault_arm(const uint8_t *pl, size_t len, const char **why);
void ds_fault_release(const uint8_t *pl, size_t len);
/* FAULT_APPLY: a once rule acts on the model now (0 or errno with why). */
int ds_fault_apply(const uint8_t *pl, size_t len, const char **why);
int ds_fault_ask(const struct mb_dp_fault_event *e, struct mb_dp_fault_verdict *out);
struct mb_fault_site *ds_fault_site(void); /* the proxy site, once armed */
/* m:on asks (cli/devfault.c): ON_ARM (0 or errno with why), ON_ANSWER. */
int ds_on_arm(const uint8_t *pl, size_t len, const char **why);
void ds_on_answer(const uint8_t *pl, size_t len);
/* cli/devserve_map.c: memory after the CREATE's. The dirty map the VMM
 * passed (a sealed memfd of size bytes: one bit per page of its RAM),
 * mapped and its fd closed: 0, or -1 with msg set. ds_dirty NULL: none. */
extern uint64_t *ds_dirty;
extern uint64_t ds_dirty_bits;
int ds_dirty_take(int fd, uint64_t size, char *msg, size_t len);
/* Do the pages of size bytes from bit on fit in the dirty map? */
bool ds_dirty_fits(uint64_t bit, uint64_t size);
/* Region i of ds_machine marks its writes at bit (MB_DP_NO_DIRTY, or
 * no map: not at all). */
void ds_dirty_sink(size_t i, uint64_t bit);
/* DMA_MAP (len payload bytes at pl, fd the memfd that came with it or
 * -1; always consumed): 0 or errno with why. */
int ds_dma_map(const uint8_t *pl, size_t len, int fd, const char **why);
/* A control message that came with a descriptor, or a DMA_MAP: acted
 * on and replied to (anything but a DMA_MAP with a descriptor is
 * refused, the descriptor closed). */
void ds_control_map(const uint8_t *msg, ssize_t n, int fd);
/* recvmsg of one control message; *fd the first descriptor that came
 * with it (others closed) or -1. */
ssize_t ds_recv_ctl(int sock, void *buf, size_t len, int *fd);
/* A reply (or an error reply with a message) to request q. */
void ds_reply(const struct mb_dp_hdr *q, int err, const void *pl, size_t len);
void ds_fail(const struct mb_dp_hdr *q, int err, const char *msg);

#endif
