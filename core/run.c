/*
 * The KVM_RUN loop of one vCPU thread and its exit handlers.
 * Every exit reason KVM can return ends up somewhere sensible: device I/O
 * goes to the bus, everything unexpected stops the machine with reason
 * "error", a message and a register dump. Nothing here aborts.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/internal.h"
#include "core/fallback.h"
#include "moonbox/sandbox.h"

/* Park until the machine runs again (or quits). Before parking, let KVM
 * finish a pending I/O instruction so registers read while paused are
 * those after the instruction (api.rst, "KVM_RUN" and immediate_exit). */
static bool park(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	if (v->need_complete) {
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELAXED);
		ioctl(v->fd, KVM_RUN, 0);
		v->need_complete = false;
	}
	pthread_mutex_lock(&m->lock);
	v->parked = true;
	m->parked++;
	pthread_cond_broadcast(&m->cond);
	while (atomic_load(&m->gate) == GATE_PAUSED) {
		if (v->dbg_req) { /* debug.c: single steps while paused */
			pthread_mutex_unlock(&m->lock);
			mb_debug_serve(v);
			pthread_mutex_lock(&m->lock);
			continue;
		}
		pthread_cond_wait(&m->cond, &m->lock);
	}
	m->parked--;
	v->parked = false;
	bool quit = atomic_load(&m->gate) == GATE_QUIT;
	pthread_mutex_unlock(&m->lock);
	return !quit;
}

static bool all_dead(struct mb_machine *m)
{
	for (unsigned i = 0; i < m->ncpu; i++)
		if (m->cpu[i].started && !m->cpu[i].dead)
			return false;
	return true;
}

/* HLT with our own irqchip: sleep until the controller has an interrupt
 * for us, or the machine pauses (the HLT state survives a pause). With
 * interrupts off (or no controller) nothing can wake the vCPU: when every
 * vCPU is like that, the machine halts. */
static void halt(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	pthread_mutex_lock(&m->lock);
	if (!v->hlt_if || !m->intc_ops) {
		v->dead = true;
		bool stop = all_dead(m);
		pthread_mutex_unlock(&m->lock);
		if (stop)
			mb_machine_stop(m, MB_STOP_HALT, 0,
					"every vCPU halted with interrupts disabled");
		pthread_mutex_lock(&m->lock);
		while (atomic_load(&m->gate) == GATE_RUNNING)
			pthread_cond_wait(&m->cond, &m->lock);
		pthread_mutex_unlock(&m->lock);
		return;
	}
	v->halted = true;
	while (atomic_load(&m->gate) == GATE_RUNNING &&
	       !m->intc_ops->pending(m->intc))
		pthread_cond_wait(&m->cond, &m->lock);
	if (m->intc_ops->pending(m->intc))
		v->in_hlt = false;
	v->halted = false;
	pthread_mutex_unlock(&m->lock);
}

/* With KVM's irqchip, HLT never reaches us. The waiter kicks vCPUs now
 * and then to ask: halted with interrupts off, twice in a row? Then the
 * vCPU is dead for good (Linux's poweroff without ACPI ends like this). */
static void probe_halt(struct vcpu *v)
{
	struct kvm_mp_state mp;
	struct kvm_regs r;
	v->probe = false;
	if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) || ioctl(v->fd, KVM_GET_REGS, &r))
		return;
	bool halted = mp.mp_state == KVM_MP_STATE_HALTED && !(r.rflags & 0x200);
	v->dead_probes = halted ? v->dead_probes + 1 : 0;
	pthread_mutex_lock(&v->m->lock);
	v->dead = v->dead_probes >= 2;
	bool stop = v->dead && all_dead(v->m);
	pthread_mutex_unlock(&v->m->lock);
	if (stop)
		mb_machine_stop(v->m, MB_STOP_HALT, 0,
				"every vCPU halted with interrupts disabled");
}

