/* virtio device state: save -> load into a fresh device -> save gives the
 * same struct, with a queue set up; load errors name the field. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moonbox/virtio_rng.h"

#define RAM (1u << 20)

static void irq_set(void *ctx, unsigned line, int level) {}

static struct mb_virtio *rng_new(struct mb_mem *mem, struct mb_virtio_rng **r)
{
	*r = mb_virtio_rng_new();
	struct mb_virtio_config c = { &mb_virtio_rng_ops, *r, 0, mem,
				      { irq_set, NULL, 5 }, -1 };
	return mb_virtio_new(&c);
}

static void wr(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	mb_virtio_mmio_ops.write(t, off, &v, 4);
}

static void rng_roundtrip(void **unused)
{
	struct mb_mem *mem = mb_mem_new();
	assert_non_null(mem);
	assert_int_equal(mb_mem_add(mem, 0, RAM, 0, NULL, "ram"), 0);
	struct mb_virtio_rng *r1, *r2;
	struct mb_virtio *t1 = rng_new(mem, &r1), *t2 = rng_new(mem, &r2);
	/* the driver's setup (sec. 3.1.1): status, features, queue 0 */
	wr(t1, 0x70, 1), wr(t1, 0x70, 3);
	wr(t1, 0x24, 1), wr(t1, 0x20, 1); /* VERSION_1 */
	wr(t1, 0x70, 11);
	wr(t1, 0x30, 0), wr(t1, 0x38, 8);
	wr(t1, 0x80, 0x1000), wr(t1, 0x90, 0x2000), wr(t1, 0xa0, 0x3000);
	wr(t1, 0x44, 1), wr(t1, 0x70, 15);
	struct mb_virtio_rng_state a, b, c;
	mb_virtio_rng_save(r1, t1, &a);
	assert_true(a.queues[0].ready);
	assert_int_equal(a.queues[0].num, 8);
	assert_int_equal(a.status, 15);
	assert_int_equal(mb_virtio_rng_load(r2, t2, &a), 0);
	mb_virtio_rng_save(r2, t2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	c = a;
	c.queues[0].num = 6;
	assert_int_equal(mb_virtio_rng_load(r2, t2, &c), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "queues[1].num"));
	c = a;
	c.queues[0].desc = 2 * RAM;
	assert_int_equal(mb_virtio_rng_load(r2, t2, &c), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "queues[1]: descriptor ring"));
	c = a;
	c.status = 0x10;
	assert_int_equal(mb_virtio_rng_load(r2, t2, &c), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "status"));
	mb_virtio_rng_save(r2, t2, &c); /* failed loads changed nothing */
	assert_memory_equal(&a, &c, sizeof a);
	mb_virtio_free(t1), mb_virtio_free(t2);
	mb_virtio_rng_free(r1), mb_virtio_rng_free(r2);
	mb_mem_free(mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(rng_roundtrip) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
