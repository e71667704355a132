/*
 * CPUID policy: start from KVM_GET_SUPPORTED_CPUID, then hide or set named
 * feature bits. Names follow Linux's /proc/cpuinfo flags. (On KVM's PVM
 * backend KVM_SET_CPUID2 does not hide features from guest kernel mode;
 * the policy still holds on VMX/SVM hardware.)
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/internal.h"

enum { EAX, EBX, ECX, EDX };

static const struct feat {
	const char *name;
	uint32_t leaf, sub;
	unsigned reg, bit;
} feats[] = {
	/* leaf 1 EDX */
	{ "fpu", 1, 0, EDX, 0 },	 { "vme", 1, 0, EDX, 1 },
	{ "de", 1, 0, EDX, 2 },		 { "pse", 1, 0, EDX, 3 },
	{ "tsc", 1, 0, EDX, 4 },	 { "msr", 1, 0, EDX, 5 },
	{ "pae", 1, 0, EDX, 6 },	 { "mce", 1, 0, EDX, 7 },
	{ "cx8", 1, 0, EDX, 8 },	 { "apic", 1, 0, EDX, 9 },
	{ "sep", 1, 0, EDX, 11 },	 { "mtrr", 1, 0, EDX, 12 },
	{ "pge", 1, 0, EDX, 13 },	 { "mca", 1, 0, EDX, 14 },
	{ "cmov", 1, 0, EDX, 15 },	 { "pat", 1, 0, EDX, 16 },
	{ "pse36", 1, 0, EDX, 17 },	 { "clflush", 1, 0, EDX, 19 },
	{ "mmx", 1, 0, EDX, 23 },	 { "fxsr", 1, 0, EDX, 24 },
	{ "sse", 1, 0, EDX, 25 },	 { "sse2", 1, 0, EDX, 26 },
	{ "ht", 1, 0, EDX, 28 },
	/* leaf 1 ECX */
	{ "pni", 1, 0, ECX, 0 },	 { "sse3", 1, 0, ECX, 0 },
	{ "pclmulqdq", 1, 0, ECX, 1 },	 { "ssse3", 1, 0, ECX, 9 },
	{ "fma", 1, 0, ECX, 12 },	 { "cx16", 1, 0, ECX, 13 },
	{ "pcid", 1, 0, ECX, 17 },	 { "sse4_1", 1, 0, ECX, 19 },
	{ "sse4_2", 1, 0, ECX, 20 },	 { "x2apic", 1, 0, ECX, 21 },
	{ "movbe", 1, 0, ECX, 22 },	 { "popcnt", 1, 0, ECX, 23 },
	{ "tsc_deadline_timer", 1, 0, ECX, 24 },
	{ "aes", 1, 0, ECX, 25 },	 { "xsave", 1, 0, ECX, 26 },
	{ "avx", 1, 0, ECX, 28 },	 { "f16c", 1, 0, ECX, 29 },
	{ "rdrand", 1, 0, ECX, 30 },	 { "hypervisor", 1, 0, ECX, 31 },
	/* leaf 7.0 EBX/ECX/EDX */
	{ "fsgsbase", 7, 0, EBX, 0 },	 { "bmi1", 7, 0, EBX, 3 },
	{ "hle", 7, 0, EBX, 4 },	 { "avx2", 7, 0, EBX, 5 },
	{ "smep", 7, 0, EBX, 7 },	 { "bmi2", 7, 0, EBX, 8 },
	{ "erms", 7, 0, EBX, 9 },	 { "invpcid", 7, 0, EBX, 10 },
	{ "rtm", 7, 0, EBX, 11 },	 { "avx512f", 7, 0, EBX, 16 },
	{ "rdseed", 7, 0, EBX, 18 },	 { "adx", 7, 0, EBX, 19 },
	{ "smap", 7, 0, EBX, 20 },	 { "clflushopt", 7, 0, EBX, 23 },
	{ "clwb", 7, 0, EBX, 24 },	 { "sha_ni", 7, 0, EBX, 29 },
	{ "umip", 7, 0, ECX, 2 },	 { "pku", 7, 0, ECX, 3 },
	{ "la57", 7, 0, ECX, 16 },	 { "rdpid", 7, 0, ECX, 22 },
	{ "md_clear", 7, 0, EDX, 10 },	 { "arch_capabilities", 7, 0, EDX, 29 },
	/* leaf 0xd.1 EAX */
	{ "xsaveopt", 0xd, 1, EAX, 0 },	 { "xsavec", 0xd, 1, EAX, 1 },
	{ "xsaves", 0xd, 1, EAX, 3 },
	/* leaf 0x80000001 */
	{ "lahf_lm", 0x80000001, 0, ECX, 0 },
	{ "abm", 0x80000001, 0, ECX, 5 }, { "lzcnt", 0x80000001, 0, ECX, 5 },
	{ "syscall", 0x80000001, 0, EDX, 11 },
	{ "nx", 0x80000001, 0, EDX, 20 },
	{ "pdpe1gb", 0x80000001, 0, EDX, 26 },
	{ "rdtscp", 0x80000001, 0, EDX, 27 },
	{ "lm", 0x80000001, 0, EDX, 29 },
	/* KVM paravirt leaf 0x40000001 EAX */
	{ "kvmclock", 0x40000001, 0, EAX, 3 },
	{ "kvm_pv_eoi", 0x40000001, 0, EAX, 6 },
	{ "kvm_steal_time", 0x40000001, 0, EAX, 5 },
	/* KVM_FEATURE_PV_SEND_IPI, PV_TLB_FLUSH, PV_SCHED_YIELD (kvm/cpuid.rst):
	 * hypercalls the PVM backend never completes (docs/platform.md) */
	{ "kvm_pv_send_ipi", 0x40000001, 0, EAX, 11 },
	{ "kvm_pv_tlb_flush", 0x40000001, 0, EAX, 9 },
	{ "kvm_pv_sched_yield", 0x40000001, 0, EAX, 13 },
};