static void inject(struct vcpu *v)
{
	struct mb_machine *m = v->m;
	struct kvm_run *run = v->run;
	if (!m->intc_ops || !m->intc_ops->pending(m->intc)) {
		run->request_interrupt_window = 0;
		return;
	}
	if (run->ready_for_interrupt_injection && run->if_flag) {
		int vec = m->intc_ops->ack(m->intc);
		if (vec >= 0) {
			struct kvm_interrupt irq = { .irq = (uint32_t)vec };
			if (ioctl(v->fd, KVM_INTERRUPT, &irq) == 0)
				v->st.irq_injected++;
		}
		run->request_interrupt_window = m->intc_ops->pending(m->intc);
	} else {
		/* Ask KVM to exit as soon as the guest can take it. */
		run->request_interrupt_window = 1;
	}
}

static void do_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *p = (uint8_t *)run + run->io.data_offset;
	unsigned size = run->io.size;
	/* String I/O (rep ins/outs) arrives as count elements in one buffer;
	 * KVM keeps data_offset + count * size inside the run page. */
	if ((uint64_t)run->io.data_offset + (uint64_t)run->io.count * size >
	    v->run_size) {
		mb_machine_stop(v->m, MB_STOP_ERROR, 1,
				"KVM io exit with data outside kvm_run");
		return;
	}
	const struct mb_tapset *taps =
		atomic_load_explicit(&v->m->taps, memory_order_acquire);
	for (uint32_t i = 0; i < run->io.count; i++, p += size) {
		bool out = run->io.direction == KVM_EXIT_IO_OUT;
		if (__builtin_expect(taps != NULL, 0))
			mb_tap_access(v, taps, MB_SPACE_PIO, run->io.port, p,
				      size, out);
		else if (out)
			mb_bus_write(v->m->pio, run->io.port, p, size);
		else
			mb_bus_read(v->m->pio, run->io.port, p, size);
	}
	v->st.io++;
	v->need_complete = true;
}

static void do_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len;
	if (len == 0 || len > 8) {
		mb_machine_stop(v->m, MB_STOP_ERROR, 1,
				"KVM mmio exit with length %u", len);
		return;
	}
	if (v->m->dbg && mb_debug_mmio(v)) { /* a watched page */
		v->need_complete = true;
		return;
	}
	const struct mb_tapset *taps =
		atomic_load_explicit(&v->m->taps, memory_order_acquire);
	if (__builtin_expect(taps != NULL, 0))
		mb_tap_access(v, taps, MB_SPACE_MMIO, run->mmio.phys_addr,
			      run->mmio.data, len, run->mmio.is_write);
	else if (run->mmio.is_write)
		mb_bus_write(v->m->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else
		mb_bus_read(v->m->mmio, run->mmio.phys_addr, run->mmio.data, len);
	v->st.mmio++;
	v->need_complete = true;
}

/* Instruction bytes at RIP for an error message: from KVM when it gave
 * them, else read through the guest's own page tables. */
static unsigned insn_bytes(struct vcpu *v, uint8_t *out)
{
	struct kvm_run *run = v->run;
	if (run->emulation_failure.suberror == KVM_INTERNAL_ERROR_EMULATION &&
	    run->emulation_failure.ndata >= 2 &&
	    (run->emulation_failure.flags &
	     KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
		unsigned n = run->emulation_failure.insn_size;
		if (n > 15)
			n = 15;
		memcpy(out, run->emulation_failure.insn_bytes, n);
		if (n)
			return n;
	}
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_REGS, &r) || ioctl(v->fd, KVM_GET_SREGS, &s))
		return 0;
	struct kvm_translation t = { .linear_address = s.cs.base + r.rip };
	if (ioctl(v->fd, KVM_TRANSLATE, &t) || !t.valid)
		return 0;
	for (unsigned n = 15; n; n--)
		if (mb_mem_read(v->m->mem, t.physical_address, out, n) == 0)
			return n;
	return 0;
}

