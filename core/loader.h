/*
 * Shared by the kernel loaders (boot_linux.c, boot_multiboot.c, elf.c) and
 * their unit tests. Everything here works on a struct mb_mem and files, never
 * on a machine, so the loaders can be tested without KVM; the public
 * mb_boot_* functions add only the vCPU set-up.
 *
 * Guest-physical layout used by the loaders (below 1 MiB):
 *   0x500          GDT (boot_flat.c; boot_linux rewrites it, see there)
 *   0x1000-0x6fff  long-mode page tables (boot_flat.c)
 *   0x7000         Linux zero page (struct boot_params, 4 KiB)
 *   0x8000-0x9efff multiboot information, its strings, mmap and module list
 *                  (after the modules instead when the kernel is there)
 *   0x20000        Linux command line (up to 64 KiB)
 *   0x9fc00-0xfffff reported reserved (EBDA, VGA, BIOS) like on a PC
 */
#ifndef MB_LOADER_H
#define MB_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "moonbox.h"

/* ---- files (elf.c) ------------------------------------------------------ */

/* An input file; `what` ("kernel", "initrd", "module") prefixes messages,
 * which always name the file. */
struct mb_file {
	int fd;
	uint64_t size;
	const char *path, *what;
};

int mb_file_open(struct mb_file *f, const char *path, const char *what);
void mb_file_close(struct mb_file *f);
/* Exactly len bytes at off, else -EIO "truncated". */
int mb_file_pread(struct mb_file *f, uint64_t off, void *buf, size_t len);
/* len bytes at file offset off into guest RAM at gpa (one writable region),
 * then zero `zero` more bytes after them (bss). */
int mb_file_load(struct mb_file *f, struct mb_mem *mem, uint64_t off,
		 uint64_t len, uint64_t gpa, uint64_t zero);

/* ---- memory map (boot_linux.c) ------------------------------------------ */

#define E820_RAM 1
#define E820_RESERVED 2
#define E820_MAX 128 /* what the zero page holds */

/* The PC hole between conventional and extended memory (EBDA, VGA, BIOS). */
#define LEGACY_HOLE_START 0x9fc00
#define LEGACY_HOLE_END 0x100000

struct mb_e820 {
	uint64_t addr, size;
	uint32_t type;
};

/* The machine's memory map as e820 entries sorted by address: RAM regions
 * as RAM minus the legacy hole and the reserved ranges, ROM regions, the
 * legacy hole (where RAM covers it) and the reserved ranges as reserved.
 * Returns the number of entries or -ENOSPC. */
int mb_e820_build(const struct mb_mem *mem, const struct mb_range *res,
		  size_t nres, struct mb_e820 *out, size_t max);

/* ---- Linux (boot_linux.c) ----------------------------------------------- */

/* Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header". */
struct setup_header {
	uint8_t setup_sects;           /* 0x1f1 */
	uint16_t root_flags;
	uint32_t syssize;
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag;            /* 0x1fe: 0xaa55 */
	uint16_t jump;                 /* 0x200 */
	uint32_t header;               /* 0x202: "HdrS" */
	uint16_t version;
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;        /* 0x210 */
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;        /* 0x218 */
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;         /* 0x224 */
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;         /* 0x228 */
	uint32_t initrd_addr_max;
	uint32_t kernel_alignment;     /* 0x230 */
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size;         /* 0x238 */
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;       /* 0x248 */
	uint32_t payload_length;
	uint64_t setup_data;           /* 0x250 */
	uint64_t pref_address;         /* 0x258 */
	uint32_t init_size;            /* 0x260 */
	uint32_t handover_offset;
	uint32_t kernel_info_offset;   /* 0x268 */
} __attribute__((packed));

/* Documentation/arch/x86/zero-page.rst. */
struct boot_e820 {
	uint64_t addr, size;
	uint32_t type;
} __attribute__((packed));

struct boot_params {
	uint8_t _pad0[0x1e8];          /* screen_info, apm, ist, ... */
	uint8_t e820_entries;          /* 0x1e8 */
	uint8_t eddbuf_entries;
	uint8_t edd_mbr_sig_buf_entries;
	uint8_t kbd_status;
	uint8_t secure_boot;
	uint8_t _pad1[2];
	uint8_t sentinel;              /* 0x1ef */
	uint8_t _pad2;
	struct setup_header hdr;       /* 0x1f1 */
	uint8_t _pad3[0x2d0 - 0x1f1 - sizeof(struct setup_header)];
	struct boot_e820 e820_table[E820_MAX]; /* 0x2d0 */
	uint8_t _pad4[0x1000 - 0x2d0 - E820_MAX * sizeof(struct boot_e820)];
} __attribute__((packed));

#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01

