/* Split virtqueues (devices/virtio/queue.c) over crafted rings in a fake
 * guest memory: well-formed chains, indirect tables, every malformed case
 * the walker must refuse, used-ring updates and EVENT_IDX arithmetic. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox/virtio_queue.h"
#include "virtio_driver.h"

#define RAM (1u << 20)
#define ROM 0x100000u /* 64K read-only region right after RAM */
#define BIG 0x10000000u /* 32 MiB, mapped lazily: aliased into 4 GiB chains */
#define BIG_SIZE (32u << 20)
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define N 8
#define FEAT ((1ull << VIRTIO_F_RING_INDIRECT_DESC) | (1ull << VIRTIO_F_RING_EVENT_IDX))

struct fx {
	struct mb_mem *mem;
	struct mb_vq q;
	struct mb_vq_chain c;
	uint16_t avail_idx;
	int faults;
	char why[160];
};

static void on_fault(void *ctx, struct mb_vq *q, const char *why)
{
	struct fx *f = ctx;
	f->faults++;
	snprintf(f->why, sizeof f->why, "%s", why);
}

static void *gp(struct fx *f, uint64_t gpa)
{
	return mb_mem_ptr(f->mem, gpa, 1, false);
}

static void offer(struct fx *f, uint16_t head)
{
	uint16_t *ring = gp(f, AVAIL + 4);
	ring[f->avail_idx % N] = head;
	f->avail_idx++;
	*(uint16_t *)gp(f, AVAIL + 2) = f->avail_idx;
}

static int enable(struct fx *f, uint64_t features)
{
	f->q.num = N;
	f->q.desc_gpa = DESC, f->q.avail_gpa = AVAIL, f->q.used_gpa = USED;
	return mb_vq_enable(&f->q, 256, features);
}

static int setup(void **state)
{
	static struct fx f;
	memset(&f, 0, sizeof f);
	f.mem = mb_mem_new();
	if (!f.mem || mb_mem_add(f.mem, 0, RAM, 0, NULL, "ram") ||
	    mb_mem_add(f.mem, ROM, 0x10000, MB_MEM_READONLY, NULL, "rom") ||
	    mb_mem_add(f.mem, BIG, BIG_SIZE, 0, NULL, "big"))
		return -1;
	mb_vq_init(&f.q, f.mem);
	f.q.fault = on_fault;
	f.q.fault_ctx = &f;
	if (enable(&f, FEAT))
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	mb_vq_destroy(&f->q);
	mb_mem_free(f->mem);
	return 0;
}

/* Pop expecting a fault whose message contains `what`. */
static void expect_fault(struct fx *f, const char *what)
{
	assert_int_equal(mb_vq_pop(&f->q, &f->c), -EIO);
	assert_int_equal(f->faults, 1);
	assert_non_null(strstr(f->why, what));
	assert_true(f->q.broken);
	/* broken stays broken, and the fault is reported once */
	assert_int_equal(mb_vq_pop(&f->q, &f->c), -EIO);
	assert_int_equal(f->faults, 1);
}

static void test_chain(void **state)
{
	struct fx *f = *state;
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 0);
	vd_put_desc(f->mem, DESC, 3, 0x10000, 16, VIRTQ_DESC_F_NEXT, 5);
	vd_put_desc(f->mem, DESC, 5, 0x20000, 4096, VIRTQ_DESC_F_NEXT, 1);
	vd_put_desc(f->mem, DESC, 1, 0x30000, 1, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 3);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.head, 3);
	assert_int_equal(f->c.nout, 2);
	assert_int_equal(f->c.nin, 1);
	assert_int_equal(f->c.out_len, 16 + 4096);
	assert_int_equal(f->c.in_len, 1);
	assert_ptr_equal(f->c.iov[0].iov_base, gp(f, 0x10000));
	assert_ptr_equal(f->c.iov[1].iov_base, gp(f, 0x20000));
	assert_ptr_equal(f->c.iov[2].iov_base, gp(f, 0x30000));
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 0);
	assert_int_equal(f->faults, 0);
}

