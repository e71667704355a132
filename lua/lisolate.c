/* isolate = true on a device constructor (moonbox/devproc.h): m:add hands
 * the options to a moonbox-device process as a table constructor, with
 * what cannot be written as text (a console, a disk image) replaced by a
 * descriptor the VMM opened. Also timeout = seconds and on_crash =
 * "restart" | "needs_reset" | "stop" | function(dev, why); isolate may be
 * a table { dma = "shared" | "granted" | "message", grants = {...} }. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lua/lmoonbox.h"

bool mbl_in_devproc(lua_State *L)
{
	bool in = lua_getfield(L, LUA_REGISTRYINDEX, MBL_DEVPROC) == LUA_TBOOLEAN;
	lua_pop(L, 1);
	return in;
}

bool mbl_want_isolate(lua_State *L, const struct mbl_class *cls, int idx)
{
	int t = lua_getfield(L, idx, "isolate");
	bool on = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TTABLE)
		luaL_error(L, "isolate: expected a boolean or a table { dma = ..., "
			   "grants = ... }, got %s", lua_typename(L, t));
	if (on && strcmp(cls->name, "pic8259") == 0)
		luaL_error(L, "isolate: the interrupt controller stays in the VMM "
			   "(vCPUs ask it for every interrupt)");
	t = lua_getfield(L, idx, "posted");
	bool posted = lua_toboolean(L, -1);
	if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "ring") &&
	    strcmp(lua_tostring(L, -1), "socket"))
		luaL_error(L, "posted: \"%s\" is not true, \"ring\" or \"socket\"",
			   lua_tostring(L, -1));
	lua_pop(L, 1);
	if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TSTRING)
		luaL_error(L, "posted: expected true, \"ring\" or \"socket\", got %s",
			   lua_typename(L, t));
	if (posted && !on)
		luaL_error(L, "posted: writes are posted to a device process "
			   "(needs isolate = true)");
	if (on && mbl_in_devproc(L))
		on = false; /* we are the device process */
	return on;
}

/* ---- the console relay: device process <-> the VMM's console ----------- */

struct relay {
	struct mb_machine *m;
	struct mb_chr *chr;
	int fd;
	struct mb_devproc *_Atomic p; /* set once the process exists (uart faults) */
	/* A UART's input goes in the relay's form (moonbox/uart16550.h); the
	 * tail of a sequence the socket took only part of goes first next
	 * time, so the process never reads half of one as bytes. */
	bool uart;
	uint8_t owe[MB_UART_RELAY_MAX - 1];
	size_t nowe;
};

static void relay_in(void *opaque, int fd)
{
	struct relay *r = opaque;
	uint8_t buf[4096], out[4096];
	ssize_t n = read(fd, buf, sizeof buf);
	struct mb_devproc *p = atomic_load(&r->p);
	if (n > 0 && __builtin_expect(mb_devproc_wire_faulted(p), 0))
		mb_chr_write(r->chr, out, mb_devproc_wire(p, buf, (size_t)n, out));
	else if (n > 0)
		mb_chr_write(r->chr, buf, (size_t)n);
}

/* A UART's input with a rule on its wire or a 0xff in it: each byte
 * decided once (mb_devproc_relay_rx), then sent; what the socket does not
 * take is lost, as a dead process's input below, but a sequence it cut
 * is finished first on the next call. */
