/*
 * The device's side of the device-process protocol (cli/devserve.h,
 * docs/devproc.md): every message a VMM sends once the device exists. The
 * VMM is trusted to start us, not to be right: every size, index and
 * field is checked here before it reaches the device model, whose own
 * load checks the state it is given (moonbox/state.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/devserve.h"
#include "core/devproc_dma.h"

struct mb_machine *ds_machine;
struct mb_device *ds_device;
struct mb_dp_report ds_rep;
int ds_ctl_fd = MB_DP_FD_CONTROL, ds_evt_fd = MB_DP_FD_EVENTS;

static pthread_mutex_t seq_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seq;
static void (*ack_fn[64])(void *);
static void *ack_arg[64];
/* The reply an access on this thread is building: what the access causes
 * (line changes, a stop) goes back with it. */
static __thread struct mb_dp_reply *cur;
/* A posted write (no reply) on this thread: the last line change and a
 * stop it caused go back with the channel's next reply, so the VMM, which
 * flushes before a read and at hlt, applies them in order. The stop also
 * goes on the events socket at once: never lost, even with no flush. */
static __thread bool posting;
static __thread struct ds_pend pend;

struct ds_ring ds_rings[MB_DP_MAX_CHAN];
unsigned ds_nring;

static void pend_merge(struct ds_pend *into, const struct ds_pend *from)
{
	if (from->seq > into->seq)
		into->seq = from->seq;
	if (from->stopped && !into->stopped)
		into->stopped = true, into->stop = from->stop;
}

