/*
 * The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/
 * boot.rst, "64-bit Boot Protocol"; protocol 2.12+ for XLF_KERNEL_64).
 *
 * A bzImage is a real-mode part ((setup_sects + 1) * 512 bytes: boot sector
 * plus setup code, with the setup header at 0x1f1) followed by the
 * protected-mode kernel (syssize * 16 bytes). We skip the real-mode part:
 * copy its setup header into a zero page (struct boot_params), fill in what
 * a loader writes, load the protected-mode kernel and enter it at +0x200 in
 * long mode with RSI pointing at the zero page.
 *
 * Also here: the e820 memory map, shared with the multiboot loader.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/acpi.h"
#include "core/loader.h"

_Static_assert(sizeof(struct setup_header) == 0x26c - 0x1f1, "setup_header");
_Static_assert(offsetof(struct setup_header, init_size) == 0x260 - 0x1f1,
	       "init_size offset");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "e820_entries");
_Static_assert(offsetof(struct boot_params, hdr) == 0x1f1, "hdr");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820_table");
_Static_assert(sizeof(struct boot_params) == 0x1000, "boot_params");

#define MiB (1ull << 20)
#define GiB4 (1ull << 32)
#define SETUP_MAX (256 * 512) /* setup_sects is one byte */
#define HDR_LIMIT 0x290       /* zero-page bytes the setup header may use */

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static uint64_t range_end(uint64_t base, uint64_t size)
{
	return size > UINT64_MAX - base ? UINT64_MAX : base + size;
}

/* ---- e820 ------------------------------------------------------------- */

static int e820_add(struct mb_e820 *out, size_t max, size_t *n, uint64_t a,
		    uint64_t b, uint32_t type)
{
	if (a >= b)
		return 0;
	if (*n == max)
		return mb_seterr(-ENOSPC, "memory map: more than %zu entries", max);
	size_t i = *n;
	while (i > 0 && out[i - 1].addr > a) { /* insertion: keep sorted */
		out[i] = out[i - 1];
		i--;
	}
	out[i] = (struct mb_e820){ a, b - a, type };
	(*n)++;
	return 0;
}

/* Hole i: the legacy PC hole first, then the caller's reserved ranges. */
static void hole(const struct mb_range *res, size_t i, uint64_t *a, uint64_t *b)
{
	if (i == 0) {
		*a = LEGACY_HOLE_START, *b = LEGACY_HOLE_END;
	} else {
		*a = res[i - 1].base;
		*b = range_end(res[i - 1].base, res[i - 1].size);
	}
}

int mb_e820_build(const struct mb_mem *mem, const struct mb_range *res,
		  size_t nres, struct mb_e820 *out, size_t max)
{
	size_t n = 0;
	int rc;
	for (size_t r = 0; r < mb_mem_count(mem); r++) {
		const struct mb_mem_region *g = mb_mem_region(mem, r);
		uint64_t a = g->base, end = g->base + g->size;
		if (g->flags & MB_MEM_READONLY) {
			if ((rc = e820_add(out, max, &n, a, end, E820_RESERVED)))
				return rc;
			continue;
		}
		/* RAM minus every hole: repeatedly cut at the lowest hole that
		 * intersects what is left. */
		while (a < end) {
			uint64_t ha = end, hb = end;
			for (size_t i = 0; i <= nres; i++) {
				uint64_t x, y;
				hole(res, i, &x, &y);
				if (x < end && y > a && (x > a ? x : a) < ha)
					ha = x > a ? x : a, hb = y < end ? y : end;
			}
			if ((rc = e820_add(out, max, &n, a, ha, E820_RAM)))
				return rc;
			a = hb;
		}
		/* The legacy hole is reserved only where this RAM covers it. */
		uint64_t la = g->base > LEGACY_HOLE_START ? g->base : LEGACY_HOLE_START;
		uint64_t lb = end < LEGACY_HOLE_END ? end : LEGACY_HOLE_END;
		if ((rc = e820_add(out, max, &n, la, lb, E820_RESERVED)))
			return rc;
	}
	for (size_t i = 0; i < nres; i++)
		if ((rc = e820_add(out, max, &n, res[i].base,
				   range_end(res[i].base, res[i].size),
				   E820_RESERVED)))
			return rc;
	return (int)n;
}

/* ---- the setup header ------------------------------------------------- */