#define LINUX_ZERO_PAGE 0x7000
#define LINUX_CMDLINE 0x20000
#define LINUX_CMDLINE_MAX 0x10000

/* Where mb_linux_load put things. */
struct mb_linux_layout {
	uint64_t load;       /* protected-mode kernel (setup excluded) */
	uint64_t kernel_size;
	uint64_t runtime;    /* where the kernel decompresses itself */
	uint64_t init_size;
	uint64_t initrd, initrd_size;
	uint64_t cmdline;    /* address; cmdline_len excludes the NUL */
	uint64_t cmdline_len;
	uint64_t zero_page;
	uint64_t entry;      /* 64-bit entry: load + 0x200 */
};

/* Check a bzImage's setup header. buf holds the first len bytes of a file
 * of file_size bytes (len >= min(file_size, 0x10000) is enough); name is
 * used in messages. */
int mb_bzimage_parse(const uint8_t *buf, size_t len, uint64_t file_size,
		     const char *name, struct mb_bzimage_info *out);
/* Fill the 4 KiB zero page: setup header copied from the image (setup, of
 * setup_len bytes), then what the loader writes (boot.rst, "Details of
 * Header Fields", "write" fields) and the e820 map. */
int mb_linux_zeropage(const struct mb_mem *mem, const uint8_t *setup,
		      size_t setup_len, const struct mb_linux_layout *lay,
		      const struct mb_range *res, size_t nres,
		      struct boot_params *zp);
/* Load kernel, initrd, command line and zero page into mem. */
int mb_linux_load(struct mb_mem *mem, const struct mb_linux_config *cfg,
		  struct mb_linux_layout *lay);

/* ---- PVH (boot_pvh.c) --------------------------------------------------- */

#define MB_PVH_MAGIC 0x336ec578 /* XEN_HVM_START_MAGIC_VALUE */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* Where mb_pvh_load put things. */
struct mb_pvh_layout {
	uint32_t entry;      /* 32-bit protected-mode entry (physical) */
	uint64_t start_info; /* struct hvm_start_info: EBX at entry */
	uint64_t kernel_lo, kernel_hi;
	uint64_t initrd, initrd_size;
	uint64_t cmdline, cmdline_len;
	int bits; /* the kernel's ELF class: 64 for an x86-64 vmlinux */
};

/* Load an ELF kernel with a PVH entry note, the initrd (as module 0) and
 * command line, and write the start info with the memory map. */
int mb_pvh_load(struct mb_mem *mem, const struct mb_linux_config *cfg,
		struct mb_pvh_layout *lay);

/* ---- ELF (elf.c) -------------------------------------------------------- */

struct mb_elf_image {
	int bits;            /* 32 or 64 */
	uint64_t entry;      /* physical: translated through the segments */
	uint64_t lo, hi;     /* lowest and highest (exclusive) loaded address */
};

/* Is this file an ELF file (magic only)? */
int mb_elf_probe(struct mb_file *f);
/* The PVH entry from the file's Xen XEN_ELFNOTE_PHYS32_ENTRY note (a 32- or
 * 64-bit value, below 4 GiB). -ENOENT when there is none. */
int mb_elf_pvh_entry(struct mb_file *f, uint32_t *entry);
/* Load every PT_LOAD segment at p_paddr, bss zeroed. No segment may touch
 * [avoid_lo, avoid_hi) (the loader's own structures). */
int mb_elf_load(struct mb_mem *mem, struct mb_file *f, uint64_t avoid_lo,
		uint64_t avoid_hi, struct mb_elf_image *out);

/* ---- multiboot (boot_multiboot.c) --------------------------------------- */

#define MULTIBOOT_HEADER_MAGIC 0x1badb002
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2badb002
#define MULTIBOOT_SEARCH 8192
#define MULTIBOOT_INFO 0x8000
#define MULTIBOOT_INFO_END 0x9f000
#define MULTIBOOT_KERNEL_MIN 0x1000 /* IVT, BDA and the GDT at 0x500 below */

/* Multiboot Specification 0.6.96, 3.1.1 "The layout of Multiboot header". */
struct mb_multiboot_header {
	uint32_t magic, flags, checksum;
	uint32_t header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr;
	uint64_t offset; /* where in the file the header was found */
};

/* Find and check the header in the first 8192 bytes (buf, len). Returns 0,
 * -ENOENT when there is none, -EINVAL when it is unusable. */
int mb_multiboot_find(const uint8_t *buf, size_t len, const char *name,
		      struct mb_multiboot_header *out);
/* Load kernel and modules and write the information structure. */
int mb_multiboot_load(struct mb_mem *mem, const struct mb_multiboot_config *cfg,
		      uint32_t *entry, uint32_t *info);

#endif
