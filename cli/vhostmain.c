/*
 * moonbox-device --vhost-user TYPE: the program around cli/vhostserve.c,
 * following QEMU's "Backend program conventions" (vhost-user.rst):
 * --socket-path=PATH (listen there) or --fd=N (a socket it was given:
 * listening, bound but not listening, or already connected),
 * --print-capabilities (JSON on stdout, exit 0), no daemonising, SIGTERM
 * ends it. It opens what it needs, confines itself with the device
 * sandbox (core/sandbox.c), then serves one front-end at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/vhostserve.h"
#include "moonbox/virtio_net.h"
#include "moonbox/virtio_netbackend.h"

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_MQ 12
#define BLK_SIZE_MAX (1u << 20)

static void usage(void)
{
	fprintf(stderr,
		"usage: moonbox-device --vhost-user blk|rng|console|net (--socket-path=PATH | --fd=N)\n"
		"         blk: --blk-file=FILE [--read-only] [--serial=S] [--num-queues=N]\n"
		"              [--delay-ms=N]\n"
		"         net: --net-socket=PATH [--net-listen] | --tap=IFNAME; [--mac=M]\n"
		"       moonbox-device --vhost-user TYPE --print-capabilities\n");
}

/* ---- the models --------------------------------------------------------- */

static struct mb_virtio_blk *blk;
static unsigned blk_queues = 1;

static void blk_config(void *dev, uint64_t off, void *data, unsigned size)
{
	uint8_t cfg[MB_VIRTIO_BLK_CONFIG_SIZE];
	mb_virtio_blk_ops.config_read(blk, 0, cfg, sizeof cfg);
	/* size_max: any segment size works here (preadv on the guest's
	 * buffers); offered so that front-ends which bound their own buffers
	 * by it (moonbox's dma = "copy") can use this back-end. */
	uint32_t size_max = BLK_SIZE_MAX;
	memcpy(cfg + 8, &size_max, 4);
	if (blk_queues > 1) { /* num_queues, sec. 5.2.4 */
		uint16_t n = (uint16_t)blk_queues;
		memcpy(cfg + 34, &n, 2);
	}
	memcpy(data, cfg + off, size);
}

/* --delay-ms: every request waits that long before it is served, taken
 * and marked in flight meanwhile (a slow disk; how the tests get a
 * request in flight at a crash, as qemu-storage-daemon's throttle does). */
static unsigned delay_ms;

static uint32_t blk_request(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	if (delay_ms) {
		struct timespec ts = { delay_ms / 1000, (long)(delay_ms % 1000) * 1000000 };
		while (nanosleep(&ts, &ts) && errno == EINTR) {
		}
	}
	return mb_virtio_blk_request(blk, c);
}

/* virtio-rng (sec. 5.4): every device-writable byte from getrandom. */
static uint32_t rng_request(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	uint32_t total = 0;
	for (unsigned i = c->nout; i < c->nout + c->nin; i++) {
		uint8_t *p = c->iov[i].iov_base;
		size_t len = c->iov[i].iov_len, done = 0;
		while (done < len) {
			ssize_t n = getrandom(p + done, len - done, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return total + (uint32_t)done;
			done += (size_t)n;
		}
		total += (uint32_t)len;
	}
	return total;
}

/* virtio-console port 0 without MULTIPORT (sec. 5.3): transmitq to
 * stdout, stdin to receiveq. Input is read only while none is buffered,
 * and a receive buffer is taken only when there is input for it (the
 * rest wait in the ring), and only after the port first wrote: Linux
 * drops input for a port it has not listed yet (devices/virtio/console.c
 * says why). */
enum { CON_RXQ = 0, CON_TXQ = 1 };
static struct {
	bool eof, open;
	uint8_t buf[4096];
	size_t len, off;
	uint64_t tx_bytes, rx_bytes;
} con;

static bool con_can_serve(void *dev, unsigned qi)
{
	return qi != CON_RXQ || (con.open && con.off < con.len);
}

static uint32_t con_request(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	if (qi == CON_TXQ) {
		for (unsigned i = 0; i < c->nout; i++) {
			const uint8_t *p = c->iov[i].iov_base;
			size_t len = c->iov[i].iov_len, done = 0;
			while (done < len) {
				ssize_t n = write(1, p + done, len - done);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					break; /* a closed stdout: the bytes are dropped */
				done += (size_t)n;
			}
			con.tx_bytes += len;
		}
		con.open = true;
		return 0; /* 5.3.6.2: transmit buffers come back with 0 */
	}
	if (qi != CON_RXQ)
		return 0;
	size_t n = mb_iov_from_buf(c->iov + c->nout, c->nin, 0, con.buf + con.off,
				   con.len - con.off);
	con.off += n;
	con.rx_bytes += n;
	return (uint32_t)n;
}

/* stdin was readable: take what is there (EOF or an error ends input). */
static void con_input(struct vs *s)
{
	ssize_t n;
	do
		n = read(0, con.buf, sizeof con.buf);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		con.eof = true;
		return;
	}
	con.len = (size_t)n, con.off = 0;
	vs_serve(s, CON_RXQ);
}