static uint16_t get16(const uint8_t *b, size_t off) { return (uint16_t)(b[off] | b[off + 1] << 8); }
static uint32_t get32(const uint8_t *b, size_t off)
{
	return (uint32_t)get16(b, off) | (uint32_t)get16(b, off + 2) << 16;
}

int mb_bzimage_parse(const uint8_t *buf, size_t len, uint64_t file_size,
		     const char *name, struct mb_bzimage_info *o)
{
	memset(o, 0, sizeof *o);
	if (file_size < HDR_LIMIT || len < HDR_LIMIT)
		return mb_seterr(-EINVAL, "kernel %s: %" PRIu64 " bytes is too small "
				 "for a bzImage", name, file_size);
	if (get16(buf, 0x1fe) != 0xaa55)
		return mb_seterr(-EINVAL, "kernel %s: not a bzImage (no boot_flag "
				 "0xaa55 at 0x1fe)", name);
	if (memcmp(buf + 0x202, "HdrS", 4))
		return mb_seterr(-EINVAL, "kernel %s: not a bzImage (no \"HdrS\" "
				 "magic at 0x202)", name);
	o->version = get16(buf, 0x206);
	o->loadflags = buf[0x211];
	if (o->version < 0x206)
		return mb_seterr(-EINVAL, "kernel %s: boot protocol %u.%02u is too "
				 "old (moonbox needs 2.06 or later)", name,
				 o->version >> 8, o->version & 0xff);
	if (!(o->loadflags & LOADED_HIGH))
		return mb_seterr(-EINVAL, "kernel %s: not a bzImage (loadflags "
				 "LOADED_HIGH is clear)", name);
	o->xloadflags = o->version >= 0x20c ? get16(buf, 0x236) : 0;
	if (!(o->xloadflags & XLF_KERNEL_64))
		return mb_seterr(-EINVAL, "kernel %s: no 64-bit entry point "
				 "(xloadflags XLF_KERNEL_64, protocol 2.12+)", name);
	/* boot.rst, "64-bit Boot Protocol": end of the setup header; 2.12
	 * headers reach at least handover_offset (0x264-0x267). */
	o->header_end = 0x202 + (size_t)buf[0x201];
	if (o->header_end < 0x268 || o->header_end > HDR_LIMIT)
		return mb_seterr(-EINVAL, "kernel %s: setup header ends at 0x%zx "
				 "(byte 0x201), expected 0x268-0x%x", name,
				 o->header_end, HDR_LIMIT);

	o->setup_sects = buf[0x1f1] ? buf[0x1f1] : 4; /* boot.rst: 0 means 4 */
	o->kernel_offset = (uint64_t)(o->setup_sects + 1) * 512;
	o->kernel_size = (uint64_t)get32(buf, 0x1f4) * 16;
	if (o->kernel_offset > file_size)
		return mb_seterr(-EINVAL, "kernel %s: setup_sects %u puts the kernel "
				 "at %" PRIu64 ", beyond the end of the file "
				 "(%" PRIu64 " bytes)", name, o->setup_sects,
				 o->kernel_offset, file_size);
	if (o->kernel_size == 0)
		return mb_seterr(-EINVAL, "kernel %s: syssize is 0", name);
	if (o->kernel_size > file_size - o->kernel_offset)
		return mb_seterr(-EINVAL, "kernel %s: truncated: syssize says %"
				 PRIu64 " bytes of kernel after %" PRIu64 " bytes of "
				 "setup, but the file has %" PRIu64 " bytes", name,
				 o->kernel_size, o->kernel_offset, file_size);

	o->initrd_addr_max = get32(buf, 0x22c);
	o->kernel_alignment = get32(buf, 0x230);
	o->relocatable = buf[0x234] != 0;
	o->cmdline_size = get32(buf, 0x238);
	o->pref_address = (uint64_t)get32(buf, 0x258) |
			  (uint64_t)get32(buf, 0x25c) << 32;
	o->init_size = get32(buf, 0x260);
	uint32_t al = o->kernel_alignment;
	if (o->relocatable && (al < 4096 || (al & (al - 1)) || al > (1u << 30)))
		return mb_seterr(-EINVAL, "kernel %s: kernel_alignment 0x%x is not a "
				 "power of two between 4K and 1G", name, al);
	if (!o->relocatable && o->pref_address < MiB)
		return mb_seterr(-EINVAL, "kernel %s: not relocatable and its "
				 "pref_address 0x%" PRIx64 " is below 1 MiB", name,
				 o->pref_address);
	if (o->init_size < o->kernel_size)
		return mb_seterr(-EINVAL, "kernel %s: init_size 0x%x is smaller "
				 "than the kernel (0x%" PRIx64 " bytes)", name,
				 o->init_size, o->kernel_size);

	/* kernel_version: offset - 0x200 of a NUL-terminated string. */
	uint16_t kv = get16(buf, 0x20e);
	if (kv) {
		size_t at = (size_t)kv + 0x200, i = 0;
		while (at + i < len && at + i < o->kernel_offset &&
		       i + 1 < sizeof o->kernel_version && buf[at + i] >= 0x20 &&
		       buf[at + i] < 0x7f) {
			o->kernel_version[i] = (char)buf[at + i];
			i++;
		}
	}
	return 0;
}

