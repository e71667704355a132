/* 8259A pair, register by register (Intel 8259A data sheet). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/pic8259.h"

static struct mb_pic *pic;
static unsigned notified;
static bool notify_saw;

/* Re-enters the PIC: would deadlock if notify ran under the lock. */
static void on_notify(void *opaque)
{
	notified++;
	notify_saw = mb_pic_pending(pic);
}

static void out(unsigned port, uint8_t v)
{
	if (port >= 0x4d0)
		mb_pic_elcr_ops.write(pic, port - 0x4d0, &v, 1);
	else if (port >= 0xa0)
		mb_pic_slave_ops.write(pic, port - 0xa0, &v, 1);
	else
		mb_pic_master_ops.write(pic, port - 0x20, &v, 1);
}

static uint8_t in(unsigned port)
{
	uint8_t v = 0;
	if (port >= 0x4d0)
		mb_pic_elcr_ops.read(pic, port - 0x4d0, &v, 1);
	else if (port >= 0xa0)
		mb_pic_slave_ops.read(pic, port - 0xa0, &v, 1);
	else
		mb_pic_master_ops.read(pic, port - 0x20, &v, 1);
	return v;
}

/* Linux's init: edge, cascade, ICW4 with x86 mode plus extra bits. */
static void init(uint8_t icw4_master, uint8_t icw4_slave)
{
	out(0x20, 0x11);
	out(0x21, 0x20);
	out(0x21, 0x04);
	out(0x21, icw4_master);
	out(0xa0, 0x11);
	out(0xa1, 0x28);
	out(0xa1, 0x02);
	out(0xa1, icw4_slave);
}

static int setup(void **state)
{
	struct mb_pic_config cfg = { .notify = on_notify };
	pic = mb_pic_new(&cfg);
	notified = 0;
	return pic ? 0 : -1;
}

static int setup_init(void **state)
{
	setup(state);
	init(0x01, 0x01);
	notified = 0;
	return 0;
}

static int teardown(void **state)
{
	mb_pic_free(pic);
	pic = NULL;
	return 0;
}

#define EOI 0x20
#define SEOI(l) (0x60 | (l))
#define READ_IRR 0x0a
#define READ_ISR 0x0b

static void test_init_sequence(void **state)
{
	struct mb_pic_state st;
	out(0x21, 0x5a); /* OCW1 before init works as IMR */
	assert_int_equal(in(0x21), 0x5a);
	out(0x20, 0x11); /* ICW1: edge, cascade, IC4; clears IMR */
	assert_int_equal(in(0x21), 0x00);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.init_step, 2);
	out(0x21, 0x27); /* ICW2: low bits ignored */
	out(0x21, 0x04); /* ICW3 */
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.init_step, 4);
	out(0x21, 0x03); /* ICW4: x86, AEOI */
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.init_step, 0);
	assert_int_equal(st.master.vector_base, 0x20);
	assert_int_equal(st.master.icw3, 0x04);
	assert_true(st.master.aeoi);
	assert_int_equal(st.master.lowest, 7);
	out(0x21, 0xfb); /* now OCW1 */
	assert_int_equal(in(0x21), 0xfb);

	/* Single mode without IC4: ICW1, ICW2 and done. */
	out(0xa0, 0x12);
	out(0xa1, 0x70);
	out(0xa1, 0x3c);
	mb_pic_state(pic, &st);
	assert_int_equal(st.slave.vector_base, 0x70);
	assert_true(st.slave.single);
	assert_false(st.slave.aeoi);
	assert_int_equal(in(0xa1), 0x3c);
}

