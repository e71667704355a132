/*
 * A machine: one KVM VM, its memory map, two buses, vCPU threads, and the
 * run state that Lua (or any embedder) drives: start, wait, pause, resume.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "moonbox/sandbox.h"

/* Intel VMX needs three pages for real-mode emulation somewhere the guest
 * does not use: just below the BIOS ROM, as other VMMs do. */
#define TSS_ADDR 0xfffbd000u

/* For m:irqs(): the level a line was last driven to, its rising edges. */
static void count_irq(struct mb_machine *m, unsigned line, int level)
{
	uint8_t was = atomic_exchange_explicit(&m->irq_level[line & 63],
					       level != 0, memory_order_relaxed);
	if (level && !was)
		atomic_fetch_add_explicit(&m->irq_raised[line & 63], 1,
					  memory_order_relaxed);
}

/* A rising edge through the interrupt fault site (moonbox/fault.h), when
 * one is set: false drops it; *pulses: extra edges to drive after it. */
static bool irq_pass(struct mb_machine *m, unsigned line, int level,
		     unsigned *pulses)
{
	struct mb_fault_site *fs =
		atomic_load_explicit(&m->irq_fault, memory_order_acquire);
	mb_irq_observer *ob = atomic_load_explicit(&m->irq_obs, memory_order_acquire);
	*pulses = 0;
	if (__builtin_expect(((uintptr_t)fs | (uintptr_t)ob) == 0, 1))
		return true;
	mb_irq_delays_level(m, line, level);
	if (!level || atomic_load_explicit(&m->irq_level[line & 63], memory_order_relaxed))
		return true;
	/* An m:on("irq") function is asked about an edge no rule acted on
	 * (the rules decide first): it waits for the answer
	 * (mb_machine_irq_answer). */
	struct mb_fault_verdict v;
	if (fs)
		mb_fault_irq_decide(fs, line, &v);
	if (ob && !(fs && (v.drop || v.delay_ms || v.pulses)) && ob(m->irq_obs_ctx, line))
		return false;
	if (!fs)
		return true;
	*pulses = v.pulses;
	/* Late: not now; the timer drives it (a full pool: on time). */
	if (v.delay_ms && !v.drop && mb_irq_delay(m, line, v.delay_ms))
		return false;
	return !v.drop;
}

static void kernel_line(struct mb_machine *m, unsigned line, int level)
{
	struct kvm_irq_level il = { .irq = line, .level = level };
	ioctl(m->vm, KVM_IRQ_LINE, &il);
}

static void kernel_irq(void *ctx, unsigned line, int level)
{
	struct mb_machine *m = ctx;
	unsigned pulses;
	if (!irq_pass(m, line, level, &pulses))
		return;
	count_irq(m, line, level);
	kernel_line(m, line, level);
	for (unsigned i = 0; i < pulses; i++) { /* a storm: low, high again */
		count_irq(m, line, 0), count_irq(m, line, 1);
		kernel_line(m, line, 0), kernel_line(m, line, 1);
	}
}

static void user_irq(void *ctx, unsigned line, int level)
{
	struct mb_machine *m = ctx;
	unsigned pulses;
	if (!irq_pass(m, line, level, &pulses))
		return;
	count_irq(m, line, level);
	if (!m->intc_ops || !m->intc_ops->set_line)
		return;
	m->intc_ops->set_line(m->intc, line, level);
	for (unsigned i = 0; i < pulses; i++) {
		count_irq(m, line, 0), count_irq(m, line, 1);
		m->intc_ops->set_line(m->intc, line, 0);
		m->intc_ops->set_line(m->intc, line, 1);
	}
}

/* A late edge (irq_delay.c), past the fault site: raised, then lowered
 * unless the device drives the line high now. */
void mb_machine_irq_edge(struct mb_machine *m, unsigned line, bool stay_high)
{
	bool kernel = m->irqchip == MB_IRQCHIP_KERNEL && !m->headless;
	for (int level = 1; level >= (stay_high ? 1 : 0); level--) {
		count_irq(m, line, level);
		if (kernel)
			kernel_line(m, line, level);
		else if (m->intc_ops && m->intc_ops->set_line)
			m->intc_ops->set_line(m->intc, line, level);
	}
}

