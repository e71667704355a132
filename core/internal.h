/* The machine's insides, shared by core/ files only. */
#ifndef MB_INTERNAL_H
#define MB_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>

#include "moonbox.h"
#include "core/fallback.h"

struct vcpu {
	struct mb_machine *m;
	unsigned idx;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool started;
	bool parked;        /* waiting in park(): registers are stable */
	bool need_complete; /* last exit was I/O: KVM_RUN must finish it */
	bool in_hlt;        /* stopped at HLT (survives a pause) */
	bool hlt_if;        /* interrupts were on at that HLT */
	bool halted;        /* HLT with interrupts on: sleeping until an IRQ */
	bool dead;          /* HLT with interrupts off: nothing wakes it */
	_Atomic bool probe; /* kernel irqchip: look at mp_state after EINTR */
	unsigned dead_probes;
	struct mb_vcpu_stats st;
	/* debug.c: a step request to serve while parked; step over a
	 * breakpoint at RIP before the next KVM_RUN */
	bool dbg_req, dbg_resume;
};

/* inject() (run.c) trusts two kvm_run fields, if_flag and
 * ready_for_interrupt_injection, which KVM writes at each exit. Once the
 * VMM writes the vCPU's registers or events itself (a snapshot restore, a
 * debugger's write, an instruction the fallback completed) they describe
 * the state before: interrupts may now be off, or an interrupt may be in
 * flight in the restored events, which a KVM_INTERRUPT would overwrite
 * while its 8259 in-service bit stays set for good (that line and every
 * lower one dead: seen as a Linux shell that no longer reads its serial
 * input after one restore in a few hundred). Forgetting them makes
 * inject() ask for an interrupt window; KVM exits with fresh ones as soon
 * as the guest can take an interrupt. */
static inline void mb_vcpu_forget_window(struct vcpu *v)
{
	v->run->ready_for_interrupt_injection = 0;
	v->run->if_flag = 0;
}

#define MB_MAX_SLOTS 64 /* memory regions (mem.c's limit) */

enum gate { GATE_PAUSED, GATE_RUNNING, GATE_QUIT };

struct call {
	void (*fn)(void *);
	void *arg;
	bool done;
	struct call *next;
};

struct hook {
	void (*fn)(void *);
	void *arg;
	struct hook *next;
	bool embedded; /* part of the object fn frees: not malloc'd */
};

struct mb_evloop;
struct mb_launcher;
void mb_launcher_free(struct mb_launcher *l); /* launch.c */
int mb_seccomp_start(struct mb_machine *m); /* seccomp.c */
/* evloop.c: the loop filters itself (mb_seccomp_point) once m says so */
void mb_evloop_seccomp(struct mb_evloop *ev, struct mb_machine *m);

struct mb_machine {
	int kvm, vm;
	unsigned ncpu;
	enum mb_irqchip irqchip;
	bool kernel_pit;
	bool headless; /* no KVM (mb_machine_config.headless) */
	void (*on_stop)(void *, enum mb_stop, int, const char *);
	void *on_stop_ctx;
	bool acpi;            /* acpi.c: tables for the Linux loaders */
	struct vcpu cpu[MB_MAX_CPUS];
	struct mb_mem *mem;
	struct mb_bus *pio, *mmio;
	unsigned slots;
	bool readonly_mem;
	struct kvm_cpuid2 *cpuid;
	/* What the loader knows of the guest: 64 for a 64-bit kernel (even
	 * one entered in 32-bit mode, as PVH does), else 0 (go by the
	 * current mode). The gdb stub picks its register layout from it. */
	int guest_bits;
	/* Bus taps (tap.c): the published set, NULL when none (the exit
	 * path's one branch), and the registry that owns them. */
	struct mb_tapset *_Atomic taps;
	struct mb_fault_site *_Atomic irq_fault; /* interrupt faults, or NULL */
	struct mb_irq_delays *irq_delays; /* irq.delay's timers (irq_delay.c) */
	mb_irq_observer *_Atomic irq_obs; /* m:on("irq"), or NULL */
	void *irq_obs_ctx;
	struct taps *tapreg;

	/* Run state: everything below is guarded by lock; cond is broadcast
	 * on every change (few waiters, rare changes), save borrowers, which
	 * changes twice per Lua call (see drainers). */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_mutex_t call_lock; /* one vCPU at a time in the waiter's world */
	_Atomic int gate;
	bool threads;     /* vCPU threads exist */
	unsigned parked;  /* vCPUs in park() */
	struct call *calls;
	pthread_t waiter; /* thread serving calls */
	bool has_waiter;
	/* Threads running a call in the waiter's world right now: the waiter
	 * does not return to its Lua state until they are done. */
	unsigned borrowers;
	/* Threads waiting (on cond) for borrowers to reach 0: only they are
	 * woken when a borrower leaves. A broadcast on every call woke the
	 * waiter asleep in mb_machine_wait, a thread switch per call. */
	unsigned drainers;
	enum mb_stop stop;
	int stop_code;
	char stop_msg[4096];