/* Read the start of the file (the whole setup part) and parse it. The
 * caller frees *setup. */
static int read_setup(struct mb_file *f, uint8_t **setup, size_t *len,
		      struct mb_bzimage_info *o)
{
	*len = f->size < SETUP_MAX ? (size_t)f->size : SETUP_MAX;
	*setup = malloc(*len ? *len : 1);
	if (!*setup)
		return mb_seterr(-ENOMEM, "kernel %s: out of memory", f->path);
	int rc = mb_file_pread(f, 0, *setup, *len);
	if (!rc)
		rc = mb_bzimage_parse(*setup, *len, f->size, f->path, o);
	if (rc) {
		free(*setup);
		*setup = NULL;
	}
	return rc;
}

int mb_bzimage_info(const char *file, struct mb_bzimage_info *out)
{
	struct mb_file f;
	uint8_t *setup;
	size_t len;
	int rc = mb_file_open(&f, file, "kernel");
	if (rc)
		return rc;
	rc = read_setup(&f, &setup, &len, out);
	free(setup);
	mb_file_close(&f);
	return rc;
}

/* ---- the zero page ---------------------------------------------------- */

int mb_linux_zeropage(const struct mb_mem *mem, const uint8_t *setup,
		      size_t setup_len, const struct mb_linux_layout *lay,
		      const struct mb_range *res, size_t nres,
		      struct boot_params *zp)
{
	struct mb_e820 map[E820_MAX];
	size_t end = 0x202 + (size_t)setup[0x201];
	if (end > HDR_LIMIT || end > setup_len)
		return mb_seterr(-EINVAL, "kernel: setup header ends at 0x%zx", end);
	int n = mb_e820_build(mem, res, nres, map, E820_MAX);
	if (n < 0)
		return n;

	/* boot.rst, "64-bit Boot Protocol": zeroed, then the setup header. */
	memset(zp, 0, sizeof *zp);
	memcpy((uint8_t *)zp + 0x1f1, setup + 0x1f1, end - 0x1f1);
	struct setup_header *h = &zp->hdr;
	h->type_of_loader = 0xff; /* undefined boot loader */
	h->loadflags |= CAN_USE_HEAP;
	h->heap_end_ptr = 0xfe00; /* boot.rst: setup at 0x90000, heap to 0x9fe00 */
	h->code32_start = (uint32_t)lay->load;
	h->cmd_line_ptr = (uint32_t)lay->cmdline;
	h->ramdisk_image = (uint32_t)lay->initrd;
	h->ramdisk_size = (uint32_t)lay->initrd_size;
	h->ext_loader_ver = h->ext_loader_type = 0;
	zp->e820_entries = (uint8_t)n;
	for (int i = 0; i < n; i++) {
		zp->e820_table[i].addr = map[i].addr;
		zp->e820_table[i].size = map[i].size;
		zp->e820_table[i].type = map[i].type;
	}
	return 0;
}

/* ---- placement -------------------------------------------------------- */

/* [a, a+n) inside one RAM region, below 4 GiB (our identity map). */
static bool fits(const struct mb_mem *mem, uint64_t a, uint64_t n)
{
	return a < GiB4 && n <= GiB4 - a &&
	       mb_mem_ptr((struct mb_mem *)mem, a, n ? n : 1, true);
}

/* boot.rst, init_size: the kernel runs at align_up(load, kernel_alignment)
 * if relocatable, else at pref_address, and needs init_size bytes there. */
