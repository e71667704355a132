/*
 * More of a vCPU's state for the debugger: MSRs, the FPU/SSE/AVX
 * registers, pending events and PAE's cached PDPTEs. Reads and writes go
 * straight to KVM; the caller keeps the machine paused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/internal.h"
#include "moonbox/debug.h"

static struct vcpu *cpu_of(struct mb_machine *m, unsigned cpu)
{
	if (cpu >= m->ncpu) {
		mb_seterr(-EINVAL, "cpu: %u does not exist (0-%u)", cpu, m->ncpu - 1);
		return NULL;
	}
	return &m->cpu[cpu];
}

/* struct kvm_msrs ends in a flexible array: room for one entry after it
 * (a struct with a member after it is a GNU extension clang refuses). */
union one_msr {
	struct kvm_msrs h;
	uint8_t raw[sizeof(struct kvm_msrs) + sizeof(struct kvm_msr_entry)];
};

int mb_vcpu_get_msr(struct mb_machine *m, unsigned cpu, uint32_t index,
		    uint64_t *val)
{
	struct vcpu *v = cpu_of(m, cpu);
	if (!v)
		return -EINVAL;
	union one_msr r;
	memset(&r, 0, sizeof r);
	r.h.nmsrs = 1, r.h.entries[0].index = index;
	/* KVM_GET_MSRS returns how many it read: 0 for an MSR it lacks */
	int n = ioctl(v->fd, KVM_GET_MSRS, &r);
	if (n < 0)
		return mb_seterr(-errno, "KVM_GET_MSRS: %s", strerror(errno));
	if (n != 1)
		return mb_seterr(-ENOENT, "0x%x is not an MSR KVM knows", index);
	*val = r.h.entries[0].data;
	return 0;
}

int mb_vcpu_set_msr(struct mb_machine *m, unsigned cpu, uint32_t index,
		    uint64_t val)
{
	struct vcpu *v = cpu_of(m, cpu);
	if (!v)
		return -EINVAL;
	union one_msr r;
	memset(&r, 0, sizeof r);
	r.h.nmsrs = 1, r.h.entries[0].index = index, r.h.entries[0].data = val;
	int n = ioctl(v->fd, KVM_SET_MSRS, &r);
	if (n < 0)
		return mb_seterr(-errno, "KVM_SET_MSRS: %s", strerror(errno));
	if (n != 1)
		return mb_seterr(-EINVAL, "KVM refused 0x%llx in MSR 0x%x",
				 (unsigned long long)val, index);
	return 0;
}

/* XSAVE standard format (SDM vol. 1, 13.4): XSTATE_BV at 512, the upper
 * halves of YMM0-15 (state component 2) at 576. */
#define XSTATE_BV 512
#define YMM_HI 576

int mb_vcpu_get_fpu(struct mb_machine *m, unsigned cpu, struct mb_fpu *f)
{
	struct vcpu *v = cpu_of(m, cpu);
	if (!v)
		return -EINVAL;
	struct kvm_fpu k;
	if (ioctl(v->fd, KVM_GET_FPU, &k) < 0)
		return mb_seterr(-errno, "KVM_GET_FPU: %s", strerror(errno));
	memset(f, 0, sizeof *f);
	for (int i = 0; i < 8; i++)
		memcpy(f->st[i], k.fpr[i], 10);
	f->fcw = k.fcw, f->fsw = k.fsw, f->ftw = k.ftwx;
	f->fop = k.last_opcode, f->fip = k.last_ip, f->fdp = k.last_dp;
	f->mxcsr = k.mxcsr;
	memcpy(f->xmm, k.xmm, sizeof f->xmm);
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_XSAVE) <= 0)
		return 0;
	struct kvm_xsave *x = malloc(sizeof *x);
	if (!x)
		return 0;
	if (ioctl(v->fd, KVM_GET_XSAVE, x) == 0) {
		const uint8_t *b = (const uint8_t *)x->region;
		uint64_t bv;
		memcpy(&bv, b + XSTATE_BV, 8);
		f->has_ymm = true; /* component 2 in its init state reads as 0 */
		if (bv & 4)
			memcpy(f->ymmh, b + YMM_HI, sizeof f->ymmh);
	}
	free(x);
	return 0;
}

int mb_vcpu_get_events(struct mb_machine *m, unsigned cpu,
		       struct mb_vcpu_events *e)
{
	struct vcpu *v = cpu_of(m, cpu);
	if (!v)
		return -EINVAL;
	struct kvm_vcpu_events k;
	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &k) < 0)
		return mb_seterr(-errno, "KVM_GET_VCPU_EVENTS: %s", strerror(errno));
	*e = (struct mb_vcpu_events){
		.exc_injected = k.exception.injected,
		.exc_pending = k.exception.pending,
		.exc_has_error = k.exception.has_error_code,
		.exc_nr = k.exception.nr,
		.exc_error = k.exception.error_code,
		.irq_injected = k.interrupt.injected,
		.irq_soft = k.interrupt.soft,
		.irq_nr = k.interrupt.nr,
		.irq_shadow = k.interrupt.shadow,
		.nmi_injected = k.nmi.injected,
		.nmi_pending = k.nmi.pending,
		.nmi_masked = k.nmi.masked,
		.smi_pending = (k.flags & KVM_VCPUEVENT_VALID_SMM) && k.smi.pending,
		.smm = (k.flags & KVM_VCPUEVENT_VALID_SMM) && k.smi.smm,
		.triple_fault = (k.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT) &&
				k.triple_fault.pending,
	};
	return 0;
}

int mb_vcpu_pdptrs(struct mb_machine *m, unsigned cpu, uint64_t pdptr[4])
{
	struct vcpu *v = cpu_of(m, cpu);
	if (!v)
		return -EINVAL;
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_SREGS2) <= 0)
		return mb_seterr(-ENOTSUP, "pdptrs: KVM has no KVM_GET_SREGS2");
	struct kvm_sregs2 s;
	if (ioctl(v->fd, KVM_GET_SREGS2, &s) < 0)
		return mb_seterr(-errno, "KVM_GET_SREGS2: %s", strerror(errno));
	if (!(s.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID))
		return mb_seterr(-ENOENT, "pdptrs: not loaded (not in PAE paging)");
	memcpy(pdptr, s.pdptrs, 4 * sizeof *pdptr);
	return 0;
}
