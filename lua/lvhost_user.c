/* Lua binding of the vhost-user front-end (moonbox/vhost_user.h):
 *   mb.vhost_user { type = "blk"|"fs"|"net"|"rng"|"console" | id = N,
 *                   socket = PATH | spawn = { ARGV... }, name, queues,
 *                   queue_size, config_size, tag, dma, mmio, irq,
 *                   sandbox = false | { ro = {PATHS}, rw = {PATHS}, landlock, net } }
 * and dev:mmio_read(off) / dev:mmio_write(off, v), 32-bit accesses to the
 * device's register window as a driver makes them (tests drive the device
 * without a guest). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "lua/lmoonbox.h"

static const char *const keys[] = { "type", "id", "socket", "spawn", "name",
				    "queues", "queue_size", "config_size",
				    "tag", "dma", "mmio", "irq", "sandbox", NULL };

struct vu_cfg {
	struct mb_vhost_user_config c;
	const char *argv[MB_LAUNCH_MAX_ARGS + 1]; /* spawn, NULL-terminated */
	const char *ro[MB_LAUNCH_MAX_PATHS + 1], *rw[MB_LAUNCH_MAX_PATHS + 1];
};

/* sandbox.ro / sandbox.rw at the table on top: absolute paths into out. */
static void paths(lua_State *L, const char *key, const char **out)
{
	int t = lua_getfield(L, -1, key);
	if (t != LUA_TNIL) {
		if (t != LUA_TTABLE)
			luaL_error(L, "sandbox.%s: expected a list of paths, got %s",
				   key, lua_typename(L, t));
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		if (n > MB_LAUNCH_MAX_PATHS)
			luaL_error(L, "sandbox.%s: %d paths (at most %d)", key,
				   (int)n, MB_LAUNCH_MAX_PATHS);
		for (lua_Integer i = 1; i <= n; i++) {
			if (lua_rawgeti(L, -1, i) != LUA_TSTRING ||
			    lua_tostring(L, -1)[0] != '/')
				luaL_error(L, "sandbox.%s[%d]: expected an absolute path, "
					   "got %s", key, (int)i, luaL_tolstring(L, -1, NULL));
			out[i - 1] = lua_tostring(L, -1); /* kept by the table */
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
}

static void sandbox_opts(lua_State *L, int idx, struct vu_cfg *v)
{
	static const char *const keys[] = { "ro", "rw", "landlock", "net", NULL };
	int t = lua_getfield(L, idx, "sandbox");
	v->c.confine = t == LUA_TNIL || (t == LUA_TBOOLEAN && lua_toboolean(L, -1));
	if (t == LUA_TTABLE) {
		v->c.confine = true;
		mbl_checkopts(L, lua_gettop(L), "sandbox", keys);
		paths(L, "ro", v->ro);
		paths(L, "rw", v->rw);
		v->c.no_landlock = !mbl_optbool(L, lua_gettop(L), "landlock", 1);
		v->c.host_net = mbl_optbool(L, lua_gettop(L), "net", 0);
		v->c.sandbox_ro = v->ro;
		v->c.sandbox_rw = v->rw;
	} else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
		luaL_error(L, "sandbox: expected false or { ro, rw, landlock }, got %s",
			   lua_typename(L, t));
	}
	if (t != LUA_TNIL && !v->argv[0])
		luaL_error(L, "sandbox: only for spawn = { ARGV... }");
	lua_pop(L, 1);
}

static const struct { const char *name; uint32_t id; } types[] = {
	{ "net", VIRTIO_ID_NET }, { "blk", VIRTIO_ID_BLOCK },
	{ "console", VIRTIO_ID_CONSOLE }, { "rng", VIRTIO_ID_RNG },
	{ "fs", VIRTIO_ID_FS },
};

static void parse(lua_State *L, int idx, void *p)
{
	struct vu_cfg *v = p;
	struct mb_vhost_user_config *c = &v->c;
	c->fd = -1;
	const char *type = mbl_optstr(L, idx, "type", NULL);
	lua_Integer id = mbl_optint(L, idx, "id", 0);
	if (type && id)
		luaL_error(L, "id: give type or id, not both");
	if (type) {
		for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
			if (!strcmp(type, types[i].name))
				c->device_id = types[i].id;
		if (!c->device_id)
			luaL_error(L, "type: \"%s\" is not blk, fs, net, rng or console "
				   "(id = N for any other virtio device)", type);
	} else if (id < 1 || id > 63) {
		luaL_error(L, id ? "id: %d is not a virtio device ID (1-63)"
				 : "type: missing (blk, fs, net, rng, console, or id = N)",
			   (int)id);
	} else {
		c->device_id = (uint32_t)id;
	}
	c->socket = mbl_optstr(L, idx, "socket", NULL);
	int st = lua_getfield(L, idx, "spawn");
	if (st != LUA_TNIL) {
		if (st != LUA_TTABLE)
			luaL_error(L, "spawn: expected a table { PROGRAM, ARGS... }, got %s",
				   lua_typename(L, st));
		lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
		if (n < 1 || n > MB_LAUNCH_MAX_ARGS)
			luaL_error(L, "spawn: %d arguments (1-%d)", (int)n,
				   MB_LAUNCH_MAX_ARGS);
		for (lua_Integer i = 1; i <= n; i++) {
			if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
				luaL_error(L, "spawn[%d]: expected a string, got %s",
					   (int)i, luaL_typename(L, -1));
			v->argv[i - 1] = lua_tostring(L, -1); /* kept by the table */
			lua_pop(L, 1);
		}
		if (v->argv[0][0] != '/')
			luaL_error(L, "spawn[1]: \"%s\" is not an absolute path",
				   v->argv[0]);
	}
	lua_pop(L, 1);
	if (!c->socket && !v->argv[0])
		luaL_error(L, "socket: give socket = PATH or spawn = { ARGV... }");
	if (v->argv[0])
		c->spawn = v->argv;
	sandbox_opts(L, idx, v);
	const char *dma = mbl_optstr(L, idx, "dma", "shared");
	if (strcmp(dma, "shared") && strcmp(dma, "copy"))
		luaL_error(L, "dma: \"%s\" is not \"shared\" (the back-end maps "
			   "guest RAM) or \"copy\" (bounce buffers)", dma);
	c->copy = !strcmp(dma, "copy");
	lua_Integer q = mbl_optint(L, idx, "queues", 0);
	if (q < 0 || q > MB_VIRTIO_MAX_QUEUES)
		luaL_error(L, "queues: %d is not 1-%d", (int)q, MB_VIRTIO_MAX_QUEUES);
	c->queues = (unsigned)q;
	lua_Integer qs = mbl_optint(L, idx, "queue_size", 0);
	if (qs < 0 || qs > MB_VQ_MAX_SIZE || (qs & (qs - 1)))
		luaL_error(L, "queue_size: %d is not a power of two up to %d",
			   (int)qs, MB_VQ_MAX_SIZE);
	c->queue_size = (uint16_t)qs;
	lua_Integer cs = mbl_optint(L, idx, "config_size", 0);
	if (cs < 0 || cs > 256)
		luaL_error(L, "config_size: %d is not 0-256", (int)cs);
	c->config_size = (unsigned)cs;
	c->tag = mbl_optstr(L, idx, "tag", NULL);
	if (c->tag && (!*c->tag || strlen(c->tag) > 36))
		luaL_error(L, "tag: \"%s\" is not 1-36 bytes", c->tag);
	c->name = mbl_optstr(L, idx, "name", NULL);
	mbl_virtio_place_opts(L, idx, &c->mmio_base, &c->mmio_size, &c->irq);
}

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct vu_cfg *v = d->cfg;
	if (mb_vhost_user_attach(mm->m, &v->c, &d->dev))
		return mbl_fail(L, "vhost_user");
	return 0;
}

