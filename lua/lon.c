/* m:on(event, filter, fn): Lua functions on guest events.
 *
 *   m:on("uart", { dev = com1, dir = "tx" | "rx" | "any" }, function(ev) end)
 *       ev = { dev, dir, byte }; return false to drop the byte, an integer
 *       to change it, nil to let it go
 *   m:on("console", { dev = com1, pattern = "I/O error" }, function(line, ev) end)
 *       every line the guest prints (tx, without its "\r\n") that matches
 *       the Lua pattern
 *   m:on("pio" | "mmio", { base, size } | ADDR, fn)   -- m:tap's access events
 *   m:on("blk" | "irq" | "pit", filter, fn)  -- lon_events.c
 *
 * Each returns a handle with :remove() and :count(). UART events come
 * from the UART's observer (mb_uart_set_hook; an isolated UART's, from
 * its wire in the VMM: mb_devproc_set_uart_hook), one dispatcher per UART
 * holding the registrations; functions run in the Lua world of the thread
 * waiting in m:run (mb_machine_call_main), the access held until they
 * return, as mb.device functions do. An error ends the run ("error"). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define LINE_MAX_BYTES 1024
#define MAX_REGS 64

enum kind { ON_UART, ON_CONSOLE };

struct reg {
	int id;
	enum kind kind;
	unsigned dirs; /* 1 rx, 2 tx */
	bool removed;
	uint64_t count;
};

/* One per UART with registrations; lives as long as the machine. */
struct disp {
	struct mbl_machine *mm;
	struct mb_uart *u;
	char dev[MB_DEVICE_NAME_MAX];
	pthread_mutex_t lock; /* regs, line */
	struct reg regs[MAX_REGS];
	unsigned nregs;
	char line[LINE_MAX_BYTES];
	size_t len;
	struct disp *next;
};

struct call {
	struct disp *d;
	struct reg *r;
	bool rx;
	uint8_t *byte;
	bool drop;
	const char *line;
};

static void disp_free(void *p)
{
	struct disp *d = p;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* The key of registration r's function in the machine's refs. */
static const void *fn_key(struct disp *d, struct reg *r)
{
	return (const char *)d + 1 + (r - d->regs);
}

static void call_lua(void *arg)
{
	struct call *c = arg;
	struct mbl_machine *mm = c->d->mm;
	lua_State *L = mm->L;
	if (!L || !mm->m)
		return;
	int top = lua_gettop(L);
	if (mbl_ref_push(L, mm, fn_key(c->d, c->r)) != LUA_TFUNCTION) {
		lua_settop(L, top);
		return;
	}
	int nargs = 1;
	if (c->r->kind == ON_CONSOLE) {
		lua_pushstring(L, c->line);
		nargs = 2;
	}
	lua_createtable(L, 0, 3);
	lua_pushstring(L, c->d->dev);
	lua_setfield(L, -2, "dev");
	lua_pushstring(L, c->rx ? "rx" : "tx");
	lua_setfield(L, -2, "dir");
	if (c->byte) {
		lua_pushinteger(L, *c->byte);
		lua_setfield(L, -2, "byte");
	}
	if (lua_pcall(L, nargs, 1, 0) != LUA_OK) {
		mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "on %s of %s: %s",
				c->r->kind == ON_UART ? "uart" : "console", c->d->dev,
				lua_tostring(L, -1));
	} else if (c->r->kind == ON_UART) {
		int isint;
		lua_Integer v = lua_tointegerx(L, -1, &isint);
		if (isint)
			*c->byte = (uint8_t)v;
		else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1))
			c->drop = true;
	}
	lua_settop(L, top);
}

/* The UART's observer: on a vCPU (tx) or the event loop (rx). */
static void on_byte(void *ctx, bool rx, uint8_t *byte, bool *drop)
{
	struct disp *d = ctx;
	struct mb_machine *m = d->mm->m;
	if (!m)
		return;
	unsigned dir = rx ? 1 : 2;
	char line[LINE_MAX_BYTES];
	bool have_line = false;
	pthread_mutex_lock(&d->lock);
	unsigned n = d->nregs;
	if (!rx) { /* the console's lines: what the guest printed */
		if (*byte == '\n') {
			size_t k = d->len;
			if (k && d->line[k - 1] == '\r')
				k--;
			memcpy(line, d->line, k);
			line[k] = 0;
			d->len = 0;
			have_line = true;
		} else if (d->len < sizeof d->line - 1) {
			d->line[d->len++] = (char)*byte;
		}
	}
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n && !*drop; i++) {
		struct reg *r = &d->regs[i];
		if (r->removed)
			continue;
		struct call c = { .d = d, .r = r, .rx = rx };
		if (r->kind == ON_UART && (r->dirs & dir)) {
			c.byte = byte;
		} else if (r->kind == ON_CONSOLE && have_line) {
			c.line = line;
		} else {
			continue;
		}
		__atomic_fetch_add(&r->count, 1, __ATOMIC_RELAXED);
		mb_machine_call_main(m, call_lua, &c);
		if (c.drop)
			*drop = true;
	}
}