static void send_event(uint16_t cmd, const void *pl, size_t len)
{
	uint8_t buf[sizeof(struct mb_dp_hdr) + 256];
	struct mb_dp_hdr *h = (void *)buf;
	if (len > sizeof buf - sizeof *h)
		len = sizeof buf - sizeof *h;
	*h = (struct mb_dp_hdr){ .cmd = cmd, .size = (uint32_t)(sizeof *h + len),
				 .flags = MB_DP_F_NO_REPLY };
	memcpy(h + 1, pl, len);
	send(ds_evt_fd, buf, h->size, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ---- the headless machine's controller: lines go to the VMM ------------- */

static void set_line(void *intc, unsigned line, int level)
{
	struct mb_dp_irq e = { .line = line, .level = level != 0 };
	/* One ordered path for every change, whichever thread makes it: the
	 * events socket, in sequence (the device's own lock orders calls). */
	pthread_mutex_lock(&seq_lock);
	e.seq = ++seq;
	send_event(MB_DP_IRQ_LEVEL, &e, sizeof e);
	pthread_mutex_unlock(&seq_lock);
	if (cur)
		cur->irq_seq = e.seq;
	else if (posting)
		pend.seq = e.seq;
}

/* An isolated Lua device's log line: an event in the same sequence as
 * the line changes, so the access that logged it waits for it. */
void ds_log(const char *line, size_t len)
{
	struct mb_dp_log e = { 0 };
	if (len > sizeof e.text - 1)
		len = sizeof e.text - 1;
	memcpy(e.text, line, len);
	pthread_mutex_lock(&seq_lock);
	e.seq = ++seq;
	send_event(MB_DP_LOG, &e, sizeof e);
	pthread_mutex_unlock(&seq_lock);
	if (cur)
		cur->irq_seq = e.seq;
	else if (posting)
		pend.seq = e.seq;
}

/* A Lua module past its limits: said, then the process ends (the VMM
 * sees the exit status, docs/devproc.md). */
void ds_fatal(int code, const char *why)
{
	ds_log(why, strlen(why));
	_exit(code);
}

static bool no_pending(void *intc) { return false; }
static int no_ack(void *intc) { return -1; }

static void on_ack(void *intc, unsigned line, void (*fn)(void *), void *opaque)
{
	if (line < 64) {
		ack_fn[line] = fn, ack_arg[line] = opaque;
		ds_rep.ack_lines |= 1ull << line;
	}
}

const struct mb_intc_ops ds_intc = { no_pending, no_ack, set_line, on_ack };

void ds_on_stop(void *ctx, enum mb_stop reason, int code, const char *msg)
{
	struct mb_dp_stop s = { .reason = reason, .code = code };
	snprintf(s.msg, sizeof s.msg, "%s", msg);
	if (cur && !cur->stopped) {
		cur->stopped = 1;
		cur->stop = s;
		return;
	}
	if (posting && !pend.stopped)
		pend.stopped = true, pend.stop = s;
	send_event(MB_DP_STOP, &s, sizeof s);
}

/* Console output written during an access goes back with its reply. */
bool ds_out_sink(const void *b, size_t len)
{
	if (!cur || len > MB_DP_SIDE_OUT - cur->nout)
		return false; /* the relay socket takes it */
	memcpy(cur->out + cur->nout, b, len);
	cur->nout += (uint32_t)len;
	return true;
}

int ds_report(void)
{
	struct mb_device *d = ds_device;
	snprintf(ds_rep.name, sizeof ds_rep.name, "%s", mb_device_name(d));
	snprintf(ds_rep.kind, sizeof ds_rep.kind, "%s", mb_device_kind(d));
	size_t nr = mb_device_nranges(d);
	if (nr > sizeof ds_rep.r / sizeof ds_rep.r[0])
		return mb_seterr(-E2BIG, "isolate: %s has %zu ranges, the protocol "
				 "carries 8", ds_rep.name, nr);
	ds_rep.nranges = (uint32_t)nr;
	for (uint32_t i = 0; i < ds_rep.nranges; i++) {
		const struct mb_device_range *r = mb_device_range(d, i);
		ds_rep.r[i] = (struct mb_dp_range){ .space = r->space, .base = r->base,
						    .size = r->size };
	}
	ds_rep.irq = mb_device_irq_line(d);
	const struct mb_state_desc *sd = mb_device_state_desc(d);
	if (sd) {
		ds_rep.state_size = (uint32_t)sd->size;
		ds_rep.state_version = sd->version;
		snprintf(ds_rep.state_name, sizeof ds_rep.state_name, "%s", sd->name);
	}
	struct mb_machine *m = ds_machine;
	for (unsigned i = 0; i < m->nvirtio && i < 2; i++) {
		ds_rep.virtio[i] = (struct mb_dp_range){ .base = m->virtio[i].base,
							 .size = m->virtio[i].size,
							 .pad = m->virtio[i].irq };
		ds_rep.nvirtio = i + 1;
	}
	return 0;
}

/* ---- accesses ------------------------------------------------------------ */

/* A posted write (a no-reply message or a ring entry), checked like any
 * access; what it causes waits in pend for the channel's next reply. */
static void posted_write(uint32_t region, uint64_t off, uint32_t c,
			 const uint8_t *data)
{
	const struct mb_dp_range *r = region < ds_rep.nranges ? &ds_rep.r[region]
							      : NULL;
	if (!r || (c != 1 && c != 2 && c != 4 && c != 8) || off >= r->size ||
	    c > r->size - off)
		return;
	posting = true;
	mb_bus_write(r->space == MB_SPACE_PIO ? ds_machine->pio : ds_machine->mmio,
		     r->base + off, data, c);
	posting = false;
}

/* With q->lock: every entry the VMM published that we have not done, in
 * order. Our own count is the truth (the VMM may write tail too); each
 * entry is copied out once, then checked. A head more than a ring ahead
 * is nonsense: skipped. */
static void ring_drain(struct ds_ring *q)
{
	uint32_t h = __atomic_load_n(&q->r->head, __ATOMIC_ACQUIRE);
	if (h - q->tail > MB_DP_RING_N) {
		q->tail = h;
		__atomic_store_n(&q->r->tail, q->tail, __ATOMIC_RELEASE);
		return;
	}
	while (q->tail != h) {
		struct mb_dp_ring_ent e;
		memcpy(&e, (const void *)&q->r->e[q->tail % MB_DP_RING_N], sizeof e);
		posted_write(e.region, e.offset, e.count, e.data);
		q->tail++;
		__atomic_store_n(&q->r->tail, q->tail, __ATOMIC_RELEASE);
	}
}

void ds_ring_take(unsigned ch)
{
	if (ch >= ds_nring)
		return;
	struct ds_ring *q = &ds_rings[ch];
	pthread_mutex_lock(&q->lock);
	__atomic_store_n(&q->go, true, __ATOMIC_RELAXED);
	ring_drain(q);
	pend_merge(&pend, &q->pend); /* what the ring thread's writes caused */
	memset(&q->pend, 0, sizeof q->pend);
	pthread_mutex_unlock(&q->lock);
}

/* Before it sleeps, the ring thread watches head for a while: a vCPU
 * posting a burst (an exit every ~10 us here) then finds it awake and
 * rings no doorbell, so its write costs no system call on either side.
 * Bounded, so an idle device costs nothing. */
#define SPIN_NS 50000

static bool ring_idle(struct ds_ring *q)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		/* the shared tail: ours, stored under q->lock (the VMM's
		 * scribbles only cut the spin short) */
		if (__atomic_load_n(&q->r->head, __ATOMIC_ACQUIRE) !=
		    __atomic_load_n(&q->r->tail, __ATOMIC_ACQUIRE))
			return false;
		__builtin_ia32_pause();
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_NS)
			return true;
	}
}

