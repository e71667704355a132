/*
 * moonbox-device: one device model in its own process (moonbox/devproc.h,
 * docs/devproc.md). Started by the VMM with descriptors only: it reads the
 * CREATE request, maps guest RAM from the memfds it names (checked first),
 * builds the device with the same Lua constructor and m:add as in process,
 * in a fresh Lua state without io, os, package or debug, on a headless
 * machine (no KVM), confines itself, reports, then serves accesses on its
 * channels (one thread each) and requests on its control socket. It exits
 * when the control socket closes. Every byte it receives is checked.
 * With arguments (--vhost-user TYPE ...) it is a vhost-user back-end
 * instead (cli/vhostmain.c, docs/vhost_user.md).
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
#include "cli/devserve.h"
#include "cli/vhostserve.h"

int luaopen_moonbox(lua_State *L);
void mbl_push_machine(lua_State *L, struct mb_machine *m);

static unsigned nchan;
static lua_State *lstate; /* the devices' Lua state */
static int first_backend;
static unsigned nfds_total;

static void *chan_thread(void *arg)
{
	unsigned ch = (unsigned)(intptr_t)arg;
	int fd = MB_DP_FD_CHAN0 + (int)ch;
	uint8_t q[sizeof(struct mb_dp_hdr) + sizeof(struct mb_dp_access)];
	uint8_t a[sizeof(struct mb_dp_hdr) + sizeof(struct mb_dp_reply)];
	for (;;) {
		ssize_t n = recv(fd, q, sizeof q, MSG_TRUNC);
		if (n == 0 || (n < 0 && errno != EINTR))
			_exit(0); /* the VMM is gone */
		ds_ring_take(ch); /* posted writes first: channel order */
		size_t len = ds_access(q, n, a);
		if (len)
			send(fd, a, len, MSG_NOSIGNAL);
	}
	return NULL;
}

static uint8_t buf[MB_DP_MAX_MSG];

static int panic(lua_State *L)
{
	fprintf(stderr, "moonbox-device: Lua: %s\n", lua_tostring(L, -1));
	return 0; /* Lua aborts */
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
	mbl_push_machine(L, ds_machine);
	/* kept for the process's life: a Lua device's callbacks reach their
	 * functions through the machine's handle (lmachine.c keeps it weakly) */
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.devproc.machine");
	lua_getfield(L, -1, "add");
	lua_insert(L, -3);
	lua_insert(L, -2); /* add, machine, handle */
	lua_call(L, 2, 0);
	return 0;
}

/* A virtio device's doorbells (the VMM's ioeventfds) and irqfd: checked
 * to be descriptors we were given past the backend's, then handed to the
 * transport, which waits on them itself (no VMM hop per kick). */
static int take_virtio_fds(const struct mb_dp_create *c)
{
	int end = 3 + (int)c->nfds;
	if (!c->nkick && c->irq_fd < 0)
		return 0;
	if (c->nkick > MB_DP_MAX_KICK ||
	    (c->nkick && (c->kick_fd < first_backend ||
			  c->kick_fd > end - (int)c->nkick)) ||
	    (c->irq_fd >= 0 && (c->irq_fd < first_backend || c->irq_fd >= end ||
				(c->nkick && c->irq_fd >= c->kick_fd &&
				 c->irq_fd < c->kick_fd + (int)c->nkick))))
		return mb_seterr(-EINVAL, "CREATE: bad doorbell descriptors");
	struct mb_virtio *t = mb_virtio_dev_transport(ds_device);
	unsigned n = 0;
	for (unsigned i = 0; i < c->nkick; i++) {
		int fd = c->kick_fd + (int)i;
		if (t && mb_virtio_doorbell_give(t, i, fd) == 0)
			n = i + 1;
		else
			close(fd); /* no such queue: its kicks go nowhere */
	}
	ds_rep.nkick = n;
	if (c->irq_fd >= 0) {
		if (t)
			mb_virtio_irqfd_give(t, c->irq_fd);
		else
			close(c->irq_fd);
	}
	return 0;
}

static int take_rings(const struct mb_dp_create *c);

