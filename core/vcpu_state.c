/*
 * A vCPU's whole state, and the VM's (KVM's irqchip, PIT and clock), as
 * KVM's own structures: captured while the machine is paused, put back in
 * the order KVM's api.rst and QEMU use (registers and FPU, then sregs, then
 * MSRs, then MP state, LAPIC, pending events and debug registers).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/snapshot.h"

void mb_blob_free(struct blob *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

int mb_blob_set(struct blob *b, const void *data, size_t len)
{
	void *p = malloc(len ? len : 1);
	if (!p)
		return mb_seterr(-ENOMEM, "snapshot: out of memory");
	memcpy(p, data, len);
	free(b->data);
	b->data = p;
	b->len = (uint32_t)len;
	return 0;
}

/* ---- MSRs -------------------------------------------------------------- */

/* KVM's list of MSRs to save (KVM_GET_MSR_INDEX_LIST), less those this
 * vCPU cannot read (KVM_GET_MSRS stops at the first such one). Found once
 * per process: the host does not change under us. */
static struct kvm_msr_list *msr_list;
static pthread_mutex_t msr_lock = PTHREAD_MUTEX_INITIALIZER;

static struct kvm_msrs *msrs_alloc(size_t n)
{
	struct kvm_msrs *k = calloc(1, sizeof *k + n * sizeof k->entries[0]);
	if (k)
		k->nmsrs = (uint32_t)n;
	return k;
}