void *ds_ring_thread(void *arg)
{
	struct ds_ring *q = arg;
	for (;;) {
		if (__atomic_load_n(&q->go, __ATOMIC_RELAXED) && !ring_idle(q))
			goto drain;
		/* Against the VMM's "head = n; fence; sleeping?" (Dekker): it
		 * sees us asleep, or we see its entry. */
		__atomic_store_n(&q->r->sleeping, 1, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		pthread_mutex_lock(&q->lock);
		bool more = __atomic_load_n(&q->go, __ATOMIC_RELAXED) &&
			    __atomic_load_n(&q->r->head, __ATOMIC_ACQUIRE) != q->tail;
		pthread_mutex_unlock(&q->lock);
		if (!more) {
			struct pollfd pf = { .fd = q->bell, .events = POLLIN };
			uint64_t v;
			if (poll(&pf, 1, -1) < 0 && errno != EINTR)
				return NULL;
			if (read(q->bell, &v, sizeof v) < 0 && errno != EAGAIN)
				return NULL;
		}
		__atomic_store_n(&q->r->sleeping, 0, __ATOMIC_RELAXED);
drain:
		pthread_mutex_lock(&q->lock);
		__atomic_store_n(&q->go, true, __ATOMIC_RELAXED); /* a restarted process waits for the first word */
		ring_drain(q);
		pend_merge(&q->pend, &pend);
		memset(&pend, 0, sizeof pend);
		pthread_mutex_unlock(&q->lock);
	}
}

size_t ds_access(const void *msg, ssize_t n, void *reply)
{
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_access a;
	} q;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_reply r;
	} a;
	if (n != sizeof q)
		return 0; /* hostile or garbled: no reply, the VMM times out */
	memcpy(&q, msg, sizeof q);
	if (q.h.size != sizeof q ||
	    (q.h.cmd != MB_DP_REGION_READ && q.h.cmd != MB_DP_REGION_WRITE &&
	     q.h.cmd != MB_DP_FLUSH))
		return 0;
	uint32_t c = q.a.count;
	const struct mb_dp_range *r = q.a.region < ds_rep.nranges
					      ? &ds_rep.r[q.a.region] : NULL;
	bool bad = !r || (c != 1 && c != 2 && c != 4 && c != 8) ||
		   q.a.offset >= r->size || c > r->size - q.a.offset;
	if (q.h.cmd == MB_DP_REGION_WRITE && (q.h.flags & MB_DP_F_NO_REPLY)) {
		/* posted (vfio-user's no-reply flag): done in channel order,
		 * its console output through the relay, nothing sent back */
		posted_write(q.a.region, q.a.offset, c, q.a.data);
		return 0;
	}
	memset(&a, 0, sizeof a);
	a.h = (struct mb_dp_hdr){ .id = q.h.id, .cmd = q.h.cmd,
				  .size = sizeof a, .flags = MB_DP_F_REPLY };
	a.r.a = q.a;
	if (q.h.cmd == MB_DP_FLUSH) {
		/* everything before it on this channel is done: only what
		 * the posted writes left to say */
	} else if (bad) {
		a.h.flags |= MB_DP_F_ERROR;
		a.h.error = EINVAL;
	} else {
		struct mb_bus *bus = r->space == MB_SPACE_PIO ? ds_machine->pio
							      : ds_machine->mmio;
		cur = &a.r;
		if (q.h.cmd == MB_DP_REGION_READ)
			mb_bus_read(bus, r->base + q.a.offset, a.r.a.data, c);
		else
			mb_bus_write(bus, r->base + q.a.offset, q.a.data, c);
		cur = NULL;
	}
	if (pend.seq > a.r.irq_seq)
		a.r.irq_seq = pend.seq;
	if (pend.stopped && !a.r.stopped)
		a.r.stopped = 1, a.r.stop = pend.stop;
	memset(&pend, 0, sizeof pend);
	memcpy(reply, &a, sizeof a);
	return sizeof a;
}

