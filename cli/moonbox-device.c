/*
 * moonbox-device: one device model in its own process (moonbox/devproc.h,
 * docs/devproc.md). Started by the VMM with descriptors only: it reads the
 * CREATE request, maps guest RAM from the memfds it names (checked first),
 * builds the device with the same Lua constructor and m:add as in process,
 * in a fresh Lua state without io, os, package or debug, on a headless
 * machine (no KVM), confines itself, reports, then serves accesses on its
 * channels (one thread each) and requests on its control socket. It exits
 * when the control socket closes. Every byte it receives is checked.
 */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "lua/lmoonbox.h"
#include "moonbox/devproc.h"

int luaopen_moonbox(lua_State *L);
void mbl_push_machine(lua_State *L, struct mb_machine *m);

static struct mb_machine *M;
static struct mb_device *D;
static struct mb_dp_report rep;
static unsigned nchan;
static int first_backend;
static unsigned nfds_total;
static pthread_mutex_t seq_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seq;
static void (*ack_fn[64])(void *);
static void *ack_arg[64];
/* The reply an access on this thread is building: what the access causes
 * (line changes, a stop) goes back with it. */
static __thread struct mb_dp_reply *cur;

static void send_event(uint16_t cmd, const void *pl, size_t len)
{
	uint8_t buf[sizeof(struct mb_dp_hdr) + 256];
	struct mb_dp_hdr *h = (void *)buf;
	*h = (struct mb_dp_hdr){ .cmd = cmd, .size = (uint32_t)(sizeof *h + len),
				 .flags = MB_DP_F_NO_REPLY };
	memcpy(h + 1, pl, len);
	send(MB_DP_FD_EVENTS, buf, h->size, MSG_NOSIGNAL);
}

/* ---- the headless machine's controller: lines go to the VMM ------------- */

static void set_line(void *intc, unsigned line, int level)
{
	struct mb_dp_irq e = { .line = line, .level = level != 0 };
	/* One ordered path for every change, whichever thread makes it: the
	 * events socket, in sequence (the device's own lock orders calls). */
	pthread_mutex_lock(&seq_lock);
	e.seq = ++seq;
	send_event(MB_DP_IRQ_LEVEL, &e, sizeof e);
	pthread_mutex_unlock(&seq_lock);
	if (cur)
		cur->irq_seq = e.seq;
}

static bool no_pending(void *intc) { return false; }
static int no_ack(void *intc) { return -1; }

static void on_ack(void *intc, unsigned line, void (*fn)(void *), void *opaque)
{
	if (line < 64) {
		ack_fn[line] = fn, ack_arg[line] = opaque;
		rep.ack_lines |= 1ull << line;
	}
}

static const struct mb_intc_ops intc = { no_pending, no_ack, set_line, on_ack };

static void on_stop(void *ctx, enum mb_stop reason, int code, const char *msg)
{
	struct mb_dp_stop s = { .reason = reason, .code = code };
	snprintf(s.msg, sizeof s.msg, "%s", msg);
	if (cur && !cur->stopped) {
		cur->stopped = 1;
		cur->stop = s;
		return;
	}
	send_event(MB_DP_STOP, &s, sizeof s);
}

/* Console output written during an access goes back with its reply. */
static bool out_sink(const void *b, size_t len)
{
	if (!cur || len > MB_DP_SIDE_OUT - cur->nout)
		return false; /* the relay socket takes it */
	memcpy(cur->out + cur->nout, b, len);
	cur->nout += (uint32_t)len;
	return true;
}

/* ---- accesses ------------------------------------------------------------ */