static int get_msr_list(struct mb_machine *m)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *l;
	if (msr_list)
		return 0;
	if (ioctl(m->kvm, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return mb_seterr(-errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	l = calloc(1, sizeof *l + probe.nmsrs * sizeof l->indices[0]);
	if (!l)
		return mb_seterr(-ENOMEM, "snapshot: out of memory");
	l->nmsrs = probe.nmsrs;
	if (ioctl(m->kvm, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		free(l);
		return mb_seterr(-errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	}
	msr_list = l;
	return 0;
}

/* Read every listed MSR, dropping the ones KVM refuses. */
static int save_msrs(struct vcpu *v, struct blob *b)
{
	pthread_mutex_lock(&msr_lock);
	int rc = get_msr_list(v->m);
	pthread_mutex_unlock(&msr_lock);
	if (rc)
		return rc;
	struct kvm_msrs *k = msrs_alloc(msr_list->nmsrs);
	if (!k)
		return mb_seterr(-ENOMEM, "snapshot: out of memory");
	size_t n = 0;
	for (size_t i = 0; i < msr_list->nmsrs; i++)
		k->entries[n++].index = msr_list->indices[i];
	for (size_t done = 0; done < n;) {
		struct kvm_msrs *part = msrs_alloc(n - done);
		if (!part) {
			free(k);
			return mb_seterr(-ENOMEM, "snapshot: out of memory");
		}
		memcpy(part->entries, &k->entries[done], (n - done) * sizeof k->entries[0]);
		int got = ioctl(v->fd, KVM_GET_MSRS, part);
		if (got < 0) {
			free(part);
			free(k);
			return mb_seterr(-errno, "vcpu %u: KVM_GET_MSRS: %s", v->idx,
					 strerror(errno));
		}
		memcpy(&k->entries[done], part->entries, (size_t)got * sizeof k->entries[0]);
		free(part);
		done += (size_t)got;
		if (done < n) { /* entry `done` cannot be read: leave it out */
			memmove(&k->entries[done], &k->entries[done + 1],
				(n - done - 1) * sizeof k->entries[0]);
			n--;
		}
	}
	k->nmsrs = (uint32_t)n;
	rc = mb_blob_set(b, k, sizeof *k + n * sizeof k->entries[0]);
	free(k);
	return rc;
}

/* KVM_SET_MSRS stops at the first MSR it refuses. Some it lists but will
 * not take from the host unless the guest's CPUID has the feature (KVM's
 * PV MSRs): one that already holds the saved value is no loss. */
static int load_msrs(struct vcpu *v, const struct blob *b)
{
	const struct kvm_msrs *k = b->data;
	if (b->len < sizeof *k ||
	    b->len != sizeof *k + (size_t)k->nmsrs * sizeof k->entries[0])
		return mb_seterr(-EINVAL, "vcpu %u: MSR record of %u bytes is "
				 "malformed", v->idx, b->len);
	struct kvm_msrs *part = msrs_alloc(k->nmsrs);
	if (!part)
		return mb_seterr(-ENOMEM, "restore: out of memory");
	int rc = 0;
	for (uint32_t done = 0; done < k->nmsrs && !rc;) {
		part->nmsrs = k->nmsrs - done;
		memcpy(part->entries, &k->entries[done], part->nmsrs * sizeof k->entries[0]);
		int set = ioctl(v->fd, KVM_SET_MSRS, part);
		if (set < 0) {
			rc = mb_seterr(-errno, "vcpu %u: KVM_SET_MSRS: %s", v->idx,
				       strerror(errno));
			break;
		}
		done += (uint32_t)set;
		if (done == k->nmsrs)
			break;
		struct kvm_msrs *one = msrs_alloc(1);
		if (!one) {
			rc = mb_seterr(-ENOMEM, "restore: out of memory");
			break;
		}
		one->entries[0].index = k->entries[done].index;
		if (ioctl(v->fd, KVM_GET_MSRS, one) != 1 ||
		    one->entries[0].data != k->entries[done].data)
			rc = mb_seterr(-EINVAL, "vcpu %u: KVM_SET_MSRS refused MSR 0x%x "
				       "(value 0x%llx)", v->idx, k->entries[done].index,
				       (unsigned long long)k->entries[done].data);
		free(one);
		done++;
	}
	free(part);
	return rc;
}

/* KVM drops a write of IA32_TSC_DEADLINE (SDM vol. 3A sec. 11.5.4.1) while
 * the local APIC's timer is not in TSC-deadline mode, which a fresh vCPU's
 * is not until KVM_SET_LAPIC: the deadline load_msrs wrote before it would
 * be lost in a new process. Write it again once the LAPIC is back (QEMU
 * does the same). */
#define MSR_TSC_DEADLINE 0x6e0u

static int tsc_deadline_again(struct vcpu *v, const struct blob *b)
{
	const struct kvm_msrs *k = b->data;
	if (b->len < sizeof *k)
		return 0;
	for (uint32_t i = 0; i < k->nmsrs; i++) {
		if (k->entries[i].index != MSR_TSC_DEADLINE)
			continue;
		struct kvm_msrs *one = msrs_alloc(1);
		if (!one)
			return mb_seterr(-ENOMEM, "restore: out of memory");
		one->entries[0] = k->entries[i];
		int set = ioctl(v->fd, KVM_SET_MSRS, one);
		free(one);
		if (set != 1)
			return mb_seterr(set < 0 ? -errno : -EINVAL, "vcpu %u: KVM_SET_MSRS "
					 "refused IA32_TSC_DEADLINE after the LAPIC", v->idx);
		return 0;
	}
	return 0;
}

/* ---- the vCPU ------------------------------------------------------------ */

static int get(struct vcpu *v, unsigned long req, const char *name,
	       struct blob *b, void *buf, size_t len)
{
	memset(buf, 0, len);
	if (ioctl(v->fd, req, buf) < 0)
		return mb_seterr(-errno, "vcpu %u: %s: %s", v->idx, name,
				 strerror(errno));
	return mb_blob_set(b, buf, len);
}

static int put(struct vcpu *v, unsigned long req, const char *name,
	       const struct blob *b, size_t len)
{
	if (!b->len)
		return 0;
	if (b->len != len)
		return mb_seterr(-EINVAL, "vcpu %u: %s record is %u bytes, this host "
				 "wants %zu", v->idx, name, b->len, len);
	if (ioctl(v->fd, req, b->data) < 0)
		return mb_seterr(-errno, "vcpu %u: %s: %s", v->idx, name,
				 strerror(errno));
	return 0;
}

/* Bytes of KVM_GET_XSAVE2's buffer (>= struct kvm_xsave), 0: no XSAVE. */
static size_t xsave_size(struct mb_machine *m)
{
	int n = mb_kvm_check_ext(m->kvm, KVM_CAP_XSAVE2);
	if (n >= (int)sizeof(struct kvm_xsave))
		return (size_t)n;
	return mb_kvm_check_ext(m->kvm, KVM_CAP_XSAVE) ? sizeof(struct kvm_xsave) : 0;
}

int mb_vcpu_state_save(struct vcpu *v, struct snap_cpu *s)
{
	struct mb_machine *m = v->m;
	union {
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct kvm_sregs2 sregs2;
		struct kvm_fpu fpu;
		struct kvm_xcrs xcrs;
		struct kvm_mp_state mp;
		struct kvm_lapic_state lapic;
		struct kvm_vcpu_events ev;
		struct kvm_debugregs dr;
	} u;
	int rc;
	if ((rc = get(v, KVM_GET_REGS, "KVM_GET_REGS", &s->part[CPU_REGS], &u, sizeof u.regs)))
		return rc;
	size_t xs = xsave_size(m);
	if (xs) {
		void *x = calloc(1, xs);
		if (!x)
			return mb_seterr(-ENOMEM, "snapshot: out of memory");
		bool two = xs > sizeof(struct kvm_xsave);
		rc = ioctl(v->fd, two ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, x) < 0
			? mb_seterr(-errno, "vcpu %u: KVM_GET_XSAVE: %s", v->idx,
				    strerror(errno))
			: mb_blob_set(&s->part[CPU_XSAVE], x, xs);
		free(x);
		if (rc)
			return rc;
	} else if ((rc = get(v, KVM_GET_FPU, "KVM_GET_FPU", &s->part[CPU_FPU], &u,
			     sizeof u.fpu))) {
		return rc;
	}
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_XCRS) &&
	    (rc = get(v, KVM_GET_XCRS, "KVM_GET_XCRS", &s->part[CPU_XCRS], &u, sizeof u.xcrs)))
		return rc;
	/* SREGS2 carries PAE's PDPTEs; plain SREGS is the fallback. */
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_SREGS2))
		rc = get(v, KVM_GET_SREGS2, "KVM_GET_SREGS2", &s->part[CPU_SREGS2], &u,
			 sizeof u.sregs2);
	else
		rc = get(v, KVM_GET_SREGS, "KVM_GET_SREGS", &s->part[CPU_SREGS], &u,
			 sizeof u.sregs);
	if (rc || (rc = save_msrs(v, &s->part[CPU_MSRS])))
		return rc;
	if ((rc = get(v, KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &s->part[CPU_MPSTATE], &u,
		      sizeof u.mp)))
		return rc;
	if (m->irqchip == MB_IRQCHIP_KERNEL &&
	    (rc = get(v, KVM_GET_LAPIC, "KVM_GET_LAPIC", &s->part[CPU_LAPIC], &u,
		      sizeof u.lapic)))
		return rc;
	if ((rc = get(v, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &s->part[CPU_EVENTS],
		      &u, sizeof u.ev)) ||
	    (rc = get(v, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &s->part[CPU_DEBUGREGS],
		      &u, sizeof u.dr)))
		return rc;
	pthread_mutex_lock(&m->lock);
	struct cpu_book bk = { v->in_hlt, v->hlt_if, v->dead, 0, v->dead_probes };
	pthread_mutex_unlock(&m->lock);
	return mb_blob_set(&s->part[CPU_BOOK], &bk, sizeof bk);
}