static void fail(struct vcpu *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail(struct vcpu *v, const char *fmt, ...)
{
	char what[512], regs[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	mb_vcpu_dump(v->m, v->idx, regs, sizeof regs);
	mb_machine_stop(v->m, MB_STOP_ERROR, 1, "vcpu %u: %s\n%s", v->idx, what,
			regs);
}

static void internal_error(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t b[15];
	unsigned n = 0;
	if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) {
		if (v->m->dbg && mb_debug_fetch(v))
			return; /* code on a read-watched page: stepped */
		n = insn_bytes(v, b);
		if (v->m->dbg && mb_debug_int3(v, b, n))
			return; /* the debugger's own int3 */
		if (mb_fallback_try(v->m, v->idx, b, n))
			return; /* completed in userspace; carry on */
		char hex[64] = "";
		for (unsigned i = 0; i < n; i++)
			snprintf(hex + 3 * i, sizeof hex - 3 * i, "%02x ", b[i]);
		fail(v, "KVM could not emulate an instruction (bytes: %s)",
		     n ? hex : "unavailable");
		return;
	}
	fail(v, "KVM internal error, suberror %u", run->internal.suberror);
}

static void system_event(struct vcpu *v)
{
	switch (v->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		mb_machine_stop(v->m, MB_STOP_SHUTDOWN, 0, "guest powered off");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		mb_machine_stop(v->m, MB_STOP_RESET, 0, "guest reset");
		break;
	case KVM_SYSTEM_EVENT_CRASH:
		fail(v, "guest crashed (system event)");
		break;
	default:
		fail(v, "unknown system event %u", v->run->system_event.type);
	}
}

static void handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	v->st.exits++;
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		do_io(v);
		break;
	case KVM_EXIT_MMIO:
		do_mmio(v);
		break;
	case KVM_EXIT_HLT:
		if (__builtin_expect(v->m->hlt_hooks != NULL, 0))
			for (struct hook *h = v->m->hlt_hooks; h; h = h->next)
				h->fn(h->arg);
		v->st.hlt++;
		v->in_hlt = true;
		v->hlt_if = run->if_flag;
		break;
	case KVM_EXIT_IRQ_WINDOW_OPEN:
	case KVM_EXIT_INTR:
		break;
	case KVM_EXIT_SHUTDOWN:
		if (v->m->dbg && mb_debug_shutdown(v))
			break;
		mb_machine_stop(v->m, MB_STOP_SHUTDOWN, 0,
				"vcpu %u: triple fault (shutdown)", v->idx);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		fail(v, "KVM could not enter the guest (hardware reason 0x%llx)",
		     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		internal_error(v);
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		system_event(v);
		break;
	case KVM_EXIT_DEBUG:
		mb_debug_exit(v);
		break;
	default:
		fail(v, "unexpected KVM exit reason %u", run->exit_reason);
	}
}

int mb_vcpu_run_once(struct vcpu *v, bool irqs)
{
	if (irqs && v->m->intc_ops)
		inject(v);
	else
		v->run->request_interrupt_window = 0;
	if (ioctl(v->fd, KVM_RUN, 0) < 0)
		return -errno;
	v->need_complete = false;
	handle_exit(v);
	return (int)v->run->exit_reason;
}

void *mb_vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct mb_machine *m = v->m;
	mb_seccomp_point(m, MB_THREAD_VCPU); /* first: before any guest code */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	for (;;) {
		/* Clear before looking at the gate: a kick that lands after
		 * this store is seen either here or by KVM_RUN itself. */
		__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (atomic_load(&m->gate) != GATE_RUNNING) {
			if (!park(v))
				break;
			continue;
		}
		if (v->in_hlt) {
			halt(v);
			continue;
		}
		if (v->dbg_resume) { /* debug.c: step over a breakpoint */
			mb_debug_resume(v);
			continue;
		}
		if (m->intc_ops)
			inject(v);
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				v->st.intr++;
				if (v->probe)
					probe_halt(v);
				continue;
			}
			fail(v, "KVM_RUN: %s", strerror(errno));
			continue;
		}
		v->need_complete = false;
		handle_exit(v);
	}
	return NULL;
}