static void test_full_length_chain(void **state)
{
	struct fx *f = *state; /* exactly N descriptors is allowed */
	for (unsigned i = 0; i < N; i++)
		vd_put_desc(f->mem, DESC, i, 0x10000 + 0x100 * i, 0x100,
			 i + 1 < N ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nout, N);
}

static void test_indirect(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 2);
	vd_put_desc(f->mem, 0x5000, 2, 0x20000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	vd_put_desc(f->mem, 0x5000, 1, 0x30000, 1, VIRTQ_DESC_F_WRITE, 0);
	vd_put_desc(f->mem, DESC, 4, 0x5000, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 4);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.head, 4);
	assert_int_equal(f->c.nout, 1);
	assert_int_equal(f->c.nin, 2);
	assert_int_equal(f->c.in_len, 513);
}

static void test_indirect_after_direct(void **state)
{
	struct fx *f = *state; /* a direct head may end in an indirect table */
	vd_put_desc(f->mem, 0x5000, 0, 0x30000, 8, VIRTQ_DESC_F_WRITE, 0);
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_put_desc(f->mem, DESC, 1, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nout, 1);
	assert_int_equal(f->c.nin, 1);
}

static void test_indirect_not_negotiated(void **state)
{
	struct fx *f = *state;
	mb_vq_reset(&f->q);
	assert_int_equal(enable(f, 0), 0);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "without VIRTIO_F_RING_INDIRECT_DESC");
}

static void test_indirect_nested(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x6000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "nested");
}

static void test_indirect_with_next(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	offer(f, 0);
	expect_fault(f, "with NEXT");
}

static void test_indirect_bad_len(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x5000, 20, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "indirect table of 20 bytes");
}

static void test_indirect_empty(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x5000, 0, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "indirect table of 0 bytes");
}

static void test_indirect_outside_ram(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, RAM - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "not in guest RAM");
}

static void test_indirect_loop(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_put_desc(f->mem, 0x5000, 1, 0x10000, 16, VIRTQ_DESC_F_NEXT, 0);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "longer than 2");
}

static void test_indirect_next_out_of_table(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 5);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "descriptor 5 out of range (2 entries, indirect)");
}

static void test_loop(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vd_put_desc(f->mem, DESC, 1, 0x10000, 16, VIRTQ_DESC_F_NEXT, 0);
	offer(f, 0);
	expect_fault(f, "longer than 8");
}

static void test_self_loop(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 2, 0x10000, 16, VIRTQ_DESC_F_NEXT, 2);
	offer(f, 2);
	expect_fault(f, "a loop?");
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, N);
	offer(f, 0);
	expect_fault(f, "descriptor 8 out of range");
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;
	offer(f, 0xffff);
	expect_fault(f, "descriptor 65535 out of range");
}

static void test_zero_length(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x10000, 0, 0, 0);
	offer(f, 0);
	expect_fault(f, "zero-length");
}

static void test_outside_ram(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, RAM - 0x100, 0x200, 0, 0); /* runs off the end */
	offer(f, 0);
	expect_fault(f, "not in guest RAM");
}

static void test_address_wraps(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, UINT64_MAX - 0xf, 0x100, 0, 0);
	offer(f, 0);
	expect_fault(f, "not in guest RAM");
}

static void test_oversized(void **state)
{
	struct fx *f = *state; /* 4 GiB - 1 in one buffer: larger than RAM */
	vd_put_desc(f->mem, DESC, 0, 0, UINT32_MAX, 0, 0);
	offer(f, 0);
	expect_fault(f, "not in guest RAM");
}

/* A queue of 256 entries: the descriptor table fills 0x1000-0x1fff. */
static void enable_256(struct fx *f)
{
	mb_vq_reset(&f->q);
	f->q.num = 256;
	f->q.desc_gpa = DESC, f->q.avail_gpa = AVAIL, f->q.used_gpa = USED;
	assert_int_equal(mb_vq_enable(&f->q, 256, FEAT), 0);
}

static void offer_256(struct fx *f, uint16_t head)
{
	uint16_t *ring = gp(f, AVAIL + 4);
	ring[f->avail_idx % 256] = head;
	f->avail_idx++;
	*(uint16_t *)gp(f, AVAIL + 2) = f->avail_idx;
}

/* `direct` chained descriptors of 16 bytes, the last one pointing at an
 * indirect table of `ind` more at 0x5000. */
