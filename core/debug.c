/*
 * The debug engine: a vCPU's view of memory, single-stepping, the one
 * breakpoint table (with owners, shared by Lua and the gdb stub), debug
 * register allocation, the step-over state machine and page-protection
 * watchpoints. run.c reaches it through five hooks (see internal.h), each
 * behind `m->dbg`, which stays NULL until someone debugs.
 *
 * Facts of the hosts we run on (../shared/docs/kvm-here.md, "Guest
 * debugging here") shape it:
 *   - KVM_GUESTDBG_SINGLESTEP gives one KVM_EXIT_DEBUG per instruction;
 *   - hardware breakpoints (DR0-3, DR7) fire with exception 1, and RF set
 *     through KVM_SET_REGS does not step past one: we disarm the register
 *     for this vCPU, single-step, re-arm (the step-over);
 *   - int3 ends KVM_RUN as an emulation failure with RIP at the 0xCC: ours
 *     are recognised by address before the emulation fallback injects #BP
 *     (foreign ones still go to the guest);
 *   - data breakpoints never fire: watchpoints use a KVM_MEM_READONLY slot
 *     over the page, so each write arrives as an MMIO exit we complete;
 *     software breakpoints' pages get one too, so that a guest writing
 *     over a 0xCC (a decompressor) gets its byte saved and the 0xCC back.
 * Tables change only while the machine is paused; vCPU threads read them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/internal.h"
#include "moonbox/debug.h"

#define PAGE 4096ull

struct mb_bp {
	struct mb_bp *next;
	enum mb_bp_kind kind; /* HW or SW once placed */
	uint64_t addr;        /* linear (hw), as given (sw) */
	uint64_t gpa;         /* sw: where the 0xCC is */
	uint8_t orig;         /* sw: the byte under it */
	bool inserted;        /* sw: 0xCC in memory */
	bool prot;            /* sw: its page is write-protected (see below) */
	int dr;               /* hw: DR0-3 */
	unsigned count;
	bool once, removed;
	int owner;
	uint64_t hits;
};

struct mb_wp {
	struct mb_wp *next;
	uint64_t gpa, len;
	uint64_t hits;
	bool read, write;
	int owner;
};

struct cpu_dbg {
	bool stepping;         /* KVM_GUESTDBG_SINGLESTEP on */
	unsigned skip_dr;      /* DRs disarmed for a step-over */
	unsigned step_n, step_done;
	int step_rc;
	bool hit;
	struct mb_debug_hit h;
};

struct mb_debug {
	struct hook hook; /* frees us with the machine */
	pthread_mutex_t lock; /* hits and 0xCC bytes, touched by vCPU threads */
	struct mb_bp *bps;
	struct mb_bp *dr[4];
	struct mb_wp *wps;
	unsigned nprot; /* sw breakpoints with prot set */
	bool blockirq;
	bool catch_triple;
	int caught; /* the vCPU whose triple fault stopped the run, or -1 */
	struct cpu_dbg cpu[MB_MAX_CPUS];
};

