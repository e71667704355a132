/*
 * Guest time that KVM keeps in the kernel, stood still while the machine
 * is held (machine.c's freeze(): every vCPU parked, m->lock held). The
 * machine clock and kvmclock are machine.c's; here are the rest:
 *
 *   - the in-kernel PIT (pit = "kernel"): KVM_GET_PIT2 at the hold,
 *     KVM_SET_PIT2 at the resume. SET_PIT2 reloads channel 0 with its
 *     initial count, which restarts its host timer a whole period from
 *     now and drops the ticks KVM counted for reinjection meanwhile
 *     (arch/x86/kvm/i8254.c: kvm_pit_load_count, create_pit_timer). So a
 *     hold costs the guest at most the part of one period that had passed,
 *     plus the one tick that may have reached the PIC during the hold,
 *     and no burst of catch-up ticks.
 *   - each LAPIC timer (irqchip = "kernel"): KVM_GET_LAPIC at the hold
 *     gives the timer's current count in TMCCT; it is then set again with
 *     TMICT = 0, which cancels the host timer so it cannot expire while
 *     held. KVM_SET_LAPIC of the saved state at the resume restarts a
 *     one-shot or periodic timer from that TMCCT, the count it had left
 *     (arch/x86/kvm/lapic.c: kvm_apic_get_state stores TMCCT,
 *     kvm_apic_set_state restarts the timer from it). A TSC-deadline timer
 *     is disarmed by writing 0 to IA32_TSC_DEADLINE (SDM vol. 3, 11.5.4.1)
 *     and written back at the resume, after the TSC moved back (below).
 *   - the TSC: where the vCPU has the KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET
 *     attribute (api.rst, 4.126 and "VCPU TSC attributes"), the held time
 *     in TSC cycles (KVM_GET_TSC_KHZ) comes off the offset at the resume,
 *     so rdtsc goes on from where it stood. Without it the TSC keeps
 *     running (KVM_SET_TSC_KHZ scales it, it cannot stop it). This PVM
 *     host has the attribute but ignores it: an offset set reads back 0
 *     and rdtsc goes on with host time (mb_holdtime_info says so).
 * Each step is best effort: a failing ioctl leaves that clock running.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

#define MSR_TSC_DEADLINE 0x6e0
#define APIC_LVTT 0x320
#define APIC_TMICT 0x380
#define LVTT_TSC_DEADLINE (2u << 17) /* LVT timer mode bits 18:17 */

struct held_cpu {
	bool lapic_saved, deadline_saved, tsc_saved;
	struct kvm_lapic_state lapic;
	uint64_t deadline, tsc_offset;
	uint32_t tsc_khz;
};

struct mb_holdtime {
	struct hook hook;
	bool active; /* frozen by us, not yet thawed */
	bool pit_saved;
	struct kvm_pit_state2 pit;
	uint64_t t0; /* CLOCK_MONOTONIC ns at the hold */
	struct held_cpu cpu[MB_MAX_CPUS];
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static bool tsc_attr(int fd)
{
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL,
				     .attr = KVM_VCPU_TSC_OFFSET };
	return ioctl(fd, KVM_HAS_DEVICE_ATTR, &a) == 0;
}

static int tsc_offset(int fd, uint64_t *off, bool set)
{
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL,
				     .attr = KVM_VCPU_TSC_OFFSET,
				     .addr = (uintptr_t)off };
	return ioctl(fd, set ? KVM_SET_DEVICE_ATTR : KVM_GET_DEVICE_ATTR, &a);
}

