/*
 * Fault rules inside an isolated model, the device process's side
 * (docs/devproc.md, "Fault rules inside an isolated model"). The model
 * asks its fault site as it does in process; here that site belongs to a
 * proxy plan with no rules, armed by the VMM's FAULT_ARM for the ops its
 * rules may match, and every such event goes to the VMM, which decides on
 * its real plan (seed, conditions, trace and replay as in process) and
 * answers. A slot the VMM did not arm stays NULL: a device with no rule
 * pays its one branch. Holds are parked here under the VMM's token and
 * let go by FAULT_RELEASE. The rules that act once (rtc.jump,
 * virtio.needs_reset, virtio.config_change, net.link) come as FAULT_APPLY
 * and act here through the same calls core/fault.c makes in process.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>

#include "cli/devserve.h"
#include "core/devproc_fault.h"

static struct mb_fault_plan *proxy; /* made by the first FAULT_ARM */
static struct mb_fault_site *site;

static void ask(void *ctx, const struct mb_fault_blk_event *e, uint64_t seq,
		struct mb_fault_verdict *v)
{
	(void)ctx;
	struct mb_dp_fault_event q = { seq, e->sector, e->nsectors, e->op, 0 };
	struct mb_dp_fault_verdict w;
	/* No answer, or one no rule could give: the request goes on as if
	 * no rule were there (the VMM's answer is checked like any input). */
	if (ds_fault_ask(&q, &w) || mb_dp_fault_from_wire(&w, v))
		memset(v, 0, sizeof *v);
}

/* The site on the slots fam names, as core/fault.c's attach does in
 * process. */
static int install(unsigned fam, const char **why)
{
	struct mb_device *d = ds_device;
	const char *kind = mb_device_kind(d);
	int rc = 0;
	if (fam & MB_DP_FAULT_MODEL) {
		if (!strcmp(kind, "virtio_blk"))
			rc = mb_virtio_blk_set_fault(mb_virtio_dev_model(d), site);
		else if (!strcmp(kind, "virtio_net"))
			rc = mb_virtio_net_set_fault(mb_virtio_dev_model(d), site);
		else if (!strcmp(kind, "pit8254") && mb_pit_of_device(d))
			rc = mb_pit_set_fault(mb_pit_of_device(d), site);
		else if (!strcmp(kind, "uart16550"))
			/* its bytes are decided in the VMM, line errors
			 * included (the relay): asking too would decide
			 * a byte twice */
			return *why = "an isolated UART's bytes are decided on its "
				      "wire, in the VMM", ENOTSUP;
		else
			return *why = "this model has no fault site", ENOTSUP;
	}
	if (!rc && (fam & MB_DP_FAULT_VIRTIO)) {
		struct mb_virtio *t = mb_virtio_dev_transport(d);
		if (!t)
			return *why = "this device has no virtio-mmio transport", ENOTSUP;
		rc = mb_virtio_set_fault(t, site);
	}
	if (rc)
		*why = mb_errmsg();
	return rc ? -rc : 0;
}

int ds_fault_arm(const uint8_t *pl, size_t len, const char **why)
{
	struct mb_dp_fault_arm a;
	if (len != sizeof a)
		return *why = "FAULT_ARM: wrong size", EINVAL;
	memcpy(&a, pl, sizeof a);
	if (!a.fam || (a.fam & ~(MB_DP_FAULT_MODEL | MB_DP_FAULT_VIRTIO)) ||
	    !a.ops || (a.ops & ~MB_FAULT_OP_ANY))
		return *why = "FAULT_ARM: unknown families or ops", EINVAL;
	if (!proxy) {
		struct mb_fault_plan_config c = { 0 };
		struct mb_fault_plan *p;
		if (mb_fault_plan_new(NULL, &c, &p))
			return *why = mb_errmsg(), ENOMEM;
		mb_fault_plan_set_remote(p, ask, NULL);
		if (!(site = mb_fault_plan_site(p, mb_device_name(ds_device)))) {
			mb_fault_plan_free(p);
			return *why = "out of memory", ENOMEM;
		}
		proxy = p;
	}
	/* ops first: a slot installed lets events through at once */
	mb_fault_site_arm(site, a.ops);
	return install(a.fam, why);
}

struct mb_fault_site *ds_fault_site(void)
{
	return site;
}

void ds_fault_release(const uint8_t *pl, size_t len)
{
	char tok[MB_FAULT_TAG_MAX];
	if (!proxy || len != sizeof tok)
		return;
	memcpy(tok, pl, sizeof tok);
	tok[sizeof tok - 1] = 0;
	/* The VMM counts a hold from its verdict on; the model parks the
	 * request a moment later, on another thread. A release that comes
	 * in between finds nothing yet: try again briefly. A token with no
	 * request for good (a reset let it go here) costs this thread 50 ms. */
	for (int i = 0; i < 50 && !mb_fault_plan_release(proxy, tok); i++) {
		struct timespec t = { 0, 1000000 };
		nanosleep(&t, NULL);
	}
}

