/* Fault injection from Lua (docs/faults.md, moonbox/fault.h):
 *   local F = mb.fault
 *   local plan = m:faults { seed = 42, trace = "run.trace" }  -- or replay =
 *   local rule = plan:add(F.blk.error { dev = disk, op = "read",
 *                                       sectors = { 2048, 2055 } })
 *   plan:fired(rule), plan:unfired(), plan:report() ...
 * A fault constructor checks its options completely and returns a spec;
 * plan:add turns it into a rule of the plan (ids in the order added).
 * The C plan belongs to the machine: every method checks it still lives. */
#include <math.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define SPEC_MT "moonbox.fault_spec"
#define PLAN_MT "moonbox.fault_plan"
#define RULE_MT "moonbox.fault_rule"

static const char plan_key = 0; /* the machine's plan, in its refs */
/* In the registry: this Lua state's defaults for m:faults (the moonbox
 * command's --fault-seed / --fault-replay) and what the last plan was
 * (so a failing run can say how to replay it). A plain table of scalars. */
static const char defaults_key = 0;

struct lplan {
	struct mbl_machine *mm;
	struct mb_fault_plan *p;
	unsigned gen; /* plan:reset count: older rule handles are stale */
};
/* User values: 1 the machine handle, 2 the rule handles by id. */

struct lrule {
	unsigned id, gen;
}; /* user value 1: its plan handle */

/* ---- fault constructors --------------------------------------------------------- */

static const char *const common_keys[] = { "dev", "op", "sectors", "nth", "every",
					   "p", "count", "after", "enabled", "window" };

static uint64_t opt_count(lua_State *L, int idx, const char *key)
{
	lua_Integer v = mbl_optint(L, idx, key, 0);
	if (lua_getfield(L, idx, key) != LUA_TNIL && v < 1)
		luaL_error(L, "%s: %d is not a positive count", key, (int)v);
	lua_pop(L, 1);
	return (uint64_t)v;
}

/* The rule id an "after" value names: a rule handle or an integer. */
static unsigned rule_id(lua_State *L, int idx, const char *key)
{
	struct lrule *r = luaL_testudata(L, idx, RULE_MT);
	if (r)
		return r->id;
	int isint;
	lua_Integer v = lua_tointegerx(L, idx, &isint);
	if (!isint || lua_type(L, idx) != LUA_TNUMBER || v < 1)
		luaL_error(L, "%s: expected a rule (from plan:add) or its id, got %s",
			   key, luaL_typename(L, idx));
	return (unsigned)v;
}

/* ms = 1-60000: how late (guest time) */
static uint32_t opt_ms(lua_State *L)
{
	lua_Integer ms = mbl_optint(L, 1, "ms", -1);
	if (ms < 1 || ms > MB_FAULT_DELAY_MAX_MS)
		luaL_error(L, "ms: %s (how late, 1-%d ms of guest time)",
			   ms == -1 ? "missing" : "out of range", MB_FAULT_DELAY_MAX_MS);
	return (uint32_t)ms;
}

static void parse_window(lua_State *L, struct mb_fault_rule *r);

/* range: the key of the inclusive range, "sectors" (or a dev.* rule's
 * "addr", which may also be one address); errors name it. */