static void test_basic_and_nonspecific_eoi(void **state)
{
	mb_pic_set_irq(pic, 1, 1);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(notified, 1);
	assert_true(notify_saw);
	out(0x20, READ_IRR);
	assert_int_equal(in(0x20), 0x02);
	assert_int_equal(mb_pic_ack(pic), 0x21);
	assert_false(mb_pic_pending(pic));
	assert_int_equal(in(0x20), 0x00); /* edge IRR cleared at INTA */
	out(0x20, READ_ISR);
	assert_int_equal(in(0x20), 0x02);
	assert_int_equal(in(0x20), 0x02); /* RIS sticks until changed */
	out(0x20, EOI);
	assert_int_equal(in(0x20), 0x00);
	/* The line is still high: no new edge, no new request. */
	assert_false(mb_pic_pending(pic));
	mb_pic_set_irq(pic, 1, 0);
	mb_pic_set_irq(pic, 1, 1);
	assert_true(mb_pic_pending(pic));
}

static void test_pulse_latches(void **state)
{
	mb_pic_set_irq(pic, 4, 1);
	mb_pic_set_irq(pic, 4, 0);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x24);
}

static void test_priority_nesting(void **state)
{
	mb_pic_set_irq(pic, 3, 1);
	mb_pic_set_irq(pic, 1, 1);
	assert_int_equal(mb_pic_ack(pic), 0x21);
	/* IR3 is lower than IR1 in service: blocked. */
	assert_false(mb_pic_pending(pic));
	/* IR0 is higher: nests. */
	mb_pic_set_irq(pic, 0, 1);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x20);
	out(0x20, READ_ISR);
	assert_int_equal(in(0x20), 0x03);
	out(0x20, EOI); /* clears the highest: IR0 */
	assert_int_equal(in(0x20), 0x02);
	assert_false(mb_pic_pending(pic));
	notified = 0;
	out(0x20, EOI); /* IR1 out: IR3 may go */
	assert_int_equal(in(0x20), 0x00);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(notified, 1);
	assert_int_equal(mb_pic_ack(pic), 0x23);
}

static void test_specific_eoi(void **state)
{
	mb_pic_set_irq(pic, 5, 1);
	mb_pic_set_irq(pic, 6, 1);
	assert_int_equal(mb_pic_ack(pic), 0x25);
	out(0x20, SEOI(5));
	assert_int_equal(mb_pic_ack(pic), 0x26);
	out(0x20, READ_ISR);
	assert_int_equal(in(0x20), 0x40);
	out(0x20, SEOI(3)); /* EOI for a level not in service: no effect */
	assert_int_equal(in(0x20), 0x40);
	out(0x20, SEOI(6));
	assert_int_equal(in(0x20), 0x00);
}

static void test_rotation(void **state)
{
	struct mb_pic_state st;
	/* Set priority: IR4 lowest, so IR5 is highest. */
	out(0x20, 0xc0 | 4);
	mb_pic_set_irq(pic, 3, 1);
	mb_pic_set_irq(pic, 6, 1);
	assert_int_equal(mb_pic_ack(pic), 0x26);
	/* Rotate on non-specific EOI: IR6 becomes lowest, IR7 highest. */
	out(0x20, 0xa0);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.lowest, 6);
	assert_int_equal(st.master.isr, 0);
	mb_pic_set_irq(pic, 7, 1);
	assert_int_equal(mb_pic_ack(pic), 0x27);
	/* Rotate on specific EOI: named IR becomes lowest. */
	out(0x20, 0xe0 | 7);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.lowest, 7);
	assert_int_equal(st.master.isr, 0);
	assert_int_equal(mb_pic_ack(pic), 0x23);
	out(0x20, 0x40); /* OCW2 no-op */
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.isr, 0x08);
}

static void test_aeoi_and_rotate_in_aeoi(void **state)
{
	struct mb_pic_state st;
	init(0x03, 0x01);
	mb_pic_set_irq(pic, 2 + 1, 1);
	assert_int_equal(mb_pic_ack(pic), 0x23);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.isr, 0);
	/* Nothing in service: a lower line goes at once. */
	mb_pic_set_irq(pic, 5, 1);
	assert_true(mb_pic_pending(pic));
	out(0x20, 0x80); /* rotate in AEOI mode: set */
	assert_int_equal(mb_pic_ack(pic), 0x25);
	mb_pic_state(pic, &st);
	assert_true(st.master.rotate_aeoi);
	assert_int_equal(st.master.lowest, 5);
	out(0x20, 0x00); /* clear */
	mb_pic_state(pic, &st);
	assert_false(st.master.rotate_aeoi);
}

