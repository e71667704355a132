/* Lua bindings of the virtio I/O devices: mb.virtio_console,
 * mb.virtio_net and mb.netpair(). Placement works as for mb.virtio_blk
 * (lua/lvirtio.c): a free 4K window and interrupt line unless mmio/irq
 * are given, and the device announced for boot_linux's virtio_mmio.device=. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/lvirtio.h"
#include "moonbox/virtio_console.h"
#include "moonbox/virtio_net.h"
#define NETEND "moonbox.netend"

enum kind { CONSOLE, NET };

struct iodev {
	struct mbl_vdev v;  /* first: the placement helpers see this */
	enum kind kind;
	struct mb_chr *chr; /* CONSOLE */
	int pollfd;         /* NET: the backend's fd on the event loop, or -1 */
	uint8_t mac[6];     /* NET */
};

static void iodev_dev_free(struct mbl_vdev *p)
{
	struct iodev *v = (struct iodev *)p;
	if (v->pollfd >= 0)
		mb_machine_unwatch(p->m, v->pollfd);
	if (v->kind == CONSOLE)
		mb_virtio_console_free(p->dev); /* detaches from the backend */
	else
		mb_virtio_net_free(p->dev);     /* and its backend */
}

static struct iodev *iodev_new(lua_State *L, struct mbl_machine *mm,
			       enum kind k, void *dev)
{
	struct iodev *v = calloc(1, sizeof *v);
	if (!v)
		luaL_error(L, "virtio: out of memory");
	v->kind = k;
	v->pollfd = -1;
	v->v.m = mm->m;
	v->v.dev = dev;
	v->v.dev_free = iodev_dev_free;
	return v;
}

/* ---- virtio-console ---------------------------------------------------------------- */

static const char *const con_keys[] = { "console", "cols", "rows", "mmio", "irq",
					NULL };

static int con_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_virtio_console_config c = {
		.chr = mbl_console(L, mm, 3, "console"),
		.cols = (uint16_t)mbl_optint(L, 3, "cols", 0),
		.rows = (uint16_t)mbl_optint(L, 3, "rows", 0),
	};
	struct mb_virtio_console *con = mb_virtio_console_new(&c);
	if (!con)
		return mbl_fail(L, "virtio-console");
	struct iodev *v = iodev_new(L, mm, CONSOLE, con);
	v->chr = c.chr;
	mbl_vdev_place(L, &v->v, &mb_virtio_console_ops,
		       mb_virtio_console_features(con));
	mb_virtio_console_bind(con, v->v.t);
	mb_machine_on_destroy(mm->m, mbl_vdev_free, v);
	d->impl = v;
	return 0;
}

static int con_state(lua_State *L)
{
	struct iodev *v = (struct iodev *)mbl_vdev_attached(L);
	struct mb_virtio_console_stats s;
	mb_virtio_console_stats(v->v.dev, &s);
	mbl_vdev_push_state(L, &v->v);
	SETI("tx_bytes", s.tx_bytes); SETI("rx_bytes", s.rx_bytes);
	SETI("emerg_bytes", s.emerg_bytes); SETI("rx_stalls", s.rx_stalls);
	lua_setfield(L, -2, "stats");
	return 1;
}

static int con_output(lua_State *L)
{
	return mbl_console_output(L, ((struct iodev *)mbl_vdev_attached(L))->chr);
}

static int con_input(lua_State *L)
{
	return mbl_console_input(L, ((struct iodev *)mbl_vdev_attached(L))->chr);
}

static const luaL_Reg con_methods[] = {
	{ "output", con_output }, { "input", con_input }, { NULL, NULL },
};
static const struct mbl_class con_class = { "virtio_console", con_keys, con_attach,
					    con_state, con_methods, 0, NULL };

static int l_virtio_console(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "virtio_console", con_keys);
	int t = lua_getfield(L, 1, "console");
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TTABLE && t != LUA_TFUNCTION)
		return luaL_error(L, "console: expected a string, table or function, "
				  "got %s", lua_typename(L, t));
	lua_Integer cols = mbl_optint(L, 1, "cols", 0);
	lua_Integer rows = mbl_optint(L, 1, "rows", 0);
	if (cols < 0 || cols > 0xffff || rows < 0 || rows > 0xffff)
		return luaL_error(L, "%s: %d is not 0-65535", cols < 0 || cols > 0xffff
				  ? "cols" : "rows", (int)(cols < 0 || cols > 0xffff
				  ? cols : rows));
	if (!cols != !rows)
		return luaL_error(L, "%s: give cols and rows together",
				  cols ? "rows" : "cols");
	mbl_vdev_check_placement(L, 1);
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

/* ---- virtio-net ---------------------------------------------------------------------- */

static const char *const net_keys[] = { "backend", "ifname", "mac", "mmio", "irq",
					NULL };
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

/* 52:54:00 (the locally administered prefix QEMU made usual) and 24 bits
 * from the process id and a counter: unique within this process, and
 * across processes unless their ids collide modulo 65536. */
static void default_mac(uint8_t mac[6])
{
	static unsigned counter;
	unsigned pid = (unsigned)getpid() & 0xffff;
	mac[0] = 0x52, mac[1] = 0x54, mac[2] = 0x00;
	mac[3] = (uint8_t)(pid >> 8), mac[4] = (uint8_t)pid;
	mac[5] = (uint8_t)counter++;
}