static void parse_common_as(lua_State *L, struct mb_fault_rule *r, const char *range)
{
	bool addr = strcmp(range, "addr") == 0;
	/* dev: a device handle (added to a machine) or a device name */
	int t = lua_getfield(L, 1, "dev");
	if (t == LUA_TSTRING) {
		size_t len;
		const char *s = lua_tolstring(L, -1, &len);
		if (len == 0 || len >= sizeof r->dev)
			luaL_error(L, "dev: \"%s\" is not a device name", s);
		memcpy(r->dev, s, len + 1);
	} else if (t == LUA_TUSERDATA) {
		struct mb_device *d = mbl_checkdevice(L, -1);
		snprintf(r->dev, sizeof r->dev, "%s", mb_device_name(d));
	} else {
		luaL_error(L, "dev: expected a device (m:add's result) or its name, got %s",
			   luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	static const char *const ops[] = { "any", "read", "write", "flush", "discard",
					   NULL };
	int op = mbl_checkenum(L, 1, "op", "any", ops);
	r->ops = op == 0 ? MB_FAULT_OP_ANY : 1u << (op - 1);
	r->first = 1, r->last = 0; /* every sector */
	if ((t = lua_getfield(L, 1, range)) != LUA_TNIL) {
		lua_Integer v[2];
		int isint;
		if (addr && t == LUA_TNUMBER) { /* one address: { A, A } */
			v[0] = v[1] = lua_tointegerx(L, -1, &isint);
			if (!isint || v[0] < 0)
				luaL_error(L, "addr: expected an address (>= 0), got %s",
					   luaL_tolstring(L, -1, NULL));
		} else {
			if (!lua_istable(L, -1) || luaL_len(L, -1) != 2)
				luaL_error(L, addr ? "addr: expected an address or { FIRST, "
					   "LAST } (inclusive), got %s" : "sectors: expected "
					   "{ FIRST, LAST } (inclusive), got %s",
					   luaL_typename(L, -1));
			for (int i = 0; i < 2; i++) {
				lua_rawgeti(L, -1, i + 1);
				v[i] = lua_tointegerx(L, -1, &isint);
				if (!isint || lua_type(L, -1) != LUA_TNUMBER || v[i] < 0)
					luaL_error(L, "%s[%d]: expected %s (>= 0), got %s", range,
						   i + 1, addr ? "an address" : "a sector number",
						   luaL_tolstring(L, -1, NULL));
				lua_pop(L, 1);
			}
		}
		if (v[0] > v[1])
			luaL_error(L, "%s: %I > %I (the range is { FIRST, LAST })", range,
				   v[0], v[1]);
		r->first = (uint64_t)v[0], r->last = (uint64_t)v[1];
	}
	lua_pop(L, 1);
	r->nth = opt_count(L, 1, "nth");
	r->every = opt_count(L, 1, "every");
	r->count = opt_count(L, 1, "count");
	if ((t = lua_getfield(L, 1, "p")) != LUA_TNIL) {
		if (t != LUA_TNUMBER)
			luaL_error(L, "p: expected a probability (0-1), got %s",
				   luaL_typename(L, -1));
		double p = lua_tonumber(L, -1);
		if (!(p >= 0 && p <= 1))
			luaL_error(L, "p: %f is not a probability (0-1)", p);
		r->has_p = true, r->p = p;
	}
	lua_pop(L, 1);
	if (lua_getfield(L, 1, "after") != LUA_TNIL)
		r->after = rule_id(L, -1, "after");
	lua_pop(L, 1);
	r->disabled = !mbl_optbool(L, 1, "enabled", 1);
	parse_window(L, r);
}

/* window = { FROM, TO } seconds after plan:add, guest time; TO may be
 * left out (open) */
static void parse_window(lua_State *L, struct mb_fault_rule *r)
{
	if (lua_getfield(L, 1, "window") != LUA_TNIL) {
		if (!lua_istable(L, -1))
			luaL_error(L, "window: expected { FROM, TO } (seconds after the "
				   "rule is added, guest time)");
		lua_rawgeti(L, -1, 1);
		lua_rawgeti(L, -2, 2);
		double from = lua_tonumber(L, -2), to = lua_isnil(L, -1) ? -1 : lua_tonumber(L, -1);
		if (!lua_isnumber(L, -2) || from < 0 || from > 1e9 ||
		    (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || to <= from || to > 1e9)))
			luaL_error(L, "window: expected { FROM, TO } with 0 <= FROM < TO (seconds)");
		r->has_window = true;
		r->win_from = (uint64_t)(from * 1e9);
		r->win_to = to < 0 ? UINT64_MAX : (uint64_t)(to * 1e9);
		lua_pop(L, 2);
	}
	lua_pop(L, 1);
}

static void parse_common(lua_State *L, struct mb_fault_rule *r)
{
	parse_common_as(L, r, "sectors");
}

static int new_spec(lua_State *L, enum mb_fault_action a, const char *const *extra)
{
	const char *keys[16];
	size_t n = 0;
	for (size_t i = 0; i < sizeof common_keys / sizeof *common_keys; i++)
		keys[n++] = common_keys[i];
	for (; *extra; extra++)
		keys[n++] = *extra;
	keys[n] = NULL;
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a), keys);
	struct mb_fault_rule r = { .action = a };
	parse_common(L, &r);
	if (a == MB_FAULT_BLK_ERROR) {
		static const char *const st[] = { "ioerr", "unsupp", NULL };
		r.status = mbl_checkenum(L, 1, "status", "ioerr", st) ? VIRTIO_BLK_S_UNSUPP
								     : VIRTIO_BLK_S_IOERR;
	} else if (a == MB_FAULT_BLK_LATENCY) {
		lua_Integer ms = mbl_optint(L, 1, "ms", -1);
		if (ms < 1 || ms > 3600000)
			luaL_error(L, "ms: %s (the delay, 1-3600000 ms)",
				   ms == -1 ? "missing" : "out of range");
		r.ms = (uint32_t)ms;
	} else if (a == MB_FAULT_BLK_CORRUPT) {
		lua_Integer b = mbl_optint(L, 1, "bytes", 1);
		if (b < 1 || b > 512)
			luaL_error(L, "bytes: %d is not 1-512 (bits flipped per sector)",
				   (int)b);
		r.bytes = (unsigned)b;
		if (r.ops == MB_FAULT_OP_ANY)
			r.ops = MB_FAULT_OP_READ;
		else if (r.ops != MB_FAULT_OP_READ)
			luaL_error(L, "op: corrupt acts on reads only");
	} else if (a == MB_FAULT_BLK_LYING_FLUSH) {
		if (r.ops == MB_FAULT_OP_ANY)
			r.ops = MB_FAULT_OP_FLUSH;
		else if (r.ops != MB_FAULT_OP_FLUSH)
			luaL_error(L, "op: lying_flush acts on flushes only");
	} else if (a == MB_FAULT_BLK_TORN_WRITE) {
		lua_Integer k = mbl_optint(L, 1, "keep", -1);
		if (k < 0 || k > 0xffffffff)
			luaL_error(L, "keep: %s (the sectors written, >= 0)",
				   k == -1 ? "missing" : "out of range");
		r.keep = (uint32_t)k;
		if (r.ops == MB_FAULT_OP_ANY)
			r.ops = MB_FAULT_OP_WRITE;
		else if (r.ops != MB_FAULT_OP_WRITE)
			luaL_error(L, "op: torn_write acts on writes only");
	} else if (a == MB_FAULT_BLK_BAD) {
		if (r.first > r.last)
			luaL_error(L, "sectors: missing (the bad range { FIRST, LAST })");
		if (r.last - r.first >= MB_FAULT_BAD_MAX_SECTORS)
			luaL_error(L, "sectors: more than %d sectors", (int)MB_FAULT_BAD_MAX_SECTORS);
		if (r.ops != MB_FAULT_OP_ANY)
			luaL_error(L, "op: bad blocks fail reads and heal on writes (no op)");
	} else if (a == MB_FAULT_BLK_HOLD) {
		size_t len;
		/* the type first: lua_tolstring would turn a number into a string */
		bool str = lua_getfield(L, 1, "tag") == LUA_TSTRING;
		const char *t = lua_tolstring(L, -1, &len);
		if (!str || len == 0 || len >= sizeof r.tag)
			luaL_error(L, "tag: expected a name of 1-%d bytes (plan:release(tag))",
				   (int)sizeof r.tag - 1);
		memcpy(r.tag, t, len + 1);
		lua_pop(L, 1);
	}
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

static int l_blk_error(lua_State *L)
{
	static const char *const k[] = { "status", NULL };
	return new_spec(L, MB_FAULT_BLK_ERROR, k);
}

static int l_blk_latency(lua_State *L)
{
	static const char *const k[] = { "ms", NULL };
	return new_spec(L, MB_FAULT_BLK_LATENCY, k);
}

static int l_blk_corrupt(lua_State *L)
{
	static const char *const k[] = { "bytes", NULL };
	return new_spec(L, MB_FAULT_BLK_CORRUPT, k);
}

static int l_blk_lying_flush(lua_State *L)
{
	static const char *const k[] = { NULL };
	return new_spec(L, MB_FAULT_BLK_LYING_FLUSH, k);
}

static int l_blk_torn_write(lua_State *L)
{
	static const char *const k[] = { "keep", NULL };
	return new_spec(L, MB_FAULT_BLK_TORN_WRITE, k);
}

static int l_blk_bad(lua_State *L)
{
	static const char *const k[] = { NULL };
	return new_spec(L, MB_FAULT_BLK_BAD, k);
}

static int l_blk_hold(lua_State *L)
{
	static const char *const k[] = { "tag", NULL };
	return new_spec(L, MB_FAULT_BLK_HOLD, k);
}

/* F.uart.drop / corrupt / error { dev, dir = "rx" | "tx" | "any", nth,
 * every, p, count, after, enabled, bits (corrupt), kind (error) }: per
 * byte the UART sends (tx) or receives (rx); error is rx only. */