static size_t relay_rx_marked(struct relay *r, struct mb_devproc *p,
			      const uint8_t *buf, size_t len)
{
	uint8_t out[MB_UART_RELAY_MAX - 1 + MB_UART_RELAY_MAX * 256];
	size_t take = len < 256 ? len : 256, owed = r->nowe;
	memcpy(out, r->owe, owed);
	size_t m = owed + mb_devproc_relay_rx(p, buf, take, out + owed);
	ssize_t sent = m ? send(r->fd, out, m, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;
	size_t k = sent > 0 ? (size_t)sent : 0, s = 0, l = owed;
	r->nowe = 0;
	if (!l && m)
		l = mb_uart_relay_seq(out);
	while (s + l <= k && s + l < m) { /* the sequence [s, s + l) holds k */
		s += l;
		l = mb_uart_relay_seq(out + s);
	}
	if (s < k && k < s + l) {
		r->nowe = s + l - k;
		memcpy(r->owe, out + k, r->nowe);
	} else if (k == 0 && owed) {
		r->nowe = owed; /* not even the tail went: still owed */
		memcpy(r->owe, out, owed);
	}
	return take;
}

/* Input from the console for the device: as much as the socket takes. */
static size_t relay_rx(void *dev, const uint8_t *buf, size_t len)
{
	struct relay *r = dev;
	struct mb_devproc *p = atomic_load(&r->p);
	if (__builtin_expect(r->uart && (r->nowe || mb_devproc_wire_faulted(p) ||
					 memchr(buf, MB_UART_RELAY_ESC, len)), 0))
		return relay_rx_marked(r, p, buf, len);
	ssize_t n = send(r->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return n > 0 ? (size_t)n : len; /* a dead process: input dropped */
}

static void relay_free(void *p)
{
	struct relay *r = p;
	close(r->fd);
	free(r);
}

/* A socketpair: the VMM's end relays to chr, the other end is returned. */
static int relay_new(lua_State *L, struct mbl_machine *mm, struct mb_chr *chr,
		     bool uart, struct relay **out)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		luaL_error(L, "console: socketpair: %s", strerror(errno));
	struct relay *r = calloc(1, sizeof *r);
	if (!r || mb_machine_on_destroy(mm->m, relay_free, r)) {
		free(r);
		close(sv[0]);
		close(sv[1]);
		luaL_error(L, "console: out of memory");
	}
	r->m = mm->m, r->chr = chr, r->fd = sv[0], r->uart = uart;
	chr->rx = relay_rx;
	chr->rx_dev = r;
	if (mb_machine_watch(mm->m, sv[0], relay_in, r))
		luaL_error(L, "console: %s", mb_errmsg());
	*out = r;
	return sv[1];
}

/* ---- options as a table constructor ------------------------------------ */

/* The text is gathered as a list of pieces in a table on the stack and
 * joined at the end: a luaL_Buffer cannot be used here, since the walk
 * over the options keeps its own values above the buffer's box (lauxlib
 * grows the box at a fixed stack position), and a module's source makes
 * the text large enough to grow. */
struct parts {
	lua_State *L;
	int t;
	lua_Integer n;
};

static void parts_init(lua_State *L, struct parts *b)
{
	lua_newtable(L);
	*b = (struct parts){ L, lua_gettop(L), 0 };
}

static void parts_addvalue(struct parts *b) /* the string on top */
{
	lua_rawseti(b->L, b->t, ++b->n);
}

static void parts_addstring(struct parts *b, const char *s)
{
	lua_pushstring(b->L, s);
	parts_addvalue(b);
}

static void parts_addchar(struct parts *b, char c)
{
	lua_pushlstring(b->L, &c, 1);
	parts_addvalue(b);
}

static void parts_result(struct parts *b)
{
	luaL_Buffer o;
	lua_State *L = b->L;
	luaL_buffinit(L, &o);
	for (lua_Integer i = 1; i <= b->n; i++) {
		lua_rawgeti(L, b->t, i);
		luaL_addvalue(&o);
	}
	luaL_pushresult(&o);
}

static void put_scalar(lua_State *L, struct parts *b, int idx, const char *key)
{
	idx = lua_absindex(L, idx);
	switch (lua_type(L, idx)) {
	case LUA_TBOOLEAN:
		parts_addstring(b, lua_toboolean(L, idx) ? "true" : "false");
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
		else
			lua_pushfstring(L, "%f", lua_tonumber(L, idx));
		parts_addvalue(b);
		break;
	case LUA_TSTRING: {
		/* printable bytes as they are, the rest as Lua escapes (a
		 * module's source is mostly text: \n and \t stay short) */
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		luaL_Buffer q;
		luaL_buffinit(L, &q);
		luaL_addchar(&q, '"');
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)s[i];
			if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
				luaL_addchar(&q, (char)c);
			} else if (c == '\n' || c == '\t' || c == '"' || c == '\\') {
				luaL_addchar(&q, '\\');
				luaL_addchar(&q, c == '\n' ? 'n' : c == '\t' ? 't' : (char)c);
			} else {
				char e[8];
				snprintf(e, sizeof e, "\\%03u", c);
				luaL_addstring(&q, e);
			}
		}
		luaL_addchar(&q, '"');
		luaL_pushresult(&q);
		parts_addvalue(b);
		break;
	}
	default:
		luaL_error(L, "isolate: %s: a %s cannot cross to a device process",
			   key, luaL_typename(L, idx));
	}
}