/* virtio-net (sec. 5.1), one queue pair: the guest's frames on a
 * moonbox network backend (moonbox/virtio_netbackend.h: a tap, or a Unix
 * SOCK_SEQPACKET socket). Every buffer starts with a virtio_net_hdr, all
 * zero without offloads: 12 bytes with VERSION_1 (num_buffers, set to 1),
 * 10 for a legacy driver (5.1.6.1; QEMU's virtio-mmio is legacy unless
 * told otherwise). A frame is read from the backend only while none waits for a
 * receive buffer; a buffer smaller than header + frame gets what fits
 * (the driver should post 1526 bytes, 5.1.6.3.1) and counts as truncated. */
enum { NET_RXQ = 0, NET_TXQ = 1 };
static struct {
	struct mb_netbe *be;
	uint8_t mac[6];
	uint8_t frame[MB_NETBE_MAX_FRAME];
	size_t len; /* a frame waiting for a receive buffer, 0: none */
	size_t hdr; /* the header's size, by the features set */
	uint64_t tx, rx, truncated, dropped;
} net;

static void net_features(void *dev, uint64_t f)
{
	net.hdr = f >> VIRTIO_F_VERSION_1 & 1 ? MB_VIRTIO_NET_HDR : MB_VIRTIO_NET_HDR - 2;
}

static bool net_can_serve(void *dev, unsigned qi)
{
	return qi != NET_RXQ || net.len;
}

static uint32_t net_request(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	if (qi == NET_TXQ) {
		struct iovec frame[MB_VQ_MAX_SEGS];
		if (c->out_len <= net.hdr) {
			net.dropped++;
			return 0;
		}
		unsigned n = mb_iov_slice(c->iov, c->nout, net.hdr,
					  c->out_len - net.hdr, frame);
		if (mb_netbe_send(net.be, frame, n))
			net.dropped++; /* no peer, or it is full: a lost frame */
		else
			net.tx++;
		return 0;
	}
	if (qi != NET_RXQ)
		return 0;
	uint8_t hdr[MB_VIRTIO_NET_HDR] = { 0 };
	uint16_t one = 1;
	memcpy(hdr + 10, &one, 2); /* num_buffers (VERSION_1 only) */
	const struct iovec *in = c->iov + c->nout;
	size_t w = mb_iov_from_buf(in, c->nin, 0, hdr, net.hdr);
	w += mb_iov_from_buf(in, c->nin, w, net.frame, net.len);
	if (w < net.hdr + net.len)
		net.truncated++;
	net.rx++;
	net.len = 0;
	return (uint32_t)w;
}

static void net_config(void *dev, uint64_t off, void *data, unsigned size)
{
	/* mac, status, max_virtqueue_pairs, mtu (5.1.4) */
	uint8_t cfg[MB_VIRTIO_NET_CONFIG_SIZE] = { 0 };
	uint16_t st = mb_netbe_connected(net.be) ? VIRTIO_NET_S_LINK_UP : 0, pairs = 1;
	memcpy(cfg, net.mac, 6);
	memcpy(cfg + 6, &st, 2);
	memcpy(cfg + 8, &pairs, 2);
	memcpy(data, cfg + off, size);
}

/* The backend was readable: one frame (or a peer to accept). */
static void net_input(struct vs *s)
{
	ssize_t n = mb_netbe_recv(net.be, net.frame, sizeof net.frame);
	if (n > 0) {
		net.len = (size_t)n;
		vs_serve(s, NET_RXQ);
	} else if (n < 0 && n != -EMSGSIZE) {
		net.dropped++;
	}
}