static int uart_spec(lua_State *L, enum mb_fault_action a, const char *extra)
{
	static const char *const base[] = { "dev", "dir", "nth", "every", "p",
					    "count", "after", "enabled", "window" };
	const char *keys[12];
	size_t n = 0;
	for (size_t i = 0; i < sizeof base / sizeof *base; i++)
		keys[n++] = base[i];
	if (extra)
		keys[n++] = extra;
	keys[n] = NULL;
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a), keys);
	struct mb_fault_rule r = { .action = a };
	parse_common(L, &r); /* no op, no sectors: their defaults */
	static const char *const dirs[] = { "any", "rx", "tx", NULL };
	int dir = mbl_checkenum(L, 1, "dir", a == MB_FAULT_UART_ERROR ? "rx" : "any", dirs);
	r.ops = dir == 0 ? MB_FAULT_OP_READ | MB_FAULT_OP_WRITE
		: dir == 1 ? MB_FAULT_OP_READ : MB_FAULT_OP_WRITE;
	if (a == MB_FAULT_UART_CORRUPT) {
		lua_Integer b = mbl_optint(L, 1, "bits", 1);
		if (b < 1 || b > 8)
			luaL_error(L, "bits: %d is not 1-8 (bits flipped in the byte)", (int)b);
		r.bytes = (unsigned)b;
	} else if (a == MB_FAULT_UART_ERROR) {
		static const char *const kinds[] = { "parity", "framing", "break",
						     "overrun", NULL };
		static const uint8_t lsr[] = { MB_FAULT_LSR_PE, MB_FAULT_LSR_FE,
					       MB_FAULT_LSR_BI, MB_FAULT_LSR_OE };
		if (lua_getfield(L, 1, "kind") == LUA_TNIL)
			luaL_error(L, "kind: missing (parity, framing, break or overrun)");
		lua_pop(L, 1);
		r.lsr = lsr[mbl_checkenum(L, 1, "kind", NULL, kinds)];
		if (r.ops != MB_FAULT_OP_READ)
			luaL_error(L, "dir: line errors are on received bytes (rx) only");
	}
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

/* F.dev.delay / drop / corrupt / kill { dev, op = "read" | "write" | "any",
 * addr = A | { FIRST, LAST }, nth, every, p, count, after, enabled, window,
 * ms (delay), bits (corrupt) }: per access the VMM forwards to an isolated
 * device (addr: the guest's port or MMIO address). */
static int acc_spec(lua_State *L, enum mb_fault_action a, const char *extra)
{
	static const char *const base[] = { "dev", "op", "addr", "nth", "every", "p",
					    "count", "after", "enabled", "window" };
	const char *keys[12];
	size_t n = 0;
	for (size_t i = 0; i < sizeof base / sizeof *base; i++)
		keys[n++] = base[i];
	if (extra)
		keys[n++] = extra;
	keys[n] = NULL;
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a), keys);
	lua_settop(L, 1);
	struct mb_fault_rule r = { .action = a };
	parse_common_as(L, &r, "addr"); /* the caller's table is not touched */
	if (r.ops == MB_FAULT_OP_ANY)
		r.ops = MB_FAULT_OP_READ | MB_FAULT_OP_WRITE;
	if (r.ops & ~(MB_FAULT_OP_READ | MB_FAULT_OP_WRITE))
		luaL_error(L, "op: an access is a read or a write (or any)");
	if (a == MB_FAULT_DEV_DELAY)
		r.ms = opt_ms(L);
	if (a == MB_FAULT_DEV_CORRUPT) {
		lua_Integer b = mbl_optint(L, 1, "bits", 1);
		if (b < 1 || b > 64)
			luaL_error(L, "bits: %d is not 1-64 (bits flipped in the value)", (int)b);
		r.bytes = (unsigned)b;
		if (r.ops == (MB_FAULT_OP_READ | MB_FAULT_OP_WRITE))
			r.ops = MB_FAULT_OP_READ;
		else if (r.ops != MB_FAULT_OP_READ)
			luaL_error(L, "op: corrupt acts on reads only");
	}
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

static int l_dev_delay(lua_State *L) { return acc_spec(L, MB_FAULT_DEV_DELAY, "ms"); }
static int l_dev_drop(lua_State *L) { return acc_spec(L, MB_FAULT_DEV_DROP, NULL); }
static int l_dev_corrupt(lua_State *L) { return acc_spec(L, MB_FAULT_DEV_CORRUPT, "bits"); }
static int l_dev_kill(lua_State *L) { return acc_spec(L, MB_FAULT_DEV_KILL, NULL); }

/* F.irq.drop / storm { line = N | lines = { FIRST, LAST }, nth, every, p,
 * count, after, enabled, pulses (storm) }: per rising edge a device
 * drives; F.irq.spurious { line }: one edge when plan:add takes it. */
static int irq_spec(lua_State *L, enum mb_fault_action a)
{
	static const char *const base[] = { "line", "lines", "nth", "every", "p",
					    "count", "after", "enabled", "pulses", "window",
					    "ms", NULL };
	static const char *const once[] = { "line", "after", "window", NULL };
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a),
		      a == MB_FAULT_IRQ_SPURIOUS ? once : base);
	if (a != MB_FAULT_IRQ_STORM && lua_getfield(L, 1, "pulses") != LUA_TNIL)
		luaL_error(L, "pulses: only irq.storm takes it");
	if (a != MB_FAULT_IRQ_DELAY && lua_getfield(L, 1, "ms") != LUA_TNIL)
		luaL_error(L, "ms: only irq.delay takes it");
	lua_settop(L, 1);
	struct mb_fault_rule r = { .action = a };
	lua_pushliteral(L, "irq");
	lua_setfield(L, 1, "dev"); /* parse_common reads it */
	parse_common(L, &r);
	lua_pushnil(L);
	lua_setfield(L, 1, "dev");
	r.ops = MB_FAULT_OP_WRITE;
	bool one = lua_getfield(L, 1, "line") != LUA_TNIL;
	bool range = lua_getfield(L, 1, "lines") != LUA_TNIL;
	lua_pop(L, 2);
	if (one && range)
		luaL_error(L, "line: give line or lines, not both");
	if (one) {
		lua_Integer l = mbl_optint(L, 1, "line", 0);
		if (l < 0 || l > 23)
			luaL_error(L, "line: %d is not an interrupt line (0-23)", (int)l);
		r.first = r.last = (uint64_t)l;
	} else if (range) {
		lua_getfield(L, 1, "lines");
		lua_rawgeti(L, -1, 1);
		lua_rawgeti(L, -2, 2);
		lua_Integer a0 = lua_tointeger(L, -2), a1 = lua_tointeger(L, -1);
		if (!lua_isinteger(L, -2) || !lua_isinteger(L, -1) || a0 < 0 ||
		    a1 > 23 || a0 > a1)
			luaL_error(L, "lines: expected { FIRST, LAST } within 0-23");
		lua_pop(L, 3);
		r.first = (uint64_t)a0, r.last = (uint64_t)a1;
	} else if (a == MB_FAULT_IRQ_SPURIOUS) {
		luaL_error(L, "line: missing (the line to pulse)");
	}
	if (a == MB_FAULT_IRQ_STORM) {
		lua_Integer n = mbl_optint(L, 1, "pulses", -1);
		if (n < 1 || n > 1000)
			luaL_error(L, "pulses: %s (extra edges, 1-1000)",
				   n == -1 ? "missing" : "out of range");
		r.pulses = (unsigned)n;
	}
	if (a == MB_FAULT_IRQ_DELAY)
		r.ms = opt_ms(L);
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

static int l_irq_delay(lua_State *L)
{
	return irq_spec(L, MB_FAULT_IRQ_DELAY);
}

/* F.pit.drop / late { dev = pit, ms (late), conditions }; F.rtc.jump {
 * dev, seconds }; F.virtio.bad_used_id { dev, queue, id, conditions },
 * F.virtio.needs_reset { dev }, F.virtio.config_change { dev, capacity }:
 * a device's own faults. The last three and rtc.jump act as plan:add
 * takes them (no conditions). */
