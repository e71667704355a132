/* The vhost-user front-end against a scripted back-end on a socketpair:
 * the protocol features no installed back-end exercises here (Debian 12's
 * qemu-storage-daemon offers no INFLIGHT_SHMFD and never sends a
 * back-end request). A thread answers the front-end's requests; the test
 * plays the back-end's side of the BACKEND_REQ channel itself and serves
 * it with mb_vhost_user_poll (a bare model has no event loop). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moonbox/vhost_user.h"

#define RAM (1u << 20)

struct script {
	int sock;
	_Atomic int req_fd;        /* the back-end's end of BACKEND_REQ */
	_Atomic uint64_t capacity; /* what GET_CONFIG says */
	_Atomic int add_mem_reg, set_mem_table, set_inflight, inflight_same;
	ino_t inflight_ino;
};

/* One message: header, payload, at most 4 fds. */
static bool read_msg(int s, uint32_t h[3], uint8_t *pl, int fds[4], int *nfds)
{
	union {
		char c[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr a;
	} u;
	struct iovec iov = { h, 12 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
			     .msg_controllen = sizeof u.c };
	*nfds = 0;
	if (recvmsg(s, &mh, MSG_WAITALL) != 12)
		return false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * (size_t)k);
		*nfds += k;
	}
	return h[2] <= 512 && (!h[2] || recv(s, pl, h[2], MSG_WAITALL) == (ssize_t)h[2]);
}