static bool skip_key(const char *k)
{
	return !strcmp(k, "isolate") || !strcmp(k, "timeout") ||
	       !strcmp(k, "on_crash") || !strcmp(k, "posted");
}

struct crash {
	struct mbl_machine *mm;
	struct mb_devproc *p;
	const char *why;
};

static void crash_call(void *arg)
{
	struct crash *c = arg;
	lua_State *L = c->mm->L;
	if (!L || !c->mm->m)
		return;
	if (mbl_ref_push(L, c->mm, c) != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_rawgeti(L, -1, 1); /* the function */
	lua_rawgeti(L, -2, 2); /* the device handle */
	lua_pushstring(L, c->why);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		mb_machine_stop(c->mm->m, MB_STOP_ERROR, 1, "on_crash: %s",
				lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

static void crashed(void *ctx, struct mb_devproc *p, const char *why)
{
	struct crash *c = ctx;
	c->p = p, c->why = why;
	mb_machine_call_main(c->mm->m, crash_call, c);
}

/* isolate = { dma = "shared" | "granted" | "message", grants = { { base,
 * size } or { base = , size = }, ... } }: into cfg (grants in g). */
static void dma_opts(lua_State *L, struct mb_devproc_config *cfg,
		     struct mb_dp_grant *g)
{
	if (lua_getfield(L, 3, "isolate") != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	int t = lua_absindex(L, -1);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
		if (strcmp(k, "dma") && strcmp(k, "grants"))
			luaL_error(L, "isolate: unknown option \"%s\" (dma, grants)", k);
		lua_pop(L, 1);
	}
	static const char *const modes[] = { "shared", "granted", "message", NULL };
	cfg->dma = (enum mb_dp_dma)mbl_checkenum(L, t, "dma", "shared", modes);

	int gt = lua_getfield(L, t, "grants");
	if (gt != LUA_TNIL && gt != LUA_TTABLE)
		luaL_error(L, "grants: expected a list of { base, size }, got %s",
			   lua_typename(L, gt));
	lua_Integer n = gt == LUA_TTABLE ? luaL_len(L, -1) : 0;
	if (n > MB_DP_MAX_MEM)
		luaL_error(L, "grants: %d windows, at most %d", (int)n, MB_DP_MAX_MEM);
	for (lua_Integer i = 1; i <= n; i++) {
		if (lua_geti(L, -1, i) != LUA_TTABLE)
			luaL_error(L, "grants[%d]: expected { base, size }, got %s",
				   (int)i, luaL_typename(L, -1));
		for (int f = 0; f < 2; f++) {
			const char *name = f ? "size" : "base";
			if (lua_getfield(L, -1, name) == LUA_TNIL) {
				lua_pop(L, 1);
				lua_geti(L, -1, f + 1);
			}
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
				luaL_error(L, "grants[%d].%s: %s is not an address or "
					   "size", (int)i, name, luaL_tolstring(L, -1, NULL));
			uint64_t v = (uint64_t)lua_tointeger(L, -1);
			*(f ? &g[i - 1].size : &g[i - 1].base) = v;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 2);
	cfg->grants = g;
	cfg->ngrants = (unsigned)n;
}

int mbl_isolate(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	struct mb_machine *m = mm->m;
	const char *kind = d->cls->name;
	struct mb_devproc_config cfg = { .kind = kind };
	struct mb_dp_grant grants[MB_DP_MAX_MEM];
	int fds[8];
	unsigned nfds = 0;
	dma_opts(L, &cfg, grants);
	int first = mb_devproc_first_fd_for(m, &cfg);
	struct relay *relay = NULL;

	static const char *const pols[] = { "stop", "restart", "needs_reset", NULL };
	int t = lua_getfield(L, 3, "on_crash");
	if (t == LUA_TFUNCTION) {
		cfg.on_crash = MB_DP_ON_CRASH_CALL;
	} else if (t == LUA_TNIL || t == LUA_TSTRING) {
		cfg.on_crash = (enum mb_dp_policy)mbl_checkenum(L, 3, "on_crash",
								"stop", pols);
	} else {
		luaL_error(L, "on_crash: expected \"restart\", \"needs_reset\", "
			   "\"stop\" or a function, got %s", luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
		if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) <= 0 ||
		    lua_tonumber(L, -1) > 3600)
			luaL_error(L, "timeout: %s is not a number of seconds (0-3600]",
				   luaL_tolstring(L, -1, NULL));
		cfg.timeout = lua_tonumber(L, -1);
	}
	lua_pop(L, 1);

	/* posted = true or "ring": the shared rings; "socket": messages */
	lua_getfield(L, 3, "posted");
	cfg.posted = lua_toboolean(L, -1);
	cfg.posted_socket = lua_type(L, -1) == LUA_TSTRING &&
			    !strcmp(lua_tostring(L, -1), "socket");
	lua_pop(L, 1);

	struct parts b;
	parts_init(L, &b); /* keeps a value on the stack: index with abs */
	parts_addchar(&b, '{');
	bool virtio = strncmp(kind, "virtio_", 7) == 0, has_mmio = false,
	     has_irq = false;
	lua_pushnil(L);
	while (lua_next(L, 3)) {
		const char *k = lua_tostring(L, -2);
		if (skip_key(k)) {
			lua_pop(L, 1);
			continue;
		}
		has_mmio |= !strcmp(k, "mmio");
		has_irq |= !strcmp(k, "irq");
		if (!strcmp(k, "console")) {
			lua_pop(L, 1);
			continue; /* below */
		}
		if ((!strcmp(k, "image") || !strcmp(k, "file")) &&
		    !strcmp(kind, "virtio_blk")) {
			const char *path = luaL_checkstring(L, -1);
			lua_getfield(L, 3, "readonly");
			bool ro = lua_toboolean(L, -1);
			lua_getfield(L, 3, "disk");
			lua_getfield(L, 3, "overlay");
			ro = ro || lua_toboolean(L, -1) ||
			     (lua_isstring(L, -2) && !strcmp(lua_tostring(L, -2),
							     "overlay"));
			lua_pop(L, 3);
			int fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
			if (fd < 0)
				luaL_error(L, "image: %s: %s", path, strerror(errno));
			fds[nfds] = fd;
			lua_pushfstring(L, "image_fd=%d,image=", first + (int)nfds);
			nfds++;
			parts_addvalue(&b);
			put_scalar(L, &b, -1, k);
			parts_addchar(&b, ',');
			lua_pop(L, 1);
			continue;
		}
		if (!strcmp(k, "image_fd"))
			luaL_error(L, "image_fd: internal to device processes");
		if (!strcmp(kind, "virtio_net") && !strcmp(k, "ifname")) {
			lua_pop(L, 1); /* the VMM opens the tap */
			continue;
		}
		if (!strcmp(kind, "virtio_net") && !strcmp(k, "backend")) {
			/* opened here (a tap needs the VMM's privilege; a socket
			 * path means nothing in the empty root): the process gets
			 * its descriptor and the name */
			struct mb_netbe *be = mbl_net_open_backend(L, 3);
			int fd = mb_netbe_take_fd(be);
			char name[128];
			snprintf(name, sizeof name, "%s", mb_netbe_name(be));
			mb_netbe_free(be);
			if (fd < 0)
				luaL_error(L, "backend: %s", mb_errmsg());
			fds[nfds] = fd;
			lua_pushfstring(L, "backend_fd=%d,backend_name=", first + (int)nfds);
			nfds++;
			parts_addvalue(&b);
			lua_pushstring(L, name);
			put_scalar(L, &b, -1, k);
			lua_pop(L, 1);
			parts_addchar(&b, ',');
			lua_pop(L, 1);
			continue;
		}
		if (!strcmp(k, "module") && !strcmp(kind, "device")) {
			/* the process gets the text, not the path; the name stays
			 * for its messages */
			parts_addstring(&b, "[\"source\"]=");
			mbl_module_read(L, luaL_checkstring(L, -1));
			put_scalar(L, &b, -1, k);
			lua_pop(L, 1);
			parts_addstring(&b, ",[\"module\"]=");
			put_scalar(L, &b, -1, k);
			parts_addchar(&b, ',');
			lua_pop(L, 1);
			continue;
		}
		lua_pushfstring(L, "[\"%s\"]=", k);
		parts_addvalue(&b);
		if (lua_type(L, -1) == LUA_TTABLE) {
			int tt = lua_absindex(L, -1);
			parts_addchar(&b, '{');
			lua_pushnil(L);
			while (lua_next(L, tt)) {
				if (lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2))
					lua_pushfstring(L, "[%I]=",
							(LUAI_UACINT)lua_tointeger(L, -2));
				else if (lua_type(L, -2) == LUA_TSTRING)
					lua_pushfstring(L, "[\"%s\"]=", lua_tostring(L, -2));
				else
					luaL_error(L, "isolate: %s: only named or numbered "
						   "fields cross", k);
				parts_addvalue(&b);
				put_scalar(L, &b, -1, k);
				parts_addchar(&b, ',');
				lua_pop(L, 1);
			}
			parts_addchar(&b, '}');
		} else {
			put_scalar(L, &b, -1, k);
		}
		parts_addchar(&b, ',');
		lua_pop(L, 1);
	}
	if (!strcmp(kind, "uart16550") || !strcmp(kind, "virtio_console")) {
		/* The console stays here (a buffer's output(), a function, the
		 * terminal); the process writes to a relay socket. */
		d->con = mbl_console(L, mm, 3, "console");
		fds[nfds] = relay_new(L, mm, d->con, !strcmp(kind, "uart16550"), &relay);
		lua_pushfstring(L, "console={fd=%d},", first + (int)nfds);
		nfds++;
		parts_addvalue(&b);
	}
	if (virtio && !has_mmio) { /* placed here: the process has no view */
		uint64_t base;
		if (mb_machine_alloc_mmio(m, 0x1000, &base))
			return mbl_fail(L, kind);
		lua_pushfstring(L, "mmio={base=%I,size=4096},", (LUAI_UACINT)base);
		parts_addvalue(&b);
	}
	if (virtio && !has_irq) {
		unsigned line;
		if (mb_machine_alloc_irq(m, &line))
			return mbl_fail(L, kind);
		mb_machine_release_irq(m, line); /* the proxy claims it */
		lua_pushfstring(L, "irq=%d,", (int)line);
		parts_addvalue(&b);
	}
	parts_addchar(&b, '}');
	parts_result(&b);
	cfg.opts = lua_tostring(L, -1);
	cfg.console = d->con;
	cfg.fds = fds;
	cfg.nfds = nfds;
	lua_getfield(L, 3, "name");
	cfg.name = lua_tostring(L, -1);
	struct crash *c = NULL;
	if (cfg.on_crash == MB_DP_ON_CRASH_CALL) {
		c = calloc(1, sizeof *c);
		if (!c || mb_machine_on_destroy(m, free, c)) {
			free(c);
			return luaL_error(L, "%s: out of memory", kind);
		}
		c->mm = mm;
		lua_createtable(L, 2, 0);
		lua_getfield(L, 3, "on_crash");
		lua_rawseti(L, -2, 1);
		lua_pushvalue(L, 2);
		lua_rawseti(L, -2, 2);
		mbl_ref_set(L, mm, c, -1);
		lua_pop(L, 1);
		cfg.crashed = crashed;
		cfg.ctx = c;
	}
	int rc = mb_devproc_attach(m, &cfg, &d->dev);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]); /* the device process keeps its own copies */
	if (!rc && relay)
		atomic_store(&relay->p, mb_devproc_of(d->dev));
	if (rc)
		return luaL_error(L, "%s: %s", kind, mb_errmsg());
	return 0;
}

