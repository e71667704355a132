/* Lua bindings of the virtio I/O devices: mb.virtio_console,
 * mb.virtio_net (moonbox/virtio_console.h, virtio_net.h) and mb.netpair().
 * Placement is the C attach function's, as for mb.virtio_blk. */
#include <stdio.h>
#include <string.h>

#include "lua/lmoonbox.h"
#define NETEND "moonbox.netend"

/* ---- virtio-console ---------------------------------------------------------- */

struct con_cfg {
	struct mb_virtio_console_attach_config a;
	struct mb_chr *chr; /* once added: the console, owned by the machine */
};

static const char *const con_keys[] = { "name", "console", "cols", "rows", "mmio",
					"irq", NULL };

static void con_parse(lua_State *L, int idx, void *p)
{
	struct con_cfg *c = p;
	int t = lua_getfield(L, idx, "console");
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TTABLE && t != LUA_TFUNCTION)
		luaL_error(L, "console: expected a string, table or function, got %s",
			   lua_typename(L, t));
	lua_Integer cols = mbl_optint(L, idx, "cols", 0);
	lua_Integer rows = mbl_optint(L, idx, "rows", 0);
	if (cols < 0 || cols > 0xffff || rows < 0 || rows > 0xffff)
		luaL_error(L, "%s: %d is not 0-65535", cols < 0 || cols > 0xffff
			   ? "cols" : "rows", (int)(cols < 0 || cols > 0xffff
			   ? cols : rows));
	if (!cols != !rows)
		luaL_error(L, "%s: give cols and rows together", cols ? "rows" : "cols");
	c->a.name = mbl_optstr(L, idx, "name", NULL);
	c->a.cols = (uint16_t)cols, c->a.rows = (uint16_t)rows;
	mbl_virtio_place_opts(L, idx, &c->a.mmio_base, &c->a.mmio_size, &c->a.irq);
}

static int con_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct con_cfg *c = d->cfg;
	struct mb_virtio_console_attach_config a = c->a;
	a.chr = c->chr = mbl_console(L, mm, 3, "console");
	if (mb_virtio_console_attach(mm->m, &a, &d->dev))
		return mbl_fail(L, "virtio_console");
	return 0;
}

static struct mb_chr *con_chr(lua_State *L)
{
	struct mbl_dev *d = mbl_checkdev(L, 1);
	if (!d->mm || !d->mm->m || !d->dev)
		luaL_error(L, "%s: not part of a running machine (use m:add)",
			   d->cls->name);
	return d->con ? d->con : ((struct con_cfg *)d->cfg)->chr;
}

static int con_output(lua_State *L)
{
	return mbl_console_output(L, con_chr(L));
}

static int con_input(lua_State *L)
{
	return mbl_console_input(L, con_chr(L));
}

static const luaL_Reg con_methods[] = {
	{ "output", con_output }, { "input", con_input }, { NULL, NULL },
};
static const struct mbl_class con_class = {
	.name = "virtio_console", .keys = con_keys, .attach = con_attach,
	.state = mbl_virtio_state, .set_state = mbl_virtio_set_state,
	.methods = con_methods,
	.cfg_size = sizeof(struct con_cfg), .parse = con_parse,
};

static int l_virtio_console(lua_State *L)
{
	mbl_dev_new(L, &con_class);
	return 1;
}

/* ---- network pair ends: mb.netpair() ----------------------------------------------- */

struct netend {
	struct mb_netbe *be; /* NULL once a device took it */
};

static int netend_gc(lua_State *L)
{
	struct netend *e = luaL_checkudata(L, 1, NETEND);
	mb_netbe_free(e->be);
	e->be = NULL;
	return 0;
}

static int netend_tostring(lua_State *L)
{
	struct netend *e = luaL_checkudata(L, 1, NETEND);
	lua_pushstring(L, e->be ? "moonbox.netend" : "moonbox.netend (in use)");
	return 1;
}

/* mb.netpair() -> a, b: two ends of one virtual cable, for two machines
 * in this process: mb.virtio_net { backend = a } and { backend = b }. */
