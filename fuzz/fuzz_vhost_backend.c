/* libFuzzer: moonbox-device's vhost-user back-end (cli/vhostserve.c)
 * against a hostile front-end. Each input is one connection on a fresh
 * socketpair; its records are [kind, len lo, len hi] + len bytes:
 *   0..3: a message: u32 request, u32 flags, then the payload, with
 *         `kind` file descriptors attached; descriptor i is the RAM memfd
 *         (sealed), an eventfd, an unsealed memfd or a pipe, chosen by
 *         ((request >> 8) + i) % 4 (requests are < 256: those bits are
 *         free for it, and vs_handle sees the whole value);
 *   4: bytes written into "guest RAM" at a 20-bit offset (the driver's
 *      rings and buffers, which a front-end's guest may change any time);
 *   5: a kick on queue byte % 3 (queue 2 does not exist);
 *   6: a well-formed start: features and protocol features (masked by the
 *      input), the RAM by SET_MEM_TABLE or ADD_MEM_REG, queue 0 with an
 *      input size, rings at input offsets, inflight region (maybe), kick,
 *      call, enable: so that the rings and the inflight resume are reached;
 *   7: the model holds queue 0's buffers in the ring (can_serve) or not,
 *      by byte & 1 (a console's receiveq without input);
 *   8: raw bytes on the stream, read by vs_receive (headers, sizes and
 *      payloads split or short as they come).
 * Replies are drained (and their descriptors closed) after every message.
 * A crash, a sanitizer report, a leak or a hang is a finding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/vhostserve.h"

#define RAM (1u << 20)
#define UADDR 0x7f0000000000ull /* the front-end's mapping of RAM */

static uint8_t *ram;
static int ram_fd = -1;

static void cfg_read(void *dev, uint64_t off, void *data, unsigned size)
{
	memset(data, (int)off, size);
}

/* A model that writes a pattern into every writable byte. */
static uint32_t request(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	uint32_t n = 0;
	for (unsigned i = c->nout; i < c->nout + c->nin; i++) {
		memset(c->iov[i].iov_base, 0xa5, c->iov[i].iov_len);
		n += (uint32_t)c->iov[i].iov_len;
	}
	for (unsigned i = 0; i < c->nout; i++) /* reads every readable byte */
		for (size_t k = 0; k < c->iov[i].iov_len; k++)
			n += ((volatile uint8_t *)c->iov[i].iov_base)[k] == 0x5a;
	return n;
}

static bool hold;
static bool can_serve(void *dev, unsigned qi)
{
	return qi != 0 || !hold;
}

static const struct vs_model model = {
	.type = "fuzz", .device_id = 2, .nqueues = 2,
	.queue_max = VS_MAX_QUEUE_SIZE, .features = 0xfff, .config_size = 60,
	.config_read = cfg_read, .request = request, .can_serve = can_serve,
};

static void setup(void)
{
	ram_fd = memfd_create("fuzz-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (ram_fd < 0 || ftruncate(ram_fd, RAM) ||
	    fcntl(ram_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		abort();
	ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd, 0);
	if (ram == MAP_FAILED)
		abort();
}

static int make_fd(unsigned kind)
{
	int p[2], fd;
	switch (kind % 4) {
	case 0:
		return fcntl(ram_fd, F_DUPFD_CLOEXEC, 3);
	case 1:
		return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	case 2:
		fd = memfd_create("fuzz-unsealed", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, 65536)) {
			close(fd);
			return -1;
		}
		return fd;
	default:
		if (pipe2(p, O_CLOEXEC))
			return -1;
		close(p[1]);
		return p[0];
	}
}

/* Whatever the back-end answered: read and dropped, descriptors closed. */
static void drain(int fd)
{
	for (;;) {
		uint8_t buf[8192];
		union {
			char c[CMSG_SPACE(sizeof(int) * 8)];
			struct cmsghdr a;
		} u;
		struct iovec iov = { buf, sizeof buf };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
				     .msg_controllen = sizeof u.c };
		ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n <= 0)
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
					int f;
					memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
					close(f);
				}
	}
}

static int msg(struct vs *s, int peer, uint32_t req, uint32_t flags, const void *p,
	       uint32_t size, int *fds, unsigned nfds)
{
	int rc = vs_handle(s, req, flags, p, size, fds, nfds);
	drain(peer);
	return rc;
}

