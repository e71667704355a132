/*
 * Multiboot 1 (The Multiboot Specification, version 0.6.96).
 *
 * The kernel carries a header in its first 8192 bytes (3.1.1). With flag
 * bit 16 it gives its load addresses itself (the "a.out kludge", 3.1.3) and
 * may be any flat file; otherwise it must be ELF. The kernel goes where it
 * asks, anywhere in RAM from 0x1000 up (the first page holds the IVT and
 * the GDT at 0x500 that protected-mode entry needs), modules page-aligned
 * after it and never below 1 MiB. The information structure (3.3) goes at
 * 0x8000 (below 640 KiB, where kernels linked at 1 MiB expect nothing) or,
 * when the kernel occupies that area (a kernel linked at 0x8000), page-
 * aligned after the last module. We enter in 32-bit protected mode as 3.2
 * prescribes: EAX = 0x2badb002, EBX = the information
 * structure, flat CS/DS/ES/FS/GS/SS, paging and interrupts off.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/loader.h"

#define MiB (1ull << 20)
#define GiB4 (1ull << 32)

/* Header flags (3.1.2). Bits 0-15 are requirements: a loader that does not
 * understand one must refuse the kernel. Bit 2 (video mode) we understand
 * but do not provide: the info flags tell the kernel so (bits 11-12). */
#define HF_PAGE_ALIGN (1u << 0)
#define HF_MEMORY (1u << 1)
#define HF_VIDEO (1u << 2)
#define HF_AOUT_KLUDGE (1u << 16)
#define HF_KNOWN (HF_PAGE_ALIGN | HF_MEMORY | HF_VIDEO)

/* Information flags (3.3). */
#define IF_MEMORY (1u << 0)
#define IF_CMDLINE (1u << 2)
#define IF_MODS (1u << 3)
#define IF_MMAP (1u << 6)
#define IF_LOADER_NAME (1u << 9)

#define INFO_SIZE 128 /* the 0.6.96 structure is 116 bytes with framebuffer */

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static void put32(uint8_t *p, uint32_t v) { mb_io_put(p, 4, v); }
static void put64(uint8_t *p, uint64_t v) { mb_io_put(p, 8, v); }
static uint64_t page_up(uint64_t v) { return (v + 0xfff) & ~0xfffull; }

int mb_multiboot_find(const uint8_t *buf, size_t len, const char *name,
		      struct mb_multiboot_header *h)
{
	size_t lim = len < MULTIBOOT_SEARCH ? len : MULTIBOOT_SEARCH;
	long bad = -1;
	/* 3.1: "contained completely within the first 8192 bytes", 4-aligned */
	for (size_t off = 0; off + 12 <= lim; off += 4) {
		const uint8_t *p = buf + off;
		if (get32(p) != MULTIBOOT_HEADER_MAGIC)
			continue;
		uint32_t flags = get32(p + 4), sum = get32(p + 8);
		if ((uint32_t)(MULTIBOOT_HEADER_MAGIC + flags + sum) != 0) {
			if (bad < 0) /* keep looking: could be a stray constant */
				bad = (long)off;
			continue;
		}
		size_t need = flags & HF_VIDEO ? 48 : flags & HF_AOUT_KLUDGE ? 32 : 12;
		if (off + need > lim)
			return mb_seterr(-EINVAL, "kernel %s: multiboot header at "
					 "offset %zu is cut off (needs %zu bytes within "
					 "the first %d)", name, off, need,
					 MULTIBOOT_SEARCH);
		if ((flags & 0xffff) & ~HF_KNOWN)
			return mb_seterr(-EINVAL, "kernel %s: multiboot header requires "
					 "features moonbox does not know (flags "
					 "0x%08x, unknown required bits 0x%04x)", name,
					 flags, (flags & 0xffff) & ~HF_KNOWN);
		*h = (struct mb_multiboot_header){
			.magic = MULTIBOOT_HEADER_MAGIC, .flags = flags,
			.checksum = sum, .offset = off };
		if (flags & HF_AOUT_KLUDGE) {
			h->header_addr = get32(p + 12);
			h->load_addr = get32(p + 16);
			h->load_end_addr = get32(p + 20);
			h->bss_end_addr = get32(p + 24);
			h->entry_addr = get32(p + 28);
		}
		return 0;
	}
	if (bad >= 0)
		return mb_seterr(-EINVAL, "kernel %s: multiboot header at offset %ld "
				 "has a bad checksum", name, bad);
	return mb_seterr(-ENOENT, "kernel %s: no multiboot header in the first "
			 "%d bytes", name, MULTIBOOT_SEARCH);
}