/* dev:revoke(base): the grant at base is taken back (docs/devproc.md). */
int mbl_isolate_revoke(lua_State *L, struct mb_device *dev)
{
	struct mb_devproc *p = dev ? mb_devproc_of(dev) : NULL;
	lua_Integer base = luaL_checkinteger(L, 2);
	if (!p)
		return luaL_error(L, "revoke: %s is not isolated (isolate = { dma = "
				  "\"granted\", ... })", dev ? mb_device_name(dev) : "?");
	if (mb_devproc_revoke(p, (uint64_t)base))
		return luaL_error(L, "revoke: %s", mb_errmsg());
	return 0;
}

/* dev:grant(base, size) or dev:grant { base, size } / { base = , size = }:
 * a window granted at run time, as one of the grants option's. */
int mbl_isolate_grant(lua_State *L, struct mb_device *dev)
{
	struct mb_devproc *p = dev ? mb_devproc_of(dev) : NULL;
	uint64_t v[2];
	for (int f = 0; f < 2; f++) {
		const char *name = f ? "size" : "base";
		if (lua_istable(L, 2)) {
			if (lua_getfield(L, 2, name) == LUA_TNIL) {
				lua_pop(L, 1);
				lua_geti(L, 2, f + 1);
			}
		} else {
			lua_pushvalue(L, 2 + f);
		}
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
			return luaL_error(L, "grant: %s: %s is not an address or size", name,
					  luaL_tolstring(L, -1, NULL));
		v[f] = (uint64_t)lua_tointeger(L, -1);
		lua_pop(L, 1);
	}
	if (!p)
		return luaL_error(L, "grant: %s is not isolated (isolate = { dma = "
				  "\"granted\", ... })", dev ? mb_device_name(dev) : "?");
	if (mb_devproc_grant(p, v[0], v[1]))
		return luaL_error(L, "grant: %s", mb_errmsg());
	return 0;
}