static void dbg_free(void *p)
{
	struct mb_debug *d = p;
	for (struct mb_bp *b = d->bps, *n; b; b = n)
		n = b->next, free(b);
	for (struct mb_wp *w = d->wps, *n; w; w = n)
		n = w->next, free(w);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static struct mb_debug *dbg(struct mb_machine *m)
{
	if (m->dbg)
		return m->dbg;
	struct mb_debug *d = calloc(1, sizeof *d);
	if (!d) {
		mb_seterr(-ENOMEM, "debug: out of memory");
		return NULL;
	}
	pthread_mutex_init(&d->lock, NULL);
	int caps = mb_kvm_check_ext(m->kvm, KVM_CAP_SET_GUEST_DEBUG2);
	d->blockirq = caps > 0 && (caps & KVM_GUESTDBG_BLOCKIRQ);
	d->caught = -1;
	d->hook = (struct hook){ .fn = dbg_free, .arg = d, .embedded = true };
	mb_machine_push_hook(m, &d->hook);
	m->dbg = d;
	return d;
}

static struct vcpu *get_cpu(struct mb_machine *m, unsigned cpu)
{
	if (cpu >= m->ncpu) {
		mb_seterr(-EINVAL, "cpu: %u does not exist (0-%u)", cpu, m->ncpu - 1);
		return NULL;
	}
	return &m->cpu[cpu];
}

static int need_paused(struct mb_machine *m, const char *what)
{
	if (!mb_machine_paused(m))
		return mb_seterr(-EBUSY, "%s: pause the machine first", what);
	return 0;
}

/* ---- a vCPU's view of memory ------------------------------------------- */

int mb_vcpu_paging(struct mb_machine *m, unsigned cpu, struct mb_paging *p)
{
	struct mb_sregs s;
	int rc = mb_vcpu_get_sregs(m, cpu, &s);
	if (rc)
		return rc;
	uint32_t r[4];
	*p = (struct mb_paging){ .cr0 = s.cr0, .cr3 = s.cr3, .cr4 = s.cr4,
				 .efer = s.efer };
	/* MAXPHYADDR: CPUID 80000008h EAX[7:0] (SDM vol. 2A, CPUID) */
	if (mb_cpuid_get(m, 0x80000008u, 0, r) == 0 && (r[0] & 0xff) >= 32)
		p->maxphyaddr = r[0] & 0xff;
	return 0;
}

static int virt_to_phys(struct mb_machine *m, const struct mb_paging *p,
			uint64_t va, uint64_t *gpa)
{
	struct mb_walk w;
	if (mb_pagewalk(m->mem, p, va, &w)) {
		char why[160];
		mb_walk_explain(&w, why, sizeof why);
		return mb_seterr(-EFAULT, "0x%" PRIx64 " does not translate: %s", va,
				 why);
	}
	*gpa = w.gpa;
	return 0;
}

/* Our own 0xCC bytes are invisible through the debugger's virtual view
 * (gdb's `x`, c:read): a read shows the byte under a software
 * breakpoint, and a write there changes that byte, the 0xCC staying in
 * place (physical m:read/m:write see memory as it is). */
static void mask_bps(struct mb_machine *m, uint64_t gpa, uint8_t *b,
		     size_t len, bool write)
{
	struct mb_debug *d = m->dbg;
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	for (struct mb_bp *p = d->bps; p; p = p->next) {
		if (p->kind != MB_BP_SW || !p->inserted || p->gpa < gpa ||
		    p->gpa - gpa >= len)
			continue;
		if (write) {
			static const uint8_t cc = 0xcc;
			p->orig = b[p->gpa - gpa];
			mb_mem_load(m->mem, p->gpa, &cc, 1);
		} else {
			b[p->gpa - gpa] = p->orig;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

static int copy_virt(struct mb_machine *m, unsigned cpu, uint64_t va,
		     void *buf, size_t len, bool write)
{
	struct mb_paging p;
	int rc = mb_vcpu_paging(m, cpu, &p);
	uint8_t *b = buf;
	while (!rc && len) {
		size_t chunk = PAGE - (va & (PAGE - 1));
		uint64_t gpa = 0;
		if (chunk > len)
			chunk = len;
		if ((rc = virt_to_phys(m, &p, va, &gpa)))
			break;
		rc = write ? mb_mem_write(m->mem, gpa, b, chunk)
			   : mb_mem_read(m->mem, gpa, b, chunk);
		if (!rc)
			mask_bps(m, gpa, b, chunk, write);
		va += chunk, b += chunk, len -= chunk;
	}
	return rc;
}

int mb_vcpu_read_virt(struct mb_machine *m, unsigned cpu, uint64_t va,
		      void *buf, size_t len)
{
	if (!get_cpu(m, cpu))
		return -EINVAL;
	return copy_virt(m, cpu, va, buf, len, false);
}

int mb_vcpu_write_virt(struct mb_machine *m, unsigned cpu, uint64_t va,
		       const void *buf, size_t len)
{
	if (!get_cpu(m, cpu))
		return -EINVAL;
	return copy_virt(m, cpu, va, (void *)buf, len, true);
}

int mb_vcpu_kvm_translate(struct mb_machine *m, unsigned cpu, uint64_t va,
			  uint64_t *gpa)
{
	struct vcpu *v = get_cpu(m, cpu);
	if (!v)
		return -EINVAL;
	struct kvm_translation t = { .linear_address = va };
	if (ioctl(v->fd, KVM_TRANSLATE, &t) < 0)
		return mb_seterr(-errno, "KVM_TRANSLATE: %s", strerror(errno));
	if (!t.valid)
		return mb_seterr(-EFAULT, "KVM_TRANSLATE: 0x%" PRIx64 " not mapped",
				 va);
	*gpa = t.physical_address;
	return 0;
}

/* ---- KVM_SET_GUEST_DEBUG ------------------------------------------------ */

static bool any_sw(struct mb_debug *d)
{
	for (struct mb_bp *b = d->bps; b; b = b->next)
		if (b->inserted)
			return true;
	return false;
}

/* What this vCPU's debug state must be now: the armed DRs (less those
 * disarmed for its step-over), sw breakpoints, single-step. */
static int apply(struct mb_machine *m, struct vcpu *v)
{
	struct mb_debug *d = m->dbg;
	struct cpu_dbg *c = &d->cpu[v->idx];
	struct kvm_guest_debug g;
	memset(&g, 0, sizeof g);
	uint64_t dr7 = 0;
	for (int i = 0; i < 4; i++)
		if (d->dr[i] && !(c->skip_dr & (1u << i))) {
			g.arch.debugreg[i] = d->dr[i]->addr;
			dr7 |= 2ull << (2 * i); /* Gi; R/Wi = LENi = 0: execution */
		}
	if (dr7) {
		g.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
		g.arch.debugreg[7] = dr7 | 0x400; /* bit 10 reads as 1 */
	}
	if (any_sw(d))
		g.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
	if (c->stepping)
		g.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |
			     (d->blockirq ? KVM_GUESTDBG_BLOCKIRQ : 0);
	if (ioctl(v->fd, KVM_SET_GUEST_DEBUG, &g) < 0)
		return mb_seterr(-errno, "KVM_SET_GUEST_DEBUG: %s", strerror(errno));
	return 0;
}

static int apply_all(struct mb_machine *m)
{
	int rc = 0;
	for (unsigned i = 0; i < m->ncpu && !rc; i++)
		rc = apply(m, &m->cpu[i]);
	return rc;
}

/* ---- breakpoints ------------------------------------------------------- */

static int sw_insert(struct mb_machine *m, struct mb_bp *b)
{
	static const uint8_t cc = 0xcc;
	pthread_mutex_lock(&m->dbg->lock);
	int rc = mb_mem_read(m->mem, b->gpa, &b->orig, 1);
	if (!rc)
		rc = mb_mem_load(m->mem, b->gpa, &cc, 1);
	b->inserted = rc == 0;
	pthread_mutex_unlock(&m->dbg->lock);
	return rc;
}

static void sw_remove(struct mb_machine *m, struct mb_bp *b)
{
	pthread_mutex_lock(&m->dbg->lock);
	if (b->inserted)
		mb_mem_load(m->mem, b->gpa, &b->orig, 1);
	b->inserted = false;
	pthread_mutex_unlock(&m->dbg->lock);
}

/* A software breakpoint survives the guest writing over it (a kernel
 * decompressing itself over the place, a loader copying code): its page
 * gets a read-only slot, as a write watch's does, so every guest write to
 * the page is an MMIO exit that mb_debug_mmio completes, taking the new
 * byte under the 0xCC as the original and putting the 0xCC back. Pages
 * not in writable RAM, or hosts without read-only slots, go unprotected
 * (the 0xCC is then lost to a guest write, as before). Only while paused. */
static int remap(struct mb_machine *m);
static bool watched(struct mb_debug *d, uint64_t page);

static int protect(struct mb_machine *m, struct mb_bp *b)
{
	struct mb_debug *d = m->dbg;
	uint64_t pg = b->gpa & ~(PAGE - 1);
	if (!m->readonly_mem || !mb_mem_ptr(m->mem, pg, PAGE, true))
		return 0;
	bool was = watched(d, pg); /* another breakpoint's, or a watch's */
	b->prot = true;
	d->nprot++;
	return was ? 0 : remap(m);
}

static void unprotect(struct mb_machine *m, struct mb_bp *b)
{
	struct mb_debug *d = m->dbg;
	if (!b->prot)
		return;
	b->prot = false;
	d->nprot--;
	if (!watched(d, b->gpa & ~(PAGE - 1)))
		remap(m); /* writable again: nothing else needs it */
}

/* Take a breakpoint out of action (it stays in the list until freed). */
static void disarm(struct mb_machine *m, struct mb_bp *b)
{
	if (b->kind == MB_BP_SW) {
		sw_remove(m, b);
		unprotect(m, b);
	}
	else if (b->dr >= 0 && m->dbg->dr[b->dr] == b)
		m->dbg->dr[b->dr] = NULL;
	b->removed = true;
	apply_all(m);
}

int mb_debug_break(struct mb_machine *m, const struct mb_bp_config *c,
		   struct mb_bp **out)
{
	struct mb_debug *d = dbg(m);
	int rc;
	if (!d)
		return -ENOMEM;
	if ((rc = need_paused(m, "breakpoint")))
		return rc;
	if (!get_cpu(m, c->cpu))
		return -EINVAL;
	enum mb_bp_kind kind = c->kind;
	int free_dr = -1;
	for (int i = 3; i >= 0; i--)
		if (!d->dr[i])
			free_dr = i;
	if (kind == MB_BP_AUTO) /* physical addresses cannot go in a DR */
		kind = free_dr >= 0 && !c->phys ? MB_BP_HW : MB_BP_SW;
	if (kind == MB_BP_HW && c->phys)
		return mb_seterr(-EINVAL, "kind: \"hw\" breakpoints take a virtual "
				 "address (debug registers hold linear addresses)");
	if (kind == MB_BP_HW && free_dr < 0)
		return mb_seterr(-ENOSPC, "kind: all four debug registers are in use");
	uint64_t gpa = c->addr;
	if (kind == MB_BP_SW && !c->phys) {
		struct mb_paging p;
		if ((rc = mb_vcpu_paging(m, c->cpu, &p)) ||
		    (rc = virt_to_phys(m, &p, c->addr, &gpa)))
			return rc;
	}
	for (struct mb_bp *o = d->bps; o; o = o->next)
		if (!o->removed && o->kind == kind &&
		    (kind == MB_BP_HW ? o->addr == c->addr : o->gpa == gpa))
			return mb_seterr(-EEXIST, "at: a breakpoint is already at "
					 "0x%" PRIx64, c->addr);
	struct mb_bp *b = calloc(1, sizeof *b);
	if (!b)
		return mb_seterr(-ENOMEM, "breakpoint: out of memory");
	*b = (struct mb_bp){ .kind = kind, .addr = c->addr, .gpa = gpa,
			     .dr = -1, .count = c->count, .once = c->once,
			     .owner = c->owner };
	if (kind == MB_BP_SW) {
		if ((rc = sw_insert(m, b))) {
			free(b);
			return rc;
		}
	} else {
		b->dr = free_dr;
		d->dr[free_dr] = b;
	}
	b->next = d->bps;
	d->bps = b;
	if ((kind == MB_BP_SW && (rc = protect(m, b))) || (rc = apply_all(m))) {
		disarm(m, b);
		return rc;
	}
	*out = b;
	return 0;
}

/* A hit must not outlive its breakpoint or watchpoint. */
static void forget_hits(struct mb_debug *d, const void *what)
{
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < MB_MAX_CPUS; i++)
		if (d->cpu[i].hit && ((const void *)d->cpu[i].h.bp == what ||
				      (const void *)d->cpu[i].h.wp == what))
			d->cpu[i].hit = false;
	pthread_mutex_unlock(&d->lock);
}

int mb_debug_unbreak(struct mb_machine *m, struct mb_bp *bp)
{
	struct mb_debug *d = m->dbg;
	int rc;
	if (!d)
		return mb_seterr(-ENOENT, "breakpoint: not set");
	if ((rc = need_paused(m, "remove")))
		return rc;
	for (struct mb_bp **p = &d->bps; *p; p = &(*p)->next)
		if (*p == bp) {
			if (!bp->removed)
				disarm(m, bp);
			forget_hits(d, bp);
			*p = bp->next;
			free(bp);
			return 0;
		}
	return mb_seterr(-ENOENT, "breakpoint: not set");
}

enum mb_bp_kind mb_bp_kind(const struct mb_bp *bp) { return bp->kind; }
uint64_t mb_bp_addr(const struct mb_bp *bp) { return bp->addr; }
uint64_t mb_bp_hits(const struct mb_bp *bp) { return bp->hits; }
bool mb_bp_removed(const struct mb_bp *bp) { return bp->removed; }
int mb_bp_owner(const struct mb_bp *bp) { return bp->owner; }

/* ---- stepping ---------------------------------------------------------- */

static bool stopping(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool s = m->stop != MB_STOP_NONE || atomic_load(&m->gate) == GATE_QUIT;
	pthread_mutex_unlock(&m->lock);
	return s;
}

static bool linear_rip(struct vcpu *v, uint64_t *la)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_REGS, &r) || ioctl(v->fd, KVM_GET_SREGS, &s))
		return false;
	*la = s.cs.base + r.rip;
	return true;
}