static void *chan_thread(void *arg)
{
	int fd = (int)(intptr_t)arg;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_access a;
	} q;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_reply r;
	} a;
	for (;;) {
		ssize_t n = recv(fd, &q, sizeof q, MSG_TRUNC);
		if (n == 0 || (n < 0 && errno != EINTR))
			_exit(0); /* the VMM is gone */
		if (n != sizeof q || q.h.size != sizeof q ||
		    (q.h.cmd != MB_DP_REGION_READ && q.h.cmd != MB_DP_REGION_WRITE))
			continue; /* hostile or garbled: no reply, the VMM times out */
		memset(&a, 0, sizeof a);
		a.h = (struct mb_dp_hdr){ .id = q.h.id, .cmd = q.h.cmd,
					  .size = sizeof a, .flags = MB_DP_F_REPLY };
		a.r.a = q.a;
		uint32_t c = q.a.count;
		const struct mb_dp_range *r = q.a.region < rep.nranges
						      ? &rep.r[q.a.region] : NULL;
		if (!r || (c != 1 && c != 2 && c != 4 && c != 8) ||
		    q.a.offset >= r->size || c > r->size - q.a.offset) {
			a.h.flags |= MB_DP_F_ERROR;
			a.h.error = EINVAL;
		} else {
			struct mb_bus *bus = r->space == MB_SPACE_PIO ? M->pio : M->mmio;
			cur = &a.r;
			if (q.h.cmd == MB_DP_REGION_READ)
				mb_bus_read(bus, r->base + q.a.offset, a.r.a.data, c);
			else
				mb_bus_write(bus, r->base + q.a.offset, q.a.data, c);
			cur = NULL;
		}
		send(fd, &a, sizeof a, MSG_NOSIGNAL);
	}
	return NULL;
}

/* ---- control ------------------------------------------------------------- */

static uint8_t buf[MB_DP_MAX_MSG];

static void reply(const struct mb_dp_hdr *q, int err, const void *pl,
		  size_t len)
{
	static uint8_t out[MB_DP_MAX_MSG];
	if (q->flags & MB_DP_F_NO_REPLY)
		return;
	struct mb_dp_hdr *h = (void *)out;
	if (len > sizeof out - sizeof *h)
		len = sizeof out - sizeof *h;
	*h = (struct mb_dp_hdr){ .id = q->id, .cmd = q->cmd,
				 .size = (uint32_t)(sizeof *h + len),
				 .flags = MB_DP_F_REPLY | (err ? MB_DP_F_ERROR : 0),
				 .error = (uint32_t)err };
	if (len)
		memcpy(h + 1, pl, len);
	send(MB_DP_FD_CONTROL, out, h->size, MSG_NOSIGNAL);
}

static void fail(const struct mb_dp_hdr *q, int err, const char *msg)
{
	reply(q, err, msg, strlen(msg));
}

/* Lua: the device built exactly as in process, in a restricted state. */
static int build(lua_State *L)
{
	const char *kind = lua_tostring(L, 1);
	size_t len;
	const char *opts = lua_tolstring(L, 2, &len);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
	lua_getfield(L, -1, "moonbox");
	int mb = lua_gettop(L);
	if (lua_getfield(L, mb, kind) != LUA_TFUNCTION)
		return luaL_error(L, "isolate: no device kind \"%s\"", kind);
	lua_newtable(L); /* the options chunk's environment: nothing */
	lua_pushliteral(L, "return ");
	lua_pushlstring(L, opts, len);
	lua_concat(L, 2);
	opts = lua_tolstring(L, -1, &len);
	if (luaL_loadbufferx(L, opts, len, "=options", "t"))
		return lua_error(L);
	lua_remove(L, -2);
	lua_insert(L, -2);
	lua_setupvalue(L, -2, 1);
	lua_call(L, 0, 1); /* the option table */
	if (!lua_istable(L, -1))
		return luaL_error(L, "isolate: options are not a table");
	lua_call(L, 1, 1); /* the handle */
	mbl_push_machine(L, M);
	lua_getfield(L, -1, "add");
	lua_insert(L, -3);
	lua_insert(L, -2); /* add, machine, handle */
	lua_call(L, 2, 0);
	return 0;
}

