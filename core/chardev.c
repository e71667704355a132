/*
 * Console backends: the outside end of a UART or virtio console.
 *   null    output dropped, no input
 *   buffer  output kept in memory (read with mb_chr_buffer_get)
 *   file    output appended to a file
 *   stdio   the terminal in raw mode, restored on every exit path; Ctrl-a x
 *           quits, Ctrl-a Ctrl-a sends a Ctrl-a
 *   socket  a Unix socket moonbox listens on; one client attaches at a time
 *   func    output handed to a callback (the Lua binding's functions)
 *
 * Input is queued here and delivered to the device only from the event
 * loop thread, so a device may call mb_chr_accept() with its own lock held
 * without ever re-entering itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "core/internal.h"

enum kind { NUL, BUFFER, FILEOUT, STDIO, SOCKET, FUNC };

struct chr {
	struct mb_chr c; /* first: a struct mb_chr * is a struct chr * */
	enum kind kind;
	struct mb_machine *m;
	struct hook hook; /* closed with the machine */
	pthread_mutex_t lock;
	uint8_t *in;      /* input waiting for the device */
	size_t in_len, in_cap;
	uint8_t *out;     /* BUFFER: everything the guest wrote */
	size_t out_len, out_cap;
	int fd;           /* FILEOUT: the file; SOCKET: the client or -1 */
	int listen_fd;    /* SOCKET */
	int wake;         /* eventfd: "try delivering input" */
	bool escape;      /* STDIO: Ctrl-a seen */
	bool relay;       /* mb_chr_fd: output may go to mb_chr_fd_sink */
	char *path;       /* SOCKET: unlinked on close */
	void (*fn)(void *ctx, const void *buf, size_t len);
	void *fn_ctx;
};

static bool grow(uint8_t **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return true;
	size_t n = *cap ? *cap : 256;
	while (n < need)
		n *= 2;
	uint8_t *q = realloc(*p, n);
	if (!q)
		return false;
	*p = q, *cap = n;
	return true;
}

/* Event loop: hand queued input to the device, as much as it takes. Only
 * this thread consumes the queue, so copy-then-drop is race-free. */
static void deliver(struct chr *h)
{
	uint8_t tmp[256];
	for (;;) {
		pthread_mutex_lock(&h->lock);
		size_t n = h->in_len < sizeof tmp ? h->in_len : sizeof tmp;
		memcpy(tmp, h->in, n);
		pthread_mutex_unlock(&h->lock);
		if (!n || !h->c.rx)
			return;
		size_t took = h->c.rx(h->c.rx_dev, tmp, n);
		pthread_mutex_lock(&h->lock);
		memmove(h->in, h->in + took, h->in_len - took);
		h->in_len -= took;
		pthread_mutex_unlock(&h->lock);
		if (took < n)
			return; /* the device calls accept() when it has room */
	}
}

static void on_wake(void *opaque, int fd)
{
	uint64_t v;
	if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
		return;
	deliver(opaque);
}

static void poke(struct chr *h)
{
	uint64_t one = 1;
	if (h->wake >= 0 && write(h->wake, &one, sizeof one) < 0)
		return; /* counter full: a wake-up is pending anyway */
}

int mb_chr_input(struct mb_chr *c, const void *buf, size_t len)
{
	struct chr *h = (struct chr *)c;
	pthread_mutex_lock(&h->lock);
	bool ok = grow(&h->in, &h->in_cap, h->in_len + len);
	if (ok) {
		memcpy(h->in + h->in_len, buf, len);
		h->in_len += len;
	}
	pthread_mutex_unlock(&h->lock);
	if (!ok)
		return mb_seterr(-ENOMEM, "console: input queue: out of memory");
	poke(h);
	return 0;
}

static void chr_accept(struct mb_chr *c)
{
	poke((struct chr *)c);
}

static bool (*fd_sink)(const void *buf, size_t len);

void mb_chr_fd_sink(bool (*sink)(const void *buf, size_t len))
{
	fd_sink = sink;
}

