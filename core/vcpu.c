/*
 * vCPU threads: the KVM_RUN loop and the first hop of every exit.
 * An exit travels vcpu.c (here) -> bus.c (range lookup) -> device handler,
 * with no lock and no allocation on the way.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

/* The signal that pulls a vCPU thread out of KVM_RUN. Its handler does
 * nothing: the point is the EINTR (with run->immediate_exit as backup for a
 * signal that lands just before KVM_RUN). */
#define SIG_KICK SIGUSR1

static void on_kick(int sig)
{
	(void)sig;
}

void mb_vcpu_kick_setup(void)
{
	struct sigaction sa = { .sa_handler = on_kick };
	sigemptyset(&sa.sa_mask);
	sigaction(SIG_KICK, &sa, NULL); /* no SA_RESTART: we want EINTR */
}

void mb_vcpu_kick(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELAXED); /* any thread */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	pthread_kill(v->thread, SIG_KICK);
}

int mb_vcpu_init(struct mb_machine *m, unsigned idx)
{
	struct vcpu *v = &m->cpu[idx];
	v->m = m;
	v->idx = idx;
	v->fd = ioctl(m->vm, KVM_CREATE_VCPU, idx);
	if (v->fd < 0)
		return mb_seterr(-errno, "vcpu %u: KVM_CREATE_VCPU: %s", idx,
				 strerror(errno));
	int sz = ioctl(m->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (sz <= 0)
		return mb_seterr(-EIO, "KVM_GET_VCPU_MMAP_SIZE failed");
	v->run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return mb_seterr(-errno, "vcpu %u: mmap kvm_run: %s", idx,
				 strerror(errno));
	}
	v->run_size = sz;
	/* Instruction bytes in emulation-failure exits, where KVM offers it. */
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_EXIT_ON_EMULATION_FAILURE)) {
		struct kvm_enable_cap cap = { .cap = KVM_CAP_EXIT_ON_EMULATION_FAILURE,
					      .args = { 1 } };
		ioctl(m->vm, KVM_ENABLE_CAP, &cap);
	}
	return mb_cpuid_apply(m, v);
}

