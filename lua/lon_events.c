/* m:on("blk" | "irq" | "pit", filter, fn): Lua functions asked about
 * device events (docs/faults.md, "Events for Lua").
 *
 *   m:on("blk", { dev = disk, op = "read" }, function(ev) end)
 *       ev = { dev, op, sector, nsectors }: a request taken from the ring
 *   m:on("irq", { irq = 4 }, function(ev) end)   -- ev = { irq }: a rising edge
 *   m:on("pit", { dev = pit }, function(ev) end) -- ev = { dev, tick }: a tick
 *
 * These events happen with a device's lock held (the virtio transport's,
 * the PIT's, whichever device raises a line), where a Lua function that
 * read that device would deadlock. So the device's observer matches the
 * filters here, in C, and when one matches the device parks the event (a
 * blk request stays in flight, an edge or a tick is not driven) and the
 * observer records it in a bounded ring and arms a timer of the machine's
 * clock; the timer's callback (on the event loop, no device lock held)
 * hands each event to the Lua world of the thread waiting in m:run and
 * answers the device with what the functions returned (a fault of
 * mb.fault, false, or nil: unchanged). Every answer goes to the open
 * plan's trace under its registration's number and ordinal, and a
 * replaying plan forces the recorded one. A device's reset and free
 * cancel its pending asks (answered "unchanged" at once), so no thread
 * waits on Lua across them. A full ring lets events go unasked and the
 * next one says how many (ev.missed). The cost when no m:on of these kinds
 * exists: the device's one branch on its observer pointer (shared with
 * its fault site's). An isolated disk or PIT parks the event in its
 * process, which posts it here (core/devproc.c, on_remote below); its
 * answer crosses back through the event's ask. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define HUB_MT "moonbox.on_hub"
#define RING 1024
#define MAX_REGS 64

enum kind { K_BLK, K_IRQ, K_PIT };
static const char *const kind_names[] = { "blk", "irq", "pit" };

struct event {
	enum kind kind;
	const void *dev; /* the model (struct mb_virtio_blk / mb_pit), or the
			  * struct mb_devproc of an isolated one */
	unsigned op;
	uint64_t a, b; /* blk: sector, nsectors; irq: line; pit: tick */
	bool parked;   /* the device waits for the answer */
	bool dead;     /* cancelled in the ring: skipped */
	struct mb_fault_ask *ask; /* blk, an isolated PIT: where the answer goes */
};

struct reg {
	enum kind kind;
	const void *dev;    /* NULL: any */
	char name[MB_DEVICE_NAME_MAX];
	unsigned ops;       /* blk: MB_FAULT_OP_* mask */
	int line;           /* irq: -1 any */
	bool removed;
	uint64_t count;
};

/* The models that have an observer, by name, for ev.dev. */
struct named {
	const void *dev;
	char name[MB_DEVICE_NAME_MAX];
};

/* One per machine, a userdata in the machine's refs: it outlives the C
 * machine (refs go after mb_machine_destroy), so an observer racing the
 * teardown never touches freed memory; its timer goes in a destroy hook,
 * while the event loop still exists. */
struct hub {
	struct mbl_machine *mm;
	pthread_mutex_t lock; /* ring, timer, names */
	struct event ring[RING];
	unsigned head, n;
	uint64_t missed;
	struct mb_timer *timer;
	bool armed;
	struct reg regs[MAX_REGS];
	_Atomic unsigned nregs;
	struct named names[MAX_REGS];
	unsigned nnames;
	/* The event whose functions run now; a cancel clears live, and the
	 * answer is then dropped (the device went on without it). */
	struct event cur;
	bool cur_live;
	bool dead; /* the machine went: nothing is parked any more */
};

struct call {
	struct hub *h;
	struct event ev;
	uint64_t missed;
	bool acted;
	struct mb_fault_verdict v;
};