/* ---- control ------------------------------------------------------------- */

void ds_reply(const struct mb_dp_hdr *q, int err, const void *pl, size_t len)
{
	static uint8_t out[MB_DP_MAX_MSG];
	if (q->flags & MB_DP_F_NO_REPLY)
		return;
	struct mb_dp_hdr *h = (void *)out;
	if (len > sizeof out - sizeof *h)
		len = sizeof out - sizeof *h;
	*h = (struct mb_dp_hdr){ .id = q->id, .cmd = q->cmd,
				 .size = (uint32_t)(sizeof *h + len),
				 .flags = MB_DP_F_REPLY | (err ? MB_DP_F_ERROR : 0),
				 .error = (uint32_t)err };
	if (len)
		memcpy(h + 1, pl, len);
	send(ds_ctl_fd, out, h->size, MSG_NOSIGNAL);
}

void ds_fail(const struct mb_dp_hdr *q, int err, const char *msg)
{
	ds_reply(q, err, msg, strlen(msg));
}

void ds_control(const uint8_t *msg, ssize_t n)
{
	static uint8_t st[MB_DP_MAX_MSG];
	struct mb_dp_hdr q;
	if (n < (ssize_t)sizeof q || n > MB_DP_MAX_MSG)
		return;
	memcpy(&q, msg, sizeof q);
	if (q.size != (uint32_t)n)
		return;
	size_t len = (size_t)n - sizeof q;
	const uint8_t *pl = msg + sizeof q;
	const struct mb_state_desc *sd = mb_device_state_desc(ds_device);
	uint32_t v = 0;
	if (len == sizeof v)
		memcpy(&v, pl, sizeof v);
	switch (q.cmd) {
	case MB_DP_IRQ_ACK:
		if (len == sizeof v && v < 64 && ack_fn[v])
			ack_fn[v](ack_arg[v]);
		break;
	case MB_DP_FREEZE:
		if (len == sizeof v)
			mb_evloop_freeze(ds_machine->ev, v != 0);
		break;
	case MB_DP_QUIESCE:
		mb_device_quiesce(ds_device);
		ds_reply(&q, 0, NULL, 0);
		break;
	case MB_DP_SAVE:
		if (!sd || sd->size > sizeof st - 64)
			ds_fail(&q, ENOTSUP, "no state");
		else if (mb_device_save(ds_device, st))
			ds_fail(&q, EIO, mb_errmsg());
		else
			ds_reply(&q, 0, st, sd->size);
		break;
	case MB_DP_LOAD:
		/* The model's load checks every field (state.h). The VMM holds
		 * the machine paused; this machine has no vCPUs. The state is
		 * copied first: a model may keep pointers into what it loads
		 * no longer than the call, but must not see it change. */
		if (!sd || len != sd->size || len > sizeof st)
			ds_fail(&q, EINVAL, "state: wrong size");
		else if (memcpy(st, pl, len), mb_device_load(ds_device, st))
			ds_fail(&q, EINVAL, mb_errmsg());
		else
			ds_reply(&q, 0, NULL, 0);
		break;
	case MB_DP_FAULT_ARM: {
		const char *why = "";
		int e = ds_fault_arm(pl, len, &why);
		if (e)
			ds_fail(&q, e, why);
		else
			ds_reply(&q, 0, NULL, 0);
		break;
	}
	case MB_DP_FAULT_RELEASE:
		ds_fault_release(pl, len);
		break;
	case MB_DP_ON_ARM: {
		const char *why = "";
		int e = ds_on_arm(pl, len, &why);
		if (e)
			ds_fail(&q, e, why);
		else
			ds_reply(&q, 0, NULL, 0);
		break;
	}
	case MB_DP_ON_ANSWER:
		ds_on_answer(pl, len);
		break;
	case MB_DP_FAULT_APPLY: {
		const char *why = "";
		int e = ds_fault_apply(pl, len, &why);
		if (e)
			ds_fail(&q, e, why);
		else
			ds_reply(&q, 0, NULL, 0);
		break;
	}
	case MB_DP_DMA_UNMAP: {
		const char *why = "";
		int e = ds_unmap(pl, len, &why);
		if (e)
			ds_fail(&q, e, why);
		else
			ds_reply(&q, 0, pl, len);
		break;
	}
	default:
		ds_fail(&q, ENOSYS, "unknown command");
	}
}

