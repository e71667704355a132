/*
 * Starting vCPU 0 in real, 32-bit protected or 64-bit long mode, and the
 * flat loader: a file's bytes at an address, entry at another.
 *
 * Protected and long mode need a GDT in guest memory (a guest that reloads
 * CS, e.g. with lret, reads it); long mode also needs page tables. Both go
 * at fixed low addresses, documented for guests:
 *   0x500   GDT: 0x08 32-bit code, 0x10 data, 0x18 64-bit code (flat 4 GiB)
 *   0x1000  PML4, 0x2000 PDPT, 0x3000-0x6fff four PDs of 2 MiB pages
 *           identity-mapping the low 4 GiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

#define GDT_ADDR 0x500
#define PML4_ADDR 0x1000

static const uint64_t gdt[] = {
	0,
	0x00cf9a000000ffffull, /* 0x08: code, 32-bit, 4 GiB */
	0x00cf92000000ffffull, /* 0x10: data, 4 GiB */
	0x00af9a000000ffffull, /* 0x18: code, 64-bit */
};

static struct mb_seg flat(uint16_t sel, bool code, bool longmode)
{
	return (struct mb_seg){ .base = 0, .limit = 0xffffffff, .selector = sel,
				.type = code ? 0xb : 0x3, .present = 1, .s = 1,
				.db = !longmode || !code, .l = longmode && code,
				.g = 1 };
}

static int put_tables(struct mb_machine *m, bool paging)
{
	if (mb_mem_write(m->mem, GDT_ADDR, gdt, sizeof gdt))
		return mb_seterr(-EFAULT, "boot: protected and long mode need RAM "
				 "at 0x500-0x%x for the GDT%s", paging ? 0x6fff : 0x51f,
				 paging ? " and page tables" : "");
	if (!paging)
		return 0;
	uint64_t *t = mb_mem_ptr(m->mem, PML4_ADDR, 6 * 4096, true);
	if (!t)
		return mb_seterr(-EFAULT, "boot: long mode needs RAM at 0x1000-0x6fff "
				 "for its page tables");
	memset(t, 0, 6 * 4096);
	t[0] = (PML4_ADDR + 0x1000) | 3; /* PML4[0] -> PDPT */
	for (uint64_t i = 0; i < 4; i++) {
		t[512 + i] = (PML4_ADDR + 0x2000 + i * 0x1000) | 3;
		for (uint64_t j = 0; j < 512; j++) /* present, writable, 2 MiB */
			t[1024 + i * 512 + j] = ((i << 30) | (j << 21)) | 0x83;
	}
	return 0;
}

void mb_boot_set_bits(struct mb_machine *m, int bits)
{
	m->guest_bits = bits;
}

int mb_boot_setup_cpu(struct mb_machine *m, enum mb_cpu_mode mode, uint64_t entry)
{
	m->guest_bits = mode == MB_MODE_LONG ? 64 : 0;
	struct mb_regs r = { .rflags = 2 };
	struct mb_sregs s;
	int rc = mb_vcpu_get_sregs(m, 0, &s);
	if (rc)
		return rc;
	if (mode == MB_MODE_REAL) {
		if (entry >= 0x100000)
			return mb_seterr(-EINVAL, "entry: 0x%" PRIx64 " is above 1 MiB, "
					 "out of reach of real mode", entry);
		uint16_t sel = (uint16_t)(entry >> 4);
		s.cs.selector = sel;
		s.cs.base = (uint64_t)sel << 4;
		r.rip = entry & 0xf;
	} else {
		bool lm = mode == MB_MODE_LONG;
		if (entry > 0xffffffffull)
			return mb_seterr(-EINVAL, "entry: 0x%" PRIx64 " is above 4 GiB",
					 entry);
		if ((rc = put_tables(m, lm)))
			return rc;
		s.cs = flat(lm ? 0x18 : 0x08, true, lm);
		s.ds = s.es = s.fs = s.gs = s.ss = flat(0x10, false, lm);
		s.gdt_base = GDT_ADDR;
		s.gdt_limit = sizeof gdt - 1;
		s.cr0 = 0x11; /* PE, ET */
		if (lm) {
			s.cr3 = PML4_ADDR;
			s.cr4 = 0x20;           /* PAE */
			s.efer = 0x500;         /* LME, LMA */
			s.cr0 |= 0x80000000u;   /* PG */
		}
		r.rip = entry;
	}
	if ((rc = mb_vcpu_set_sregs(m, 0, &s)))
		return rc;
	return mb_vcpu_set_regs(m, 0, &r);
}

int mb_boot_flat(struct mb_machine *m, const char *file, uint64_t at,
		 uint64_t entry, enum mb_cpu_mode mode)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mb_seterr(-errno, "file: %s: %s", file, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return mb_seterr(-EINVAL, "file: %s is not a regular file", file);
	}
	uint64_t size = (uint64_t)st.st_size;
	uint8_t *dst = mb_mem_ptr(m->mem, at, size ? size : 1, false);
	if (!dst) {
		close(fd);
		return mb_seterr(-EFAULT, "file: %s (%" PRIu64 " bytes) does not fit "
				 "in RAM at 0x%" PRIx64, file, size, at);
	}
	for (uint64_t done = 0; done < size;) {
		ssize_t n = read(fd, dst + done, size - done);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			return mb_seterr(-e, "file: %s: %s", file, strerror(e));
		}
		done += (uint64_t)n;
	}
	close(fd);
	return mb_boot_setup_cpu(m, mode, entry);
}
