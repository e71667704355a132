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
