/*
 * The VMM's end of a device process (moonbox/devproc.h, docs/devproc.md):
 * a proxy device whose ranges forward each access over the calling
 * thread's own channel, whose line follows the process's IRQ_LEVEL
 * messages, and whose state is the process's. A dead or silent process
 * never blocks a vCPU: its reads return all ones, its writes are dropped,
 * and the on_crash policy runs on the event loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/devproc_dma.h"
#include "core/devproc_fault.h"
#include "moonbox/devproc.h"

#ifndef MB_LIBEXEC
#define MB_LIBEXEC "/usr/local/libexec/moonbox"
#endif

extern const struct mb_state_desc mb_uart_state_desc, mb_pit_state_desc,
	mb_rtc_state_desc, mb_i8042_state_desc, mb_null_state_desc,
	mb_debug_exit_state_desc, mb_virtio_blk_state_desc,
	mb_virtio_rng_state_desc, mb_virtio_console_state_desc,
	mb_virtio_net_state_desc;

static const struct {
	const char *kind;
	const struct mb_state_desc *desc;
} descs[] = {
	{ "uart16550", &mb_uart_state_desc },
	{ "pit8254", &mb_pit_state_desc },
	{ "rtc", &mb_rtc_state_desc },
	{ "i8042", &mb_i8042_state_desc },
	{ "port80", &mb_null_state_desc },
	{ "debug_exit", &mb_debug_exit_state_desc },
	{ "virtio_blk", &mb_virtio_blk_state_desc },
	{ "virtio_rng", &mb_virtio_rng_state_desc },
	{ "virtio_console", &mb_virtio_console_state_desc },
	{ "virtio_net", &mb_virtio_net_state_desc },
};

struct chan {
	int fd;
	pthread_mutex_t lock;
	uint16_t id;
	_Atomic unsigned posted; /* writes sent without a reply since the last one */
	uint32_t head; /* posted writes put in its ring (the VMM's own count) */
};
/* Posted writes a channel holds before it flushes on its own (a bound on
 * what a death can lose and on the socket's queue). */
#define POST_WINDOW 64

struct prange {
	struct mb_devproc *p;
	uint32_t idx;
	uint64_t base; /* the guest address (a restart rewrites p->rep) */
};

struct mb_devproc {
	struct mb_machine *m;
	struct mb_device *dev;
	struct mb_device_ops ops;
	char kind[32];
	char *opts;
	int *fds;
	unsigned nfds;
	int timeout_ms;
	enum mb_dp_policy policy;
	void (*crashed)(void *, struct mb_devproc *, const char *);
	void *ctx;
	struct mb_chr *console;

	int ctl, evt, pidfd;
	pid_t pid;
	unsigned nchan;
	struct chan ch[MB_DP_MAX_CHAN];
	_Atomic bool alive;
	struct mb_dp_report rep;
	struct prange pr[8];
	struct mb_irq line;
	bool has_line, ack_registered;
	pthread_mutex_t ev_lock; /* one reader of the events socket at a time */
	uint64_t applied;        /* last line change applied (under ev_lock) */

	pthread_mutex_t ctl_lock;
	pthread_mutex_t post_lock; /* posted notices vs. ctl's close */
	uint16_t ctl_id;
	void *last_state; /* the state last saved or loaded (restart loads it) */
	bool have_state;
	/* why, pid and pidfd change on a vCPU (a timeout), on the event loop
	 * (the exit) and on the script's thread (a restart): under why_lock. */
	pthread_mutex_t why_lock;
	char why[160];
	unsigned restarts;
	struct hook freeze_hook;
	/* uart faults on the wire (F.uart.drop / corrupt / error): NULL
	 * unless a rule targets this UART; bytes counted per direction. */
	struct mb_fault_site *_Atomic fault;
	_Atomic uint64_t fault_tx, fault_rx;
	/* m:on("uart" | "console") of an isolated UART: the bytes on the
	 * same wire (mb_devproc_set_uart_hook); NULL: none. */
	void (*_Atomic whook)(void *ctx, bool rx, uint8_t *byte, bool *drop);
	void *whook_ctx;
	/* dev.* faults (core/devproc_fault.c): NULL unless a rule targets
	 * this device; matched on each access before it is forwarded. */
	struct mb_fault_site *_Atomic dfault;
	/* Rules its model decides (core/devproc_fault.h): the process asks
	 * over the events socket; armed again after a restart. */
	struct mb_dp_faults mf;
	/* Each death's policy, once run, counts here (under why_lock, with
	 * settle signalled): an access that was in flight waits for it and,
	 * after a restart, goes again to the new process. */
	_Atomic unsigned settled;
	pthread_cond_t settle;
	/* posted = true: writes go with vfio-user's no-reply flag; reads, hlt
	 * and saves flush them ("Posted writes" in docs/devproc.md) */
	bool posted;
	_Atomic uint64_t nposted, nflushes;
	struct hook hlt_hook;
	/* posted writes through shared rings (not posted_socket): one per
	 * channel in one sealed memfd, a doorbell eventfd each; both kept
	 * across restarts, so a new process finds what the dead one left */
	bool ring_on;
	int ring_fd;
	size_t ring_size;
	struct mb_dp_ring *ring;
	int bell[MB_DP_MAX_CHAN];
	_Atomic uint64_t nbells, nreplayed;
	/* A virtio device's doorbells and interrupt, kept across restarts:
	 * eventfds the process waits on / writes, the VMM's KVM ioeventfds
	 * (QueueNotify == i) and irqfd on them (-1: none). */
	int kick[MB_DP_MAX_KICK], kick_irq;
	unsigned ndoorbells; /* ioeventfds registered */
	bool irqfd, irq_relay; /* KVM irqfd on kick_irq, or the loop relays it */
	struct mb_dp_dmastate dma; /* grants and DMA messages (core/devproc_dma.c) */
	/* A grant or revoke from the script and a restart's mapping of the
	 * run-time grants, one at a time (a new process misses none). */
	pthread_mutex_t grant_lock;
	_Atomic unsigned incarnation; /* spawns so far (mark_dead_of) */
	/* An isolated Lua device's last log lines (under ev_lock; made on
	 * the first): a ring of MB_DP_LOG_KEEP, nlog taken in all. */
	char (*log)[MB_DP_LOG_TEXT];
	uint64_t nlog;
};

static unsigned chans_of(struct mb_machine *m);

static _Atomic unsigned nthreads;
static __thread unsigned tslot; /* 0: not assigned yet */

const char *mb_devproc_program(void)
{
	static char path[4096];
	const char *e = getenv("MB_DEVICE");
	if (e && *e)
		return e;
	if (mb_libexec_path("moonbox-device", path, sizeof path))
		snprintf(path, sizeof path, "moonbox-device");
	return path;
}

/* ---- launching --------------------------------------------------------- */

/* Through the machine's launcher (moonbox/sandbox.h): fds[i] at 3 + i,
 * nothing else open, no environment; it dies with the VMM. */
static int launch(struct mb_machine *m, const int *fds, unsigned n, pid_t *pid,
		  int *pidfd)
{
	const char *prog = mb_devproc_program();
	if (prog[0] != '/')
		return mb_seterr(-ENOENT, "isolate: moonbox-device not found (next to "
				 "moonbox, in its libexec directory, or $MB_DEVICE)");
	const char *const argv[] = { prog, NULL };
	struct mb_launch l = { .argv = argv, .fds = fds, .nfds = n,
			       .flags = MB_LAUNCH_NEWPID };
	int rc = mb_launch(m, &l, pid, pidfd);
	if (rc)
		return mb_seterr(rc, "isolate: starting %s: %s", prog, mb_errmsg());
	return 0;
}

/* ---- messages ---------------------------------------------------------- */

static int deadline_ms(struct timespec *t0, int ms)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long spent = (now.tv_sec - t0->tv_sec) * 1000 +
		     (now.tv_nsec - t0->tv_nsec) / 1000000;
	return spent >= ms ? 0 : ms - (int)spent;
}