static int place_kernel(const struct mb_mem *mem, const char *name,
			const struct mb_bzimage_info *bz,
			struct mb_linux_layout *lay)
{
	lay->kernel_size = bz->kernel_size;
	lay->init_size = bz->init_size;
	if (!bz->relocatable) {
		lay->load = MiB; /* boot.rst, "Loading The Rest of The Kernel" */
		lay->runtime = bz->pref_address;
		if (fits(mem, lay->load, bz->kernel_size) &&
		    fits(mem, lay->runtime, bz->init_size))
			return 0;
		return mb_seterr(-ENOMEM, "kernel %s: not relocatable: it needs RAM "
				 "at 0x%" PRIx64 "-0x%" PRIx64 " (pref_address + "
				 "init_size); give the machine more memory", name,
				 lay->runtime, lay->runtime + bz->init_size);
	}
	uint64_t al = bz->kernel_alignment, pref = bz->pref_address;
	if (pref >= MiB && !(pref & (al - 1)) && fits(mem, pref, bz->init_size)) {
		lay->load = lay->runtime = pref;
		return 0;
	}
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *g = mb_mem_region(mem, i);
		uint64_t a = align_up(g->base > MiB ? g->base : MiB, al);
		if (fits(mem, a, bz->init_size)) {
			lay->load = lay->runtime = a;
			return 0;
		}
	}
	return mb_seterr(-ENOMEM, "kernel %s: no RAM for its 0x%x bytes (init_size) "
			 "at a 0x%" PRIx64 "-aligned address above 1 MiB", name,
			 bz->init_size, al);
}

static uint64_t ram_total(const struct mb_mem *mem)
{
	uint64_t t = 0;
	for (size_t i = 0; i < mb_mem_count(mem); i++)
		if (!(mb_mem_region(mem, i)->flags & MB_MEM_READONLY))
			t += mb_mem_region(mem, i)->size;
	return t;
}

/* boot.rst, initrd_addr_max: the initrd goes as high as possible (the
 * kernel's own convention), page-aligned, below min(initrd_addr_max + 1,
 * 4 GiB), above 1 MiB and clear of the kernel's footprint. */
static int place_initrd(const struct mb_mem *mem, const char *name,
			uint64_t size, const struct mb_bzimage_info *bz,
			struct mb_linux_layout *lay)
{
	uint64_t klo = lay->load < lay->runtime ? lay->load : lay->runtime;
	uint64_t khi = lay->load + lay->kernel_size;
	if (lay->runtime + lay->init_size > khi)
		khi = lay->runtime + lay->init_size;
	uint64_t limit = (uint64_t)bz->initrd_addr_max + 1;
	if (limit > GiB4)
		limit = GiB4;
	if (size > ram_total(mem))
		return mb_seterr(-EFBIG, "initrd %s: %" PRIu64 " bytes is larger than "
				 "the machine's RAM (%" PRIu64 " bytes)", name, size,
				 ram_total(mem));
	lay->initrd_size = size;
	for (size_t i = mb_mem_count(mem); i-- > 0;) {
		const struct mb_mem_region *g = mb_mem_region(mem, i);
		uint64_t top = g->base + g->size;
		if (g->flags & MB_MEM_READONLY)
			continue;
		if (top > limit)
			top = limit;
		for (int tries = 0; tries < 2; tries++) {
			if (top < size)
				break;
			uint64_t a = (top - size) & ~0xfffull;
			if (a < g->base || a < MiB)
				break;
			if (a < khi && klo < a + size) { /* retry below the kernel */
				top = klo;
				continue;
			}
			lay->initrd = a;
			return 0;
		}
	}
	return mb_seterr(-ENOMEM, "initrd %s: no room for %" PRIu64 " bytes in RAM "
			 "between 1 MiB and 0x%" PRIx64 " (initrd_addr_max) "
			 "outside the kernel (0x%" PRIx64 "-0x%" PRIx64 ")", name,
			 size, limit, klo, khi);
}

/* ---- loading ---------------------------------------------------------- */

int mb_linux_load(struct mb_mem *mem, const struct mb_linux_config *cfg,
		  struct mb_linux_layout *lay)
{
	struct mb_file kf, rf = { .fd = -1 };
	struct mb_bzimage_info bz;
	struct boot_params *zp = NULL;
	uint8_t *setup = NULL;
	size_t setup_len;
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	int rc;