static const void *fn_key(struct hub *h, int i)
{
	return (const char *)&h->regs[i] + 1;
}

static const char *name_of(struct hub *h, const void *dev)
{
	for (unsigned i = 0; i < h->nnames; i++)
		if (h->names[i].dev == dev)
			return h->names[i].name;
	return "?";
}

static void reply(struct hub *h, const struct event *e, const struct mb_fault_verdict *v);
static void cancel(void *ctx, const void *dev);

/* What each kind of event may be answered with. */
static bool answers(enum kind k, enum mb_fault_action a)
{
	switch (k) {
	case K_BLK:
		return a == MB_FAULT_BLK_ERROR || a == MB_FAULT_BLK_LATENCY;
	case K_IRQ:
		return a == MB_FAULT_IRQ_DROP || a == MB_FAULT_IRQ_DELAY;
	case K_PIT:
		return a == MB_FAULT_PIT_DROP || a == MB_FAULT_PIT_LATE;
	}
	return false;
}

static const char *const answer_names[] = {
	"F.blk.error, F.blk.latency, false (an I/O error) or nil",
	"F.irq.drop, F.irq.delay, false (dropped) or nil",
	"F.pit.drop, F.pit.late, false (lost) or nil",
};

/* The function of registration i (r) returned the value on top of the
 * stack for a parked event: check it, record it (the plan's trace, or
 * forced from its replay) and fold it into c's verdict. Lua thread. */
static void answer(struct call *c, unsigned i, struct reg *r)
{
	struct hub *h = c->h;
	lua_State *L = h->mm->L;
	const struct event *e = &c->ev;
	struct mb_fault_record rec = { .action = MB_FAULT_NONE, .op = MB_FAULT_OP_WRITE };
	if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
		rec.action = e->kind == K_BLK ? MB_FAULT_BLK_ERROR
			     : e->kind == K_IRQ ? MB_FAULT_IRQ_DROP : MB_FAULT_PIT_DROP;
		rec.status = VIRTIO_BLK_S_IOERR;
	} else if (!lua_isnil(L, -1)) {
		const struct mb_fault_rule *f = mbl_testfault(L, -1);
		if (!f || !answers(e->kind, f->action)) {
			const char *what = luaL_tolstring(L, -1, NULL);
			mb_machine_stop(h->mm->m, MB_STOP_ERROR, 1, "on %s: the function "
					"returned %s, not an answer to a %s event (%s)",
					kind_names[e->kind], what, kind_names[e->kind],
					answer_names[e->kind]);
			lua_pop(L, 1);
			return;
		}
		rec.action = f->action, rec.status = f->status, rec.ms = f->ms;
	}
	if (e->kind == K_IRQ) {
		snprintf(rec.dev, sizeof rec.dev, "irq");
		rec.sector = e->a;
	} else {
		pthread_mutex_lock(&h->lock);
		snprintf(rec.dev, sizeof rec.dev, "%s", name_of(h, e->dev));
		pthread_mutex_unlock(&h->lock);
		if (e->kind == K_BLK)
			rec.op = e->op, rec.sector = e->a, rec.nsectors = e->b;
	}
	struct mb_fault_plan *p = mbl_open_plan(L, h->mm);
	if (p && mb_fault_plan_answer(p, i + 1, r->count, &rec))
		return; /* diverged: the machine stops */
	/* a replayed trace may name another action: only this event's act */
	if (answers(e->kind, rec.action) && mb_fault_verdict_fold(&c->v, &rec))
		c->acted = true;
}