static void long_chain(struct fx *f, unsigned direct, unsigned ind)
{
	for (unsigned i = 0; i + 1 < direct; i++)
		vd_put_desc(f->mem, DESC, i, 0x10000, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
	vd_put_desc(f->mem, DESC, direct - 1, 0x5000, 16 * ind, VIRTQ_DESC_F_INDIRECT, 0);
	for (unsigned i = 0; i < ind; i++)
		vd_put_desc(f->mem, 0x5000, i, 0x20000, 16,
			 i + 1 < ind ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	offer_256(f, 0);
}

/* A chain is popped into a struct with room for MB_VQ_MAX_SEGS buffers:
 * one more must be refused, not written past the array. */
static struct {
	struct mb_vq_chain c;
	struct iovec spill[64];
} guarded;

static void test_max_buffers(void **state)
{
	struct fx *f = *state; /* 155 direct + 101 indirect = 256: the limit */
	enable_256(f);
	long_chain(f, 156, 101);
	assert_int_equal(mb_vq_pop(&f->q, &guarded.c), 1);
	assert_int_equal(guarded.c.nout, MB_VQ_MAX_SEGS);
	assert_int_equal(guarded.c.out_len, 16 * MB_VQ_MAX_SEGS);
}

static void test_too_many_buffers(void **state)
{
	struct fx *f = *state; /* 198 direct + 100 indirect: 42 too many */
	enable_256(f);
	memset(&guarded, 0, sizeof guarded);
	long_chain(f, 199, 100);
	int rc = mb_vq_pop(&f->q, &guarded.c);
	static const struct iovec zero[64];
	assert_memory_equal(guarded.spill, zero, sizeof zero); /* no overflow */
	assert_int_equal(rc, -EIO);
	assert_non_null(strstr(f->why, "more than 256 buffers"));
}

/* The in and out totals are 32-bit in the used ring and the devices: a
 * chain of 4 GiB or more is refused. Buffers alias one 32 MiB region. */
static void big_table(struct fx *f, unsigned n, uint32_t last, uint16_t flags)
{
	for (unsigned i = 0; i < n; i++)
		vd_put_desc(f->mem, 0x5000, i, BIG, i + 1 < n ? BIG_SIZE : last,
			 flags | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0), (uint16_t)(i + 1));
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
}

static void test_just_under_4g(void **state)
{
	struct fx *f = *state; /* 127 x 32 MiB + (32 MiB - 1) = 4 GiB - 1 */
	big_table(f, 128, BIG_SIZE - 1, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.out_len, UINT32_MAX);
	big_table(f, 128, BIG_SIZE - 1, VIRTQ_DESC_F_WRITE);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.in_len, UINT32_MAX);
}

static void test_4g_out(void **state)
{
	struct fx *f = *state; /* 128 x 32 MiB: 4 GiB exactly */
	big_table(f, 128, BIG_SIZE, 0);
	expect_fault(f, "larger than 4 GiB");
}

static void test_4g_in(void **state)
{
	struct fx *f = *state;
	big_table(f, 130, BIG_SIZE, VIRTQ_DESC_F_WRITE);
	expect_fault(f, "larger than 4 GiB");
}

/* An indirect table holds at most MB_VQ_MAX_SEGS descriptors, even when
 * the chain in it is short. */
static void test_indirect_max_table(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x10000, 16, 0, 0);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16 * MB_VQ_MAX_SEGS, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_int_equal(f->c.nout, 1);
}

static void test_indirect_table_too_big(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, 0x5000, 0, 0x10000, 16, 0, 0);
	vd_put_desc(f->mem, DESC, 0, 0x5000, 16 * (MB_VQ_MAX_SEGS + 1), VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "indirect table of 4112 bytes");
}

