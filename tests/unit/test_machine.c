/* The machine through the C API under KVM: pause, register access and
 * resume from a thread other than the one waiting in mb_machine_run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "moonbox.h"
#include "moonbox/debug_exit.h"

static struct mb_machine *m;

static int setup(void **state)
{
	struct mb_machine_config cfg = { .cpus = 1 };
	struct mb_device *dx;
	assert_int_equal(mb_machine_create(&cfg, &m), 0);
	assert_int_equal(mb_machine_add_memory(m, 0, 16 << 20, NULL, false, "ram"), 0);
	assert_int_equal(mb_debug_exit_attach(m, NULL, &dx), 0);
	assert_int_equal(mb_boot_flat(m, "build/guests/spin.bin", 0x100000, 0x100000,
				      MB_MODE_PROTECTED), 0);
	return 0;
}

static int teardown(void **state)
{
	mb_machine_destroy(m);
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* cmocka's asserts are for the test's own thread (a failure longjmps to
 * its stack): helper threads record what they saw, the test asserts it
 * after pthread_join. */

/* The controller thread: pause, look, change RAX, resume. */
struct controller_log {
	int pause, get, set, resume; /* return codes */
	struct mb_regs regs;         /* as read while paused */
};

static void *controller(void *arg)
{
	struct controller_log *log = arg;
	sleep_ms(200); /* let the guest reach its loop */
	log->pause = mb_machine_pause(m);
	log->get = mb_vcpu_get_regs(m, 0, &log->regs);
	struct mb_regs r = log->regs;
	r.rax = 0x1234;
	log->set = mb_vcpu_set_regs(m, 0, &r);
	log->resume = mb_machine_resume(m);
	return NULL;
}

static void test_pause_from_another_thread(void **state)
{
	pthread_t t;
	struct controller_log log = { -1, -1, -1, -1, { 0 } };
	struct mb_result res;
	assert_int_equal(pthread_create(&t, NULL, controller, &log), 0);
	int rc = mb_machine_run(m, 20, &res);
	pthread_join(t, NULL);
	assert_int_equal(rc, 0);
	assert_int_equal(log.pause, 0);
	assert_int_equal(log.get, 0);
	assert_int_equal(log.set, 0);
	assert_int_equal(log.resume, 0);
	assert_int_equal(res.reason, MB_STOP_EXIT);
	assert_int_equal(res.exit_code, 0x1235);
	assert_true(log.regs.rip >= 0x100002 && log.regs.rip < 0x100020);
	assert_int_equal(log.regs.rax, 0);
}

/* Many pause/resume rounds while the guest runs: nothing hangs or breaks. */
#define ROUNDS 200

struct hammer_log {
	int rounds;              /* completed */
	int errors;              /* pause or resume that failed */
	int not_paused;          /* rounds where paused() said no */
	int first_bad;           /* the first such round, or -1 */
};

static void *hammer(void *arg)
{
	struct hammer_log *log = arg;
	for (int i = 0; i < ROUNDS; i++) {
		bool bad = false;
		if (mb_machine_pause(m)) {
			log->errors++;
			bad = true;
		}
		if (!mb_machine_paused(m)) {
			log->not_paused++;
			bad = true;
		}
		if (mb_machine_resume(m)) {
			log->errors++;
			bad = true;
		}
		if (bad && log->first_bad < 0)
			log->first_bad = i;
		log->rounds++;
	}
	mb_machine_stop(m, MB_STOP_EXIT, 7, "done");
	return NULL;
}

static void test_pause_resume_rounds(void **state)
{
	pthread_t t;
	struct hammer_log log = { 0, 0, 0, -1 };
	struct mb_result res;
	assert_int_equal(mb_machine_start(m), 0);
	assert_int_equal(pthread_create(&t, NULL, hammer, &log), 0);
	int rc = mb_machine_wait(m, 60, &res);
	pthread_join(t, NULL);
	assert_int_equal(rc, 0);
	assert_int_equal(log.rounds, ROUNDS);
	assert_int_equal(log.errors, 0);
	assert_int_equal(log.not_paused, 0);
	assert_int_equal(log.first_bad, -1);
	assert_int_equal(res.reason, MB_STOP_EXIT);
	assert_int_equal(res.exit_code, 7);
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
		cmocka_unit_test_setup_teardown(test_pause_from_another_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume_rounds, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
