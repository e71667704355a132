/*
 * Snapshots inside core/: the pieces of a machine's state as tagged blobs
 * (one per KVM ioctl structure), shared by vcpu_state.c (capture and
 * restore through KVM), snapshot.c (the in-memory snapshot, RAM and dirty
 * tracking) and snapshot_file.c (the file format, docs/snapshot.md).
 */
#ifndef MB_SNAPSHOT_INTERNAL_H
#define MB_SNAPSHOT_INTERNAL_H

#include "core/internal.h"

/* A piece of state: KVM's own structure, byte for byte (x86-64 only). */
struct blob {
	uint32_t len; /* 0: absent */
	void *data;
};

/* Per vCPU, in the order they are put back (as QEMU does: registers,
 * FPU, sregs, MSRs, then the interrupt-related state). */
enum {
	CPU_REGS, CPU_XSAVE, CPU_FPU, CPU_XCRS, CPU_SREGS, CPU_SREGS2, CPU_MSRS,
	CPU_MPSTATE, CPU_LAPIC, CPU_EVENTS, CPU_DEBUGREGS, CPU_BOOK, CPU_NPARTS
};
/* Per VM: KVM's PIC pair, IOAPIC, PIT and clock. */
enum { VM_PIC0, VM_PIC1, VM_IOAPIC, VM_PIT2, VM_CLOCK, VM_NPARTS };

/* moonbox's own bookkeeping of a vCPU (struct vcpu). */
struct cpu_book {
	uint8_t in_hlt, hlt_if, dead, pad;
	uint32_t dead_probes;
};

struct snap_cpu {
	struct blob part[CPU_NPARTS];
};

struct snap_region {
	uint64_t base, size;
	uint32_t flags;
	char name[32];
	uint8_t *copy; /* anonymous mapping of size bytes */
};

struct snap_dev {
	char name[MB_DEVICE_NAME_MAX], kind[32], desc[32];
	uint32_t version;
	uint64_t size; /* 0: no state */
	void *data;
	void *kept;               /* mb_device_keep, by reference */
	void (*drop)(void *kept);
	/* the device's ops for kept in files (NULL: it cannot go there) */
	uint64_t (*kept_size)(const void *kept);
	int (*kept_write)(const void *kept,
			  int (*put)(void *ctx, const void *p, size_t n), void *ctx);
	void *file_kept;          /* a KEPT record read from a file */
	uint64_t file_kept_len;
};

struct mb_snapshot {
	uint64_t machine_id; /* 0: read from a file (any machine of the layout) */
	uint64_t id;
	unsigned ncpu, irqchip, kernel_pit;
	size_t nreg;
	struct snap_region reg[MB_MAX_SLOTS];
	struct snap_cpu cpu[MB_MAX_CPUS];
	struct blob vm[VM_NPARTS];
	size_t ndev;
	struct snap_dev *dev;
	struct blob conf; /* the embedder's description (Lua options) */
};

/* snapshot.c: region i's copy, mapped on first use (NULL: no memory) */
uint8_t *mb_snapshot_region_alloc(struct mb_snapshot *s, size_t i);
uint64_t mb_snapshot_new_id(void);

/* vcpu_state.c; parts are malloc'd, freed with blob_free. */
int mb_vcpu_state_save(struct vcpu *v, struct snap_cpu *s);
int mb_vcpu_state_load(struct vcpu *v, const struct snap_cpu *s);
int mb_vm_state_save(struct mb_machine *m, struct blob *vm);
int mb_vm_state_load(struct mb_machine *m, const struct blob *vm);
void mb_blob_free(struct blob *b);
int mb_blob_set(struct blob *b, const void *data, size_t len);

#endif
