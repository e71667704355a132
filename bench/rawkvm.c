/* The baseline: a bare KVM_RUN loop with plain ioctls, no libmoonbox.
 * Usage: rawkvm GUEST.bin [MEMSIZE_MiB]
 * Loads the flat binary at 0x100000, starts it in 32-bit protected mode with
 * flat segments (no GDT: the guest never reloads a segment), counts PIO and
 * MMIO exits (reads return 0xff), and stops at a write to port 0xf4 or HLT.
 * Prints: raw exits=N seconds=S exits_per_s=X first_exit_us=Y hwm_kb=Z
 * (first_exit_us counts from process start, see bench_t0_us()). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"

#define LOAD 0x100000

static void die(const char *what)
{
	fprintf(stderr, "rawkvm: %s: %s\n", what, strerror(errno));
	exit(1);
}

static struct kvm_segment flat(uint16_t sel, int code)
{
	return (struct kvm_segment){ .base = 0, .limit = 0xffffffff,
		.selector = sel, .type = code ? 0xb : 0x3, .present = 1,
		.s = 1, .db = 1, .g = 1 };
}

int main(int argc, char **argv)
{
	uint64_t t0 = bench_t0_us(), first = 0;
	if (argc < 2) {
		fprintf(stderr, "usage: rawkvm GUEST.bin [MEMSIZE_MiB]\n");
		return 2;
	}
	size_t memsize = (argc > 2 ? strtoull(argv[2], NULL, 0) : 2) << 20;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul); /* as moonbox does (VMX) */
	uint8_t *mem = mmap(NULL, memsize, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0)
		die(argv[1]);
	if (read(fd, mem + LOAD, memsize - LOAD) <= 0)
		die("read");
	close(fd);
	struct kvm_userspace_memory_region region = {
		.memory_size = memsize, .userspace_addr = (uintptr_t)mem };
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (cpu < 0)
		die("KVM_CREATE_VCPU");
	long runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, (size_t)runsz, PROT_READ | PROT_WRITE,
				   MAP_SHARED, cpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");
	struct kvm_sregs s;
	if (ioctl(cpu, KVM_GET_SREGS, &s) < 0)
		die("KVM_GET_SREGS");
	s.cs = flat(0x08, 1);
	s.ds = s.es = s.fs = s.gs = s.ss = flat(0x10, 0);
	s.cr0 |= 1; /* PE */
	struct kvm_regs r = { .rip = LOAD, .rflags = 2 };
	if (ioctl(cpu, KVM_SET_SREGS, &s) < 0 || ioctl(cpu, KVM_SET_REGS, &r) < 0)
		die("KVM_SET_(S)REGS");

	uint64_t exits = 0, start = bench_ns(CLOCK_MONOTONIC);
	for (int done = 0; !done;) {
		if (ioctl(cpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			die("KVM_RUN");
		}
		if (!exits++)
			first = bench_ns(CLOCK_REALTIME) / 1000;
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction == KVM_EXIT_IO_OUT)
				done = run->io.port == 0xf4;
			else
				memset((uint8_t *)run + run->io.data_offset, 0xff,
				       run->io.size * run->io.count);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, run->mmio.len);
			break;
		case KVM_EXIT_HLT:
			done = 1;
			break;
		default:
			fprintf(stderr, "rawkvm: unexpected exit %u\n", run->exit_reason);
			return 1;
		}
	}
	double secs = (double)(bench_ns(CLOCK_MONOTONIC) - start) / 1e9;
	printf("raw exits=%llu seconds=%.4f exits_per_s=%.0f first_exit_us=%llu "
	       "hwm_kb=%ld\n", (unsigned long long)exits, secs, exits / secs,
	       (unsigned long long)(first - t0), bench_hwm_kb());
	return 0;
}
