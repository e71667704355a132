/* libFuzzer: the kernel loaders of core/loader.h over an untrusted image,
 * without KVM. Input: a 4-byte header, then the file(s).
 *   byte 0: bits 0-1 loader (0 bzImage, 1 multiboot, 2-3 ELF), bits 2-3 the
 *           memory layout, bit 4 an extra file (initrd / two modules) after
 *           the kernel, bit 5 two reserved ranges (16 bytes) come first,
 *           bit 6 structured: the bytes fill the fields of a well-formed
 *           skeleton header instead of being the file, bit 7 a big lazily
 *           mapped machine (RAM just below and above 4 GiB too);
 *   byte 1: command line length (short, or around the 64 KiB limit);
 *   bytes 2-3: the kernel's length when there is an extra file.
 * Files are memfds reached through /proc/self/fd; guest RAM is mostly one
 * malloc'd 16 MiB block (ASan redzones around it) cut into regions.
 * Whatever a loader accepts, what it reports placed must lie inside guest
 * RAM (checked here). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/loader.h"

#define MiB (1ull << 20)
#define RAM (16 * MiB)
#define SMALL (64 * 1024)

static uint8_t *ram, *rom, *high;
static int kfd = -1, xfd = -1;
static char kpath[64], xpath[64];
static char *cmdbuf; /* 'a's, NUL put where the length asks */

static void abort_if(int bad)
{
	if (bad)
		abort();
}

static void init(void)
{
	ram = malloc(RAM);
	rom = malloc(SMALL);
	high = malloc(SMALL);
	cmdbuf = malloc(0x10010);
	kfd = memfd_create("mb-fuzz-kernel", 0);
	xfd = memfd_create("mb-fuzz-extra", 0);
	abort_if(!ram || !rom || !high || !cmdbuf || kfd < 0 || xfd < 0);
	memset(ram, 0, RAM);
	memset(rom, 0, SMALL);
	memset(high, 0, SMALL);
	memset(cmdbuf, 'a', 0x10010);
	snprintf(kpath, sizeof kpath, "/proc/self/fd/%d", kfd);
	snprintf(xpath, sizeof xpath, "/proc/self/fd/%d", xfd);
}

static void put_file(int fd, const uint8_t *p, size_t n)
{
	abort_if(ftruncate(fd, 0) != 0);
	/* a memfd takes it all at once */
	abort_if(n && pwrite(fd, p, n, 0) != (ssize_t)n);
}

/* Guest memory layouts: one region; conventional + extended with a hole;
 * RAM plus a ROM near 4 GiB and RAM above 4 GiB; a small machine. */
static struct mb_mem *make_mem(unsigned layout)
{
	struct mb_mem *mem = mb_mem_new();
	abort_if(!mem);
	if (layout & 4) { /* RAM up to and above 4 GiB: mapped, no redzones */
		abort_if(mb_mem_add(mem, 0, 0xa0000, 0, NULL, "low") != 0);
		abort_if(mb_mem_add(mem, MiB, 31 * MiB, 0, NULL, "ext") != 0);
		abort_if(mb_mem_add(mem, 0x100000000ull - 32 * MiB, 32 * MiB, 0,
				    NULL, "below4g") != 0);
		abort_if(mb_mem_add(mem, 0x100000000ull, 32 * MiB, 0, NULL,
				    "above4g") != 0);
		return mem;
	}
	switch (layout & 3) {
	case 0:
		abort_if(mb_mem_add(mem, 0, RAM, 0, ram, "ram") != 0);
		break;
	case 1:
		abort_if(mb_mem_add(mem, 0, 0xa0000, 0, ram, "low") != 0);
		abort_if(mb_mem_add(mem, MiB, RAM - MiB, 0, ram + MiB, "high") != 0);
		break;
	case 2:
		abort_if(mb_mem_add(mem, 0, RAM, 0, ram, "ram") != 0);
		abort_if(mb_mem_add(mem, 0x100000000ull - SMALL, SMALL,
				    MB_MEM_READONLY, rom, "rom") != 0);
		abort_if(mb_mem_add(mem, 0x100000000ull, SMALL, 0, high,
				    "above4g") != 0);
		break;
	default:
		abort_if(mb_mem_add(mem, 0, 2 * MiB, 0, ram, "small") != 0);
		break;
	}
	return mem;
}

/* [a, a+n) must be guest RAM (n == 0: nothing to check). */
static void check_in_ram(struct mb_mem *mem, uint64_t a, uint64_t n)
{
	if (n)
		abort_if(!mb_mem_ptr(mem, a, n, false));
}