static int create(const struct mb_dp_hdr *q, size_t len)
{
	struct mb_dp_create c;
	char msg[300];
	if (len < sizeof c) {
		ds_fail(q, EINVAL, "CREATE: too short");
		return -1;
	}
	memcpy(&c, q + 1, sizeof c);
	c.kind[sizeof c.kind - 1] = 0;
	if (c.version != MB_DP_VERSION || c.nchan < 1 || c.nchan > MB_DP_MAX_CHAN ||
	    c.nmem > MB_DP_MAX_MEM || c.nfds > MB_LAUNCH_MAX_FDS ||
	    c.nfds < 2 + c.nchan + c.nmem || c.optlen != len - sizeof c ||
	    c.irqchip > MB_IRQCHIP_KERNEL) {
		ds_fail(q, EINVAL, "CREATE: malformed");
		return -1;
	}
	struct mb_machine_config mc = { .headless = true, .irqchip = c.irqchip,
					.on_stop = ds_on_stop };
	if (mb_machine_create(&mc, &ds_machine)) {
		ds_fail(q, ENOMEM, mb_errmsg());
		return -1;
	}
	mb_machine_set_intc(ds_machine, &ds_intc, NULL);
	mb_chr_fd_sink(ds_out_sink);
	first_backend = MB_DP_FD_CHAN0 + (int)c.nchan + (int)c.nmem;
	if (c.dirty_fd >= 0 && (c.dirty_fd < first_backend || c.dirty_fd >= 3 + (int)c.nfds ||
				ds_dirty_take(c.dirty_fd, c.dirty_size, msg, sizeof msg))) {
		ds_fail(q, EINVAL, c.dirty_fd < first_backend || c.dirty_fd >= 3 + (int)c.nfds
					   ? "CREATE: bad dirty map descriptor" : msg);
		return -1;
	}
	for (uint32_t i = 0; i < c.nmem; i++) {
		const struct mb_dp_mem *r = &c.mem[i];
		char name[sizeof r->name + 1];
		memcpy(name, r->name, sizeof r->name);
		name[sizeof r->name] = 0;
		if (ds_map_mem(r, (int)(MB_DP_FD_CHAN0 + c.nchan), 3 + (int)c.nfds,
			       name, msg, sizeof msg)) {
			ds_fail(q, EINVAL, msg);
			return -1;
		}
	}
	nchan = c.nchan;
	nfds_total = c.nfds;
	/* An isolated Lua device's module is bounded in memory by this
	 * allocator (lua/lmodule.c); the other kinds never come near it. */
	lua_State *L = lstate = lua_newstate(mbl_module_alloc, NULL);
	if (L)
		lua_atpanic(L, panic);
	if (!L) {
		ds_fail(q, ENOMEM, "out of memory");
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
	mbl_module_log = ds_log;
	mbl_module_fatal = ds_fatal;
	/* A Lua device's timers may fire on the event loop while it is built */
	mbl_module_lock();
	int st = lua_pcall(L, 2, 0, 0);
	mbl_module_unlock();
	if (st) {
		ds_fail(q, EINVAL, lua_tostring(L, -1));
		return -1;
	}
	size_t nd = mb_machine_ndevices(ds_machine);
	ds_device = nd ? mb_machine_device_at(ds_machine, nd - 1) : NULL;
	if (!ds_device) {
		ds_fail(q, EINVAL, "isolate: the constructor added no device");
		return -1;
	}
	if (ds_report()) {
		ds_fail(q, EINVAL, mb_errmsg());
		return -1;
	}
	if (take_virtio_fds(&c) || take_rings(&c)) {
		ds_fail(q, EINVAL, mb_errmsg());
		return -1;
	}
	ds_rep.pid = getpid();
	return 0;
}

/* The posted-write rings (a sealed memfd of nring rings, nring doorbell
 * eventfds): checked like every descriptor the VMM names, mapped, the
 * memfd closed. Our count of what was done starts at the ring's tail (a
 * restarted process: what its predecessor did). */
static int take_rings(const struct mb_dp_create *c)
{
	int end = 3 + (int)c->nfds;
	if (!c->nring)
		return 0;
	size_t want = ((size_t)c->nring * sizeof(struct mb_dp_ring) + 4095) &
		      ~(size_t)4095;
	if (c->nring != c->nchan || c->ring_size != want ||
	    c->ring_fd < first_backend || c->ring_fd >= end ||
	    c->bell_fd < first_backend || c->bell_fd > end - (int)c->nring ||
	    (c->ring_fd >= c->bell_fd && c->ring_fd < c->bell_fd + (int)c->nring))
		return mb_seterr(-EINVAL, "CREATE: bad posted-write rings");
	if (mb_memfd_check(c->ring_fd, want))
		return -EINVAL;
	void *map = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_SHARED, c->ring_fd, 0);
	if (map == MAP_FAILED)
		return mb_seterr(-errno, "rings: mmap: %s", strerror(errno));
	close(c->ring_fd);
	struct mb_dp_ring *r = map;
	for (unsigned i = 0; i < c->nring; i++) {
		struct ds_ring *q = &ds_rings[i];
		q->r = &r[i];
		q->bell = c->bell_fd + (int)i;
		pthread_mutex_init(&q->lock, NULL);
		uint32_t h = __atomic_load_n(&r[i].head, __ATOMIC_ACQUIRE);
		q->tail = __atomic_load_n(&r[i].tail, __ATOMIC_ACQUIRE);
		if (h - q->tail > MB_DP_RING_N)
			q->tail = h; /* nonsense: start from what is there */
		/* What a dead predecessor left waits for the VMM's word (it
		 * loads the state first); a fresh ring goes at once. */
		q->go = h == q->tail;
	}
	ds_nring = c->nring;
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
	mb_sandbox_describe(&r, ds_rep.sandbox, sizeof ds_rep.sandbox);
	if (rc) {
		fprintf(stderr, "moonbox-device: sandbox: %s\n", mb_errmsg());
		_exit(126); /* never serve a guest unconfined */
	}
}

int main(int argc, char **argv)
{
	/* With arguments: a vhost-user back-end (cli/vhostmain.c); without,
	 * a device process started by the VMM. */
	if (argc > 1)
		return vs_main(argc, argv);
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
	/* An isolated Lua device's module runs only confined. */
	mbl_module_lock();
	lua_pushcfunction(lstate, mbl_module_start);
	int st = lua_pcall(lstate, 0, 0, 0);
	mbl_module_unlock();
	if (st) {
		ds_fail(q, EINVAL, lua_tostring(lstate, -1));
		return 1;
	}
	ds_reply(q, 0, &ds_rep, sizeof ds_rep);
	for (unsigned i = 0; i < nchan; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, chan_thread,
				   (void *)(intptr_t)i))
			return 1;
	}
	for (unsigned i = 0; i < ds_nring; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, ds_ring_thread, &ds_rings[i]))
			return 1;
	}
	for (;;) {
		int fd;
		n = ds_recv_ctl(MB_DP_FD_CONTROL, buf, sizeof buf, &fd);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); /* the VMM closed: we go with it */
		uint16_t cmd = 0;
		if (n >= (ssize_t)sizeof *q)
			memcpy(&cmd, buf + 2, sizeof cmd);
		if (fd >= 0 || cmd == MB_DP_DMA_MAP)
			ds_control_map(buf, n, fd); /* a window granted at run time */
		else
			ds_control(buf, n);
	}
}