void mbl_isolate_annotate(lua_State *L, struct mb_device *dev)
{
	struct mb_devproc *p = mb_devproc_of(dev);
	if (!p)
		return;
	int t = lua_gettop(L);
	lua_pushstring(L, mb_devproc_sandbox(p));
	lua_setfield(L, t, "sandbox");
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, mb_devproc_pid(p));
	lua_setfield(L, -2, "pid");
	lua_pushboolean(L, mb_devproc_alive(p));
	lua_setfield(L, -2, "alive");
	lua_pushinteger(L, mb_devproc_restarts(p));
	lua_setfield(L, -2, "restarts");
	lua_pushstring(L, mb_devproc_why(p));
	lua_setfield(L, -2, "why");
	uint64_t posted, flushes;
	mb_devproc_posted(p, &posted, &flushes);
	lua_pushinteger(L, (lua_Integer)posted);
	lua_setfield(L, -2, "posted");
	lua_pushinteger(L, (lua_Integer)flushes);
	lua_setfield(L, -2, "flushes");
	uint64_t bells, replayed;
	lua_pushboolean(L, mb_devproc_post_ring(p, &bells, &replayed));
	lua_setfield(L, -2, "ring");
	lua_pushinteger(L, (lua_Integer)bells);
	lua_setfield(L, -2, "doorbells_rung");
	lua_pushinteger(L, (lua_Integer)replayed);
	lua_setfield(L, -2, "replayed");
	unsigned doorbells;
	const char *irq;
	mb_devproc_doorbells(p, &doorbells, &irq);
	lua_pushinteger(L, doorbells);
	lua_setfield(L, -2, "doorbells");
	lua_pushstring(L, irq);
	lua_setfield(L, -2, "interrupts");
	if (!strcmp(mb_device_kind(dev), "device")) { /* a Lua module's log */
		char (*lines)[MB_DP_LOG_TEXT] = malloc(MB_DP_LOG_KEEP * sizeof *lines);
		unsigned n = lines ? mb_devproc_log(p, lines, MB_DP_LOG_KEEP) : 0;
		lua_createtable(L, (int)n, 0);
		for (unsigned i = 0; i < n; i++) {
			lua_pushstring(L, lines[i]);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		free(lines);
		lua_setfield(L, -2, "log");
	}
	struct mb_dp_dma_info di;
	mb_devproc_dma_info(p, &di);
	static const char *const modes[] = { "shared", "granted", "message" };
	lua_createtable(L, 0, 8);
	lua_pushstring(L, modes[di.mode]);
	lua_setfield(L, -2, "mode");
	lua_createtable(L, (int)di.ngrants, 0);
	for (unsigned i = 0; i < di.ngrants; i++) {
		lua_createtable(L, 0, 3);
		lua_pushinteger(L, (lua_Integer)di.grant[i].base);
		lua_setfield(L, -2, "base");
		lua_pushinteger(L, (lua_Integer)di.grant[i].size);
		lua_setfield(L, -2, "size");
		lua_pushboolean(L, di.revoked[i]);
		lua_setfield(L, -2, "revoked");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "grants");
	lua_pushinteger(L, (lua_Integer)di.reads);
	lua_setfield(L, -2, "reads");
	lua_pushinteger(L, (lua_Integer)di.writes);
	lua_setfield(L, -2, "writes");
	lua_pushinteger(L, (lua_Integer)di.bytes);
	lua_setfield(L, -2, "bytes");
	lua_pushinteger(L, (lua_Integer)di.refused);
	lua_setfield(L, -2, "refused");
	lua_pushstring(L, di.why);
	lua_setfield(L, -2, "why");
	lua_setfield(L, -2, "dma");
	lua_setfield(L, t, "isolated");
}