/* On the Lua world's thread: every registration the event matches. */
static void call_lua(void *arg)
{
	struct call *c = arg;
	struct hub *h = c->h;
	struct mbl_machine *mm = h->mm;
	lua_State *L = mm->L;
	if (!L || !mm->m)
		return;
	unsigned n = atomic_load(&h->nregs);
	for (unsigned i = 0; i < n; i++) {
		struct reg *r = &h->regs[i];
		const struct event *e = &c->ev;
		if (r->removed || r->kind != e->kind || (r->dev && r->dev != e->dev) ||
		    (e->kind == K_BLK && !(r->ops & e->op)) ||
		    (e->kind == K_IRQ && r->line >= 0 && (uint64_t)r->line != e->a))
			continue;
		int top = lua_gettop(L);
		if (mbl_ref_push(L, mm, fn_key(h, (int)i)) != LUA_TFUNCTION) {
			lua_settop(L, top);
			continue;
		}
		r->count++;
		lua_createtable(L, 0, 5);
		if (e->kind == K_IRQ) {
			lua_pushinteger(L, (lua_Integer)e->a);
			lua_setfield(L, -2, "irq");
		} else {
			pthread_mutex_lock(&h->lock);
			lua_pushstring(L, name_of(h, e->dev));
			pthread_mutex_unlock(&h->lock);
			lua_setfield(L, -2, "dev");
		}
		if (e->kind == K_BLK) {
			lua_pushstring(L, mb_fault_op_name(e->op));
			lua_setfield(L, -2, "op");
			lua_pushinteger(L, (lua_Integer)e->a);
			lua_setfield(L, -2, "sector");
			lua_pushinteger(L, (lua_Integer)e->b);
			lua_setfield(L, -2, "nsectors");
		} else if (e->kind == K_PIT) {
			lua_pushinteger(L, (lua_Integer)e->a);
			lua_setfield(L, -2, "tick");
		}
		if (c->missed) {
			lua_pushinteger(L, (lua_Integer)c->missed);
			lua_setfield(L, -2, "missed");
		}
		if (lua_pcall(L, 1, 1, 0) != LUA_OK)
			mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "on %s: %s",
					kind_names[e->kind], lua_tostring(L, -1));
		else if (e->parked)
			answer(c, i, r);
		lua_settop(L, top);
	}
}

/* The timer (event loop): hand what the ring holds to Lua, in order. */
static void drain(void *opaque)
{
	struct hub *h = opaque;
	struct mb_machine *m = h->mm->m;
	for (;;) {
		pthread_mutex_lock(&h->lock);
		if (!h->n || !m) {
			h->armed = false;
			pthread_mutex_unlock(&h->lock);
			return;
		}
		struct call c = { .h = h, .ev = h->ring[h->head], .missed = h->missed };
		h->head = (h->head + 1) % RING;
		h->n--;
		h->missed = 0;
		if (c.ev.dead) {
			pthread_mutex_unlock(&h->lock);
			continue;
		}
		h->cur = c.ev;
		h->cur_live = true;
		pthread_mutex_unlock(&h->lock);
		mb_machine_call_main(m, call_lua, &c);
		pthread_mutex_lock(&h->lock);
		bool live = h->cur_live;
		h->cur_live = false;
		pthread_mutex_unlock(&h->lock);
		if (c.ev.parked && live)
			reply(h, &c.ev, c.acted ? &c.v : NULL);
	}
}

/* The device's answer (no lock held). */
static void reply(struct hub *h, const struct event *e, const struct mb_fault_verdict *v)
{
	if (e->ask)
		e->ask->answer(e->ask->arg, v);
	else if (e->kind == K_PIT)
		mb_pit_answer((struct mb_pit *)e->dev, v);
	else if (h->mm->m)
		mb_machine_irq_answer(h->mm->m, (unsigned)e->a, v);
}

/* A device's reset or free: its parked events go on now, unanswered
 * (a blk request runs; a tick is delivered), and an answer being made
 * for one is dropped. */