static void fuzz_linux(struct mb_mem *mem, const uint8_t *k, size_t klen,
		       bool initrd, const char *cmdline, const uint8_t *rb)
{
	struct mb_bzimage_info bz;
	/* The parser on the buffer as it is, then the whole loader. */
	if (mb_bzimage_parse(k, klen, klen, "fuzz", &bz) == 0) {
		abort_if(bz.kernel_offset + bz.kernel_size > klen);
		abort_if(memchr(bz.kernel_version, 0, sizeof bz.kernel_version) == NULL);
	}
	struct mb_range res[2];
	size_t nres = 0;
	if (rb) { /* two reserved ranges from 16 input bytes */
		for (unsigned i = 0; i < 2; i++) {
			res[i].base = (uint64_t)mb_io_get(rb + 8 * i, 4) << 8;
			res[i].size = (uint64_t)mb_io_get(rb + 8 * i + 4, 4) << 4;
		}
		nres = 2;
	}
	struct mb_linux_config cfg = { .kernel = kpath,
				       .initrd = initrd ? xpath : NULL,
				       .cmdline = cmdline, .reserved = nres ? res : NULL,
				       .nreserved = nres };
	struct mb_linux_layout lay;
	if (mb_linux_load(mem, &cfg, &lay) == 0) {
		check_in_ram(mem, lay.load, lay.kernel_size);
		check_in_ram(mem, lay.runtime, lay.init_size);
		check_in_ram(mem, lay.initrd, lay.initrd_size);
		check_in_ram(mem, lay.cmdline, lay.cmdline_len + 1);
		check_in_ram(mem, lay.zero_page, sizeof(struct boot_params));
		const struct boot_params *zp =
			mb_mem_ptr(mem, lay.zero_page, sizeof *zp, false);
		abort_if(zp->e820_entries > E820_MAX);
		/* initrd clear of the kernel's footprint */
		if (lay.initrd_size) {
			uint64_t klo = lay.load < lay.runtime ? lay.load : lay.runtime;
			uint64_t khi = lay.load + lay.kernel_size;
			if (lay.runtime + lay.init_size > khi)
				khi = lay.runtime + lay.init_size;
			abort_if(lay.initrd < khi && klo < lay.initrd + lay.initrd_size);
		}
	}
	/* The map on its own, with the same ranges. */
	struct mb_e820 map[E820_MAX];
	int n = mb_e820_build(mem, nres ? res : NULL, nres, map, E820_MAX);
	abort_if(n > E820_MAX);
	for (int i = 1; i < n; i++)
		abort_if(map[i - 1].addr > map[i].addr);
}

static void fuzz_multiboot(struct mb_mem *mem, const uint8_t *k, size_t klen,
			   bool module, const char *cmdline)
{
	struct mb_multiboot_header h;
	if (mb_multiboot_find(k, klen, "fuzz", &h) == 0)
		abort_if(h.offset + 12 > klen || h.offset % 4);
	struct mb_multiboot_module mods[2] = { { xpath, cmdline }, { xpath, NULL } };
	struct mb_multiboot_config cfg = { kpath, cmdline, mods,
					   module ? 2 : 0 };
	uint32_t entry, info;
	if (mb_multiboot_load(mem, &cfg, &entry, &info) == 0) {
		check_in_ram(mem, info, 128);
		/* the module list the loader wrote must point at RAM */
		const uint8_t *ib = mb_mem_ptr(mem, info, 128, false);
		uint32_t n = (uint32_t)mb_io_get(ib + 20, 4);
		uint32_t at = (uint32_t)mb_io_get(ib + 24, 4);
		abort_if(n != cfg.nmodules);
		for (uint32_t i = 0; i < n; i++) {
			const uint8_t *e = mb_mem_ptr(mem, at + 16 * i, 16, false);
			abort_if(!e);
			uint32_t s = (uint32_t)mb_io_get(e, 4);
			uint32_t t = (uint32_t)mb_io_get(e + 4, 4);
			abort_if(t < s);
			check_in_ram(mem, s, t - s);
		}
	}
}

static void fuzz_elf(struct mb_mem *mem, size_t klen, unsigned knob)
{
	struct mb_file f = { kfd, klen, kpath, "kernel" };
	struct mb_elf_image im;
	/* the loader areas of mb_load_elf and of the multiboot loader */
	uint64_t lo = knob & 1 ? 0 : 0x500, hi = knob & 1 ? MiB : 0x7000;
	(void)mb_elf_probe(&f);
	if (mb_elf_load(mem, &f, lo, hi, &im) == 0) {
		abort_if(im.bits != 32 && im.bits != 64);
		abort_if(im.lo > im.hi);
	}
}

/* ---- structured inputs --------------------------------------------------
 * Random bytes rarely get past the magic numbers and checksums, so in
 * structured mode the input supplies the header fields and the harness
 * writes a well-formed skeleton around them (still free to be wrong in
 * every field a loader has to check). */