	const struct mb_intc_ops *intc_ops;
	void *intc;

	_Atomic uint64_t fb_counts[MB_FB_KINDS]; /* emulation fallback */

	/* resource.c: lines in use, reserved ranges, devices to announce */
	uint16_t irq_users[64]; /* devices on each line (lines are shared) */
	/* machine.c: each line as last driven, and its rising edges */
	_Atomic uint8_t irq_level[64];
	_Atomic uint64_t irq_raised[64];
	unsigned nres, nvirtio;
	struct mb_range res[MB_MAX_RESERVED];
	struct mb_platform_dev virtio[MB_MAX_RESERVED];

	struct mb_evloop *ev;
	struct mb_clock clock;
	/* machine.c: kvmclock read at a stop, put back at the resume, so
	 * guest time stands still while the machine is held (lock) */
	bool adjust_clock, kvmclock_saved;
	struct kvm_clock_data kvmclock;
	struct hook *hooks;
	/* devproc.c: called (m->lock held) after guest time froze or thawed */
	struct hook *freeze_hooks;
	/* devproc.c: called on a vCPU at each hlt exit (posted writes) */
	struct hook *hlt_hooks;

	/* device.c: devices in the order added */
	struct mb_device **devs;
	size_t ndevs, capdevs;

	struct mb_debug *dbg; /* debug.c: NULL until a debugger asks */
	struct mb_holdtime *holdtime; /* holdtime.c: NULL until first held */
	/* snapshot.c: KVM's memory slots as set (slot i: mem region added
	 * i-th), dirty logging, and which snapshot RAM equals since the dirty
	 * logs were last cleared (0: none). */
	struct kvm_userspace_memory_region slot[MB_MAX_SLOTS];
	bool dirty_log;
	uint64_t snap_id, snap_base;

	/* machine.c: a debugger (gdb_server.c) holding runs at its stops;
	 * guarded by lock */
	struct mb_holder *holder;
	struct mb_launcher *launcher; /* launch.c: NULL until first used */
	/* seccomp.c: filter moonbox's threads once running (seccomp), and
	 * the runs have begun (seccomp_go: each thread filters itself) */
	bool seccomp;
	_Atomic bool seccomp_go;
	bool hold_start; /* the next start holds before any instruction */
	bool held;       /* the waiter sleeps in a hold */
	bool hold_go, hold_end; /* released: resume, or end the run with ... */
	struct mb_result hold_r;
};

/* A debugger's say over a run (machine.c). stopped() runs on the waiter's
 * thread (mb_machine_wait) with every vCPU parked and no lock held, each
 * time the run stops; true holds it: the wait goes on sleeping (serving
 * calls) until mb_hold_release(), and the script never sees the stop. */
struct mb_holder {
	bool (*stopped)(void *opaque, const struct mb_result *r);
	void *opaque;
};
void mb_hold_set(struct mb_machine *m, struct mb_holder *h); /* NULL: none */
/* Stop for the holder: a running machine stops with MB_STOP_DEBUGGER
 * (stopped() follows, true returned); one not running holds at its next
 * start (false returned). */
bool mb_hold_request(struct mb_machine *m);
void mb_hold_cancel(struct mb_machine *m); /* forget a pending hold_start */
/* End a hold: the run goes on (end NULL), or returns end to its caller. */
void mb_hold_release(struct mb_machine *m, const struct mb_result *end);
bool mb_hold_held(struct mb_machine *m);

/* devproc.c, for fuzz/fuzz_devproc.c: hostile device messages */
void mb_devproc_fuzz(const uint8_t *data, size_t len);
/* machine.c: push an embedded hook (cannot fail), or take one back */
void mb_machine_push_hook(struct mb_machine *m, struct hook *h);
void mb_machine_drop_hook(struct mb_machine *m, struct hook *h);
/* kvm.c */
int mb_kvm_check_ext(int kvm, int cap);
/* holdtime.c: in-kernel PIT, LAPIC timers and TSC stand still while held
 * (freeze/thaw from machine.c's freeze(), m->lock held, vCPUs parked);
 * refreeze holds again after a thaw for a snapshot if the machine is
 * still held; forget drops what was saved (a restore replaced it). */
