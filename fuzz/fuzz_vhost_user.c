/* libFuzzer: the vhost-user front-end against a hostile back-end. A thread
 * plays the back-end on a socketpair: it reads each request (closing any
 * fds) and, for every request that wants a reply, takes one record from
 * the input deciding what to answer: a well-formed reply with input bytes
 * as payload, a wrong size, a wrong request, a reply carrying an fd, raw
 * bytes, or a hang-up. The harness meanwhile brings the device up the way
 * a driver does (handshake, features, queues, DRIVER_OK, a kick, config
 * reads and writes, reset). Nothing the back-end says may crash, leak or
 * hang the front-end (ASan, UBSan, libFuzzer's timeout). GET_INFLIGHT_FD
 * may get a memfd (sealed or not, of an input size) or anything else; the
 * BACKEND_REQ channel (SET_BACKEND_REQ_FD) gets whole messages of input
 * bytes with any request, flags and size after a record that asks for it,
 * served by mb_vhost_user_poll between the driver's steps.
 * Input: byte 0 device type, byte 1 driver feature bits 0-7, byte 2
 * queue count (bits 0-1) and dma = "copy" (bit 7), then the records. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "moonbox/vhost_user.h"

#define RAM (1u << 20)

struct backend {
	int sock;
	int req; /* our end of the BACKEND_REQ channel, or -1 */
	const uint8_t *p, *end;
};

static unsigned take(struct backend *b, unsigned n, uint8_t *out)
{
	unsigned k = (size_t)(b->end - b->p) < n ? (unsigned)(b->end - b->p) : n;
	memcpy(out, b->p, k);
	memset(out + k, 0, n - k);
	b->p += k;
	return k;
}

static int byte(struct backend *b)
{
	return b->p < b->end ? *b->p++ : -1;
}

static bool read_msg(int s, uint32_t h[3], int *req)
{
	char buf[8192];
	union {
		char c[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr a;
	} u;
	struct iovec iov = { h, 12 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
			     .msg_controllen = sizeof u.c };
	if (recvmsg(s, &mh, MSG_WAITALL) != 12)
		return false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
			if (h[0] == 21 && *req < 0)
				*req = fd; /* SET_BACKEND_REQ_FD: keep it */
			else
				close(fd);
		}
	}
	for (uint32_t left = h[2]; left;) {
		uint32_t n = left < sizeof buf ? left : sizeof buf;
		ssize_t r = recv(s, buf, n, MSG_WAITALL);
		if (r <= 0)
			return false;
		left -= (uint32_t)r;
	}
	return true;
}

static uint32_t reply_size(uint32_t req, const uint32_t h[3])
{
	switch (req) {
	case 24: return h[2]; /* GET_CONFIG: as asked */
	case 31: return 24;   /* GET_INFLIGHT_FD */
	default: return 8;    /* u64 replies, acks, vring_state */
	}
}

static void *serve(void *arg)
{
	struct backend *b = arg;
	uint32_t h[3];
	while (read_msg(b->sock, h, &b->req)) {
		uint32_t req = h[0];
		bool get = req == 1 || req == 11 || req == 15 || req == 17 ||
			   req == 24 || req == 31 || req == 36;
		if (!get && !(h[1] & 0x8))
			continue;
		int mode = byte(b);
		if (mode < 0 || mode % 8 == 7)
			break; /* hang up */
		uint8_t payload[512];
		uint32_t rh[3] = { req, 0x5, reply_size(req, h) };
		if (rh[2] > sizeof payload)
			rh[2] = sizeof payload;
		int fd = -1;
		switch (mode % 8) {
		case 1: rh[2] = (uint32_t)(byte(b) & 0xff); break;
		case 2: rh[0] = (uint32_t)byte(b); break;
		case 3: rh[1] = (uint32_t)byte(b); break;
		case 4: fd = eventfd(0, 0); break;
		case 5: { /* raw bytes, then hang up */
			uint8_t raw[64];
			unsigned n = take(b, (unsigned)(byte(b) & 63), raw);
			if (send(b->sock, raw, n, MSG_NOSIGNAL) < 0)
				break;
			goto out;
		}
		case 6: rh[2] = 0x7fffffff; break; /* a size it must not trust */
		}
		if (req == 31 && mode % 8 == 0) { /* a memfd of an input size */
			fd = memfd_create("fuzz-inflight", MFD_ALLOW_SEALING);
			if (fd >= 0 && ftruncate(fd, (off_t)(byte(b) & 0xff) << 8))
				abort();
			if (fd >= 0 && (mode & 8))
				fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
		}
		unsigned n = rh[2] <= sizeof payload ? rh[2] : 16;
		take(b, n, payload);
		if (req == 24 && mode % 8 == 0 && n >= 12) /* echo offset/size */
			memcpy(payload, &(uint32_t[2]){ 0, n - 12 }, 8);
		struct iovec iov[2] = { { rh, 12 }, { payload, n } };
		union {
			char c[CMSG_SPACE(sizeof(int))];
			struct cmsghdr a;
		} u;
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
		if (fd >= 0) {
			mh.msg_control = u.c;
			mh.msg_controllen = sizeof u.c;
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof fd);
		}
		ssize_t w = sendmsg(b->sock, &mh, MSG_NOSIGNAL);
		if (fd >= 0)
			close(fd);
		if (w < 0)
			break;
		if (b->req >= 0 && (mode & 16)) { /* a back-end request, whole */
			uint32_t bh[3] = { (uint32_t)byte(b), (uint32_t)byte(b),
					   (uint32_t)(byte(b) & 0xff) };
			if (mode & 32)
				bh[2] = 0x7fffffff; /* refused before any read */
			uint8_t pl[256];
			unsigned pn = bh[2] <= 255 ? bh[2] : 0;
			take(b, pn, pl);
			if (send(b->req, bh, 12, MSG_NOSIGNAL) < 0 ||
			    (pn && send(b->req, pl, pn, MSG_NOSIGNAL) < 0))
				break;
		}
	}