static int dev_spec(lua_State *L, enum mb_fault_action a, const char *const *extra)
{
	static const char *const conds[] = { "nth", "every", "p", "count", "after",
					     "enabled", "window" };
	const char *keys[16];
	size_t n = 0;
	keys[n++] = "dev";
	if (!mb_fault_is_once(a))
		for (size_t i = 0; i < sizeof conds / sizeof *conds; i++)
			keys[n++] = conds[i];
	else /* acts once: when added, or on its trigger */
		keys[n++] = "after", keys[n++] = "window";
	for (; *extra; extra++)
		keys[n++] = *extra;
	keys[n] = NULL;
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a), keys);
	struct mb_fault_rule r = { .action = a };
	parse_common(L, &r); /* no op, no sectors: their defaults */
	r.ops = MB_FAULT_OP_WRITE;
	if (a == MB_FAULT_PIT_LATE)
		r.ms = opt_ms(L);
	if (a == MB_FAULT_RTC_JUMP) {
		int isint;
		lua_getfield(L, 1, "seconds");
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (lua_isnil(L, -1))
			luaL_error(L, "seconds: missing (how far the clock jumps, "
				   "negative: backwards)");
		if (!isint || lua_type(L, -1) != LUA_TNUMBER || v == 0 ||
		    v > 100ll * 366 * 86400 || v < -100ll * 366 * 86400)
			luaL_error(L, "seconds: %s is not a whole number of seconds, "
				   "non-zero, within 100 years", luaL_tolstring(L, -1, NULL));
		lua_pop(L, 1);
		r.seconds = v;
	}
	if (a == MB_FAULT_VIRTIO_BAD_USED_ID) {
		if (lua_getfield(L, 1, "queue") != LUA_TNIL) {
			lua_Integer q = mbl_optint(L, 1, "queue", 0);
			if (q < 0 || q >= MB_VIRTIO_MAX_QUEUES)
				luaL_error(L, "queue: %d is not a queue index (0-%d)", (int)q,
					   MB_VIRTIO_MAX_QUEUES - 1);
			r.first = r.last = (uint64_t)q;
		}
		lua_pop(L, 1);
		if (lua_getfield(L, 1, "id") != LUA_TNIL) {
			lua_Integer id = mbl_optint(L, 1, "id", 0);
			if (id < 0 || id > 0xffff)
				luaL_error(L, "id: %d is not a descriptor id (0-65535)", (int)id);
			r.has_id = true, r.id = (uint16_t)id;
		}
		lua_pop(L, 1);
	}
	if (a == MB_FAULT_VIRTIO_CONFIG_CHANGE &&
	    lua_getfield(L, 1, "capacity") != LUA_TNIL) {
		lua_Integer c = mbl_optint(L, 1, "capacity", 0);
		if (c < 1)
			luaL_error(L, "capacity: %d is not a number of sectors (>= 1)", (int)c);
		r.capacity = (uint64_t)c;
	}
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

static int l_pit_drop(lua_State *L)
{
	static const char *const k[] = { NULL };
	return dev_spec(L, MB_FAULT_PIT_DROP, k);
}

static int l_pit_late(lua_State *L)
{
	static const char *const k[] = { "ms", NULL };
	return dev_spec(L, MB_FAULT_PIT_LATE, k);
}

static int l_rtc_jump(lua_State *L)
{
	static const char *const k[] = { "seconds", NULL };
	return dev_spec(L, MB_FAULT_RTC_JUMP, k);
}

static int l_virtio_bad_used_id(lua_State *L)
{
	static const char *const k[] = { "queue", "id", NULL };
	return dev_spec(L, MB_FAULT_VIRTIO_BAD_USED_ID, k);
}

static int l_virtio_needs_reset(lua_State *L)
{
	static const char *const k[] = { NULL };
	return dev_spec(L, MB_FAULT_VIRTIO_NEEDS_RESET, k);
}

static int l_virtio_config_change(lua_State *L)
{
	static const char *const k[] = { "capacity", NULL };
	return dev_spec(L, MB_FAULT_VIRTIO_CONFIG_CHANGE, k);
}

static int l_irq_drop(lua_State *L)
{
	return irq_spec(L, MB_FAULT_IRQ_DROP);
}

static int l_irq_storm(lua_State *L)
{
	return irq_spec(L, MB_FAULT_IRQ_STORM);
}

static int l_irq_spurious(lua_State *L)
{
	return irq_spec(L, MB_FAULT_IRQ_SPURIOUS);
}

static int l_uart_drop(lua_State *L)
{
	return uart_spec(L, MB_FAULT_UART_DROP, NULL);
}

static int l_uart_corrupt(lua_State *L)
{
	return uart_spec(L, MB_FAULT_UART_CORRUPT, "bits");
}

static int l_uart_error(lua_State *L)
{
	return uart_spec(L, MB_FAULT_UART_ERROR, "kind");
}

/* A probability field of the table at idx (def when absent). */
static double opt_prob(lua_State *L, int idx, const char *key, const char *name,
		       double def)
{
	int t = lua_getfield(L, idx, key);
	double v = def;
	if (t != LUA_TNIL) {
		v = lua_tonumber(L, -1);
		if (t != LUA_TNUMBER || !(v >= 0 && v <= 1))
			luaL_error(L, "%s: %s is not a probability (0-1)", name,
				   luaL_tolstring(L, -1, NULL));
	}
	lua_pop(L, 1);
	return v;
}

/* An integer option in [lo, hi] (def when absent; def < lo: required). */
static lua_Integer opt_range(lua_State *L, const char *key, lua_Integer def,
			     lua_Integer lo, lua_Integer hi, const char *what)
{
	int t = lua_getfield(L, 1, key), isint = 0;
	lua_Integer v = lua_tointegerx(L, -1, &isint);
	if (t == LUA_TNIL && def >= lo)
		v = def;
	else if (t == LUA_TNIL)
		luaL_error(L, "%s: missing (%s)", key, what);
	else if (t != LUA_TNUMBER || !isint || v < lo || v > hi)
		luaL_error(L, "%s: %s is not %I-%I (%s)", key, luaL_tolstring(L, -1, NULL),
			   lo, hi, what);
	lua_pop(L, 1);
	return v;
}

/* F.net.* { dev, dir = "rx" | "tx" | "any", conditions, ... }: per frame
 * the NIC receives (rx) or sends (tx); F.net.link { dev, up }: when added. */