void mb_machine_irq_answer(struct mb_machine *m, unsigned line,
			   const struct mb_fault_verdict *v)
{
	if (v && v->drop)
		return; /* the device believes it raised the line */
	/* Late: through irq.delay's timers, which raise it and leave it where
	 * the device drives it by then. 0 ms: at once, the same way. */
	if (mb_irq_delay(m, line, v ? v->delay_ms : 0))
		return;
	mb_machine_irq_edge(m, line, false); /* the pool is full: now, a pulse */
	for (unsigned i = 0; v && i < v->pulses; i++)
		mb_machine_irq_edge(m, line, false);
}

int mb_machine_set_irq_observer(struct mb_machine *m, mb_irq_observer *fn, void *ctx)
{
	mb_irq_observer *old = atomic_load(&m->irq_obs);
	if (old && (old != fn || m->irq_obs_ctx != ctx))
		return mb_seterr(-EBUSY, "machine: interrupts already observed");
	int rc = mb_irq_delays_init(m); /* an answer's edge goes through its timers */
	if (rc)
		return rc;
	m->irq_obs_ctx = ctx;
	atomic_store_explicit(&m->irq_obs, fn, memory_order_release);
	return 0;
}

int mb_machine_set_irq_fault(struct mb_machine *m, struct mb_fault_site *s)
{
	int rc = mb_irq_delays_init(m);
	return rc ? rc : mb_fault_site_install(&m->irq_fault, s);
}

int mb_machine_create(const struct mb_machine_config *cfg,
		      struct mb_machine **out)
{
	int rc;
	unsigned n = cfg && cfg->cpus ? cfg->cpus : 1;
	if (n > MB_MAX_CPUS)
		return mb_seterr(-EINVAL, "cpus: %u is more than %d", n,
				 MB_MAX_CPUS);
	struct mb_machine *m = calloc(1, sizeof *m);
	if (!m)
		return mb_seterr(-ENOMEM, "machine: out of memory");
	m->vm = -1;
	m->ncpu = n;
	m->irqchip = cfg ? cfg->irqchip : MB_IRQCHIP_USER;
	m->seccomp = mb_seccomp_default(-1);
	m->acpi = cfg && cfg->acpi;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->call_lock, NULL);
	pthread_condattr_t ca; /* timed waits count on the monotonic clock */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&m->gate, GATE_PAUSED);
	m->mem = mb_mem_new();
	m->pio = mb_bus_new("pio", 0x10000);
	m->mmio = mb_bus_new("mmio", 0);
	m->ev = mb_evloop_new();
	if (!m->mem || !m->pio || !m->mmio || !m->ev) {
		rc = mb_seterr(-ENOMEM, "machine: out of memory");
		goto fail;
	}
	mb_evloop_clock(m->ev, &m->clock);
	if (cfg && cfg->headless) {
		m->headless = true;
		m->kvm = -1;
		m->ncpu = 0;
		m->on_stop = cfg->on_stop, m->on_stop_ctx = cfg->on_stop_ctx;
		*out = m;
		return 0;
	}
	rc = m->kvm = mb_kvm_open();
	if (rc < 0)
		goto fail;
	m->vm = ioctl(m->kvm, KVM_CREATE_VM, 0);
	if (m->vm < 0) {
		rc = mb_seterr(-errno, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	m->readonly_mem = mb_kvm_check_ext(m->kvm, KVM_CAP_READONLY_MEM);
	m->adjust_clock = mb_kvm_check_ext(m->kvm, KVM_CAP_ADJUST_CLOCK) > 0;
	if (mb_kvm_check_ext(m->kvm, KVM_CAP_SET_TSS_ADDR))
		ioctl(m->vm, KVM_SET_TSS_ADDR, TSS_ADDR);
	if (m->irqchip == MB_IRQCHIP_KERNEL) {
		if (!mb_kvm_check_ext(m->kvm, KVM_CAP_IRQCHIP) ||
		    ioctl(m->vm, KVM_CREATE_IRQCHIP, 0) < 0) {
			rc = mb_seterr(-ENOTSUP, "irqchip: \"kernel\" is not "
				       "available here (KVM_CREATE_IRQCHIP: %s); "
				       "use irqchip = \"user\"", strerror(errno));
			goto fail;
		}
		struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
		if (cfg->kernel_pit && ioctl(m->vm, KVM_CREATE_PIT2, &pit) < 0) {
			rc = mb_seterr(-errno, "pit: \"kernel\": KVM_CREATE_PIT2: %s",
				       strerror(errno));
			goto fail;
		}
		m->kernel_pit = cfg->kernel_pit;
	}
	rc = mb_cpuid_build(m, cfg ? &cfg->cpuid : NULL);
	if (rc)
		goto fail;
	mb_vcpu_kick_setup();
	for (unsigned i = 0; i < n; i++) {
		rc = mb_vcpu_init(m, i);
		if (rc)
			goto fail;
	}
	/* The PM blocks the FADT points at: part of the machine from the
	 * start, so a machine made again for a snapshot has them too. */
	struct mb_device *pm;
	if (m->acpi && (rc = mb_acpi_pm_attach(m, NULL, &pm)))
		goto fail;
	*out = m;
	return 0;
fail:
	mb_machine_destroy(m);
	return rc;
}

void mb_machine_destroy(struct mb_machine *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	atomic_store(&m->gate, GATE_QUIT);
	/* Nobody will serve pending Lua calls any more: release them. */
	for (struct call *c = m->calls; c; c = c->next)
		c->done = true;
	m->calls = NULL;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	for (unsigned i = 0; i < m->ncpu; i++)
		if (m->cpu[i].started) {
			mb_vcpu_kick(&m->cpu[i]);
			pthread_join(m->cpu[i].thread, NULL);
		}
	/* The event loop stops before devices go: no callback outlives them.
	 * Its timers are freed after them: devices free their timers. */
	mb_evloop_stop(m->ev);
	for (struct hook *h = m->hooks, *n; h; h = n) {
		n = h->next;
		bool embedded = h->embedded;
		h->fn(h->arg); /* may free h itself when embedded */
		if (!embedded)
			free(h);
	}
	m->hooks = NULL;
	mb_irq_delays_free(m); /* its timers, before the loop's go */
	mb_launcher_free(m->launcher); /* its children go with it */
	free(m->devs);
	mb_evloop_free(m->ev);
	for (unsigned i = 0; i < m->ncpu; i++)
		mb_vcpu_fini(&m->cpu[i]);
	if (m->vm >= 0)
		close(m->vm);
	if (m->kvm > 0)
		close(m->kvm);
	mb_fault_site_put(atomic_load(&m->irq_fault));
	mb_mem_free(m->mem);
	mb_bus_free(m->pio);
	mb_bus_free(m->mmio);
	free(m->cpuid);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->call_lock);
	pthread_cond_destroy(&m->cond);
	free(m);
}