struct src {
	const uint8_t *p;
	size_t n;
};

static uint32_t take(struct src *s, unsigned bytes)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < bytes; i++) {
		uint8_t b = 0;
		if (s->n)
			b = *s->p++, s->n--;
		v |= (uint32_t)b << (8 * i);
	}
	return v;
}

#define IMG_MAX (256 * 1024)
static uint8_t img[IMG_MAX];

/* The rest of the input as file contents (repeated), after `at`. */
static void fill(struct src *s, size_t at, size_t len)
{
	if (!s->n) {
		if (at < len)
			memset(img + at, 0x90, len - at);
		return;
	}
	for (size_t i = at; i < len;) { /* memcpy: the loop is instrumented */
		size_t n = len - i < s->n ? len - i : s->n;
		memcpy(img + i, s->p, n);
		i += n;
	}
}

static void p16(size_t at, uint32_t v) { mb_io_put(img + at, 2, v); }
static void p32(size_t at, uint32_t v) { mb_io_put(img + at, 4, v); }
static void p64(size_t at, uint64_t v) { mb_io_put(img + at, 8, v); }

/* An address: mostly in or near guest RAM above 1 MiB, sometimes raw. */
static uint64_t addr(struct src *s)
{
	uint32_t sel = take(s, 1), v = take(s, 4);
	switch (sel % 5) {
	case 0: return MiB + (v % (16 * MiB));
	case 1: return MiB + (v % (16 * MiB) & ~0xfffu);
	case 2: return v % (2 * MiB);
	case 3: return v;
	default: return (uint64_t)take(s, 4) << 32 | v;
	}
}

static size_t build_bzimage(struct src *s)
{
	unsigned sects = take(s, 1) % 8, real = sects ? sects : 4;
	uint32_t ksize = (take(s, 2) % 256 + 1) * 16;
	size_t off = (size_t)(real + 1) * 512, len = off + ksize;
	memset(img, 0, off);
	img[0x1f1] = (uint8_t)sects;
	p32(0x1f4, ksize / 16);
	p16(0x1fe, 0xaa55);
	img[0x201] = (uint8_t)(0x66 + take(s, 1) % 0x30);
	memcpy(img + 0x202, "HdrS", 4);
	p16(0x206, 0x206 + take(s, 1) % 16);
	p16(0x20e, take(s, 2) % 0x1000);
	img[0x211] = (uint8_t)(take(s, 1) | 1);
	p32(0x22c, take(s, 4));                     /* initrd_addr_max */
	uint32_t al = take(s, 1);
	p32(0x230, al & 0x80 ? take(s, 4) : 1u << (al % 32));
	img[0x234] = (uint8_t)(take(s, 1) & 1);     /* relocatable */
	p16(0x236, take(s, 2) | 1);                 /* xloadflags */
	p32(0x238, take(s, 1) & 1 ? take(s, 4) : take(s, 1)); /* cmdline_size */
	p64(0x258, addr(s));                        /* pref_address */
	uint32_t extra = take(s, 4);
	p32(0x260, extra & 1 ? extra : ksize + extra % (24 * MiB)); /* init_size */
	for (size_t i = 0x268; i < 0x290; i++)
		img[i] = (uint8_t)take(s, 1);
	fill(s, 0x290, off);
	fill(s, off, len);
	uint32_t cut = take(s, 1);
	if (cut < 16) /* truncated file */
		len -= cut * 16 + 1;
	return len;
}

static size_t build_elf(struct src *s, size_t minlen)
{
	bool e64 = take(s, 1) & 1;
	unsigned ehs = e64 ? 64 : 52, phs = e64 ? 56 : 32;
	unsigned phnum = take(s, 1) % 5 + 1;
	size_t phoff = ehs, len = ehs + phnum * phs + take(s, 2) % 0x4000;
	if (len < minlen)
		len = minlen;
	memset(img, 0, len);
	memcpy(img, "\177ELF", 4);
	img[4] = e64 ? 2 : 1;
	img[5] = 1;
	img[6] = 1;
	p16(16, 2);                                 /* ET_EXEC */
	p16(18, e64 ? 62 : 3);
	uint64_t entry = addr(s);
	if (e64) {
		p64(24, entry);
		p64(32, phoff);
		p16(52, 64);
		p16(54, 56);
		p16(56, phnum);
	} else {
		p32(24, (uint32_t)entry);
		p32(28, (uint32_t)phoff);
		p16(40, 52);
		p16(42, 32);
		p16(44, phnum);
	}
	for (unsigned i = 0; i < phnum; i++) {
		size_t at = phoff + i * phs;
		uint32_t type = take(s, 1) % 4 ? 1 : take(s, 1); /* PT_LOAD */
		uint64_t foff = take(s, 2) % len, filesz = take(s, 2) % 0x2000;
		uint64_t memsz = filesz + (take(s, 1) & 1 ? take(s, 2) : 0);
		uint64_t pa = addr(s), va = take(s, 1) & 1 ? pa : pa + 0xc0000000u;
		if (take(s, 1) == 0xff) /* the rare absurd size */
			memsz = (uint64_t)take(s, 4) << 32 | take(s, 4);
		if (e64) {
			p32(at, type);
			p64(at + 8, foff);
			p64(at + 16, va);
			p64(at + 24, pa);
			p64(at + 32, filesz);
			p64(at + 40, memsz);
		} else {
			p32(at, type);
			p32(at + 4, (uint32_t)foff);
			p32(at + 8, (uint32_t)va);
			p32(at + 12, (uint32_t)pa);
			p32(at + 16, (uint32_t)filesz);
			p32(at + 20, (uint32_t)memsz);
		}
	}
	fill(s, phoff + phnum * phs, len);
	return len;
}