static struct mb_bp *sw_at(struct mb_machine *m, struct vcpu *v, uint64_t la)
{
	struct mb_paging p;
	uint64_t gpa = 0;
	if (mb_vcpu_paging(m, v->idx, &p) || virt_to_phys(m, &p, la, &gpa))
		return NULL;
	for (struct mb_bp *b = m->dbg->bps; b; b = b->next)
		if (b->inserted && b->gpa == gpa)
			return b;
	return NULL;
}

static struct mb_bp *hw_at(struct mb_debug *d, uint64_t la)
{
	for (int i = 0; i < 4; i++)
		if (d->dr[i] && d->dr[i]->addr == la)
			return d->dr[i];
	return NULL;
}

/* One instruction on v, stepping over a breakpoint of ours at RIP. True
 * when it ran; false when HLT, a stop or a kick (pause) came first. */
static bool step_insn(struct vcpu *v, bool paused)
{
	struct mb_machine *m = v->m;
	struct mb_debug *d = m->dbg;
	struct cpu_dbg *c = &d->cpu[v->idx];
	if (v->in_hlt)
		return false;
	uint64_t la = 0;
	struct mb_bp *hw = NULL, *sw = NULL;
	if (linear_rip(v, &la)) {
		hw = hw_at(d, la);
		sw = sw_at(m, v, la);
	}
	if (hw)
		c->skip_dr |= 1u << hw->dr;
	if (sw)
		sw_remove(m, sw);
	c->stepping = true;
	bool ran = false;
	if (apply(m, v) == 0) {
		for (;;) {
			int r = mb_vcpu_run_once(v, false);
			if (r == KVM_EXIT_DEBUG) {
				ran = true;
				break;
			}
			if (r == KVM_EXIT_HLT) {
				ran = true;
				break;
			}
			if (r == -EINTR || r == -EAGAIN) {
				if (!paused || stopping(m))
					break;
				__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED); /* an IRQ kick */
				continue;
			}
			if (r < 0 || stopping(m))
				break;
		}
	}
	c->stepping = false;
	c->skip_dr = 0;
	if (sw && !sw->removed)
		sw_insert(m, sw);
	apply(m, v);
	return ran;
}