static void test_masking(void **state)
{
	out(0x21, 0x10);
	mb_pic_set_irq(pic, 4, 1);
	assert_false(mb_pic_pending(pic));
	assert_int_equal(notified, 0);
	out(0x20, READ_IRR);
	assert_int_equal(in(0x20), 0x10); /* IRR sees masked requests */
	out(0x21, 0x00);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(notified, 1);
	/* Masking the slave's line keeps the master quiet too. */
	assert_int_equal(mb_pic_ack(pic), 0x24);
	out(0x20, EOI);
	out(0xa1, 0x01);
	mb_pic_set_irq(pic, 8, 1);
	assert_false(mb_pic_pending(pic));
	out(0x20, READ_IRR);
	assert_int_equal(in(0x20), 0x00);
}

static void test_cascade(void **state)
{
	struct mb_pic_state st;
	mb_pic_set_irq(pic, 2, 1); /* the cascade pin is not a line */
	assert_false(mb_pic_pending(pic));
	mb_pic_set_irq(pic, 10, 1);
	assert_true(mb_pic_pending(pic));
	out(0x20, READ_IRR);
	assert_int_equal(in(0x20), 0x04);
	assert_int_equal(mb_pic_ack(pic), 0x2a);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.isr, 0x04);
	assert_int_equal(st.slave.isr, 0x04);
	assert_int_equal(st.master.irr, 0x00);
	/* A higher slave request is blocked by IR2 in service on the
	 * master (fully nested, no SFNM). */
	mb_pic_set_irq(pic, 8, 1);
	assert_false(mb_pic_pending(pic));
	out(0xa0, EOI);
	out(0x20, EOI);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x28);
	/* Master lines above IR2 still preempt a slave in service. */
	mb_pic_set_irq(pic, 1, 1);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x21);
}

static void test_special_fully_nested(void **state)
{
	init(0x11, 0x01);
	mb_pic_set_irq(pic, 9, 1);
	assert_int_equal(mb_pic_ack(pic), 0x29);
	mb_pic_set_irq(pic, 8, 1);
	/* SFNM: the slave's higher request passes IR2 in service. */
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x28);
	/* But a lower master line does not. */
	mb_pic_set_irq(pic, 3, 1);
	assert_false(mb_pic_pending(pic));
}

static void test_level_via_elcr(void **state)
{
	out(0x4d0, 0xff);
	out(0x4d1, 0xff);
	assert_int_equal(in(0x4d0), 0xf8); /* IRQ0-2 are always edge */
	assert_int_equal(in(0x4d1), 0xde); /* so are IRQ8 and IRQ13 */
	out(0x4d1, 0x08);                  /* IRQ11 level */
	mb_pic_set_irq(pic, 11, 1);
	assert_int_equal(mb_pic_ack(pic), 0x2b);
	out(0xa0, EOI);
	out(0x20, EOI);
	/* Still high: requests again without a new edge. */
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x2b);
	/* The handler quiets the device, then EOIs: nothing more. */
	mb_pic_set_irq(pic, 11, 0);
	out(0xa0, EOI);
	out(0x20, EOI);
	assert_false(mb_pic_pending(pic));
	/* A level request dropped before INTA: the master latched IR2,
	 * so the slave answers spurious IR15. */
	mb_pic_set_irq(pic, 11, 1);
	mb_pic_set_irq(pic, 11, 0);
	assert_int_equal(mb_pic_ack(pic), 0x2f);
	out(0x20, EOI);
	assert_false(mb_pic_pending(pic));
	out(0xa0, READ_IRR);
	assert_int_equal(in(0xa0), 0x00);
	/* Switching a high line to level mode requests at once. */
	out(0x4d0, 0x00);
	mb_pic_set_irq(pic, 5, 1);
	assert_int_equal(mb_pic_ack(pic), 0x25);
	out(0x20, EOI);
	assert_false(mb_pic_pending(pic));
	out(0x4d0, 0x20);
	assert_true(mb_pic_pending(pic));
}