/* Wait for one message on fd (up to ms): its length, 0 on timeout, -errno. */
static ssize_t recv_wait(int fd, void *buf, size_t len, int ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int left = deadline_ms(&t0, ms);
		int r = poll(&pf, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return 0;
		ssize_t n = recv(fd, buf, len, MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE; /* the process closed its end */
		if ((size_t)n > len)
			return -EMSGSIZE;
		return n;
	}
}

/* recv on a socket with SO_RCVTIMEO: as recv_wait, without the poll. */
static ssize_t recv_timed(int fd, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(fd, buf, len, MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		if ((size_t)n > len)
			return -EMSGSIZE;
		return n;
	}
}

/* The process an access found dead is the one it was sent to: a vCPU
 * whose send failed on the old process's closed channel must not kill
 * the one a restart is creating meanwhile (spawn counts incarnations). */
static void mark_dead_of(struct mb_devproc *p, const char *why, unsigned inc)
{
	pthread_mutex_lock(&p->why_lock);
	if (inc == atomic_load(&p->incarnation) && atomic_exchange(&p->alive, false)) {
		snprintf(p->why, sizeof p->why, "%s", why);
		/* The pidfd's watch runs the policy once the process is gone. */
		if (p->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
	}
	pthread_mutex_unlock(&p->why_lock);
}

static void mark_dead(struct mb_devproc *p, const char *why)
{
	mark_dead_of(p, why, atomic_load(&p->incarnation));
}

static void why_of(struct mb_devproc *p, char *out, size_t len)
{
	pthread_mutex_lock(&p->why_lock);
	snprintf(out, len, "%s", p->why);
	pthread_mutex_unlock(&p->why_lock);
}

/* One message on a SOCK_SEQPACKET socket, with fd as ancillary data when
 * fd >= 0. */
static ssize_t send_fd(int sock, const void *buf, size_t len, int fd)
{
	if (fd < 0)
		return send(sock, buf, len, MSG_NOSIGNAL);
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			     .msg_controllen = sizeof u.b };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

/* A control request: reply payload into out (up to max), its length or
 * -errno (message set). Under ctl_lock: one request at a time. */
static ssize_t request_fd(struct mb_devproc *p, uint16_t cmd, const void *pl,
			  size_t len, int fd, void *out, size_t max, int ms);

static ssize_t request(struct mb_devproc *p, uint16_t cmd, const void *pl,
		       size_t len, void *out, size_t max, int ms)
{
	return request_fd(p, cmd, pl, len, -1, out, max, ms);
}

/* As request, with fd (>= 0) passed along (SCM_RIGHTS: DMA_MAP's memfd). */
static ssize_t request_fd(struct mb_devproc *p, uint16_t cmd, const void *pl,
			  size_t len, int fd, void *out, size_t max, int ms)
{
	static __thread uint8_t buf[MB_DP_MAX_MSG];
	if (!atomic_load(&p->alive)) {
		char why[sizeof p->why];
		why_of(p, why, sizeof why);
		return mb_seterr(-EIO, "%s: the device process is dead (%s)",
				 p->rep.name, why);
	}
	if (len + sizeof(struct mb_dp_hdr) > MB_DP_MAX_MSG)
		return mb_seterr(-EMSGSIZE, "%s: request too large", p->rep.name);
	pthread_mutex_lock(&p->ctl_lock);
	struct mb_dp_hdr *h = (void *)buf;
	*h = (struct mb_dp_hdr){ .id = ++p->ctl_id, .cmd = cmd,
				 .size = (uint32_t)(sizeof *h + len) };
	if (len)
		memcpy(h + 1, pl, len);
	ssize_t rc;
	if (send_fd(p->ctl, buf, h->size, fd) != (ssize_t)h->size) {
		rc = mb_seterr(-errno, "%s: device process: send: %s", p->rep.name,
			       strerror(errno));
		goto out;
	}
	uint16_t id = h->id;
	for (;;) {
		ssize_t n = recv_wait(p->ctl, buf, sizeof buf, ms);
		if (n <= 0) {
			rc = mb_seterr(n ? (int)n : -ETIMEDOUT, "%s: device process: %s",
				       p->rep.name, n ? strerror((int)-n)
						      : "no reply in time");
			goto out;
		}
		if ((size_t)n < sizeof *h || h->size != (uint32_t)n ||
		    !(h->flags & MB_DP_F_REPLY) || h->cmd != cmd) {
			rc = mb_seterr(-EPROTO, "%s: device process: malformed reply",
				       p->rep.name);
			goto out;
		}
		if (h->id != id)
			continue; /* a late reply to a request that timed out */
		break;
	}
	size_t got = h->size - sizeof *h;
	if (h->flags & MB_DP_F_ERROR) {
		int e = h->error > 0 && h->error < 4096 ? (int)h->error : EIO;
		char msg[256];
		size_t k = got < sizeof msg - 1 ? got : sizeof msg - 1;
		memcpy(msg, h + 1, k);
		msg[k] = 0;
		for (size_t i = 0; i < k; i++)
			if ((unsigned char)msg[i] < 0x20)
				msg[i] = '?'; /* hostile text stays one line */
		rc = mb_seterr(-e, "%s", k ? msg : strerror(e));
		goto out;
	}
	if (got > max) {
		rc = mb_seterr(-EPROTO, "%s: device process: reply of %zu bytes, "
			       "expected at most %zu", p->rep.name, got, max);
		goto out;
	}
	if (got)
		memcpy(out, h + 1, got);
	rc = (ssize_t)got;
out:
	pthread_mutex_unlock(&p->ctl_lock);
	if (rc < 0 && rc != -EIO && rc != -EPROTO && rc != -EINVAL &&
	    rc != -ENOTSUP && rc != -EBUSY && rc != -ERANGE) {
		char why[200];
		snprintf(why, sizeof why, "%s", mb_errmsg());
		mark_dead(p, why);
		mb_seterr((int)rc, "%s", why);
	}
	return rc;
}

static void post(struct mb_devproc *p, uint16_t cmd, uint32_t v)
{
	struct {
		struct mb_dp_hdr h;
		uint32_t v;
	} msg = { { .cmd = cmd, .size = sizeof msg, .flags = MB_DP_F_NO_REPLY },
		  v };
	/* post_lock: the event loop may be closing ctl (a death) */
	pthread_mutex_lock(&p->post_lock);
	if (atomic_load(&p->alive) && p->ctl >= 0)
		send(p->ctl, &msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	pthread_mutex_unlock(&p->post_lock);
}

/* FAULT_RELEASE: the request held under tok goes on (posted). */
static void post_release(void *ctx, const char *tok)
{
	struct mb_devproc *p = ctx;
	struct {
		struct mb_dp_hdr h;
		char tok[MB_FAULT_TAG_MAX];
	} msg = { { .cmd = MB_DP_FAULT_RELEASE, .size = sizeof msg,
		    .flags = MB_DP_F_NO_REPLY }, { 0 } };
	snprintf(msg.tok, sizeof msg.tok, "%s", tok);
	pthread_mutex_lock(&p->post_lock);
	if (atomic_load(&p->alive) && p->ctl >= 0)
		send(p->ctl, &msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	pthread_mutex_unlock(&p->post_lock);
}

/* ON_ANSWER: the VMM's Lua answered the process's ask tok (posted). An
 * answer the socket does not take now is lost: the request stays parked
 * in the process until the driver resets the device (a process that does
 * not read its control socket is stuck anyway). */
static void post_answer(void *ctx, uint64_t tok, const struct mb_fault_verdict *v)
{
	struct mb_devproc *p = ctx;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_on_answer a;
	} msg;
	memset(&msg, 0, sizeof msg);
	msg.h = (struct mb_dp_hdr){ .cmd = MB_DP_ON_ANSWER, .size = sizeof msg,
				    .flags = MB_DP_F_NO_REPLY };
	msg.a.token = tok;
	if (v)
		mb_dp_fault_to_wire(v, &msg.a.w);
	pthread_mutex_lock(&p->post_lock);
	if (atomic_load(&p->alive) && p->ctl >= 0)
		send(p->ctl, &msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	pthread_mutex_unlock(&p->post_lock);
}

/* ON_ARM with what m:on has armed so far (0 or -errno with a message). */
static int arm_on(struct mb_devproc *p)
{
	pthread_mutex_lock(&p->mf.lock);
	struct mb_dp_on_arm o = { p->mf.on_kinds, p->mf.on_ops };
	pthread_mutex_unlock(&p->mf.lock);
	if (!o.kinds)
		return 0;
	ssize_t n = request(p, MB_DP_ON_ARM, &o, sizeof o, NULL, 0, p->timeout_ms * 4);
	return n < 0 ? (int)n : 0;
}

/* FAULT_ARM with what is armed so far, then ON_ARM (0 or -errno with a
 * message). */
static int arm(struct mb_devproc *p)
{
	pthread_mutex_lock(&p->mf.lock);
	struct mb_dp_fault_arm a = { p->mf.fam, p->mf.ops };
	pthread_mutex_unlock(&p->mf.lock);
	ssize_t n = 0;
	if (a.fam)
		n = request(p, MB_DP_FAULT_ARM, &a, sizeof a, NULL, 0, p->timeout_ms * 4);
	return n < 0 ? (int)n : arm_on(p);
}

int mb_devproc_fault_apply(struct mb_devproc *p, const struct mb_dp_fault_apply *a)
{
	ssize_t n = request(p, MB_DP_FAULT_APPLY, a, sizeof *a, NULL, 0, p->timeout_ms * 4);
	return n < 0 ? (int)n : 0;
}

/* ---- the proxy's line ---------------------------------------------------- */

/* Under ev_lock: events arrive in the order the process made them. */
static void apply_irq(struct mb_devproc *p, const struct mb_dp_irq *e)
{
	if (e->seq <= p->applied)
		return; /* replayed or hostile: nothing new */
	p->applied = e->seq;
	if (!p->has_line || e->line != (uint32_t)p->rep.irq || e->level > 1)
		return; /* not its line: ignored */
	mb_irq_set(&p->line, (int)e->level);
}

/* Under ev_lock: a log line, in sequence with the line changes. */
static void apply_log(struct mb_devproc *p, const struct mb_dp_log *l)
{
	if (l->seq <= p->applied)
		return;
	p->applied = l->seq;
	if (!p->log && !(p->log = calloc(MB_DP_LOG_KEEP, sizeof *p->log)))
		return;
	char *t = p->log[p->nlog++ % MB_DP_LOG_KEEP];
	memcpy(t, l->text, MB_DP_LOG_TEXT);
	t[MB_DP_LOG_TEXT - 1] = 0;
	for (char *c = t; *c; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			*c = '?'; /* hostile text stays one line */
}

static void apply_stop(struct mb_devproc *p, const struct mb_dp_stop *s);
static void dma_request(struct mb_devproc *p, int fd, const uint8_t *msg, size_t n);

/* Under ev_lock: take one event message from the events socket (waiting
 * up to ms) and act on it. 1: took one, 0: none in time, <0: closed. */
static int take_event(struct mb_devproc *p, int ms)
{
	/* events are small; a DMA request (dma = "message") up to a message */
	static __thread union {
		struct mb_dp_hdr h;
		uint8_t b[MB_DP_MAX_MSG];
	} u;
	ssize_t n = ms ? recv_wait(p->evt, &u, sizeof u, ms)
		       : recv(p->evt, &u, sizeof u, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR) && !ms)
		return 0;
	if (n == 0 && ms)
		return 0;
	if (n <= 0)
		return -EPIPE;
	if ((size_t)n > sizeof u || (size_t)n < sizeof u.h || u.h.size != n)
		return 1; /* malformed: dropped */
	size_t len = (size_t)n - sizeof u.h;
	if ((u.h.cmd == MB_DP_DMA_READ || u.h.cmd == MB_DP_DMA_WRITE) &&
	    !(u.h.flags & MB_DP_F_REPLY)) {
		dma_request(p, p->evt, u.b, (size_t)n); /* from a device thread */
		return 1;
	}
	if (u.h.cmd == MB_DP_FAULT && !(u.h.flags & MB_DP_F_REPLY)) {
		/* the model's question, answered at once (never waits on the
		 * process: a dead one just misses its answer) */
		struct {
			struct mb_dp_hdr h;
			struct mb_dp_fault_verdict w;
		} a;
		size_t k = mb_dp_fault_serve(&p->mf, u.b, (size_t)n, (uint8_t *)&a,
					     sizeof a);
		if (k)
			send(p->evt, &a, k, MSG_NOSIGNAL | MSG_DONTWAIT);
		return 1;
	}
	if (u.h.cmd == MB_DP_ON_ASK) {
		/* an m:on ask: to the Lua side's ring, answered later */
		mb_dp_on_serve(&p->mf, u.b, (size_t)n);
		return 1;
	}
	if (u.h.cmd == MB_DP_IRQ_LEVEL && len == sizeof(struct mb_dp_irq)) {
		struct mb_dp_irq e;
		memcpy(&e, &u.h + 1, sizeof e);
		apply_irq(p, &e);
	} else if (u.h.cmd == MB_DP_LOG && len == sizeof(struct mb_dp_log)) {
		struct mb_dp_log l;
		memcpy(&l, &u.h + 1, sizeof l);
		apply_log(p, &l);
	} else if (u.h.cmd == MB_DP_STOP && len == sizeof(struct mb_dp_stop)) {
		struct mb_dp_stop st;
		memcpy(&st, &u.h + 1, sizeof st);
		apply_stop(p, &st);
	}
	return 1;
}

/* The line changes an access made, applied before it completes. */
static void catch_up(struct mb_devproc *p, uint64_t seq)
{
	pthread_mutex_lock(&p->ev_lock);
	while (p->applied < seq && atomic_load(&p->alive) && p->evt >= 0)
		if (take_event(p, p->timeout_ms) <= 0)
			break;
	pthread_mutex_unlock(&p->ev_lock);
}

static void apply_stop(struct mb_devproc *p, const struct mb_dp_stop *s)
{
	char msg[sizeof s->msg + 1];
	memcpy(msg, s->msg, sizeof s->msg);
	msg[sizeof s->msg] = 0;
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = '?';
	/* A device may end a run (debug_exit) or ask for a reset or power
	 * off; the debugger and internal kinds are the VMM's own. */
	enum mb_stop r = s->reason;
	if (r != MB_STOP_EXIT && r != MB_STOP_SHUTDOWN && r != MB_STOP_RESET &&
	    r != MB_STOP_ERROR)
		r = MB_STOP_ERROR;
	mb_machine_stop(p->m, r, s->code, "%s", msg);
}

static void on_acked(void *opaque)
{
	struct mb_devproc *p = opaque;
	post(p, MB_DP_IRQ_ACK, (uint32_t)p->rep.irq);
}

static void on_freeze(void *opaque)
{
	struct mb_devproc *p = opaque;
	post(p, MB_DP_FREEZE, mb_evloop_frozen(p->m->ev));
}

/* ---- accesses (vCPU threads) -------------------------------------------- */

/* A DMA_READ / DMA_WRITE the device sends while it serves an access on
 * this channel (dma = "message"): answered here, checked against its
 * grants (core/devproc_dma.c). */
static void dma_request(struct mb_devproc *p, int fd, const uint8_t *msg, size_t n)
{
	static __thread uint8_t out[MB_DP_MAX_MSG];
	size_t len = mb_dp_dma_serve(&p->dma, p->m, p->rep.name, msg, n, out,
				     sizeof out);
	if (len)
		send(fd, out, len, MSG_NOSIGNAL);
}

static struct chan *my_chan(struct mb_devproc *p)
{
	if (!tslot)
		tslot = atomic_fetch_add(&nthreads, 1) + 1;
	return &p->ch[(tslot - 1) % p->nchan];
}

struct areply {
	struct mb_dp_hdr h;
	struct mb_dp_reply r;
};

/* One message over channel c, answered (REGION_READ / _WRITE or FLUSH)
 * or, with post, not: NULL, or why the process is to be taken for dead. */
static const char *send_on(struct mb_devproc *p, struct chan *c, uint16_t cmd,
			   bool post, uint32_t region, uint64_t off, const void *data,
			   unsigned size, struct areply *a)
{
	bool write = cmd == MB_DP_REGION_WRITE;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_access a;
	} q;
	/* the reply, or a DMA request the access makes (dma = "message") */
	static __thread uint8_t in[MB_DP_MAX_MSG];
	pthread_mutex_lock(&c->lock);
	q.h = (struct mb_dp_hdr){ .id = ++c->id, .cmd = cmd, .size = sizeof q,
				  .flags = post ? MB_DP_F_NO_REPLY : 0 };
	q.a = (struct mb_dp_access){ .offset = off, .region = region,
				     .count = size };
	if (write)
		memcpy(q.a.data, data, size);
	const char *fail = NULL;
	if (send(c->fd, &q, sizeof q, MSG_NOSIGNAL) != sizeof q) {
		fail = "its channel is closed";
	} else if (post) {
		atomic_fetch_add(&c->posted, 1);
	} else {
		for (;;) {
			ssize_t n = recv_timed(c->fd, in, sizeof in);
			struct mb_dp_hdr ih = { 0 };
			if (n >= (ssize_t)sizeof ih)
				memcpy(&ih, in, sizeof ih);
			if (n >= (ssize_t)sizeof ih && !(ih.flags & MB_DP_F_REPLY) &&
			    (ih.cmd == MB_DP_DMA_READ || ih.cmd == MB_DP_DMA_WRITE)) {
				dma_request(p, c->fd, in, (size_t)n);
				continue; /* then the access's own reply */
			}
			if (n > 0)
				memcpy(a, in, (size_t)n < sizeof *a ? (size_t)n : sizeof *a);
			if (n == 0) {
				fail = "no reply in time (hung)";
			} else if (n < 0) {
				fail = "its channel is closed";
			} else if ((size_t)n != sizeof *a || a->h.size != sizeof *a ||
				   !(a->h.flags & MB_DP_F_REPLY) || a->h.cmd != q.h.cmd) {
				fail = "a malformed reply";
			} else if (a->h.id != q.h.id) {
				continue; /* stale: a reply after a timeout */
			}
			break;
		}
		if (!fail) /* in channel order: what was posted before is done */
			atomic_store(&c->posted, 0);
	}
	pthread_mutex_unlock(&c->lock);
	return fail;
}

static const char *exchange(struct prange *r, uint64_t off, const void *data,
			    unsigned size, bool write, struct areply *a)
{
	return send_on(r->p, my_chan(r->p), write ? MB_DP_REGION_WRITE : MB_DP_REGION_READ,
		       false, r->idx, off, data, size, a);
}

static void take_reply(struct mb_devproc *p, const struct areply *a);

/* Channel c's posted writes done, and what they caused applied. */
static void flush_chan(struct mb_devproc *p, struct chan *c)
{
	struct areply a;
	if (!atomic_load(&c->posted) || !atomic_load(&p->alive))
		return;
	atomic_fetch_add(&p->nflushes, 1);
	unsigned inc = atomic_load(&p->incarnation);
	const char *fail = send_on(p, c, MB_DP_FLUSH, false, 0, 0, NULL, 0, &a);
	if (fail)
		mark_dead_of(p, fail, inc);
	else
		take_reply(p, &a);
}

/* Every channel's posted writes (before a read: another vCPU's writes
 * come first, as they would in process; at hlt and before a save). */
static void flush_all(struct mb_devproc *p, struct chan *except)
{
	for (unsigned i = 0; i < p->nchan; i++)
		if (&p->ch[i] != except)
			flush_chan(p, &p->ch[i]);
}

static void on_hlt(void *opaque)
{
	flush_all(opaque, NULL);
}

/* ---- posted writes through shared rings ("Posted writes") ---------------- */

/* A posted write into channel c's ring: no system call unless the
 * process's ring thread sleeps (then one eventfd write). False when there
 * is no room even after a flush (a process that does not move tail): the
 * caller sends the write as an ordinary one. */
static bool ring_post(struct mb_devproc *p, struct chan *c, uint32_t region,
		      uint64_t off, const void *data, unsigned size)
{
	unsigned i = (unsigned)(c - p->ch);
	struct mb_dp_ring *r = &p->ring[i];
	for (int tries = 0;; tries++) {
		pthread_mutex_lock(&c->lock);
		uint32_t t = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
		if (c->head - t < MB_DP_RING_N) /* a tail past head: no room */
			break;
		pthread_mutex_unlock(&c->lock);
		if (tries || !atomic_load(&p->alive))
			return false;
		flush_chan(p, c); /* the channel thread empties it first */
	}
	struct mb_dp_ring_ent *e = &r->e[c->head % MB_DP_RING_N];
	e->offset = off;
	e->region = region;
	e->count = size;
	memcpy(e->data, data, size);
	c->head++;
	__atomic_store_n(&r->head, c->head, __ATOMIC_RELEASE);
	atomic_fetch_add(&c->posted, 1);
	/* Against the ring thread's "sleeping = 1; fence; head?": one of
	 * the two sees the other's store (Dekker), so no wakeup is lost. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	bool wake = __atomic_load_n(&r->sleeping, __ATOMIC_RELAXED) != 0;
	pthread_mutex_unlock(&c->lock);
	if (wake) {
		uint64_t one = 1;
		if (write(p->bell[i], &one, sizeof one) == sizeof one)
			atomic_fetch_add(&p->nbells, 1);
	}
	return true;
}

/* The rings, made once per device (not per process): a sealed memfd of
 * one ring per channel and a doorbell eventfd each. Left off (posted
 * writes over the socket) when the descriptors would not fit. */
static int ring_setup(struct mb_devproc *p, const struct mb_devproc_config *cfg)
{
	unsigned n = chans_of(p->m);
	unsigned nvfd = strncmp(p->kind, "virtio_", 7) ? 0 : MB_DP_MAX_KICK + 1;
	if (3 + 2 + n + MB_DP_MAX_MEM + cfg->nfds + nvfd + 1 + n +
	    (p->dma.dirty_fd >= 0) > MB_LAUNCH_MAX_FDS)
		return 0;
	size_t size = (n * sizeof(struct mb_dp_ring) + 4095) & ~(size_t)4095;
	int fd = memfd_create("moonbox-posted", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, (off_t)size) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return mb_seterr(-e, "isolate: posted ring: %s", strerror(e));
	}
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		int e = errno;
		close(fd);
		return mb_seterr(-e, "isolate: posted ring: mmap: %s", strerror(e));
	}
	p->ring_fd = fd, p->ring = map, p->ring_size = size;
	for (unsigned i = 0; i < n; i++)
		if ((p->bell[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
			return mb_seterr(-errno, "isolate: eventfd: %s", strerror(errno));
	p->ring_on = true;
	return 0;
}

/* After a restart, once the state is loaded: the posted writes the dead
 * process had not taken are still in the rings; the new one does them
 * (a FLUSH: its channel thread empties its ring first). */
static void ring_replay(struct mb_devproc *p)
{
	for (unsigned i = 0; p->ring_on && i < p->nchan; i++) {
		struct chan *c = &p->ch[i];
		pthread_mutex_lock(&c->lock);
		uint32_t left = c->head - __atomic_load_n(&p->ring[i].tail, __ATOMIC_ACQUIRE);
		pthread_mutex_unlock(&c->lock);
		if (!left || left > MB_DP_RING_N)
			continue; /* nothing, or a tail that makes no sense */
		atomic_store(&c->posted, left);
		atomic_fetch_add(&p->nreplayed, left);
		flush_chan(p, c);
	}
}

/* An access in flight when its process died: with on_crash = "restart",
 * wait (bounded) until the death's policy has run, since the count was
 * `seen`; true when a new process is there to take the access again. */
static bool await_restart(struct mb_devproc *p, unsigned seen)
{
	if (p->policy != MB_DP_ON_CRASH_RESTART)
		return false;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	/* the launch and CREATE (10 s at most) plus the state's LOAD */
	long ms = 12000 + 4L * p->timeout_ms;
	until.tv_sec += ms / 1000;
	until.tv_nsec += (ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000)
		until.tv_sec++, until.tv_nsec -= 1000000000;
	pthread_mutex_lock(&p->why_lock);
	int rc = 0;
	while (p->settled == seen && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&p->settle, &p->why_lock, &until);
	bool back = p->settled != seen;
	pthread_mutex_unlock(&p->why_lock);
	return back && atomic_load(&p->alive);
}

static void access_(struct prange *r, uint64_t off, void *data, unsigned size,
		    bool write)
{
	struct mb_devproc *p = r->p;
	struct areply a;
	if (!write)
		memset(data, 0xff, size);
	if (!atomic_load(&p->alive) || size > 8)
		return;
	unsigned seen = atomic_load_explicit(&p->settled, memory_order_acquire);
	struct mb_fault_verdict v;
	struct mb_fault_site *fs = atomic_load_explicit(&p->dfault, memory_order_acquire);
	if (__builtin_expect(fs != NULL, 0)) {
		mb_fault_dev_decide(fs, write ? MB_FAULT_OP_WRITE : MB_FAULT_OP_READ,
				    r->base + off, size, &v);
		if (v.kill) /* before it is sent: the access is in flight */
			mark_dead(p, "killed by a fault rule (dev.kill)");
		if (v.drop)
			return;
	}
	if (p->posted && write && !(fs && (v.delay_ms || v.kill)) && p->ring_on) {
		if (ring_post(p, my_chan(p), r->idx, off, data, size)) {
			atomic_fetch_add(&p->nposted, 1);
			return;
		}
		/* no room: as a synchronous write below */
	} else if (p->posted && write && !(fs && (v.delay_ms || v.kill))) {
		struct chan *c = my_chan(p);
		const char *fail = send_on(p, c, MB_DP_REGION_WRITE, true, r->idx, off,
					   data, size, NULL);
		if (!fail) {
			atomic_fetch_add(&p->nposted, 1);
			if (atomic_load(&c->posted) >= POST_WINDOW)
				flush_chan(p, c);
			return;
		}
		/* the channel is gone: as a synchronous write below */
	}
	if (p->posted && !write) /* its own channel's go first by order */
		flush_all(p, my_chan(p));
	unsigned inc = atomic_load(&p->incarnation);
	const char *fail = atomic_load(&p->alive) ? exchange(r, off, data, size, write, &a)
						  : "killed";
	if (fail) {
		mark_dead_of(p, fail, inc);
		/* In flight when it died: once only, on the restarted process
		 * (a read gets the new process's value, not all ones). */
		if (!await_restart(p, seen))
			return;
		inc = atomic_load(&p->incarnation);
		if ((fail = exchange(r, off, data, size, write, &a))) {
			mark_dead_of(p, fail, inc);
			return;
		}
	}
	if (!(a.h.flags & MB_DP_F_ERROR) && !write)
		memcpy(data, a.r.a.data, size);
	if (__builtin_expect(fs != NULL, 0))
		mb_devproc_fault_reply(&v, write, data, size);
	take_reply(p, &a);
}

/* What an access caused, from its reply: console bytes, line changes, a
 * stop, in that order (as in process). */
static void take_reply(struct mb_devproc *p, const struct areply *ap)
{
	if (p->console && ap->r.nout && ap->r.nout <= MB_DP_SIDE_OUT) {
		uint8_t out[MB_DP_SIDE_OUT];
		if (__builtin_expect(mb_devproc_wire_faulted(p), 0))
			mb_chr_write(p->console, out, mb_devproc_wire(p, ap->r.out,
								      ap->r.nout, out));
		else
			mb_chr_write(p->console, ap->r.out, ap->r.nout);
	}
	if (ap->r.irq_seq)
		catch_up(p, ap->r.irq_seq);
	if (ap->r.stopped)
		apply_stop(p, &ap->r.stop);
}

static void px_read(void *dev, uint64_t off, void *data, unsigned size)
{
	access_(dev, off, data, size, false);
}

static void px_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	access_(dev, off, (void *)data, size, true);
}

static const struct mb_io_ops px_io = { px_read, px_write };

/* ---- events, death and the policy (event loop) --------------------------- */

static void stop_watching(struct mb_devproc *p)
{
	if (p->evt >= 0)
		mb_machine_unwatch(p->m, p->evt);
	if (p->pidfd >= 0)
		mb_machine_unwatch(p->m, p->pidfd);
}

static void close_proc(struct mb_devproc *p)
{
	stop_watching(p);
	atomic_store(&p->alive, false);
	pthread_mutex_lock(&p->why_lock);
	int pidfd = p->pidfd;
	pid_t pid = p->pid;
	p->pidfd = -1;
	p->pid = -1;
	pthread_mutex_unlock(&p->why_lock);
	if (pidfd >= 0) {
		/* Gone for sure before anything is respawned: a pidfd turns
		 * readable when its process has exited. */
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		struct pollfd pf = { .fd = pidfd, .events = POLLIN };
		poll(&pf, 1, 2000);
		int st;
		mb_launch_status(p->m, pid, &st); /* forget it */
		close(pidfd);
	}
	pthread_mutex_lock(&p->post_lock);
	if (p->ctl >= 0)
		close(p->ctl);
	p->ctl = -1;
	pthread_mutex_unlock(&p->post_lock);
	pthread_mutex_lock(&p->ev_lock); /* no access is catching up */
	if (p->evt >= 0)
		close(p->evt);
	p->ctl = p->evt = -1;
	p->applied = 0; /* a new process counts from 1 */
	pthread_mutex_unlock(&p->ev_lock);
	for (unsigned i = 0; i < p->nchan; i++) {
		pthread_mutex_lock(&p->ch[i].lock);
		if (p->ch[i].fd >= 0)
			close(p->ch[i].fd);
		p->ch[i].fd = -1;
		pthread_mutex_unlock(&p->ch[i].lock);
	}
	mb_dp_faults_drop_holds(&p->mf); /* they died with the process */
	mb_dp_on_cancel(&p->mf);         /* and so did its m:on asks */
}

static void on_exit_(void *opaque, int fd);

static void on_event(void *opaque, int fd)
{
	struct mb_devproc *p = opaque;
	pthread_mutex_lock(&p->ev_lock);
	int rc = 1;
	for (int budget = 64; budget-- && rc > 0;)
		rc = take_event(p, 0);
	pthread_mutex_unlock(&p->ev_lock);
	if (rc < 0) { /* closed: the pidfd says how it ended */
		mb_machine_unwatch(p->m, fd);
		mark_dead(p, "its event socket closed");
	}
}

static int spawn(struct mb_devproc *p);

static void on_exit_(void *opaque, int fd)
{
	struct mb_devproc *p = opaque;
	char why[160];
	int st = 0, rc = -EAGAIN;
	pthread_mutex_lock(&p->why_lock);
	pid_t pid = p->pid;
	pthread_mutex_unlock(&p->why_lock);
	/* The launcher reaps its children; it may hear of the exit a little
	 * after the pidfd turned readable. */
	for (int i = 0; i < 200 && rc == -EAGAIN; i++) {
		rc = mb_launch_status(p->m, pid, &st);
		if (rc == -EAGAIN)
			usleep(1000);
	}
	if (rc == 0 && WIFEXITED(st))
		snprintf(why, sizeof why, "exited with status %d%s", WEXITSTATUS(st),
			 WEXITSTATUS(st) == MB_DP_EXIT_INSTRUCTIONS && !strcmp(p->kind, "device")
				 ? " (its Lua module ran past its instruction limit)"
			 : WEXITSTATUS(st) == MB_DP_EXIT_MEMORY && !strcmp(p->kind, "device")
				 ? " (its Lua module went past its memory limit)" : "");
	else if (rc == 0 && WIFSIGNALED(st))
		snprintf(why, sizeof why, "killed by signal %d%s", WTERMSIG(st),
			 WTERMSIG(st) == SIGSYS ? " (a system call the sandbox does "
						  "not allow)" : "");
	else
		snprintf(why, sizeof why, "gone");
	(void)fd;
	pthread_mutex_lock(&p->why_lock);
	if (atomic_load(&p->alive))
		snprintf(p->why, sizeof p->why, "%s", why);
	else if (strstr(p->why, "hung") || strstr(p->why, "time") ||
		 strstr(p->why, "fault rule"))
		; /* keep "hung" or the rule's name: the kill was ours */
	else
		snprintf(p->why, sizeof p->why, "%s", why);
	atomic_store(&p->alive, false);
	snprintf(why, sizeof why, "%s", p->why);
	pthread_mutex_unlock(&p->why_lock);
	close_proc(p);
	fprintf(stderr, "moonbox: device %s (pid gone): %s\n", p->rep.name, why);
	switch (p->policy) {
	case MB_DP_ON_CRASH_STOP:
		mb_machine_stop(p->m, MB_STOP_ERROR, 1, "device %s: its process %s",
				p->rep.name, why);
		break;
	case MB_DP_ON_CRASH_RESTART:
		if (mb_devproc_restart(p))
			mb_machine_stop(p->m, MB_STOP_ERROR, 1, "device %s: restart "
					"failed: %s", p->rep.name, mb_errmsg());
		break;
	case MB_DP_ON_CRASH_NEEDS_RESET:
		break; /* stays dead: reads all ones until the script acts */
	case MB_DP_ON_CRASH_CALL:
		if (p->crashed)
			p->crashed(p->ctx, p, why);
		break;
	}
	pthread_mutex_lock(&p->why_lock); /* in-flight accesses go on */
	atomic_fetch_add(&p->settled, 1);
	pthread_cond_broadcast(&p->settle);
	pthread_mutex_unlock(&p->why_lock);
}

/* ---- spawning and creating ---------------------------------------------- */

static int mem_fds(struct mb_machine *m, int *fds, struct mb_dp_mem *mem,
		   unsigned *n)
{
	*n = 0;
	for (size_t i = 0; i < mb_mem_count(m->mem); i++) {
		int fd = mb_mem_region_fd(m->mem, i);
		const struct mb_mem_region *r = mb_mem_region(m->mem, i);
		if (fd < 0)
			return mb_seterr(-ENOTSUP, "isolate: memory region %s is not "
					 "a memfd (mapped by the caller): a device "
					 "process cannot share it", r->name);
		if (*n == MB_DP_MAX_MEM)
			return mb_seterr(-ENOSPC, "isolate: more than %d memory regions",
					 MB_DP_MAX_MEM);
		fds[*n] = fd;
		mem[*n] = (struct mb_dp_mem){ .base = r->base, .size = r->size,
					      .flags = r->flags };
		snprintf(mem[*n].name, sizeof mem[*n].name, "%s", r->name);
		(*n)++;
	}
	return 0;
}

static unsigned chans_of(struct mb_machine *m)
{
	unsigned n = m->ncpu + 1; /* one per vCPU, one for everyone else */
	return n > MB_DP_MAX_CHAN ? MB_DP_MAX_CHAN : n;
}

int mb_devproc_first_fd(struct mb_machine *m)
{
	return MB_DP_FD_CHAN0 + (int)chans_of(m) + (int)mb_mem_count(m->mem);
}

/* The doorbell and interrupt eventfds of a virtio device, made once (a
 * restarted process gets the same ones: kicks made while it was down
 * wait in their counters). The irq one only with KVM's irqchip. */
static int virtio_fds(struct mb_devproc *p)
{
	for (unsigned i = 0; i < MB_DP_MAX_KICK; i++)
		if (p->kick[i] < 0 &&
		    (p->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
			return mb_seterr(-errno, "isolate: eventfd: %s", strerror(errno));
	if (p->kick_irq < 0 && p->m->irqchip == MB_IRQCHIP_KERNEL &&
	    (p->kick_irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		return mb_seterr(-errno, "isolate: eventfd: %s", strerror(errno));
	return 0;
}

/* The user PIC's way (or no KVM irqfd): each write of the process to
 * kick_irq pulses the line, one event-loop hop. */
static void on_irq_relay(void *opaque, int fd)
{
	struct mb_devproc *p = opaque;
	uint64_t n;
	if (read(fd, &n, sizeof n) == sizeof n && p->has_line)
		mb_irq_pulse(&p->line);
}

/* After the first report: KVM signals the process's doorbells itself
 * (QueueNotify writes never exit), and raises its line from kick_irq. */
static void wire_virtio(struct mb_devproc *p)
{
	if (!p->rep.nvirtio)
		return;
	uint64_t notify = p->rep.virtio[0].base + MB_VIRTIO_MMIO_QUEUE_NOTIFY;
	for (unsigned i = 0; i < p->rep.nkick && i < MB_DP_MAX_KICK; i++)
		if (mb_machine_ioeventfd(p->m, p->kick[i], notify, 4, i, true) == 0)
			p->ndoorbells = i + 1;
		else
			break; /* the rest cross as MMIO writes: the process
				* signals its own doorbell then */
	if (p->kick_irq >= 0 && p->has_line) {
		if (mb_machine_irqfd(p->m, p->kick_irq, (unsigned)p->rep.irq, true) == 0)
			p->irqfd = true;
		else if (mb_machine_watch(p->m, p->kick_irq, on_irq_relay, p) == 0)
			p->irq_relay = true;
	}
}

static void unwire_virtio(struct mb_devproc *p)
{
	uint64_t notify = p->rep.virtio[0].base + MB_VIRTIO_MMIO_QUEUE_NOTIFY;
	for (unsigned i = 0; i < p->ndoorbells; i++)
		mb_machine_ioeventfd(p->m, p->kick[i], notify, 4, i, false);
	if (p->irqfd)
		mb_machine_irqfd(p->m, p->kick_irq, (unsigned)p->rep.irq, false);
	if (p->irq_relay)
		mb_machine_unwatch(p->m, p->kick_irq);
	for (unsigned i = 0; i < MB_DP_MAX_KICK; i++)
		if (p->kick[i] >= 0)
			close(p->kick[i]);
	if (p->kick_irq >= 0)
		close(p->kick_irq);
}

int mb_devproc_first_fd_for(struct mb_machine *m, const struct mb_devproc_config *cfg)
{
	if (!cfg || cfg->dma == MB_DP_DMA_SHARED)
		return mb_devproc_first_fd(m);
	return MB_DP_FD_CHAN0 + (int)chans_of(m) +
	       (int)(cfg->dma == MB_DP_DMA_GRANTED ? cfg->ngrants
						   : mb_mem_count(m->mem));
}

static int spawn(struct mb_devproc *p)
{
	struct mb_machine *m = p->m;
	int fds[MB_LAUNCH_MAX_FDS], mine[2 + MB_DP_MAX_CHAN], nmine = 0;
	unsigned nfd = 0, nmem;
	struct mb_dp_create *c = calloc(1, sizeof *c + strlen(p->opts));
	int rc = 0, sv[2];
	if (!c)
		return mb_seterr(-ENOMEM, "isolate: out of memory");
	p->nchan = chans_of(m);
	unsigned nvfd = strncmp(p->kind, "virtio_", 7) ? 0 : MB_DP_MAX_KICK + 1;
	if (3 + 2 + p->nchan + MB_DP_MAX_MEM + p->nfds + nvfd +
	    (p->ring_on ? 1 + p->nchan : 0) + (p->dma.dirty_fd >= 0) > MB_LAUNCH_MAX_FDS) {
		rc = mb_seterr(-ENOSPC, "isolate: too many descriptors");
		goto out;
	}
	for (unsigned i = 0; i < 2 + p->nchan; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
			rc = mb_seterr(-errno, "isolate: socketpair: %s", strerror(errno));
			goto fail;
		}
		mine[nmine++] = sv[0];
		fds[nfd++] = sv[1];
	}
	rc = p->dma.mode == MB_DP_DMA_SHARED ? mem_fds(m, fds + nfd, c->mem, &nmem)
					     : mb_dp_dma_mem(&p->dma, m, fds + nfd, c->mem, &nmem);
	if (rc)
		goto fail;
	for (unsigned i = 0; i < nmem; i++) {
		c->mem[i].fd = (int32_t)(3 + nfd + i);
		if (p->dma.mode == MB_DP_DMA_SHARED)
			c->mem[i].dirty_bit = mb_dp_dirty_bit(&p->dma, c->mem[i].base);
	}
	int memfds[MB_DP_MAX_MEM];
	memcpy(memfds, fds + nfd, nmem * sizeof *memfds);
	nfd += nmem;
	for (unsigned i = 0; i < p->nfds; i++)
		fds[nfd++] = p->fds[i];
	c->nkick = 0, c->irq_fd = -1;
	if (strncmp(p->kind, "virtio_", 7) == 0 && (rc = virtio_fds(p)) == 0) {
		c->nkick = MB_DP_MAX_KICK;
		c->kick_fd = (int32_t)(3 + nfd);
		for (unsigned i = 0; i < MB_DP_MAX_KICK; i++)
			fds[nfd++] = p->kick[i];
		if (p->kick_irq >= 0) {
			c->irq_fd = (int32_t)(3 + nfd);
			fds[nfd++] = p->kick_irq;
		}
	}
	if (rc)
		goto fail;
	c->nring = 0, c->ring_fd = c->bell_fd = -1;
	if (p->ring_on) {
		c->nring = p->nchan;
		c->ring_size = p->ring_size;
		c->ring_fd = (int32_t)(3 + nfd);
		fds[nfd++] = p->ring_fd;
		c->bell_fd = (int32_t)(3 + nfd);
		for (unsigned i = 0; i < p->nchan; i++)
			fds[nfd++] = p->bell[i];
	}
	c->dirty_fd = -1;
	if (p->dma.dirty_fd >= 0) { /* the VMM's: a restart gets the same bits */
		c->dirty_fd = (int32_t)(3 + nfd);
		c->dirty_size = p->dma.dirty_size;
		fds[nfd++] = p->dma.dirty_fd;
	}
	pid_t pid = -1;
	int pidfd = -1;
	rc = launch(m, fds, nfd, &pid, &pidfd);
	mb_dp_dma_close_mem(c->mem, memfds, nmem); /* placeholders of revoked grants */
	pthread_mutex_lock(&p->why_lock);
	p->pid = pid, p->pidfd = pidfd;
	atomic_fetch_add(&p->incarnation, 1);
	pthread_mutex_unlock(&p->why_lock);
	for (unsigned i = 0; i < 2 + p->nchan; i++)
		close(fds[i]); /* the child's ends */
	if (rc) {
		for (int i = 0; i < nmine; i++)
			close(mine[i]);
		goto out;
	}
	pthread_mutex_lock(&p->post_lock);
	p->ctl = mine[0];
	pthread_mutex_unlock(&p->post_lock);
	pthread_mutex_lock(&p->ev_lock); /* state() may be taking events */
	p->evt = mine[1];
	pthread_mutex_unlock(&p->ev_lock);
	for (unsigned i = 0; i < p->nchan; i++) {
		pthread_mutex_lock(&p->ch[i].lock);
		p->ch[i].fd = mine[2 + i];
		/* accesses wait in recv itself: one system call, not two */
		struct timeval tv = { p->timeout_ms / 1000,
				      (p->timeout_ms % 1000) * 1000 };
		setsockopt(mine[2 + i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		pthread_mutex_unlock(&p->ch[i].lock);
	}
	atomic_store(&p->alive, true);
	c->version = MB_DP_VERSION;
	c->irqchip = m->irqchip;
	c->nchan = p->nchan;
	c->nmem = nmem;
	c->nfds = nfd;
	snprintf(c->kind, sizeof c->kind, "%s", p->kind);
	c->optlen = (uint32_t)strlen(p->opts);
	memcpy(c + 1, p->opts, c->optlen);
	struct mb_dp_report rep;
	if (!p->dev) /* named once it exists (a restart keeps its name) */
		snprintf(p->rep.name, sizeof p->rep.name, "%s", p->kind);
	ssize_t n = request(p, MB_DP_CREATE, c, sizeof *c + c->optlen, &rep,
			    sizeof rep, 10000);
	if (n < 0) {
		rc = (int)n;
		goto kill;
	}
	if (n != sizeof rep || rep.nranges > 8 || rep.nvirtio > 2 ||
	    rep.irq < -1 || rep.irq >= (int)mb_machine_irq_lines(m)) {
		rc = mb_seterr(-EPROTO, "isolate: %s: malformed device report",
			       p->kind);
		goto kill;
	}
	rep.name[sizeof rep.name - 1] = rep.kind[sizeof rep.kind - 1] = 0;
	rep.state_name[sizeof rep.state_name - 1] = 0;
	rep.sandbox[sizeof rep.sandbox - 1] = 0;
	if (strcmp(rep.kind, p->kind)) {
		rc = mb_seterr(-EPROTO, "isolate: asked for a %s, got a %s", p->kind,
			       rep.kind);
		goto kill;
	}
	if (p->dev) { /* a restart: the same device or nothing */
		bool same = rep.nranges == p->rep.nranges && rep.irq == p->rep.irq;
		for (unsigned i = 0; same && i < rep.nranges; i++)
			same = rep.r[i].space == p->rep.r[i].space &&
			       rep.r[i].base == p->rep.r[i].base &&
			       rep.r[i].size == p->rep.r[i].size;
		if (!same) {
			rc = mb_seterr(-EPROTO, "isolate: %s came back with other "
				       "ranges", p->rep.name);
			goto kill;
		}
		char name[32];
		memcpy(name, p->rep.name, sizeof name);
		p->rep = rep;
		memcpy(p->rep.name, name, sizeof name);
	} else {
		p->rep = rep;
	}
	if (mb_machine_watch(m, p->evt, on_event, p) ||
	    mb_machine_watch(m, p->pidfd, on_exit_, p)) {
		rc = -ENOMEM;
		goto kill;
	}
	post(p, MB_DP_FREEZE, mb_evloop_frozen(m->ev));
	goto out;
fail:
	for (unsigned i = 0; i < nfd && i < 2 + p->nchan; i++)
		close(fds[i]);
	for (int i = 0; i < nmine; i++)
		close(mine[i]);
	goto out;
kill:
	{
		char msg[300];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		close_proc(p);
		mb_seterr(rc, "%s", msg);
	}
out:
	free(c);
	return rc;
}

/* ---- the proxy device --------------------------------------------------- */

static const struct mb_state_desc *desc_of(struct mb_devproc *p)
{
	for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++)
		if (strcmp(descs[i].kind, p->kind) == 0) {
			const struct mb_state_desc *d = descs[i].desc;
			if (d->size == p->rep.state_size &&
			    d->version == p->rep.state_version &&
			    strcmp(d->name, p->rep.state_name) == 0)
				return d;
		}
	return NULL;
}

static int px_save(void *impl, void *st)
{
	struct mb_devproc *p = impl;
	size_t size = p->ops.state->size;
	if (!atomic_load(&p->alive)) {
		if (!p->have_state)
			return mb_seterr(-EIO, "%s: the device process is dead (%s)",
					 p->rep.name, p->why);
		memcpy(st, p->last_state, size); /* what it had when last seen */
		return 0;
	}
	if (p->posted)
		flush_all(p, NULL);
	ssize_t n = request(p, MB_DP_SAVE, NULL, 0, st, size, p->timeout_ms * 4);
	if (n < 0)
		return (int)n;
	if ((size_t)n != size)
		return mb_seterr(-EPROTO, "%s: state of %zd bytes, expected %zu",
				 p->rep.name, n, size);
	memcpy(p->last_state, st, size);
	p->have_state = true;
	return 0;
}

static int px_load(void *impl, const void *st)
{
	struct mb_devproc *p = impl;
	size_t size = p->ops.state->size;
	ssize_t n = request(p, MB_DP_LOAD, st, size, NULL, 0, p->timeout_ms * 4);
	if (n < 0)
		return (int)n;
	memcpy(p->last_state, st, size);
	p->have_state = true;
	return 0;
}

static void px_quiesce(void *impl)
{
	struct mb_devproc *p = impl;
	if (p->posted)
		flush_all(p, NULL);
	request(p, MB_DP_QUIESCE, NULL, 0, NULL, 0, p->timeout_ms * 4);
}

/* ---- uart faults on the wire ---------------------------------------------- */

int mb_devproc_set_uart_fault(struct mb_devproc *p, struct mb_fault_site *s)
{
	if (strcmp(p->kind, "uart16550") != 0)
		return mb_seterr(-ENOTSUP, "dev: %s is an isolated %s: fault rules act on "
				 "an isolated UART's wire only", mb_device_name(p->dev), p->kind);
	return mb_fault_site_install(&p->fault, s);
}

int mb_devproc_set_model_fault(struct mb_devproc *p, struct mb_fault_site *s,
			       unsigned fam, unsigned ops)
{
	int rc = mb_fault_site_install(&p->mf.site, s);
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mf.lock);
	unsigned was_fam = p->mf.fam, was_ops = p->mf.ops;
	p->mf.fam |= fam, p->mf.ops |= ops;
	bool same = p->mf.fam == was_fam && p->mf.ops == was_ops;
	pthread_mutex_unlock(&p->mf.lock);
	/* Synchronous: the rule holds for the next request plan:add's
	 * caller makes. A dead process is armed when it restarts. */
	if (same || !atomic_load(&p->alive))
		return 0;
	if ((rc = arm(p))) {
		pthread_mutex_lock(&p->mf.lock);
		p->mf.fam = was_fam, p->mf.ops = was_ops;
		pthread_mutex_unlock(&p->mf.lock);
	}
	return rc;
}

int mb_devproc_set_on(struct mb_devproc *p, unsigned kinds, unsigned ops,
		      mb_devproc_on_fn *fn, void (*cancel)(void *ctx, const void *dev),
		      void *ctx)
{
	if (((kinds & MB_DP_ON_BLK) && strcmp(p->kind, "virtio_blk")) ||
	    ((kinds & MB_DP_ON_PIT) && strcmp(p->kind, "pit8254")) ||
	    (kinds & ~(MB_DP_ON_BLK | MB_DP_ON_PIT)))
		return mb_seterr(-ENOTSUP, "dev: %s is an isolated %s", mb_device_name(p->dev),
				 p->kind);
	pthread_mutex_lock(&p->mf.lock);
	mb_devproc_on_fn *old = atomic_load(&p->mf.on);
	if (old && (old != fn || p->mf.on_ctx != ctx)) {
		pthread_mutex_unlock(&p->mf.lock);
		return mb_seterr(-EBUSY, "dev: %s: already observed", mb_device_name(p->dev));
	}
	p->mf.on_ctx = ctx, p->mf.on_cancel = cancel;
	atomic_store_explicit(&p->mf.on, fn, memory_order_release);
	unsigned was_kinds = p->mf.on_kinds, was_ops = p->mf.on_ops;
	p->mf.on_kinds |= kinds, p->mf.on_ops |= ops;
	bool same = p->mf.on_kinds == was_kinds && p->mf.on_ops == was_ops;
	pthread_mutex_unlock(&p->mf.lock);
	/* Synchronous, as a rule's arming: the next event is asked. */
	int rc = 0;
	if (!same && atomic_load(&p->alive) && (rc = arm_on(p))) {
		pthread_mutex_lock(&p->mf.lock);
		p->mf.on_kinds = was_kinds, p->mf.on_ops = was_ops;
		pthread_mutex_unlock(&p->mf.lock);
	}
	return rc;
}

int mb_devproc_set_dev_fault(struct mb_devproc *p, struct mb_fault_site *s)
{
	return mb_fault_site_install(&p->dfault, s);
}

int mb_devproc_set_uart_hook(struct mb_devproc *p,
			     void (*fn)(void *ctx, bool rx, uint8_t *byte, bool *drop),
			     void *ctx)
{
	if (strcmp(p->kind, "uart16550") != 0)
		return mb_seterr(-ENOTSUP, "dev: %s is an isolated %s, not a UART",
				 mb_device_name(p->dev), p->kind);
	/* set once per UART (lon.c keeps one dispatcher per device) */
	p->whook_ctx = ctx;
	atomic_store_explicit(&p->whook, fn, memory_order_release);
	return 0;
}

bool mb_devproc_wire_faulted(struct mb_devproc *p)
{
	return p && (atomic_load_explicit(&p->fault, memory_order_acquire) != NULL ||
		     atomic_load_explicit(&p->whook, memory_order_acquire) != NULL);
}

size_t mb_devproc_wire(struct mb_devproc *p, const uint8_t *in, size_t len, uint8_t *out)
{
	struct mb_fault_site *fs = atomic_load_explicit(&p->fault, memory_order_acquire);
	void (*hook)(void *, bool, uint8_t *, bool *) =
		atomic_load_explicit(&p->whook, memory_order_acquire);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		/* As in process (m:on "uart"): the console's end of the wire,
		 * so the hook sees tx bytes after the rules. */
		uint8_t c = in[i];
		bool drop = false;
		struct mb_fault_verdict v = { 0 };
		if (fs)
			mb_fault_uart_decide(fs, false, atomic_fetch_add(&p->fault_tx, 1) + 1, &v);
		drop = v.drop;
		c ^= v.flip;
		if (hook && !drop)
			hook(p->whook_ctx, false, &c, &drop);
		if (!drop)
			out[n++] = c;
	}
	return n;
}

size_t mb_devproc_relay_rx(struct mb_devproc *p, const uint8_t *in, size_t len,
			   uint8_t *out)
{
	struct mb_fault_site *fs = p ? atomic_load_explicit(&p->fault, memory_order_acquire)
				     : NULL;
	void (*hook)(void *, bool, uint8_t *, bool *) =
		p ? atomic_load_explicit(&p->whook, memory_order_acquire) : NULL;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		/* As in process (m:on "uart"): the hook sees the byte before
		 * the rules, and a byte it drops is not decided. */
		uint8_t c = in[i];
		bool drop = false;
		if (hook)
			hook(p->whook_ctx, true, &c, &drop);
		if (drop)
			continue;
		struct mb_fault_verdict v = { 0 };
		if (fs)
			mb_fault_uart_decide(fs, true, atomic_fetch_add(&p->fault_rx, 1) + 1, &v);
		n += mb_dp_relay_put(&v, c, out + n);
	}
	return n;
}

static void px_free(void *impl)
{
	struct mb_devproc *p = impl;
	mb_fault_site_put(atomic_load(&p->fault));
	mb_fault_site_put(atomic_load(&p->dfault));
	for (struct hook **h = &p->m->freeze_hooks; *h; h = &(*h)->next)
		if (*h == &p->freeze_hook) {
			*h = p->freeze_hook.next;
			break;
		}
	pthread_mutex_lock(&p->m->lock);
	for (struct hook **h = &p->m->hlt_hooks; *h; h = &(*h)->next)
		if (*h == &p->hlt_hook) {
			*h = p->hlt_hook.next;
			break;
		}
	pthread_mutex_unlock(&p->m->lock);
	close_proc(p);
	unwire_virtio(p);
	for (unsigned i = 0; i < p->nfds; i++)
		close(p->fds[i]);
	for (unsigned i = 0; i < MB_DP_MAX_CHAN; i++)
		pthread_mutex_destroy(&p->ch[i].lock);
	pthread_mutex_destroy(&p->ctl_lock);
	pthread_mutex_destroy(&p->grant_lock);
	pthread_mutex_destroy(&p->post_lock);
	pthread_mutex_destroy(&p->ev_lock);
	pthread_mutex_destroy(&p->why_lock);
	pthread_cond_destroy(&p->settle);
	mb_dp_dma_fini(&p->dma);
	mb_dp_faults_fini(&p->mf);
	if (p->ring)
		munmap(p->ring, p->ring_size);
	if (p->ring_fd >= 0)
		close(p->ring_fd);
	for (unsigned i = 0; i < MB_DP_MAX_CHAN; i++)
		if (p->bell[i] >= 0)
			close(p->bell[i]);
	free(p->log);
	free(p->fds);
	free(p->opts);
	free(p->last_state);
	free(p);
}

static void map_late_grants(struct mb_devproc *p);

int mb_devproc_restart(struct mb_devproc *p)
{
	close_proc(p);
	pthread_mutex_lock(&p->grant_lock);
	int rc = spawn(p);
	if (!rc)
		map_late_grants(p); /* before its state: rings may lie in them */
	pthread_mutex_unlock(&p->grant_lock);
	if (rc)
		return rc;
	p->restarts++;
	if (arm(p))
		fprintf(stderr, "moonbox: device %s restarted without its fault "
			"rules: %s\n", p->rep.name, mb_errmsg());
	if (p->have_state && p->ops.state) {
		ssize_t n = request(p, MB_DP_LOAD, p->last_state, p->ops.state->size,
				    NULL, 0, p->timeout_ms * 4);
		if (n < 0)
			fprintf(stderr, "moonbox: device %s restarted without its "
				"state: %s\n", p->rep.name, mb_errmsg());
	}
	/* The new process counts its events from 1; the line as it has it:
	 * low until it says otherwise. */
	pthread_mutex_lock(&p->ev_lock);
	p->applied = 0;
	if (p->has_line)
		mb_irq_set(&p->line, 0);
	pthread_mutex_unlock(&p->ev_lock);
	ring_replay(p);
	return 0;
}

int mb_devproc_attach(struct mb_machine *m, const struct mb_devproc_config *cfg,
		      struct mb_device **out)
{
	if (m->headless)
		return mb_seterr(-ENOTSUP, "isolate: not inside a device process");
	struct mb_devproc *p = calloc(1, sizeof *p);
	if (!p)
		return mb_seterr(-ENOMEM, "isolate: out of memory");
	p->m = m;
	p->ctl = p->evt = p->pidfd = -1;
	p->pid = -1;
	p->kick_irq = -1;
	p->ring_fd = -1;
	for (unsigned i = 0; i < MB_DP_MAX_KICK; i++)
		p->kick[i] = -1;
	for (unsigned i = 0; i < MB_DP_MAX_CHAN; i++) {
		p->ch[i].fd = -1;
		p->bell[i] = -1;
		pthread_mutex_init(&p->ch[i].lock, NULL);
	}
	pthread_mutex_init(&p->ctl_lock, NULL);
	pthread_mutex_init(&p->grant_lock, NULL);
	pthread_mutex_init(&p->post_lock, NULL);
	pthread_mutex_init(&p->ev_lock, NULL);
	pthread_mutex_init(&p->why_lock, NULL);
	mb_dp_faults_init(&p->mf, post_release, p);
	p->mf.dp = p, p->mf.answer = post_answer;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->settle, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(p->kind, sizeof p->kind, "%s", cfg->kind);
	p->opts = strdup(cfg->opts ? cfg->opts : "{}");
	p->fds = calloc(cfg->nfds + 1, sizeof *p->fds);
	p->timeout_ms = cfg->timeout > 0 ? (int)(cfg->timeout * 1000) : 1000;
	if (p->timeout_ms < 1)
		p->timeout_ms = 1;
	p->policy = cfg->on_crash;
	p->posted = cfg->posted;
	p->crashed = cfg->crashed, p->ctx = cfg->ctx;
	p->console = cfg->console;
	int rc = mb_dp_dma_init(&p->dma, m, cfg);
	if (!rc && p->posted && !cfg->posted_socket)
		rc = ring_setup(p, cfg);
	if (rc) {
		char msg[300];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		px_free(p);
		return mb_seterr(rc, "%s", msg);
	}
	if (!p->opts || !p->fds) {
		px_free(p);
		return mb_seterr(-ENOMEM, "isolate: out of memory");
	}
	for (; p->nfds < cfg->nfds; p->nfds++)
		if ((p->fds[p->nfds] = fcntl(cfg->fds[p->nfds], F_DUPFD_CLOEXEC, 3)) < 0) {
			rc = mb_seterr(-errno, "isolate: dup: %s", strerror(errno));
			px_free(p);
			return rc;
		}
	if ((rc = spawn(p))) {
		px_free(p);
		return rc;
	}
	p->ops = (struct mb_device_ops){ .kind = p->kind, .state = desc_of(p),
					 .quiesce = px_quiesce, .free = px_free };
	if (p->ops.state) {
		p->ops.save = px_save, p->ops.load = px_load;
		if (!(p->last_state = calloc(1, p->ops.state->size))) {
			px_free(p);
			return mb_seterr(-ENOMEM, "isolate: out of memory");
		}
	}
	/* The process named it in a machine of its own: "blk0" is the first
	 * of an indexed kind ("blk%u" here too), anything else fixed. */
	const char *name = cfg->name && *cfg->name ? cfg->name : NULL;
	char defname[40];
	size_t nl = strlen(p->rep.name);
	if (nl > 1 && p->rep.name[nl - 1] == '0' &&
	    !(p->rep.name[nl - 2] >= '0' && p->rep.name[nl - 2] <= '9'))
		snprintf(defname, sizeof defname, "%.*s%%u", (int)(nl - 1),
			 p->rep.name);
	else
		snprintf(defname, sizeof defname, "%s", p->rep.name);
	struct mb_device *d;
	if ((rc = mb_device_new(m, name, defname, &p->ops, p, &d)))
		return rc; /* p freed */
	p->dev = d;
	snprintf(p->rep.name, sizeof p->rep.name, "%s", mb_device_name(d));
	for (uint32_t i = 0; i < p->rep.nranges && !rc; i++) {
		const struct mb_dp_range *r = &p->rep.r[i];
		p->pr[i] = (struct prange){ p, i, r->base };
		if (r->space > MB_SPACE_MMIO || !r->size)
			rc = mb_seterr(-EPROTO, "isolate: %s: bad range", p->rep.name);
		else
			rc = mb_device_map(d, r->space, r->base, r->size, &px_io,
					   &p->pr[i]);
	}
	if (!rc && p->rep.irq >= 0) {
		/* The event loop already reads the process's events (a line
		 * change may come at once): publish the line under ev_lock. */
		struct mb_irq line;
		rc = mb_device_irq(d, p->rep.irq, &line);
		pthread_mutex_lock(&p->ev_lock);
		p->line = line;
		p->has_line = rc == 0;
		pthread_mutex_unlock(&p->ev_lock);
	}
	if (!rc && p->has_line && (p->rep.ack_lines >> p->rep.irq & 1)) {
		/* The process's timer re-injects ticks on acknowledgements. */
		if (mb_machine_irq_on_ack(m, (unsigned)p->rep.irq, on_acked, p) == 0)
			p->ack_registered = true;
	}
	for (uint32_t i = 0; i < p->rep.nvirtio && !rc; i++)
		rc = mb_machine_add_virtio_mmio(m, p->rep.virtio[i].base,
						p->rep.virtio[i].size,
						p->rep.virtio[i].pad);
	if (!rc)
		wire_virtio(p);
	if (rc) {
		char msg[300];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		mb_device_remove(d);
		return mb_seterr(rc, "%s", msg);
	}
	p->freeze_hook = (struct hook){ .fn = on_freeze, .arg = p,
					.embedded = true };
	pthread_mutex_lock(&m->lock);
	p->freeze_hook.next = m->freeze_hooks;
	m->freeze_hooks = &p->freeze_hook;
	if (p->posted) { /* a hlt waits for nothing posted (debug_exit; hlt) */
		p->hlt_hook = (struct hook){ .fn = on_hlt, .arg = p, .embedded = true,
					     .next = m->hlt_hooks };
		m->hlt_hooks = &p->hlt_hook;
	}
	pthread_mutex_unlock(&m->lock);
	*out = d;
	return 0;
}

struct mb_devproc *mb_devproc_of(struct mb_device *d)
{
	const struct mb_device_ops *o = d ? mb_device_ops_of(d) : NULL;
	return o && o->quiesce == px_quiesce ? mb_device_impl(d) : NULL;
}

int mb_devproc_pid(struct mb_devproc *p)
{
	return atomic_load(&p->alive) ? (int)p->pid : -1;
}

const char *mb_devproc_sandbox(struct mb_devproc *p) { return p->rep.sandbox; }

void mb_devproc_doorbells(struct mb_devproc *p, unsigned *ioeventfds, const char **irq)
{
	*ioeventfds = p->ndoorbells;
	*irq = p->irqfd ? "irqfd" : p->irq_relay ? "relayed" : "line";
}

void mb_devproc_posted(struct mb_devproc *p, uint64_t *posted, uint64_t *flushes)
{
	*posted = atomic_load(&p->nposted);
	*flushes = atomic_load(&p->nflushes);
}

bool mb_devproc_post_ring(struct mb_devproc *p, uint64_t *bells, uint64_t *replayed)
{
	*bells = atomic_load(&p->nbells);
	*replayed = atomic_load(&p->nreplayed);
	return p->ring_on;
}
unsigned mb_devproc_log(struct mb_devproc *p, char (*lines)[MB_DP_LOG_TEXT],
			unsigned max)
{
	pthread_mutex_lock(&p->ev_lock);
	for (int budget = 256; budget-- && p->evt >= 0 && take_event(p, 0) > 0;)
		; /* what it said before now */
	uint64_t n = p->nlog < MB_DP_LOG_KEEP ? p->nlog : MB_DP_LOG_KEEP;
	if (n > max)
		n = max;
	for (uint64_t i = 0; i < n; i++)
		memcpy(lines[i], p->log[(p->nlog - n + i) % MB_DP_LOG_KEEP],
		       MB_DP_LOG_TEXT);
	pthread_mutex_unlock(&p->ev_lock);
	return (unsigned)n;
}

unsigned mb_devproc_restarts(struct mb_devproc *p) { return p->restarts; }
bool mb_devproc_alive(struct mb_devproc *p) { return atomic_load(&p->alive); }
const char *mb_devproc_why(struct mb_devproc *p)
{
	/* a copy: the vCPU, the event loop or a restart may be writing it */
	static _Thread_local char why[sizeof p->why];
	why_of(p, why, sizeof why);
	return why;
}

/* ---- DMA grants (the state lives in core/devproc_dma.c) ------------------ */

int mb_devproc_revoke(struct mb_devproc *p, uint64_t base)
{
	int i = mb_dp_dma_find(&p->dma, base);
	if (p->dma.mode == MB_DP_DMA_SHARED)
		return mb_seterr(-EINVAL, "%s: dma is \"shared\" (all RAM, "
				 "nothing granted)", p->rep.name);
	if (i < 0)
		return mb_seterr(-ENOENT, "%s: no grant at 0x%" PRIx64,
				 p->rep.name, base);
	pthread_mutex_lock(&p->grant_lock);
	ssize_t n = 0;
	/* First here: a restart from now on leaves it out, and a DMA message
	 * in it is refused. */
	if (!atomic_exchange(&p->dma.revoked[i], true) &&
	    p->dma.mode == MB_DP_DMA_GRANTED && atomic_load(&p->alive)) {
		struct mb_dp_unmap u = { .argsz = sizeof u, .addr = base,
					 .size = p->dma.g[i].size }, back;
		n = request(p, MB_DP_DMA_UNMAP, &u, sizeof u, &back, sizeof back,
			    p->timeout_ms * 4);
	}
	pthread_mutex_unlock(&p->grant_lock);
	return n < 0 ? (int)n : 0;
}

/* DMA_MAP of grant slot i to the live process, with the region's memfd
 * (the process checks it, maps the window, closes its copy). */
static int dma_map(struct mb_devproc *p, unsigned i)
{
	struct mb_dp_dma_map q, back;
	int fd;
	int rc = mb_dp_dma_map_of(&p->dma, p->m, i, &q, &fd);
	if (rc)
		return rc;
	ssize_t n = request_fd(p, MB_DP_DMA_MAP, &q, sizeof q, fd, &back, sizeof back,
			       p->timeout_ms * 4);
	if (n < 0)
		return mb_seterr((int)n, "%s: 0x%" PRIx64 "+0x%" PRIx64 ": %s",
				 p->rep.name, q.addr, q.size, mb_errmsg());
	return 0;
}

int mb_devproc_grant(struct mb_devproc *p, uint64_t base, uint64_t size)
{
	pthread_mutex_lock(&p->grant_lock);
	int i = mb_dp_dma_grant(&p->dma, p->m, p->rep.name, base, size);
	int rc = i < 0 ? i : 0;
	if (i >= 0 && p->dma.mode == MB_DP_DMA_GRANTED) {
		/* Live once the process has it; a dead one's successor gets
		 * it at its start (map_late_grants or CREATE's slot). */
		if (!atomic_load(&p->alive) || (rc = dma_map(p, (unsigned)i)) == 0)
			atomic_store(&p->dma.revoked[i], false);
		if (rc == -EIO && !atomic_load(&p->alive)) /* it died meanwhile */
			atomic_store(&p->dma.revoked[i], false), rc = 0;
	}
	pthread_mutex_unlock(&p->grant_lock);
	return rc;
}

/* A new process got the CREATE's grants; those granted at run time (and
 * still live) follow, each a DMA_MAP. Under grant_lock. */
static void map_late_grants(struct mb_devproc *p)
{
	if (p->dma.mode != MB_DP_DMA_GRANTED)
		return;
	for (unsigned i = p->dma.ncreate; i < p->dma.n; i++)
		if (!atomic_load(&p->dma.revoked[i]) && dma_map(p, i))
			fprintf(stderr, "moonbox: device %s restarted without a "
				"grant: %s\n", p->rep.name, mb_errmsg());
}

void mb_devproc_dma_info(struct mb_devproc *p, struct mb_dp_dma_info *out)
{
	struct mb_dp_dmastate *d = &p->dma;
	memset(out, 0, sizeof *out);
	out->mode = d->mode;
	out->ngrants = d->n;
	for (unsigned i = 0; i < d->n; i++) {
		out->grant[i] = d->g[i];
		out->revoked[i] = atomic_load(&d->revoked[i]);
	}
	out->reads = atomic_load(&d->reads);
	out->writes = atomic_load(&d->writes);
	out->bytes = atomic_load(&d->bytes);
	out->refused = atomic_load(&d->refused);
	pthread_mutex_lock(&d->lock);
	snprintf(out->why, sizeof out->why, "%s", d->why);
	pthread_mutex_unlock(&d->lock);
}

/* ---- fuzz/fuzz_devproc.c: a hostile device process -------------------------
 * A proxy on socketpairs, no process: each record of data is one message
 * "from the device" (an access reply, an event, a control reply) that the
 * VMM side must take apart without harm. Record: [kind, len lo, len hi],
 * then len bytes; kind bit 7: put the expected id in. */
static struct mb_machine *fz_m;

void mb_devproc_fuzz(const uint8_t *data, size_t len)
{
	if (!fz_m) {
		struct mb_machine_config mc = { .headless = true };
		if (mb_machine_create(&mc, &fz_m) ||
		    mb_mem_add(fz_m->mem, 0, 0x10000, 0, NULL, "ram"))
			return;
	}
	struct mb_devproc *p = calloc(1, sizeof *p);
	int ch[2], ev[2], ct[2];
	if (!p)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ch)) {
		free(p);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ev)) {
		close(ch[0]), close(ch[1]), free(p);
		return;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, ct)) {
		close(ch[0]), close(ch[1]), close(ev[0]), close(ev[1]), free(p);
		return;
	}
	p->m = fz_m;
	p->pidfd = -1;
	p->nchan = 1;
	p->ch[0].fd = ch[0];
	struct timeval tv = { 0, 1000 };
	setsockopt(ch[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	pthread_mutex_init(&p->ch[0].lock, NULL);
	pthread_mutex_init(&p->ctl_lock, NULL);
	pthread_mutex_init(&p->post_lock, NULL);
	pthread_mutex_init(&p->ev_lock, NULL);
	pthread_mutex_init(&p->why_lock, NULL);
	p->ctl = ct[0], p->evt = ev[0];
	p->timeout_ms = 1;
	p->rep.nranges = 1;
	p->rep.r[0] = (struct mb_dp_range){ .space = MB_SPACE_PIO, .base = 0x80,
					    .size = 8 };
	p->rep.irq = 4;
	p->has_line = mb_machine_irq(fz_m, 4, &p->line) == 0;
	p->pr[0] = (struct prange){ p, 0, 0x80 };
	snprintf(p->rep.name, sizeof p->rep.name, "fuzz");
	/* DMA by message (kind bit 4: the device asks): two grants over the
	 * fuzz machine's 64 KiB of RAM, the second revoked. */
	static const struct mb_dp_grant g[] = { { 0x1000, 0x2000 }, { 0x8000, 0x1000 } };
	struct mb_devproc_config dc = { .dma = MB_DP_DMA_MESSAGE, .grants = g, .ngrants = 2 };
	if (mb_dp_dma_init(&p->dma, fz_m, &dc))
		abort();
	atomic_store(&p->dma.revoked[1], true);
	/* Rules its model decides (kind 1 with bit 0x80: a FAULT question
	 * with the right header, the event the input's): errors, latency and
	 * holds, released at the end of each input. */
	static struct mb_fault_plan *fz_plan;
	if (!fz_plan) {
		struct mb_fault_plan_config pc = { .seed = 1 };
		struct mb_fault_rule r1 = { .action = MB_FAULT_BLK_ERROR, .dev = "fuzz",
					    .status = VIRTIO_BLK_S_IOERR, .p = 0.5,
					    .has_p = true, .first = 1, .last = 0 };
		struct mb_fault_rule r2 = { .action = MB_FAULT_BLK_HOLD, .dev = "fuzz",
					    .tag = "t", .every = 3, .first = 1 };
		struct mb_fault_rule r3 = { .action = MB_FAULT_NET_DELAY, .dev = "fuzz",
					    .ms = 5, .jitter = 5, .first = 1 };
		if (mb_fault_plan_new(NULL, &pc, &fz_plan) ||
		    mb_fault_plan_add(fz_plan, &r1) < 0 ||
		    mb_fault_plan_add(fz_plan, &r2) < 0 || mb_fault_plan_add(fz_plan, &r3) < 0)
			abort();
	}
	mb_dp_faults_init(&p->mf, post_release, p);
	if (mb_fault_site_install(&p->mf.site, mb_fault_plan_site(fz_plan, "fuzz")))
		abort();
	/* One posted-write ring on channel 0 (kind 0 with bits 0x60). */
	static struct mb_dp_ring *ring;
	static int bell = -1;
	if (!ring && !(ring = aligned_alloc(64, sizeof *ring)))
		abort();
	if (bell < 0 && (bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
		abort();
	memset(ring, 0, sizeof *ring);
	p->ring = ring, p->ring_on = true, p->bell[0] = bell, p->ring_fd = -1;
	uint8_t drain[MB_DP_MAX_MSG];
	while (len >= 3) {
		unsigned kind = data[0], n = data[1] | (unsigned)data[2] << 8;
		data += 3, len -= 3;
		if (n > len)
			n = (unsigned)len;
		uint8_t msg[MB_DP_MAX_MSG];
		memcpy(msg, data, n);
		data += n, len -= n;
		atomic_store(&p->alive, true);
		struct mb_dp_hdr *h = (void *)msg;
		uint8_t v[8] = { 0 };
		switch (kind & 3) {
		case 0: /* the reply to an access (read or write) */
			if ((kind & 0x80) && n >= sizeof *h)
				h->id = (uint16_t)(p->ch[0].id + 1);
			if ((kind & 0x10) && n >= sizeof *h + sizeof(struct mb_dp_dma_rw)) {
				/* a DMA request first, the fields right but the
				 * address, count and data the input's */
				h->flags = 0;
				h->cmd = kind & 0x20 ? MB_DP_DMA_WRITE : MB_DP_DMA_READ;
				h->size = n;
				send(ch[1], msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
				/* then a well-formed reply to the access */
				struct {
					struct mb_dp_hdr h;
					struct mb_dp_reply r;
				} ok;
				memset(&ok, 0, sizeof ok);
				ok.h = (struct mb_dp_hdr){ .id = (uint16_t)(p->ch[0].id + 1),
					.cmd = kind & 0x40 ? MB_DP_REGION_WRITE : MB_DP_REGION_READ,
					.size = sizeof ok, .flags = MB_DP_F_REPLY };
				send(ch[1], &ok, sizeof ok, MSG_DONTWAIT | MSG_NOSIGNAL);
				access_(&p->pr[0], 0, v, 1, kind & 0x40);
				while (recv(ch[1], drain, sizeof drain, MSG_DONTWAIT) > 0)
					;
				break;
			}
			if ((kind & 0x60) == 0x60 && n >= 5) {
				/* a posted write into the ring, whose tail and
				 * sleeping the hostile device wrote (the input's
				 * first bytes): full ones flush over the channel,
				 * answered by the rest of the input */
				memcpy(&ring->tail, msg, 4);
				ring->sleeping = msg[4];
				p->posted = true;
			}
			send(ch[1], msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			access_(&p->pr[0], kind & 4 ? 2 : 0, v, kind & 8 ? 4 : 1,
				kind & 0x40);
			p->posted = false;
			recv(ch[1], drain, sizeof drain, MSG_DONTWAIT);
			break;
		case 1: /* an event */
			if ((kind & 0x80) && n >= sizeof *h) {
				h->cmd = MB_DP_FAULT;
				h->flags = 0;
				h->size = n;
			}
			send(ev[1], msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			pthread_mutex_lock(&p->ev_lock);
			take_event(p, 0);
			pthread_mutex_unlock(&p->ev_lock);
			break;
		case 2: /* a control reply */
			if ((kind & 0x80) && n >= sizeof *h)
				h->id = (uint16_t)(p->ctl_id + 1);
			send(ct[1], msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			request(p, MB_DP_SAVE, NULL, 0, drain, 64, 1);
			recv(ct[1], drain, sizeof drain, MSG_DONTWAIT);
			break;
		default: /* events the access must catch up to */
			send(ev[1], msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
			catch_up(p, (uint64_t)kind << 4);
		}
		/* whatever is left unread goes */
		while (recv(ch[0], drain, sizeof drain, MSG_DONTWAIT) > 0)
			;
		while (recv(ev[0], drain, sizeof drain, MSG_DONTWAIT) > 0)
			;
		while (recv(ct[0], drain, sizeof drain, MSG_DONTWAIT) > 0)
			;
	}
	close(ch[0]), close(ch[1]), close(ev[0]), close(ev[1]);
	close(ct[0]), close(ct[1]);
	pthread_mutex_destroy(&p->ch[0].lock);
	pthread_mutex_destroy(&p->ctl_lock);
	pthread_mutex_destroy(&p->ev_lock);
	pthread_mutex_destroy(&p->why_lock);
	mb_dp_dma_fini(&p->dma);
	p->ctl = -1; /* the holds' releases go nowhere */
	mb_dp_faults_fini(&p->mf);
	free(p);
}