int mb_vcpu_state_load(struct vcpu *v, const struct snap_cpu *s)
{
	int rc;
	const struct blob *p = s->part;
	if ((rc = put(v, KVM_SET_REGS, "KVM_SET_REGS", &p[CPU_REGS], sizeof(struct kvm_regs))))
		return rc;
	if (p[CPU_XSAVE].len) {
		if (p[CPU_XSAVE].len < sizeof(struct kvm_xsave) ||
		    p[CPU_XSAVE].len != xsave_size(v->m))
			return mb_seterr(-EINVAL, "vcpu %u: XSAVE record is %u bytes, "
					 "this host wants %zu", v->idx, p[CPU_XSAVE].len,
					 xsave_size(v->m));
		if (ioctl(v->fd, KVM_SET_XSAVE, p[CPU_XSAVE].data) < 0)
			return mb_seterr(-errno, "vcpu %u: KVM_SET_XSAVE: %s", v->idx,
					 strerror(errno));
	}
	if ((rc = put(v, KVM_SET_FPU, "KVM_SET_FPU", &p[CPU_FPU], sizeof(struct kvm_fpu))) ||
	    (rc = put(v, KVM_SET_XCRS, "KVM_SET_XCRS", &p[CPU_XCRS], sizeof(struct kvm_xcrs))) ||
	    (rc = put(v, KVM_SET_SREGS, "KVM_SET_SREGS", &p[CPU_SREGS],
		      sizeof(struct kvm_sregs))))
		return rc;
	if (p[CPU_SREGS2].len) {
		if (!mb_kvm_check_ext(v->m->kvm, KVM_CAP_SREGS2))
			return mb_seterr(-ENOTSUP, "vcpu %u: the snapshot has SREGS2, "
					 "which this KVM lacks", v->idx);
		if ((rc = put(v, KVM_SET_SREGS2, "KVM_SET_SREGS2", &p[CPU_SREGS2],
			      sizeof(struct kvm_sregs2))))
			return rc;
	}
	if (p[CPU_MSRS].len && (rc = load_msrs(v, &p[CPU_MSRS])))
		return rc;
	if ((rc = put(v, KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &p[CPU_MPSTATE],
		      sizeof(struct kvm_mp_state))) ||
	    (rc = put(v, KVM_SET_LAPIC, "KVM_SET_LAPIC", &p[CPU_LAPIC],
		      sizeof(struct kvm_lapic_state))))
		return rc;
	if (p[CPU_LAPIC].len && (rc = tsc_deadline_again(v, &p[CPU_MSRS])))
		return rc;
	/* The flags KVM_GET_VCPU_EVENTS set say what is valid: NMI and SIPI
	 * state included, so they go back too. */
	if ((rc = put(v, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &p[CPU_EVENTS],
		      sizeof(struct kvm_vcpu_events))))
		return rc;
	if ((rc = put(v, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &p[CPU_DEBUGREGS],
		      sizeof(struct kvm_debugregs))))
		return rc;
	if (p[CPU_BOOK].len != sizeof(struct cpu_book))
		return mb_seterr(-EINVAL, "vcpu %u: bookkeeping record is malformed",
				 v->idx);
	const struct cpu_book *bk = p[CPU_BOOK].data;
	pthread_mutex_lock(&v->m->lock);
	v->in_hlt = bk->in_hlt, v->hlt_if = bk->hlt_if, v->dead = bk->dead;
	v->dead_probes = bk->dead_probes;
	v->need_complete = false;
	mb_vcpu_forget_window(v);
	pthread_mutex_unlock(&v->m->lock);
	return 0;
}