/* Kind 6: a start that is well-formed in shape, its values from b. */
static int start(struct vs *s, int peer, const uint8_t *b, size_t n)
{
	uint8_t in[32] = { 0 };
	memcpy(in, b, n < sizeof in ? n : sizeof in);
	uint64_t v = ((uint64_t)(in[0] & 1) << 32 | 1ull << 30 | 1ull << 28 | 1ull << 29) &
		     (in[1] & 1 ? ~0ull : ~(1ull << 29));
	int fds[1];
	if (msg(s, peer, 2, 9, &v, 8, NULL, 0)) /* SET_FEATURES */
		return -1;
	/* REPLY_ACK, CONFIGURE_MEM_SLOTS... dropped by the input; the
	 * inflight exchange below needs INFLIGHT_SHMFD */
	v = vs_protocol_features & ~((uint64_t)(in[2] & 0xef) << 8);
	if (msg(s, peer, 16, 1, &v, 8, NULL, 0)) /* SET_PROTOCOL_FEATURES */
		return -1;
	uint64_t reg[5] = { 0, (uint64_t)in[3] << 12, RAM - ((uint64_t)in[3] << 12),
			    UADDR + ((uint64_t)in[3] << 12), (uint64_t)in[3] << 12 };
	fds[0] = make_fd(0);
	if (in[4] & 1) { /* ADD_MEM_REG */
		if (msg(s, peer, 37, 9, reg, sizeof reg, fds, 1))
			return -1;
	} else {
		uint32_t tab[2 + 8] = { 1, 0 };
		memcpy(tab + 2, reg + 1, 32);
		if (msg(s, peer, 5, 9, tab, 40, fds, 1))
			return -1;
	}
	if (in[4] & 2) { /* INFLIGHT_SHMFD: get a region, hand it back */
		uint64_t inf[3] = { 0, 0, (uint64_t)(1 + (in[5] & 1)) |
					      (uint64_t)(1u << (in[6] % 11)) << 16 };
		if (vs_handle(s, 31, 1, inf, 24, NULL, 0))
			return -1;
		/* the reply's fd: read it back to pass with SET_INFLIGHT_FD */
		uint8_t buf[64];
		union {
			char c[CMSG_SPACE(sizeof(int))];
			struct cmsghdr a;
		} u;
		struct iovec iov = { buf, sizeof buf };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
				     .msg_controllen = sizeof u.c };
		ssize_t got = recvmsg(peer, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		struct cmsghdr *c = got > 0 ? CMSG_FIRSTHDR(&mh) : NULL;
		if (c && c->cmsg_type == SCM_RIGHTS && got >= 36) {
			memcpy(fds, CMSG_DATA(c), sizeof(int));
			/* the front-end may have scribbled on it meanwhile */
			void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
			if (m != MAP_FAILED) {
				memcpy((uint8_t *)m + 8, in + 16, 16);
				munmap(m, 4096);
			}
			if (msg(s, peer, 32, 9, buf + 12, 24, fds, 1))
				return -1;
		} else if (c && c->cmsg_type == SCM_RIGHTS) {
			int f;
			memcpy(&f, CMSG_DATA(c), sizeof f);
			close(f);
		}
	}
	uint32_t num = 1u << (in[7] % 12);
	uint32_t st[2] = { 0, num };
	if (msg(s, peer, 8, 9, st, 8, NULL, 0)) /* SET_VRING_NUM */
		return -1;
	uint64_t ua = UADDR + ((uint64_t)(in[8] | in[9] << 8) << 4);
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = { 0, 0, ua, ua + 0x8000 + (in[10] << 2), ua + 0x4000 + (in[11] << 1), 0 };
	if (msg(s, peer, 9, 9, &a, sizeof a, NULL, 0)) /* SET_VRING_ADDR */
		return -1;
	st[1] = in[12] | in[13] << 8;
	if (msg(s, peer, 10, 9, st, 8, NULL, 0)) /* SET_VRING_BASE */
		return -1;
	uint64_t q = 0;
	fds[0] = make_fd(1);
	if (msg(s, peer, 13, 9, &q, 8, fds, 1)) /* SET_VRING_CALL */
		return -1;
	fds[0] = make_fd(1);
	if (msg(s, peer, 12, 9, &q, 8, fds, 1)) /* SET_VRING_KICK */
		return -1;
	st[1] = 1;
	return msg(s, peer, 18, 9, st, 8, NULL, 0); /* SET_VRING_ENABLE */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vs s;
	if (!ram)
		setup();
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
		return 0;
	memset(ram, 0, RAM);
	hold = false;
	vs_init(&s, &model);
	vs_connect(&s, sp[0]);
	const uint8_t *p = data, *end = data + size;
	while (end - p >= 3) {
		unsigned kind = p[0], len = p[1] | p[2] << 8;
		p += 3;
		if (len > (size_t)(end - p))
			len = (unsigned)(end - p);
		const uint8_t *b = p;
		p += len;
		int rc = 0;
		if (kind < 4) {
			uint32_t req = 0, flags = 1;
			if (len >= 4)
				memcpy(&req, b, 4);
			if (len >= 8)
				memcpy(&flags, b + 4, 4);
			int fds[4];
			unsigned nfds = 0;
			for (unsigned i = 0; i < kind; i++) {
				int fd = make_fd((req >> 8) + i);
				if (fd >= 0)
					fds[nfds++] = fd;
			}
			rc = msg(&s, sp[1], req, flags, len > 8 ? b + 8 : NULL,
				 len > 8 ? len - 8 : 0, fds, nfds);
		} else if (kind == 4) {
			if (len >= 3) {
				uint32_t off = (b[0] | b[1] << 8 | (uint32_t)b[2] << 16) % RAM;
				size_t k = len - 3 < RAM - off ? len - 3 : RAM - off;
				memcpy(ram + off, b + 3, k);
			}
		} else if (kind == 5) {
			vs_kick(&s, len ? b[0] % 3 : 0);
			drain(sp[1]);
		} else if (kind == 6) {
			rc = start(&s, sp[1], b, len);
		} else if (kind == 8) {
			/* what is not a whole message ends the stream: EOF */
			if (send(sp[1], b, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len) {
				shutdown(sp[1], SHUT_WR);
				while (!(rc = vs_receive(&s)))
					drain(sp[1]);
				drain(sp[1]);
			}
			rc = -1;
		} else if (kind == 7) {
			hold = len && (b[0] & 1);
			vs_serve(&s, 0);
			drain(sp[1]);
		}
		if (rc)
			break;
	}
	vs_disconnect(&s); /* closes sp[0] */
	close(sp[1]);
	return 0;
}
