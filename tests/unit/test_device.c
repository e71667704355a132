/* Devices in a machine (core/device.c) under KVM: a failed attach leaves
 * no trace, its interrupt line included; shared lines stay taken while any
 * device uses them. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox.h"

static struct mb_machine *m;

static int setup(void **state)
{
	struct mb_machine_config cfg = { .cpus = 1 };
	if (mb_machine_create(&cfg, &m))
		return -1;
	return mb_machine_add_memory(m, 0, 16 << 20, NULL, false, "ram");
}

static int teardown(void **state)
{
	mb_machine_destroy(m);
	return 0;
}

static int rng(uint64_t base, int irq, struct mb_device **out)
{
	struct mb_virtio_rng_attach_config c = { .mmio_base = base, .irq = irq };
	return mb_virtio_rng_attach(m, &c, out);
}

/* The attach takes a free line (7: the allocator's order is 5, 7, 9...),
 * then fails mapping a window that is taken. */
static void test_failed_attach_frees_its_line(void **state)
{
	struct mb_device *a, *b;
	assert_int_equal(rng(0, 0, &a), 0);
	assert_int_equal(mb_device_irq_line(a), 5);
	assert_int_equal(rng(mb_device_range(a, 0)->base, 0, &b), -EEXIST);
	assert_int_equal(mb_machine_ndevices(m), 1);
	assert_int_equal(rng(0, 0, &b), 0);
	assert_int_equal(mb_device_irq_line(b), 7); /* the failed one's line */
	/* a line given by number is released the same way */
	assert_int_not_equal(rng(mb_device_range(a, 0)->base, 9, &b), 0);
	assert_int_equal(rng(0, 0, &b), 0);
	assert_int_equal(mb_device_irq_line(b), 9);
}

/* A line two devices share stays taken when a third one on it fails. */
static void test_shared_line_stays_taken(void **state)
{
	struct mb_device *a, *b, *c;
	assert_int_equal(rng(0, 0, &a), 0);
	int line = mb_device_irq_line(a);
	assert_int_equal(rng(0, line, &b), 0); /* shares it */
	assert_int_equal(mb_device_irq_line(b), line);
	assert_int_not_equal(rng(mb_device_range(a, 0)->base, line, &c), 0);
	mb_device_remove(b);
	assert_int_equal(rng(0, 0, &c), 0);
	assert_int_not_equal(mb_device_irq_line(c), line); /* a still has it */
	mb_device_remove(a);
	assert_int_equal(rng(0, 0, &a), 0);
	assert_int_equal(mb_device_irq_line(a), line); /* free again */
}

int main(void)
{
	int fd = open("/dev/kvm", O_RDWR);
	if (fd < 0) {
		printf("SKIP: /dev/kvm is not usable here\n");
		return 77;
	}
	close(fd);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failed_attach_frees_its_line,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_line_stays_taken, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