/* ---- guest memory: shared regions and granted windows ------------------- */

/* ---- dma = "message": guest memory through DMA_READ / DMA_WRITE ---------
 * Any thread of the device may ask (a virtio-blk worker completes requests
 * after the access that started them returned): the requests go on the
 * events socket, which the VMM's event loop reads, one at a time; the
 * reply comes back on it (nothing else does). A reply is checked like any
 * hostile message: id, command, size, count. */
static pthread_mutex_t dma_lock = PTHREAD_MUTEX_INITIALIZER;
static uint16_t dma_id;
int ds_dma_timeout_ms = 2000;

static int dma_one(bool wr, uint64_t gpa, void *buf, size_t len)
{
	static uint8_t msg[MB_DP_MAX_MSG];
	struct mb_dp_hdr h = { .cmd = wr ? MB_DP_DMA_WRITE : MB_DP_DMA_READ };
	struct mb_dp_dma_rw rw = { gpa, len };
	size_t n = sizeof h + sizeof rw + (wr ? len : 0);
	int rc = -EIO;
	pthread_mutex_lock(&dma_lock);
	h.id = ++dma_id;
	h.size = (uint32_t)n;
	memcpy(msg, &h, sizeof h);
	memcpy(msg + sizeof h, &rw, sizeof rw);
	if (wr)
		memcpy(msg + sizeof h + sizeof rw, buf, len);
	if (send(ds_evt_fd, msg, n, MSG_NOSIGNAL) != (ssize_t)n)
		goto out;
	for (;;) {
		struct pollfd pf = { .fd = ds_evt_fd, .events = POLLIN };
		if (poll(&pf, 1, ds_dma_timeout_ms) <= 0)
			goto out; /* no answer: the access fails */
		ssize_t got = recv(ds_evt_fd, msg, sizeof msg, MSG_DONTWAIT | MSG_TRUNC);
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		struct mb_dp_hdr a;
		if (got < (ssize_t)sizeof a || (size_t)got > sizeof msg)
			goto out;
		memcpy(&a, msg, sizeof a);
		if (a.size != (uint32_t)got || !(a.flags & MB_DP_F_REPLY))
			goto out;
		if (a.id != h.id)
			continue; /* a late reply to one that timed out */
		if (a.cmd != h.cmd)
			goto out;
		if (a.flags & MB_DP_F_ERROR) {
			rc = -EFAULT; /* refused: outside the grants */
			goto out;
		}
		struct mb_dp_dma_rw back;
		size_t want = sizeof a + sizeof back + (wr ? 0 : len);
		if ((size_t)got != want)
			goto out;
		memcpy(&back, msg + sizeof a, sizeof back);
		if (back.addr != gpa || back.count != len)
			goto out;
		if (!wr)
			memcpy(buf, msg + sizeof a + sizeof back, len);
		rc = 0;
		break;
	}
out:
	pthread_mutex_unlock(&dma_lock);
	return rc;
}