static int net_spec(lua_State *L, enum mb_fault_action a, const char *const *extra)
{
	static const char *const base[] = { "dev", "dir", "nth", "every", "p",
					    "count", "after", "enabled", "window" };
	const char *keys[16];
	size_t n = 0;
	if (a == MB_FAULT_NET_LINK) {
		keys[n++] = "dev";
	} else {
		for (size_t i = 0; i < sizeof base / sizeof *base; i++)
			keys[n++] = base[i];
	}
	for (; *extra; extra++)
		keys[n++] = *extra;
	keys[n] = NULL;
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, mb_fault_action_name(a), keys);
	struct mb_fault_rule r = { .action = a };
	parse_common(L, &r);
	static const char *const dirs[] = { "any", "rx", "tx", NULL };
	int dir = a == MB_FAULT_NET_LINK ? 0 : mbl_checkenum(L, 1, "dir", "any", dirs);
	r.ops = dir == 0 ? MB_FAULT_OP_READ | MB_FAULT_OP_WRITE
		: dir == 1 ? MB_FAULT_OP_READ : MB_FAULT_OP_WRITE;
	switch (a) {
	case MB_FAULT_NET_DROP:
		if (lua_getfield(L, 1, "burst") != LUA_TNIL) {
			static const char *const bk[] = { "enter", "leave", "loss",
							  "good_loss", NULL };
			if (!lua_istable(L, -1))
				luaL_error(L, "burst: expected { enter = P, leave = P, "
					   "loss = P, good_loss = P }");
			int b = lua_gettop(L);
			mbl_checkopts(L, b, "burst", bk);
			if (lua_getfield(L, b, "enter") == LUA_TNIL ||
			    lua_getfield(L, b, "leave") == LUA_TNIL)
				luaL_error(L, "burst: enter and leave are required "
					   "(good -> bad and bad -> good per frame)");
			lua_pop(L, 2);
			r.has_burst = true;
			r.ge_enter = opt_prob(L, b, "enter", "burst.enter", 0);
			r.ge_leave = opt_prob(L, b, "leave", "burst.leave", 0);
			r.ge_loss = opt_prob(L, b, "loss", "burst.loss", 1);
			r.ge_good_loss = opt_prob(L, b, "good_loss", "burst.good_loss", 0);
		}
		lua_pop(L, 1);
		break;
	case MB_FAULT_NET_DUPLICATE:
		r.pulses = (unsigned)opt_range(L, "copies", 1, 1, 16, "extra copies");
		break;
	case MB_FAULT_NET_CORRUPT:
		r.bytes = (unsigned)opt_range(L, "bits", 1, 1, 64, "bits flipped per frame");
		r.offset = (uint32_t)opt_range(L, "offset", 0, 0, MB_NETBE_MAX_FRAME,
					       "bytes at the frame's start left alone");
		break;
	case MB_FAULT_NET_REORDER:
		r.pulses = (unsigned)opt_range(L, "gap", 1, 1, 64,
					       "later frames that overtake it");
		r.ms = (uint32_t)opt_range(L, "ms", 100, 1, 60000,
					   "the longest it is held");
		break;
	case MB_FAULT_NET_DELAY:
		r.ms = (uint32_t)opt_range(L, "ms", -1, 0, 60000, "the delay, ms");
		r.jitter = (uint32_t)opt_range(L, "jitter", 0, 0, 60000,
					       "ms added, 0-jitter per frame");
		if (r.ms + r.jitter == 0)
			luaL_error(L, "ms: 0 with no jitter delays nothing");
		break;
	case MB_FAULT_NET_RATE:
		r.rate = (uint64_t)opt_range(L, "bytes_per_s", -1, 8, (lua_Integer)1 << 40,
					     "the wire's rate");
		r.ms = (uint32_t)opt_range(L, "max_wait_ms", 1000, 1, 60000,
					   "frames that would wait longer are dropped");
		break;
	case MB_FAULT_NET_LINK:
		if (lua_getfield(L, 1, "up") != LUA_TBOOLEAN)
			luaL_error(L, "up: expected true or false (the link status), got %s",
				   luaL_typename(L, -1));
		r.up = lua_toboolean(L, -1);
		lua_pop(L, 1);
		break;
	default:
		break;
	}
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

static int l_net_drop(lua_State *L)
{
	static const char *const k[] = { "burst", NULL };
	return net_spec(L, MB_FAULT_NET_DROP, k);
}

static int l_net_duplicate(lua_State *L)
{
	static const char *const k[] = { "copies", NULL };
	return net_spec(L, MB_FAULT_NET_DUPLICATE, k);
}

static int l_net_corrupt(lua_State *L)
{
	static const char *const k[] = { "bits", "offset", NULL };
	return net_spec(L, MB_FAULT_NET_CORRUPT, k);
}

static int l_net_reorder(lua_State *L)
{
	static const char *const k[] = { "gap", "ms", NULL };
	return net_spec(L, MB_FAULT_NET_REORDER, k);
}

static int l_net_delay(lua_State *L)
{
	static const char *const k[] = { "ms", "jitter", NULL };
	return net_spec(L, MB_FAULT_NET_DELAY, k);
}

static int l_net_rate(lua_State *L)
{
	static const char *const k[] = { "bytes_per_s", "max_wait_ms", NULL };
	return net_spec(L, MB_FAULT_NET_RATE, k);
}

static int l_net_link(lua_State *L)
{
	static const char *const k[] = { "up", NULL };
	return net_spec(L, MB_FAULT_NET_LINK, k);
}

/* F.mem.flip { gpa = ADDR, bit = 0-7 }: flips that bit of guest RAM when
 * plan:add takes it. */
static int l_mem_flip(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	static const char *const keys[] = { "gpa", "bit", "after", "window", NULL };
	mbl_checkopts(L, 1, "mem.flip", keys);
	struct mb_fault_rule r = { .action = MB_FAULT_MEM_FLIP };
	if (lua_getfield(L, 1, "after") != LUA_TNIL) /* on a trigger */
		r.after = rule_id(L, -1, "after");
	lua_pop(L, 1);
	parse_window(L, &r);
	if (lua_getfield(L, 1, "gpa") == LUA_TNIL)
		luaL_error(L, "gpa: missing (the guest-physical byte to flip)");
	lua_pop(L, 1);
	r.gpa = (uint64_t)mbl_optint(L, 1, "gpa", 0);
	lua_Integer bit = mbl_optint(L, 1, "bit", 0);
	if (bit < 0 || bit > 7)
		luaL_error(L, "bit: %d is not 0-7", (int)bit);
	r.bit = (unsigned)bit;
	snprintf(r.dev, sizeof r.dev, "mem");
	struct mb_fault_rule *u = lua_newuserdatauv(L, sizeof *u, 0);
	*u = r;
	luaL_setmetatable(L, SPEC_MT);
	return 1;
}