static void test_indirect_table_huge(void **state)
{
	struct fx *f = *state; /* 16 x 2^28 - 16 bytes: refused before RAM is looked at */
	vd_put_desc(f->mem, DESC, 0, BIG, 0xfffffff0u, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	expect_fault(f, "indirect table of 4294967280 bytes");
}

static void test_write_to_rom(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, ROM, 16, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	expect_fault(f, "writable RAM");
}

static void test_read_from_rom(void **state)
{
	struct fx *f = *state; /* reading a ROM buffer is fine */
	vd_put_desc(f->mem, DESC, 0, ROM, 16, 0, 0);
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
}

static void test_readable_after_writable(void **state)
{
	struct fx *f = *state;
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	vd_put_desc(f->mem, DESC, 1, 0x20000, 16, 0, 0);
	offer(f, 0);
	expect_fault(f, "readable buffer after a writable");
}

static void test_avail_too_far_ahead(void **state)
{
	struct fx *f = *state;
	*(uint16_t *)gp(f, AVAIL + 2) = N + 1;
	expect_fault(f, "9 entries ahead");
}

static void test_avail_wraps(void **state)
{
	struct fx *f = *state; /* indices are free-running 16-bit counters */
	mb_vq_reset(&f->q);
	*(uint16_t *)gp(f, USED + 2) = 0xfffe;
	f->avail_idx = 0xfffe;
	*(uint16_t *)gp(f, AVAIL + 2) = 0xfffe;
	assert_int_equal(enable(f, FEAT), 0);
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, 0, 0);
	for (int i = 0; i < 4; i++)
		offer(f, 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
		mb_vq_push(&f->q, 0, 0);
	}
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 0);
	assert_int_equal(*(uint16_t *)gp(f, USED + 2), 2);
	assert_int_equal(f->faults, 0);
}

static void test_not_ready(void **state)
{
	struct fx *f = *state;
	mb_vq_reset(&f->q);
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, 0, 0);
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 0); /* nothing is read */
	assert_false(mb_vq_arm(&f->q));
	mb_vq_push(&f->q, 0, 0); /* ignored */
	assert_int_equal(*(uint16_t *)gp(f, USED + 2), 0);
}

static void test_enable_checks(void **state)
{
	struct fx *f = *state;
	mb_vq_reset(&f->q);
	f->q.desc_gpa = DESC, f->q.avail_gpa = AVAIL, f->q.used_gpa = USED;
	f->q.num = 6;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	f->q.num = 0;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	f->q.num = 512;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	f->q.num = 8;
	f->q.desc_gpa = DESC + 8;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "misaligned"));
	f->q.desc_gpa = DESC, f->q.used_gpa = USED + 2;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	f->q.used_gpa = RAM - 16; /* runs off RAM */
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "device ring"));
	f->q.used_gpa = ROM; /* device ring must be writable */
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), -EINVAL);
	f->q.used_gpa = USED;
	assert_int_equal(mb_vq_enable(&f->q, 256, 0), 0);
	assert_true(f->q.ready);
}

static void test_used_ring(void **state)
{
	struct fx *f = *state;
	mb_vq_push(&f->q, 5, 1234);
	mb_vq_push(&f->q, 2, 1);
	uint32_t *e = gp(f, USED + 4);
	assert_int_equal(e[0], 5);
	assert_int_equal(e[1], 1234);
	assert_int_equal(e[2], 2);
	assert_int_equal(e[3], 1);
	assert_int_equal(*(uint16_t *)gp(f, USED + 2), 2);
}

static void test_no_interrupt_flag(void **state)
{
	struct fx *f = *state;
	mb_vq_reset(&f->q);
	assert_int_equal(enable(f, 0), 0); /* no EVENT_IDX: the flag rules */
	mb_vq_push(&f->q, 0, 0);
	assert_true(mb_vq_need_irq(&f->q));
	*(uint16_t *)gp(f, AVAIL) = VIRTQ_AVAIL_F_NO_INTERRUPT;
	mb_vq_push(&f->q, 0, 0);
	assert_false(mb_vq_need_irq(&f->q));
}

static void test_used_event(void **state)
{
	struct fx *f = *state;
	uint16_t *used_event = gp(f, AVAIL + 4 + 2 * N);
	*used_event = 2; /* interrupt me when used idx passes 2 */
	mb_vq_push(&f->q, 0, 0);
	assert_true(mb_vq_need_irq(&f->q)); /* first one always signals */
	mb_vq_push(&f->q, 0, 0);
	assert_false(mb_vq_need_irq(&f->q)); /* idx 2: event 2 not passed */
	mb_vq_push(&f->q, 0, 0);
	assert_true(mb_vq_need_irq(&f->q)); /* idx 3 > 2 */
	mb_vq_push(&f->q, 0, 0);
	assert_false(mb_vq_need_irq(&f->q));
	*used_event = 3; /* already passed: no new interrupt until it wraps */
	mb_vq_push(&f->q, 0, 0);
	assert_false(mb_vq_need_irq(&f->q));
}