static int parse_mac(const char *v, uint8_t mac[6])
{
	unsigned b[6];
	char end;
	if (sscanf(v, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
		   &b[5], &end) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

static void no_config(void *dev, uint64_t off, void *data, unsigned size)
{
	memset(data, 0, size);
}

/* ---- arguments ---------------------------------------------------------- */

struct opts {
	const char *type, *socket_path, *image, *serial;
	const char *net_socket, *tap, *mac;
	bool net_listen;
	int fd;
	bool readonly, caps;
	unsigned queues;
};

static bool value(const char *arg, const char *name, const char **out)
{
	size_t n = strlen(name);
	if (strncmp(arg, name, n) || arg[n] != '=')
		return false;
	*out = arg + n + 1;
	return true;
}

static int parse(int argc, char **argv, struct opts *o)
{
	memset(o, 0, sizeof *o);
	o->fd = -1;
	o->queues = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "--vhost-user") && i + 1 < argc)
			o->type = argv[++i];
		else if (value(a, "--vhost-user", &v))
			o->type = v;
		else if (!strcmp(a, "--print-capabilities"))
			o->caps = true;
		else if (value(a, "--socket-path", &v))
			o->socket_path = v;
		else if (value(a, "--fd", &v)) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*v == 0 || *end || n < 0 || n > INT_MAX) {
				fprintf(stderr, "moonbox-device: --fd: \"%s\" is not a "
					"descriptor number\n", v);
				return -1;
			}
			o->fd = (int)n;
		} else if (value(a, "--blk-file", &v) || value(a, "--image", &v))
			o->image = v;
		else if (!strcmp(a, "--read-only") || !strcmp(a, "--readonly"))
			o->readonly = true;
		else if (value(a, "--serial", &v))
			o->serial = v;
		else if (value(a, "--delay-ms", &v)) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*v == 0 || *end || n < 0 || n > 10000) {
				fprintf(stderr, "moonbox-device: --delay-ms: \"%s\" is not "
					"in 0..10000\n", v);
				return -1;
			}
			delay_ms = (unsigned)n;
		} else if (value(a, "--net-socket", &v))
			o->net_socket = v;
		else if (!strcmp(a, "--net-listen"))
			o->net_listen = true;
		else if (value(a, "--tap", &v))
			o->tap = v;
		else if (value(a, "--mac", &v))
			o->mac = v;
		else if (value(a, "--num-queues", &v)) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*v == 0 || *end || n < 1 || n > VS_MAX_QUEUES) {
				fprintf(stderr, "moonbox-device: --num-queues: \"%s\" is not "
					"in 1..%d\n", v, VS_MAX_QUEUES);
				return -1;
			}
			o->queues = (unsigned)n;
		} else {
			fprintf(stderr, "moonbox-device: unknown argument \"%s\"\n", a);
			usage();
			return -1;
		}
	}
	if (!o->type)
		o->type = "blk";
	if (strcmp(o->type, "blk") && strcmp(o->type, "rng") &&
	    strcmp(o->type, "console") && strcmp(o->type, "net")) {
		fprintf(stderr, "moonbox-device: --vhost-user: \"%s\" is not blk, rng, "
			"console or net\n", o->type);
		return -1;
	}
	return 0;
}

/* --print-capabilities: vhost-user.json's VHostUserBackendCapabilities;
 * the features are the ones its schema names for the type. */
static int capabilities(const struct opts *o)
{
	if (!strcmp(o->type, "blk"))
		printf("{\n  \"type\": \"block\",\n  \"features\": [\n"
		       "    \"read-only\",\n    \"blk-file\"\n  ]\n}\n");
	else
		printf("{\n  \"type\": \"%s\",\n  \"features\": []\n}\n", o->type);
	return fflush(stdout) ? 1 : 0;
}

/* ---- the socket --------------------------------------------------------- */

/* --socket-path: a fresh listening socket (a stale socket file left by a
 * killed predecessor is replaced; anything else there is an error). */