/* "blk.error on blk0, read sectors 2048-2055, nth 3" */
/* "net.delay on net0, rx, 10+0-5 ms, p 0.5" */
static void describe_net(luaL_Buffer *b, const struct mb_fault_rule *r)
{
	char s[256];
	unsigned rt = MB_FAULT_OP_READ | MB_FAULT_OP_WRITE;
	int n = snprintf(s, sizeof s, "%s on %s", mb_fault_action_name(r->action), r->dev);
	if (r->action == MB_FAULT_NET_LINK) {
		snprintf(s + n, sizeof s - (size_t)n, ", %s", r->up ? "up" : "down");
		luaL_addstring(b, s);
		return;
	}
	n += snprintf(s + n, sizeof s - (size_t)n, ", %s", (r->ops & rt) == rt ? "rx and tx"
		      : r->ops & MB_FAULT_OP_READ ? "rx" : "tx");
	if (r->has_burst)
		n += snprintf(s + n, sizeof s - (size_t)n, ", burst %g/%g loss %g/%g",
			      r->ge_enter, r->ge_leave, r->ge_loss, r->ge_good_loss);
	if (r->action == MB_FAULT_NET_DUPLICATE)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %u copies", r->pulses);
	if (r->action == MB_FAULT_NET_CORRUPT)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %u bits from byte %u",
			      r->bytes, r->offset);
	if (r->action == MB_FAULT_NET_REORDER)
		n += snprintf(s + n, sizeof s - (size_t)n, ", gap %u, at most %u ms",
			      r->pulses, r->ms);
	if (r->action == MB_FAULT_NET_DELAY)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %u+0-%u ms", r->ms, r->jitter);
	if (r->action == MB_FAULT_NET_RATE)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %llu bytes/s, waits up to %u ms",
			      (unsigned long long)r->rate, r->ms);
#define C(f) if (r->f) n += snprintf(s + n, sizeof s - (size_t)n, ", " #f " %llu", \
				     (unsigned long long)r->f);
	C(nth) C(every) C(count)
#undef C
	if (r->has_p)
		n += snprintf(s + n, sizeof s - (size_t)n, ", p %g", r->p);
	if (r->after)
		snprintf(s + n, sizeof s - (size_t)n, ", after rule %u", r->after);
	luaL_addstring(b, s);
}

static void describe(luaL_Buffer *b, const struct mb_fault_rule *r)
{
	char s[256];
	if (r->action == MB_FAULT_MEM_FLIP) {
		snprintf(s, sizeof s, "mem.flip of bit %u at 0x%llx", r->bit,
			 (unsigned long long)r->gpa);
		luaL_addstring(b, s);
		return;
	}
	if (MB_FAULT_IS_NET(r->action)) {
		describe_net(b, r);
		return;
	}
	bool dev_only = mb_fault_is_irq(r->action) || mb_fault_is_pit(r->action) ||
			r->action == MB_FAULT_RTC_JUMP || mb_fault_is_virtio(r->action);
	int n = dev_only ? snprintf(s, sizeof s, "%s on %s", mb_fault_action_name(r->action),
				    r->dev)
		: snprintf(s, sizeof s, "%s on %s, %s", mb_fault_action_name(r->action),
			 r->dev, r->action == MB_FAULT_BLK_BAD ? "reads fail, writes heal,"
			 : mb_fault_op_name(r->ops && r->ops != (MB_FAULT_OP_READ |
							MB_FAULT_OP_WRITE) ? r->ops
					    : MB_FAULT_OP_ANY));
	if (dev_only && r->first <= r->last)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %s %llu-%llu",
			      mb_fault_is_irq(r->action) ? "lines" : "queues",
			      (unsigned long long)r->first, (unsigned long long)r->last);
	else if (r->first <= r->last && mb_fault_is_dev(r->action))
		n += snprintf(s + n, sizeof s - (size_t)n, " addr 0x%llx-0x%llx",
			      (unsigned long long)r->first, (unsigned long long)r->last);
	else if (r->first <= r->last)
		n += snprintf(s + n, sizeof s - (size_t)n, " sectors %llu-%llu",
			      (unsigned long long)r->first, (unsigned long long)r->last);
	if (r->action == MB_FAULT_BLK_ERROR)
		n += snprintf(s + n, sizeof s - (size_t)n, ", status %s",
			      r->status == VIRTIO_BLK_S_UNSUPP ? "unsupp" : "ioerr");
	if (r->action == MB_FAULT_BLK_LATENCY || r->action == MB_FAULT_IRQ_DELAY ||
	    r->action == MB_FAULT_PIT_LATE || r->action == MB_FAULT_DEV_DELAY)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %u ms", r->ms);
	if (r->action == MB_FAULT_RTC_JUMP)
		n += snprintf(s + n, sizeof s - (size_t)n, ", %+lld s", (long long)r->seconds);
	if (r->capacity)
		n += snprintf(s + n, sizeof s - (size_t)n, ", capacity %llu",
			      (unsigned long long)r->capacity);
	if (r->action == MB_FAULT_BLK_TORN_WRITE)
		n += snprintf(s + n, sizeof s - (size_t)n, ", keep %u", r->keep);
	if (r->action == MB_FAULT_BLK_HOLD)
		n += snprintf(s + n, sizeof s - (size_t)n, ", tag %s", r->tag);
#define C(f) if (r->f) n += snprintf(s + n, sizeof s - (size_t)n, ", " #f " %llu", \
				     (unsigned long long)r->f);
	C(nth) C(every) C(count)
#undef C
	if (r->has_p)
		n += snprintf(s + n, sizeof s - (size_t)n, ", p %g", r->p);
	if (r->after)
		n += snprintf(s + n, sizeof s - (size_t)n, ", after rule %u", r->after);
	luaL_addstring(b, s);
}

static int spec_tostring(lua_State *L)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	describe(&b, luaL_checkudata(L, 1, SPEC_MT));
	luaL_pushresult(&b);
	return 1;
}

/* For m:on's answers (lon_events.c): the fault a value is, or NULL. */
const struct mb_fault_rule *mbl_testfault(lua_State *L, int idx)
{
	return luaL_testudata(L, idx, SPEC_MT);
}

/* ---- plans -------------------------------------------------------------------- */

/* The machine's open plan, or NULL (lon_events.c records answers in it). */
struct mb_fault_plan *mbl_open_plan(lua_State *L, struct mbl_machine *mm)
{
	struct mb_fault_plan *p = NULL;
	if (mbl_ref_push(L, mm, &plan_key) == LUA_TUSERDATA) {
		struct lplan *lp = lua_touserdata(L, -1);
		if (lp->p && !mb_fault_plan_closed(lp->p))
			p = lp->p;
	}
	lua_pop(L, 1);
	return p;
}

static struct lplan *checkplan(lua_State *L, int idx)
{
	struct lplan *lp = luaL_checkudata(L, idx, PLAN_MT);
	if (!lp->mm->m || !lp->p)
		luaL_error(L, "faults: the plan's machine is closed");
	return lp;
}

/* The id of the rule at idx (a handle of this plan, or an integer). */
static unsigned plan_rule(lua_State *L, struct lplan *lp, int idx)
{
	unsigned id = rule_id(L, idx, "rule");
	struct mb_fault_rule_stats st;
	if (mb_fault_plan_stats(lp->p, id, &st))
		luaL_error(L, "rule: %d is not a rule of this plan", (int)id);
	struct lrule *h = luaL_testudata(L, idx, RULE_MT);
	if (h) {
		lua_getiuservalue(L, idx, 1);
		bool mine = lua_touserdata(L, -1) == lp;
		lua_pop(L, 1);
		if (!mine)
			luaL_error(L, "rule: a rule of another plan");
		if (h->gen != lp->gen)
			luaL_error(L, "rule: a rule from before plan:reset");
	}
	return id;
}

