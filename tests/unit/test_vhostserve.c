/* cli/vhostserve.c (moonbox-device --vhost-user): the back-end's message
 * handling against a scripted front-end on a socketpair, with "guest RAM"
 * a sealed memfd both sides map: replies and acks, what is refused
 * (sizes, descriptors, unsealed memory, rings outside the table), a ring
 * served through kick and call, and "Inflight I/O tracking": a region a
 * dead back-end left is resubmitted in its counter order, the last batch
 * already used is not, and the avail position follows from the region. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* The back-end is not part of the library: compiled in whole. */
#include "cli/vhostserve.c"

#define RAM (1u << 20)
#define UA 0x7f1200000000ull /* the front-end's address of RAM */
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define BUF 0x10000u
#define NUM 8u

static uint8_t *ram;
static int ram_fd;
static int order[64], norder;

static void cfg(void *dev, uint64_t off, void *data, unsigned size)
{
	for (unsigned i = 0; i < size; i++)
		((uint8_t *)data)[i] = (uint8_t)(off + i);
}

/* Records which head it served; writes its number into the buffer. */
static uint32_t req(void *dev, unsigned qi, const struct mb_vq_chain *c)
{
	if (norder < 64)
		order[norder++] = c->head;
	memset(c->iov[c->nout].iov_base, 0x40 + c->head, c->iov[c->nout].iov_len);
	return (uint32_t)c->iov[c->nout].iov_len;
}

static const struct vs_model model = {
	.type = "test", .device_id = 2, .nqueues = 1, .queue_max = 256,
	.features = 1u << 9, .config_size = 60, .config_read = cfg, .request = req,
};

struct fe {
	struct vs s;
	int peer;
};

