/*
 * The fault engine (moonbox/fault.h, docs/faults.md): plans, rules, sites,
 * decisions, the trace and replay.
 *
 * Lifetime: the plan is owned by its machine (or the caller without one);
 * every site holds a reference on the plan and every device given a site
 * holds one on the site. Closing the plan makes every decision "none" and
 * drops the plan's own references; the memory goes with the last holder,
 * so a device worker finishing a request after the plan closed is safe in
 * whatever order the machine frees its parts.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moonbox/fault.h"

struct mb_fault_site {
	/* What every event reads first, together at the start (the request
	 * path runs a syscall between two events, so each line it touches
	 * here is likely a cache miss): whether the plan is a device
	 * process's proxy, whether it traces (both fixed at creation), and
	 * the summary of the site's live rules (enabled, not removed), kept
	 * by summarise(): the ops they match and, per op (bit i of ops), the
	 * hull [range[i].lo, range[i].hi] of their sector ranges. An event
	 * outside it is one no rule here matches: it is decided "none"
	 * without the plan's lock (may_match). Written under the lock, ops
	 * last (release). For a proxy, ops are the armed ops instead. */
	_Atomic unsigned ops;
	bool traced;          /* the plan writes a trace */
	bool remote;          /* p->remote is set */
	struct { _Atomic uint64_t lo, hi; } range[4];
	struct mb_fault_plan *p;
	char dev[MB_DEVICE_NAME_MAX];
	_Atomic int refs;
	_Atomic uint64_t seq; /* events seen (counted when traced: only the
			       * trace shows it) */
	/* The site this one replaced on its device (a closed plan's): a
	 * request may still be deciding on it, so it lives as long as we do. */
	struct mb_fault_site *replaced;
};

struct slot {
	struct mb_fault_rule r;
	struct mb_fault_site *site;
	uint64_t matched, fired;
	bool removed;
	size_t next; /* replay: where to look for this rule's next record */
	uint8_t *healed; /* BAD: a bit per sector of [first, last] written since */
	uint64_t added_ns; /* the machine's clock when the rule was added */
	bool ge_bad; /* NET_DROP burst model: in the bad state */
	bool pending; /* a once fault waiting for its after / window */
};

struct mb_fault_plan {
	struct mb_machine *m;
	uint64_t seed;
	_Atomic int refs;
	pthread_mutex_t lock; /* everything below */
	bool closed, enabled, diverged;
	FILE *trace;
	bool replaying;
	struct mb_fault_trace replay;
	struct slot *rules;
	size_t nrules, caprules;
	struct mb_fault_site **sites;
	size_t nsites, capsites;
	struct mb_fault_held *held; /* requests parked by HOLD, newest first */
	/* Once faults on a trigger (after = rule, window): applied from this
	 * timer of the machine's clock, on the event loop, no device lock
	 * held (fault_once's section below). */
	struct mb_timer *once_timer;
	unsigned npending;
	/* A device process's proxy of the VMM's plan: every event a site
	 * armed for it is sent there and decided there (no rules here). */
	mb_fault_remote_fn *remote;
	void *remote_ctx;
};

/* ---- the generator ------------------------------------------------------------ */

/* splitmix64's finaliser (Steele, Lea, Flood, "Fast splittable
 * pseudorandom number generators", 2014): a bijective mix, applied to a
 * key built from the three inputs. Counter-based: any (seed, rule,
 * ordinal) can be evaluated alone, in any order. */
static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t mb_fault_hash(uint64_t seed, uint64_t rule, uint64_t ordinal)
{
	uint64_t z = mix(seed + 0x9e3779b97f4a7c15ull);
	z = mix(z ^ (rule * 0xd1b54a32d192ed03ull));
	return mix(z ^ (ordinal * 0x8cb92ba72f3d8dd7ull + 0x9e3779b97f4a7c15ull));
}

static double unit(uint64_t x)
{
	return (double)(x >> 11) * 0x1.0p-53; /* [0, 1) */
}

/* ---- plans -------------------------------------------------------------------- */

