/* m:listen { repl = "unix:PATH" }: a REPL on a running machine for
 * `moonbox attach PATH` in another terminal.
 *
 * One thread per listener accepts one client at a time, only of this
 * process's user (SO_PEERCRED; the socket is also mode 0600). Each line
 * the client sends runs as Lua in the script's state, the way gdb's
 * `monitor` does (lgdb.c: globals, `m`, print collected, an expression's
 * value shown), while the script's thread waits in m:run or m:wait: the
 * script's own Lua world is borrowed for the line, so a line needs a
 * script that is waiting. An incomplete chunk (a `for` without its `end`)
 * is kept and completed by the next lines.
 *
 * Wire (moonbox's own, line based): client -> server: one line of Lua
 * ending in "\n" (at most LINE_MAX bytes); server -> client: the output,
 * then one byte: 0 ready for a new chunk, 1 the chunk goes on. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lua/lmoonbox.h"

#define LINE_MAX_BYTES 65536
#define CHUNK_MAX (1 << 20)

struct listener {
	struct mbl_machine *mm;
	int lfd, cfd;
	pthread_t th;
	bool started;
	pthread_mutex_t lock; /* cfd, quit */
	bool quit;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static bool send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		c += k, n -= (size_t)k;
	}
	return true;
}

static bool reply(int fd, const char *out, char state)
{
	return (!out || send_all(fd, out, strlen(out))) && send_all(fd, &state, 1);
}

/* An incomplete chunk: the parser ran out of input ("... near <eof>"). */
static bool incomplete(const char *out)
{
	return out && strncmp(out, "error: ", 7) == 0 && strstr(out, "<eof>");
}

static void session(struct listener *l, int fd)
{
	char line[LINE_MAX_BYTES];
	size_t have = 0;
	char *chunk = NULL;
	size_t clen = 0;
	if (!reply(fd, "moonbox attach: Lua in the machine script's state "
		   "(m is the machine); Ctrl-D leaves\n", 0))
		return;
	for (;;) {
		char *nl = memchr(line, '\n', have);
		if (!nl) {
			if (have == sizeof line) {
				reply(fd, "error: line longer than 64 KiB\n", 0);
				break;
			}
			ssize_t k = recv(fd, line + have, sizeof line - have, 0);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			have += (size_t)k;
			continue;
		}
		*nl = 0;
		size_t n = (size_t)(nl - line);
		if (clen + n + 2 > CHUNK_MAX) {
			free(chunk), chunk = NULL, clen = 0;
			if (!reply(fd, "error: chunk longer than 1 MiB\n", 0))
				break;
		} else {
			char *c = realloc(chunk, clen + n + 2);
			if (!c)
				break;
			chunk = c;
			if (clen)
				chunk[clen++] = '\n';
			memcpy(chunk + clen, line, n);
			clen += n;
			chunk[clen] = 0;
			/* Before the first run the script's thread owns its
			 * Lua state outright: nothing can be borrowed. */
			struct mb_machine *m = l->mm->m;
			if (m && !mb_machine_started(m)) {
				free(chunk), chunk = NULL, clen = 0;
				if (!reply(fd, "error: the machine has not run yet: lines "
					   "run while the script waits in m:run or m:wait\n", 0))
					break;
				goto next;
			}
			char *out = m ? mbl_eval_line(l->mm, chunk) : NULL;
			bool more = incomplete(out);
			bool ok = more ? reply(fd, NULL, 1) :
				  reply(fd, out ? out : "error: the machine is gone\n", 0);
			free(out);
			if (!more)
				free(chunk), chunk = NULL, clen = 0;
			if (!ok)
				break;
		}
	next:
		have -= n + 1;
		memmove(line, nl + 1, have);
	}
	free(chunk);
}

static void *serve(void *arg)
{
	struct listener *l = arg;
	for (;;) {
		int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC);
		pthread_mutex_lock(&l->lock);
		bool quit = l->quit;
		if (!quit)
			l->cfd = fd;
		pthread_mutex_unlock(&l->lock);
		if (quit) {
			if (fd >= 0)
				close(fd);
			break;
		}
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		struct ucred cr;
		socklen_t len = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) ||
		    cr.uid != geteuid())
			reply(fd, "moonbox attach: refused: not this machine's user\n", 0);
		else
			session(l, fd);
		pthread_mutex_lock(&l->lock);
		l->cfd = -1;
		pthread_mutex_unlock(&l->lock);
		close(fd);
	}
	return NULL;
}

/* With the machine: wake the thread out of accept or recv, join it. */
static void listener_free(void *arg)
{
	struct listener *l = arg;
	pthread_mutex_lock(&l->lock);
	l->quit = true;
	if (l->cfd >= 0)
		shutdown(l->cfd, SHUT_RDWR);
	pthread_mutex_unlock(&l->lock);
	shutdown(l->lfd, SHUT_RDWR);
	if (l->started)
		pthread_join(l->th, NULL);
	close(l->lfd);
	unlink(l->path);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static int l_listen(lua_State *L)
{
	static const char *const keys[] = { "repl", NULL };
	struct mbl_machine *mm = mbl_checkmachine(L, 1);
	struct mb_machine *m = mbl_live(L, mm);
	luaL_checktype(L, 2, LUA_TTABLE);
	mbl_checkopts(L, 2, "listen", keys);
	const char *spec = mbl_optstr(L, 2, "repl", NULL);
	if (!spec)
		return luaL_error(L, "repl: missing (\"unix:PATH\")");
	if (strncmp(spec, "unix:", 5) != 0 || !spec[5])
		return luaL_error(L, "repl: \"%s\" is not unix:PATH (only a Unix "
				  "socket can tell who connects)", spec);
	const char *path = spec + 5;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path)
		return luaL_error(L, "repl: path %s is longer than %d bytes", path,
				  (int)sizeof sa.sun_path - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct listener *l = calloc(1, sizeof *l);
	if (!l)
		return luaL_error(L, "listen: out of memory");
	l->mm = mm;
	l->cfd = -1;
	memcpy(l->path, path, strlen(path) + 1);
	pthread_mutex_init(&l->lock, NULL);
	l->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	mode_t old = umask(077); /* the socket file: this user only */
	int rc = l->lfd < 0 ? -1 : bind(l->lfd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (rc || listen(l->lfd, 1)) {
		int e = errno;
		if (l->lfd >= 0)
			close(l->lfd);
		pthread_mutex_destroy(&l->lock);
		free(l);
		return luaL_error(L, "repl: cannot listen on %s: %s", path, strerror(e));
	}
	if (pthread_create(&l->th, NULL, serve, l) == 0)
		l->started = true;
	if (!l->started || mb_machine_on_destroy(m, listener_free, l)) {
		listener_free(l);
		return luaL_error(L, "listen: cannot start its thread");
	}
	mbl_eval_bind(L, mm, 1);
	lua_pushstring(L, spec);
	return 1;
}

void mbl_open_listen(lua_State *L)
{
	mbl_machine_method(L, "listen", l_listen);
}