static void push_defaults(lua_State *L)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &defaults_key) == LUA_TTABLE)
		return;
	lua_pop(L, 1);
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &defaults_key);
}

/* mb.fault.defaults { seed = N, replay = PATH }: what m:faults uses when
 * the script does not say (nil clears). Returns the current defaults and
 * the last plan made: { seed, replay, last = { seed, trace, replay } }. */
static int l_defaults(lua_State *L)
{
	lua_settop(L, 1);
	push_defaults(L);
	int d = lua_gettop(L);
	if (!lua_isnoneornil(L, 1)) {
		luaL_checktype(L, 1, LUA_TTABLE);
		static const char *const keys[] = { "seed", "replay", NULL };
		mbl_checkopts(L, 1, "defaults", keys);
		if (lua_getfield(L, 1, "seed") != LUA_TNIL)
			mbl_optint(L, 1, "seed", 0); /* checks it */
		lua_setfield(L, d, "seed");
		if (lua_getfield(L, 1, "replay") != LUA_TNIL)
			mbl_optstr(L, 1, "replay", NULL);
		lua_setfield(L, d, "replay");
	}
	lua_createtable(L, 0, 3);
	lua_getfield(L, d, "seed");
	lua_setfield(L, -2, "seed");
	lua_getfield(L, d, "replay");
	lua_setfield(L, -2, "replay");
	lua_getfield(L, d, "last");
	lua_setfield(L, -2, "last");
	return 1;
}

