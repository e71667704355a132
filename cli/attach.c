/* `moonbox attach PATH`: a REPL on a machine that listens there
 * (m:listen { repl = "unix:PATH" }, lua/llisten.c has the wire). Line
 * editing with readline on a terminal; plain lines otherwise (scripts,
 * tests: `printf 'm:pause()\n' | moonbox attach PATH`). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "cli/attach.h"

/* Print what the server sends up to its state byte; -1 when it hung up. */
static int answer(int fd)
{
	char buf[4096];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] == 0 || buf[i] == 1) {
				fwrite(buf, 1, (size_t)i, stdout);
				fflush(stdout);
				/* the server sends nothing after its state byte
				 * until the next line: this is the end */
				return buf[i];
			}
		fwrite(buf, 1, (size_t)n, stdout);
	}
}

static bool send_line(int fd, const char *l)
{
	size_t n = strlen(l);
	char *b = malloc(n + 1);
	if (!b)
		return false;
	memcpy(b, l, n);
	b[n] = '\n';
	const char *p = b;
	size_t left = n + 1;
	while (left) {
		ssize_t k = send(fd, p, left, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			free(b);
			return false;
		}
		p += k, left -= (size_t)k;
	}
	free(b);
	return true;
}

int mb_cli_attach(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		fprintf(stderr, "moonbox attach: path %s is too long\n", path);
		return 1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
		fprintf(stderr, "moonbox attach: %s: %s\n", path, strerror(errno));
		return 1;
	}
	bool tty = isatty(0) && isatty(1);
	int st = answer(fd); /* the banner */
	while (st >= 0) {
		const char *prompt = st == 1 ? ">> " : "> ";
		char *l = NULL;
		if (tty) {
			l = readline(prompt);
			if (l && l[0])
				add_history(l);
		} else {
			size_t cap = 0;
			ssize_t n = getline(&l, &cap, stdin);
			if (n < 0) {
				free(l);
				l = NULL;
			} else if (n && l[n - 1] == '\n')
				l[n - 1] = 0;
		}
		if (!l)
			break;
		bool ok = send_line(fd, l);
		free(l);
		if (!ok)
			break;
		st = answer(fd);
	}
	if (tty)
		putchar('\n');
	close(fd);
	return st < 0 ? 1 : 0;
}