static void test_ltim(void **state)
{
	out(0x20, 0x19); /* ICW1 with LTIM, single */
	out(0x21, 0x08); /* ICW2 */
	out(0x21, 0x01); /* ICW4 */
	mb_pic_set_irq(pic, 3, 1);
	assert_int_equal(mb_pic_ack(pic), 0x0b);
	out(0x20, EOI);
	assert_true(mb_pic_pending(pic));
}

static void test_spurious(void **state)
{
	struct mb_pic_state st;
	out(0x4d0, 0x10);
	mb_pic_set_irq(pic, 4, 1);
	assert_true(mb_pic_pending(pic));
	mb_pic_set_irq(pic, 4, 0); /* gone before INTA */
	assert_int_equal(mb_pic_ack(pic), 0x27);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.isr, 0); /* IR7 not in service */
	assert_int_equal(st.spurious, 1);
	/* Masked between INT and INTA: spurious too. */
	mb_pic_set_irq(pic, 5, 1);
	out(0x21, 0x20);
	assert_int_equal(mb_pic_ack(pic), 0x27);
	out(0x21, 0x00);
	assert_int_equal(mb_pic_ack(pic), 0x25);
	out(0x20, EOI);
	/* Slave spurious: the master latched IR2 on the slave's edge; the
	 * slave's level request vanishes before INTA. Vector 15, master IR2
	 * in service (the guest EOIs the master only), slave ISR clear. */
	out(0x4d1, 0x02);
	mb_pic_set_irq(pic, 9, 1);
	assert_true(mb_pic_pending(pic));
	mb_pic_set_irq(pic, 9, 0);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x2f);
	mb_pic_state(pic, &st);
	assert_int_equal(st.master.isr, 0x04);
	assert_int_equal(st.slave.isr, 0x00);
	assert_int_equal(st.spurious, 3);
	out(0x20, EOI);
	assert_false(mb_pic_pending(pic));
}

static void test_slave_aeoi_keeps_second_request(void **state)
{
	/* Slave in AEOI with two requests: after the first INTA the slave's
	 * INT is still up; the master must take a second edge. */
	init(0x03, 0x03);
	mb_pic_set_irq(pic, 12, 1);
	mb_pic_set_irq(pic, 9, 1);
	assert_int_equal(mb_pic_ack(pic), 0x29);
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x2c);
	assert_false(mb_pic_pending(pic));
}

static void test_poll(void **state)
{
	out(0x20, 0x0c); /* OCW3 poll */
	assert_int_equal(in(0x20), 0x00); /* nothing: I bit clear */
	mb_pic_set_irq(pic, 6, 1);
	mb_pic_set_irq(pic, 3, 1);
	out(0x20, 0x0c);
	assert_int_equal(in(0x20), 0x83);
	out(0x20, READ_ISR);
	assert_int_equal(in(0x20), 0x08); /* poll acknowledged IR3 */
	assert_int_equal(in(0x21), 0x00); /* poll was one-shot */
	out(0x20, EOI);
	out(0x20, 0x0c);
	assert_int_equal(in(0x21), 0x86); /* odd port polls too */
}

static void test_special_mask_mode(void **state)
{
	mb_pic_set_irq(pic, 3, 1);
	assert_int_equal(mb_pic_ack(pic), 0x23);
	mb_pic_set_irq(pic, 5, 1);
	assert_false(mb_pic_pending(pic));
	out(0x21, 0x08); /* mask the in-service level */
	out(0x20, 0x68); /* OCW3: ESMM + SMM */
	assert_true(mb_pic_pending(pic));
	assert_int_equal(mb_pic_ack(pic), 0x25);
	/* Non-specific EOI skips the masked IR3 in SMM. */
	out(0x20, EOI);
	out(0x20, READ_ISR);
	assert_int_equal(in(0x20), 0x08);
	out(0x20, 0x48); /* leave SMM */
	out(0x20, EOI);
	assert_int_equal(in(0x20), 0x00);
}

