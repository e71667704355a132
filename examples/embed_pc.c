/*
 * embed_pc: a PC booting Linux, from C, with nothing but <moonbox.h>.
 *
 *   embed_pc KERNEL INITRD "CMDLINE" [DISK]
 *
 * The machine machines/linux.lua builds (one vCPU; 256 MiB here where
 * linux.lua now gives 128 MiB), moonbox's own 8259A pair, the 8254
 * (re-injecting ticks a busy guest missed), COM1 on the terminal (Ctrl-a x
 * quits), the RTC, the i8042 (reset line) and, with
 * DISK, a virtio-blk disk (/dev/vda). Exit status as linux.lua gives it:
 * 0 when the guest powers off, halts, reboots or resets; the value it wrote
 * to a debug_exit port; otherwise the run's non-zero exit code.
 *
 * Build: cc embed_pc.c $(pkg-config --cflags --libs moonbox)
 */
#include <moonbox.h>
#include <stdio.h>
#include <stdlib.h>


static int fail(const char *what)
{
	fprintf(stderr, "embed_pc: %s: %s\n", what, mb_errmsg());
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: %s KERNEL INITRD \"CMDLINE\" [DISK]\n", argv[0]);
		return 2;
	}
	const char *disk = argc == 5 ? argv[4] : NULL;
	struct mb_machine *m;
	struct mb_device *dev;
	struct mb_result r;
	int status = 1;

	if (mb_machine_create(&(struct mb_machine_config){ .cpus = 1 }, &m))
		return fail("machine");
	if (mb_machine_add_memory(m, 0, 256 << 20, NULL, false, "ram")) {
		fail("memory");
		goto out;
	}
	if (mb_pic_attach(m, &(struct mb_pic_attach_config){ 0 }, &dev)) {
		fail("pic8259");
		goto out;
	}
	if (mb_pit_attach(m, &(struct mb_pit_attach_config){ 0 }, &dev)) {
		fail("pit8254");
		goto out;
	}
	struct mb_chr *con = mb_chr_stdio(m);
	if (!con || mb_uart_attach(m, &(struct mb_uart_attach_config){ .com = 1, .chr = con },
				   &dev)) {
		fail("uart16550");
		goto out;
	}
	if (mb_rtc_attach(m, &(struct mb_rtc_attach_config){ 0 }, &dev)) {
		fail("rtc");
		goto out;
	}
	if (mb_i8042_attach(m, &(struct mb_i8042_attach_config){ 0 }, &dev)) {
		fail("i8042");
		goto out;
	}
	/* Before the kernel: boot_linux announces the virtio devices present. */
	if (disk && mb_virtio_blk_attach(m, &(struct mb_virtio_blk_attach_config){
						 .image = disk }, &dev)) {
		fail("virtio_blk");
		goto out;
	}
	if (mb_boot_linux(m, &(struct mb_linux_config){ .kernel = argv[1],
			  .initrd = argv[2], .cmdline = argv[3] })) {
		fail("boot_linux");
		goto out;
	}
	if (mb_machine_run(m, 0, &r)) {
		fail("run");
		goto out;
	}
	if (r.reason != MB_STOP_HALT)
		fprintf(stderr, "\r\nembed_pc: guest stopped: %s: %s\r\n",
			mb_stop_name(r.reason), r.message);
	switch (r.reason) {
	case MB_STOP_SHUTDOWN: case MB_STOP_HALT: case MB_STOP_RESET:
		status = 0;
		break;
	default: /* exit: the guest's code; timeout, error: non-zero */
		status = r.exit_code;
	}
out:
	mb_machine_destroy(m); /* restores the terminal */
	return status;
}