static int l_netpair(lua_State *L)
{
	struct netend *a = lua_newuserdatauv(L, sizeof *a, 0);
	a->be = NULL;
	luaL_setmetatable(L, NETEND);
	struct netend *b = lua_newuserdatauv(L, sizeof *b, 0);
	b->be = NULL;
	luaL_setmetatable(L, NETEND);
	if (mb_netbe_pair(&a->be, &b->be))
		return mbl_fail(L, "netpair");
	return 2;
}

/* ---- virtio-net ------------------------------------------------------------ */

static const char *const net_keys[] = { "name", "backend", "ifname", "mac", "mmio",
					"irq", NULL };
static const char *const sock_keys[] = { "socket", "listen", NULL };

static bool parse_mac(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	char end;
	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
		   &b[5], &end) != 6 || strlen(s) != 17)
		return false;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return true;
}

/* The backend the options name; errors leave nothing behind. Inside a
 * device process: the descriptor the VMM opened (backend_fd). */
struct mb_netbe *mbl_net_open_backend(lua_State *L, int idx)
{
	struct mb_netbe *be = NULL;
	if (mbl_in_devproc(L) && lua_getfield(L, idx, "backend_fd") != LUA_TNIL) {
		be = mb_netbe_fd((int)luaL_checkinteger(L, -1),
				 mbl_optstr(L, idx, "backend_name", "socket"));
		if (!be)
			mbl_fail(L, "backend");
		lua_pop(L, 1);
		return be;
	}
	if (mbl_in_devproc(L))
		lua_pop(L, 1);
	int t = lua_getfield(L, idx, "backend");
	if (t == LUA_TSTRING) {
		be = mb_netbe_tap(mbl_optstr(L, idx, "ifname", ""));
	} else if (t == LUA_TTABLE) {
		be = mb_netbe_socket(mbl_optstr(L, -1, "socket", ""),
				     mbl_optbool(L, -1, "listen", 0));
	} else {
		struct netend *e = luaL_checkudata(L, -1, NETEND);
		if (!e->be)
			luaL_error(L, "backend: this mb.netpair() end is already in use");
		be = e->be;
		e->be = NULL;
	}
	if (!be)
		mbl_fail(L, "backend");
	lua_pop(L, 1);
	return be;
}

static void net_parse(lua_State *L, int idx, void *p)
{
	struct mb_virtio_net_attach_config *c = p;
	int t = lua_getfield(L, idx, "backend");
	bool tap = false;
	if (t == LUA_TSTRING) {
		if (strcmp(lua_tostring(L, -1), "tap") != 0)
			luaL_error(L, "backend: \"%s\" is not \"tap\", { socket = "
					  "PATH, listen = BOOL } or an end of "
					  "mb.netpair()", lua_tostring(L, -1));
		tap = true;
	} else if (t == LUA_TTABLE) {
		mbl_checkopts(L, -1, "backend", sock_keys);
		const char *path = mbl_optstr(L, -1, "socket", NULL);
		if (!path || !*path)
			luaL_error(L, "backend.socket: missing (a Unix socket "
					  "path)");
		if (strlen(path) >= 108)
			luaL_error(L, "backend.socket: \"%s\" is too long for a "
					  "Unix socket path", path);
		mbl_optbool(L, -1, "listen", 0);
	} else if (t == LUA_TNIL) {
		if (!mbl_in_devproc(L) || lua_getfield(L, idx, "backend_fd") == LUA_TNIL)
			luaL_error(L, "backend: missing (\"tap\", { socket = PATH, "
					  "listen = BOOL } or an end of mb.netpair())");
		lua_pop(L, 1);
	} else {
		struct netend *e = luaL_testudata(L, -1, NETEND);
		if (!e)
			luaL_error(L, "backend: expected \"tap\", a table or an "
					  "end of mb.netpair(), got %s",
					  luaL_typename(L, -1));
		if (!e->be)
			luaL_error(L, "backend: this mb.netpair() end is "
					  "already in use");
	}
	lua_pop(L, 1);
	const char *ifname = mbl_optstr(L, idx, "ifname", NULL);
	if (ifname && !tap)
		luaL_error(L, "ifname: only for backend = \"tap\"");
	if (ifname && strlen(ifname) > 15)
		luaL_error(L, "ifname: \"%s\" is longer than 15 bytes", ifname);
	const char *mac = mbl_optstr(L, idx, "mac", NULL);
		if (mac && !parse_mac(mac, c->mac))
		luaL_error(L, "mac: \"%s\" is not a MAC address (like "
				  "\"52:54:00:12:34:56\")", mac);
	if (mac && (c->mac[0] & 1))
		luaL_error(L, "mac: \"%s\" is a multicast address", mac);
	c->name = mbl_optstr(L, idx, "name", NULL);
	mbl_virtio_place_opts(L, idx, &c->mmio_base, &c->mmio_size, &c->irq);
}