/* The VMM is hostile like any peer: every field is checked against the
 * model it names before anything acts, and an action this model cannot
 * take is refused, not approximated. */
int ds_fault_apply(const uint8_t *pl, size_t len, const char **why)
{
	struct mb_dp_fault_apply a;
	struct mb_device *d = ds_device;
	const char *kind = mb_device_kind(d);
	if (len != sizeof a)
		return *why = "FAULT_APPLY: wrong size", EINVAL;
	memcpy(&a, pl, sizeof a);
	if (a.action == MB_FAULT_RTC_JUMP) {
		struct mb_rtc *rtc = mb_rtc_of_device(d);
		if (!rtc)
			return *why = "FAULT_APPLY: rtc.jump: not moonbox's RTC", ENOTSUP;
		/* plan:add's bound on seconds (100 years either way) */
		if (a.seconds < -100ll * 366 * 86400 || a.seconds > 100ll * 366 * 86400)
			return *why = "FAULT_APPLY: rtc.jump: seconds out of range", EINVAL;
		mb_rtc_jump(rtc, a.seconds);
		return 0;
	}
	if (a.action == MB_FAULT_NET_LINK) {
		if (strcmp(kind, "virtio_net") || a.up > 1)
			return *why = "FAULT_APPLY: net.link: not a virtio_net, or up not 0/1",
			       EINVAL;
		mb_virtio_net_set_link(mb_virtio_dev_model(d), a.up);
		return 0;
	}
	if (a.action != MB_FAULT_VIRTIO_NEEDS_RESET &&
	    a.action != MB_FAULT_VIRTIO_CONFIG_CHANGE)
		return *why = "FAULT_APPLY: not a rule that acts once", EINVAL;
	struct mb_virtio *t = mb_virtio_dev_transport(d);
	if (!t)
		return *why = "FAULT_APPLY: this device has no virtio-mmio transport", ENOTSUP;
	if (a.action == MB_FAULT_VIRTIO_NEEDS_RESET) {
		if (a.capacity)
			return *why = "FAULT_APPLY: needs_reset has no capacity", EINVAL;
		mb_virtio_fail(t, "fault injection (virtio.needs_reset)");
		return 0;
	}
	if (!a.capacity) {
		mb_virtio_config_change(t);
		return 0;
	}
	if (strcmp(kind, "virtio_blk"))
		return *why = "FAULT_APPLY: capacity: not a virtio_blk", EINVAL;
	if (mb_virtio_blk_check_resize(mb_virtio_dev_model(d), a.capacity))
		return *why = mb_errmsg(), EINVAL;
	mb_virtio_blk_resize(mb_virtio_dev_model(d), t, a.capacity);
	return 0;
}

/* ---- m:on asks of an isolated model ------------------------------------ *
 * ON_ARM puts an observer on the model (the one m:on puts on it in
 * process): the model parks the event as in process and the observer
 * posts it to the VMM under a token (ON_ASK) without waiting; the VMM's
 * Lua answers with ON_ANSWER on the control socket, and the parked event
 * goes on with it. Nothing here waits: a reset answers what is parked
 * "unchanged" at once (the model's own cancel) and tells the VMM, whose
 * later answers then find no token. */

#define ON_MAX 256 /* asks pending at once (a virtqueue's worth) */
static pthread_mutex_t on_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	uint64_t tok; /* 0: free */
	struct mb_fault_ask *ask; /* NULL: a PIT's tick */
} on_slot[ON_MAX];
static uint64_t on_ntok;
static _Atomic unsigned on_ops; /* blk: the ops asked about */

static bool on_post(uint64_t tok, unsigned kind, const struct mb_fault_blk_event *e,
		    unsigned flags)
{
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_on_event e;
	} m;
	memset(&m, 0, sizeof m);
	m.h = (struct mb_dp_hdr){ .cmd = MB_DP_ON_ASK, .size = sizeof m,
				  .flags = MB_DP_F_NO_REPLY };
	m.e.token = tok, m.e.kind = kind, m.e.flags = flags;
	if (e)
		m.e.op = e->op, m.e.sector = e->sector, m.e.nsectors = e->nsectors;
	return send(ds_evt_fd, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof m;
}

/* A slot for ask (NULL: a tick): its token, or 0 (full). */
static uint64_t on_take(struct mb_fault_ask *ask)
{
	uint64_t tok = 0;
	pthread_mutex_lock(&on_lock);
	for (unsigned i = 0; i < ON_MAX && !tok; i++)
		if (!on_slot[i].tok) {
			on_slot[i].tok = tok = ++on_ntok;
			on_slot[i].ask = ask;
		}
	pthread_mutex_unlock(&on_lock);
	return tok;
}

