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
#include <sys/socket.h>

#include "cli/devserve.h"

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
static __thread struct {
	uint64_t seq;
	bool stopped;
	struct mb_dp_stop stop;
} pend;

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
		if (!bad) {
			posting = true;
			mb_bus_write(r->space == MB_SPACE_PIO ? ds_machine->pio
							      : ds_machine->mmio,
				     r->base + q.a.offset, q.a.data, c);
			posting = false;
		}
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
	default:
		ds_fail(&q, ENOSYS, "unknown command");
	}
}