static int load_file(const char *file, uint8_t *dst, uint64_t size)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mb_seterr(-errno, "%s: %s", file, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) || (uint64_t)st.st_size > size) {
		close(fd);
		return mb_seterr(-EFBIG, "%s: %lld bytes do not fit a region of "
				 "%" PRIu64, file, (long long)st.st_size, size);
	}
	uint64_t done = 0;
	while (done < (uint64_t)st.st_size) {
		ssize_t r = read(fd, dst + done, st.st_size - done);
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;
			close(fd);
			return mb_seterr(-e, "%s: %s", file, strerror(e));
		}
		done += r;
	}
	close(fd);
	return 0;
}

int mb_machine_add_memory(struct mb_machine *m, uint64_t base, uint64_t size,
			  const char *file, bool readonly, const char *name)
{
	long page = sysconf(_SC_PAGESIZE);
	if (m->headless)
		return mb_seterr(-ENOTSUP, "memory: a headless machine maps the "
				 "memory it is given (mb_mem_add)");
	if ((base | size) & (page - 1))
		return mb_seterr(-EINVAL, "memory: region %s at 0x%" PRIx64 " size "
				 "0x%" PRIx64 " is not page-aligned (4K)",
				 name ? name : "ram", base, size);
	if (readonly && !m->readonly_mem)
		return mb_seterr(-ENOTSUP, "memory: read-only region %s needs "
				 "KVM_CAP_READONLY_MEM, which this KVM lacks", name);
	int rc = mb_mem_add(m->mem, base, size, readonly ? MB_MEM_READONLY : 0,
			    NULL, name);
	if (rc)
		return rc;
	uint8_t *host = mb_mem_ptr(m->mem, base, size, false);
	if (file && (rc = load_file(file, host, size)))
		return rc; /* the region stays mapped; freed with the machine */
	struct kvm_userspace_memory_region r = {
		.slot = m->slots,
		.flags = readonly ? KVM_MEM_READONLY : 0,
		.guest_phys_addr = base,
		.memory_size = size,
		.userspace_addr = (uintptr_t)host,
	};
	if (m->slots == MB_MAX_SLOTS)
		return mb_seterr(-ENOSPC, "memory: more than %d regions", MB_MAX_SLOTS);
	if (ioctl(m->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		return mb_seterr(-errno, "memory: KVM_SET_USER_MEMORY_REGION for %s: "
				 "%s", name, strerror(errno));
	m->slot[m->slots++] = r; /* snapshots turn dirty logging on here */
	return 0;
}

struct mb_mem *mb_machine_mem(struct mb_machine *m) { return m->mem; }
struct mb_bus *mb_machine_pio(struct mb_machine *m) { return m->pio; }
struct mb_bus *mb_machine_mmio(struct mb_machine *m) { return m->mmio; }
const struct mb_clock *mb_machine_clock(struct mb_machine *m) { return &m->clock; }
enum mb_irqchip mb_machine_irqchip(struct mb_machine *m) { return m->irqchip; }
unsigned mb_machine_cpus(struct mb_machine *m) { return m->ncpu; }
bool mb_machine_kernel_pit(struct mb_machine *m) { return m->kernel_pit; }
int mb_machine_vm_fd(struct mb_machine *m) { return m->vm; }

int mb_machine_irq(struct mb_machine *m, unsigned line, struct mb_irq *out)
{
	unsigned max = m->irqchip == MB_IRQCHIP_KERNEL ? 24 : 16;
	if (line >= max)
		return mb_seterr(-EINVAL, "irq: line %u does not exist (0-%u)", line,
				 max - 1);
	out->set = m->irqchip == MB_IRQCHIP_KERNEL && !m->headless ? kernel_irq
								    : user_irq;
	out->ctx = m;
	out->line = line;
	return 0;
}

unsigned mb_machine_irq_lines(struct mb_machine *m)
{
	return m->irqchip == MB_IRQCHIP_KERNEL ? 24 : 16;
}

int mb_machine_irq_info(struct mb_machine *m, unsigned line,
			struct mb_irq_info *out)
{
	if (line >= mb_machine_irq_lines(m))
		return mb_seterr(-EINVAL, "irq: line %u does not exist (0-%u)", line,
				 mb_machine_irq_lines(m) - 1);
	out->users = m->irq_users[line];
	out->level = atomic_load(&m->irq_level[line]);
	out->raised = atomic_load(&m->irq_raised[line]);
	return 0;
}

void mb_machine_set_intc(struct mb_machine *m, const struct mb_intc_ops *ops,
			 void *intc)
{
	m->intc_ops = ops;
	m->intc = intc;
}

/* KVM's irqchip tells userspace about acknowledgements only through an
 * irqfd's resample eventfd (api.rst, KVM_IRQFD): it fires when the guest
 * EOIs the GSI, whoever raised it. An irqfd we never signal is a pure
 * acknowledgement listener. */
struct ackfd {
	int efd, rfd;
	void (*fn)(void *);
	void *opaque;
	struct hook hook; /* freed with the machine; recording it cannot fail */
};

static void on_resample(void *opaque, int fd)
{
	struct ackfd *a = opaque;
	uint64_t v;
	if (read(fd, &v, sizeof v) == sizeof v)
		a->fn(a->opaque);
}

static void ackfd_free(void *p)
{
	struct ackfd *a = p;
	close(a->efd);
	close(a->rfd);
	free(a);
}

static int kernel_on_ack(struct mb_machine *m, unsigned line,
			 void (*fn)(void *), void *opaque)
{
	if (!mb_kvm_check_ext(m->kvm, KVM_CAP_IRQFD_RESAMPLE))
		return mb_seterr(-ENOTSUP, "irq: KVM lacks KVM_CAP_IRQFD_RESAMPLE");
	struct ackfd *a = calloc(1, sizeof *a);
	if (!a)
		return mb_seterr(-ENOMEM, "irq: out of memory");
	a->fn = fn, a->opaque = opaque;
	a->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	a->rfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct kvm_irqfd irqfd = { .fd = (uint32_t)a->efd, .gsi = line,
				   .flags = KVM_IRQFD_FLAG_RESAMPLE,
				   .resamplefd = (uint32_t)a->rfd };
	if (a->efd < 0 || a->rfd < 0 || ioctl(m->vm, KVM_IRQFD, &irqfd) < 0 ||
	    mb_machine_watch(m, a->rfd, on_resample, a)) {
		int e = errno;
		if (a->efd >= 0)
			close(a->efd);
		if (a->rfd >= 0)
			close(a->rfd);
		free(a);
		return mb_seterr(-e, "irq: KVM_IRQFD resample on line %u: %s", line,
				 strerror(e));
	}
	a->hook = (struct hook){ .fn = ackfd_free, .arg = a, .embedded = true };
	mb_machine_push_hook(m, &a->hook);
	return 0;
}

int mb_machine_irq_on_ack(struct mb_machine *m, unsigned line,
			  void (*fn)(void *), void *opaque)
{
	if (m->irqchip == MB_IRQCHIP_KERNEL && !m->headless)
		return kernel_on_ack(m, line, fn, opaque);
	if (!m->intc_ops || !m->intc_ops->on_ack)
		return mb_seterr(-ENOTSUP, "irq: this controller does not report "
				 "acknowledgements");
	m->intc_ops->on_ack(m->intc, line, fn, opaque);
	return 0;
}

void mb_machine_kick_irq(struct mb_machine *m)
{
	/* Halted vCPUs sleep on cond; running ones leave KVM_RUN to look. */
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->cond);
	/* halted is the vCPU's, under m->lock (TSan: read unlocked, a stale
	 * value cost a kick or skipped one) */
	for (unsigned i = 0; i < m->ncpu; i++)
		if (m->cpu[i].started && !m->cpu[i].halted)
			mb_vcpu_kick(&m->cpu[i]);
	pthread_mutex_unlock(&m->lock);
}

int mb_machine_watch(struct mb_machine *m, int fd,
		     void (*cb)(void *opaque, int fd), void *opaque)
{
	return mb_evloop_watch(m->ev, fd, cb, opaque);
}

void mb_machine_unwatch(struct mb_machine *m, int fd)
{
	mb_evloop_unwatch(m->ev, fd);
}

void mb_machine_push_hook(struct mb_machine *m, struct hook *h)
{
	/* Run in reverse order of registration, like a stack of cleanups. */
	h->next = m->hooks;
	m->hooks = h;
}

void mb_machine_drop_hook(struct mb_machine *m, struct hook *h)
{
	for (struct hook **p = &m->hooks; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			return;
		}
}

int mb_machine_on_destroy(struct mb_machine *m, void (*fn)(void *), void *arg)
{
	/* On failure nothing is registered and nothing is freed: the caller
	 * still owns arg and decides (an object on a bus must come off it
	 * before it can be freed). */
	struct hook *h = malloc(sizeof *h);
	if (!h)
		return mb_seterr(-ENOMEM, "machine: out of memory for a cleanup");
	h->fn = fn, h->arg = arg, h->embedded = false;
	mb_machine_push_hook(m, h);
	return 0;
}

/* ---- stopping, pausing, waiting -------------------------------------- */

static void kick_all(struct mb_machine *m)
{
	for (unsigned i = 0; i < m->ncpu; i++)
		if (m->cpu[i].started)
			mb_vcpu_kick(&m->cpu[i]);
}

void mb_machine_stop(struct mb_machine *m, enum mb_stop reason, int code,
		     const char *fmt, ...)
{
	if (m->headless) { /* the VMM that owns the guest decides */
		char msg[256] = "";
		if (fmt) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(msg, sizeof msg, fmt, ap);
			va_end(ap);
		}
		if (m->on_stop)
			m->on_stop(m->on_stop_ctx, reason, code, msg);
		return;
	}
	pthread_mutex_lock(&m->lock);
	if (m->stop == MB_STOP_NONE) {
		m->stop = reason;
		m->stop_code = code;
		m->stop_msg[0] = 0;
		if (fmt) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(m->stop_msg, sizeof m->stop_msg, fmt, ap);
			va_end(ap);
		}
		if (atomic_load(&m->gate) == GATE_RUNNING)
			atomic_store(&m->gate, GATE_PAUSED);
	}
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	kick_all(m);
}