static int msr(int fd, uint32_t index, uint64_t *v, bool set)
{
	/* struct kvm_msrs ends in a flexible array: one entry after it */
	union {
		struct kvm_msrs h;
		uint8_t raw[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
	} b;
	memset(&b, 0, sizeof b);
	b.h.nmsrs = 1;
	struct kvm_msr_entry e = { .index = index, .data = *v };
	memcpy(b.raw + sizeof(struct kvm_msrs), &e, sizeof e);
	int n = ioctl(fd, set ? KVM_SET_MSRS : KVM_GET_MSRS, &b);
	if (n != 1)
		return -1;
	memcpy(&e, b.raw + sizeof(struct kvm_msrs), sizeof e);
	*v = e.data;
	return 0;
}

static uint32_t reg(const struct kvm_lapic_state *s, unsigned off)
{
	uint32_t v;
	memcpy(&v, s->regs + off, 4);
	return v;
}

static void holdtime_free(void *p) { free(p); }

static struct mb_holdtime *state(struct mb_machine *m)
{
	if (m->holdtime)
		return m->holdtime;
	struct mb_holdtime *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->hook = (struct hook){ .fn = holdtime_free, .arg = h, .embedded = true };
	mb_machine_push_hook(m, &h->hook);
	m->holdtime = h;
	return h;
}

void mb_holdtime_freeze(struct mb_machine *m)
{
	struct mb_holdtime *h = state(m);
	if (!h)
		return; /* out of memory: these clocks keep running */
	h->active = true;
	h->t0 = now_ns();
	h->pit_saved = m->kernel_pit && ioctl(m->vm, KVM_GET_PIT2, &h->pit) == 0;
	for (unsigned i = 0; i < m->ncpu; i++) {
		struct held_cpu *c = &h->cpu[i];
		int fd = m->cpu[i].fd;
		c->lapic_saved = c->deadline_saved = c->tsc_saved = false;
		if (tsc_attr(fd)) {
			int khz = ioctl(fd, KVM_GET_TSC_KHZ, 0);
			c->tsc_khz = khz > 0 ? (uint32_t)khz : 0;
			c->tsc_saved = c->tsc_khz && tsc_offset(fd, &c->tsc_offset, false) == 0;
		}
		if (m->irqchip != MB_IRQCHIP_KERNEL ||
		    ioctl(fd, KVM_GET_LAPIC, &c->lapic) < 0)
			continue;
		c->lapic_saved = true;
		uint64_t zero = 0;
		if ((reg(&c->lapic, APIC_LVTT) & (3u << 17)) == LVTT_TSC_DEADLINE) {
			c->deadline_saved = msr(fd, MSR_TSC_DEADLINE, &c->deadline, false) == 0 &&
					    c->deadline;
			if (c->deadline_saved)
				msr(fd, MSR_TSC_DEADLINE, &zero, true);
		} else if (reg(&c->lapic, APIC_TMICT)) {
			struct kvm_lapic_state idle = c->lapic;
			memset(idle.regs + APIC_TMICT, 0, 4);
			ioctl(fd, KVM_SET_LAPIC, &idle);
		}
	}
}

void mb_holdtime_thaw(struct mb_machine *m)
{
	struct mb_holdtime *h = m->holdtime;
	if (!h || !h->active)
		return;
	h->active = false;
	uint64_t held = now_ns() - h->t0;
	for (unsigned i = 0; i < m->ncpu; i++) {
		struct held_cpu *c = &h->cpu[i];
		int fd = m->cpu[i].fd;
		if (c->tsc_saved) {
			/* cycles = ns * kHz / 10^6, without overflow for any hold */
			uint64_t cyc = held / 1000000u * c->tsc_khz +
				       held % 1000000u * c->tsc_khz / 1000000u;
			uint64_t off = c->tsc_offset - cyc;
			tsc_offset(fd, &off, true);
		}
		if (c->lapic_saved)
			ioctl(fd, KVM_SET_LAPIC, &c->lapic);
		if (c->deadline_saved)
			msr(fd, MSR_TSC_DEADLINE, &c->deadline, true);
		c->lapic_saved = c->deadline_saved = c->tsc_saved = false;
	}
	if (h->pit_saved)
		ioctl(m->vm, KVM_SET_PIT2, &h->pit);
	h->pit_saved = false;
}

void mb_holdtime_refreeze(struct mb_machine *m)
{
	if (m->threads && mb_evloop_frozen(m->ev) &&
	    !(m->holdtime && m->holdtime->active))
		mb_holdtime_freeze(m);
}

void mb_holdtime_forget(struct mb_machine *m)
{
	if (m->holdtime)
		m->holdtime->active = false;
}

void mb_holdtime_info(FILE *out, int kvm)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	int cpu = vm < 0 ? -1 : ioctl(vm, KVM_CREATE_VCPU, 0);
	bool attr = cpu >= 0 && tsc_attr(cpu);
	/* The attribute may be there and still do nothing (this PVM host
	 * accepts an offset and reads back 0): try one. */
	uint64_t off = (uint64_t)-1000000000, back = 0;
	bool works = attr && tsc_offset(cpu, &off, true) == 0 &&
		     tsc_offset(cpu, &back, false) == 0 && back == off;
	fprintf(out, "while held: kvmclock %s, in-kernel PIT and LAPIC timers "
		"stopped, TSC %s\n",
		mb_kvm_check_ext(kvm, KVM_CAP_ADJUST_CLOCK) > 0 ? "stopped" : "runs on",
		works ? "stopped (KVM_VCPU_TSC_OFFSET)"
		: attr ? "runs on (KVM_VCPU_TSC_OFFSET is accepted but ignored here)"
		       : "runs on (no KVM_VCPU_TSC_OFFSET attribute)");
	if (cpu >= 0)
		close(cpu);
	if (vm >= 0)
		close(vm);
}