/* The backend the options name; errors leave nothing behind. */
static struct mb_netbe *open_backend(lua_State *L, int idx)
{
	struct mb_netbe *be = NULL;
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

static void on_frames(void *opaque, int fd)
{
	mb_virtio_net_poll(opaque);
}

static int net_attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_virtio_net_config c = { .be = NULL };
	const char *mac = mbl_optstr(L, 3, "mac", NULL);
	if (mac)
		parse_mac(mac, c.mac);
	else
		default_mac(c.mac);
	c.be = open_backend(L, 3);
	struct mb_virtio_net *n = mb_virtio_net_new(&c);
	if (!n) {
		mb_netbe_free(c.be);
		return mbl_fail(L, "virtio-net");
	}
	struct iodev *v = iodev_new(L, mm, NET, n);
	memcpy(v->mac, c.mac, 6);
	mbl_vdev_place(L, &v->v, &mb_virtio_net_ops, mb_virtio_net_features(n));
	mb_virtio_net_bind(n, v->v.t);
	int fd = mb_netbe_pollfd(c.be);
	if (mb_machine_watch(mm->m, fd, on_frames, n)) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		mb_bus_unregister(mb_machine_mmio(mm->m), v->v.base);
		mbl_vdev_free(v);
		return luaL_error(L, "virtio-net: %s", msg);
	}
	v->pollfd = fd;
	mb_machine_on_destroy(mm->m, mbl_vdev_free, v);
	d->impl = v;
	return 0;
}

static int net_state(lua_State *L)
{
	struct iodev *v = (struct iodev *)mbl_vdev_attached(L);
	struct mb_virtio_net_stats s;
	mb_virtio_net_stats(v->v.dev, &s);
	mbl_vdev_push_state(L, &v->v);
	SETI("rx_frames", s.rx_frames); SETI("rx_bytes", s.rx_bytes);
	SETI("rx_dropped", s.rx_dropped); SETI("rx_stalls", s.rx_stalls);
	SETI("tx_frames", s.tx_frames); SETI("tx_bytes", s.tx_bytes);
	SETI("tx_dropped", s.tx_dropped);
	lua_setfield(L, -2, "stats");
	char mac[18];
	snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", v->mac[0],
		 v->mac[1], v->mac[2], v->mac[3], v->mac[4], v->mac[5]);
	SETS("mac", mac);
	struct mb_netbe *be = mb_virtio_net_backend(v->v.dev);
	SETS("backend", mb_netbe_name(be));
	SETB("connected", mb_netbe_connected(be));
	return 1;
}

static const struct mbl_class net_class = { "virtio_net", net_keys, net_attach,
					    net_state, NULL, 0, NULL };

static int l_virtio_net(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	mbl_checkopts(L, 1, "virtio_net", net_keys);
	int t = lua_getfield(L, 1, "backend");
	bool tap = false;
	if (t == LUA_TSTRING) {
		if (strcmp(lua_tostring(L, -1), "tap") != 0)
			return luaL_error(L, "backend: \"%s\" is not \"tap\", { socket = "
					  "PATH, listen = BOOL } or an end of "
					  "mb.netpair()", lua_tostring(L, -1));
		tap = true;
	} else if (t == LUA_TTABLE) {
		mbl_checkopts(L, -1, "backend", sock_keys);
		const char *path = mbl_optstr(L, -1, "socket", NULL);
		if (!path || !*path)
			return luaL_error(L, "backend.socket: missing (a Unix socket "
					  "path)");
		if (strlen(path) >= 108)
			return luaL_error(L, "backend.socket: \"%s\" is too long for a "
					  "Unix socket path", path);
		mbl_optbool(L, -1, "listen", 0);
	} else if (t == LUA_TNIL) {
		return luaL_error(L, "backend: missing (\"tap\", { socket = PATH, "
				  "listen = BOOL } or an end of mb.netpair())");
	} else {
		struct netend *e = luaL_testudata(L, -1, NETEND);
		if (!e)
			return luaL_error(L, "backend: expected \"tap\", a table or an "
					  "end of mb.netpair(), got %s",
					  luaL_typename(L, -1));
		if (!e->be)
			return luaL_error(L, "backend: this mb.netpair() end is "
					  "already in use");
	}
	lua_pop(L, 1);
	const char *ifname = mbl_optstr(L, 1, "ifname", NULL);
	if (ifname && !tap)
		return luaL_error(L, "ifname: only for backend = \"tap\"");
	if (ifname && strlen(ifname) > 15)
		return luaL_error(L, "ifname: \"%s\" is longer than 15 bytes", ifname);
	const char *mac = mbl_optstr(L, 1, "mac", NULL);
	uint8_t m[6];
	if (mac && !parse_mac(mac, m))
		return luaL_error(L, "mac: \"%s\" is not a MAC address (like "
				  "\"52:54:00:12:34:56\")", mac);
	if (mac && (m[0] & 1))
		return luaL_error(L, "mac: \"%s\" is a multicast address", mac);
	mbl_vdev_check_placement(L, 1);
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