static void cancel(void *ctx, const void *dev)
{
	struct hub *h = ctx;
	for (;;) {
		struct event e;
		bool found = false;
		pthread_mutex_lock(&h->lock);
		if (h->cur_live && h->cur.parked && h->cur.dev == dev) {
			h->cur_live = false;
			e = h->cur, found = true;
		}
		for (unsigned i = 0; i < h->n && !found; i++) {
			struct event *q = &h->ring[(h->head + i) % RING];
			if (!q->dead && q->parked && q->dev == dev)
				q->dead = true, e = *q, found = true;
		}
		pthread_mutex_unlock(&h->lock);
		if (!found)
			return;
		if (e.ask)
			e.ask->answer(e.ask->arg, NULL);
		/* a PIT being freed: its tick goes nowhere */
	}
}

/* Any thread, a device lock held: does a registration's filter take the
 * event? The registrations before nregs are never changed (removed is
 * the Lua thread's: a removed one still parks, and answers nil). */
static bool wanted(struct hub *h, enum kind k, const void *dev, unsigned op,
		   uint64_t line)
{
	unsigned n = atomic_load_explicit(&h->nregs, memory_order_acquire);
	for (unsigned i = 0; i < n; i++) {
		const struct reg *r = &h->regs[i];
		if (r->kind == k && (!r->dev || r->dev == dev) &&
		    (k != K_BLK || (r->ops & op)) &&
		    (k != K_IRQ || r->line < 0 || (uint64_t)r->line == line))
			return true;
	}
	return false;
}

/* Any thread, a device lock held: record and return; false when the ring
 * is full (the event goes unasked) or the machine went. */