/* A fault question (cli/devfault.c), on the same socket as DMA and in
 * the same sequence of ids: 0 and the verdict, or -1 (no answer in time,
 * or a malformed one: the caller takes "no fault"). */
int ds_fault_ask(const struct mb_dp_fault_event *e, struct mb_dp_fault_verdict *out)
{
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_fault_event e;
	} q = { { .cmd = MB_DP_FAULT, .size = sizeof q }, *e };
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_fault_verdict w;
	} a;
	int rc = -1;
	pthread_mutex_lock(&dma_lock);
	q.h.id = ++dma_id;
	if (send(ds_evt_fd, &q, sizeof q, MSG_NOSIGNAL) != (ssize_t)sizeof q)
		goto out;
	for (;;) {
		struct pollfd pf = { .fd = ds_evt_fd, .events = POLLIN };
		if (poll(&pf, 1, ds_dma_timeout_ms) <= 0)
			goto out;
		ssize_t got = recv(ds_evt_fd, &a, sizeof a, MSG_DONTWAIT | MSG_TRUNC);
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (got < (ssize_t)sizeof a.h)
			goto out;
		if (a.h.id != q.h.id && (a.h.flags & MB_DP_F_REPLY) &&
		    a.h.size == (uint32_t)got)
			continue; /* a late reply to one that timed out */
		if (got != (ssize_t)sizeof a || a.h.size != sizeof a ||
		    a.h.cmd != MB_DP_FAULT || a.h.flags != MB_DP_F_REPLY)
			goto out;
		*out = a.w;
		rc = 0;
		break;
	}
out:
	pthread_mutex_unlock(&dma_lock);
	return rc;
}

uint16_t ds_dma_next_id(void)
{
	pthread_mutex_lock(&dma_lock);
	uint16_t id = (uint16_t)(dma_id + 1);
	pthread_mutex_unlock(&dma_lock);
	return id;
}

static int dma_rw(bool wr, uint64_t gpa, void *buf, size_t len)
{
	const size_t chunk = 32768;
	for (size_t done = 0; done < len; done += chunk) {
		size_t k = len - done < chunk ? len - done : chunk;
		int rc = dma_one(wr, gpa + done, (uint8_t *)buf + done, k);
		if (rc)
			return rc;
	}
	return 0;
}

static int dma_fetch(void *ctx, uint64_t gpa, void *dst, size_t len)
{
	return dma_rw(false, gpa, dst, len);
}

static int dma_store(void *ctx, uint64_t gpa, const void *src, size_t len)
{
	return dma_rw(true, gpa, (void *)src, len);
}

static const struct mb_mem_remote_ops dma_ops = { dma_fetch, dma_store };

/* A region of the layout, no memory: a private shadow the accessors
 * fill and drain by messages. */