/* m:faults { seed = N, trace = PATH, replay = PATH } */
static int l_faults(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	if (lua_isnoneornil(L, 2))
		lua_newtable(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	static const char *const keys[] = { "seed", "trace", "replay", NULL };
	mbl_checkopts(L, 2, "faults", keys);
	push_defaults(L); /* 3 */
	struct mb_fault_plan_config c = {
		.seed = (uint64_t)mbl_optint(L, 2, "seed",
					     mbl_optint(L, 3, "seed", 0)),
		.trace = mbl_optstr(L, 2, "trace", NULL),
		.replay = mbl_optstr(L, 2, "replay", mbl_optstr(L, 3, "replay", NULL)),
	};
	/* A replay forced from outside must not overwrite the trace it reads. */
	if (c.replay && c.trace && strcmp(c.replay, c.trace) == 0) {
		lua_pushfstring(L, "%s.replay", c.trace);
		c.trace = lua_tostring(L, -1);
	}
	if (mbl_ref_push(L, mm, &plan_key) != LUA_TNIL) {
		struct lplan *old = lua_touserdata(L, -1);
		if (old->p && !mb_fault_plan_closed(old->p))
			return luaL_error(L, "faults: this machine already has a plan "
					  "(plan:close() it first)");
	}
	lua_pop(L, 1);
	struct lplan *lp = lua_newuserdatauv(L, sizeof *lp, 2);
	int pi = lua_gettop(L);
	lp->mm = mm, lp->p = NULL, lp->gen = 0;
	luaL_setmetatable(L, PLAN_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	lua_newtable(L);
	lua_setiuservalue(L, -2, 2);
	if (mb_fault_plan_new(m, &c, &lp->p))
		return mbl_fail(L, "faults");
	mbl_ref_set(L, mm, &plan_key, pi);
	lua_createtable(L, 0, 3); /* defaults.last */
	lua_pushinteger(L, (lua_Integer)mb_fault_plan_seed(lp->p));
	lua_setfield(L, -2, "seed");
	if (c.trace) {
		lua_pushstring(L, c.trace);
		lua_setfield(L, -2, "trace");
	}
	if (c.replay) {
		lua_pushstring(L, c.replay);
		lua_setfield(L, -2, "replay");
	}
	lua_setfield(L, 3, "last");
	lua_settop(L, pi);
	return 1;
}

/* plan:release(tag): start the requests held under tag (none: all);
 * returns how many. plan:held(tag) counts them. */
static int p_release(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	lua_pushinteger(L, mb_fault_plan_release(lp->p, luaL_optstring(L, 2, NULL)));
	return 1;
}

static int p_held(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	lua_pushinteger(L, mb_fault_plan_held(lp->p, luaL_optstring(L, 2, NULL)));
	return 1;
}

/* plan:close(): decide nothing more, close the trace; counts stay
 * readable and the machine may get another plan (m:faults). */
static int p_close(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	mb_fault_plan_close(lp->p);
	return 0;
}

static int p_add(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	struct mb_fault_rule *r = luaL_checkudata(L, 2, SPEC_MT);
	int id = mb_fault_plan_add(lp->p, r);
	if (id < 0)
		return mbl_fail(L, "add");
	struct lrule *h = lua_newuserdatauv(L, sizeof *h, 1);
	h->id = (unsigned)id;
	h->gen = lp->gen;
	luaL_setmetatable(L, RULE_MT);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	lua_getiuservalue(L, 1, 2);
	lua_pushvalue(L, -2);
	lua_rawseti(L, -2, id);
	lua_pop(L, 1);
	return 1;
}

/* plan:reset { seed = N }: no rules, a new seed, same devices (campaigns) */
static int p_reset(lua_State *L)
{
	static const char *const keys[] = { "seed", NULL };
	struct lplan *lp = checkplan(L, 1);
	if (lua_isnoneornil(L, 2))
		lua_newtable(L);
	luaL_checktype(L, 2, LUA_TTABLE);
	mbl_checkopts(L, 2, "reset", keys);
	uint64_t seed = (uint64_t)mbl_optint(L, 2, "seed", 0);
	if (mb_fault_plan_reset(lp->p, seed))
		return mbl_fail(L, NULL);
	lp->gen++;
	lua_newtable(L);
	lua_setiuservalue(L, 1, 2);
	lua_settop(L, 1);
	return 1;
}

static int p_stats(lua_State *L, bool fired)
{
	struct lplan *lp = checkplan(L, 1);
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(lp->p, plan_rule(L, lp, 2), &st);
	lua_pushinteger(L, (lua_Integer)(fired ? st.fired : st.matched));
	return 1;
}

static int p_fired(lua_State *L) { return p_stats(L, true); }
static int p_matched(lua_State *L) { return p_stats(L, false); }

/* The rules (not removed) that never acted, in id order. */
static int p_unfired(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	unsigned n = mb_fault_plan_nrules(lp->p), k = 0;
	lua_newtable(L);
	lua_getiuservalue(L, 1, 2);
	for (unsigned id = 1; id <= n; id++) {
		struct mb_fault_rule_stats st;
		mb_fault_plan_stats(lp->p, id, &st);
		if (st.removed || st.fired)
			continue;
		lua_rawgeti(L, -1, id);
		lua_rawseti(L, -3, ++k);
	}
	lua_pop(L, 1);
	return 1;
}

static int p_remove(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	mb_fault_plan_remove(lp->p, plan_rule(L, lp, 2));
	return 0;
}

/* plan:enable() / plan:disable(): the whole plan; with a rule, that rule. */
static int p_enable_(lua_State *L, bool on)
{
	struct lplan *lp = checkplan(L, 1);
	if (lua_isnoneornil(L, 2))
		mb_fault_plan_enable(lp->p, on);
	else
		mb_fault_plan_set_rule_enabled(lp->p, plan_rule(L, lp, 2), on);
	return 0;
}

static int p_enable(lua_State *L) { return p_enable_(L, true); }
static int p_disable(lua_State *L) { return p_enable_(L, false); }

/* A line per rule: "rule 1: blk.error on blk0, read ...: matched 3, fired 1" */
static int p_report(lua_State *L)
{
	struct lplan *lp = checkplan(L, 1);
	unsigned n = mb_fault_plan_nrules(lp->p);
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_pushfstring(L, "fault plan, seed %I, %d rule%s\n",
			(lua_Integer)mb_fault_plan_seed(lp->p), (int)n, n == 1 ? "" : "s");
	luaL_addvalue(&b);
	for (unsigned id = 1; id <= n; id++) {
		struct mb_fault_rule r;
		struct mb_fault_rule_stats st;
		mb_fault_plan_rule(lp->p, id, &r);
		mb_fault_plan_stats(lp->p, id, &st);
		lua_pushfstring(L, "rule %d: ", (int)id);
		luaL_addvalue(&b);
		describe(&b, &r);
		lua_pushfstring(L, ": matched %I, fired %I%s%s\n", (lua_Integer)st.matched,
				(lua_Integer)st.fired, r.disabled ? " (disabled)" : "",
				st.removed ? " (removed)" : "");
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	return 1;
}

static int p_tostring(lua_State *L)
{
	struct lplan *lp = luaL_checkudata(L, 1, PLAN_MT);
	if (!lp->mm->m || !lp->p)
		lua_pushstring(L, "fault plan (closed)");
	else
		lua_pushfstring(L, "fault plan (seed %I, %d rules)",
				(lua_Integer)mb_fault_plan_seed(lp->p),
				(int)mb_fault_plan_nrules(lp->p));
	return 1;
}

/* ---- rule handles ------------------------------------------------------------- */

static int r_index(lua_State *L)
{
	struct lrule *r = luaL_checkudata(L, 1, RULE_MT);
	const char *k = luaL_checkstring(L, 2);
	if (strcmp(k, "id") == 0) {
		lua_pushinteger(L, r->id);
		return 1;
	}
	lua_getiuservalue(L, 1, 1);
	struct lplan *lp = checkplan(L, -1);
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(lp->p, r->id, &st);
	if (strcmp(k, "fired") == 0)
		lua_pushinteger(L, (lua_Integer)st.fired);
	else if (strcmp(k, "matched") == 0)
		lua_pushinteger(L, (lua_Integer)st.matched);
	else
		lua_pushnil(L);
	return 1;
}

static int r_tostring(lua_State *L)
{
	struct lrule *h = luaL_checkudata(L, 1, RULE_MT);
	lua_getiuservalue(L, 1, 1);
	struct lplan *lp = lua_touserdata(L, -1);
	struct mb_fault_rule r;
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	lua_pushfstring(L, "rule %d", (int)h->id);
	luaL_addvalue(&b);
	if (lp && lp->mm->m && lp->p && mb_fault_plan_rule(lp->p, h->id, &r) == 0) {
		luaL_addstring(&b, " (");
		describe(&b, &r);
		luaL_addchar(&b, ')');
	}
	luaL_pushresult(&b);
	return 1;
}

void mbl_open_fault(lua_State *L)
{
	static const luaL_Reg plan_methods[] = {
		{ "add", p_add },         { "fired", p_fired },   { "matched", p_matched },
		{ "unfired", p_unfired }, { "remove", p_remove }, { "enable", p_enable },
		{ "disable", p_disable }, { "report", p_report }, { "close", p_close },
		{ "release", p_release }, { "held", p_held }, { "reset", p_reset },
		{ NULL, NULL },
	};
	luaL_newmetatable(L, PLAN_MT);
	luaL_newlib(L, plan_methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, p_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, RULE_MT);
	lua_pushcfunction(L, r_index);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, r_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	luaL_newmetatable(L, SPEC_MT);
	lua_pushcfunction(L, spec_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);

	static const luaL_Reg blk[] = {
		{ "error", l_blk_error }, { "latency", l_blk_latency },
		{ "corrupt", l_blk_corrupt }, { "lying_flush", l_blk_lying_flush },
		{ "torn_write", l_blk_torn_write }, { "bad", l_blk_bad },
		{ "hold", l_blk_hold }, { NULL, NULL },
	};
	static const luaL_Reg uart[] = {
		{ "drop", l_uart_drop }, { "corrupt", l_uart_corrupt },
		{ "error", l_uart_error }, { NULL, NULL },
	};
	lua_createtable(L, 0, 1); /* mb.fault */
	luaL_newlib(L, blk);
	lua_setfield(L, -2, "blk");
	luaL_newlib(L, uart);
	lua_setfield(L, -2, "uart");
	static const luaL_Reg irq[] = {
		{ "drop", l_irq_drop }, { "storm", l_irq_storm },
		{ "spurious", l_irq_spurious }, { "delay", l_irq_delay }, { NULL, NULL },
	};
	luaL_newlib(L, irq);
	lua_setfield(L, -2, "irq");
	static const luaL_Reg pit[] = {
		{ "drop", l_pit_drop }, { "late", l_pit_late }, { NULL, NULL },
	};
	luaL_newlib(L, pit);
	lua_setfield(L, -2, "pit");
	static const luaL_Reg rtc[] = { { "jump", l_rtc_jump }, { NULL, NULL } };
	luaL_newlib(L, rtc);
	lua_setfield(L, -2, "rtc");
	static const luaL_Reg virtio[] = {
		{ "bad_used_id", l_virtio_bad_used_id },
		{ "needs_reset", l_virtio_needs_reset },
		{ "config_change", l_virtio_config_change }, { NULL, NULL },
	};
	luaL_newlib(L, virtio);
	lua_setfield(L, -2, "virtio");
	static const luaL_Reg net[] = {
		{ "drop", l_net_drop }, { "duplicate", l_net_duplicate },
		{ "corrupt", l_net_corrupt }, { "reorder", l_net_reorder },
		{ "delay", l_net_delay }, { "rate", l_net_rate },
		{ "link", l_net_link }, { NULL, NULL },
	};
	luaL_newlib(L, net);
	lua_setfield(L, -2, "net");
	static const luaL_Reg dev[] = {
		{ "delay", l_dev_delay }, { "drop", l_dev_drop },
		{ "corrupt", l_dev_corrupt }, { "kill", l_dev_kill }, { NULL, NULL },
	};
	luaL_newlib(L, dev);
	lua_setfield(L, -2, "dev");
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, l_mem_flip);
	lua_setfield(L, -2, "flip");
	lua_setfield(L, -2, "mem");
	lua_pushcfunction(L, l_defaults);
	lua_setfield(L, -2, "defaults");
	lua_setfield(L, -2, "fault");
	mbl_machine_method(L, "faults", l_faults);
}