static void steps(struct vcpu *v)
{
	struct cpu_dbg *c = &v->m->dbg->cpu[v->idx];
	c->step_done = 0;
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);
	while (c->step_done < c->step_n && !v->in_hlt && !stopping(v->m)) {
		if (!step_insn(v, true))
			break;
		c->step_done++;
	}
	/* Registers read after this are those after the last instruction. */
	if (v->need_complete) {
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELAXED);
		ioctl(v->fd, KVM_RUN, 0);
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);
		v->need_complete = false;
	}
	v->dbg_resume = true; /* `run` steps over a breakpoint we landed on */
}

void mb_debug_serve(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	steps(v);
	pthread_mutex_lock(&m->lock);
	v->dbg_req = false;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

int mb_debug_step(struct mb_machine *m, unsigned cpu, unsigned n,
		  unsigned *done, struct mb_result *stop)
{
	struct vcpu *v = get_cpu(m, cpu);
	struct mb_debug *d = dbg(m);
	int rc;
	if (!v || !d)
		return -EINVAL;
	if ((rc = need_paused(m, "step")))
		return rc;
	d->cpu[cpu].step_n = n;
	pthread_mutex_lock(&m->lock);
	if (!m->threads) {
		/* No vCPU thread yet: step here, on the thread that made it. */
		pthread_mutex_unlock(&m->lock);
		steps(v);
		pthread_mutex_lock(&m->lock);
	} else {
		/* The vCPU's own thread steps (KVM_RUN stays on one thread);
		 * we stand in as the waiter meanwhile, so that Lua devices it
		 * meets run their callbacks in our world. */
		bool had = m->has_waiter;
		pthread_t was = m->waiter;
		m->has_waiter = true;
		m->waiter = pthread_self();
		v->dbg_req = true;
		pthread_cond_broadcast(&m->cond);
		m->drainers++; /* a borrower leaving wakes only drainers */
		while (v->dbg_req || (!had && m->borrowers))
			pthread_cond_wait(&m->cond, &m->lock);
		m->drainers--;
		m->has_waiter = had;
		m->waiter = was;
	}
	if (stop) {
		stop->reason = m->stop;
		stop->exit_code = m->stop_code;
		snprintf(stop->message, sizeof stop->message, "%s", m->stop_msg);
	}
	m->stop = MB_STOP_NONE; /* reported here: the next run starts afresh */
	pthread_mutex_unlock(&m->lock);
	if (done)
		*done = d->cpu[cpu].step_done;
	return 0;
}

/* ---- stops ------------------------------------------------------------- */

static void record(struct vcpu *v, const struct mb_debug_hit *h,
		   enum mb_stop why)
{
	struct mb_debug *d = v->m->dbg;
	pthread_mutex_lock(&d->lock);
	d->cpu[v->idx].h = *h;
	d->cpu[v->idx].hit = true;
	pthread_mutex_unlock(&d->lock);
	mb_machine_stop(v->m, why, 0, "vcpu %u: %s at 0x%" PRIx64, v->idx,
			why == MB_STOP_BREAKPOINT ? "breakpoint" : "watchpoint",
			h->addr);
}

/* A breakpoint of ours, RIP at its address. */
static void bp_hit(struct vcpu *v, struct mb_bp *b, uint64_t rip)
{
	b->hits++;
	if (b->count > 1 && b->hits < b->count) {
		step_insn(v, false); /* not yet: go on past it */
		return;
	}
	v->dbg_resume = true;
	record(v, &(struct mb_debug_hit){ .cpu = v->idx, .bp = b,
					  .addr = b->addr, .rip = rip },
	       MB_STOP_BREAKPOINT);
}

static void inject(struct vcpu *v, unsigned vec)
{
	struct kvm_vcpu_events ev;
	if (ioctl(v->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return;
	ev.exception.injected = 1;
	ev.exception.nr = (uint8_t)vec;
	ev.exception.has_error_code = 0;
	ev.exception_has_payload = 0;
	if (ioctl(v->fd, KVM_SET_VCPU_EVENTS, &ev) == 0)
		mb_vcpu_forget_window(v);
}

void mb_debug_exit(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	struct mb_debug *d = m->dbg;
	if (!d || d->cpu[v->idx].stepping)
		return; /* a single step: step_insn counts it */
	struct kvm_debug_exit_arch *a = &v->run->debug.arch;
	struct kvm_regs r;
	uint64_t la;
	if (ioctl(v->fd, KVM_GET_REGS, &r) || !linear_rip(v, &la))
		return;
	if (a->exception == 1) { /* #DB: which DR (DR6.B0-3), else by address */
		for (int i = 0; i < 4; i++)
			if ((a->dr6 & (1u << i)) && d->dr[i]) {
				bp_hit(v, d->dr[i], r.rip);
				return;
			}
		struct mb_bp *b = hw_at(d, la);
		if (b) {
			bp_hit(v, b, r.rip);
			return;
		}
		inject(v, 1); /* the guest's own #DB */
		return;
	}
	if (a->exception == 3) { /* real hardware: int3 with USE_SW_BP */
		struct mb_bp *b = sw_at(m, v, la);
		if (b) {
			bp_hit(v, b, r.rip);
			return;
		}
		static const uint8_t cc = 0xcc;
		mb_fallback_try(m, v->idx, &cc, 1); /* the guest's own: #BP */
	}
}

bool mb_debug_int3(struct vcpu *v, const uint8_t *insn, unsigned n)
{
	struct mb_machine *m = v->m;
	if (n && insn[0] != 0xcc)
		return false;
	uint64_t la;
	struct kvm_regs r;
	if (ioctl(v->fd, KVM_GET_REGS, &r) || !linear_rip(v, &la))
		return false;
	struct mb_bp *b = sw_at(m, v, la);
	if (!b)
		return false;
	bp_hit(v, b, r.rip);
	return true;
}

void mb_debug_resume(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	v->dbg_resume = false;
	if (!m->dbg)
		return;
	uint64_t la;
	if (!linear_rip(v, &la) || (!hw_at(m->dbg, la) && !sw_at(m, v, la)))
		return;
	if (!step_insn(v, false) && !v->in_hlt)
		v->dbg_resume = true; /* kicked first: try again next time */
}

int mb_debug_hit_owner(const struct mb_debug_hit *h)
{
	return h->bp ? h->bp->owner : h->wp ? h->wp->owner : 0;
}

unsigned mb_debug_pending(struct mb_machine *m, int owner)
{
	struct mb_debug *d = m->dbg;
	unsigned n = 0;
	if (!d)
		return 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < m->ncpu; i++)
		n += d->cpu[i].hit &&
		     (owner < 0 || mb_debug_hit_owner(&d->cpu[i].h) == owner);
	pthread_mutex_unlock(&d->lock);
	return n;
}

bool mb_debug_take_hit(struct mb_machine *m, struct mb_debug_hit *h)
{
	return mb_debug_take_hit_of(m, -1, h);
}

bool mb_debug_take_hit_of(struct mb_machine *m, int owner,
			  struct mb_debug_hit *h)
{
	struct mb_debug *d = m->dbg;
	if (!d)
		return false;
	for (unsigned i = 0; i < m->ncpu; i++) {
		pthread_mutex_lock(&d->lock);
		bool hit = d->cpu[i].hit &&
			   (owner < 0 || mb_debug_hit_owner(&d->cpu[i].h) == owner);
		if (hit) {
			*h = d->cpu[i].h;
			d->cpu[i].hit = false;
		}
		pthread_mutex_unlock(&d->lock);
		if (!hit)
			continue;
		if (h->bp && h->bp->once && !h->bp->removed)
			disarm(m, h->bp);
		return true;
	}
	return false;
}

/* ---- watchpoints: read-only slots over the pages ------------------------ */

static int slot(struct mb_machine *m, unsigned id, uint64_t gpa, uint64_t size,
		uint8_t *host, bool ro)
{
	struct kvm_userspace_memory_region r = {
		.slot = id, .flags = ro ? KVM_MEM_READONLY : 0,
		.guest_phys_addr = gpa, .memory_size = size,
		.userspace_addr = (uintptr_t)host,
	};
	if (ioctl(m->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return mb_seterr(-errno, "watch: KVM_SET_USER_MEMORY_REGION: %s",
				 strerror(errno));
	if (size && id < MB_MAX_SLOTS)
		m->slot[id] = r; /* the table snapshots read */
	return 0;
}

bool mb_debug_has_watch(struct mb_machine *m)
{
	return m->dbg && (m->dbg->wps || m->dbg->nprot);
}

/* How a page is watched: not at all, WATCH_RO (writes only: a read-only
 * slot) or WATCH_HOLE (reads too: no slot, every access is an MMIO exit). */
enum { WATCH_NONE, WATCH_RO, WATCH_HOLE };

static int page_watch(struct mb_debug *d, uint64_t page)
{
	int k = WATCH_NONE;
	for (struct mb_wp *w = d->wps; w; w = w->next)
		if (page + PAGE > w->gpa && page < w->gpa + w->len)
			k = w->read ? WATCH_HOLE : (k ? k : WATCH_RO);
	for (struct mb_bp *b = d->nprot ? d->bps : NULL; b && !k; b = b->next)
		if (b->prot && (b->gpa & ~(PAGE - 1)) == page)
			k = WATCH_RO; /* a sw breakpoint's page: writes trap */
	return k;
}

static bool watched(struct mb_debug *d, uint64_t page)
{
	return page_watch(d, page) != WATCH_NONE;
}

/* Lay the memory map out again: every region, its watched pages split off
 * into read-only slots of their own. Only while every vCPU is paused. */
static int remap(struct mb_machine *m)
{
	struct mb_debug *d = m->dbg;
	int rc = 0;
	for (unsigned s = 0; s < m->slots; s++)
		slot(m, s, 0, 0, NULL, false); /* delete */
	unsigned id = 0;
	for (size_t i = 0; i < mb_mem_count(m->mem) && !rc; i++) {
		const struct mb_mem_region *r = mb_mem_region(m->mem, i);
		bool ro = r->flags & MB_MEM_READONLY;
		uint64_t start = r->base, end = r->base + r->size;
		for (uint64_t pg = r->base; pg < end && !rc; pg += PAGE) {
			int k = ro ? WATCH_NONE : page_watch(d, pg);
			if (k == WATCH_NONE)
				continue;
			if (pg > start)
				rc = slot(m, id++, start, pg - start,
					  r->host + (start - r->base), false);
			if (!rc && k == WATCH_RO)
				rc = slot(m, id++, pg, PAGE, r->host + (pg - r->base),
					  true);
			start = pg + PAGE;
		}
		if (!rc && start < end)
			rc = slot(m, id++, start, end - start,
				  r->host + (start - r->base), ro);
	}
	m->slots = id;
	/* Slots made again start with empty dirty logs and without logging:
	 * the next restore copies everything, the next snapshot turns logging
	 * back on (core/snapshot.c). */
	m->dirty_log = false;
	m->snap_base = 0;
	return rc;
}

int mb_debug_watch(struct mb_machine *m, uint64_t gpa, uint64_t len,
		   bool read, bool write, struct mb_wp **out)
{
	return mb_debug_watch_owned(m, gpa, len, read, write, 0, out);
}

int mb_debug_watch_owned(struct mb_machine *m, uint64_t gpa, uint64_t len,
			 bool read, bool write, int owner, struct mb_wp **out)
{
	struct mb_debug *d = dbg(m);
	int rc;
	if (!d)
		return -ENOMEM;
	if ((rc = need_paused(m, "watch")))
		return rc;
	if ((!write && !read) || !len)
		return mb_seterr(-EINVAL, "watch: nothing to watch");
	if (!m->readonly_mem)
		return mb_seterr(-ENOTSUP, "watch: needs KVM_CAP_READONLY_MEM");
	if (!mb_mem_ptr(m->mem, gpa, len, true))
		return mb_seterr(-EFAULT, "addr: 0x%" PRIx64 "+%" PRIu64 " is not "
				 "in one writable RAM region", gpa, len);
	struct mb_wp *w = calloc(1, sizeof *w);
	if (!w)
		return mb_seterr(-ENOMEM, "watch: out of memory");
	w->gpa = gpa, w->len = len, w->read = read, w->write = write;
	w->owner = owner;
	w->next = d->wps;
	d->wps = w;
	if ((rc = remap(m))) {
		d->wps = w->next;
		free(w);
		remap(m);
		return rc;
	}
	*out = w;
	return 0;
}

int mb_debug_unwatch(struct mb_machine *m, struct mb_wp *wp)
{
	struct mb_debug *d = m->dbg;
	int rc;
	if ((rc = need_paused(m, "remove")))
		return rc;
	for (struct mb_wp **p = d ? &d->wps : NULL; p && *p; p = &(*p)->next)
		if (*p == wp) {
			*p = wp->next;
			forget_hits(d, wp);
			free(wp);
			return remap(m);
		}
	return mb_seterr(-ENOENT, "watchpoint: not set");
}

uint64_t mb_wp_hits(const struct mb_wp *wp) { return wp->hits; }
int mb_wp_owner(const struct mb_wp *wp) { return wp->owner; }

/* A guest write to a page with software breakpoints: into RAM, then any
 * 0xCC it overwrote is put back, the byte written becoming the one under
 * it (what the step-over and the debugger's reads show). A breakpoint
 * taken out for a step-over (inserted false) just gets the write; it
 * re-reads its byte when it goes back in. */
static void bp_write(struct mb_machine *m, uint64_t a, const void *data,
		     unsigned len)
{
	struct mb_debug *d = m->dbg;
	static const uint8_t cc = 0xcc;
	if (!d->nprot) {
		mb_mem_write(m->mem, a, data, len);
		return;
	}
	pthread_mutex_lock(&d->lock);
	mb_mem_write(m->mem, a, data, len);
	for (struct mb_bp *b = d->bps; b; b = b->next)
		if (b->prot && b->inserted && b->gpa >= a && b->gpa - a < len) {
			b->orig = ((const uint8_t *)data)[b->gpa - a];
			mb_mem_load(m->mem, b->gpa, &cc, 1);
		}
	pthread_mutex_unlock(&d->lock);
}

bool mb_debug_mmio(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	struct mb_debug *d = m->dbg;
	struct kvm_run *run = v->run;
	uint64_t a = run->mmio.phys_addr;
	unsigned len = run->mmio.len;
	bool wr = run->mmio.is_write;
	if (!d || (!d->wps && !d->nprot) || !watched(d, a & ~(PAGE - 1)))
		return false;
	/* Complete the access ourselves: the slot is read-only or absent,
	 * RAM is not. */
	if (wr)
		bp_write(m, a, run->mmio.data, len);
	else if (mb_mem_read(m->mem, a, run->mmio.data, len))
		memset(run->mmio.data, 0xff, len);
	for (struct mb_wp *w = d->wps; w; w = w->next)
		if (a < w->gpa + w->len && w->gpa < a + len &&
		    (wr ? w->write : w->read)) {
			struct kvm_regs r;
			w->hits++;
			struct mb_debug_hit h = { .cpu = v->idx, .wp = w, .addr = a,
						  .len = len,
						  .data = mb_io_get(run->mmio.data,
								    len) };
			if (ioctl(v->fd, KVM_GET_REGS, &r) == 0)
				h.rip = r.rip;
			record(v, &h, MB_STOP_WATCHPOINT);
			break;
		}
	return true;
}

/* An instruction fetched from a page with no slot (a read watch) ends in
 * an emulation failure (kvm-here.md): map the page back read-only for one
 * single step (writes it makes still trap; its own reads of the page are
 * not seen), then take the slot away again. */
bool mb_debug_fetch(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	struct mb_debug *d = m->dbg;
	struct mb_paging p;
	uint64_t la = 0, gpa = 0;
	if (!d || !d->wps || !linear_rip(v, &la) ||
	    mb_vcpu_paging(m, v->idx, &p) || virt_to_phys(m, &p, la, &gpa))
		return false;
	uint64_t pg = gpa & ~(PAGE - 1);
	uint8_t *host = mb_mem_ptr(m->mem, pg, PAGE, false);
	if (page_watch(d, pg) != WATCH_HOLE || !host)
		return false;
	if (slot(m, m->slots, pg, PAGE, host, true))
		return false;
	step_insn(v, false);
	slot(m, m->slots, pg, 0, NULL, false);
	return true;
}

/* ---- catch ------------------------------------------------------------- */

int mb_debug_idt_handler(struct mb_machine *m, unsigned cpu, unsigned vec,
			 uint64_t *addr)
{
	struct mb_sregs s;
	uint8_t g[16];
	int rc;
	if (vec > 255)
		return mb_seterr(-EINVAL, "vector: %u is not 0-255", vec);
	if ((rc = mb_vcpu_get_sregs(m, cpu, &s)))
		return rc;
	bool pe = s.cr0 & 1, lma = s.efer & 0x400;
	unsigned size = lma ? 16 : pe ? 8 : 4;
	if ((uint64_t)vec * size + size - 1 > s.idt_limit)
		return mb_seterr(-ENOENT, "vector: %u is beyond the IDT's limit "
				 "(0x%x)", vec, s.idt_limit);
	if ((rc = mb_vcpu_read_virt(m, cpu, s.idt_base + (uint64_t)vec * size, g,
				    size)))
		return rc;
	if (!pe) { /* real mode: the IVT's offset, then segment */
		*addr = (uint64_t)(g[2] | g[3] << 8) * 16 + (g[0] | g[1] << 8);
		return 0;
	}
	/* SDM vol. 3, 6.11 / 6.14.1: offset 15:0, selector, P in byte 5 bit
	 * 7, offset 31:16, and in long mode offset 63:32 */
	if (!(g[5] & 0x80))
		return mb_seterr(-ENOENT, "vector: the IDT's gate %u is not present",
				 vec);
	uint64_t off = (uint64_t)(g[0] | g[1] << 8) | (uint64_t)(g[6] | g[7] << 8) << 16;
	if (lma)
		off |= (uint64_t)((uint32_t)g[8] | (uint32_t)g[9] << 8 |
				  (uint32_t)g[10] << 16 | (uint32_t)g[11] << 24) << 32;
	/* the gate's selector's base: 0 in the flat segments every kernel
	 * uses; long mode ignores it */
	*addr = off;
	return 0;
}

int mb_debug_catch_triple(struct mb_machine *m, bool on)
{
	struct mb_debug *d = dbg(m);
	if (!d)
		return -ENOMEM;
	d->catch_triple = on;
	return 0;
}

int mb_debug_caught(struct mb_machine *m)
{
	return m->dbg ? m->dbg->caught : -1;
}

bool mb_debug_shutdown(struct vcpu *v)
{
	struct mb_debug *d = v->m->dbg;
	if (!d->catch_triple)
		return false;
	d->caught = (int)v->idx;
	mb_machine_stop(v->m, MB_STOP_CATCH, 0, "vcpu %u: triple fault (caught)",
			v->idx);
	return true;
}