/* 3.1.3: the address fields say which file bytes go where. */
static int load_aout(struct mb_mem *mem, struct mb_file *f,
		     const struct mb_multiboot_header *h, uint64_t *lo,
		     uint64_t *end, uint32_t *entry)
{
	const char *p = f->path;
	uint64_t delta = (uint64_t)h->header_addr - h->load_addr, size, bss = 0;
	if (h->load_addr > h->header_addr)
		return mb_seterr(-EINVAL, "kernel %s: load_addr 0x%x is above "
				 "header_addr 0x%x", p, h->load_addr, h->header_addr);
	if (delta > h->offset)
		return mb_seterr(-EINVAL, "kernel %s: load_addr 0x%x would start "
				 "%" PRIu64 " bytes before the file", p, h->load_addr,
				 delta - h->offset);
	uint64_t off = h->offset - delta;
	if (h->load_end_addr == 0) {
		size = f->size - off; /* text and data are the whole file */
	} else {
		if (h->load_end_addr < h->load_addr)
			return mb_seterr(-EINVAL, "kernel %s: load_end_addr 0x%x is "
					 "below load_addr 0x%x", p, h->load_end_addr,
					 h->load_addr);
		size = (uint64_t)h->load_end_addr - h->load_addr;
		if (size > f->size - off)
			return mb_seterr(-EINVAL, "kernel %s: truncated: load_end_addr "
					 "asks for %" PRIu64 " bytes from offset %" PRIu64
					 " but the file has %" PRIu64, p, size, off,
					 f->size);
	}
	if (h->bss_end_addr) {
		if (h->bss_end_addr < h->load_addr + size)
			return mb_seterr(-EINVAL, "kernel %s: bss_end_addr 0x%x is "
					 "below the end of the loaded image 0x%" PRIx64,
					 p, h->bss_end_addr, h->load_addr + size);
		bss = h->bss_end_addr - (h->load_addr + size);
	}
	if (h->load_addr < MULTIBOOT_KERNEL_MIN)
		return mb_seterr(-EINVAL, "kernel %s: load_addr 0x%x is in the first "
				 "page (IVT and the loader's GDT at 0x500)", p,
				 h->load_addr);
	if (h->entry_addr < h->load_addr || h->entry_addr - h->load_addr >= size)
		return mb_seterr(-EINVAL, "kernel %s: entry_addr 0x%x is outside the "
				 "loaded image 0x%x-0x%" PRIx64, p, h->entry_addr,
				 h->load_addr, h->load_addr + size);
	int rc = mb_file_load(f, mem, off, size, h->load_addr, bss);
	*lo = h->load_addr;
	*end = h->load_addr + size + bss;
	*entry = h->entry_addr;
	return rc;
}

/* mem_lower: RAM from 0 (at most 640 KiB); mem_upper: contiguous RAM from
 * 1 MiB (3.3: "maximally the address of the first upper memory hole minus
 * 1 megabyte"), both in KiB. */
static void mem_sizes(const struct mb_e820 *e, int n, uint32_t *lo, uint32_t *hi)
{
	uint64_t upper = MiB;
	*lo = 0;
	for (int i = 0; i < n; i++) {
		if (e[i].type != E820_RAM)
			continue;
		if (e[i].addr == 0)
			*lo = (uint32_t)((e[i].size < 0xa0000 ? e[i].size : 0xa0000) >> 10);
		if (e[i].addr <= upper && e[i].addr + e[i].size > upper)
			upper = e[i].addr + e[i].size;
	}
	if (upper > GiB4)
		upper = GiB4;
	*hi = (uint32_t)((upper - MiB) >> 10);
}