static int listen_path(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		fprintf(stderr, "moonbox-device: --socket-path: too long\n");
		return -1;
	}
	strcpy(sa.sun_path, path);
	struct stat st;
	if (!lstat(path, &st) && S_ISSOCK(st.st_mode))
		unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 1)) {
		fprintf(stderr, "moonbox-device: --socket-path=%s: %s\n", path,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* --fd=N: a Unix stream socket. Listening: accept on it; bound and not
 * listening (moonbox's spawn, qemu-storage-daemon's addr.type=fd
 * convention): listen first; connected: that is the front-end. */
static int take_fd(int fd, bool *listening)
{
	int type = 0, domain = 0, acc = 0;
	socklen_t l = sizeof type;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) ||
	    (l = sizeof domain, getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l)) ||
	    type != SOCK_STREAM || domain != AF_UNIX) {
		fprintf(stderr, "moonbox-device: --fd=%d: not a Unix stream socket\n", fd);
		return -1;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	l = sizeof acc;
	getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l);
	struct sockaddr_un peer;
	socklen_t pl = sizeof peer;
	if (acc) {
		*listening = true;
	} else if (!getpeername(fd, (struct sockaddr *)&peer, &pl)) {
		*listening = false;
	} else if (listen(fd, 1)) {
		fprintf(stderr, "moonbox-device: --fd=%d: listen: %s\n", fd,
			strerror(errno));
		return -1;
	} else {
		*listening = true;
	}
	return fd;
}

static void confine(bool writes)
{
	/* On top of the device profile: accepting the next front-end (and a
	 * net backend's peer: only sockets we listen on can accept), socket
	 * timeouts, and the inflight region's memfd (GET_INFLIGHT_FD). */
	static const int extra[] = { SYS_accept4, SYS_accept, SYS_setsockopt,
				     SYS_memfd_create };
	struct mb_sandbox_policy pol = {
		.profile = MB_SANDBOX_DEVICE, .extra = extra,
		.nextra = sizeof extra / sizeof *extra, .write_files = writes,
	};
	struct mb_sandbox_report r;
	char line[700];
	int rc = mb_sandbox_enter(&pol, &r);
	mb_sandbox_describe(&r, line, sizeof line);
	if (rc) {
		fprintf(stderr, "moonbox-device: sandbox: %s\n", mb_errmsg());
		_exit(126); /* never serve a front-end unconfined */
	}
	if (getenv("MOONBOX_VHOST_VERBOSE"))
		fprintf(stderr, "moonbox-device: vhost-user: sandbox: %s\n", line);
}

/* ---- the loop ----------------------------------------------------------- */

static struct vs server;
static bool console;

static void serve_connection(struct vs *s)
{
	for (;;) {
		struct pollfd p[1 + VS_MAX_QUEUES];
		unsigned idx[1 + VS_MAX_QUEUES], n = 0;
		bool polling = false;
		p[n++] = (struct pollfd){ .fd = s->sock, .events = POLLIN };
		int in = -1; /* the console's stdin while nothing is buffered */
		if (console && !con.eof && con.off == con.len) {
			in = (int)n;
			p[n++] = (struct pollfd){ .fd = 0, .events = POLLIN };
		}
		int nin = -1; /* the network backend while no frame waits */
		if (net.be && !net.len) {
			nin = (int)n;
			p[n++] = (struct pollfd){ .fd = mb_netbe_pollfd(net.be),
						  .events = POLLIN };
		}
		for (unsigned i = 0; i < s->m->nqueues; i++) {
			if (!s->r[i].started)
				continue;
			if (s->r[i].kick < 0) {
				polling = true; /* SET_VRING_KICK without an fd */
				continue;
			}
			idx[n] = i;
			p[n++] = (struct pollfd){ .fd = s->r[i].kick, .events = POLLIN };
		}
		int rc = poll(p, n, polling ? 10 : -1);
		if (rc < 0 && errno != EINTR)
			return;
		for (unsigned k = 1; k < n; k++) {
			if ((int)k == in) {
				if (p[k].revents)
					con_input(s);
			} else if ((int)k == nin) {
				if (p[k].revents)
					net_input(s);
			} else if (p[k].revents & POLLIN) {
				vs_kick(s, idx[k]);
			}
		}
		if (polling)
			for (unsigned i = 0; i < s->m->nqueues; i++)
				if (s->r[i].started && s->r[i].kick < 0)
					vs_serve(s, i);
		/* the port's first output may have opened it for waiting input */
		if (console && con.open && con.off < con.len)
			vs_serve(s, CON_RXQ);
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			if (vs_receive(s))
				return;
		}
	}
}