/* Kernel irqchip: ask every vCPU to check whether it is dead-halted. */
static void probe_all(struct mb_machine *m)
{
	for (unsigned i = 0; i < m->ncpu; i++)
		if (m->cpu[i].started) {
			m->cpu[i].probe = true;
			mb_vcpu_kick(&m->cpu[i]);
		}
}

/* With m->lock held: wait until no thread runs a call in the waiter's
 * world. */
static void drain(struct mb_machine *m)
{
	m->drainers++;
	while (m->borrowers)
		pthread_cond_wait(&m->cond, &m->lock);
	m->drainers--;
}

/* With m->lock held: the waiter stops lending its world. A thread that
 * is not a vCPU (the attach server, gdb's monitor) may still be running a
 * call in it after every vCPU parked; returning to Lua then would run two
 * threads in one Lua state (TSan saw it in test_attach). */
static void stop_lending(struct mb_machine *m)
{
	drain(m);
	m->has_waiter = false;
}

static bool is_waiter(struct mb_machine *m)
{
	return m->has_waiter && pthread_equal(m->waiter, pthread_self());
}

/* With m->lock held: run one queued call, if any. Returns true if it did. */
static bool serve_one(struct mb_machine *m)
{
	struct call *c = m->calls;
	if (!c)
		return false;
	m->calls = c->next;
	pthread_mutex_unlock(&m->lock);
	c->fn(c->arg);
	pthread_mutex_lock(&m->lock);
	c->done = true;
	pthread_cond_broadcast(&m->cond);
	return true;
}