static int create(const struct mb_dp_hdr *q, size_t len)
{
	struct mb_dp_create c;
	char msg[300];
	if (len < sizeof c) {
		fail(q, EINVAL, "CREATE: too short");
		return -1;
	}
	memcpy(&c, q + 1, sizeof c);
	c.kind[sizeof c.kind - 1] = 0;
	if (c.version != MB_DP_VERSION || c.nchan < 1 || c.nchan > MB_DP_MAX_CHAN ||
	    c.nmem > MB_DP_MAX_MEM || c.nfds > MB_LAUNCH_MAX_FDS ||
	    c.nfds < 2 + c.nchan + c.nmem || c.optlen != len - sizeof c ||
	    c.irqchip > MB_IRQCHIP_KERNEL) {
		fail(q, EINVAL, "CREATE: malformed");
		return -1;
	}
	struct mb_machine_config mc = { .headless = true, .irqchip = c.irqchip,
					.on_stop = on_stop };
	if (mb_machine_create(&mc, &M)) {
		fail(q, ENOMEM, mb_errmsg());
		return -1;
	}
	mb_machine_set_intc(M, &intc, NULL);
	mb_chr_fd_sink(out_sink);
	for (uint32_t i = 0; i < c.nmem; i++) {
		const struct mb_dp_mem *r = &c.mem[i];
		char name[sizeof r->name + 1];
		memcpy(name, r->name, sizeof r->name);
		name[sizeof r->name] = 0;
		int fd = r->fd;
		if (fd < (int)(MB_DP_FD_CHAN0 + c.nchan) || fd >= 3 + (int)c.nfds ||
		    (r->flags & ~MB_MEM_READONLY) || mb_memfd_check(fd, r->size)) {
			snprintf(msg, sizeof msg, "memory %s: %s", name,
				 *mb_errmsg() ? mb_errmsg() : "bad descriptor");
			fail(q, EINVAL, msg);
			return -1;
		}
		void *host = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED,
				  fd, 0);
		if (host == MAP_FAILED ||
		    mb_mem_add(M->mem, r->base, r->size, r->flags, host, name)) {
			snprintf(msg, sizeof msg, "memory %s: %s", name,
				 host == MAP_FAILED ? strerror(errno) : mb_errmsg());
			fail(q, EINVAL, msg);
			return -1;
		}
		close(fd); /* the mapping stays */
	}
	nchan = c.nchan;
	first_backend = MB_DP_FD_CHAN0 + (int)c.nchan + (int)c.nmem;
	nfds_total = c.nfds;
	lua_State *L = luaL_newstate();
	if (!L) {
		fail(q, ENOMEM, "out of memory");
		return -1;
	}
	/* No io, os, package, debug: the device's code reaches nothing. */
	static const luaL_Reg libs[] = {
		{ LUA_GNAME, luaopen_base },       { LUA_TABLIBNAME, luaopen_table },
		{ LUA_STRLIBNAME, luaopen_string }, { LUA_MATHLIBNAME, luaopen_math },
		{ LUA_UTF8LIBNAME, luaopen_utf8 }, { LUA_COLIBNAME, luaopen_coroutine },
		{ "moonbox", luaopen_moonbox },    { NULL, NULL },
	};
	for (const luaL_Reg *l = libs; l->name; l++) {
		luaL_requiref(L, l->name, l->func, 1);
		lua_pop(L, 1);
	}
	static const char *const drop[] = { "dofile", "loadfile", "require", NULL };
	for (const char *const *d = drop; *d; d++) {
		lua_pushnil(L);
		lua_setglobal(L, *d);
	}
	lua_pushboolean(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, MBL_DEVPROC);
	lua_pushcfunction(L, build);
	lua_pushstring(L, c.kind);
	lua_pushlstring(L, (const char *)(q + 1) + sizeof c, c.optlen);
	if (lua_pcall(L, 2, 0, 0)) {
		fail(q, EINVAL, lua_tostring(L, -1));
		return -1;
	}
	size_t nd = mb_machine_ndevices(M);
	D = nd ? mb_machine_device_at(M, nd - 1) : NULL;
	if (!D) {
		fail(q, EINVAL, "isolate: the constructor added no device");
		return -1;
	}
	snprintf(rep.name, sizeof rep.name, "%s", mb_device_name(D));
	snprintf(rep.kind, sizeof rep.kind, "%s", mb_device_kind(D));
	rep.nranges = (uint32_t)mb_device_nranges(D);
	for (uint32_t i = 0; i < rep.nranges && i < 8; i++) {
		const struct mb_device_range *r = mb_device_range(D, i);
		rep.r[i] = (struct mb_dp_range){ .space = r->space, .base = r->base,
						 .size = r->size };
	}
	rep.irq = mb_device_irq_line(D);
	const struct mb_state_desc *sd = mb_device_state_desc(D);
	if (sd) {
		rep.state_size = (uint32_t)sd->size;
		rep.state_version = sd->version;
		snprintf(rep.state_name, sizeof rep.state_name, "%s", sd->name);
	}
	for (unsigned i = 0; i < M->nvirtio && i < 2; i++) {
		rep.virtio[i] = (struct mb_dp_range){ .base = M->virtio[i].base,
						      .size = M->virtio[i].size,
						      .pad = M->virtio[i].irq };
		rep.nvirtio = i + 1;
	}
	rep.pid = getpid();
	return 0;
}