/* The information area, laid out in a host buffer then written at base:
 * info, module list, mmap, strings. */
struct area {
	uint8_t *buf;
	uint32_t base;
	size_t used; /* sized by the caller: never more than allocated */
};

static uint32_t area_take(struct area *a, size_t n)
{
	uint32_t at = a->base + (uint32_t)a->used;
	a->used += (n + 3) & ~(size_t)3;
	return at;
}

static uint32_t area_str(struct area *a, const char *s)
{
	size_t n = strlen(s) + 1;
	uint32_t at = area_take(a, n);
	memcpy(a->buf + (at - a->base), s, n);
	return at;
}

int mb_multiboot_load(struct mb_mem *mem, const struct mb_multiboot_config *cfg,
		      uint32_t *entry, uint32_t *info)
{
	size_t nmod = cfg->nmodules;
	struct mb_file kf = { .fd = -1 }, *mf = calloc(nmod + 1, sizeof *mf);
	struct mb_multiboot_header h;
	struct mb_e820 map[E820_MAX];
	struct area a = { 0 };
	uint8_t head[MULTIBOOT_SEARCH];
	uint64_t klo = 0, end = 0;
	int rc, n = 0;

	if (!mf)
		return mb_seterr(-ENOMEM, "boot_multiboot: out of memory");
	for (size_t i = 0; i < nmod; i++)
		mf[i].fd = -1;
	/* Every file opened, every size known before anything is loaded. */
	if ((rc = mb_file_open(&kf, cfg->kernel, "kernel")))
		goto out;
	for (size_t i = 0; i < nmod; i++)
		if ((rc = mb_file_open(&mf[i], cfg->modules[i].file, "module")))
			goto out;
	size_t hl = kf.size < sizeof head ? (size_t)kf.size : sizeof head;
	if ((rc = mb_file_pread(&kf, 0, head, hl)) ||
	    (rc = mb_multiboot_find(head, hl, kf.path, &h)))
		goto out;
	if ((n = mb_e820_build(mem, NULL, 0, map, E820_MAX)) < 0) {
		rc = n;
		goto out;
	}

	/* Size the information area. */
	size_t need = INFO_SIZE + (size_t)n * 24 + nmod * 16 + 16 +
		      strlen(cfg->cmdline ? cfg->cmdline : "") + 4;
	for (size_t i = 0; i < nmod; i++)
		need += strlen(cfg->modules[i].cmdline ? cfg->modules[i].cmdline
						       : "") + 4;
	if (need > MULTIBOOT_INFO_END - MULTIBOOT_INFO) {
		rc = mb_seterr(-E2BIG, "boot_multiboot: command lines and modules "
			       "need %zu bytes, more than the %d of the info area",
			       need, MULTIBOOT_INFO_END - MULTIBOOT_INFO);
		goto out;
	}

	/* The kernel. */
	if (h.flags & HF_AOUT_KLUDGE) {
		if ((rc = load_aout(mem, &kf, &h, &klo, &end, entry)))
			goto out;
	} else if (mb_elf_probe(&kf)) {
		struct mb_elf_image img;
		if ((rc = mb_elf_load(mem, &kf, 0, MULTIBOOT_KERNEL_MIN, &img)))
			goto out;
		klo = img.lo;
		if (img.entry >= GiB4 || img.hi > GiB4) {
			rc = mb_seterr(-EINVAL, "kernel %s: loaded or entered above "
				       "4 GiB", kf.path);
			goto out;
		}
		end = img.hi;
		*entry = (uint32_t)img.entry;
	} else {
		rc = mb_seterr(-EINVAL, "kernel %s: not ELF, and its multiboot header "
			       "has no address fields (flags bit 16)", kf.path);
		goto out;
	}

	/* Modules: page-aligned after the kernel (always, as header flag 0
	 * may ask), each with its command line. */
	uint64_t first = page_up(end) < MiB ? MiB : page_up(end), next = first;
	for (size_t i = 0; i < nmod; i++)
		next = page_up(next + mf[i].size);
	/* The information area: 0x8000 unless the kernel is there. */
	uint64_t base = MULTIBOOT_INFO;
	if (klo < MULTIBOOT_INFO + need && MULTIBOOT_INFO < end)
		base = next;
	if (base + need > GiB4 || !mb_mem_ptr(mem, base, need, true)) {
		rc = mb_seterr(-EFAULT, "boot_multiboot: needs RAM at 0x%" PRIx64
			       "-0x%" PRIx64 " for the multiboot information",
			       base, base + need);
		goto out;
	}
	if (!(a.buf = calloc(1, need))) {
		rc = mb_seterr(-ENOMEM, "boot_multiboot: out of memory");
		goto out;
	}
	a.base = (uint32_t)base;
	uint32_t at = area_take(&a, INFO_SIZE);
	uint8_t *ib = a.buf;
	uint32_t mods = area_take(&a, nmod * 16);
	next = first;
	for (size_t i = 0; i < nmod; i++) {
		struct mb_file *m = &mf[i];
		if (next + m->size > GiB4) {
			rc = mb_seterr(-ENOMEM, "module %s: %" PRIu64 " bytes do not fit "
				       "below 4 GiB", m->path, m->size);
			goto out;
		}
		if ((rc = mb_file_load(m, mem, 0, m->size, next, 0)))
			goto out;
		uint8_t *e = a.buf + (mods - a.base) + i * 16;
		put32(e, (uint32_t)next);               /* mod_start */
		put32(e + 4, (uint32_t)(next + m->size)); /* mod_end */
		put32(e + 8, area_str(&a, cfg->modules[i].cmdline
					   ? cfg->modules[i].cmdline : ""));
		next = page_up(next + m->size);
	}

	/* 3.3: each mmap entry is preceded by its size (20, not counting
	 * the size field itself). */
	uint32_t mmap = area_take(&a, (size_t)n * 24);
	for (int i = 0; i < n; i++) {
		uint8_t *e = a.buf + (mmap - a.base) + (size_t)i * 24;
		put32(e, 20);
		put64(e + 4, map[i].addr);
		put64(e + 12, map[i].size);
		put32(e + 20, map[i].type);
	}
	uint32_t lo, hi;
	mem_sizes(map, n, &lo, &hi);
	put32(ib + 0, IF_MEMORY | IF_CMDLINE | IF_MODS | IF_MMAP | IF_LOADER_NAME);
	put32(ib + 4, lo);
	put32(ib + 8, hi);
	put32(ib + 16, area_str(&a, cfg->cmdline ? cfg->cmdline : ""));
	put32(ib + 20, (uint32_t)nmod);
	put32(ib + 24, mods);
	put32(ib + 44, (uint32_t)n * 24);
	put32(ib + 48, mmap);
	put32(ib + 64, area_str(&a, "moonbox"));
	if ((rc = mb_mem_write(mem, a.base, a.buf, a.used)))
		goto out;
	*info = at;
out:
	free(a.buf);
	mb_file_close(&kf);
	for (size_t i = 0; i < nmod; i++)
		mb_file_close(&mf[i]);
	free(mf);
	return rc;
}

int mb_boot_multiboot(struct mb_machine *m, const struct mb_multiboot_config *cfg)
{
	uint32_t entry, info;
	struct mb_regs r;
	int rc = mb_multiboot_load(mb_machine_mem(m), cfg, &entry, &info);
	if (rc || (rc = mb_boot_setup_cpu(m, MB_MODE_PROTECTED, entry)) ||
	    (rc = mb_vcpu_get_regs(m, 0, &r)))
		return rc;
	r.rax = MULTIBOOT_BOOTLOADER_MAGIC;
	r.rbx = info;
	return mb_vcpu_set_regs(m, 0, &r);
}