static void plan_put(struct mb_fault_plan *p)
{
	if (atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	mb_fault_trace_fini(&p->replay);
	for (size_t i = 0; i < p->nrules; i++)
		free(p->rules[i].healed);
	free(p->rules);
	free(p->sites);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void mb_fault_plan_close(struct mb_fault_plan *p)
{
	pthread_mutex_lock(&p->lock);
	if (p->closed) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->closed = true;
	if (p->trace)
		fclose(p->trace);
	p->trace = NULL;
	size_t n = p->nsites;
	pthread_mutex_unlock(&p->lock);
	mb_fault_plan_release(p, NULL); /* nothing stays parked for ever */
	for (size_t i = 0; i < n; i++)
		mb_fault_site_put(p->sites[i]);
}

void mb_fault_plan_free(struct mb_fault_plan *p)
{
	if (!p)
		return;
	mb_fault_plan_close(p);
	plan_put(p);
}

bool mb_fault_plan_closed(struct mb_fault_plan *p)
{
	pthread_mutex_lock(&p->lock);
	bool c = p->closed;
	pthread_mutex_unlock(&p->lock);
	return c;
}

static void plan_hook(void *arg)
{
	struct mb_fault_plan *p = arg;
	if (p->once_timer) /* the event loop has stopped */
		mb_machine_clock(p->m)->timer_free(p->once_timer);
	p->once_timer = NULL;
	mb_fault_plan_free(p);
}

static uint64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int mb_fault_plan_new(struct mb_machine *m, const struct mb_fault_plan_config *c,
		      struct mb_fault_plan **out)
{
	struct mb_fault_plan *p = calloc(1, sizeof *p);
	if (!p)
		return mb_seterr(-ENOMEM, "faults: out of memory");
	p->m = m;
	p->seed = c->seed;
	p->enabled = true;
	atomic_init(&p->refs, 1);
	pthread_mutex_init(&p->lock, NULL);
	int rc;
	if (c->replay) {
		if ((rc = mb_fault_trace_load(c->replay, &p->replay)))
			goto fail;
		p->replaying = true;
		p->seed = p->replay.seed; /* corrupt bits come from the recorded seed */
	}
	if (c->trace) {
		if (!(p->trace = fopen(c->trace, "we"))) {
			rc = mb_seterr(-errno, "trace: %s: %s", c->trace, strerror(errno));
			goto fail;
		}
		char line[128];
		mb_fault_trace_header(line, sizeof line, p->seed);
		fputs(line, p->trace);
		fflush(p->trace);
	}
	if (m && mb_machine_on_destroy(m, plan_hook, p)) {
		rc = mb_seterr(-ENOMEM, "faults: out of memory");
		goto fail;
	}
	*out = p;
	return 0;
fail:
	mb_fault_plan_free(p);
	return rc;
}

uint64_t mb_fault_plan_seed(struct mb_fault_plan *p)
{
	return p->seed;
}

/* ---- sites -------------------------------------------------------------------- */

struct mb_fault_site *mb_fault_site_get(struct mb_fault_site *s)
{
	atomic_fetch_add(&s->refs, 1);
	return s;
}

void mb_fault_site_put(struct mb_fault_site *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	struct mb_fault_plan *p = s->p;
	struct mb_fault_site *prev = s->replaced;
	free(s);
	plan_put(p);
	mb_fault_site_put(prev);
}

int mb_fault_site_install(struct mb_fault_site *_Atomic *slot,
			  struct mb_fault_site *s)
{
	struct mb_fault_site *old = atomic_load_explicit(slot, memory_order_acquire);
	if (old == s)
		return 0;
	if (old && !mb_fault_plan_closed(old->p))
		return mb_seterr(-EBUSY, "dev: %s already has another fault plan "
				 "(close it first: plan:close())", s->dev);
	mb_fault_site_get(s);
	if (old) {
		mb_fault_site_put(s->replaced); /* an older one, replaced twice */
		s->replaced = old;              /* takes over the device's reference */
	}
	atomic_store_explicit(slot, s, memory_order_release);
	return 0;
}

/* Under the lock. */
static struct mb_fault_site *site_for(struct mb_fault_plan *p, const char *dev)
{
	for (size_t i = 0; i < p->nsites; i++)
		if (strcmp(p->sites[i]->dev, dev) == 0)
			return p->sites[i];
	if (p->nsites == p->capsites) {
		size_t cap = p->capsites ? 2 * p->capsites : 4;
		void *ns = realloc(p->sites, cap * sizeof *p->sites);
		if (!ns)
			return NULL;
		p->sites = ns, p->capsites = cap;
	}
	struct mb_fault_site *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->p = p;
	s->traced = p->trace != NULL; /* opened before any site, never reopened */
	s->remote = p->remote != NULL;
	snprintf(s->dev, sizeof s->dev, "%s", dev);
	atomic_init(&s->refs, 1); /* the plan's */
	atomic_fetch_add(&p->refs, 1);
	p->sites[p->nsites++] = s;
	return s;
}

struct mb_fault_site *mb_fault_plan_site(struct mb_fault_plan *p,
					 const char *dev)
{
	pthread_mutex_lock(&p->lock);
	struct mb_fault_site *s = p->closed ? NULL : site_for(p, dev);
	pthread_mutex_unlock(&p->lock);
	return s;
}

void mb_fault_plan_set_remote(struct mb_fault_plan *p, mb_fault_remote_fn *fn,
			      void *ctx)
{
	pthread_mutex_lock(&p->lock);
	p->remote = fn, p->remote_ctx = ctx;
	for (size_t i = 0; i < p->nsites; i++)
		p->sites[i]->remote = fn != NULL; /* set before any event */
	pthread_mutex_unlock(&p->lock);
}

void mb_fault_site_arm(struct mb_fault_site *s, unsigned ops)
{
	atomic_fetch_or_explicit(&s->ops, ops & MB_FAULT_OP_ANY, memory_order_release);
}

/* ---- rules -------------------------------------------------------------------- */

static bool prob(double x)
{
	return x >= 0 && x <= 1;
}

/* net rules (the Lua constructors check the same, naming Lua's keys) */
static int check_net(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	if (r->ops & ~(MB_FAULT_OP_READ | MB_FAULT_OP_WRITE))
		return mb_seterr(-EINVAL, "dir: a frame is rx or tx");
	if (r->has_p && !prob(r->p))
		return mb_seterr(-EINVAL, "p: %g is not a probability (0-1)", r->p);
	if (r->after && (r->after > p->nrules || p->rules[r->after - 1].removed))
		return mb_seterr(-EINVAL, "after: %u is not a rule of this plan", r->after);
	if (r->has_burst && (r->action != MB_FAULT_NET_DROP || !prob(r->ge_enter) ||
			     !prob(r->ge_leave) || !prob(r->ge_loss) ||
			     !prob(r->ge_good_loss)))
		return mb_seterr(-EINVAL, "burst: net.drop's enter, leave, loss and "
				 "good_loss are probabilities (0-1)");
	switch (r->action) {
	case MB_FAULT_NET_DUPLICATE:
		if (r->pulses < 1 || r->pulses > 16)
			return mb_seterr(-EINVAL, "copies: %u is not 1-16", r->pulses);
		break;
	case MB_FAULT_NET_CORRUPT:
		if (r->bytes < 1 || r->bytes > 64)
			return mb_seterr(-EINVAL, "bits: %u is not 1-64", r->bytes);
		if (r->offset > MB_NETBE_MAX_FRAME)
			return mb_seterr(-EINVAL, "offset: %u is past the largest frame",
					 r->offset);
		break;
	case MB_FAULT_NET_REORDER:
		if (r->pulses < 1 || r->pulses > 64)
			return mb_seterr(-EINVAL, "gap: %u is not 1-64", r->pulses);
		if (r->ms < 1 || r->ms > 60000)
			return mb_seterr(-EINVAL, "ms: %u is not 1-60000", r->ms);
		break;
	case MB_FAULT_NET_DELAY:
		if (r->ms > 60000 || r->jitter > 60000 || r->ms + r->jitter == 0)
			return mb_seterr(-EINVAL, "ms: %u (+ jitter %u) is not 1-60000",
					 r->ms, r->jitter);
		break;
	case MB_FAULT_NET_RATE:
		if (r->rate < 8 || r->rate > (1ull << 40))
			return mb_seterr(-EINVAL, "bytes_per_s: %llu is not 8-2^40",
					 (unsigned long long)r->rate);
		if (r->ms < 1 || r->ms > 60000)
			return mb_seterr(-EINVAL, "max_wait_ms: %u is not 1-60000", r->ms);
		break;
	case MB_FAULT_NET_LINK:
		if (r->after || r->nth || r->every || r->has_p || r->count ||
		    r->has_window)
			return mb_seterr(-EINVAL, "net.link: applied when added (no "
					 "conditions)");
		break;
	default:
		break;
	}
	return 0;
}

static int check(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	if (r->action < MB_FAULT_BLK_ERROR || r->action > MB_FAULT_LAST_ACTION)
		return mb_seterr(-EINVAL, "fault: unknown action %d", (int)r->action);
	if (r->action == MB_FAULT_MEM_FLIP) {
		if (r->bit > 7)
			return mb_seterr(-EINVAL, "bit: %u is not 0-7", r->bit);
		if (r->nth || r->every || r->has_p || r->count)
			return mb_seterr(-EINVAL, "mem.flip: acts once (after and window "
					 "only, or no conditions: when added)");
		if (r->after && (r->after > p->nrules || p->rules[r->after - 1].removed))
			return mb_seterr(-EINVAL, "after: %u is not a rule of this plan",
					 r->after);
		return 0;
	}
	if (!r->dev[0] || !memchr(r->dev, 0, sizeof r->dev))
		return mb_seterr(-EINVAL, "dev: missing (the device to fault)");
	if (MB_FAULT_IS_NET(r->action))
		return check_net(p, r);
	if (r->ops & ~MB_FAULT_OP_ANY)
		return mb_seterr(-EINVAL, "op: 0x%x has unknown bits", r->ops);
	if (r->has_p && !(r->p >= 0 && r->p <= 1))
		return mb_seterr(-EINVAL, "p: %g is not a probability (0-1)", r->p);
	if (r->after && (r->after > p->nrules || p->rules[r->after - 1].removed))
		return mb_seterr(-EINVAL, "after: %u is not a rule of this plan", r->after);
	if (r->action == MB_FAULT_BLK_ERROR && r->status != VIRTIO_BLK_S_IOERR &&
	    r->status != VIRTIO_BLK_S_UNSUPP)
		return mb_seterr(-EINVAL, "status: %u is not ioerr (1) or unsupp (2)",
				 r->status);
	if (r->action == MB_FAULT_BLK_LATENCY && (r->ms == 0 || r->ms > 3600000))
		return mb_seterr(-EINVAL, "ms: %u is not 1-3600000", r->ms);
	if (r->action == MB_FAULT_BLK_CORRUPT && r->bytes > 512)
		return mb_seterr(-EINVAL, "bytes: %u is more than a sector (512)",
				 r->bytes);
	if (r->action == MB_FAULT_BLK_CORRUPT && r->ops &&
	    (r->ops & ~MB_FAULT_OP_READ))
		return mb_seterr(-EINVAL, "op: corrupt acts on reads only");
	if (r->action == MB_FAULT_BLK_LYING_FLUSH && r->ops && r->ops != MB_FAULT_OP_FLUSH)
		return mb_seterr(-EINVAL, "op: lying_flush acts on flushes only");
	if (r->action == MB_FAULT_BLK_TORN_WRITE && r->ops && r->ops != MB_FAULT_OP_WRITE)
		return mb_seterr(-EINVAL, "op: torn_write acts on writes only");
	if (r->action == MB_FAULT_BLK_BAD &&
	    (r->first > r->last || r->last - r->first >= MB_FAULT_BAD_MAX_SECTORS))
		return mb_seterr(-EINVAL, "sectors: bad blocks need a range of 1-%u sectors",
				 MB_FAULT_BAD_MAX_SECTORS);
	if (r->action == MB_FAULT_BLK_HOLD &&
	    (!r->tag[0] || !memchr(r->tag, 0, sizeof r->tag)))
		return mb_seterr(-EINVAL, "tag: missing (the name plan:release takes)");
	if (mb_fault_is_once(r->action) &&
	    (r->nth || r->every || r->has_p || r->count))
		return mb_seterr(-EINVAL, "%s: acts once (after and window only, or no "
				 "conditions: when added)", mb_fault_action_name(r->action));
	if (mb_fault_is_dev(r->action)) {
		if (r->ops & ~(MB_FAULT_OP_READ | MB_FAULT_OP_WRITE))
			return mb_seterr(-EINVAL, "op: an access is a read or a write");
		if (r->action == MB_FAULT_DEV_DELAY &&
		    (r->ms < 1 || r->ms > MB_FAULT_DELAY_MAX_MS))
			return mb_seterr(-EINVAL, "ms: %u is not 1-%u", r->ms,
					 MB_FAULT_DELAY_MAX_MS);
		if (r->action == MB_FAULT_DEV_CORRUPT && (r->bytes < 1 || r->bytes > 64))
			return mb_seterr(-EINVAL, "bits: %u is not 1-64", r->bytes);
		return 0;
	}
	if ((r->action == MB_FAULT_IRQ_DELAY || r->action == MB_FAULT_PIT_LATE) &&
	    (r->ms < 1 || r->ms > MB_FAULT_DELAY_MAX_MS))
		return mb_seterr(-EINVAL, "ms: %u is not 1-%u", r->ms, MB_FAULT_DELAY_MAX_MS);
	if (r->action == MB_FAULT_RTC_JUMP &&
	    (r->seconds == 0 || r->seconds > 100ll * 366 * 86400 ||
	     r->seconds < -100ll * 366 * 86400))
		return mb_seterr(-EINVAL, "seconds: %lld is not a jump of 1 s to 100 years "
				 "either way", (long long)r->seconds);
	if (mb_fault_is_irq(r->action)) {
		if (strcmp(r->dev, "irq") != 0)
			return mb_seterr(-EINVAL, "dev: interrupt faults act on \"irq\"");
		unsigned max = p->m ? mb_machine_irq_lines(p->m) : 24;
		if (r->first <= r->last && r->last >= max)
			return mb_seterr(-EINVAL, "line: %llu does not exist (0-%u)",
					 (unsigned long long)r->last, max - 1);
		if (r->action == MB_FAULT_IRQ_STORM && (r->pulses < 1 || r->pulses > 1000))
			return mb_seterr(-EINVAL, "pulses: %u is not 1-1000", r->pulses);
		if (r->action == MB_FAULT_IRQ_SPURIOUS && r->first != r->last)
			return mb_seterr(-EINVAL, "line: a spurious edge needs one line");
		return 0;
	}
	if (mb_fault_is_uart(r->action)) {
		if (r->ops & ~(MB_FAULT_OP_READ | MB_FAULT_OP_WRITE))
			return mb_seterr(-EINVAL, "dir: a uart byte is rx or tx");
		if (r->action == MB_FAULT_UART_CORRUPT && (r->bytes < 1 || r->bytes > 8))
			return mb_seterr(-EINVAL, "bits: %u is not 1-8", r->bytes);
		if (r->action == MB_FAULT_UART_ERROR &&
		    (r->ops != MB_FAULT_OP_READ ||
		     (r->lsr != MB_FAULT_LSR_OE && r->lsr != MB_FAULT_LSR_PE &&
		      r->lsr != MB_FAULT_LSR_FE && r->lsr != MB_FAULT_LSR_BI)))
			return mb_seterr(-EINVAL, "kind: line errors are rx only, one of "
					 "overrun, parity, framing or break");
	}
	return 0;
}

/* Which devices a kind of fault acts on. */
static const char *kind_for(enum mb_fault_action a)
{
	if (MB_FAULT_IS_NET(a))
		return "virtio_net";
	return mb_fault_is_uart(a) ? "uart16550" : mb_fault_is_pit(a) ? "pit8254"
	       : a == MB_FAULT_RTC_JUMP ? "rtc" : mb_fault_is_virtio(a) ? "virtio_*"
	       : "virtio_blk";
}

/* The device a rule names, of the kind its fault acts on (an isolated
 * one refuses what its process cannot be asked about: docs/devproc.md). */
static int find_dev(struct mb_fault_plan *p, const char *dev,
		    enum mb_fault_action a, struct mb_device **out)
{
	struct mb_device *d = mb_machine_device(p->m, dev);
	const char *want = kind_for(a);
	if (!d)
		return mb_seterr(-ENOENT, "dev: no device \"%s\" in this machine", dev);
	if (mb_fault_is_dev(a)) { /* any kind, but across a process boundary */
		if (!mb_devproc_of(d))
			return mb_seterr(-EINVAL, "dev: %s runs in the VMM (dev.* faults act "
					 "on isolated devices: isolate = true)", dev);
		*out = d;
		return 0;
	}
	bool ok = mb_fault_is_virtio(a) ? strncmp(mb_device_kind(d), "virtio_", 7) == 0
					: strcmp(mb_device_kind(d), want) == 0;
	if (!ok)
		return mb_seterr(-EINVAL, "dev: %s is a %s, not a %s", dev,
				 mb_device_kind(d), want);
	/* An isolated UART's bytes cross the VMM (core/devproc.c): every
	 * uart rule is decided there, once per byte, and a line error goes
	 * to the process with its byte (attach, below). */
	/* Every other fault is applied inside the device model, which for
	 * an isolated device is in the other process: it asks the VMM, which
	 * decides here, or (what acts once) is told to act by FAULT_APPLY
	 * (docs/devproc.md, "Fault rules inside an isolated model"). */
	*out = d;
	return 0;
}

/* The ops a rule matches: the op a fault acts on is its filter. */
static unsigned rule_ops(const struct mb_fault_rule *r)
{
	if (r->action == MB_FAULT_BLK_LYING_FLUSH)
		return MB_FAULT_OP_FLUSH;
	if (r->action == MB_FAULT_BLK_TORN_WRITE)
		return MB_FAULT_OP_WRITE;
	if (r->action == MB_FAULT_BLK_BAD)
		return MB_FAULT_OP_READ | MB_FAULT_OP_WRITE;
	return r->ops;
}

/* Under the lock: site s's summary from its live rules (see struct
 * mb_fault_site). A superset of what they match: the conditions, `after`,
 * windows and healed bad blocks are left to decide(). */
static void summarise(struct mb_fault_plan *p, struct mb_fault_site *s)
{
	if (p->remote)
		return; /* a proxy: its ops are what FAULT_ARM armed */
	unsigned ops = 0;
	uint64_t lo[4] = { UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX };
	uint64_t hi[4] = { 0, 0, 0, 0 };
	for (size_t i = 0; i < p->nrules; i++) {
		const struct slot *sl = &p->rules[i];
		if (sl->site != s || sl->removed || sl->r.disabled)
			continue;
		unsigned o = sl->r.ops ? sl->r.ops & MB_FAULT_OP_ANY : MB_FAULT_OP_ANY;
		bool all = sl->r.first > sl->r.last; /* no range: every sector */
		ops |= o;
		for (unsigned b = 0; b < 4; b++) {
			if (!(o >> b & 1))
				continue;
			uint64_t f = all ? 0 : sl->r.first, l = all ? UINT64_MAX : sl->r.last;
			lo[b] = f < lo[b] ? f : lo[b];
			hi[b] = l > hi[b] ? l : hi[b];
		}
	}
	for (unsigned b = 0; b < 4; b++) {
		atomic_store_explicit(&s->range[b].lo, lo[b], memory_order_relaxed);
		atomic_store_explicit(&s->range[b].hi, hi[b], memory_order_relaxed);
	}
	atomic_store_explicit(&s->ops, ops, memory_order_release);
}

/* Lock-free: can a live rule on s match e (its op, then its sectors
 * against the hull, as mb_fault_blk_match judges one rule)? A read that
 * races a change of the rules sees the summary before or after it, or
 * a mix of the two hulls, which still covers every rule live in both. */
static bool may_match(struct mb_fault_site *s, const struct mb_fault_blk_event *e)
{
	unsigned ops = atomic_load_explicit(&s->ops, memory_order_acquire);
	if (!(ops & e->op))
		return false;
	if (e->op == MB_FAULT_OP_FLUSH || (e->op & (e->op - 1)))
		return true; /* no sectors (a flush matches any range), or not one op */
	unsigned b = (unsigned)__builtin_ctz(e->op);
	uint64_t lo = atomic_load_explicit(&s->range[b].lo, memory_order_relaxed);
	uint64_t hi = atomic_load_explicit(&s->range[b].hi, memory_order_relaxed);
	uint64_t n = e->nsectors ? e->nsectors : 1;
	uint64_t end = e->sector + (n - 1);
	if (end < e->sector)
		end = UINT64_MAX;
	return e->sector <= hi && end >= lo;
}

/* With a machine: give the device the site (virtio_blk, uart16550). */
static int attach(struct mb_fault_plan *p, struct mb_fault_site *s,
		  const struct mb_fault_rule *r)
{
	enum mb_fault_action a = r->action;
	if (!p->m)
		return 0;
	if (mb_fault_is_irq(a)) /* the machine's lines, not a device */
		return mb_machine_set_irq_fault(p->m, s);
	struct mb_device *d;
	int rc = find_dev(p, s->dev, a, &d);
	if (rc)
		return rc;
	if (mb_fault_is_dev(a))
		return mb_devproc_set_dev_fault(mb_devproc_of(d), s);
	if (mb_fault_is_uart(a) && mb_devproc_of(d))
		return mb_devproc_set_uart_fault(mb_devproc_of(d), s);
	if (mb_devproc_of(d)) /* decided here, applied in the process's model */
		return mb_devproc_set_model_fault(mb_devproc_of(d), s,
			mb_fault_is_virtio(a) ? MB_DP_FAULT_VIRTIO : MB_DP_FAULT_MODEL,
			rule_ops(r) ? rule_ops(r) : MB_FAULT_OP_ANY);
	if (MB_FAULT_IS_NET(a))
		return mb_virtio_net_set_fault(mb_virtio_dev_model(d), s);
	if (mb_fault_is_uart(a)) {
		struct mb_uart *u = mb_uart_of_device(d);
		if (!u)
			return mb_seterr(-ENOTSUP, "dev: %s runs out of process: uart "
					 "faults act in the VMM's own UART only", s->dev);
		return mb_uart_set_fault(u, s);
	}
	if (mb_fault_is_pit(a)) {
		struct mb_pit *pit = mb_pit_of_device(d);
		if (!pit)
			return mb_seterr(-ENOTSUP, "dev: %s is KVM's in-kernel PIT (pit = "
					 "\"kernel\"): its ticks never pass moonbox", s->dev);
		return mb_pit_set_fault(pit, s);
	}
	if (mb_fault_is_virtio(a)) {
		struct mb_virtio *t = mb_virtio_dev_transport(d);
		if (!t)
			return mb_seterr(-ENOTSUP, "dev: %s has no virtio-mmio transport "
					 "in this process", s->dev);
		return mb_virtio_set_fault(t, s);
	}
	return mb_virtio_blk_set_fault(mb_virtio_dev_model(d), s);
}

/* Room for one more rule (p->lock held); 0 or -ENOMEM. */
static int room(struct mb_fault_plan *p)
{
	if (p->nrules < p->caprules)
		return 0;
	size_t cap = p->caprules ? 2 * p->caprules : 8;
	void *nr = realloc(p->rules, cap * sizeof *p->rules);
	if (!nr)
		return mb_seterr(-ENOMEM, "faults: out of memory");
	p->rules = nr, p->caprules = cap;
	return 0;
}

/* A bit flip in guest RAM, now: the rule acts once, as it is added. */
static int mem_flip(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	int rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (rc)
		return rc;
	uint8_t *b = p->m ? mb_mem_ptr(mb_machine_mem(p->m), r->gpa, 1, true) : NULL;
	if (!b)
		return mb_seterr(-EINVAL, "gpa: 0x%llx is not guest RAM",
				 (unsigned long long)r->gpa);
	if ((rc = room(p)))
		return rc;
	__atomic_xor_fetch(b, (uint8_t)(1u << r->bit), __ATOMIC_SEQ_CST);
	struct slot *sl = &p->rules[p->nrules];
	memset(sl, 0, sizeof *sl);
	sl->r = *r;
	snprintf(sl->r.dev, sizeof sl->r.dev, "mem");
	sl->matched = sl->fired = 1;
	return (int)++p->nrules;
}

/* A spurious edge, now: like mem.flip, the rule acts once as it is added. */
static int irq_spurious(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	int rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (rc)
		return rc;
	struct mb_irq irq;
	if (p->m && (rc = mb_machine_irq(p->m, (unsigned)r->first, &irq)))
		return rc;
	if ((rc = room(p)))
		return rc;
	struct slot *sl = &p->rules[p->nrules];
	memset(sl, 0, sizeof *sl);
	sl->r = *r;
	sl->matched = sl->fired = 1;
	int id = (int)++p->nrules;
	if (p->m) { /* outside the plan's lock: the line's site may decide */
		pthread_mutex_unlock(&p->lock);
		mb_irq_pulse(&irq);
		pthread_mutex_lock(&p->lock);
	}
	return id;
}

/* A once rule for an isolated device's process (FAULT_APPLY): it acts
 * there through the calls once_apply makes here. 0 or -errno. */
static int apply_remote(struct mb_device *d, const struct mb_fault_rule *r)
{
	struct mb_dp_fault_apply a = {
		.action = (uint32_t)r->action, .up = r->up, .seconds = r->seconds,
		.capacity = r->action == MB_FAULT_VIRTIO_CONFIG_CHANGE ? r->capacity : 0,
	};
	return mb_devproc_fault_apply(mb_devproc_of(d), &a);
}

/* once() for an isolated device: checked, then acted on in its process
 * (which checks what only the model knows, e.g. a capacity), then
 * recorded: a refusal leaves no rule. */
static int once_isolated(struct mb_fault_plan *p, struct mb_device *d,
			 const struct mb_fault_rule *r)
{
	pthread_mutex_lock(&p->lock);
	int rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (!rc)
		rc = room(p);
	pthread_mutex_unlock(&p->lock);
	if (rc || (rc = apply_remote(d, r)))
		return rc;
	pthread_mutex_lock(&p->lock);
	rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : room(p);
	int id = rc;
	if (!rc) {
		struct slot *sl = &p->rules[p->nrules];
		memset(sl, 0, sizeof *sl);
		sl->r = *r;
		sl->matched = sl->fired = 1;
		id = (int)++p->nrules;
	}
	pthread_mutex_unlock(&p->lock);
	return id;
}

/* An RTC jump, DEVICE_NEEDS_RESET or a config change, now: the device is
 * found and checked first, the rule recorded, then the action applied
 * outside the plan's lock (it may raise an interrupt, which may decide). */
static int once(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	struct mb_device *d = NULL;
	int rc = 0;
	if (p->m && (rc = find_dev(p, r->dev, r->action, &d)))
		return rc;
	if (d && mb_devproc_of(d)) {
		if (r->capacity && strcmp(mb_device_kind(d), "virtio_blk") != 0)
			return mb_seterr(-EINVAL, "capacity: %s is a %s (a new capacity "
					 "is for virtio_blk)", r->dev, mb_device_kind(d));
		return once_isolated(p, d, r);
	}
	struct mb_rtc *rtc = NULL;
	struct mb_virtio *t = NULL;
	struct mb_virtio_blk *blk = NULL;
	if (d && r->action == MB_FAULT_RTC_JUMP && !(rtc = mb_rtc_of_device(d)))
		return mb_seterr(-ENOTSUP, "dev: %s is not moonbox's RTC", r->dev);
	if (d && mb_fault_is_virtio(r->action) && !(t = mb_virtio_dev_transport(d)))
		return mb_seterr(-ENOTSUP, "dev: %s has no virtio-mmio transport in "
				 "this process", r->dev);
	if (d && r->capacity) {
		if (strcmp(mb_device_kind(d), "virtio_blk") != 0)
			return mb_seterr(-EINVAL, "capacity: %s is a %s (a new capacity "
					 "is for virtio_blk)", r->dev, mb_device_kind(d));
		blk = mb_virtio_dev_model(d);
		if ((rc = mb_virtio_blk_check_resize(blk, r->capacity)))
			return rc;
	}
	pthread_mutex_lock(&p->lock);
	rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (!rc)
		rc = room(p);
	int id = rc;
	if (!rc) {
		struct slot *sl = &p->rules[p->nrules];
		memset(sl, 0, sizeof *sl);
		sl->r = *r;
		sl->matched = sl->fired = 1;
		id = (int)++p->nrules;
	}
	pthread_mutex_unlock(&p->lock);
	if (id < 0)
		return id;
	if (rtc)
		mb_rtc_jump(rtc, r->seconds);
	if (r->action == MB_FAULT_VIRTIO_NEEDS_RESET && t)
		mb_virtio_fail(t, "fault injection (virtio.needs_reset)");
	if (r->action == MB_FAULT_VIRTIO_CONFIG_CHANGE && t) {
		if (blk)
			mb_virtio_blk_resize(blk, t, r->capacity);
		else
			mb_virtio_config_change(t);
	}
	return id;
}

/* The link status, now: like irq.spurious, the rule acts once as it is
 * added (the device interrupts the driver with a config change). */
static int net_link(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	int rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (rc)
		return rc;
	struct mb_device *d = NULL;
	if (p->m && (rc = find_dev(p, r->dev, r->action, &d)))
		return rc;
	if ((rc = room(p)))
		return rc;
	if (d && mb_devproc_of(d)) {
		/* In its process, first: a refusal (a dead process) leaves no
		 * rule. The room is looked at again after the wait. */
		pthread_mutex_unlock(&p->lock);
		rc = apply_remote(d, r);
		pthread_mutex_lock(&p->lock);
		if (rc || (rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is "
						       "closed") : room(p)))
			return rc;
		d = NULL; /* acted */
	}
	struct slot *sl = &p->rules[p->nrules];
	memset(sl, 0, sizeof *sl);
	sl->r = *r;
	sl->matched = sl->fired = 1;
	int id = (int)++p->nrules;
	if (d) { /* outside the plan's lock: the device may be deciding */
		pthread_mutex_unlock(&p->lock);
		mb_virtio_net_set_link(mb_virtio_dev_model(d), r->up);
		pthread_mutex_lock(&p->lock);
	}
	return id;
}

static int once_later(struct mb_fault_plan *p, const struct mb_fault_rule *r);
static void once_kick(struct mb_fault_plan *p, uint64_t at);

int mb_fault_plan_add(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	if (mb_fault_is_once(r->action) && (r->after || r->has_window))
		return once_later(p, r);
	if (r->action == MB_FAULT_RTC_JUMP || r->action == MB_FAULT_VIRTIO_NEEDS_RESET ||
	    r->action == MB_FAULT_VIRTIO_CONFIG_CHANGE)
		return once(p, r);
	if (r->action == MB_FAULT_NET_LINK) {
		pthread_mutex_lock(&p->lock);
		int id = net_link(p, r);
		pthread_mutex_unlock(&p->lock);
		return id;
	}
	if (r->action == MB_FAULT_IRQ_SPURIOUS) {
		pthread_mutex_lock(&p->lock);
		int id = irq_spurious(p, r);
		pthread_mutex_unlock(&p->lock);
		return id;
	}
	if (r->action == MB_FAULT_MEM_FLIP) {
		pthread_mutex_lock(&p->lock);
		int id = mem_flip(p, r);
		pthread_mutex_unlock(&p->lock);
		return id;
	}
	pthread_mutex_lock(&p->lock);
	int rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed")
			   : check(p, r);
	struct mb_fault_site *s = NULL;
	if (!rc && !(s = site_for(p, r->dev)))
		rc = mb_seterr(-ENOMEM, "faults: out of memory");
	if (!rc)
		rc = room(p);
	pthread_mutex_unlock(&p->lock);
	/* Outside the lock: the device may be deciding right now. */
	if (!rc && (rc = attach(p, s, r)))
		return rc;
	if (rc)
		return rc;
	uint8_t *healed = NULL;
	if (r->action == MB_FAULT_BLK_BAD &&
	    !(healed = calloc((size_t)((r->last - r->first) / 8 + 1), 1)))
		return mb_seterr(-ENOMEM, "faults: out of memory");
	pthread_mutex_lock(&p->lock);
	struct slot *sl = &p->rules[p->nrules];
	memset(sl, 0, sizeof *sl);
	sl->r = *r;
	sl->site = s;
	sl->healed = healed;
	sl->added_ns = p->m ? mb_machine_clock(p->m)->now(mb_machine_clock(p->m))
			    : now_ns(CLOCK_MONOTONIC);
	sl->r.ops = rule_ops(r);
	int id = (int)++p->nrules;
	summarise(p, s);
	pthread_mutex_unlock(&p->lock);
	return id;
}

static struct slot *slot(struct mb_fault_plan *p, unsigned id)
{
	return id >= 1 && id <= p->nrules ? &p->rules[id - 1] : NULL;
}

int mb_fault_plan_remove(struct mb_fault_plan *p, unsigned id)
{
	pthread_mutex_lock(&p->lock);
	struct slot *s = slot(p, id);
	if (s) {
		s->removed = true; /* the id stays taken: ids never shift */
		if (s->site)
			summarise(p, s->site);
	}
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : mb_seterr(-ENOENT, "rule: %u is not a rule of this plan", id);
}

int mb_fault_plan_reset(struct mb_fault_plan *p, uint64_t seed)
{
	pthread_mutex_lock(&p->lock);
	bool replay = p->replaying;
	if (!replay) {
		p->nrules = 0;
		p->seed = seed;
		p->enabled = true;
		p->diverged = false;
		for (size_t i = 0; i < p->nsites; i++) {
			atomic_store(&p->sites[i]->seq, 0);
			summarise(p, p->sites[i]); /* no rules: nothing matches */
		}
		if (p->trace) { /* a trace per trial reads as one from a new plan */
			char line[128];
			mb_fault_trace_header(line, sizeof line, seed);
			fputs(line, p->trace);
			fflush(p->trace);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return replay ? mb_seterr(-EINVAL, "reset: a replaying plan cannot be reset")
		      : 0;
}

int mb_fault_plan_set_rule_enabled(struct mb_fault_plan *p, unsigned id, bool on)
{
	pthread_mutex_lock(&p->lock);
	struct slot *s = slot(p, id);
	if (s) {
		s->r.disabled = !on;
		if (s->site)
			summarise(p, s->site);
	}
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : mb_seterr(-ENOENT, "rule: %u is not a rule of this plan", id);
}

void mb_fault_plan_enable(struct mb_fault_plan *p, bool on)
{
	pthread_mutex_lock(&p->lock);
	p->enabled = on;
	pthread_mutex_unlock(&p->lock);
}

unsigned mb_fault_plan_nrules(struct mb_fault_plan *p)
{
	pthread_mutex_lock(&p->lock);
	unsigned n = (unsigned)p->nrules;
	pthread_mutex_unlock(&p->lock);
	return n;
}

int mb_fault_plan_stats(struct mb_fault_plan *p, unsigned id,
			struct mb_fault_rule_stats *st)
{
	pthread_mutex_lock(&p->lock);
	struct slot *s = slot(p, id);
	if (s)
		*st = (struct mb_fault_rule_stats){ s->matched, s->fired, s->removed };
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : mb_seterr(-ENOENT, "rule: %u is not a rule of this plan", id);
}

int mb_fault_plan_rule(struct mb_fault_plan *p, unsigned id,
		       struct mb_fault_rule *out)
{
	pthread_mutex_lock(&p->lock);
	struct slot *s = slot(p, id);
	if (s)
		*out = s->r;
	pthread_mutex_unlock(&p->lock);
	return s ? 0 : mb_seterr(-ENOENT, "rule: %u is not a rule of this plan", id);
}

/* ---- decisions ---------------------------------------------------------------- */

bool mb_fault_blk_match(const struct mb_fault_rule *r,
			const struct mb_fault_blk_event *e)
{
	if (r->ops && !(r->ops & e->op))
		return false;
	if (r->first > r->last || e->op == MB_FAULT_OP_FLUSH)
		return true; /* no range, or an op without sectors */
	/* Overlap of [sector, sector + n - 1] and [first, last]; a request of
	 * 0 sectors counts as its first sector. */
	uint64_t n = e->nsectors ? e->nsectors : 1;
	uint64_t end = e->sector + (n - 1);
	if (end < e->sector)
		end = UINT64_MAX;
	return e->sector <= r->last && end >= r->first;
}

/* Under the lock. A BAD rule's view of e: a write heals the sectors of
 * the range it covers (false: not a match); a read is a match while one
 * of its sectors in the range is still bad. */
static bool bad_event(struct slot *s, const struct mb_fault_blk_event *e)
{
	uint64_t n = e->nsectors ? e->nsectors : 1;
	uint64_t lo = e->sector > s->r.first ? e->sector : s->r.first;
	uint64_t hi = e->sector + (n - 1);
	if (hi < e->sector || hi > s->r.last)
		hi = s->r.last;
	bool bad = false;
	for (uint64_t x = lo; x <= hi; x++) {
		uint64_t i = x - s->r.first;
		if (e->op == MB_FAULT_OP_WRITE)
			s->healed[i / 8] |= (uint8_t)(1u << (i % 8));
		else if (!(s->healed[i / 8] & (1u << (i % 8))))
			bad = true;
	}
	return e->op != MB_FAULT_OP_WRITE && bad;
}

static void divergence(struct mb_fault_plan *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Under the lock: stop the machine once, decide nothing more. */
static void divergence(struct mb_fault_plan *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	p->diverged = true;
	if (p->m)
		mb_machine_stop(p->m, MB_STOP_DIVERGENCE, 1, "fault replay diverged: %s",
				msg);
	else
		mb_seterr(-EINVAL, "fault replay diverged: %s", msg);
}

/* Replay: the recorded decision for rule id's match ordinal o of e, or
 * false after stopping the machine (the event differs from the record). */
static bool recorded(struct mb_fault_plan *p, unsigned id, struct slot *s,
		     uint64_t o, const struct mb_fault_blk_event *e,
		     struct mb_fault_record **out)
{
	struct mb_fault_trace *t = &p->replay;
	while (s->next < t->n && t->r[s->next].rule != id)
		s->next++;
	if (s->next == t->n) {
		divergence(p, "%s %s sectors %llu+%llu is rule %u's match #%llu, "
			   "which the trace does not have", s->site->dev,
			   mb_fault_op_name(e->op), (unsigned long long)e->sector,
			   (unsigned long long)e->nsectors, id, (unsigned long long)o);
		return false;
	}
	struct mb_fault_record *r = &t->r[s->next++];
	if (r->ordinal != o || strcmp(r->dev, s->site->dev) || r->op != e->op ||
	    r->sector != e->sector || r->nsectors != e->nsectors ||
	    (r->action != MB_FAULT_NONE && r->action != s->r.action)) {
		divergence(p, "rule %u's match #%llu is %s %s sectors %llu+%llu; the "
			   "trace has #%llu %s %s sectors %llu+%llu (%s)", id,
			   (unsigned long long)o, s->site->dev, mb_fault_op_name(e->op),
			   (unsigned long long)e->sector, (unsigned long long)e->nsectors,
			   (unsigned long long)r->ordinal, r->dev, mb_fault_op_name(r->op),
			   (unsigned long long)r->sector, (unsigned long long)r->nsectors,
			   mb_fault_action_name(r->action));
		return false;
	}
	*out = r;
	return true;
}

#define STREAM_STATE MB_FAULT_STREAM_STATE
#define STREAM_LOSS MB_FAULT_STREAM_LOSS
#define STREAM_JITTER MB_FAULT_STREAM_JITTER

/* Under the lock: does rule id act on its match ordinal o? */
static bool acts(struct mb_fault_plan *p, unsigned id, const struct slot *s,
		 uint64_t o)
{
	const struct mb_fault_rule *r = &s->r;
	if (r->count && s->fired >= r->count)
		return false;
	if (r->nth && o != r->nth)
		return false;
	if (r->every && o % r->every)
		return false;
	if (r->has_p && !(unit(mb_fault_hash(p->seed, id, o)) < r->p))
		return false;
	if (r->has_burst) { /* the chain moved already (burst()) */
		double loss = s->ge_bad ? r->ge_loss : r->ge_good_loss;
		if (!(unit(mb_fault_hash(p->seed, id, o ^ STREAM_LOSS)) < loss))
			return false;
	}
	return true;
}

/* Under the lock: move a burst rule's two-state chain for its match o,
 * from its own stream (so p, if given too, stays independent). */
static void burst(struct mb_fault_plan *p, unsigned id, struct slot *s, uint64_t o)
{
	double u = unit(mb_fault_hash(p->seed, id, o ^ STREAM_STATE));
	s->ge_bad = s->ge_bad ? !(u < s->r.ge_leave) : u < s->r.ge_enter;
}

bool mb_fault_verdict_fold(struct mb_fault_verdict *v, const struct mb_fault_record *r)
{
	switch (r->action) {
	case MB_FAULT_BLK_ERROR: /* the first error wins */
		if (!v->error)
			v->error = true, v->status = r->status;
		return true;
	case MB_FAULT_BLK_LATENCY: /* the longest delay */
		if (r->ms > v->ms)
			v->ms = r->ms;
		return true;
	case MB_FAULT_IRQ_DELAY:
	case MB_FAULT_PIT_LATE:
	case MB_FAULT_NET_DELAY:
	case MB_FAULT_DEV_DELAY:
		if (r->ms > v->delay_ms)
			v->delay_ms = r->ms;
		return true;
	case MB_FAULT_UART_DROP: /* any drop drops */
	case MB_FAULT_IRQ_DROP:
	case MB_FAULT_PIT_DROP:
	case MB_FAULT_NET_DROP:
	case MB_FAULT_DEV_DROP:
		v->drop = true;
		return true;
	case MB_FAULT_BLK_LYING_FLUSH:
		v->lie = true;
		return true;
	case MB_FAULT_DEV_KILL:
		v->kill = true;
		return true;
	default:
		return false;
	}
}

/* proc: the event is an access at the process boundary (dev.* rules
 * only); otherwise the device's own event (every other rule). A site is
 * per device name, and an isolated UART has both kinds of rule. */
static void decide_at(struct mb_fault_site *site, const struct mb_fault_blk_event *e,
		      bool proc, uint64_t seq, struct mb_fault_verdict *v);

/* False, v untouched, when no rule on the site can match e. */
static bool decide(struct mb_fault_site *site, const struct mb_fault_blk_event *e,
		   bool proc, struct mb_fault_verdict *v)
{
	if (site->remote) {
		struct mb_fault_plan *p = site->p;
		/* A device process: the VMM decides, with our count of events
		 * (always counted: the VMM's trace, if any, records it). The
		 * proxy has no rules, so no summary: the armed ops filter. */
		uint64_t seq = atomic_fetch_add_explicit(&site->seq, 1,
							 memory_order_relaxed) + 1;
		if (!(atomic_load_explicit(&site->ops, memory_order_acquire) & e->op))
			return false;
		memset(v, 0, sizeof *v);
		p->remote(p->remote_ctx, e, seq, v);
		return true;
	}
	uint64_t seq = site->traced ? atomic_fetch_add_explicit(&site->seq, 1,
				       memory_order_relaxed) + 1 : 0;
	if (!may_match(site, e))
		return false; /* "none" from every rule: nothing to trace */
	memset(v, 0, sizeof *v);
	decide_at(site, e, proc, seq, v);
	return true;
}

void mb_fault_remote_decide(struct mb_fault_site *site,
			    const struct mb_fault_blk_event *e, uint64_t seq,
			    struct mb_fault_verdict *v)
{
	memset(v, 0, sizeof *v);
	if (may_match(site, e))
		decide_at(site, e, false, seq, v);
}

static void decide_at(struct mb_fault_site *site, const struct mb_fault_blk_event *e,
		      bool proc, uint64_t seq, struct mb_fault_verdict *v)
{
	struct mb_fault_plan *p = site->p;
	pthread_mutex_lock(&p->lock);
	if (p->closed || !p->enabled || p->diverged)
		goto out;
	uint64_t guest = 0, host = 0; /* read once, at the first match */
	for (size_t i = 0; i < p->nrules; i++) {
		struct slot *s = &p->rules[i];
		unsigned id = (unsigned)i + 1;
		if (s->site != site || s->removed || s->r.disabled ||
		    mb_fault_is_dev(s->r.action) != proc ||
		    !mb_fault_blk_match(&s->r, e))
			continue;
		/* A rule armed by another one sees nothing before that one acted. */
		if (s->r.after && !p->rules[s->r.after - 1].fired)
			continue;
		if (s->r.has_window) { /* outside its time window: not a match */
			uint64_t t = p->m ? mb_machine_clock(p->m)->now(mb_machine_clock(p->m))
					  : now_ns(CLOCK_MONOTONIC);
			uint64_t rel = t > s->added_ns ? t - s->added_ns : 0;
			if (rel < s->r.win_from || rel >= s->r.win_to)
				continue;
		}
		/* Bad blocks: a write heals what it covers; a read matches only
		 * while it touches a sector not yet healed. */
		if (s->r.action == MB_FAULT_BLK_BAD && !bad_event(s, e))
			continue;
		uint64_t o = ++s->matched;
		if (!guest)
			guest = p->m ? mb_machine_clock(p->m)->now(mb_machine_clock(p->m))
				     : now_ns(CLOCK_MONOTONIC);
		struct mb_fault_record rec = {
			.rule = id, .ordinal = o, .seq = seq, .op = e->op,
			.sector = e->sector, .nsectors = e->nsectors,
			.status = s->r.status, .ms = s->r.ms, .guest_ns = guest,
		};
		snprintf(rec.dev, sizeof rec.dev, "%s", site->dev);
		if (p->replaying) {
			struct mb_fault_record *r;
			if (!recorded(p, id, s, o, e, &r))
				break;
			rec.action = r->action, rec.status = r->status, rec.ms = r->ms;
		} else {
			if (s->r.has_burst)
				burst(p, id, s, o);
			rec.action = acts(p, id, s, o) ? s->r.action : MB_FAULT_NONE;
			if (rec.action == MB_FAULT_NET_DELAY && s->r.jitter)
				rec.ms = s->r.ms + (uint32_t)(mb_fault_hash(p->seed, id,
					o ^ STREAM_JITTER) % (s->r.jitter + 1ull));
		}
		/* What the record alone says, folded as an m:on answer is
		 * (mb_fault_verdict_fold); the rest needs the rule. */
		switch (mb_fault_verdict_fold(v, &rec) ? MB_FAULT_NONE : rec.action) {
		case MB_FAULT_BLK_CORRUPT:
			if (e->op == MB_FAULT_OP_READ && !v->corrupt) {
				v->corrupt = true;
				v->key = mb_fault_hash(p->seed, id, o);
				v->first = s->r.first, v->last = s->r.last;
				v->bytes = s->r.bytes ? s->r.bytes : 1;
			}
			break;
		case MB_FAULT_BLK_TORN_WRITE:
			if (!v->torn)
				v->torn = true, v->keep = s->r.keep;
			break;
		case MB_FAULT_BLK_BAD:
			if (!v->error)
				v->error = true, v->status = VIRTIO_BLK_S_IOERR;
			break;
		case MB_FAULT_BLK_HOLD:
			if (!v->hold) {
				v->hold = true;
				memcpy(v->tag, s->r.tag, sizeof v->tag);
			}
			break;
		case MB_FAULT_UART_CORRUPT:
			if (!v->flip) { /* `bytes` distinct bits, from the seed */
				uint64_t h = mb_fault_hash(p->seed, id, o);
				for (unsigned k = 0; k < 64 && __builtin_popcount(v->flip) <
				     (int)s->r.bytes; k += 3)
					v->flip |= (uint8_t)(1u << ((h >> k) & 7));
				for (unsigned b = 0; __builtin_popcount(v->flip) <
				     (int)s->r.bytes; b++) /* the hash ran short */
					v->flip |= (uint8_t)(1u << b);
			}
			break;
		case MB_FAULT_UART_ERROR:
			v->lsr |= s->r.lsr;
			if (s->r.lsr == MB_FAULT_LSR_OE)
				v->drop = true;
			break;
		case MB_FAULT_IRQ_STORM:
			if (s->r.pulses > v->pulses)
				v->pulses = s->r.pulses;
			break;
		case MB_FAULT_VIRTIO_BAD_USED_ID:
			if (!v->bad_id) {
				v->bad_id = true;
				v->has_id = s->r.has_id, v->used_id = s->r.id;
			}
			break;
		case MB_FAULT_NET_DUPLICATE:
			if (s->r.pulses > v->dup)
				v->dup = s->r.pulses;
			break;
		case MB_FAULT_NET_CORRUPT:
			if (!v->corrupt) {
				v->corrupt = true;
				v->key = mb_fault_hash(p->seed, id, o);
				v->bytes = s->r.bytes;
				v->first = s->r.offset;
			}
			break;
		case MB_FAULT_NET_REORDER:
			if (!v->reorder)
				v->reorder = s->r.pulses, v->reorder_ms = s->r.ms;
			break;
		case MB_FAULT_NET_RATE:
			if (!v->rate || s->r.rate < v->rate)
				v->rate = s->r.rate;
			if (s->r.ms > v->rate_ms)
				v->rate_ms = s->r.ms;
			break;
		case MB_FAULT_DEV_CORRUPT:
			if (e->op == MB_FAULT_OP_READ && !v->corrupt) {
				v->corrupt = true;
				v->key = mb_fault_hash(p->seed, id, o);
				v->bytes = s->r.bytes;
			}
			break;
		case MB_FAULT_NET_LINK: /* acted when added */
		case MB_FAULT_IRQ_SPURIOUS: /* acted when added */
		case MB_FAULT_RTC_JUMP:
		case MB_FAULT_VIRTIO_NEEDS_RESET:
		case MB_FAULT_VIRTIO_CONFIG_CHANGE:
		case MB_FAULT_MEM_FLIP: /* never on a device site */
		case MB_FAULT_NONE:
		default: /* folded above */
			break;
		}
		if (rec.action != MB_FAULT_NONE && ++s->fired == 1 && p->npending)
			once_kick(p, 0); /* a once fault may wait for this one */
		if (p->trace) {
			char line[512];
			if (!host)
				host = now_ns(CLOCK_REALTIME);
			rec.host_ns = host;
			mb_fault_trace_format(line, sizeof line, &rec);
			fputs(line, p->trace);
			fflush(p->trace); /* a crashed run keeps its decisions */
		}
	}
out:
	pthread_mutex_unlock(&p->lock);
}

void mb_fault_blk_decide(struct mb_fault_site *site,
			 const struct mb_fault_blk_event *e,
			 struct mb_fault_verdict *v)
{
	if (!decide(site, e, false, v))
		memset(v, 0, sizeof *v);
}

bool mb_fault_blk_maybe(struct mb_fault_site *site,
			const struct mb_fault_blk_event *e,
			struct mb_fault_verdict *v)
{
	return decide(site, e, false, v);
}

void mb_fault_dev_decide(struct mb_fault_site *s, unsigned op, uint64_t addr,
			 unsigned size, struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = { .op = op, .sector = addr, .nsectors = size };
	if (!decide(s, &e, true, v))
		memset(v, 0, sizeof *v);
}

void mb_fault_irq_decide(struct mb_fault_site *s, unsigned line,
			 struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = { .op = MB_FAULT_OP_WRITE, .sector = line,
					.nsectors = 1 };
	mb_fault_blk_decide(s, &e, v);
}

void mb_fault_pit_decide(struct mb_fault_site *s, struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = { .op = MB_FAULT_OP_WRITE, .nsectors = 1 };
	mb_fault_blk_decide(s, &e, v);
}

void mb_fault_virtio_decide(struct mb_fault_site *s, unsigned qi,
			    struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = { .op = MB_FAULT_OP_WRITE, .sector = qi,
					.nsectors = 1 };
	mb_fault_blk_decide(s, &e, v);
}

void mb_fault_net_decide(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			 uint32_t len, struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = {
		.op = rx ? MB_FAULT_OP_READ : MB_FAULT_OP_WRITE,
		.sector = ordinal, .nsectors = len,
	};
	mb_fault_blk_decide(s, &e, v);
}

bool mb_fault_net_maybe(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			uint32_t len, struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = {
		.op = rx ? MB_FAULT_OP_READ : MB_FAULT_OP_WRITE,
		.sector = ordinal, .nsectors = len,
	};
	return decide(s, &e, false, v);
}

void mb_fault_net_corrupt(const struct mb_fault_verdict *v, uint8_t *frame,
			  size_t len)
{
	if (!v->corrupt || len <= v->first)
		return;
	/* `bytes` distinct bits (one chosen twice would cancel itself) */
	uint64_t bits = (uint64_t)(len - v->first) * 8, got[64];
	unsigned n = v->bytes < 64 ? v->bytes : 64, k = 0;
	for (uint64_t j = 0; k < n && k < bits && j < 64 * 64; j++) {
		uint64_t b = mb_fault_hash(v->key, 0, j) % bits;
		unsigned i = 0;
		while (i < k && got[i] != b)
			i++;
		if (i < k)
			continue;
		got[k++] = b;
		frame[v->first + b / 8] ^= (uint8_t)(1u << (b % 8));
	}
}

void mb_fault_uart_decide(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			  struct mb_fault_verdict *v)
{
	struct mb_fault_blk_event e = {
		.op = rx ? MB_FAULT_OP_READ : MB_FAULT_OP_WRITE,
		.sector = ordinal, .nsectors = 1,
	};
	mb_fault_blk_decide(s, &e, v);
}

void mb_fault_blk_corrupt(const struct mb_fault_verdict *v,
			  const struct iovec *iov, unsigned n, uint64_t sector,
			  uint64_t len)
{
	if (!v->corrupt)
		return;
	for (uint64_t i = 0; i < len / 512; i++) {
		uint64_t s = sector + i;
		if (v->first <= v->last && (s < v->first || s > v->last))
			continue;
		for (unsigned j = 0; j < v->bytes; j++) {
			uint64_t x = mb_fault_hash(v->key, s, j);
			uint64_t off = i * 512 + (x & 511);
			uint8_t bit = (uint8_t)(1u << ((x >> 9) & 7));
			for (unsigned k = 0; k < n; k++) {
				if (off < iov[k].iov_len) {
					((uint8_t *)iov[k].iov_base)[off] ^= bit;
					break;
				}
				off -= iov[k].iov_len;
			}
		}
	}
}

/* ---- held requests -------------------------------------------------------- */

void mb_fault_hold(struct mb_fault_site *s, const char *tag,
		   struct mb_fault_held *h, void (*release)(void *), void *arg)
{
	struct mb_fault_plan *p = s->p;
	h->site = s;
	snprintf(h->tag, sizeof h->tag, "%s", tag);
	h->release = release, h->arg = arg;
	pthread_mutex_lock(&p->lock);
	bool closed = p->closed;
	if (!closed)
		h->next = p->held, p->held = h;
	pthread_mutex_unlock(&p->lock);
	if (closed)
		release(arg); /* nobody could release it any more */
}

/* Unlink the held requests for which keep() is false, oldest first. */
static struct mb_fault_held *unlink_held(struct mb_fault_plan *p, const char *tag,
					 struct mb_fault_site *site)
{
	struct mb_fault_held *out = NULL, **pp = &p->held;
	pthread_mutex_lock(&p->lock);
	while (*pp) {
		struct mb_fault_held *h = *pp;
		if ((!tag || strcmp(h->tag, tag) == 0) && (!site || h->site == site)) {
			*pp = h->next;
			h->next = out, out = h; /* reverses: the oldest comes first */
		} else {
			pp = &h->next;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return out;
}

int mb_fault_plan_release(struct mb_fault_plan *p, const char *tag)
{
	int n = 0;
	for (struct mb_fault_held *h = unlink_held(p, tag, NULL), *next; h; h = next) {
		next = h->next; /* release() may reuse h */
		h->release(h->arg);
		n++;
	}
	return n;
}

void mb_fault_site_release(struct mb_fault_site *s)
{
	if (!s)
		return;
	for (struct mb_fault_held *h = unlink_held(s->p, NULL, s), *next; h; h = next) {
		next = h->next;
		h->release(h->arg);
	}
}

unsigned mb_fault_plan_held(struct mb_fault_plan *p, const char *tag)
{
	unsigned n = 0;
	pthread_mutex_lock(&p->lock);
	for (struct mb_fault_held *h = p->held; h; h = h->next)
		n += !tag || strcmp(h->tag, tag) == 0;
	pthread_mutex_unlock(&p->lock);
	return n;
}

/* ---- m:on answers ------------------------------------------------------------ */

int mb_fault_plan_answer(struct mb_fault_plan *p, unsigned on, uint64_t ordinal,
			 struct mb_fault_record *a)
{
	if (!on || on > 1000000u - MB_FAULT_ON_RULE || !ordinal)
		return mb_seterr(-EINVAL, "faults: answer %u #%llu out of range", on,
				 (unsigned long long)ordinal);
	a->rule = MB_FAULT_ON_RULE + on;
	a->ordinal = ordinal;
	int rc = 0;
	pthread_mutex_lock(&p->lock);
	if (p->closed || p->diverged)
		goto out;
	a->guest_ns = p->m ? mb_machine_clock(p->m)->now(mb_machine_clock(p->m))
			   : now_ns(CLOCK_MONOTONIC);
	if (p->replaying) {
		/* By key, (registration, ordinal): the answers of several
		 * registrations to one event may be recorded in either order. */
		const struct mb_fault_trace *t = &p->replay;
		const struct mb_fault_record *r = NULL;
		for (size_t i = 0; i < t->n && !r; i++)
			if (t->r[i].rule == a->rule && t->r[i].ordinal == ordinal)
				r = &t->r[i];
		if (!r || strcmp(r->dev, a->dev) || r->op != a->op ||
		    r->sector != a->sector || r->nsectors != a->nsectors) {
			divergence(p, "m:on #%u's event #%llu is %s %s %llu+%llu; the trace "
				   "has %s", on, (unsigned long long)ordinal, a->dev,
				   mb_fault_op_name(a->op), (unsigned long long)a->sector,
				   (unsigned long long)a->nsectors,
				   r ? "another event there" : "no such answer");
			rc = -EINVAL;
			goto out;
		}
		a->action = r->action, a->status = r->status, a->ms = r->ms;
	}
	if (p->trace) {
		char line[512];
		a->host_ns = now_ns(CLOCK_REALTIME);
		mb_fault_trace_format(line, sizeof line, a);
		fputs(line, p->trace);
		fflush(p->trace);
	}
out:
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* ---- once faults on a trigger ------------------------------------------------------ */

/* mem.flip, irq.spurious, rtc.jump, virtio.needs_reset and
 * virtio.config_change act once. Without conditions they act as plan:add
 * takes them (above); with after = rule and/or window = { FROM[, TO] }
 * they wait: they act at the first moment the rule has acted and FROM
 * seconds of guest time have passed since they were added (never, once TO
 * has passed). The moment is seen under the plan's lock, often on a
 * device's thread with its lock held (the arming rule deciding), where
 * raising an interrupt or resizing a disk could deadlock; so the action
 * runs from a timer of the machine's clock, on the event loop, with no
 * lock held, right after. Replay forces the arming rule's decisions, and
 * so the trigger. */

static uint64_t clock_now(struct mb_fault_plan *p)
{
	return mb_machine_clock(p->m)->now(mb_machine_clock(p->m));
}

/* Arm the timer for clock time at (0: now); p->lock held or not. */
static void once_kick(struct mb_fault_plan *p, uint64_t at)
{
	if (!p->once_timer)
		return;
	uint64_t now = clock_now(p);
	mb_machine_clock(p->m)->timer_mod(p->once_timer, at > now ? at : now + 1);
}

/* The action itself, no lock held. */
static void once_apply(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	if (r->action == MB_FAULT_MEM_FLIP) {
		uint8_t *b = mb_mem_ptr(mb_machine_mem(p->m), r->gpa, 1, true);
		if (b)
			__atomic_xor_fetch(b, (uint8_t)(1u << r->bit), __ATOMIC_SEQ_CST);
		return;
	}
	if (r->action == MB_FAULT_IRQ_SPURIOUS) {
		struct mb_irq irq;
		if (!mb_machine_irq(p->m, (unsigned)r->first, &irq))
			mb_irq_pulse(&irq);
		return;
	}
	struct mb_device *d = mb_machine_device(p->m, r->dev);
	if (!d)
		return;
	if (mb_devproc_of(d)) {
		/* Its process acts (from the event loop, as here). One that is
		 * dead or refuses leaves the rule fired, as a device gone would,
		 * and says why on stderr: nobody waits for this call. */
		if (apply_remote(d, r))
			fprintf(stderr, "moonbox: faults: %s on %s: %s\n",
				mb_fault_action_name(r->action), r->dev, mb_errmsg());
		return;
	}
	if (r->action == MB_FAULT_RTC_JUMP) {
		struct mb_rtc *rtc = mb_rtc_of_device(d);
		if (rtc)
			mb_rtc_jump(rtc, r->seconds);
		return;
	}
	struct mb_virtio *t = mb_virtio_dev_transport(d);
	if (!t)
		return;
	if (r->action == MB_FAULT_VIRTIO_NEEDS_RESET)
		mb_virtio_fail(t, "fault injection (virtio.needs_reset)");
	else if (r->capacity)
		mb_virtio_blk_resize(mb_virtio_dev_model(d), t, r->capacity);
	else
		mb_virtio_config_change(t);
}

/* The timer (event loop): every pending once fault that is due acts, in
 * id order, each with a trace record (ordinal 1). */
static void once_fire(void *arg)
{
	struct mb_fault_plan *p = arg;
	for (;;) {
		struct mb_fault_rule r;
		bool due = false;
		uint64_t next = 0, now = clock_now(p);
		pthread_mutex_lock(&p->lock);
		for (size_t i = 0; i < p->nrules && !due && !p->closed; i++) {
			struct slot *s = &p->rules[i];
			if (!s->pending || s->removed || s->r.disabled)
				continue;
			if (s->r.after && !p->rules[s->r.after - 1].fired)
				continue;
			uint64_t rel = now > s->added_ns ? now - s->added_ns : 0;
			if (s->r.has_window && rel >= s->r.win_to) {
				s->pending = false, p->npending--; /* missed its window */
				continue;
			}
			if (s->r.has_window && rel < s->r.win_from) {
				uint64_t at = s->added_ns + s->r.win_from;
				if (!next || at < next)
					next = at;
				continue;
			}
			s->pending = false, p->npending--;
			s->matched = s->fired = 1;
			r = s->r;
			due = true;
			if (p->trace) {
				struct mb_fault_record rec = {
					.rule = (unsigned)i + 1, .ordinal = 1, .seq = 1,
					.op = MB_FAULT_OP_WRITE, .action = r.action,
					.guest_ns = now, .host_ns = now_ns(CLOCK_REALTIME),
				};
				snprintf(rec.dev, sizeof rec.dev, "%s", r.dev[0] ? r.dev : "irq");
				if (r.action == MB_FAULT_MEM_FLIP)
					rec.sector = r.gpa;
				char line[512];
				mb_fault_trace_format(line, sizeof line, &rec);
				fputs(line, p->trace);
				fflush(p->trace);
			}
		}
		pthread_mutex_unlock(&p->lock);
		if (!due) {
			if (next)
				once_kick(p, next);
			return;
		}
		once_apply(p, &r); /* which may arm another: the loop looks again */
	}
}

/* plan:add of a once fault with after or window: checked as when it acts
 * at once (the device, the address), then kept pending. */
static int once_later(struct mb_fault_plan *p, const struct mb_fault_rule *r)
{
	if (!p->m)
		return mb_seterr(-EINVAL, "%s: after and window need the plan's machine",
				 mb_fault_action_name(r->action));
	struct mb_device *d = NULL;
	int rc = 0;
	if (r->action == MB_FAULT_MEM_FLIP) {
		if (!mb_mem_ptr(mb_machine_mem(p->m), r->gpa, 1, true))
			return mb_seterr(-EINVAL, "gpa: 0x%llx is not guest RAM",
					 (unsigned long long)r->gpa);
	} else if (r->action == MB_FAULT_IRQ_SPURIOUS) {
		struct mb_irq irq;
		if ((rc = mb_machine_irq(p->m, (unsigned)r->first, &irq)))
			return rc;
	} else {
		if ((rc = find_dev(p, r->dev, r->action, &d)))
			return rc;
		if (r->capacity && strcmp(mb_device_kind(d), "virtio_blk") != 0)
			return mb_seterr(-EINVAL, "capacity: %s is a %s (a new capacity "
					 "is for virtio_blk)", r->dev, mb_device_kind(d));
		if (mb_devproc_of(d))
			; /* its process checks the rest when the rule acts */
		else if (r->action == MB_FAULT_RTC_JUMP && !mb_rtc_of_device(d))
			return mb_seterr(-ENOTSUP, "dev: %s is not moonbox's RTC", r->dev);
		else if (mb_fault_is_virtio(r->action) && !mb_virtio_dev_transport(d))
			return mb_seterr(-ENOTSUP, "dev: %s has no virtio-mmio transport in "
					 "this process", r->dev);
		else if (r->capacity &&
			 (rc = mb_virtio_blk_check_resize(mb_virtio_dev_model(d), r->capacity)))
			return rc;
	}
	if (!p->once_timer) { /* plan:add runs on the thread that runs Lua */
		const struct mb_clock *c = mb_machine_clock(p->m);
		if (!(p->once_timer = c->timer_new(c, once_fire, p)))
			return mb_seterr(-ENOMEM, "faults: out of timers");
	}
	pthread_mutex_lock(&p->lock);
	rc = p->closed ? mb_seterr(-EINVAL, "faults: the plan is closed") : check(p, r);
	if (!rc)
		rc = room(p);
	int id = rc;
	if (!rc) {
		struct slot *sl = &p->rules[p->nrules];
		memset(sl, 0, sizeof *sl);
		sl->r = *r;
		if (r->action == MB_FAULT_MEM_FLIP)
			snprintf(sl->r.dev, sizeof sl->r.dev, "mem");
		sl->pending = true;
		sl->added_ns = clock_now(p);
		p->npending++;
		id = (int)++p->nrules;
		once_kick(p, 0); /* its trigger may hold already */
	}
	pthread_mutex_unlock(&p->lock);
	return id;
}