	memset(lay, 0, sizeof *lay);
	if ((rc = mb_file_open(&kf, cfg->kernel, "kernel")))
		return rc;
	if ((rc = read_setup(&kf, &setup, &setup_len, &bz)))
		goto out;
	if (cfg->initrd && (rc = mb_file_open(&rf, cfg->initrd, "initrd")))
		goto out;
	lay->cmdline = LINUX_CMDLINE;
	lay->cmdline_len = strlen(cmdline);
	if (lay->cmdline_len > bz.cmdline_size) {
		rc = mb_seterr(-E2BIG, "cmdline: %" PRIu64 " bytes is longer than "
			       "the kernel's cmdline_size (%u)", lay->cmdline_len,
			       bz.cmdline_size);
		goto out;
	}
	if (lay->cmdline_len >= LINUX_CMDLINE_MAX) {
		rc = mb_seterr(-E2BIG, "cmdline: %" PRIu64 " bytes is more than "
			       "moonbox's %d", lay->cmdline_len, LINUX_CMDLINE_MAX - 1);
		goto out;
	}
	lay->zero_page = LINUX_ZERO_PAGE;
	if (!fits(mem, LINUX_ZERO_PAGE, sizeof *zp) ||
	    !fits(mem, LINUX_CMDLINE, lay->cmdline_len + 1)) {
		rc = mb_seterr(-EFAULT, "boot_linux: needs RAM at 0x%x-0x%" PRIx64
			       " for the zero page and command line",
			       LINUX_ZERO_PAGE, LINUX_CMDLINE + lay->cmdline_len + 1);
		goto out;
	}
	if ((rc = place_kernel(mem, kf.path, &bz, lay)))
		goto out;
	lay->entry = lay->load + 0x200; /* boot.rst: 64-bit entry */
	if (rf.fd >= 0) {
		if (rf.size > UINT32_MAX) { /* ramdisk_size is 32 bits */
			rc = mb_seterr(-EFBIG, "initrd %s: %" PRIu64 " bytes is 4 GiB "
				       "or more", rf.path, rf.size);
			goto out;
		}
		if ((rc = place_initrd(mem, rf.path, rf.size, &bz, lay)))
			goto out;
	}
	if (!(zp = malloc(sizeof *zp))) {
		rc = mb_seterr(-ENOMEM, "boot_linux: out of memory");
		goto out;
	}
	if ((rc = mb_linux_zeropage(mem, setup, setup_len, lay, cfg->reserved,
				    cfg->nreserved, zp)))
		goto out;
	/* zero-page.rst: acpi_rsdp_addr at 0x070 (protocol 2.14); older
	 * kernels scan the BIOS area, where the RSDP is too. */
	memcpy((uint8_t *)zp + 0x070, &cfg->acpi_rsdp, sizeof cfg->acpi_rsdp);

	/* Everything checked: now write the guest's memory. */
	if ((rc = mb_file_load(&kf, mem, bz.kernel_offset, bz.kernel_size,
			       lay->load, 0)))
		goto out;
	if (rf.fd >= 0 &&
	    (rc = mb_file_load(&rf, mem, 0, rf.size, lay->initrd, 0)))
		goto out;
	if ((rc = mb_mem_write(mem, LINUX_CMDLINE, cmdline, lay->cmdline_len + 1)) ||
	    (rc = mb_mem_write(mem, LINUX_ZERO_PAGE, zp, sizeof *zp)))
		goto out;
out:
	free(zp);
	free(setup);
	mb_file_close(&kf);
	mb_file_close(&rf);
	return rc;
}

/* boot.rst asks for __BOOT_CS = 0x10 and __BOOT_DS = 0x18, flat 4 GiB;
 * boot_flat's GDT has 64-bit code at 0x18, so write the Linux layout over
 * it (0x08 stays the 32-bit code segment). */
static const uint64_t linux_gdt[] = {
	0,
	0x00cf9a000000ffffull, /* 0x08: code, 32-bit */
	0x00af9a000000ffffull, /* 0x10: __BOOT_CS, 64-bit code */
	0x00cf92000000ffffull, /* 0x18: __BOOT_DS, data */
};

/* The caller's config plus what the machine's devices need the guest to
 * know: their windows reserved in e820, virtio-mmio devices announced on
 * the command line. */