/* The slot of tok freed; false: no such ask (answered already). */
static bool on_give(uint64_t tok, struct mb_fault_ask **ask)
{
	bool found = false;
	pthread_mutex_lock(&on_lock);
	for (unsigned i = 0; tok && i < ON_MAX && !found; i++)
		if (on_slot[i].tok == tok) {
			*ask = on_slot[i].ask;
			on_slot[i].tok = 0;
			found = true;
		}
	pthread_mutex_unlock(&on_lock);
	return found;
}

static bool on_blk(void *ctx, struct mb_virtio_blk *b, const struct mb_fault_blk_event *e,
		   struct mb_fault_ask *ask)
{
	(void)ctx, (void)b;
	if (!(atomic_load(&on_ops) & e->op))
		return false;
	uint64_t tok = on_take(ask);
	if (!tok)
		return false; /* full: not asked, as a full ring in process */
	if (on_post(tok, MB_DP_ON_BLK, e, MB_DP_ON_ASKED))
		return true;
	struct mb_fault_ask *a;
	on_give(tok, &a);
	return false;
}

static bool on_pit(void *ctx, struct mb_pit *pit, uint64_t n, bool ask)
{
	(void)ctx, (void)pit;
	struct mb_fault_blk_event e = { 0, n, 0 };
	if (!ask) /* told: a level tick, a late one */
		return on_post(0, MB_DP_ON_PIT, &e, 0), false;
	uint64_t tok = on_take(NULL);
	if (!tok)
		return false;
	if (on_post(tok, MB_DP_ON_PIT, &e, MB_DP_ON_ASKED))
		return true;
	struct mb_fault_ask *a;
	on_give(tok, &a);
	return false;
}

/* The model's reset or free: what it parked goes on now, unanswered. */
static void on_cancel(void *ctx, const void *dev)
{
	(void)ctx, (void)dev; /* one device per process */
	bool any = false;
	for (unsigned i = 0; i < ON_MAX; i++) {
		pthread_mutex_lock(&on_lock);
		uint64_t tok = on_slot[i].tok;
		pthread_mutex_unlock(&on_lock);
		struct mb_fault_ask *a;
		if (tok && on_give(tok, &a)) {
			any = true;
			if (a)
				a->answer(a->arg, NULL);
			/* a PIT's parked tick: its free drops it */
		}
	}
	if (any)
		on_post(0, 0, NULL, MB_DP_ON_CANCEL);
}

int ds_on_arm(const uint8_t *pl, size_t len, const char **why)
{
	struct mb_dp_on_arm a;
	struct mb_device *d = ds_device;
	const char *kind = mb_device_kind(d);
	if (len != sizeof a)
		return *why = "ON_ARM: wrong size", EINVAL;
	memcpy(&a, pl, sizeof a);
	if (!a.kinds || (a.kinds & ~(MB_DP_ON_BLK | MB_DP_ON_PIT)) ||
	    (a.ops & ~MB_FAULT_OP_ANY) || (a.kinds & MB_DP_ON_BLK && !a.ops))
		return *why = "ON_ARM: unknown kinds or ops", EINVAL;
	int rc = 0;
	if (a.kinds & MB_DP_ON_BLK) {
		if (strcmp(kind, "virtio_blk"))
			return *why = "ON_ARM: blk: not a virtio_blk", ENOTSUP;
		atomic_fetch_or(&on_ops, a.ops); /* before the observer asks */
		rc = mb_virtio_blk_set_observer(mb_virtio_dev_model(d), on_blk, on_cancel,
						NULL);
	}
	if (!rc && (a.kinds & MB_DP_ON_PIT)) {
		if (strcmp(kind, "pit8254") || !mb_pit_of_device(d))
			return *why = "ON_ARM: pit: not moonbox's PIT", ENOTSUP;
		rc = mb_pit_set_observer(mb_pit_of_device(d), on_pit, on_cancel, NULL);
	}
	if (rc)
		*why = mb_errmsg();
	return rc ? -rc : 0;
}

/* ON_ANSWER: checked like any verdict of the VMM, and only what the
 * event can take acts (a blk request: error, latency; a tick: drop,
 * late). A token not pending (answered by a reset, or never given) is
 * ignored. */
void ds_on_answer(const uint8_t *pl, size_t len)
{
	struct mb_dp_on_answer a;
	struct mb_fault_verdict v, keep = { 0 };
	struct mb_fault_ask *ask;
	if (len != sizeof a)
		return;
	memcpy(&a, pl, sizeof a);
	bool ok = !mb_dp_fault_from_wire(&a.w, &v);
	if (!on_give(a.token, &ask))
		return;
	if (ok && ask) {
		keep.error = v.error, keep.status = v.status, keep.ms = v.ms;
	} else if (ok) {
		keep.drop = v.drop, keep.delay_ms = v.delay_ms;
	}
	bool acts = keep.error || keep.ms || keep.drop || keep.delay_ms;
	if (ask)
		ask->answer(ask->arg, acts ? &keep : NULL);
	else if (mb_pit_of_device(ds_device))
		mb_pit_answer(mb_pit_of_device(ds_device), acts ? &keep : NULL);
}