static void test_word_access(void **state)
{
	uint8_t v[2] = { 0x0b, 0x55 };
	/* outw 0x20: OCW3 to 0x20 then OCW1 to 0x21 */
	mb_pic_master_ops.write(pic, 0, v, 2);
	assert_int_equal(in(0x21), 0x55);
	uint8_t r[2] = { 0, 0 };
	mb_pic_master_ops.read(pic, 0, r, 2);
	assert_int_equal(r[0], 0x00);
	assert_int_equal(r[1], 0x55);
}

static unsigned acked_count;
static void count_ack(void *opaque)
{
	(*(unsigned *)opaque)++;
}

/* An acknowledgement listener hears INTAs of its own line only, never a
 * spurious answer. */
static void test_ack_notifier(void **state)
{
	acked_count = 0;
	mb_pic_on_ack(pic, 0, count_ack, &acked_count);
	mb_pic_set_irq(pic, 0, 1);
	mb_pic_set_irq(pic, 0, 0);
	assert_int_equal(mb_pic_ack(pic), 0x20);
	assert_int_equal(acked_count, 1);
	out(0x20, 0x20); /* EOI */
	mb_pic_set_irq(pic, 1, 1);
	assert_int_equal(mb_pic_ack(pic), 0x21);
	assert_int_equal(acked_count, 1);
	assert_int_equal(mb_pic_ack(pic) & 7, 7); /* spurious */
	assert_int_equal(acked_count, 1);
	mb_pic_on_ack(pic, 0, NULL, NULL);
}

/* IR0 in service, IR1 and the slave's IR4 (line 12) requested behind
 * it, rotation and ELCR set: a fresh PIC loaded from the state saves the
 * same, and answers the same INTAs after the EOI. */
static void test_state_round_trip(void **state)
{
	out(0x4d1, 0x10); /* line 12 level-triggered */
	out(0x20, 0xc4);  /* set priority: IR4 lowest */
	mb_pic_set_irq(pic, 0, 1);
	assert_int_equal(mb_pic_ack(pic), 0x20);
	mb_pic_set_irq(pic, 1, 1);
	mb_pic_set_irq(pic, 12, 1);
	out(0xa0, 0x0b);  /* slave: read ISR */
	struct mb_pic_state a, b;
	mb_pic_save(pic, &a);
	assert_int_equal(a.master.isr, 0x01);
	assert_int_equal(a.master.irr & 0x02, 0x02);
	assert_false(a.int_output);

	unsigned n2 = 0;
	struct mb_pic *p2 = mb_pic_new(NULL);
	(void)n2;
	assert_int_equal(mb_pic_load(p2, &a), 0);
	mb_pic_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);

	struct mb_pic *keep = pic;
	for (int i = 0; i < 2; i++) {
		pic = i ? p2 : keep;
		out(0x20, EOI);
	}
	pic = keep;
	assert_true(mb_pic_pending(pic));
	assert_true(mb_pic_pending(p2));
	for (int k = 0; k < 3; k++)
		assert_int_equal(mb_pic_ack(pic), mb_pic_ack(p2));
	mb_pic_save(pic, &a);
	mb_pic_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);

	b = a;
	b.master.init_step = 1;
	assert_int_equal(mb_pic_load(p2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "master.init_step"));
	b = a;
	b.slave.elcr = 0x01; /* IRQ8 is always edge */
	assert_int_equal(mb_pic_load(p2, &b), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "slave.elcr"));
	mb_pic_save(p2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_pic_free(p2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ack_notifier, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_init_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_basic_and_nonspecific_eoi, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_pulse_latches, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_priority_nesting, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_specific_eoi, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_rotation, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_aeoi_and_rotate_in_aeoi, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_masking, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_cascade, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_special_fully_nested, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_level_via_elcr, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_ltim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spurious, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_slave_aeoi_keeps_second_request, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_poll, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_special_mask_mode, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_word_access, setup_init, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup_init, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