static void test_avail_event(void **state)
{
	struct fx *f = *state;
	uint16_t *avail_event = gp(f, USED + 4 + 8 * N);
	vd_put_desc(f->mem, DESC, 0, 0x10000, 16, 0, 0);
	offer(f, 0);
	offer(f, 0);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_true(mb_vq_arm(&f->q)); /* one more is waiting */
	assert_int_equal(*avail_event, 1);
	assert_int_equal(mb_vq_pop(&f->q, &f->c), 1);
	assert_false(mb_vq_arm(&f->q));
	assert_int_equal(*avail_event, 2);
}

static void test_need_event_math(void **state)
{
	(void)state; /* vring_need_event(event, new, old), sec. 2.7.10 */
	assert_true(mb_vq_need_event(0, 1, 0));
	assert_false(mb_vq_need_event(1, 1, 0));
	assert_true(mb_vq_need_event(1, 2, 0));
	assert_true(mb_vq_need_event(4, 10, 3));
	assert_false(mb_vq_need_event(10, 10, 3));
	assert_true(mb_vq_need_event(0xffff, 0, 0xfffe)); /* wraps */
	assert_false(mb_vq_need_event(0, 0, 0xfffe));
	assert_false(mb_vq_need_event(5, 3, 3)); /* nothing new */
}

static void test_iov_helpers(void **state)
{
	(void)state;
	uint8_t a[3] = { 1, 2, 3 }, b[2] = { 4, 5 }, c[4] = { 6, 7, 8, 9 };
	struct iovec iov[3] = { { a, 3 }, { b, 2 }, { c, 4 } }, out[3];
	uint8_t buf[9];
	assert_int_equal(mb_iov_to_buf(iov, 3, 2, buf, 4), 4);
	assert_memory_equal(buf, ((uint8_t[]){ 3, 4, 5, 6 }), 4);
	assert_int_equal(mb_iov_to_buf(iov, 3, 8, buf, 4), 1);
	assert_int_equal(mb_iov_from_buf(iov, 3, 4, "xyz", 3), 3);
	assert_int_equal(b[1], 'x');
	assert_int_equal(c[1], 'z');
	assert_int_equal(mb_iov_slice(iov, 3, 1, 5, out), 3);
	assert_ptr_equal(out[0].iov_base, a + 1);
	assert_int_equal(out[0].iov_len, 2);
	assert_int_equal(out[1].iov_len, 2);
	assert_int_equal(out[2].iov_len, 1);
	assert_int_equal(mb_iov_slice(iov, 3, 9, 5, out), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_chain), T(test_full_length_chain), T(test_indirect),
		T(test_indirect_after_direct), T(test_indirect_not_negotiated),
		T(test_indirect_nested), T(test_indirect_with_next),
		T(test_indirect_bad_len), T(test_indirect_empty),
		T(test_indirect_outside_ram), T(test_indirect_loop),
		T(test_indirect_next_out_of_table), T(test_loop), T(test_self_loop),
		T(test_next_out_of_range), T(test_head_out_of_range),
		T(test_zero_length), T(test_outside_ram), T(test_address_wraps),
		T(test_oversized), T(test_max_buffers), T(test_too_many_buffers),
		T(test_just_under_4g), T(test_4g_out), T(test_4g_in),
		T(test_indirect_max_table), T(test_indirect_table_too_big),
		T(test_indirect_table_huge), T(test_write_to_rom), T(test_read_from_rom),
		T(test_readable_after_writable), T(test_avail_too_far_ahead),
		T(test_avail_wraps), T(test_not_ready), T(test_enable_checks),
		T(test_used_ring), T(test_no_interrupt_flag), T(test_used_event),
		T(test_avail_event), T(test_need_event_math), T(test_iov_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