static void chr_write(struct mb_chr *c, const void *buf, size_t len)
{
	struct chr *h = (struct chr *)c;
	switch (h->kind) {
	case NUL:
		break;
	case BUFFER:
		pthread_mutex_lock(&h->lock);
		if (grow(&h->out, &h->out_cap, h->out_len + len)) {
			memcpy(h->out + h->out_len, buf, len);
			h->out_len += len;
		}
		pthread_mutex_unlock(&h->lock);
		break;
	case SOCKET:
		if (h->relay && fd_sink && fd_sink(buf, len))
			break;
		/* fall through */
	case FILEOUT:
	case STDIO: {
		int fd = h->kind == STDIO ? STDOUT_FILENO : h->fd;
		const uint8_t *p = buf;
		while (fd >= 0 && len) {
			ssize_t n = write(fd, p, len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break; /* a gone reader must not stop the guest */
			p += n, len -= (size_t)n;
		}
		break;
	}
	case FUNC:
		h->fn(h->fn_ctx, buf, len);
		break;
	}
}

/* ---- stdio: raw terminal ---------------------------------------------- */

static struct termios saved;
static volatile sig_atomic_t raw_on;
static volatile sig_atomic_t raw_paused; /* left raw mode for Ctrl-a c */
static struct chr *paused_chr; /* its input not watched meanwhile */
static void on_input(void *opaque, int fd);

static void restore_tty(void)
{
	if (raw_on) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		raw_on = 0;
	}
}

static void on_fatal(int sig)
{
	restore_tty();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void raw_tty(void)
{
	static bool hooked;
	if (raw_on || !isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved))
		return;
	struct termios t = saved;
	cfmakeraw(&t);
	t.c_oflag |= OPOST | ONLCR; /* keep host-side newlines sane */
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t))
		return;
	raw_on = 1;
	if (hooked)
		return;
	hooked = true;
	atexit(restore_tty);
	static const int sigs[] = { SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS,
				    SIGABRT, SIGFPE, SIGILL, SIGINT };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		signal(sigs[i], on_fatal);
}

void mb_console_reenter(void)
{
	if (raw_paused) {
		raw_paused = 0;
		raw_tty();
	}
	if (paused_chr) {
		mb_machine_watch(paused_chr->m, STDIN_FILENO, on_input, paused_chr);
		paused_chr = NULL;
	}
}

/* Input from a file descriptor (terminal, pipe, socket client). */
static void on_input(void *opaque, int fd)
{
	struct chr *h = opaque;
	uint8_t buf[512], keep[512];
	ssize_t n = read(fd, buf, sizeof buf);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		mb_machine_unwatch(h->m, fd); /* EOF: stop watching */
		if (h->kind == SOCKET) {
			close(fd);
			h->fd = -1;
		}
		return;
	}
	size_t k = 0;
	for (ssize_t i = 0; i < n; i++) {
		uint8_t b = buf[i];
		if (h->kind == STDIO && h->escape) {
			h->escape = false;
			if (b == 'x' || b == 'X') {
				restore_tty();
				mb_machine_stop(h->m, MB_STOP_SHUTDOWN, 0,
						"console: quit (Ctrl-a x)");
				return;
			}
			if (b == 'c' || b == 'C') { /* to the REPL, paused */
				restore_tty();
				/* the REPL reads the terminal now, not us */
				mb_machine_unwatch(h->m, fd);
				paused_chr = h;
				raw_paused = 1;
				mb_machine_stop(h->m, MB_STOP_CONSOLE, 0,
						"console: Ctrl-a c");
				return;
			}
			keep[k++] = b; /* Ctrl-a Ctrl-a: a literal Ctrl-a */
		} else if (h->kind == STDIO && b == 0x01 && raw_on) {
			h->escape = true;
		} else {
			keep[k++] = b;
		}
	}
	if (k)
		mb_chr_input(&h->c, keep, k);
}

static void on_client(void *opaque, int fd)
{
	struct chr *h = opaque;
	int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	if (h->fd >= 0) { /* one client at a time: the newest wins */
		mb_machine_unwatch(h->m, h->fd);
		close(h->fd);
	}
	h->fd = c;
	mb_machine_watch(h->m, c, on_input, h);
}

/* ---- construction ------------------------------------------------------ */

