/*
 * PVH boot: the uncompressed vmlinux (an ELF file) entered in 32-bit
 * protected mode at the address its XEN_ELFNOTE_PHYS32_ENTRY note gives,
 * with EBX pointing at a struct hvm_start_info (Xen's PVH ABI,
 * docs/misc/pvh.pandoc and xen/include/public/arch-x86/hvm/start_info.h;
 * Linux: arch/x86/platform/pvh/). Firecracker and Cloud Hypervisor boot
 * Linux this way: the VMM places the kernel, so the guest runs no
 * decompressor, which here is emulated (kvm-here.md).
 *
 * Low memory as for boot_linux (loader.h): the start info, its module list
 * and memory map in the page at 0x7000, the command line at 0x20000. The
 * kernel goes at its segments' physical addresses (16 MiB for Linux), the
 * initrd page-aligned at the top of the highest RAM below 4 GiB.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/loader.h"

#define GiB4 (1ull << 32)

/* start_info.h, version 1. */
struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct hvm_memmap_table_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "modlist");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "memmap");

/* The start-info page: header, one module, the memory map. */
struct pvh_page {
	struct hvm_start_info si;
	struct hvm_modlist_entry mod;
	struct hvm_memmap_table_entry map[E820_MAX];
};
_Static_assert(sizeof(struct pvh_page) <= 0x1000, "start info page");

/* Below this the loader's own structures live (GDT, start info, cmdline). */
#define PVH_LOW_END (LINUX_CMDLINE + LINUX_CMDLINE_MAX)

static bool fits(struct mb_mem *mem, uint64_t a, uint64_t n)
{
	return a < GiB4 && n <= GiB4 - a && mb_mem_ptr(mem, a, n ? n : 1, true);
}

/* Top of the highest RAM entry below 4 GiB that holds size bytes above lo. */
static int place_initrd(const struct mb_e820 *map, int n, uint64_t size,
			uint64_t lo, uint64_t *at)
{
	for (int i = n - 1; i >= 0; i--) {
		if (map[i].type != E820_RAM || map[i].addr >= GiB4)
			continue;
		uint64_t end = map[i].addr + map[i].size;
		if (end > GiB4)
			end = GiB4;
		if (end < size)
			continue;
		uint64_t a = (end - size) & ~0xfffull;
		if (a >= map[i].addr && a >= lo) {
			*at = a;
			return 0;
		}
	}
	return -ENOMEM;
}

int mb_pvh_load(struct mb_mem *mem, const struct mb_linux_config *cfg,
		struct mb_pvh_layout *lay)
{
	struct mb_file kf = { .fd = -1 }, rf = { .fd = -1 };
	struct mb_e820 map[E820_MAX];
	struct pvh_page *pg = NULL;
	const char *cmdline = cfg->cmdline ? cfg->cmdline : "";
	int rc, n;

	memset(lay, 0, sizeof *lay);
	if ((rc = mb_file_open(&kf, cfg->kernel, "kernel")))
		goto out;
	if (cfg->initrd && (rc = mb_file_open(&rf, cfg->initrd, "initrd")))
		goto out;
	if ((rc = mb_elf_pvh_entry(&kf, &lay->entry)))
		goto out;
	lay->cmdline = LINUX_CMDLINE;
	lay->cmdline_len = strlen(cmdline);
	lay->start_info = LINUX_ZERO_PAGE;
	if (lay->cmdline_len >= LINUX_CMDLINE_MAX) {
		rc = mb_seterr(-E2BIG, "cmdline: %" PRIu64 " bytes is more than "
			       "moonbox's %d", lay->cmdline_len,
			       LINUX_CMDLINE_MAX - 1);
		goto out;
	}
	if (!fits(mem, LINUX_ZERO_PAGE, sizeof *pg) ||
	    !fits(mem, LINUX_CMDLINE, lay->cmdline_len + 1)) {
		rc = mb_seterr(-EFAULT, "boot_pvh: needs RAM at 0x%x-0x%" PRIx64
			       " for the start info and command line",
			       LINUX_ZERO_PAGE, LINUX_CMDLINE + lay->cmdline_len + 1);
		goto out;
	}
	if ((n = mb_e820_build(mem, cfg->reserved, cfg->nreserved, map,
			       E820_MAX)) < 0) {
		rc = n;
		goto out;
	}

	/* The kernel: every segment checked before any is written. */
	struct mb_elf_image img;
	if ((rc = mb_elf_load(mem, &kf, 0, PVH_LOW_END, &img)))
		goto out;
	lay->kernel_lo = img.lo, lay->kernel_hi = img.hi;
	lay->bits = img.bits;
	if (lay->entry < img.lo || lay->entry >= img.hi) {
		rc = mb_seterr(-EINVAL, "kernel %s: PVH entry 0x%x is outside the "
			       "loaded image 0x%" PRIx64 "-0x%" PRIx64, kf.path,
			       lay->entry, img.lo, img.hi);
		goto out;
	}
	if (rf.fd >= 0) {
		lay->initrd_size = rf.size;
		if (place_initrd(map, n, rf.size, (img.hi + 0xfff) & ~0xfffull,
				 &lay->initrd)) {
			rc = mb_seterr(-ENOMEM, "initrd %s: %" PRIu64 " bytes do not "
				       "fit in RAM below 4 GiB above the kernel "
				       "(ends at 0x%" PRIx64 "); give the machine "
				       "more memory", rf.path, rf.size, img.hi);
			goto out;
		}
		if ((rc = mb_file_load(&rf, mem, 0, rf.size, lay->initrd, 0)))
			goto out;
	}

	if (!(pg = calloc(1, sizeof *pg))) {
		rc = mb_seterr(-ENOMEM, "boot_pvh: out of memory");
		goto out;
	}
	uint64_t base = LINUX_ZERO_PAGE;
	pg->si.magic = MB_PVH_MAGIC;
	pg->si.version = 1;
	pg->si.cmdline_paddr = LINUX_CMDLINE;
	pg->si.rsdp_paddr = cfg->acpi_rsdp;
	if (rf.fd >= 0) {
		pg->si.nr_modules = 1;
		pg->si.modlist_paddr = base + offsetof(struct pvh_page, mod);
		pg->mod.paddr = lay->initrd;
		pg->mod.size = lay->initrd_size;
	}
	pg->si.memmap_paddr = base + offsetof(struct pvh_page, map);
	pg->si.memmap_entries = (uint32_t)n;
	for (int i = 0; i < n; i++)
		pg->map[i] = (struct hvm_memmap_table_entry){
			map[i].addr, map[i].size, map[i].type, 0 };
	if ((rc = mb_mem_write(mem, LINUX_CMDLINE, cmdline, lay->cmdline_len + 1)) ||
	    (rc = mb_mem_write(mem, base, pg, sizeof *pg)))
		goto out;
out:
	free(pg);
	mb_file_close(&kf);
	mb_file_close(&rf);
	return rc;
}
