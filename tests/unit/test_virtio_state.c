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
#include "virtio_driver.h"

#define RAM (1u << 20)

static void irq_set(void *ctx, unsigned line, int level) {}

static struct mb_virtio *rng_new(struct mb_mem *mem, struct mb_virtio_rng **r)
{
	*r = mb_virtio_rng_new();
	struct mb_virtio_config c = { &mb_virtio_rng_ops, *r, 0, mem,
				      { irq_set, NULL, 5 }, -1 };
	return mb_virtio_new(&c);
}

static void rng_roundtrip(void **unused)
{
	struct mb_mem *mem = vd_ram(RAM);
	assert_non_null(mem);
	struct mb_virtio_rng *r1, *r2;
	struct mb_virtio *t1 = rng_new(mem, &r1), *t2 = rng_new(mem, &r2);
	struct vd d;
	vd_attach(&d, t1, mem);
	vd_setup(&d, 1ull << VIRTIO_F_VERSION_1, 1, 8);
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