/* Confine before the first guest-controlled byte is read (channels and
 * RAM are served only after this). */
static void confine(void)
{
	struct mb_sandbox_policy pol = { .profile = MB_SANDBOX_DEVICE,
					 .threads = true };
	/* A disk image opened for writing keeps RLIMIT_FSIZE (a limit of 0
	 * fails every write to it). */
	for (int fd = first_backend; fd < 3 + (int)nfds_total; fd++) {
		struct stat st;
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0 && (fl & O_ACCMODE) != O_RDONLY && !fstat(fd, &st) &&
		    S_ISREG(st.st_mode))
			pol.write_files = true;
	}
	struct mb_sandbox_report r;
	memset(&r, 0, sizeof r);
	int rc = mb_sandbox_enter(&pol, &r);
	mb_sandbox_describe(&r, rep.sandbox, sizeof rep.sandbox);
	if (rc) {
		fprintf(stderr, "moonbox-device: sandbox: %s\n", mb_errmsg());
		_exit(126); /* never serve a guest unconfined */
	}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	struct mb_dp_hdr *q = (void *)buf;
	ssize_t n;
	do
		n = recv(MB_DP_FD_CONTROL, buf, sizeof buf, MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < (ssize_t)sizeof *q || (size_t)n > sizeof buf || q->size != n ||
	    q->cmd != MB_DP_CREATE)
		return 2;
	if (create(q, (size_t)n - sizeof *q))
		return 1;
	confine();
	reply(q, 0, &rep, sizeof rep);
	for (unsigned i = 0; i < nchan; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, chan_thread,
				   (void *)(intptr_t)(MB_DP_FD_CHAN0 + i)))
			return 1;
	}
	const struct mb_state_desc *sd = mb_device_state_desc(D);
	for (;;) {
		n = recv(MB_DP_FD_CONTROL, buf, sizeof buf, MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); /* the VMM closed: we go with it */
		if ((size_t)n > sizeof buf || n < (ssize_t)sizeof *q || q->size != n)
			continue;
		size_t len = (size_t)n - sizeof *q;
		const uint8_t *pl = (const uint8_t *)(q + 1);
		uint32_t v = 0;
		if (len == sizeof v)
			memcpy(&v, pl, sizeof v);
		switch (q->cmd) {
		case MB_DP_IRQ_ACK:
			if (len == sizeof v && v < 64 && ack_fn[v])
				ack_fn[v](ack_arg[v]);
			break;
		case MB_DP_FREEZE:
			if (len == sizeof v)
				mb_evloop_freeze(M->ev, v != 0);
			break;
		case MB_DP_QUIESCE:
			mb_device_quiesce(D);
			reply(q, 0, NULL, 0);
			break;
		case MB_DP_SAVE: {
			static uint8_t st[MB_DP_MAX_MSG];
			if (!sd || sd->size > sizeof st - 64)
				fail(q, ENOTSUP, "no state");
			else if (mb_device_save(D, st))
				fail(q, EIO, mb_errmsg());
			else
				reply(q, 0, st, sd->size);
			break;
		}
		case MB_DP_LOAD:
			/* The model's load checks every field (state.h). The VMM
			 * holds the machine paused; this machine has no vCPUs. */
			if (!sd || len != sd->size)
				fail(q, EINVAL, "state: wrong size");
			else if (mb_device_load(D, pl))
				fail(q, EINVAL, mb_errmsg());
			else
				reply(q, 0, NULL, 0);
			break;
		default:
			fail(q, ENOSYS, "unknown command");
		}
	}
}