void mb_holdtime_freeze(struct mb_machine *m);
void mb_holdtime_thaw(struct mb_machine *m);
void mb_holdtime_refreeze(struct mb_machine *m);
void mb_holdtime_forget(struct mb_machine *m);
void mb_holdtime_info(FILE *out, int kvm);
/* confine.c: what seccomp, Landlock and user namespaces allow here (--info). */
/* tap.c: an access crossing the bus with taps set. */
struct mb_tapset;
void mb_tap_access(struct vcpu *v, const struct mb_tapset *s,
		   enum mb_space space, uint64_t addr, void *data,
		   unsigned size, bool write);
void mb_confine_info(FILE *out);
/* cpuid.c */
int mb_cpuid_build(struct mb_machine *m, const struct mb_cpuid_policy *p);
int mb_cpuid_apply(struct mb_machine *m, struct vcpu *v);
/* vcpu.c */
int mb_vcpu_init(struct mb_machine *m, unsigned idx);
void mb_vcpu_fini(struct vcpu *v);
void *mb_vcpu_thread(void *arg);
void mb_vcpu_kick(struct vcpu *v);
void mb_vcpu_kick_setup(void);
/* run.c, for debug.c: one KVM_RUN and its exit (no interrupt injected
 * unless irqs); the exit reason, or -errno when KVM_RUN failed. */
int mb_vcpu_run_once(struct vcpu *v, bool irqs);
/* debug.c: the hooks run.c calls (each a no-op while m->dbg is NULL) */
void mb_debug_serve(struct vcpu *v);  /* in park(), for v->dbg_req */
void mb_debug_resume(struct vcpu *v); /* before KVM_RUN, for v->dbg_resume */
void mb_debug_exit(struct vcpu *v);   /* KVM_EXIT_DEBUG */
bool mb_debug_int3(struct vcpu *v, const uint8_t *insn, unsigned n);
bool mb_debug_mmio(struct vcpu *v);   /* an access to a watched page */
bool mb_debug_fetch(struct vcpu *v);  /* emulation failure: fetch from one */
bool mb_debug_shutdown(struct vcpu *v); /* a triple fault, if caught */
/* Watched pages split the memory slots: snapshots refuse meanwhile. */
bool mb_debug_has_watch(struct mb_machine *m);
/* mem.c: pages moonbox itself wrote (mb_mem_write/load, mb_mem_ptr for
 * writing), one bit per 4K page of region i; OR'd into out and cleared
 * (cheap when nothing was written). */
void mb_mem_take_dirty(struct mb_mem *mem, size_t i, uint64_t *out);
/* mem.c: a device process's bitmap for the region at base (its sink,
 * shared memory), taken with the region's own by mb_mem_take_dirty;
 * add false: forgotten. */
int mb_mem_dirty_source(struct mb_mem *mem, uint64_t base, uint64_t *bits, bool add);
/* mem.c: region i's scratch bitmap (same size, zero between uses: whoever
 * fills it clears the words it used). */
uint64_t *mb_mem_log(struct mb_mem *mem, size_t i);
/* irq_delay.c: edges F.irq.delay holds back, driven later by
 * mb_machine_irq_edge (machine.c: raised, then left high or lowered). */
struct mb_irq_delays;
int mb_irq_delays_init(struct mb_machine *m);
void mb_irq_delays_free(struct mb_machine *m);
void mb_irq_delays_level(struct mb_machine *m, unsigned line, int level);
bool mb_irq_delay(struct mb_machine *m, unsigned line, uint32_t ms); /* false: now */
void mb_machine_irq_edge(struct mb_machine *m, unsigned line, bool stay_high);

/* evloop.c */
struct mb_evloop *mb_evloop_new(void);
void mb_evloop_stop(struct mb_evloop *ev);
bool mb_evloop_is_self(struct mb_evloop *ev); /* called on the loop's thread */
void mb_evloop_free(struct mb_evloop *ev);
void mb_evloop_clock(struct mb_evloop *ev, struct mb_clock *c);
/* Stop or restart the clock (mb_machine_freeze): frozen, now() stands
 * still and no timer fires; thawed, timers are due as much later as the
 * clock stood. */
void mb_evloop_freeze(struct mb_evloop *ev, bool frozen);
bool mb_evloop_frozen(struct mb_evloop *ev);
int mb_evloop_watch(struct mb_evloop *ev, int fd,
		    void (*cb)(void *opaque, int fd), void *opaque);
void mb_evloop_unwatch(struct mb_evloop *ev, int fd);

#endif