void mb_vcpu_fini(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd > 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

/* ---- registers -------------------------------------------------------- */

static struct vcpu *get(struct mb_machine *m, unsigned cpu)
{
	if (cpu >= m->ncpu) {
		mb_seterr(-EINVAL, "cpu: %u does not exist (0-%u)", cpu, m->ncpu - 1);
		return NULL;
	}
	return &m->cpu[cpu];
}

int mb_vcpu_get_regs(struct mb_machine *m, unsigned cpu, struct mb_regs *r)
{
	struct vcpu *v = get(m, cpu);
	struct kvm_regs k;
	if (!v)
		return -EINVAL;
	if (ioctl(v->fd, KVM_GET_REGS, &k) < 0)
		return mb_seterr(-errno, "KVM_GET_REGS: %s", strerror(errno));
	*r = (struct mb_regs){ k.rax, k.rbx, k.rcx, k.rdx, k.rsi, k.rdi,
			       k.rsp, k.rbp, k.r8,  k.r9,  k.r10, k.r11,
			       k.r12, k.r13, k.r14, k.r15, k.rip, k.rflags };
	return 0;
}

int mb_vcpu_set_regs(struct mb_machine *m, unsigned cpu, const struct mb_regs *r)
{
	struct vcpu *v = get(m, cpu);
	if (!v)
		return -EINVAL;
	struct kvm_regs k = { r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi,
			      r->rsp, r->rbp, r->r8,  r->r9,  r->r10, r->r11,
			      r->r12, r->r13, r->r14, r->r15, r->rip, r->rflags };
	if (ioctl(v->fd, KVM_SET_REGS, &k) < 0)
		return mb_seterr(-errno, "KVM_SET_REGS: %s", strerror(errno));
	mb_vcpu_forget_window(v);
	/* New registers: let it run again. With our irqchip a HLT is in_hlt;
	 * KVM's own keeps a halted vCPU halted in the kernel (mp_state), where
	 * it would sit on the new RIP until an interrupt: both wake the same. */
	v->in_hlt = v->dead = false;
	v->dead_probes = 0;
	struct kvm_mp_state mp;
	if (m->irqchip == MB_IRQCHIP_KERNEL && ioctl(v->fd, KVM_GET_MP_STATE, &mp) == 0 &&
	    mp.mp_state == KVM_MP_STATE_HALTED) {
		mp.mp_state = KVM_MP_STATE_RUNNABLE;
		if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
			return mb_seterr(-errno, "KVM_SET_MP_STATE: %s", strerror(errno));
	}
	return 0;
}

static void seg_from(struct mb_seg *o, const struct kvm_segment *s)
{
	*o = (struct mb_seg){ .base = s->base, .limit = s->limit,
			      .selector = s->selector, .type = s->type,
			      .present = s->present, .dpl = s->dpl, .db = s->db,
			      .s = s->s, .l = s->l, .g = s->g, .avl = s->avl };
}

static void seg_to(struct kvm_segment *o, const struct mb_seg *s)
{
	*o = (struct kvm_segment){ .base = s->base, .limit = s->limit,
				   .selector = s->selector, .type = s->type,
				   .present = s->present, .dpl = s->dpl,
				   .db = s->db, .s = s->s, .l = s->l, .g = s->g,
				   .avl = s->avl, .unusable = !s->present };
}

int mb_vcpu_get_sregs(struct mb_machine *m, unsigned cpu, struct mb_sregs *o)
{
	struct vcpu *v = get(m, cpu);
	struct kvm_sregs s;
	if (!v)
		return -EINVAL;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return mb_seterr(-errno, "KVM_GET_SREGS: %s", strerror(errno));
	seg_from(&o->cs, &s.cs), seg_from(&o->ds, &s.ds), seg_from(&o->es, &s.es);
	seg_from(&o->fs, &s.fs), seg_from(&o->gs, &s.gs), seg_from(&o->ss, &s.ss);
	seg_from(&o->tr, &s.tr), seg_from(&o->ldt, &s.ldt);
	o->gdt_base = s.gdt.base, o->gdt_limit = s.gdt.limit;
	o->idt_base = s.idt.base, o->idt_limit = s.idt.limit;
	o->cr0 = s.cr0, o->cr2 = s.cr2, o->cr3 = s.cr3, o->cr4 = s.cr4;
	o->cr8 = s.cr8, o->efer = s.efer, o->apic_base = s.apic_base;
	return 0;
}

int mb_vcpu_set_sregs(struct mb_machine *m, unsigned cpu, const struct mb_sregs *o)
{
	struct vcpu *v = get(m, cpu);
	struct kvm_sregs s;
	if (!v)
		return -EINVAL;
	/* Start from KVM's copy: keeps the interrupt bitmap and the rest. */
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return mb_seterr(-errno, "KVM_GET_SREGS: %s", strerror(errno));
	seg_to(&s.cs, &o->cs), seg_to(&s.ds, &o->ds), seg_to(&s.es, &o->es);
	seg_to(&s.fs, &o->fs), seg_to(&s.gs, &o->gs), seg_to(&s.ss, &o->ss);
	seg_to(&s.tr, &o->tr), seg_to(&s.ldt, &o->ldt);
	s.gdt.base = o->gdt_base, s.gdt.limit = o->gdt_limit;
	s.idt.base = o->idt_base, s.idt.limit = o->idt_limit;
	s.cr0 = o->cr0, s.cr2 = o->cr2, s.cr3 = o->cr3, s.cr4 = o->cr4;
	s.cr8 = o->cr8, s.efer = o->efer, s.apic_base = o->apic_base;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return mb_seterr(-errno, "KVM_SET_SREGS: %s", strerror(errno));
	mb_vcpu_forget_window(v);
	return 0;
}

void mb_vcpu_dump(struct mb_machine *m, unsigned cpu, char *buf, size_t len)
{
	struct mb_regs r;
	struct mb_sregs s;
	if (mb_vcpu_get_regs(m, cpu, &r) || mb_vcpu_get_sregs(m, cpu, &s)) {
		snprintf(buf, len, "(registers unavailable: %s)", mb_errmsg());
		return;
	}
	snprintf(buf, len,
		 "rax=%016" PRIx64 " rbx=%016" PRIx64 " rcx=%016" PRIx64 " rdx=%016" PRIx64 "\n"
		 "rsi=%016" PRIx64 " rdi=%016" PRIx64 " rsp=%016" PRIx64 " rbp=%016" PRIx64 "\n"
		 "r8 =%016" PRIx64 " r9 =%016" PRIx64 " r10=%016" PRIx64 " r11=%016" PRIx64 "\n"
		 "r12=%016" PRIx64 " r13=%016" PRIx64 " r14=%016" PRIx64 " r15=%016" PRIx64 "\n"
		 "rip=%016" PRIx64 " rflags=%08" PRIx64 "\n"
		 "cs=%04x base=%" PRIx64 " l=%u db=%u  ss=%04x  ds=%04x\n"
		 "cr0=%08" PRIx64 " cr2=%016" PRIx64 " cr3=%016" PRIx64 " cr4=%08" PRIx64
		 " efer=%" PRIx64 "\n"
		 "gdt=%" PRIx64 "/%x idt=%" PRIx64 "/%x",
		 r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9,
		 r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
		 s.cs.selector, s.cs.base, s.cs.l, s.cs.db, s.ss.selector,
		 s.ds.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.gdt_base,
		 s.gdt_limit, s.idt_base, s.idt_limit);
}

int mb_vcpu_stats(struct mb_machine *m, unsigned cpu, struct mb_vcpu_stats *st)
{
	struct vcpu *v = get(m, cpu);
	if (!v)
		return -EINVAL;
	*st = v->st;
	return 0;
}