static void chr_close(struct mb_chr *c)
{
	struct chr *h = (struct chr *)c;
	if (h->kind == STDIO)
		restore_tty();
	if (h->kind == FILEOUT && h->fd >= 0)
		close(h->fd);
	if (h->kind == SOCKET) {
		if (h->fd >= 0)
			close(h->fd);
		if (h->listen_fd >= 0)
			close(h->listen_fd);
		if (h->path)
			unlink(h->path);
	}
	if (h->wake >= 0)
		close(h->wake);
	free(h->path);
	free(h->in);
	free(h->out);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static void close_hook(void *p)
{
	chr_close(p);
}

static const struct mb_chr_ops ops = { chr_write, chr_accept, chr_close };

static struct chr *chr_new(struct mb_machine *m, enum kind kind)
{
	struct chr *h = calloc(1, sizeof *h);
	if (!h) {
		mb_seterr(-ENOMEM, "console: out of memory");
		return NULL;
	}
	h->c.ops = &ops;
	h->kind = kind;
	h->m = m;
	h->fd = h->listen_fd = -1;
	pthread_mutex_init(&h->lock, NULL);
	h->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->wake < 0 || mb_machine_watch(m, h->wake, on_wake, h)) {
		mb_seterr(-errno, "console: cannot create its event");
		chr_close(&h->c);
		return NULL;
	}
	/* The event loop stops before hooks run: no callback sees it freed. */
	h->hook = (struct hook){ .fn = close_hook, .arg = h, .embedded = true };
	mb_machine_push_hook(m, &h->hook);
	return h;
}

struct mb_chr *mb_chr_null(struct mb_machine *m)
{
	struct chr *h = chr_new(m, NUL);
	return h ? &h->c : NULL;
}

struct mb_chr *mb_chr_buffer(struct mb_machine *m)
{
	struct chr *h = chr_new(m, BUFFER);
	return h ? &h->c : NULL;
}

size_t mb_chr_buffer_get(struct mb_chr *c, void *dst, size_t max)
{
	struct chr *h = (struct chr *)c;
	if (h->kind != BUFFER)
		return 0;
	pthread_mutex_lock(&h->lock);
	size_t n = h->out_len;
	if (dst && n) /* memcpy from NULL is undefined even for 0 bytes */
		memcpy(dst, h->out, n < max ? n : max);
	pthread_mutex_unlock(&h->lock);
	return n;
}

struct mb_chr *mb_chr_file(struct mb_machine *m, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		mb_seterr(-errno, "console: %s: %s", path, strerror(errno));
		return NULL;
	}
	struct chr *h = chr_new(m, FILEOUT);
	if (!h) {
		close(fd);
		return NULL;
	}
	h->fd = fd;
	return &h->c;
}

struct mb_chr *mb_chr_stdio(struct mb_machine *m)
{
	struct chr *h = chr_new(m, STDIO);
	if (!h)
		return NULL;
	raw_tty();
	int fl = fcntl(STDIN_FILENO, F_GETFL);
	if (fl >= 0)
		fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
	/* stdin may be closed or a regular file (epoll refuses those). */
	mb_machine_watch(m, STDIN_FILENO, on_input, h);
	return &h->c;
}

struct mb_chr *mb_chr_socket(struct mb_machine *m, const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof a.sun_path) {
		mb_seterr(-ENAMETOOLONG, "console: socket path %s is too long", path);
		return NULL;
	}
	strcpy(a.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	unlink(path); /* a stale socket from an earlier run */
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1)) {
		mb_seterr(-errno, "console: socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct chr *h = chr_new(m, SOCKET);
	if (!h) {
		close(fd);
		return NULL;
	}
	h->listen_fd = fd;
	h->path = strdup(path);
	mb_machine_watch(m, fd, on_client, h);
	return &h->c;
}

struct mb_chr *mb_chr_func(struct mb_machine *m,
			   void (*fn)(void *ctx, const void *buf, size_t len),
			   void *ctx)
{
	struct chr *h = chr_new(m, FUNC);
	if (!h)
		return NULL;
	h->fn = fn, h->fn_ctx = ctx;
	return &h->c;
}

struct mb_chr *mb_chr_fd(struct mb_machine *m, int fd)
{
	/* A socket console with its one client already there (and no
	 * listening socket): writes go to fd, input comes from it. */
	struct chr *h = chr_new(m, SOCKET);
	if (!h) {
		close(fd);
		return NULL;
	}
	h->fd = fd;
	h->relay = true;
	if (mb_machine_watch(m, fd, on_input, h)) {
		mb_seterr(-errno, "console: cannot watch fd %d", fd);
		return NULL; /* closed with the machine */
	}
	return &h->c;
}