/* The register window of self (argument 1) and an offset in it. */
static uint64_t reg_addr(lua_State *L, struct mb_device **dev)
{
	*dev = mbl_checkdevice(L, 1);
	lua_Integer off = luaL_checkinteger(L, 2);
	const struct mb_device_range *r = mb_device_range(*dev, 0);
	if (off < 0 || (off & 3) || (uint64_t)off + 4 > r->size)
		luaL_error(L, "offset: 0x%I is not a 32-bit register in the window",
			   off);
	return r->base + (uint64_t)off;
}

static int l_mmio_read(lua_State *L)
{
	struct mb_device *dev;
	uint64_t a = reg_addr(L, &dev);
	uint8_t b[4];
	mb_bus_read(mb_machine_mmio(mb_device_machine(dev)), a, b, 4);
	lua_pushinteger(L, (lua_Integer)mb_io_get(b, 4));
	return 1;
}

static int l_mmio_write(lua_State *L)
{
	struct mb_device *dev;
	uint64_t a = reg_addr(L, &dev);
	uint8_t b[4];
	mb_io_put(b, 4, (uint64_t)luaL_checkinteger(L, 3));
	mb_bus_write(mb_machine_mmio(mb_device_machine(dev)), a, b, 4);
	return 0;
}

/* dev:state(): the virtio state and, for a spawned back-end, sandbox =
 * what confines it (a view: set_state ignores it). */
static int l_state(lua_State *L)
{
	mbl_virtio_state(L);
	struct mb_vhost_user *vu = mb_vhost_user_of(mbl_checkdevice(L, 1));
	char buf[320];
	if (vu && mb_vhost_user_sandbox(vu, buf, sizeof buf) == 0) {
		lua_pushstring(L, buf);
		lua_setfield(L, -2, "sandbox");
	}
	return 1;
}

static const luaL_Reg methods[] = {
	{ "mmio_read", l_mmio_read }, { "mmio_write", l_mmio_write },
	{ NULL, NULL },
};

static const struct mbl_class vu_class = {
	.name = "vhost_user", .keys = keys, .attach = attach,
	.state = l_state, .set_state = mbl_virtio_set_state,
	.methods = methods, .parse = parse, .cfg_size = sizeof(struct vu_cfg),
};

static int l_vhost_user(lua_State *L)
{
	mbl_dev_new(L, &vu_class);
	return 1;
}

void mbl_open_vhost_user(lua_State *L)
{
	static const luaL_Reg ctors[] = {
		{ "vhost_user", l_vhost_user }, { NULL, NULL },
	};
	luaL_setfuncs(L, ctors, 0);
}