/* ---- the VM ---------------------------------------------------------------- */

static int vm_get(struct mb_machine *m, unsigned long req, const char *name,
		  struct blob *b, void *buf, size_t len)
{
	if (ioctl(m->vm, req, buf) < 0)
		return mb_seterr(-errno, "%s: %s", name, strerror(errno));
	return mb_blob_set(b, buf, len);
}

static int vm_put(struct mb_machine *m, unsigned long req, const char *name,
		  const struct blob *b, size_t len)
{
	if (!b->len)
		return 0;
	if (b->len != len)
		return mb_seterr(-EINVAL, "%s record is %u bytes, this host wants %zu",
				 name, b->len, len);
	if (ioctl(m->vm, req, b->data) < 0)
		return mb_seterr(-errno, "%s: %s", name, strerror(errno));
	return 0;
}

int mb_vm_state_save(struct mb_machine *m, struct blob *vm)
{
	int rc;
	if (m->irqchip == MB_IRQCHIP_KERNEL) {
		for (unsigned chip = 0; chip < 3; chip++) {
			struct kvm_irqchip c = { .chip_id = chip };
			if ((rc = vm_get(m, KVM_GET_IRQCHIP, "KVM_GET_IRQCHIP", &vm[VM_PIC0 + chip],
					 &c, sizeof c)))
				return rc;
		}
	}
	if (m->kernel_pit) {
		struct kvm_pit_state2 p;
		memset(&p, 0, sizeof p);
		if ((rc = vm_get(m, KVM_GET_PIT2, "KVM_GET_PIT2", &vm[VM_PIT2], &p, sizeof p)))
			return rc;
	}
	/* kvmclock: the guest's notion of time, put back so it does not jump
	 * (api.rst, KVM_GET_CLOCK / KVM_SET_CLOCK). */
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_ADJUST_CLOCK)) {
		struct kvm_clock_data c;
		memset(&c, 0, sizeof c);
		if ((rc = vm_get(m, KVM_GET_CLOCK, "KVM_GET_CLOCK", &vm[VM_CLOCK], &c, sizeof c)))
			return rc;
	}
	return 0;
}

int mb_vm_state_load(struct mb_machine *m, const struct blob *vm)
{
	int rc;
	for (unsigned chip = 0; chip < 3; chip++)
		if ((rc = vm_put(m, KVM_SET_IRQCHIP, "KVM_SET_IRQCHIP", &vm[VM_PIC0 + chip],
				 sizeof(struct kvm_irqchip))))
			return rc;
	if ((rc = vm_put(m, KVM_SET_PIT2, "KVM_SET_PIT2", &vm[VM_PIT2],
			 sizeof(struct kvm_pit_state2))))
		return rc;
	if (vm[VM_CLOCK].len) {
		struct kvm_clock_data c;
		if (vm[VM_CLOCK].len != sizeof c)
			return mb_seterr(-EINVAL, "clock record is malformed");
		memcpy(&c, vm[VM_CLOCK].data, sizeof c);
		c.flags = 0; /* just the clock value; realtime pairing not used */
		if (ioctl(m->vm, KVM_SET_CLOCK, &c) < 0)
			return mb_seterr(-errno, "KVM_SET_CLOCK: %s", strerror(errno));
		m->kvmclock_saved = false; /* the restored clock wins at resume */
	}
	return 0;
}
