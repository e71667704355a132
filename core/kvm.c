/* Opening /dev/kvm, checking what moonbox needs, and describing the host. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/internal.h"

static const struct cap {
	int id;
	const char *name;
	bool required;
	const char *why;
} caps[] = {
	{ KVM_CAP_USER_MEMORY, "USER_MEMORY", true, "guest RAM" },
	{ KVM_CAP_EXT_CPUID, "EXT_CPUID", true, "CPUID policy" },
	{ KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT", true, "pause, stop, interrupt kicks" },
	{ KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR", false, "Intel real mode" },
	{ KVM_CAP_READONLY_MEM, "READONLY_MEM", false, "read-only ROM regions" },
	{ KVM_CAP_IRQCHIP, "IRQCHIP", false, "irqchip = \"kernel\"" },
	{ KVM_CAP_PIT2, "PIT2", false, "pit = \"kernel\"" },
	{ KVM_CAP_IOEVENTFD, "IOEVENTFD", false, "virtio doorbells without exits" },
	{ KVM_CAP_IRQFD, "IRQFD", false, "virtio interrupts (kernel irqchip)" },
	{ KVM_CAP_EXIT_ON_EMULATION_FAILURE, "EXIT_ON_EMULATION_FAILURE", false,
	  "instruction bytes in emulation errors" },
	{ KVM_CAP_SET_GUEST_DEBUG, "SET_GUEST_DEBUG", false, "breakpoints, gdb" },
	{ KVM_CAP_SYNC_MMU, "SYNC_MMU", false, "host can reclaim guest memory" },
};

int mb_kvm_check_ext(int kvm, int cap)
{
	int r = ioctl(kvm, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? 0 : r;
}

int mb_kvm_open(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return mb_seterr(-e, "/dev/kvm does not exist: enable "
					 "virtualization and load kvm_intel or kvm_amd "
					 "(modprobe kvm_intel)");
		if (e == EACCES || e == EPERM)
			return mb_seterr(-e, "/dev/kvm: permission denied: add "
					 "yourself to the kvm group (usermod -aG kvm "
					 "$USER) or run as root");
		return mb_seterr(-e, "/dev/kvm: %s", strerror(e));
	}
	int v = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		close(fd);
		return mb_seterr(-ENOTSUP, "/dev/kvm speaks API version %d, moonbox "
				 "needs %d: update the host kernel", v,
				 KVM_API_VERSION);
	}
	for (size_t i = 0; i < sizeof caps / sizeof *caps; i++)
		if (caps[i].required && !mb_kvm_check_ext(fd, caps[i].id)) {
			close(fd);
			return mb_seterr(-ENOTSUP, "KVM lacks KVM_CAP_%s (needed for "
					 "%s): update the host kernel",
					 caps[i].name, caps[i].why);
		}
	return fd;
}

/* Which KVM backend module is loaded: the answer to "why is it slow?". */
static const char *backend(void)
{
	static const char *const mods[] = { "kvm_intel", "kvm_amd", "kvm_pvm" };
	static char path[64];
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "/sys/module/%s", mods[i]);
		if (access(path, F_OK) == 0)
			return mods[i];
	}
	return "unknown";
}

int mb_kvm_info(FILE *out)
{
	fprintf(out, "moonbox %s\n", MB_VERSION);
	int fd = mb_kvm_open();
	if (fd < 0) {
		fprintf(out, "kvm: unusable: %s\n", mb_errmsg());
		mb_confine_info(out);
		return fd;
	}
	const char *be = backend();
	fprintf(out, "kvm api version: %d\n", ioctl(fd, KVM_GET_API_VERSION, 0));
	fprintf(out, "kvm backend: %s%s\n", be,
		strcmp(be, "kvm_pvm") == 0
			? " (guest kernel mode is emulated: expect slow guests)"
			: "");
	fprintf(out, "max vcpus: %d\n", mb_kvm_check_ext(fd, KVM_CAP_MAX_VCPUS));
	for (size_t i = 0; i < sizeof caps / sizeof *caps; i++)
		fprintf(out, "  %-26s %-8s %s%s\n", caps[i].name,
			mb_kvm_check_ext(fd, caps[i].id) ? "present" : "missing",
			caps[i].why, caps[i].required ? " (required)" : "");
	mb_holdtime_info(out, fd);
	close(fd);
	mb_confine_info(out);
	return 0;
}