static int setup(void **state)
{
	static struct fe f;
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	ram_fd = memfd_create("ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_true(ram_fd >= 0);
	assert_int_equal(ftruncate(ram_fd, RAM), 0);
	assert_int_equal(fcntl(ram_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED, ram_fd, 0);
	assert_true(ram != MAP_FAILED);
	vs_init(&f.s, &model);
	vs_connect(&f.s, sp[0]);
	f.peer = sp[1];
	norder = 0;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fe *f = *state;
	vs_disconnect(&f->s);
	close(f->peer);
	munmap(ram, RAM);
	close(ram_fd);
	return 0;
}

/* One reply: its header, payload into p (up to cap), an fd if any. */
static int get_reply(struct fe *f, uint32_t *request, void *p, size_t cap, int *fd)
{
	uint32_t h[3];
	union {
		char c[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} u;
	struct iovec iov = { h, sizeof h };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.c,
			     .msg_controllen = sizeof u.c };
	if (recvmsg(f->peer, &mh, MSG_DONTWAIT) != sizeof h)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (fd)
		*fd = -1;
	if (c && c->cmsg_type == SCM_RIGHTS && fd)
		memcpy(fd, CMSG_DATA(c), sizeof(int));
	assert_int_equal(h[1], HDR_VERSION | HDR_REPLY);
	assert_true(h[2] <= cap);
	if (h[2])
		assert_int_equal(recv(f->peer, p, h[2], MSG_DONTWAIT), (ssize_t)h[2]);
	*request = h[0];
	return (int)h[2];
}

static bool no_reply(struct fe *f)
{
	char c;
	return recv(f->peer, &c, 1, MSG_DONTWAIT) < 0;
}

static int send_u64(struct fe *f, uint32_t r, uint32_t flags, uint64_t v)
{
	return vs_handle(&f->s, r, flags, &v, 8, NULL, 0);
}

static int send_fd(struct fe *f, uint32_t r, uint64_t v, int fd)
{
	return vs_handle(&f->s, r, 1, &v, 8, &fd, 1);
}

static void test_replies(void **state)
{
	struct fe *f = *state;
	uint64_t v;
	uint32_t r;
	assert_int_equal(vs_handle(&f->s, GET_FEATURES, 1, NULL, 0, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_equal(r, GET_FEATURES);
	assert_true(v >> 32 & 1);                /* VERSION_1 */
	assert_true(v >> 30 & 1);                /* PROTOCOL_FEATURES */
	assert_true(v >> 9 & 1);                 /* the model's bit */
	assert_false(v >> 34 & 1);               /* never PACKED */
	assert_int_equal(vs_handle(&f->s, GET_PROTOCOL_FEATURES, 1, NULL, 0, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_equal(v, vs_protocol_features);
	assert_int_equal(send_u64(f, SET_PROTOCOL_FEATURES, 1, v), 0);
	assert_true(no_reply(f));
	/* REPLY_ACK: 0 for a good request, non-zero for a refused one */
	assert_int_equal(vs_handle(&f->s, SET_OWNER, 1 | HDR_NEED_REPLY, NULL, 0, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_equal(v, 0);
	uint8_t c[12 + 60] = { 0 };
	assert_int_equal(vs_handle(&f->s, SET_CONFIG, 1 | HDR_NEED_REPLY, c, 16, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_not_equal(v, 0);
	/* GET_CONFIG: in range, the model's bytes; out of range, empty */
	uint32_t gc[3] = { 4, 8, 0 };
	memcpy(c, gc, 12);
	assert_int_equal(vs_handle(&f->s, GET_CONFIG, 1, c, 20, NULL, 0), 0);
	uint8_t out[20];
	assert_int_equal(get_reply(f, &r, out, sizeof out, NULL), 20);
	assert_int_equal(out[12], 4);
	assert_int_equal(out[19], 11);
	gc[0] = 56;
	memcpy(c, gc, 12);
	assert_int_equal(vs_handle(&f->s, GET_CONFIG, 1, c, 20, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, out, sizeof out, NULL), 0);
	/* GET_QUEUE_NUM, GET_MAX_MEM_SLOTS */
	assert_int_equal(vs_handle(&f->s, GET_QUEUE_NUM, 1, NULL, 0, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_equal(v, 1);
	assert_int_equal(vs_handle(&f->s, GET_MAX_MEM_SLOTS, 1, NULL, 0, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, &v, 8, NULL), 8);
	assert_int_equal(v, VS_MAX_SLOTS);
}

static void test_refused(void **state)
{
	struct fe *f = *state;
	uint64_t v = 0;
	/* a wrong payload size, a reply flag, a bad version: dropped */
	assert_int_equal(vs_handle(&f->s, SET_FEATURES, 1, &v, 4, NULL, 0), -1);
	assert_int_equal(send_u64(f, SET_FEATURES, 1 | HDR_REPLY, 0), -1);
	assert_int_equal(send_u64(f, SET_FEATURES, 2, 0), -1);
	/* a feature not offered */
	assert_int_equal(send_u64(f, SET_FEATURES, 1, 1ull << 34), -1);
	/* a descriptor on a request that carries none: dropped and closed */
	int e = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(vs_handle(&f->s, GET_FEATURES, 1, NULL, 0, &e, 1), -1);
	assert_int_equal(fcntl(e, F_GETFD), -1);
	/* a ring index past the device's queues, sizes not a power of two */
	uint32_t st[2] = { 1, 8 };
	assert_int_equal(vs_handle(&f->s, SET_VRING_NUM, 1, st, 8, NULL, 0), -1);
	st[0] = 0, st[1] = 6;
	assert_int_equal(vs_handle(&f->s, SET_VRING_NUM, 1, st, 8, NULL, 0), -1);
	st[1] = 512; /* more than the model's queue_max */
	assert_int_equal(vs_handle(&f->s, SET_VRING_NUM, 1, st, 8, NULL, 0), -1);
	/* SET_VRING_KICK: the no-fd flag with an fd, unknown bits */
	e = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(send_fd(f, SET_VRING_KICK, VRING_NOFD, e), -1);
	assert_int_equal(fcntl(e, F_GETFD), -1);
	assert_int_equal(send_u64(f, SET_VRING_KICK, 1, 0x200 | VRING_NOFD), -1);
	/* ADD_MEM_REG before CONFIGURE_MEM_SLOTS was negotiated */
	uint64_t reg[5] = { 0, 0, RAM, UA, 0 };
	int fd = dup(ram_fd);
	assert_int_equal(vs_handle(&f->s, ADD_MEM_REG, 1, reg, 40, &fd, 1), -1);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
}

static int set_table(struct fe *f, int fd, uint64_t size, uint64_t offset)
{
	uint64_t tab[1 + 4] = { 1, 0, size, UA, offset };
	return vs_handle(&f->s, SET_MEM_TABLE, 1, tab, 40, &fd, 1);
}

static void test_memory_checked(void **state)
{
	struct fe *f = *state;
	/* unsealed: a later truncate would fault the back-end */
	int u = memfd_create("unsealed", MFD_CLOEXEC);
	assert_int_equal(ftruncate(u, RAM), 0);
	assert_int_equal(set_table(f, u, RAM, 0), -1);
	assert_non_null(strstr(f->s.why, "not sealed"));
	/* larger than its file */
	assert_int_equal(set_table(f, dup(ram_fd), RAM, 4096), -1);
	assert_non_null(strstr(f->s.why, "not a regular file that large"));
	/* not a file */
	assert_int_equal(set_table(f, eventfd(0, EFD_CLOEXEC), RAM, 0), -1);
	/* two regions, one fd */
	uint64_t tab[1 + 8] = { 2, 0, 4096, UA, 0, 4096, 4096, UA + 4096, 4096 };
	int fd = dup(ram_fd);
	assert_int_equal(vs_handle(&f->s, SET_MEM_TABLE, 1, tab, 72, &fd, 1), -1);
	assert_int_equal(set_table(f, dup(ram_fd), RAM, 0), 0);
	assert_int_equal(f->s.nreg, 1);
}

/* A driver's side in RAM: a chain of one writable 64-byte buffer per head. */
static void put_avail(uint16_t slot, uint16_t head)
{
	uint64_t addr = BUF + 64u * head;
	uint32_t len = 64;
	uint16_t flags = VIRTQ_DESC_F_WRITE, next = 0;
	memcpy(ram + DESC + 16 * head, &addr, 8);
	memcpy(ram + DESC + 16 * head + 8, &len, 4);
	memcpy(ram + DESC + 16 * head + 12, &flags, 2);
	memcpy(ram + DESC + 16 * head + 14, &next, 2);
	memcpy(ram + AVAIL + 4 + 2 * (slot % NUM), &head, 2);
}

static void set_avail_idx(uint16_t idx) { memcpy(ram + AVAIL + 2, &idx, 2); }

static uint16_t used_idx(void)
{
	uint16_t v;
	memcpy(&v, ram + USED + 2, 2);
	return v;
}

static uint32_t used_id(unsigned slot)
{
	uint32_t v;
	memcpy(&v, ram + USED + 4 + 8 * (slot % NUM), 4);
	return v;
}

/* Features, memory, ring 0 (size NUM at DESC/AVAIL/USED), base, call, kick,
 * enable: what QEMU and moonbox send at DRIVER_OK. */
static int start_ring_en(struct fe *f, uint16_t base, int *call, bool enable)
{
	uint64_t feat = 1ull << 32 | 1ull << F_PROTOCOL_FEATURES;
	if (send_u64(f, SET_FEATURES, 1, feat) ||
	    send_u64(f, SET_PROTOCOL_FEATURES, 1, vs_protocol_features))
		return -1;
	if (!f->s.nreg && set_table(f, dup(ram_fd), RAM, 0))
		return -1;
	uint32_t st[2] = { 0, NUM };
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = { 0, 0, UA + DESC, UA + USED, UA + AVAIL, 0 };
	if (vs_handle(&f->s, SET_VRING_NUM, 1, st, 8, NULL, 0) ||
	    vs_handle(&f->s, SET_VRING_ADDR, 1, &a, sizeof a, NULL, 0))
		return -1;
	st[1] = base;
	if (vs_handle(&f->s, SET_VRING_BASE, 1, st, 8, NULL, 0))
		return -1;
	*call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (send_fd(f, SET_VRING_CALL, 0, dup(*call)) ||
	    send_fd(f, SET_VRING_KICK, 0, eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)))
		return -1;
	st[1] = 1;
	return enable ? vs_handle(&f->s, SET_VRING_ENABLE, 1, st, 8, NULL, 0) : 0;
}

static int start_ring(struct fe *f, uint16_t base, int *call)
{
	return start_ring_en(f, base, call, true);
}

static void test_serve(void **state)
{
	struct fe *f = *state;
	int call;
	assert_int_equal(start_ring(f, 0, &call), 0);
	assert_true(f->s.r[0].started);
	put_avail(0, 2);
	put_avail(1, 5);
	set_avail_idx(2);
	vs_kick(&f->s, 0);
	assert_int_equal(used_idx(), 2);
	assert_int_equal(used_id(0), 2);
	assert_int_equal(used_id(1), 5);
	assert_int_equal(ram[BUF + 64 * 5], 0x45);
	uint64_t v = 0;
	assert_int_equal(read(call, &v, 8), 8); /* the call eventfd was signalled */
	/* GET_VRING_BASE stops the ring and says where it was */
	uint32_t st[2] = { 0, 0 }, r;
	assert_int_equal(vs_handle(&f->s, GET_VRING_BASE, 1, st, 8, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, st, 8, NULL), 8);
	assert_int_equal(st[1], 2);
	assert_false(f->s.r[0].started);
	put_avail(2, 1);
	set_avail_idx(3);
	vs_kick(&f->s, 0);
	assert_int_equal(used_idx(), 2); /* stopped: nothing served */
	close(call);
}

static void test_ring_outside_table(void **state)
{
	struct fe *f = *state;
	int call;
	assert_int_equal(set_table(f, dup(ram_fd), 0x4000, 0), 0); /* rings end at 0x3046 */
	assert_int_equal(start_ring(f, 0, &call), 0);
	assert_true(f->s.r[0].started);
	vs_disconnect(&f->s);
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	close(f->peer);
	vs_connect(&f->s, sp[0]);
	f->peer = sp[1];
	close(call);
	/* a table that ends before the used ring: the ring does not start */
	assert_int_equal(set_table(f, dup(ram_fd), 0x3000, 0), 0);
	assert_int_equal(start_ring(f, 0, &call), 0);
	assert_false(f->s.r[0].started);
	close(call);
}

/* GET_INFLIGHT_FD; the region mapped here to play a back-end that died. */
static uint8_t *get_inflight_region(struct fe *f, int *fd, uint64_t *size)
{
	uint64_t in[3] = { 0, 0, 1 | (uint64_t)NUM << 16 };
	uint32_t r;
	uint8_t out[24];
	assert_int_equal(send_u64(f, SET_PROTOCOL_FEATURES, 1, vs_protocol_features), 0);
	assert_int_equal(vs_handle(&f->s, GET_INFLIGHT_FD, 1, in, 24, NULL, 0), 0);
	assert_int_equal(get_reply(f, &r, out, sizeof out, fd), 24);
	assert_true(*fd >= 0);
	memcpy(size, out, 8);
	assert_int_equal(*size, inflight_stride(NUM));
	assert_true(fcntl(*fd, F_GET_SEALS) & F_SEAL_SHRINK);
	uint8_t *m = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	assert_true(m != MAP_FAILED);
	return m;
}

static void mark(uint8_t *region, uint16_t head, uint64_t counter, uint8_t inflight)
{
	region[INF_HDR + INF_DESC * head] = inflight;
	memcpy(region + INF_HDR + INF_DESC * head + 8, &counter, 8);
}

static void reconnect(struct fe *f)
{
	vs_disconnect(&f->s);
	int sp[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
	close(f->peer);
	vs_connect(&f->s, sp[0]);
	f->peer = sp[1];
}

static void test_inflight_resubmit(void **state)
{
	struct fe *f = *state;
	int fd, call;
	uint64_t size;
	uint8_t *reg = get_inflight_region(f, &fd, &size);
	uint64_t msg[3] = { size, 0, 1 | (uint64_t)NUM << 16 };
	int d = dup(fd);
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &d, 1), 0);
	assert_int_equal(start_ring(f, 0, &call), 0);
	assert_int_equal(reg[8], 1); /* version 1: the region initialised */
	/* The driver posts heads 3, 1, 6; the back-end "took" 3 and 1 (marked,
	 * 1 before 3 by counter) and died before using them. */
	put_avail(0, 3);
	put_avail(1, 1);
	put_avail(2, 6);
	set_avail_idx(3);
	mark(reg, 3, 9, 1);
	mark(reg, 1, 4, 1);
	close(call);
	reconnect(f);
	/* The new back-end gets the region back and the ring at the used
	 * index (0), as moonbox's front-end sends it. */
	d = dup(fd);
	assert_int_equal(send_u64(f, SET_PROTOCOL_FEATURES, 1, vs_protocol_features), 0);
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &d, 1), 0);
	assert_int_equal(start_ring_en(f, 0, &call, false), 0);
	assert_int_equal(norder, 0); /* a disabled ring has no side effects */
	uint32_t en[2] = { 0, 1 };
	assert_int_equal(vs_handle(&f->s, SET_VRING_ENABLE, 1, en, 8, NULL, 0), 0);
	assert_int_equal(f->s.resubmitted, 2);
	assert_int_equal(norder, 3);
	assert_int_equal(order[0], 1); /* in counter order */
	assert_int_equal(order[1], 3);
	assert_int_equal(order[2], 6); /* then the avail ring from entry 2 */
	vs_kick(&f->s, 0);
	assert_int_equal(norder, 3);   /* nothing served twice */
	assert_int_equal(used_idx(), 3);
	assert_int_equal(used_id(0), 1);
	assert_int_equal(used_id(1), 3);
	assert_int_equal(used_id(2), 6);
	assert_int_equal(reg[INF_HDR + INF_DESC * 3], 0); /* cleared once used */
	uint16_t ui;
	memcpy(&ui, reg + 14, 2);
	assert_int_equal(ui, 3); /* the region follows the used index */
	munmap(reg, size);
	close(fd);
	close(call);
}

static void test_inflight_last_batch(void **state)
{
	struct fe *f = *state;
	int fd, call;
	uint64_t size;
	uint8_t *reg = get_inflight_region(f, &fd, &size);
	uint64_t msg[3] = { size, 0, 1 | (uint64_t)NUM << 16 };
	int d = dup(fd);
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &d, 1), 0);
	assert_int_equal(start_ring(f, 0, &call), 0);
	put_avail(0, 4);
	put_avail(1, 2);
	set_avail_idx(2);
	/* Died after putting head 4 in the used ring (idx 1), before clearing
	 * its inflight flag and recording used_idx: the last batch is 4. */
	mark(reg, 4, 1, 1);
	mark(reg, 2, 2, 1);
	uint32_t id = 4, len = 64;
	memcpy(ram + USED + 4, &id, 4);
	memcpy(ram + USED + 8, &len, 4);
	uint16_t one = 1, four = 4;
	memcpy(ram + USED + 2, &one, 2);
	memcpy(reg + 12, &four, 2); /* last_batch_head */
	close(call);
	reconnect(f);
	d = dup(fd);
	assert_int_equal(send_u64(f, SET_PROTOCOL_FEATURES, 1, vs_protocol_features), 0);
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &d, 1), 0);
	assert_int_equal(start_ring(f, 1, &call), 0);
	assert_int_equal(f->s.resubmitted, 1); /* 4 was used already */
	assert_int_equal(norder, 1);
	assert_int_equal(order[0], 2);
	assert_int_equal(used_idx(), 2);
	assert_int_equal(used_id(1), 2);
	munmap(reg, size);
	close(fd);
	close(call);
}

static void test_inflight_refused(void **state)
{
	struct fe *f = *state;
	assert_int_equal(send_u64(f, SET_PROTOCOL_FEATURES, 1, vs_protocol_features), 0);
	/* an unsealed file, and one too small for what it claims */
	int u = memfd_create("unsealed", MFD_CLOEXEC);
	assert_int_equal(ftruncate(u, 4096), 0);
	uint64_t msg[3] = { 4096, 0, 1 | (uint64_t)NUM << 16 };
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &u, 1), -1);
	int s = memfd_create("small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_int_equal(ftruncate(s, 64), 0);
	fcntl(s, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	msg[0] = 64;
	assert_int_equal(vs_handle(&f->s, SET_INFLIGHT_FD, 1, msg, 24, &s, 1), -1);
	/* GET_INFLIGHT_FD for more queues than the device has */
	uint64_t in[3] = { 0, 0, 2 | (uint64_t)NUM << 16 };
	assert_int_equal(vs_handle(&f->s, GET_INFLIGHT_FD, 1, in, 24, NULL, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_outside_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_resubmit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_last_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