/* A multiboot header at a 4-aligned offset: the a.out kludge in a flat
 * file, or (flag 16 clear) inside an ELF kernel. */
static size_t build_multiboot(struct src *s)
{
	bool aout = take(s, 1) & 1;
	size_t len, hoff;
	uint32_t flags = take(s, 1) & 7;
	if (aout) {
		hoff = (take(s, 2) % 2048) * 4;
		len = hoff + 48 + take(s, 2) % 0x8000;
		memset(img, 0, len);
		fill(s, 0, len);
		flags |= 1u << 16;
	} else {
		len = build_elf(s, 0x400);
		hoff = 0x200 + 4 * (take(s, 1) % 64); /* after the headers, mostly */
		if (len < hoff + 48) {
			memset(img + len, 0, hoff + 48 - len);
			len = hoff + 48;
		}
	}
	uint32_t odd = take(s, 1);
	if (odd == 0xfc) /* a flat file without the address fields */
		flags &= ~(1u << 16);
	if (odd == 0xfe)
		flags |= take(s, 4); /* unknown requirements */
	uint32_t sum = (uint32_t)-(MULTIBOOT_HEADER_MAGIC + flags);
	if (odd == 0xfd)
		sum++;
	p32(hoff, MULTIBOOT_HEADER_MAGIC);
	p32(hoff + 4, flags);
	p32(hoff + 8, sum);
	uint32_t load = (uint32_t)addr(s);
	uint32_t hdr = load + take(s, 2) % (uint32_t)(hoff + 64);
	uint32_t lend = take(s, 1) & 1 ? 0 : load + take(s, 2);
	uint32_t bend = take(s, 1) & 1 ? 0 : lend + take(s, 2) - 0x100;
	uint32_t entry = load + take(s, 2) - 0x10;
	p32(hoff + 12, hdr);
	p32(hoff + 16, load);
	p32(hoff + 20, lend);
	p32(hoff + 24, bend);
	p32(hoff + 28, entry);
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ram)
		init();
	if (size < 4)
		return 0;
	unsigned which = data[0] & 3, layout = (data[0] >> 2 & 3) | (data[0] >> 5 & 4);
	bool extra = data[0] & 0x10, reserve = data[0] & 0x20;
	bool structured = data[0] & 0x40;
	unsigned clen = data[1];
	uint16_t split = (uint16_t)mb_io_get(data + 2, 2);
	data += 4, size -= 4;
	/* Command line: short, or around the 64 KiB limit. */
	size_t cl = clen < 240 ? clen : 0x10000 - 8 + (clen - 240);
	cmdbuf[cl] = 0;
	const uint8_t *rb = NULL;
	if (reserve && size >= 16) {
		rb = data;
		data += 16, size -= 16;
	}
	size_t klen = size, xlen = 0;
	if (extra) { /* the tail is the initrd/module */
		klen = split < size ? split : size;
		xlen = size - klen;
	}
	put_file(xfd, data + klen, xlen);
	if (structured) {
		struct src in = { data, klen };
		klen = which == 0 ? build_bzimage(&in) :
		       which == 1 ? build_multiboot(&in) : build_elf(&in, 0);
		data = img;
	}
	put_file(kfd, data, klen);

	struct mb_mem *mem = make_mem(layout);
	switch (which) {
	case 0:
		fuzz_linux(mem, data, klen, extra, cmdbuf, rb);
		break;
	case 1:
		fuzz_multiboot(mem, data, klen, extra, cmdbuf);
		break;
	default:
		fuzz_elf(mem, klen, clen);
		break;
	}
	mb_mem_free(mem);
	cmdbuf[cl] = 'a';
	return 0;
}
