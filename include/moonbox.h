/*
 * moonbox: an embeddable, Lua-scripted KVM virtual machine sandbox.
 * The one public C header. Everything a device model, a loader or an
 * embedder needs is here; the machine's internals stay in core/.
 *
 * Conventions: functions that can fail return 0 (or a count) on success and a
 * negative errno-style code on failure, leaving a message for mb_errmsg().
 */
#ifndef MOONBOX_H
#define MOONBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define MB_VERSION "0.1.0"

/* ---- errors ---------------------------------------------------------- */

/* Last error message of the calling thread ("" when none). */
const char *mb_errmsg(void);
/* Record a message (printf-style) and return code (a negative errno). */
int mb_seterr(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Text for a negative errno-style code. */
const char *mb_strerror(int code);

/* ---- sizes ----------------------------------------------------------- */

/* Parse "256M", "4G-256K", "0x1000", "1M+4K" (decimal unless 0x). Returns
 * 0, -EINVAL for a malformed string or -ERANGE when it overflows. */
int mb_parse_size(const char *s, uint64_t *out);

/* ---- I/O handlers: one shape for every device ------------------------ */

/* Offsets are relative to the registered base; size is 1, 2, 4 or 8;
 * data is little-endian, as the guest sees it. */
typedef void (*mb_read_fn)(void *dev, uint64_t off, void *data, unsigned size);
typedef void (*mb_write_fn)(void *dev, uint64_t off, const void *data,
			    unsigned size);

struct mb_io_ops {
	mb_read_fn read;   /* NULL: reads return all ones */
	mb_write_fn write; /* NULL: writes are dropped */
};

/* Little-endian helpers for handlers. */
static inline uint64_t mb_io_get(const void *data, unsigned size)
{
	const uint8_t *p = data;
	uint64_t v = 0;
	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static inline void mb_io_put(void *data, unsigned size, uint64_t v)
{
	uint8_t *p = data;
	for (unsigned i = 0; i < size; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- the dispatch bus ------------------------------------------------ */

/* A bus is an address space of ranges [base, base+len). Lookups are a
 * lock-free binary search over an immutable sorted table; registration
 * copies the table and publishes the new one (old ones are kept until the
 * bus is freed, so a reader never sees freed memory). */
struct mb_bus;

struct mb_bus_stats {
	uint64_t unclaimed_reads, unclaimed_writes;
	uint64_t ranges;
};

struct mb_bus *mb_bus_new(const char *name, uint64_t limit);
void mb_bus_free(struct mb_bus *bus);
int mb_bus_register(struct mb_bus *bus, uint64_t base, uint64_t len,
		    const struct mb_io_ops *ops, void *dev, const char *name);
int mb_bus_unregister(struct mb_bus *bus, uint64_t base);
/* Dispatch one access. Return true when a device claimed it. Unclaimed
 * reads fill data with 0xff bytes; unclaimed writes are dropped. Both are
 * counted and, with mb_bus_set_log(), logged to stderr. */
bool mb_bus_read(struct mb_bus *bus, uint64_t addr, void *data, unsigned size);
bool mb_bus_write(struct mb_bus *bus, uint64_t addr, const void *data,
		  unsigned size);
void mb_bus_stats(struct mb_bus *bus, struct mb_bus_stats *st);
/* Free the tables that registration replaced. Only when no thread can be
 * inside a lookup (the machine does it while every vCPU is parked). */
void mb_bus_reclaim(struct mb_bus *bus);
void mb_bus_set_log(struct mb_bus *bus, bool on);
/* Name of the device covering addr, or NULL. */
const char *mb_bus_owner(struct mb_bus *bus, uint64_t addr);
/* Every range in address order (a consistent view): fn's nonzero return
 * stops the walk and is returned. fn must not register or unregister. */
struct mb_bus_range {
	uint64_t base, len;
	const char *name; /* the owner's name as registered */
	void *dev;
};
int mb_bus_foreach(struct mb_bus *bus,
		   int (*fn)(void *opaque, const struct mb_bus_range *r),
		   void *opaque);
const char *mb_bus_name(const struct mb_bus *bus); /* "pio", "mmio" */

/* ---- guest memory ---------------------------------------------------- */

/* The guest-physical memory map. The only way to reach guest memory is
 * mb_mem_ptr(): it returns a host pointer only when the whole range lies
 * inside one RAM region (and, for writes, a writable one). */
struct mb_mem;

enum {
	MB_MEM_READONLY = 1 << 0, /* ROM: guest writes are dropped */
	MB_MEM_REVOKED = 1 << 1,  /* a revoked DMA grant: no access at all */
	MB_MEM_REMOTE = 1 << 2,   /* a shadow of memory reached by messages */
};

struct mb_mem_region {
	uint64_t base, size;
	uint8_t *host;
	unsigned flags;
	char name[32];
};

struct mb_mem *mb_mem_new(void);
void mb_mem_free(struct mb_mem *mem); /* unmaps what it mapped */
/* Add a region backed by fresh anonymous memory (host == NULL) or by the
 * given mapping (not freed by the map). Overlaps and zero sizes fail. */
int mb_mem_add(struct mb_mem *mem, uint64_t base, uint64_t size,
	       unsigned flags, void *host, const char *name);
void *mb_mem_ptr(struct mb_mem *mem, uint64_t gpa, uint64_t len, bool write);
int mb_mem_read(struct mb_mem *mem, uint64_t gpa, void *buf, size_t len);
int mb_mem_write(struct mb_mem *mem, uint64_t gpa, const void *buf, size_t len);
/* Write ignoring MB_MEM_READONLY: loaders filling a ROM. */
int mb_mem_load(struct mb_mem *mem, uint64_t gpa, const void *buf, size_t len);
size_t mb_mem_count(const struct mb_mem *mem);
const struct mb_mem_region *mb_mem_region(const struct mb_mem *mem, size_t i);
/* RAM that moonbox allocated is a memfd sealed against shrinking and
 * growing, mapped shared at offset 0: its fd (owned by the map: dup it
 * to keep it), or -ENOENT for a region the caller mapped. */
int mb_mem_region_fd(const struct mb_mem *mem, size_t i);
/* Before mapping a memory fd someone else handed over: 0 when fd is a
 * regular memfd of exactly size bytes sealed against shrink and grow
 * (so a mapping of it cannot fault with SIGBUS), else -errno naming it. */
int mb_memfd_check(int fd, uint64_t size);
/* Revoke region i (a device process's DMA grant): from now on no access
 * through the map reaches it, and mb_mem_gen() changes, so that holders
 * of pointers into it look again. The caller unmaps the memory. */
int mb_mem_revoke(struct mb_mem *mem, size_t i);
/* A revoked region's memory mapped again at the same host address (a
 * re-granted window): accessible again, mb_mem_gen() changes. */
int mb_mem_unrevoke(struct mb_mem *mem, size_t i);
/* Add a region while other threads use the map (a window granted to a
 * device process at run time): appended, published whole with one
 * release store, so a reader sees it entirely or not at all. One writer
 * at a time; mb_mem_add itself is for setting up (it reorders). Writes
 * to it are marked in sink (below) when sink is not NULL. */
int mb_mem_add_live(struct mb_mem *mem, uint64_t base, uint64_t size, unsigned flags,
		    void *host, const char *name, uint64_t *sink, uint64_t sink0);
/* In a device process: mark writes to region i in bits (one bit per 4K
 * page; the region's first page is bit bit0), a bitmap the VMM shares
 * and takes at snapshots and restores, instead of the map's own. The
 * caller checked that bit0 + the region's pages fit in bits. */
void mb_mem_dirty_sink(struct mb_mem *mem, size_t i, uint64_t *bits, uint64_t bit0);
unsigned mb_mem_gen(struct mb_mem *mem);
/* Memory a device process reaches by messages (dma = "message"): an
 * MB_MEM_REMOTE region is a local shadow; mb_mem_ptr fetches the range
 * into it before handing out the pointer, mb_mem_read/write go through
 * fetch/store, and whoever wrote through a pointer says so with
 * mb_mem_written (a local region: marked dirty; a remote one: stored). */
struct mb_mem_remote_ops {
	int (*fetch)(void *ctx, uint64_t gpa, void *dst, size_t len);
	int (*store)(void *ctx, uint64_t gpa, const void *src, size_t len);
};
void mb_mem_set_remote(struct mb_mem *mem, const struct mb_mem_remote_ops *ops, void *ctx);
bool mb_mem_is_remote(const struct mb_mem *mem);
void mb_mem_written(struct mb_mem *mem, uint64_t gpa, uint64_t len);
/* Bytes of RAM the guest has touched (resident pages). */
uint64_t mb_mem_resident(const struct mb_mem *mem);

/* ---- interrupt lines ------------------------------------------------- */

/* A device raises, lowers or pulses its line and knows nothing else. */
struct mb_irq {
	void (*set)(void *ctx, unsigned line, int level);
	void *ctx;
	unsigned line;
};

static inline void mb_irq_set(const struct mb_irq *irq, int level)
{
	if (irq && irq->set)
		irq->set(irq->ctx, irq->line, level);
}
static inline void mb_irq_raise(const struct mb_irq *irq) { mb_irq_set(irq, 1); }
static inline void mb_irq_lower(const struct mb_irq *irq) { mb_irq_set(irq, 0); }
static inline void mb_irq_pulse(const struct mb_irq *irq)
{
	mb_irq_set(irq, 1);
	mb_irq_set(irq, 0);
}

/* ---- clocks and timers ----------------------------------------------- */

/* Devices read time and arm timers only through a clock, so unit tests can
 * drive time by hand. A timer calls cb(opaque) once at or after its
 * deadline, from the clock's thread (the event loop for the real clock). */
struct mb_timer;

struct mb_clock {
	uint64_t (*now)(const struct mb_clock *c); /* nanoseconds */
	struct mb_timer *(*timer_new)(const struct mb_clock *c,
				      void (*cb)(void *opaque), void *opaque);
	/* deadline in now() nanoseconds; 0 disarms */
	void (*timer_mod)(struct mb_timer *t, uint64_t deadline);
	void (*timer_free)(struct mb_timer *t);
	void *ctx;
};

/* ---- character backends (consoles) ----------------------------------- */

/* A byte stream between a device and the outside world. The device writes
 * with mb_chr_write(); input is pushed to the receiver the device set, which
 * returns how many bytes it took. When it took fewer, the device calls
 * mb_chr_accept() once it has room again. */
struct mb_chr;
/* After a stop for Ctrl-a c (MB_STOP_CONSOLE), before running on: put the
 * stdio console's terminal back in raw mode. */
void mb_console_reenter(void);

struct mb_chr_ops {
	void (*write)(struct mb_chr *c, const void *buf, size_t len);
	void (*accept)(struct mb_chr *c); /* receiver has room again */
	void (*close)(struct mb_chr *c);
};

struct mb_chr {
	const struct mb_chr_ops *ops;
	size_t (*rx)(void *dev, const uint8_t *buf, size_t len);
	void *rx_dev;
};

static inline void mb_chr_write(struct mb_chr *c, const void *buf, size_t len)
{
	if (c && c->ops->write)
		c->ops->write(c, buf, len);
}
static inline void mb_chr_accept(struct mb_chr *c)
{
	if (c && c->ops->accept)
		c->ops->accept(c);
}

/* Console backends, each freed with its machine: null (drop), buffer
 * (kept in memory), file, stdio (raw terminal, restored on exit; Ctrl-a x
 * quits), socket (a Unix socket moonbox listens on), func (a callback).
 * Input is delivered to the device from the event loop thread only. */
struct mb_machine;
struct mb_chr *mb_chr_null(struct mb_machine *m);
struct mb_chr *mb_chr_buffer(struct mb_machine *m);
struct mb_chr *mb_chr_file(struct mb_machine *m, const char *path);
struct mb_chr *mb_chr_stdio(struct mb_machine *m);
struct mb_chr *mb_chr_socket(struct mb_machine *m, const char *path);
struct mb_chr *mb_chr_func(struct mb_machine *m,
			   void (*fn)(void *ctx, const void *buf, size_t len),
			   void *ctx);
/* A console on an open stream fd (taken over, closed with the machine):
 * output written to it, input read from it (a device process's relay). */
struct mb_chr *mb_chr_fd(struct mb_machine *m, int fd);
/* moonbox-device: output of mb_chr_fd consoles is offered to sink first
 * (true: taken), so that it travels with the access that wrote it. */
void mb_chr_fd_sink(bool (*sink)(const void *buf, size_t len));
/* Bytes a buffer console captured: copies up to max, returns the total. */
size_t mb_chr_buffer_get(struct mb_chr *c, void *dst, size_t max);
/* Queue bytes for the device's receive side. */
int mb_chr_input(struct mb_chr *c, const void *buf, size_t len);

struct mb_range {
	uint64_t base, size;
};

/* ---- the machine ----------------------------------------------------- */

struct mb_machine;

enum mb_irqchip { MB_IRQCHIP_USER, MB_IRQCHIP_KERNEL };

enum mb_stop {
	MB_STOP_NONE,
	MB_STOP_EXIT,     /* debug_exit */
	MB_STOP_SHUTDOWN, /* triple fault or power off */
	MB_STOP_RESET,
	MB_STOP_HALT,     /* every vCPU halted with interrupts off */
	MB_STOP_TIMEOUT,
	MB_STOP_ERROR,
	MB_STOP_BREAKPOINT, /* moonbox/debug.h */
	MB_STOP_WATCHPOINT,
	MB_STOP_DIVERGENCE, /* a fault replay met an event its trace lacks */
	MB_STOP_DEBUGGER, /* held for a debugger (gdb); never ends a run */
	MB_STOP_CATCH,    /* a caught triple fault (mb_debug_catch_triple) */
	MB_STOP_CONSOLE,  /* Ctrl-a c on a stdio console: to the REPL */
	MB_STOP_IO,       /* a bus tap asked to stop (m:wait_for { io }) */
};

const char *mb_stop_name(enum mb_stop s);

#define MB_MAX_CPUS 64
#define MB_CPUID_MAX 64

/* CPUID policy: start from what KVM supports, then hide and set named
 * feature bits (see mb_cpuid_feature()). */
struct mb_cpuid_policy {
	unsigned nhide, nset;
	const char *hide[MB_CPUID_MAX];
	const char *set[MB_CPUID_MAX];
	const char *vendor; /* NULL: KVM's; else 12 bytes ("AuthenticAMD") */
	unsigned family;    /* 0: KVM's; else leaf 1's (extended) family */
};

struct mb_machine_config {
	unsigned cpus;
	enum mb_irqchip irqchip;
	bool kernel_pit; /* KVM_CREATE_PIT2 (needs the kernel irqchip) */
	struct mb_cpuid_policy cpuid;
	/* No KVM at all (moonbox-device hosts one device model on it): buses,
	 * memory (mb_mem_add only), the event loop and clock, and interrupt
	 * lines that go to the controller set by mb_machine_set_intc (irqchip
	 * says how many: 16 or 24). No vCPUs; mb_machine_stop calls on_stop
	 * instead of stopping anything. */
	bool headless;
	void (*on_stop)(void *ctx, enum mb_stop reason, int code,
			const char *msg);
	void *on_stop_ctx;
	bool acpi;       /* ACPI tables (and the MP table) for Linux boots */
};

struct mb_result {
	enum mb_stop reason;
	int exit_code;
	char message[4096];
};

int mb_machine_create(const struct mb_machine_config *cfg,
		      struct mb_machine **out);
void mb_machine_destroy(struct mb_machine *m);

/* Memory: RAM (file may be NULL) or ROM from a file. Before the first run. */
int mb_machine_add_memory(struct mb_machine *m, uint64_t base, uint64_t size,
			  const char *file, bool readonly, const char *name);
struct mb_mem *mb_machine_mem(struct mb_machine *m);
struct mb_bus *mb_machine_pio(struct mb_machine *m);
struct mb_bus *mb_machine_mmio(struct mb_machine *m);
const struct mb_clock *mb_machine_clock(struct mb_machine *m);
enum mb_irqchip mb_machine_irqchip(struct mb_machine *m);
unsigned mb_machine_cpus(struct mb_machine *m);
bool mb_machine_kernel_pit(struct mb_machine *m);
int mb_machine_vm_fd(struct mb_machine *m);

/* An interrupt line of the machine's controller (user PIC or KVM's). */
int mb_machine_irq(struct mb_machine *m, unsigned line, struct mb_irq *out);
/* What the machine knows of its interrupt lines (0 .. mb_machine_irq_lines
 * - 1: 16 with the user PIC, 24 with KVM's IOAPIC): devices that claimed
 * the line, its level as last driven, and the 0 -> 1 edges driven on it. */
struct mb_irq_info {
	unsigned users;
	int level;
	uint64_t raised;
};
unsigned mb_machine_irq_lines(struct mb_machine *m);
int mb_machine_irq_info(struct mb_machine *m, unsigned line,
			struct mb_irq_info *out);

/* The interrupt controller a userspace irqchip plugs in: vCPUs ask it for
 * a pending vector before entering the guest. */
struct mb_intc_ops {
	bool (*pending)(void *intc);
	int (*ack)(void *intc); /* the INTA cycle: vector (maybe spurious), <0: none */
	void (*set_line)(void *intc, unsigned line, int level);
	/* Optional: call fn(opaque) when the guest acknowledges line. */
	void (*on_ack)(void *intc, unsigned line, void (*fn)(void *), void *opaque);
};
void mb_machine_set_intc(struct mb_machine *m, const struct mb_intc_ops *ops,
			 void *intc);
/* Ask to be told when the guest acknowledges an interrupt on line (a
 * timer re-injecting ticks it could not deliver). -ENOTSUP when the
 * controller cannot tell (KVM's irqchip). */
int mb_machine_irq_on_ack(struct mb_machine *m, unsigned line,
			  void (*fn)(void *), void *opaque);
/* Tell vCPUs that the controller's output changed (from any thread). */
void mb_machine_kick_irq(struct mb_machine *m);

/* Resources for devices placed automatically (core/resource.c). */
#define MB_MAX_RESERVED 32
struct mb_platform_dev {
	uint64_t base, size;
	unsigned irq;
};
/* A free MMIO window (size: a power of two >= 4K) from 0xd0000000 up. */
int mb_machine_alloc_mmio(struct mb_machine *m, uint64_t size, uint64_t *base);
/* Mark a line taken (devices with fixed lines; one more user of a shared
 * line), or take a free one. Each claim or allocation is undone by one
 * release: the line is free again when its last user let go. */
int mb_machine_claim_irq(struct mb_machine *m, unsigned line);
int mb_machine_alloc_irq(struct mb_machine *m, unsigned *line);
void mb_machine_release_irq(struct mb_machine *m, unsigned line);
/* A range the guest's memory map must show as reserved (device windows). */
int mb_machine_reserve(struct mb_machine *m, uint64_t base, uint64_t size);
size_t mb_machine_reserved(struct mb_machine *m, const struct mb_range **out);
/* A virtio-mmio device the guest must be told about (reserves its window). */
int mb_machine_add_virtio_mmio(struct mb_machine *m, uint64_t base,
			       uint64_t size, unsigned irq);
/* Discovery by command line: " virtio_mmio.device=SIZE@BASE:IRQ" each. */
size_t mb_machine_discovery_cmdline(struct mb_machine *m, char *buf, size_t len);

/* Stop the machine (first stop wins); callable from any thread. */
void mb_machine_stop(struct mb_machine *m, enum mb_stop reason, int code,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Start (or resume) every vCPU and wait until the machine stops or timeout
 * seconds pass (timeout <= 0: no limit). vCPUs are paused on return, so run
 * can be called again to continue. */
int mb_machine_run(struct mb_machine *m, double timeout, struct mb_result *r);

/* Non-blocking start, and wait: the pieces of mb_machine_run(). */
int mb_machine_start(struct mb_machine *m);
int mb_machine_wait(struct mb_machine *m, double timeout, struct mb_result *r);

/* Pause and resume every vCPU from any thread other than a vCPU's.
 * While paused, registers can be read and written. */
int mb_machine_pause(struct mb_machine *m);
int mb_machine_resume(struct mb_machine *m);
bool mb_machine_paused(struct mb_machine *m);
/* Its vCPU threads exist (the first run started them). */
bool mb_machine_started(struct mb_machine *m);

/* Run fn(arg) in the world of the thread that waits in
 * mb_machine_run/wait/pause, one caller at a time: how vCPU threads reach
 * single-threaded code such as a Lua state. While that thread sleeps in the
 * wait, fn runs on the caller's thread (the sleeper cannot wake until every
 * vCPU is parked); otherwise the call queues until someone waits. */
void mb_machine_call_main(struct mb_machine *m, void (*fn)(void *), void *arg);

/* Call cb(opaque, fd) on the event-loop thread whenever fd is readable. */
int mb_machine_watch(struct mb_machine *m, int fd,
		     void (*cb)(void *opaque, int fd), void *opaque);
void mb_machine_unwatch(struct mb_machine *m, int fd);

/* Objects freed with the machine (backends, helpers), in reverse order of
 * registration, after the vCPUs and the event loop have stopped. -ENOMEM
 * when the hook cannot be recorded: then nothing happens to arg, the
 * caller still owns it. Devices use mb_device_new() instead. */
int mb_machine_on_destroy(struct mb_machine *m, void (*fn)(void *), void *arg);

/* ---- vCPU registers (machine paused or not yet started) --------------- */

struct mb_regs {
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rip, rflags;
};

struct mb_seg {
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl;
};

struct mb_sregs {
	struct mb_seg cs, ds, es, fs, gs, ss, tr, ldt;
	uint64_t gdt_base, idt_base;
	uint16_t gdt_limit, idt_limit;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
};

int mb_vcpu_get_regs(struct mb_machine *m, unsigned cpu, struct mb_regs *r);
int mb_vcpu_set_regs(struct mb_machine *m, unsigned cpu,
		     const struct mb_regs *r);
int mb_vcpu_get_sregs(struct mb_machine *m, unsigned cpu, struct mb_sregs *s);
int mb_vcpu_set_sregs(struct mb_machine *m, unsigned cpu,
		      const struct mb_sregs *s);
/* A human-readable register dump into buf. */
void mb_vcpu_dump(struct mb_machine *m, unsigned cpu, char *buf, size_t len);

struct mb_vcpu_stats {
	uint64_t exits, io, mmio, hlt, irq_injected, intr;
};
int mb_vcpu_stats(struct mb_machine *m, unsigned cpu, struct mb_vcpu_stats *st);

/* ---- loaders --------------------------------------------------------- */

enum mb_cpu_mode { MB_MODE_REAL, MB_MODE_PROTECTED, MB_MODE_LONG };

/* Load a file's bytes at guest-physical `at` and set vCPU 0 to start at
 * entry in the given mode. Protected and long mode use a GDT at 0x500 and
 * (long) identity page tables for the low 4 GiB at 0x1000-0x6fff. */
int mb_boot_flat(struct mb_machine *m, const char *file, uint64_t at,
		 uint64_t entry, enum mb_cpu_mode mode);
/* Set vCPU 0's mode and entry (used by every loader). */
int mb_boot_setup_cpu(struct mb_machine *m, enum mb_cpu_mode mode,
		      uint64_t entry);
/* Tell the machine the guest is a 64-bit kernel although it starts in a
 * narrower mode (PVH's 32-bit entry): debuggers then describe it as x86-64.
 * mb_boot_setup_cpu resets it (64 for long mode, else 0: by mode). */
void mb_boot_set_bits(struct mb_machine *m, int bits);

/* -- kernel loaders (core/boot_linux.c, core/boot_multiboot.c, core/elf.c).
 * Every file is checked before anything is written to the guest: a missing,
 * truncated or hostile image is refused with a message naming the file. */

/* A guest-physical range. */

/* Linux x86 boot protocol 2.12+ (64-bit entry), Documentation/arch/x86/
 * boot.rst. Zero page at 0x7000, command line at 0x20000, initrd as high as
 * possible below initrd_addr_max; the e820 map comes from the memory map
 * plus `reserved` (device windows), reported as type 2. */
struct mb_linux_config {
	const char *kernel;  /* bzImage (required) */
	const char *initrd;  /* NULL: none */
	const char *cmdline; /* NULL: "" */
	const struct mb_range *reserved;
	size_t nreserved;
	/* The RSDP for the kernel (boot_params.acpi_rsdp_addr, PVH
	 * rsdp_paddr); 0: none. mb_boot_* set it when the machine has acpi. */
	uint64_t acpi_rsdp;
};
int mb_boot_linux(struct mb_machine *m, const struct mb_linux_config *cfg);
/* PVH boot of an uncompressed ELF vmlinux with a XEN_ELFNOTE_PHYS32_ENTRY
 * note (Linux: CONFIG_PVH): the same config, 32-bit entry with EBX at an
 * hvm_start_info (memory map, command line, the initrd as module 0).
 * mb_boot_linux calls it when handed an ELF file. */
int mb_boot_pvh(struct mb_machine *m, const struct mb_linux_config *cfg);
/* The ACPI tables the Linux loaders write for a machine with acpi on, as
 * they would be now (devices added so far): fn gets each (RSDP, XSDT,
 * RSDT, FACP, FACS, DSDT, APIC) in turn. -ENOTSUP when acpi is off. */
int mb_acpi_tables(struct mb_machine *m,
		   void (*fn)(void *opaque, const char *sig, const void *data,
			      size_t len),
		   void *opaque);

/* A bzImage's setup header, as parsed and checked by the Linux loader. */
struct mb_bzimage_info {
	uint16_t version;         /* e.g. 0x20f */
	uint8_t loadflags;
	uint16_t xloadflags;
	bool relocatable;
	unsigned setup_sects;     /* 0 in the header means 4 */
	uint64_t pref_address;
	uint32_t init_size, kernel_alignment, cmdline_size, initrd_addr_max;
	uint64_t kernel_offset;   /* protected-mode kernel in the file */
	uint64_t kernel_size;
	size_t header_end;        /* 0x202 + byte at 0x201 */
	char kernel_version[128]; /* "" if the image has none */
};
int mb_bzimage_info(const char *file, struct mb_bzimage_info *out);

/* Multiboot 1 (Multiboot Specification 0.6.96): ELF32/ELF64 kernels or the
 * a.out kludge (header flag 16), modules page-aligned after the kernel,
 * entry in 32-bit protected mode with EAX = 0x2badb002, EBX = info. */
struct mb_multiboot_module {
	const char *file;
	const char *cmdline; /* NULL: "" */
};
struct mb_multiboot_config {
	const char *kernel;
	const char *cmdline; /* NULL: "" */
	const struct mb_multiboot_module *modules;
	size_t nmodules;
};
int mb_boot_multiboot(struct mb_machine *m,
		      const struct mb_multiboot_config *cfg);

/* Load an ELF32 (EM_386) or ELF64 (EM_X86_64) executable's PT_LOAD segments
 * at their physical addresses; *entry gets the physical entry point. The
 * vCPU is left alone: follow with mb_boot_setup_cpu(). Segments may not
 * touch 0x500-0x6fff (GDT and page tables). */
int mb_load_elf(struct mb_machine *m, const char *file, uint64_t *entry);
/* -- end of kernel loaders */

/* Load an ELF executable (mb_load_elf) and start vCPU 0 at its entry in
 * `mode`, or in the mode its class implies (ELF64: long) when mode < 0. */
int mb_boot_elf(struct mb_machine *m, const char *file, int mode);

/* How many instructions of each kind the emulation fallback completed on
 * m: fills names[i] ("clac", "popcnt", ...) and counts[i] for the first
 * max kinds (either array may be NULL) and returns how many kinds there
 * are. Any thread. */
unsigned mb_fallback_counts(struct mb_machine *m, const char **names,
			    uint64_t *counts, unsigned max);

/* ---- ioeventfd and irqfd (core/ioevent.c; owner: virtio) ------------ */

/* Have KVM signal eventfd efd, without an exit to userspace, when the
 * guest writes len bytes equal to match at MMIO address addr (datamatch);
 * assign = false removes it. -ENOTSUP when this KVM lacks KVM_IOEVENTFD. */
int mb_machine_ioeventfd(struct mb_machine *m, int efd, uint64_t addr,
			 unsigned len, uint64_t match, bool assign);
/* Kernel irqchip only: every write to efd pulses interrupt line `line`
 * (edge semantics; no resample). -ENOTSUP without KVM_IRQFD or with the
 * userspace irqchip. */
int mb_machine_irqfd(struct mb_machine *m, int efd, unsigned line,
		     bool assign);
/* -- end of ioeventfd and irqfd */

/* ---- host information ------------------------------------------------ */

/* Print what a user needs to know about their KVM host; returns 0 when
 * moonbox can run here, else a negative code (message in mb_errmsg()). */
int mb_kvm_info(FILE *out);
/* Open /dev/kvm and check the API version and required capabilities.
 * Returns the fd or a negative code with a one-line "what to do" message. */
int mb_kvm_open(void);

/* CPUID feature names: find (leaf, subleaf, register 0-3 = eax..edx, bit). */
/* The policy's leaf as given to the vCPUs (out: eax, ebx, ecx, edx). */
int mb_cpuid_get(struct mb_machine *m, uint32_t leaf, uint32_t subleaf,
		 uint32_t out[4]);
int mb_cpuid_feature(const char *name, uint32_t *leaf, uint32_t *subleaf,
		     unsigned *reg, unsigned *bit);

/* ---- snapshots (core/snapshot*.c; file format: docs/snapshot.md) ------ */

/* A paused machine's whole state: RAM, every vCPU, KVM's irqchip, PIT and
 * clock, every device through its state description (quiesced first). */
struct mb_snapshot;

struct mb_restore_stats {
	bool dirty_only;       /* only pages written since were copied back */
	uint64_t pages_copied; /* 4K pages */
};

/* Take one (machine paused: -EBUSY otherwise). The first snapshot turns on
 * KVM's dirty logging, so that restores copy back what was written since. */
int mb_snapshot_take(struct mb_machine *m, struct mb_snapshot **out);
/* Put m back to s (paused). s must be of m, or read from a file; the layout
 * (cpus, irqchip, PIT, memory regions, devices by name, kind and state
 * version) must match, else nothing is changed and the message says what
 * differs. st may be NULL. */
int mb_snapshot_restore(struct mb_machine *m, const struct mb_snapshot *s,
			struct mb_restore_stats *st);
void mb_snapshot_free(struct mb_snapshot *s);
/* The embedder's description of the machine (how to rebuild it), saved
 * with the snapshot and handed back by mb_snapshot_read. */
int mb_snapshot_set_conf(struct mb_snapshot *s, const void *conf, size_t len);
const void *mb_snapshot_conf(const struct mb_snapshot *s, size_t *len);
uint64_t mb_snapshot_ram_pages(const struct mb_snapshot *s);
/* Device name's saved state (its state description's struct), or NULL. */
const void *mb_snapshot_device_state(const struct mb_snapshot *s,
				     const char *name, size_t *size);
/* Files: written whole to a temporary and renamed; read and checked whole
 * (magic, version, checksum, every record's bounds) before returning. */
int mb_snapshot_write(const struct mb_snapshot *s, const char *path);
int mb_snapshot_read(const char *path, struct mb_snapshot **out);
/* The same from size bytes at buf (name: for messages). */
int mb_snapshot_parse(const void *buf, size_t size, const char *name,
		      struct mb_snapshot **out);
/* CRC-32C (Castagnoli) of buf, continuing from crc (0 to start). */
uint32_t mb_crc32c(uint32_t crc, const void *buf, size_t len);
/* -- end of snapshots */

#include "moonbox/device.h"
#include "moonbox/uart16550.h"
#include "moonbox/pic8259.h"
#include "moonbox/pit8254.h"
#include "moonbox/rtc.h"
#include "moonbox/i8042.h"
#include "moonbox/port80.h"
#include "moonbox/debug_exit.h"
#include "moonbox/virtio_queue.h"
#include "moonbox/virtio_mmio.h"
#include "moonbox/virtio_netbackend.h"
#include "moonbox/virtio_blk.h"
#include "moonbox/virtio_rng.h"
#include "moonbox/virtio_console.h"
#include "moonbox/virtio_net.h"
#include "moonbox/debug.h"
#include "moonbox/fault.h"
#include "moonbox/sandbox.h"
#include "moonbox/tap.h"
#include "moonbox/devproc.h"
#include "moonbox/vhost_user.h"
#include "moonbox/acpi_pm.h"

#endif