int mb_cpuid_feature(const char *name, uint32_t *leaf, uint32_t *subleaf,
		     unsigned *reg, unsigned *bit)
{
	for (size_t i = 0; i < sizeof feats / sizeof *feats; i++)
		if (strcmp(feats[i].name, name) == 0) {
			*leaf = feats[i].leaf, *subleaf = feats[i].sub;
			*reg = feats[i].reg, *bit = feats[i].bit;
			return 0;
		}
	return mb_seterr(-ENOENT, "cpuid: unknown feature \"%s\"", name);
}

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, unsigned reg)
{
	switch (reg) {
	case EAX: return &e->eax;
	case EBX: return &e->ebx;
	case ECX: return &e->ecx;
	default:  return &e->edx;
	}
}

static struct kvm_cpuid_entry2 *entry(struct kvm_cpuid2 *c, uint32_t leaf,
				      uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == sub))
			return e;
	}
	return NULL;
}

static int change(struct kvm_cpuid2 *c, const char *name, bool on)
{
	uint32_t leaf, sub;
	unsigned reg, bit;
	int rc = mb_cpuid_feature(name, &leaf, &sub, &reg, &bit);
	if (rc)
		return rc;
	struct kvm_cpuid_entry2 *e = entry(c, leaf, sub);
	if (!e) {
		if (!on)
			return 0; /* hiding what is not there: done */
		return mb_seterr(-ENOTSUP, "cpuid: leaf 0x%x of feature \"%s\" is "
				 "not offered by KVM", leaf, name);
	}
	uint32_t *r = reg_of(e, reg);
	*r = on ? *r | (1u << bit) : *r & ~(1u << bit);
	return 0;
}

int mb_cpuid_build(struct mb_machine *m, const struct mb_cpuid_policy *p)
{
	int n = 128;
	struct kvm_cpuid2 *c = NULL;
	for (;;) {
		free(c);
		c = calloc(1, sizeof *c + n * sizeof c->entries[0]);
		if (!c)
			return mb_seterr(-ENOMEM, "cpuid: out of memory");
		c->nent = n;
		if (ioctl(m->kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		if (errno != E2BIG || n > 4096) {
			int e = errno;
			free(c);
			return mb_seterr(-e, "KVM_GET_SUPPORTED_CPUID: %s",
					 strerror(e));
		}
		n *= 2;
	}
	/* moonbox's own PIC has no local APIC behind it. */
	if (m->irqchip == MB_IRQCHIP_USER) {
		change(c, "apic", false);
		change(c, "x2apic", false);
		change(c, "tsc_deadline_timer", false);
	}
	int rc = 0;
	for (unsigned i = 0; p && i < p->nhide && !rc; i++)
		rc = change(c, p->hide[i], false);
	for (unsigned i = 0; p && i < p->nset && !rc; i++)
		rc = change(c, p->set[i], true);
	struct kvm_cpuid_entry2 *e;
	if (!rc && p && p->vendor) { /* leaf 0: EBX, EDX, ECX spell it */
		if (strlen(p->vendor) != 12 || !(e = entry(c, 0, 0)))
			rc = mb_seterr(-EINVAL, "cpuid: vendor \"%s\" is not 12 "
				       "characters", p->vendor);
		else
			memcpy(&e->ebx, p->vendor, 4), memcpy(&e->edx, p->vendor + 4, 4),
				memcpy(&e->ecx, p->vendor + 8, 4);
	}
	/* SDM vol. 2A, CPUID leaf 1 EAX: family in bits 8-11; from 15 on the
	 * rest goes to the extended family, bits 20-27. */
	if (!rc && p && p->family && (e = entry(c, 1, 0))) {
		unsigned f = p->family;
		if (f > 15 + 255)
			rc = mb_seterr(-EINVAL, "cpuid: family %u is more than 270", f);
		else
			e->eax = (e->eax & ~0x0ff00f00u) |
				 (f < 15 ? f : 15) << 8 | (f < 15 ? 0 : f - 15) << 20;
	}
	if (rc) {
		free(c);
		return rc;
	}
	m->cpuid = c;
	return 0;
}

int mb_cpuid_apply(struct mb_machine *m, struct vcpu *v)
{
	struct kvm_cpuid2 *c = m->cpuid;
	/* Each vCPU sees its own APIC ID (leaf 1 EBX[31:24], leaf 0xb EDX). */
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffff) | (v->idx << 24);
		if (e->function == 0xb || e->function == 0x1f)
			e->edx = v->idx;
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		return mb_seterr(-errno, "KVM_SET_CPUID2: %s", strerror(errno));
	return 0;
}

int mb_cpuid_get(struct mb_machine *m, uint32_t leaf, uint32_t sub,
		 uint32_t out[4])
{
	struct kvm_cpuid_entry2 *e = m->cpuid ? entry(m->cpuid, leaf, sub) : NULL;
	if (!e)
		return mb_seterr(-ENOENT, "cpuid: leaf 0x%x.%u is not in the policy",
				 leaf, sub);
	out[0] = e->eax, out[1] = e->ebx, out[2] = e->ecx, out[3] = e->edx;
	return 0;
}