void mb_machine_call_main(struct mb_machine *m, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&m->lock);
	/* Before the first start the caller is the script's own thread, save
	 * the event loop (a timer armed early): that one queues. */
	if (is_waiter(m) || (!m->threads && !mb_evloop_is_self(m->ev))) {
		pthread_mutex_unlock(&m->lock);
		fn(arg);
		return;
	}
	if (atomic_load(&m->gate) == GATE_QUIT) {
		pthread_mutex_unlock(&m->lock);
		return;
	}
	if (m->has_waiter && !m->seccomp) {
		/* The waiter sleeps in C until every vCPU is parked, so its
		 * single-threaded world (a Lua state) is free: borrow it here,
		 * one vCPU at a time, and save two thread switches. Not under
		 * seccomp: this thread's filter would refuse what a Lua
		 * callback may do (io, os); the waiter's thread is free. */
		m->borrowers++;
		pthread_mutex_unlock(&m->lock);
		pthread_mutex_lock(&m->call_lock);
		fn(arg);
		pthread_mutex_unlock(&m->call_lock);
		pthread_mutex_lock(&m->lock);
		/* Wake only a thread draining the borrowers: the waiter
		 * asleep in mb_machine_wait has nothing to do with it. */
		if (!--m->borrowers && m->drainers)
			pthread_cond_broadcast(&m->cond);
		pthread_mutex_unlock(&m->lock);
		return;
	}
	struct call c = { .fn = fn, .arg = arg }, **tail = &m->calls;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &c;
	pthread_cond_broadcast(&m->cond);
	while (!c.done)
		pthread_cond_wait(&m->cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
}

