/* m:on("net", { dev = nic, dir = "rx" | "tx" | "any" }, function(ev) end):
 * a Lua function on every Ethernet frame of a virtio-net device.
 *   ev = { dev, dir, frame (a string), len }
 *   return false to drop the frame, a string (14-65536 bytes) to send it
 *   instead, nil to let it go
 * rx frames are seen as the backend brings them (before any rx fault),
 * tx frames as they leave (after any tx fault): the wire's end, as for
 * m:on("uart"). The device's observer (mb_virtio_net_set_hook) runs on
 * the machine's event loop with no device lock held; the function runs in
 * the Lua world of the thread waiting in m:run (mb_machine_call_main), the
 * frame held until it returns. An error ends the run ("error"). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lmoonbox.h"

#define MAX_REGS 64

struct reg {
	int id;
	unsigned dirs; /* 1 rx, 2 tx */
	bool removed;
	uint64_t count;
};

/* One per NIC with registrations; lives as long as the machine. */
struct disp {
	struct mbl_machine *mm;
	char dev[MB_DEVICE_NAME_MAX];
	pthread_mutex_t lock; /* regs */
	struct reg regs[MAX_REGS];
	unsigned nregs;
};

struct call {
	struct disp *d;
	struct reg *r;
	bool rx;
	uint8_t *frame;
	uint32_t *len;
	bool drop;
};

static void disp_free(void *p)
{
	struct disp *d = p;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

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
	lua_createtable(L, 0, 4);
	lua_pushstring(L, c->d->dev);
	lua_setfield(L, -2, "dev");
	lua_pushstring(L, c->rx ? "rx" : "tx");
	lua_setfield(L, -2, "dir");
	lua_pushlstring(L, (const char *)c->frame, *c->len);
	lua_setfield(L, -2, "frame");
	lua_pushinteger(L, *c->len);
	lua_setfield(L, -2, "len");
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "on net of %s: %s", c->d->dev,
				lua_tostring(L, -1));
	} else if (lua_type(L, -1) == LUA_TSTRING) {
		size_t n;
		const char *s = lua_tolstring(L, -1, &n);
		if (n < 14 || n > MB_NETBE_MAX_FRAME) {
			mb_machine_stop(mm->m, MB_STOP_ERROR, 1, "on net of %s: the frame "
					"returned is %zu bytes (14-%d)", c->d->dev, n,
					MB_NETBE_MAX_FRAME);
			c->drop = true;
		} else {
			memcpy(c->frame, s, n);
			*c->len = (uint32_t)n;
		}
	} else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
		c->drop = true;
	}
	lua_settop(L, top);
}

/* The NIC's observer, on the event loop. */
static void on_frame(void *ctx, bool rx, uint8_t *frame, uint32_t *len, bool *drop)
{
	struct disp *d = ctx;
	struct mb_machine *m = d->mm->m;
	if (!m)
		return;
	pthread_mutex_lock(&d->lock);
	unsigned n = d->nregs;
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n && !*drop; i++) {
		struct reg *r = &d->regs[i];
		if (r->removed || !(r->dirs & (rx ? 1u : 2u)))
			continue;
		struct call c = { .d = d, .r = r, .rx = rx, .frame = frame, .len = len };
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
	if (strcmp(mb_device_kind(dev), "virtio_net") != 0)
		luaL_error(L, "dev: %s is a %s, not a virtio_net", mb_device_name(dev),
			   mb_device_kind(dev));
	if (mb_devproc_of(dev))
		luaL_error(L, "dev: %s is isolated (isolate = true): its frames stay in "
			   "its process (the net.* rules work there)", mb_device_name(dev));
	struct mb_virtio_net *nic = mb_virtio_dev_model(dev);
	const void *key = (const char *)nic + 1;
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
	snprintf(d->dev, sizeof d->dev, "%s", mb_device_name(dev));
	pthread_mutex_init(&d->lock, NULL);
	if (mb_machine_on_destroy(m, disp_free, d)) {
		disp_free(d);
		luaL_error(L, "on: out of memory");
	}
	if (mb_virtio_net_set_hook(nic, on_frame, d))
		return mbl_fail(L, "dev"), NULL;
	lua_pushlightuserdata(L, d);
	mbl_ref_set(L, mm, key, -1);
	lua_pop(L, 1);
	return d;
}

/* m:on("net", filter, fn), from l_on (lon.c) */
int mbl_on_net(lua_State *L)
{
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	mbl_live(L, mm);
	luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TFUNCTION);
	static const char *const keys[] = { "dev", "dir", NULL };
	mbl_checkopts(L, 3, "net", keys);
	if (lua_getfield(L, 3, "dev") != LUA_TUSERDATA)
		return luaL_error(L, "dev: expected a virtio_net (m:add's result)");
	struct mb_device *dev = mbl_checkdevice(L, -1);
	lua_pop(L, 1);
	static const char *const dn[] = { "any", "rx", "tx", NULL };
	int k = mbl_checkenum(L, 3, "dir", "any", dn);
	unsigned dirs = k == 0 ? 3 : k == 1 ? 1 : 2;
	struct disp *d = disp_for(L, mm, dev);
	pthread_mutex_lock(&d->lock);
	if (d->nregs == MAX_REGS) {
		pthread_mutex_unlock(&d->lock);
		return luaL_error(L, "on: more than %d functions on %s", MAX_REGS, d->dev);
	}
	struct reg *r = &d->regs[d->nregs];
	*r = (struct reg){ .id = (int)d->nregs + 1, .dirs = dirs };
	pthread_mutex_unlock(&d->lock);
	mbl_ref_set(L, mm, fn_key(d, r), 4);
	pthread_mutex_lock(&d->lock);
	d->nregs++; /* published after its function is in place */
	pthread_mutex_unlock(&d->lock);
	char what[96];
	snprintf(what, sizeof what, "net of %s", d->dev);
	mbl_on_handle_new(L, mm, &r->removed, &r->count, fn_key(d, r), what);
	return 1;
}