static int with_devices(struct mb_machine *m, const struct mb_linux_config *cfg,
			struct mb_linux_layout *lay, struct mb_pvh_layout *pvh)
{
	const struct mb_range *mres;
	uint64_t rsdp;
	if (mb_machine_cpus(m) > 1 && mb_machine_irqchip(m) != MB_IRQCHIP_KERNEL)
		return mb_seterr(-ENOTSUP, "cpus: %u CPUs need irqchip = \"kernel\": "
				 "moonbox's user irqchip is a PIC with no local "
				 "APICs, so nothing can start the other CPUs "
				 "(INIT/SIPI)", mb_machine_cpus(m));
	int rc = mb_acpi_install(m, &rsdp);
	if (rc)
		return rc;
	size_t nm = mb_machine_reserved(m, &mres);
	size_t nr = cfg->nreserved + nm;
	struct mb_range res[nr ? nr : 1];
	memcpy(res, cfg->reserved, cfg->nreserved * sizeof *res);
	memcpy(res + cfg->nreserved, mres, nm * sizeof *res);
	/* With ACPI the DSDT describes the devices instead. */
	size_t extra = rsdp ? 0 : mb_machine_discovery_cmdline(m, NULL, 0);
	const char *base = cfg->cmdline ? cfg->cmdline : "";
	size_t blen = strlen(base);
	char *cmd = malloc(blen + extra + 2);
	if (!cmd)
		return mb_seterr(-ENOMEM, "cmdline: out of memory");
	/* Kernel parameters go before " -- ": what follows belongs to init. */
	const char *dash = strstr(base, " -- ");
	if (!dash && strncmp(base, "-- ", 3) == 0)
		dash = base;
	size_t head = dash ? (size_t)(dash - base) : blen;
	memcpy(cmd, base, head);
	if (extra)
		mb_machine_discovery_cmdline(m, cmd + head, extra + 1);
	size_t at = head + extra;
	if (extra && base[head] && base[head] != ' ')
		cmd[at++] = ' ';
	memcpy(cmd + at, base + head, blen - head + 1);
	struct mb_linux_config c = *cfg;
	c.cmdline = cmd;
	c.reserved = res;
	c.nreserved = nr;
	c.acpi_rsdp = rsdp;
	rc = pvh ? mb_pvh_load(mb_machine_mem(m), &c, pvh)
		     : mb_linux_load(mb_machine_mem(m), &c, lay);
	free(cmd);
	return rc;
}

/* PVH entry state (Xen docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"):
 * 32-bit protected mode, paging off, CS a flat 32-bit code segment, DS ES
 * SS flat data, EBX = the start info, EFLAGS.IF clear; GDT and TR need not
 * be valid (Linux loads its own GDT first). boot_flat's GDT at 0x500 is. */
int mb_boot_pvh(struct mb_machine *m, const struct mb_linux_config *cfg)
{
	struct mb_pvh_layout lay;
	struct mb_regs r;
	int rc = with_devices(m, cfg, NULL, &lay);
	if (rc || (rc = mb_boot_setup_cpu(m, MB_MODE_PROTECTED, lay.entry)) ||
	    (rc = mb_vcpu_get_regs(m, 0, &r)))
		return rc;
	r.rbx = lay.start_info;
	/* Entered in 32-bit mode, but a 64-bit kernel is in long mode within
	 * a few instructions: the debugger describes it as x86-64. */
	mb_boot_set_bits(m, lay.bits);
	return mb_vcpu_set_regs(m, 0, &r);
}

/* An ELF kernel goes through PVH (it has no setup header to speak the
 * bzImage protocol with); boot_pvh says why one without the note fails. */
static bool is_elf(const char *path)
{
	struct mb_file f;
	if (mb_file_open(&f, path, "kernel"))
		return false;
	bool elf = mb_elf_probe(&f);
	mb_file_close(&f);
	return elf;
}

int mb_boot_linux(struct mb_machine *m, const struct mb_linux_config *cfg)
{
	struct mb_linux_layout lay;
	struct mb_sregs s;
	struct mb_regs r;
	if (cfg && cfg->kernel && is_elf(cfg->kernel))
		return mb_boot_pvh(m, cfg);
	int rc = with_devices(m, cfg, &lay, NULL);
	if (rc)
		return rc;
	if ((rc = mb_boot_setup_cpu(m, MB_MODE_LONG, lay.entry)) ||
	    (rc = mb_mem_write(mb_machine_mem(m), 0x500, linux_gdt,
			       sizeof linux_gdt)) ||
	    (rc = mb_vcpu_get_sregs(m, 0, &s)))
		return rc;
	s.cs.selector = 0x10;
	s.ds.selector = s.es.selector = s.ss.selector = 0x18;
	s.fs.selector = s.gs.selector = 0x18;
	if ((rc = mb_vcpu_set_sregs(m, 0, &s)) || (rc = mb_vcpu_get_regs(m, 0, &r)))
		return rc;
	r.rsi = lay.zero_page;
	return mb_vcpu_set_regs(m, 0, &r);
}