/* With m->lock held, every vCPU parked: guest time stops (frozen) or goes
 * on from where it stood (thawed): the machine clock that devices' timers
 * use, and KVM's kvmclock (api.rst, KVM_GET_CLOCK / KVM_SET_CLOCK); the
 * in-kernel PIT, LAPIC timers and the TSC in holdtime.c. */
static void freeze(struct mb_machine *m, bool frozen)
{
	if (!m->threads || mb_evloop_frozen(m->ev) == frozen)
		return;
	if (m->adjust_clock && frozen) {
		memset(&m->kvmclock, 0, sizeof m->kvmclock);
		m->kvmclock_saved = ioctl(m->vm, KVM_GET_CLOCK, &m->kvmclock) == 0;
	} else if (m->adjust_clock && m->kvmclock_saved) {
		struct kvm_clock_data c = { .clock = m->kvmclock.clock };
		ioctl(m->vm, KVM_SET_CLOCK, &c); /* best effort: time jumps */
		m->kvmclock_saved = false;
	}
	if (frozen)
		mb_holdtime_freeze(m);
	else
		mb_holdtime_thaw(m);
	mb_evloop_freeze(m->ev, frozen);
	for (struct hook *h = m->freeze_hooks; h; h = h->next)
		h->fn(h->arg); /* device processes keep their clocks in step */
}

static unsigned started(struct mb_machine *m)
{
	unsigned n = 0;
	for (unsigned i = 0; i < m->ncpu; i++)
		n += m->cpu[i].started;
	return n;
}

/* With m->lock held: serve calls until every vCPU is parked. */
static void wait_parked(struct mb_machine *m)
{
	/* A vCPU asleep in HLT waits on m->cond for an interrupt or the gate:
	 * wake it to see the gate (a kick reaches only KVM_RUN), or nothing
	 * wakes it when no interrupt comes (all of them dropped, say). */
	pthread_cond_broadcast(&m->cond);
	/* A pause from another thread while someone waits in run() leaves
	 * that waiter in charge of calls. */
	bool had = m->has_waiter;
	if (!had) {
		m->has_waiter = true;
		m->waiter = pthread_self();
	}
	while (m->parked < started(m)) {
		if (!serve_one(m))
			pthread_cond_wait(&m->cond, &m->lock);
	}
	if (!had)
		stop_lending(m);
}