static bool push(struct hub *h, const struct event *e)
{
	bool ok = false;
	pthread_mutex_lock(&h->lock);
	if (h->dead) {
		pthread_mutex_unlock(&h->lock);
		return false;
	}
	if (h->n == RING) {
		h->missed++;
	} else {
		h->ring[(h->head + h->n) % RING] = *e;
		h->n++;
		ok = true;
	}
	if (!h->armed && h->timer) {
		struct mb_machine *m = h->mm->m;
		const struct mb_clock *clk = m ? mb_machine_clock(m) : NULL;
		if (clk) {
			clk->timer_mod(h->timer, clk->now(clk) + 1);
			h->armed = true;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return ok;
}

static bool on_blk(void *ctx, struct mb_virtio_blk *b, const struct mb_fault_blk_event *e,
		   struct mb_fault_ask *ask)
{
	if (!wanted(ctx, K_BLK, b, e->op, 0))
		return false;
	struct event ev = { K_BLK, b, e->op, e->sector, e->nsectors, true, false, ask };
	return push(ctx, &ev);
}

static bool on_irq(void *ctx, unsigned line)
{
	if (!wanted(ctx, K_IRQ, NULL, 0, line))
		return false;
	struct event ev = { K_IRQ, NULL, 0, line, 0, true, false, NULL };
	return push(ctx, &ev);
}

static bool on_pit(void *ctx, struct mb_pit *pit, uint64_t n, bool ask)
{
	if (!wanted(ctx, K_PIT, pit, 0, 0))
		return false;
	struct event ev = { K_PIT, pit, 0, n, 0, ask, false, NULL };
	return push(ctx, &ev) && ask;
}

/* An isolated device's event (the events socket's reader, core/devproc.c):
 * the same filters and ring as in process; the answer crosses back. */
static bool on_remote(void *ctx, struct mb_devproc *p, unsigned kind,
		      const struct mb_fault_blk_event *e, struct mb_fault_ask *ask)
{
	enum kind k = kind == MB_DP_ON_BLK ? K_BLK : K_PIT;
	if (!wanted(ctx, k, p, e->op, 0))
		return false;
	struct event ev = { k, p, e->op, e->sector, k == K_BLK ? e->nsectors : 0,
			    ask != NULL, false, ask };
	return push(ctx, &ev) && ask;
}

static void hub_destroy(void *arg) /* the machine goes: its timer first */
{
	struct hub *h = arg;
	pthread_mutex_lock(&h->lock);
	struct mb_timer *t = h->timer;
	h->timer = NULL;
	pthread_mutex_unlock(&h->lock);
	if (t && h->mm->m)
		mb_machine_clock(h->mm->m)->timer_free(t);
	/* The event loop has stopped: what is parked goes on unanswered, and
	 * nothing parks any more. */
	pthread_mutex_lock(&h->lock);
	h->dead = true;
	pthread_mutex_unlock(&h->lock);
	for (unsigned i = 0; i < h->nnames; i++)
		cancel(h, h->names[i].dev);
	/* The mutex is not destroyed: a device freed after this hook still
	 * cancels through it (and finds nothing). A default pthread mutex
	 * holds no resources; the userdata's memory stays until every
	 * finalizer of the machine's cycle has run. */
}

static int hub_gc(lua_State *L)
{
	(void)luaL_checkudata(L, 1, HUB_MT); /* the machine's destroy frees it */
	return 0;
}

static const char hub_key = 0;

static struct hub *hub_for(lua_State *L, struct mbl_machine *mm)
{
	struct mb_machine *m = mbl_live(L, mm);
	if (mbl_ref_push(L, mm, &hub_key) == LUA_TUSERDATA) {
		struct hub *h = lua_touserdata(L, -1);
		lua_pop(L, 1);
		return h;
	}
	lua_pop(L, 1);
	struct hub *h = lua_newuserdatauv(L, sizeof *h, 0);
	memset(h, 0, sizeof *h);
	h->mm = mm;
	pthread_mutex_init(&h->lock, NULL);
	luaL_setmetatable(L, HUB_MT);
	const struct mb_clock *clk = mb_machine_clock(m);
	if (!(h->timer = clk->timer_new(clk, drain, h)) ||
	    mb_machine_on_destroy(m, hub_destroy, h)) {
		if (h->timer)
			clk->timer_free(h->timer);
		h->timer = NULL;
		luaL_error(L, "on: out of memory");
	}
	mbl_ref_set(L, mm, &hub_key, -1);
	lua_pop(L, 1);
	return h;
}

static void add_name(struct hub *h, const void *dev, const char *name)
{
	pthread_mutex_lock(&h->lock);
	bool have = false;
	for (unsigned i = 0; i < h->nnames; i++)
		have |= h->names[i].dev == dev;
	if (!have && h->nnames < MAX_REGS) {
		h->names[h->nnames].dev = dev;
		snprintf(h->names[h->nnames].name, sizeof h->names[0].name, "%s", name);
		h->nnames++;
	}
	pthread_mutex_unlock(&h->lock);
}

/* m:on(event, filter, fn) for "blk", "irq", "pit" (lon.c dispatches). */
int mbl_on_event(lua_State *L, const char *event)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	enum kind k = strcmp(event, "blk") == 0 ? K_BLK
		      : strcmp(event, "irq") == 0 ? K_IRQ : K_PIT;
	if (lua_isnoneornil(L, 3)) {
		lua_newtable(L);
		lua_replace(L, 3);
	}
	luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TFUNCTION);
	static const char *const bkeys[] = { "dev", "op", NULL };
	static const char *const ikeys[] = { "irq", NULL };
	static const char *const pkeys[] = { "dev", NULL };
	mbl_checkopts(L, 3, event, k == K_BLK ? bkeys : k == K_IRQ ? ikeys : pkeys);
	struct reg r = { .kind = k, .line = -1, .ops = MB_FAULT_OP_ANY };
	struct mb_device *d = NULL;
	if (k != K_IRQ) {
		int t = lua_getfield(L, 3, "dev");
		if (t == LUA_TUSERDATA)
			d = mbl_checkdevice(L, -1);
		else if (t == LUA_TSTRING)
			d = mb_machine_device(m, lua_tostring(L, -1));
		else if (t == LUA_TNIL && k == K_PIT)
			d = mb_machine_device(m, "pit");
		else if (t != LUA_TNIL)
			luaL_error(L, "dev: expected a device (m:add's result) or its name, got %s",
				   luaL_typename(L, -1));
		if (t == LUA_TSTRING && !d)
			luaL_error(L, "dev: no device \"%s\" in this machine", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	struct hub *h = hub_for(L, mm);
	int rc = 0;
	if (k == K_BLK) {
		static const char *const ops[] = { "any", "read", "write", "flush",
						   "discard", NULL };
		int op = mbl_checkenum(L, 3, "op", "any", ops);
		r.ops = op == 0 ? MB_FAULT_OP_ANY : 1u << (op - 1);
		if (!d)
			luaL_error(L, "dev: missing (the virtio_blk disk to watch)");
		bool isblk = strcmp(mb_device_kind(d), "virtio_blk") == 0;
		struct mb_devproc *dp = isblk ? mb_devproc_of(d) : NULL;
		struct mb_virtio_blk *b = isblk && !dp ? mb_virtio_dev_model(d) : NULL;
		if (!b && !dp)
			luaL_error(L, "dev: %s is %s, not a virtio_blk", mb_device_name(d),
				   mb_device_kind(d));
		r.dev = b ? (const void *)b : dp;
		add_name(h, r.dev, mb_device_name(d));
		/* isolated: the process parks and posts (core/devproc.c) */
		rc = b ? mb_virtio_blk_set_observer(b, on_blk, cancel, h)
		       : mb_devproc_set_on(dp, MB_DP_ON_BLK, r.ops, on_remote, cancel, h);
	} else if (k == K_PIT) {
		struct mb_pit *pit = d ? mb_pit_of_device(d) : NULL;
		struct mb_devproc *dp = d && !pit && !strcmp(mb_device_kind(d), "pit8254")
						? mb_devproc_of(d) : NULL;
		if (!pit && !dp)
			luaL_error(L, "dev: %s is not a PIT moonbox runs (KVM's in-kernel "
				   "PIT tells no ticks)", d ? mb_device_name(d) : "pit");
		r.dev = pit ? (const void *)pit : dp;
		add_name(h, r.dev, mb_device_name(d));
		rc = pit ? mb_pit_set_observer(pit, on_pit, cancel, h)
			 : mb_devproc_set_on(dp, MB_DP_ON_PIT, 0, on_remote, cancel, h);
	} else {
		if (lua_getfield(L, 3, "irq") != LUA_TNIL) {
			lua_Integer l = mbl_optint(L, 3, "irq", 0);
			if (l < 0 || l >= (lua_Integer)mb_machine_irq_lines(m))
				luaL_error(L, "irq: %d is not an interrupt line (0-%d)", (int)l,
					   (int)mb_machine_irq_lines(m) - 1);
			r.line = (int)l;
		}
		lua_pop(L, 1);
		rc = mb_machine_set_irq_observer(m, on_irq, h);
	}
	if (rc)
		return mbl_fail(L, "on");
	if (d)
		snprintf(r.name, sizeof r.name, "%s", mb_device_name(d));
	unsigned n = atomic_load(&h->nregs);
	if (n == MAX_REGS)
		return luaL_error(L, "on: more than %d functions on blk, irq and pit events",
				  MAX_REGS);
	h->regs[n] = r;
	mbl_ref_set(L, mm, fn_key(h, (int)n), 4);
	atomic_store(&h->nregs, n + 1); /* published once its function is in place */
	char what[96];
	snprintf(what, sizeof what, "%s%s%s", kind_names[r.kind], r.name[0] ? " of " : "", r.name);
	/* the handle keeps the machine, and so the hub */
	mbl_on_handle_new(L, mm, &h->regs[n].removed, &h->regs[n].count, fn_key(h, (int)n),
			  what);
	return 1;
}

void mbl_open_on_events(lua_State *L)
{
	if (luaL_newmetatable(L, HUB_MT)) {
		lua_pushcfunction(L, hub_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
}