int vs_main(int argc, char **argv)
{
	struct opts o;
	signal(SIGPIPE, SIG_IGN);
	if (parse(argc, argv, &o))
		return 2;
	if (o.caps)
		return capabilities(&o);
	if ((o.socket_path != NULL) == (o.fd >= 0)) {
		fprintf(stderr, "moonbox-device: give one of --socket-path=PATH and "
			"--fd=N\n");
		usage();
		return 2;
	}
	static struct vs_model m;
	if (!strcmp(o.type, "blk")) {
		if (!o.image) {
			fprintf(stderr, "moonbox-device: --vhost-user blk needs "
				"--blk-file=FILE\n");
			return 2;
		}
		struct mb_virtio_blk_config bc = { .image = o.image,
						   .readonly = o.readonly,
						   .serial = o.serial };
		if (!(blk = mb_virtio_blk_new(&bc))) {
			fprintf(stderr, "moonbox-device: %s\n", mb_errmsg());
			return 1;
		}
		blk_queues = o.queues;
		m = (struct vs_model){
			.type = "blk", .device_id = VIRTIO_ID_BLOCK, .nqueues = o.queues,
			.queue_max = VS_MAX_QUEUE_SIZE,
			.features = mb_virtio_blk_features(blk) |
				    1ull << VIRTIO_BLK_F_SIZE_MAX |
				    (o.queues > 1 ? 1ull << VIRTIO_BLK_F_MQ : 0),
			.config_size = MB_VIRTIO_BLK_CONFIG_SIZE,
			.config_read = blk_config, .request = blk_request,
		};
	} else if (!strcmp(o.type, "net")) {
		if ((o.net_socket != NULL) == (o.tap != NULL)) {
			fprintf(stderr, "moonbox-device: --vhost-user net needs one of "
				"--net-socket=PATH and --tap=IFNAME\n");
			return 2;
		}
		memcpy(net.mac, (uint8_t[]){ 0x52, 0x54, 0x00, 0x6d, 0x62, 0x01 }, 6);
		if (o.mac && parse_mac(o.mac, net.mac)) {
			fprintf(stderr, "moonbox-device: --mac: \"%s\" is not "
				"xx:xx:xx:xx:xx:xx\n", o.mac);
			return 2;
		}
		net.hdr = MB_VIRTIO_NET_HDR;
		net.be = o.tap ? mb_netbe_tap(o.tap)
			       : mb_netbe_socket(o.net_socket, o.net_listen);
		if (!net.be) {
			fprintf(stderr, "moonbox-device: %s\n", mb_errmsg());
			return 1;
		}
		m = (struct vs_model){
			.type = "net", .device_id = VIRTIO_ID_NET, .nqueues = 2,
			.queue_max = VS_MAX_QUEUE_SIZE,
			.features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS,
			.config_size = MB_VIRTIO_NET_CONFIG_SIZE, .config_read = net_config,
			.request = net_request, .can_serve = net_can_serve,
			.set_features = net_features,
		};
	} else if (!strcmp(o.type, "console")) {
		console = true;
		m = (struct vs_model){
			.type = "console", .device_id = VIRTIO_ID_CONSOLE, .nqueues = 2,
			.queue_max = VS_MAX_QUEUE_SIZE, .config_size = 12,
			.config_read = no_config, .request = con_request,
			.can_serve = con_can_serve,
		};
	} else {
		m = (struct vs_model){
			.type = "rng", .device_id = VIRTIO_ID_RNG, .nqueues = 1,
			.queue_max = VS_MAX_QUEUE_SIZE, .config_size = 0,
			.config_read = no_config, .request = rng_request,
		};
	}
	bool listening = true;
	int lfd = o.socket_path ? listen_path(o.socket_path) : take_fd(o.fd, &listening);
	if (lfd < 0)
		return 1;
	/* RLIMIT_FSIZE stays for every type: the inflight memfd is sized with
	 * ftruncate, which a limit of 0 refuses (SIGXFSZ). */
	confine(true);
	vs_init(&server, &m);
	bool verbose = getenv("MOONBOX_VHOST_VERBOSE") != NULL;
	for (;;) {
		int c = lfd;
		if (listening) {
			do
				c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			while (c < 0 && errno == EINTR);
			if (c < 0) {
				fprintf(stderr, "moonbox-device: accept: %s\n", strerror(errno));
				return 1;
			}
		}
		vs_connect(&server, c);
		con.open = false; /* a new driver: its port has not written yet */
		serve_connection(&server);
		if (verbose || strcmp(server.why, "the front-end closed the connection"))
			fprintf(stderr, "moonbox-device: vhost-user %s: connection ended "
				"(%s); %llu messages, %llu requests, %llu resubmitted\n",
				m.type, server.why, (unsigned long long)server.messages,
				(unsigned long long)server.requests,
				(unsigned long long)server.resubmitted);
		vs_disconnect(&server);
		if (!listening)
			return 0; /* the one front-end we were given is gone */
	}
}