int mb_machine_start(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	if (atomic_load(&m->gate) == GATE_QUIT) {
		pthread_mutex_unlock(&m->lock);
		return mb_seterr(-ESHUTDOWN, "machine: destroyed");
	}
	/* Before the gate opens and any vCPU exists: the launcher, then the
	 * flag every moonbox thread filters itself on (seccomp.c). */
	if (m->seccomp && !atomic_load(&m->seccomp_go)) {
		pthread_mutex_unlock(&m->lock);
		int rc = mb_seccomp_start(m);
		if (rc)
			return rc;
		pthread_mutex_lock(&m->lock);
	}
	m->stop = MB_STOP_NONE;
	/* Every vCPU is parked or not yet born: no lookup is under way. */
	mb_bus_reclaim(m->pio);
	mb_bus_reclaim(m->mmio);
	if (m->hold_start) { /* a debugger wants it before any instruction */
		m->hold_start = false;
		m->stop = MB_STOP_DEBUGGER;
		snprintf(m->stop_msg, sizeof m->stop_msg, "held for the debugger");
	} else {
		freeze(m, false);
		atomic_store(&m->gate, GATE_RUNNING);
	}
	pthread_cond_broadcast(&m->cond);
	int rc = 0;
	if (!m->threads) {
		m->threads = true;
		for (unsigned i = 0; i < m->ncpu && !rc; i++) {
			struct vcpu *v = &m->cpu[i];
			if (pthread_create(&v->thread, NULL, mb_vcpu_thread, v))
				rc = mb_seterr(-EAGAIN, "vcpu %u: cannot start thread", i);
			else
				v->started = true;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static void deadline_of(double timeout, struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	double s = (double)ts->tv_sec + ts->tv_nsec / 1e9 + timeout;
	ts->tv_sec = (time_t)s;
	ts->tv_nsec = (long)((s - (double)ts->tv_sec) * 1e9);
}

/* With m->lock held and every vCPU parked: ask the holder about this stop;
 * true when it held the run and let it go on. */
static bool hold(struct mb_machine *m)
{
	struct mb_holder *h = m->holder;
	if (!h || m->stop == MB_STOP_NONE || atomic_load(&m->gate) == GATE_QUIT)
		return false;
	struct mb_result *r = malloc(sizeof *r);
	if (!r)
		return false;
	r->reason = m->stop;
	r->exit_code = m->stop_code;
	snprintf(r->message, sizeof r->message, "%s", m->stop_msg);
	m->held = true;
	m->hold_go = m->hold_end = false;
	pthread_mutex_unlock(&m->lock);
	bool held = h->stopped(h->opaque, r);
	free(r);
	pthread_mutex_lock(&m->lock);
	if (!held) {
		m->held = false;
		pthread_cond_broadcast(&m->cond);
		return false;
	}
	/* Held, the stop is the holder's business: steps while held see
	 * none (they stop early on any stop). */
	m->stop = MB_STOP_NONE;
	pthread_cond_broadcast(&m->cond);
	while (!m->hold_go && atomic_load(&m->gate) != GATE_QUIT)
		if (!serve_one(m))
			pthread_cond_wait(&m->cond, &m->lock);
	m->held = false;
	if (atomic_load(&m->gate) == GATE_QUIT)
		return false;
	if (m->hold_end) {
		m->stop = m->hold_r.reason;
		m->stop_code = m->hold_r.exit_code;
		snprintf(m->stop_msg, sizeof m->stop_msg, "%s", m->hold_r.message);
		return false;
	}
	m->stop = MB_STOP_NONE;
	freeze(m, false);
	atomic_store(&m->gate, GATE_RUNNING);
	pthread_cond_broadcast(&m->cond);
	return true;
}

void mb_hold_set(struct mb_machine *m, struct mb_holder *h)
{
	pthread_mutex_lock(&m->lock);
	m->holder = h;
	if (!h)
		m->hold_start = false;
	pthread_mutex_unlock(&m->lock);
}

bool mb_hold_request(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool running = atomic_load(&m->gate) == GATE_RUNNING;
	if (running && m->stop == MB_STOP_NONE) {
		m->stop = MB_STOP_DEBUGGER;
		m->stop_code = 0;
		snprintf(m->stop_msg, sizeof m->stop_msg, "interrupted by the debugger");
		atomic_store(&m->gate, GATE_PAUSED);
		pthread_cond_broadcast(&m->cond);
	} else if (!running) {
		m->hold_start = true;
	}
	pthread_mutex_unlock(&m->lock);
	if (running)
		kick_all(m);
	return running;
}

void mb_hold_cancel(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	m->hold_start = false;
	pthread_mutex_unlock(&m->lock);
}

void mb_hold_release(struct mb_machine *m, const struct mb_result *end)
{
	pthread_mutex_lock(&m->lock);
	if (m->held) {
		m->hold_go = true;
		m->hold_end = end != NULL;
		if (end)
			m->hold_r = *end;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
}

bool mb_hold_held(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool h = m->held;
	pthread_mutex_unlock(&m->lock);
	return h;
}

int mb_machine_wait(struct mb_machine *m, double timeout, struct mb_result *r)
{
	struct timespec dl = { 0 };
	time_t probe_at = 0;
	if (timeout > 0)
		deadline_of(timeout, &dl);
	pthread_mutex_lock(&m->lock);
	m->has_waiter = true;
	m->waiter = pthread_self();
again:
	while (m->stop == MB_STOP_NONE) {
		if (serve_one(m))
			continue;
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (timeout > 0 &&
		    (now.tv_sec > dl.tv_sec ||
		     (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec))) {
			m->stop = MB_STOP_TIMEOUT;
			m->stop_code = 124;
			snprintf(m->stop_msg, sizeof m->stop_msg,
				 "timeout after %g s", timeout);
			break;
		}
		if (m->irqchip == MB_IRQCHIP_KERNEL && now.tv_sec > probe_at) {
			probe_at = now.tv_sec;
			pthread_mutex_unlock(&m->lock);
			probe_all(m);
			pthread_mutex_lock(&m->lock);
			continue;
		}
		/* Sleep until a vCPU speaks, the deadline, or the next probe. */
		struct timespec until = dl;
		bool probing = m->irqchip == MB_IRQCHIP_KERNEL;
		if (probing && (timeout <= 0 || probe_at + 1 < dl.tv_sec))
			until = (struct timespec){ probe_at + 1, now.tv_nsec };
		if (timeout > 0 || probing)
			pthread_cond_timedwait(&m->cond, &m->lock, &until);
		else
			pthread_cond_wait(&m->cond, &m->lock);
	}
	if (atomic_load(&m->gate) == GATE_RUNNING)
		atomic_store(&m->gate, GATE_PAUSED);
	/* A vCPU asleep in HLT waits on cond, not in KVM_RUN: a kick does
	 * not reach it (a timeout with no interrupt coming hung here). */
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	kick_all(m);
	pthread_mutex_lock(&m->lock);
	wait_parked(m);
	freeze(m, true);
	if (hold(m)) {
		if (timeout > 0) /* the time held does not count */
			deadline_of(timeout, &dl);
		goto again;
	}
	stop_lending(m);
	if (r) {
		r->reason = m->stop;
		r->exit_code = m->stop_code;
		snprintf(r->message, sizeof r->message, "%s", m->stop_msg);
	}
	m->stop = MB_STOP_NONE;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int mb_machine_run(struct mb_machine *m, double timeout, struct mb_result *r)
{
	int rc = mb_machine_start(m);
	if (rc)
		return rc;
	return mb_machine_wait(m, timeout, r);
}

int mb_machine_pause(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	if (atomic_load(&m->gate) == GATE_RUNNING)
		atomic_store(&m->gate, GATE_PAUSED);
	pthread_cond_broadcast(&m->cond); /* vCPUs asleep in HLT */
	pthread_mutex_unlock(&m->lock);
	kick_all(m);
	pthread_mutex_lock(&m->lock);
	wait_parked(m);
	freeze(m, true);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int mb_machine_resume(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool was_started = m->threads;
	pthread_mutex_unlock(&m->lock);
	if (!was_started)
		return mb_seterr(-EINVAL, "machine: not started");
	pthread_mutex_lock(&m->lock);
	if (atomic_load(&m->gate) == GATE_PAUSED) {
		freeze(m, false);
		atomic_store(&m->gate, GATE_RUNNING);
	}
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

bool mb_machine_started(struct mb_machine *m)
{
	pthread_mutex_lock(&m->lock);
	bool t = m->threads;
	pthread_mutex_unlock(&m->lock);
	return t;
}

bool mb_machine_paused(struct mb_machine *m)
{
	return atomic_load(&m->gate) != GATE_RUNNING;
}