static void reply(int s, uint32_t req, const void *pl, uint32_t n, int fd)
{
	uint32_t h[3] = { req, 0x5, n };
	struct iovec iov[2] = { { h, 12 }, { (void *)pl, n } };
	union {
		char c[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	if (fd >= 0) {
		mh.msg_control = u.c, mh.msg_controllen = sizeof u.c;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	assert_true(sendmsg(s, &mh, MSG_NOSIGNAL) >= 0);
}

static void *serve(void *arg)
{
	struct script *sc = arg;
	uint32_t h[3];
	uint8_t pl[512];
	int fds[4], nfds;
	while (read_msg(sc->sock, h, pl, fds, &nfds)) {
		uint64_t v = 0;
		bool keep_fd = false;
		switch (h[0]) {
		case 1: /* GET_FEATURES: VERSION_1, PROTOCOL_FEATURES */
			v = 1ull << 32 | 1ull << 30;
			reply(sc->sock, 1, &v, 8, -1);
			break;
		case 15: /* REPLY_ACK, BACKEND_REQ, CONFIG, INFLIGHT, MEM_SLOTS */
			v = 1u << 3 | 1u << 5 | 1u << 9 | 1u << 12 | 1u << 15;
			reply(sc->sock, 15, &v, 8, -1);
			break;
		case 36: /* GET_MAX_MEM_SLOTS */
			v = 16;
			reply(sc->sock, 36, &v, 8, -1);
			break;
		case 24: { /* GET_CONFIG: capacity at offset 0 */
			uint64_t cap = sc->capacity;
			memset(pl + 12, 0, h[2] - 12);
			memcpy(pl + 12, &cap, 8);
			reply(sc->sock, 24, pl, h[2], -1);
			break;
		}
		case 31: { /* GET_INFLIGHT_FD: a sealed memfd */
			int fd = memfd_create("inflight", MFD_ALLOW_SEALING);
			assert_true(fd >= 0 && ftruncate(fd, 4096) == 0);
			fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
			struct stat sb;
			fstat(fd, &sb);
			sc->inflight_ino = sb.st_ino;
			uint64_t size = 4096, off = 0;
			memcpy(pl, &size, 8), memcpy(pl + 8, &off, 8);
			reply(sc->sock, 31, pl, 24, fd);
			close(fd);
			break;
		}
		case 11: /* GET_VRING_BASE */
			reply(sc->sock, 11, pl, 8, -1);
			break;
		default:
			if (h[0] == 21 && nfds == 1)
				keep_fd = true, sc->req_fd = fds[0];
			if (h[0] == 37)
				sc->add_mem_reg++;
			if (h[0] == 5)
				sc->set_mem_table++;
			if (h[0] == 32 && nfds == 1) {
				struct stat sb;
				fstat(fds[0], &sb);
				sc->set_inflight++;
				sc->inflight_same = sb.st_ino == sc->inflight_ino;
			}
			if (h[1] & 0x8)
				reply(sc->sock, h[0], &v, 8, -1);
		}
		for (int i = keep_fd ? 1 : 0; i < nfds; i++)
			close(fds[i]);
	}
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

/* A back-end request on the channel; returns the u64 of its reply. */
static uint64_t backend_says(struct mb_vhost_user *vu, int fd, uint32_t req,
			     uint32_t flags)
{
	uint32_t h[3] = { req, flags, 0 };
	assert_int_equal(send(fd, h, 12, 0), 12);
	mb_vhost_user_poll(vu);
	struct { uint32_t h[3]; uint64_t v; } __attribute__((packed)) r;
	assert_int_equal(recv(fd, &r, sizeof r, MSG_WAITALL), (ssize_t)sizeof r);
	assert_int_equal(r.h[0], req);
	assert_int_equal(r.h[1], 0x5);
	assert_int_equal(r.h[2], 8);
	return r.v;
}

static void t_protocol_features(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct script sc = { .sock = sv[1], .req_fd = -1, .capacity = 2048 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, serve, &sc), 0);
	struct mb_mem *mem = mb_mem_new();
	assert_non_null(mem);
	assert_int_equal(mb_mem_add(mem, 0, RAM, 0, NULL, "ram"), 0);
	struct mb_vhost_user_config cfg = { .device_id = 2, .fd = sv[0], .queues = 1 };
	struct mb_vhost_user *vu = NULL;
	assert_int_equal(mb_vhost_user_new(NULL, mem, &cfg, &vu), 0);
	assert_true(sc.req_fd >= 0); /* SET_BACKEND_REQ_FD in the handshake */
	const struct mb_virtio_dev_ops *ops = mb_vhost_user_ops(vu);
	struct mb_virtio_config tc = { ops, vu, mb_vhost_user_features(vu), mem,
				       { no_irq, NULL, 5 }, -1 };
	struct mb_virtio *t = mb_virtio_new(&tc);
	assert_non_null(t);
	mb_vhost_user_bind(vu, t);
	wr(t, 0x70, 1), wr(t, 0x70, 3);
	wr(t, 0x24, 1), wr(t, 0x20, 1); /* VERSION_1 */
	wr(t, 0x70, 11);
	wr(t, 0x30, 0), wr(t, 0x38, 8);
	wr(t, 0x80, 0x10000), wr(t, 0x90, 0x11000), wr(t, 0xa0, 0x12000);
	wr(t, 0x44, 1);
	wr(t, 0x70, 15);
	assert_int_equal(rd(t, 0x70) & 0x40, 0);

	/* CONFIGURE_MEM_SLOTS: the RAM by ADD_MEM_REG, no SET_MEM_TABLE */
	assert_int_equal(sc.add_mem_reg, 1);
	assert_int_equal(sc.set_mem_table, 0);
	/* INFLIGHT_SHMFD: the back-end's own memfd handed back */
	assert_int_equal(sc.set_inflight, 1);
	assert_true(sc.inflight_same);

	/* BACKEND_REQ: a config change with NEED_REPLY is acked with 0, the
	 * config fetched again, generation and InterruptStatus bit 1 set. */
	assert_int_equal(rd(t, 0x100), 2048);
	uint32_t gen = rd(t, 0xfc);
	sc.capacity = 8192;
	assert_int_equal(backend_says(vu, sc.req_fd, 2, 0x1 | 0x8), 0);
	assert_int_equal(rd(t, 0x100), 8192);
	assert_int_not_equal(rd(t, 0xfc), gen);
	assert_int_equal(rd(t, 0x60) & 2, 2);

	/* anything else is refused with a non-zero reply, config untouched */
	sc.capacity = 1;
	assert_int_not_equal(backend_says(vu, sc.req_fd, 1, 0x1 | 0x8), 0);
	assert_int_not_equal(backend_says(vu, sc.req_fd, 99, 0x1 | 0x8), 0);
	assert_int_equal(rd(t, 0x100), 8192);
	assert_int_equal(rd(t, 0x70) & 0x40, 0);

	/* a malformed message (a reply on the request channel) breaks it */
	uint32_t bad[3] = { 2, 0x5, 0 };
	assert_int_equal(send(sc.req_fd, bad, 12, 0), 12);
	mb_vhost_user_poll(vu);
	assert_int_equal(rd(t, 0x70) & 0x40, 0x40);

	mb_virtio_free(t);
	mb_vhost_user_free(vu);
	shutdown(sv[1], SHUT_RDWR);
	pthread_join(th, NULL);
	close(sv[1]);
	close(sc.req_fd);
	mb_mem_free(mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_protocol_features),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