static int net_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_virtio_net_attach_config c = *(struct mb_virtio_net_attach_config *)
						       d->cfg;
	c.be = mbl_net_open_backend(L, 3);
	if (mb_virtio_net_attach(mm->m, &c, &d->dev))
		return mbl_fail(L, "virtio_net");
	return 0;
}

/* The common state, the MAC as text, the backend's name and link. */
static int net_state(lua_State *L)
{
	mbl_virtio_state(L);
	struct mbl_dev *d = mbl_checkdev(L, 1);
	lua_getfield(L, -1, "mac");
	if (lua_rawlen(L, -1) != 6) {
		lua_pop(L, 1);
		return 1;
	}
	const uint8_t *m = (const uint8_t *)lua_tostring(L, -1);
	char mac[18];
	snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2],
		 m[3], m[4], m[5]);
	lua_pop(L, 1);
	lua_pushstring(L, mac);
	lua_setfield(L, -2, "mac");
	if (mb_devproc_of(d->dev))
		return 1; /* the backend is the process's (isolated.pid) */
	struct mb_virtio_net *n = mb_virtio_dev_model(d->dev);
	struct mb_netbe *be = mb_virtio_net_backend(n);
	lua_pushstring(L, mb_netbe_name(be));
	lua_setfield(L, -2, "backend");
	lua_pushboolean(L, mb_netbe_connected(be));
	lua_setfield(L, -2, "connected");
	return 1;
}

/* state() shows the MAC as text, the state holds its 6 bytes: either is
 * taken back. */
static int net_set_state(lua_State *L)
{
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	uint8_t mac[6];
	if (lua_getfield(L, 2, "mac") == LUA_TSTRING && lua_rawlen(L, -1) != 6) {
		const char *s = lua_tostring(L, -1);
		if (!parse_mac(s, mac))
			return luaL_error(L, "set_state: mac: \"%s\" is not a MAC "
					  "address (like \"52:54:00:12:34:56\")", s);
		lua_newtable(L); /* a copy: the caller's table stays text */
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -4);
		}
		lua_pushlstring(L, (const char *)mac, 6);
		lua_setfield(L, -2, "mac");
		lua_replace(L, 2);
	}
	lua_settop(L, 2);
	return mbl_virtio_set_state(L);
}

static const struct mbl_class net_class = {
	.name = "virtio_net", .keys = net_keys, .attach = net_attach,
	.state = net_state, .set_state = net_set_state, .parse = net_parse,
	.cfg_size = sizeof(struct mb_virtio_net_attach_config),
};

static int l_virtio_net(lua_State *L)
{
	mbl_dev_new(L, &net_class);
	return 1;
}

void mbl_open_virtio_io(lua_State *L)
{
	static const luaL_Reg ctors[] = {
		{ "virtio_console", l_virtio_console },
		{ "virtio_net", l_virtio_net },
		{ "netpair", l_netpair },
		{ NULL, NULL },
	};
	static const luaL_Reg netend_meta[] = {
		{ "__gc", netend_gc }, { "__close", netend_gc },
		{ "__tostring", netend_tostring }, { NULL, NULL },
	};
	if (luaL_newmetatable(L, NETEND))
		luaL_setfuncs(L, netend_meta, 0);
	lua_pop(L, 1);
	luaL_setfuncs(L, ctors, 0);
}