out:
	shutdown(b->sock, SHUT_RDWR);
	return NULL;
}

static void no_irq(void *ctx, unsigned line, int level)
{
}

static void wr(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	mb_virtio_mmio_ops.write(t, off, &v, 4);
}

static uint32_t rd(struct mb_virtio *t, uint64_t off)
{
	uint32_t v;
	mb_virtio_mmio_ops.read(t, off, &v, 4);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t ids[] = { 2, 26, 1, 4, 3, 9 };
	if (size < 3)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	struct backend b = { sv[1], -1, data + 3, data + size };
	pthread_t th;
	if (pthread_create(&th, NULL, serve, &b))
		abort();
	struct mb_mem *mem = mb_mem_new();
	if (!mem || mb_mem_add(mem, 0, RAM, 0, NULL, "ram"))
		abort();
	struct mb_vhost_user_config cfg = {
		.device_id = ids[data[0] % 6], .fd = sv[0],
		.queues = data[2] % 4, .tag = "fuzz", .copy = data[2] >> 7,
	};
	struct mb_vhost_user *vu = NULL;
	if (mb_vhost_user_new(NULL, mem, &cfg, &vu) == 0) {
		const struct mb_virtio_dev_ops *ops = mb_vhost_user_ops(vu);
		struct mb_virtio_config tc = { ops, vu, mb_vhost_user_features(vu),
					       mem, { no_irq, NULL, 5 }, -1 };
		struct mb_virtio *t = mb_virtio_new(&tc);
		if (!t)
			abort();
		mb_vhost_user_bind(vu, t);
		wr(t, 0x70, 1), wr(t, 0x70, 3);
		wr(t, 0x14, 0);
		uint32_t lo = rd(t, 0x10) & data[1];
		wr(t, 0x24, 0), wr(t, 0x20, lo);
		wr(t, 0x24, 1), wr(t, 0x20, 1); /* VERSION_1 */
		wr(t, 0x70, 11);
		for (unsigned q = 0; q < ops->nqueues; q++) {
			uint64_t base = 0x10000 + q * 0x4000;
			wr(t, 0x30, q), wr(t, 0x38, 8);
			wr(t, 0x80, (uint32_t)base), wr(t, 0x90, (uint32_t)base + 0x1000);
			wr(t, 0xa0, (uint32_t)base + 0x2000), wr(t, 0x44, 1);
		}
		wr(t, 0x70, 15); /* DRIVER_OK: the rings go to the back-end */
		mb_vhost_user_poll(vu);
		wr(t, 0x50, 0);
		for (unsigned off = 0; off < ops->config_size; off += 4)
			rd(t, 0x100 + off);
		if (ops->config_size)
			wr(t, 0x100, 0x12345678);
		mb_vhost_user_poll(vu);
		wr(t, 0x70, 0); /* reset: GET_VRING_BASE */
		mb_virtio_free(t);
		mb_vhost_user_free(vu);
	}
	shutdown(sv[1], SHUT_RDWR); /* wake the back-end if it still reads */
	pthread_join(th, NULL);
	close(sv[1]);
	if (b.req >= 0)
		close(b.req);
	mb_mem_free(mem);
	return 0;
}