static int remote_region(const struct mb_dp_mem *r, int fd, const char *name,
			 char *msg, size_t len)
{
	close(fd); /* a placeholder */
	if ((r->flags & ~(MB_MEM_READONLY | MB_DP_MEM_REMOTE)) || !r->size ||
	    r->size > (1ull << 40)) {
		snprintf(msg, len, "memory %s: bad remote region", name);
		return -1;
	}
	void *host = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	unsigned fl = (r->flags & MB_MEM_READONLY) | MB_MEM_REMOTE;
	if (host == MAP_FAILED ||
	    mb_mem_add(ds_machine->mem, r->base, r->size, fl, host, name)) {
		snprintf(msg, len, "memory %s: %s", name,
			 host == MAP_FAILED ? strerror(errno) : mb_errmsg());
		if (host != MAP_FAILED)
			munmap(host, r->size);
		return -1;
	}
	mb_mem_set_remote(ds_machine->mem, &dma_ops, NULL);
	return 0;
}

int ds_map_mem(const struct mb_dp_mem *r, int lo, int hi, const char *name,
	       char *msg, size_t len)
{
	int fd = r->fd;
	if (fd < lo || fd >= hi) {
		snprintf(msg, len, "memory %s: bad descriptor", name);
		return -1;
	}
	if (r->flags & MB_DP_MEM_REVOKED) {
		close(fd); /* a placeholder: the window was revoked */
		return 0;
	}
	if (r->flags & MB_DP_MEM_REMOTE)
		return remote_region(r, fd, name, msg, len);
	/* A window maps [offset, offset+size) of the region's memfd: the
	 * whole fd is checked, then only the slice is mapped, and the fd
	 * goes before any guest byte is read. */
	uint64_t whole = r->fd_size ? r->fd_size : r->size;
	if (ds_dirty && r->dirty_bit != MB_DP_NO_DIRTY &&
	    !ds_dirty_fits(r->dirty_bit, r->size)) {
		snprintf(msg, len, "memory %s: dirty bit outside the dirty map", name);
		return -1;
	}
	if ((r->flags & ~MB_MEM_READONLY) || !r->size || r->offset % 4096 ||
	    r->offset > whole || r->size > whole - r->offset ||
	    (!r->fd_size && r->offset) || mb_memfd_check(fd, whole)) {
		snprintf(msg, len, "memory %s: %s", name,
			 *mb_errmsg() ? mb_errmsg() : "bad window");
		return -1;
	}
	void *host = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			  (off_t)r->offset);
	if (host == MAP_FAILED ||
	    mb_mem_add(ds_machine->mem, r->base, r->size, r->flags, host, name)) {
		snprintf(msg, len, "memory %s: %s", name,
			 host == MAP_FAILED ? strerror(errno) : mb_errmsg());
		return -1;
	}
	/* The pages the device writes there, for the VMM's restores */
	for (size_t i = 0; i < mb_mem_count(ds_machine->mem); i++)
		if (mb_mem_region(ds_machine->mem, i)->base == r->base)
			ds_dirty_sink(i, r->dirty_bit);
	close(fd); /* the mapping stays */
	return 0;
}

int ds_unmap(const uint8_t *pl, size_t len, const char **why)
{
	struct mb_dp_unmap u;
	if (len != sizeof u) {
		*why = "DMA_UNMAP: wrong size";
		return EINVAL;
	}
	memcpy(&u, pl, sizeof u);
	struct mb_mem *mem = ds_machine->mem;
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		if (r->base != u.addr || r->size != u.size ||
		    (r->flags & MB_MEM_REVOKED))
			continue;
		/* Out of the map first (no new pointer), then the pages: a
		 * guard of no access takes the window's place, so a pointer
		 * kept from before faults this process, never reaches other
		 * memory. */
		mb_mem_revoke(mem, i);
		if (mmap(r->host, r->size, PROT_NONE,
			 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0) == MAP_FAILED) {
			*why = "DMA_UNMAP: cannot unmap";
			return EIO;
		}
		return 0;
	}
	*why = "DMA_UNMAP: no such window";
	return ENOENT;
}