static struct disp *disp_for(lua_State *L, struct mbl_machine *mm,
			     struct mb_device *dev)
{
	struct mb_machine *m = mbl_live(L, mm);
	struct mb_uart *u = mb_uart_of_device(dev);
	/* An isolated UART's bytes cross the VMM on its wire (core/devproc.c,
	 * mb_devproc_wire): the same observer sits there. */
	struct mb_devproc *dp = !u && !strcmp(mb_device_kind(dev), "uart16550")
					? mb_devproc_of(dev) : NULL;
	if (!u && !dp)
		luaL_error(L, "dev: %s is not a UART", mb_device_name(dev));
	/* the UART's dispatcher, in the machine's own refs (dies with it) */
	const void *key = (const char *)(u ? (const void *)u : dp) + 1;
	struct disp *d = NULL;
	if (mbl_ref_push(L, mm, key) == LUA_TLIGHTUSERDATA)
		d = lua_touserdata(L, -1);
	lua_pop(L, 1);
	if (d)
		return d;
	d = calloc(1, sizeof *d);
	if (!d)
		luaL_error(L, "on: out of memory");
	d->mm = mm;
	d->u = u;
	snprintf(d->dev, sizeof d->dev, "%s", mb_device_name(dev));
	pthread_mutex_init(&d->lock, NULL);
	if (mb_machine_on_destroy(m, disp_free, d)) {
		disp_free(d);
		luaL_error(L, "on: out of memory");
	}
	if (dp && mb_devproc_set_uart_hook(dp, on_byte, d))
		return mbl_fail(L, "dev"), NULL;
	lua_pushlightuserdata(L, d);
	mbl_ref_set(L, mm, key, -1);
	lua_pop(L, 1);
	if (u)
		mb_uart_set_hook(u, on_byte, d);
	return d;
}

static int l_on(lua_State *L)
{
	static const char *const events[] = { "uart", "console", "pio", "mmio", "blk",
					      "irq", "pit", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_live(L, mm);
	if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "net") == 0)
		return mbl_on_net(L); /* lon_net.c */
	int ev = luaL_checkoption(L, 2, NULL, events);
	if (ev >= 4) /* told after the fact (lon_events.c) */
		return mbl_on_event(L, events[ev]);
	luaL_checktype(L, 4, LUA_TFUNCTION);
	if (ev >= 2) { /* m:tap { pio = filter, fn = fn } */
		lua_getfield(L, 1, "tap");
		lua_pushvalue(L, 1);
		lua_createtable(L, 0, 2);
		lua_pushvalue(L, 3);
		lua_setfield(L, -2, events[ev]);
		lua_pushvalue(L, 4);
		lua_setfield(L, -2, "fn");
		lua_call(L, 2, 1);
		return 1;
	}
	luaL_checktype(L, 3, LUA_TTABLE);
	static const char *const ukeys[] = { "dev", "dir", NULL };
	static const char *const ckeys[] = { "dev", "pattern", NULL };
	mbl_checkopts(L, 3, events[ev], ev == ON_UART ? ukeys : ckeys);
	if (lua_getfield(L, 3, "dev") != LUA_TUSERDATA)
		return luaL_error(L, "dev: expected a UART (m:add's result)");
	struct mb_device *dev = mbl_checkdevice(L, -1);
	lua_pop(L, 1);
	unsigned dirs = 2;
	if (ev == ON_UART) {
		static const char *const dn[] = { "any", "rx", "tx", NULL };
		int k = mbl_checkenum(L, 3, "dir", "any", dn);
		dirs = k == 0 ? 3 : k == 1 ? 1 : 2;
	}
	struct disp *d = disp_for(L, mm, dev);
	if (ev == ON_CONSOLE) { /* fn(line, ev) only for lines matching */
		const char *pat = mbl_optstr(L, 3, "pattern", NULL);
		if (pat) { /* wrap: function(line, ev) if line:find(pat) ... */
			static const char wrap[] =
				"local pat, fn = ...\n"
				"return function(line, ev)\n"
				"  if line:find(pat) then return fn(line, ev) end\n"
				"end\n";
			if (luaL_loadbuffer(L, wrap, sizeof wrap - 1, "=on") != LUA_OK)
				return lua_error(L);
			lua_pushstring(L, pat);
			lua_pushvalue(L, 4);
			lua_call(L, 2, 1);
			lua_replace(L, 4);
		}
	}
	pthread_mutex_lock(&d->lock);
	if (d->nregs == MAX_REGS) {
		pthread_mutex_unlock(&d->lock);
		return luaL_error(L, "on: more than %d functions on %s", MAX_REGS, d->dev);
	}
	struct reg *r = &d->regs[d->nregs];
	*r = (struct reg){ .id = (int)d->nregs + 1, .kind = (enum kind)ev, .dirs = dirs };
	pthread_mutex_unlock(&d->lock);
	mbl_ref_set(L, mm, fn_key(d, r), 4);
	pthread_mutex_lock(&d->lock);
	d->nregs++; /* published after its function is in place */
	pthread_mutex_unlock(&d->lock);
	char what[96];
	snprintf(what, sizeof what, "%s of %s", r->kind == ON_CONSOLE ? "console" : "uart",
		 d->dev);
	mbl_on_handle_new(L, mm, &r->removed, &r->count, fn_key(d, r), what);
	return 1;
}

void mbl_open_on(lua_State *L)
{
	mbl_open_on_handle(L);
	mbl_machine_method(L, "on", l_on);
	mbl_open_on_events(L);
}
