/* The Linux boot protocol loader on crafted bzImages (written to temp
 * files) and on the real one if `make deps` built it: header checks, where
 * things are placed, and the zero page and e820 map field by field. No KVM:
 * everything goes into a struct mb_mem. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/loader.h"

#define MiB (1ull << 20)
#define SETUP_SECTS 4
#define KSIZE 0x10000
#define IMG_SIZE ((SETUP_SECTS + 1) * 512 + KSIZE)

static char kpath[64], ipath[64];

static void put16(uint8_t *b, size_t o, uint16_t v) { mb_io_put(b + o, 2, v); }
static void put32(uint8_t *b, size_t o, uint32_t v) { mb_io_put(b + o, 4, v); }
static uint32_t rd32(const void *p) { return (uint32_t)mb_io_get(p, 4); }

/* A minimal protocol 2.15 bzImage: 4 setup sectors, a 64 KiB "kernel". */
static void make_bz(uint8_t *b)
{
	memset(b, 0, IMG_SIZE);
	b[0x1f1] = SETUP_SECTS;
	put32(b, 0x1f4, KSIZE / 16);        /* syssize */
	put16(b, 0x1fe, 0xaa55);
	b[0x200] = 0xeb, b[0x201] = 0x6a;   /* jmp: header ends at 0x26c */
	memcpy(b + 0x202, "HdrS", 4);
	put16(b, 0x206, 0x20f);
	put16(b, 0x20e, 0x300 - 0x200);     /* kernel_version */
	strcpy((char *)b + 0x300, "6.1-test (moonbox)");
	b[0x211] = LOADED_HIGH;
	put32(b, 0x22c, 0x7fffffff);        /* initrd_addr_max */
	put32(b, 0x230, 0x200000);          /* kernel_alignment */
	b[0x234] = 1;                       /* relocatable */
	put16(b, 0x236, XLF_KERNEL_64 | 2);
	put32(b, 0x238, 255);               /* cmdline_size */
	put32(b, 0x258, 0x1000000);         /* pref_address */
	put32(b, 0x260, 0x400000);          /* init_size */
	for (size_t i = 0; i < KSIZE; i++)
		b[(SETUP_SECTS + 1) * 512 + i] = (uint8_t)(i * 7 + 1);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static struct mb_mem *ram(uint64_t size)
{
	struct mb_mem *m = mb_mem_new();
	assert_non_null(m);
	assert_int_equal(mb_mem_add(m, 0, size, 0, NULL, "ram"), 0);
	return m;
}

static int setup(void **state)
{
	snprintf(kpath, sizeof kpath, "/tmp/mb-bz-%d", (int)getpid());
	snprintf(ipath, sizeof ipath, "/tmp/mb-initrd-%d", (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	unlink(kpath);
	unlink(ipath);
	return 0;
}

static void test_parse_valid(void **state)
{
	static uint8_t b[IMG_SIZE];
	struct mb_bzimage_info o;
	make_bz(b);
	write_file(kpath, b, sizeof b);
	assert_int_equal(mb_bzimage_info(kpath, &o), 0);
	assert_int_equal(o.version, 0x20f);
	assert_int_equal(o.setup_sects, 4);
	assert_int_equal(o.kernel_offset, 2560);
	assert_int_equal(o.kernel_size, KSIZE);
	assert_true(o.relocatable);
	assert_int_equal(o.pref_address, 0x1000000);
	assert_int_equal(o.init_size, 0x400000);
	assert_int_equal(o.kernel_alignment, 0x200000);
	assert_int_equal(o.cmdline_size, 255);
	assert_int_equal(o.xloadflags, 3);
	assert_int_equal(o.header_end, 0x26c);
	assert_string_equal(o.kernel_version, "6.1-test (moonbox)");

	b[0x1f1] = 0; /* boot.rst: 0 means 4 */
	assert_int_equal(mb_bzimage_parse(b, sizeof b, sizeof b, "x", &o), 0);
	assert_int_equal(o.setup_sects, 4);
}

/* Each broken field is refused with a message naming file and problem. */
static void expect_bad(uint8_t *b, size_t len, const char *want)
{
	struct mb_bzimage_info o;
	assert_int_equal(mb_bzimage_parse(b, len, len, "img", &o), -EINVAL);
	if (!strstr(mb_errmsg(), want) || !strstr(mb_errmsg(), "kernel img"))
		fail_msg("message \"%s\" lacks \"%s\"", mb_errmsg(), want);
	make_bz(b);
}

static void test_parse_refusals(void **state)
{
	static uint8_t b[IMG_SIZE];
	make_bz(b);
	expect_bad(b, 0x100, "too small");
	b[0x1fe] = 0;
	expect_bad(b, sizeof b, "boot_flag");
	b[0x203] = 'x';
	expect_bad(b, sizeof b, "HdrS");
	put16(b, 0x206, 0x205);
	expect_bad(b, sizeof b, "2.05 is too old");
	b[0x211] = 0;
	expect_bad(b, sizeof b, "LOADED_HIGH");
	put16(b, 0x236, 2);
	expect_bad(b, sizeof b, "XLF_KERNEL_64");
	put16(b, 0x206, 0x20b); /* xloadflags does not exist before 2.12 */
	expect_bad(b, sizeof b, "XLF_KERNEL_64");
	b[0x201] = 0;
	expect_bad(b, sizeof b, "setup header ends at 0x202");
	b[0x201] = 0xff;
	expect_bad(b, sizeof b, "setup header ends at 0x301");
	b[0x1f1] = 200;
	expect_bad(b, sizeof b, "setup_sects 200");
	put32(b, 0x1f4, 0);
	expect_bad(b, sizeof b, "syssize is 0");
	put32(b, 0x1f4, KSIZE / 16 + 1);
	expect_bad(b, sizeof b, "truncated");
	expect_bad(b, sizeof b - 1, "truncated"); /* file cut short */
	put32(b, 0x1f4, 0xffffffff);
	expect_bad(b, sizeof b, "truncated");
	put32(b, 0x260, KSIZE - 16);
	expect_bad(b, sizeof b, "init_size");
	put32(b, 0x230, 0x300000);
	expect_bad(b, sizeof b, "kernel_alignment 0x300000");
	put32(b, 0x230, 0);
	expect_bad(b, sizeof b, "kernel_alignment 0x0");
	b[0x234] = 0, put32(b, 0x258, 0x1000);
	expect_bad(b, sizeof b, "pref_address 0x1000");
}

static void test_missing_file(void **state)
{
	struct mb_bzimage_info o;
	assert_int_equal(mb_bzimage_info("/nonexistent/bzImage", &o), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "kernel /nonexistent/bzImage: No such file or directory");
}

static void test_load_layout(void **state)
{
	static uint8_t b[IMG_SIZE], rd[10000];
	struct mb_mem *mem = ram(64 * MiB);
	struct mb_linux_layout lay;
	make_bz(b);
	write_file(kpath, b, sizeof b);
	memset(rd, 0x5a, sizeof rd);
	write_file(ipath, rd, sizeof rd);
	struct mb_linux_config cfg = { .kernel = kpath, .initrd = ipath,
				       .cmdline = "console=ttyS0 quiet" };
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	/* relocatable, pref_address fits: loaded and run there */
	assert_int_equal(lay.load, 0x1000000);
	assert_int_equal(lay.runtime, 0x1000000);
	assert_int_equal(lay.entry, 0x1000200);
	assert_memory_equal(mb_mem_ptr(mem, 0x1000000, KSIZE, false),
			    b + 2560, KSIZE);
	/* initrd: as high as possible, page aligned */
	assert_int_equal(lay.initrd, (64 * MiB - sizeof rd) & ~0xfffull);
	assert_memory_equal(mb_mem_ptr(mem, lay.initrd, sizeof rd, false), rd,
			    sizeof rd);
	assert_string_equal(mb_mem_ptr(mem, 0x20000, 1, false),
			    "console=ttyS0 quiet");

	/* The zero page, field by field (zero-page.rst, boot.rst). */
	const uint8_t *zp = mb_mem_ptr(mem, 0x7000, 4096, false);
	for (size_t i = 0; i < 0x1e8; i++)
		assert_int_equal(zp[i], 0);
	assert_int_equal(zp[0x1ef], 0);                 /* sentinel */
	assert_int_equal(zp[0x1f1], SETUP_SECTS);
	assert_int_equal(rd32(zp + 0x1f4), KSIZE / 16);
	assert_int_equal(mb_io_get(zp + 0x1fe, 2), 0xaa55);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(mb_io_get(zp + 0x206, 2), 0x20f);
	assert_int_equal(zp[0x210], 0xff);              /* type_of_loader */
	assert_int_equal(zp[0x211], LOADED_HIGH | CAN_USE_HEAP);
	assert_int_equal(rd32(zp + 0x214), 0x1000000);  /* code32_start */
	assert_int_equal(rd32(zp + 0x218), lay.initrd); /* ramdisk_image */
	assert_int_equal(rd32(zp + 0x21c), sizeof rd);  /* ramdisk_size */
	assert_int_equal(mb_io_get(zp + 0x224, 2), 0xfe00); /* heap_end_ptr */
	assert_int_equal(rd32(zp + 0x228), 0x20000);    /* cmd_line_ptr */
	assert_int_equal(rd32(zp + 0x22c), 0x7fffffff);
	assert_int_equal(rd32(zp + 0x238), 255);
	assert_int_equal(rd32(zp + 0x260), 0x400000);
	for (size_t i = 0x26c; i < 0x2d0; i++)
		assert_int_equal(zp[i], 0);
	assert_int_equal(zp[0x1e8], 3);                 /* e820_entries */
	static const struct { uint64_t a, s; uint32_t t; } want[] = {
		{ 0, 0x9fc00, 1 }, { 0x9fc00, 0x60400, 2 },
		{ 0x100000, 63 * MiB, 1 } };
	for (int i = 0; i < 3; i++) {
		const uint8_t *e = zp + 0x2d0 + i * 20;
		assert_int_equal(mb_io_get(e, 8), want[i].a);
		assert_int_equal(mb_io_get(e + 8, 8), want[i].s);
		assert_int_equal(rd32(e + 16), want[i].t);
	}
	for (size_t i = 0x2d0 + 3 * 20; i < 4096; i++)
		assert_int_equal(zp[i], 0);
	mb_mem_free(mem);
}

static void test_relocate_and_fixed(void **state)
{
	static uint8_t b[IMG_SIZE];
	struct mb_mem *mem = ram(16 * MiB);
	struct mb_linux_layout lay;
	struct mb_linux_config cfg = { .kernel = kpath };
	make_bz(b);
	write_file(kpath, b, sizeof b);
	/* pref_address 16M does not fit: lowest aligned address above 1M */
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.load, 2 * MiB);
	assert_int_equal(lay.entry, 2 * MiB + 0x200);
	assert_int_equal(lay.initrd_size, 0);
	assert_int_equal(rd32((uint8_t *)mb_mem_ptr(mem, 0x7218, 4, false)), 0);
	/* not relocatable: loaded at 1M, needs RAM at pref_address */
	b[0x234] = 0;
	write_file(kpath, b, sizeof b);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -ENOMEM);
	assert_non_null(strstr(mb_errmsg(), "not relocatable"));
	assert_non_null(strstr(mb_errmsg(), "0x1000000-0x1400000"));
	mb_mem_free(mem);
	mem = ram(32 * MiB);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.load, MiB);
	assert_int_equal(lay.runtime, 16 * MiB);
	assert_int_equal(lay.entry, MiB + 0x200);
	/* init_size larger than RAM */
	b[0x234] = 1, put32(b, 0x260, 0x7000000);
	write_file(kpath, b, sizeof b);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -ENOMEM);
	assert_non_null(strstr(mb_errmsg(), "init_size"));
	mb_mem_free(mem);
}

static void test_cmdline_limits(void **state)
{
	static uint8_t b[IMG_SIZE];
	char line[300];
	struct mb_mem *mem = ram(64 * MiB);
	struct mb_linux_layout lay;
	struct mb_linux_config cfg = { .kernel = kpath, .cmdline = line };
	make_bz(b);
	write_file(kpath, b, sizeof b);
	memset(line, 'a', 255), line[255] = 0; /* cmdline_size excludes NUL */
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.cmdline_len, 255);
	assert_int_equal(strlen(mb_mem_ptr(mem, 0x20000, 1, false)), 255);
	memset(line, 'b', 256), line[256] = 0;
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -E2BIG);
	assert_string_equal(mb_errmsg(), "cmdline: 256 bytes is longer than the "
			    "kernel's cmdline_size (255)");
	mb_mem_free(mem);
}

static void test_initrd_placement(void **state)
{
	static uint8_t b[IMG_SIZE];
	struct mb_mem *mem = ram(32 * MiB);
	struct mb_linux_layout lay;
	struct mb_linux_config cfg = { .kernel = kpath, .initrd = ipath };
	make_bz(b);
	write_file(kpath, b, sizeof b);
	/* 14M does not fit above the kernel (16M-20M): goes below it */
	FILE *f = fopen(ipath, "wb");
	fclose(f);
	assert_int_equal(truncate(ipath, 14 * MiB), 0);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.load, 16 * MiB);
	assert_int_equal(lay.initrd, 2 * MiB);
	/* initrd_addr_max caps the end: 1 MiB below 24 MiB */
	assert_int_equal(truncate(ipath, MiB), 0);
	put32(b, 0x22c, 24 * MiB - 1);
	write_file(kpath, b, sizeof b);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.initrd, 23 * MiB);
	/* larger than RAM */
	assert_int_equal(truncate(ipath, 33 * MiB), 0);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -EFBIG);
	assert_non_null(strstr(mb_errmsg(), ipath));
	assert_non_null(strstr(mb_errmsg(), "larger than the machine's RAM"));
	/* fits in RAM but nowhere next to the kernel */
	assert_int_equal(truncate(ipath, 20 * MiB), 0);
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -ENOMEM);
	assert_non_null(strstr(mb_errmsg(), "no room"));
	/* missing */
	cfg.initrd = "/nonexistent/initrd";
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "initrd /nonexistent/initrd: No such file or directory");
	mb_mem_free(mem);
}

static void test_e820(void **state)
{
	struct mb_mem *mem = mb_mem_new();
	static uint8_t rom[0x40000];
	struct mb_e820 e[E820_MAX];
	assert_int_equal(mb_mem_add(mem, 0, 0xa0000, 0, NULL, "low"), 0);
	assert_int_equal(mb_mem_add(mem, MiB, 63 * MiB, 0, NULL, "high"), 0);
	assert_int_equal(mb_mem_add(mem, 0xfffc0000, sizeof rom, MB_MEM_READONLY,
				    rom, "bios"), 0);
	struct mb_range res[] = { { 0xd0000000, 0x1000 },    /* MMIO window */
				  { 32 * MiB, MiB } };        /* inside RAM */
	int n = mb_e820_build(mem, res, 2, e, E820_MAX);
	static const struct mb_e820 want[] = {
		{ 0, 0x9fc00, 1 },           { 0x9fc00, 0x400, 2 },
		{ MiB, 31 * MiB, 1 },        { 32 * MiB, MiB, 2 },
		{ 33 * MiB, 31 * MiB, 1 },   { 0xd0000000, 0x1000, 2 },
		{ 0xfffc0000, 0x40000, 2 },
	};
	assert_int_equal(n, 7);
	for (int i = 0; i < n; i++) {
		assert_int_equal(e[i].addr, want[i].addr);
		assert_int_equal(e[i].size, want[i].size);
		assert_int_equal(e[i].type, want[i].type);
	}
	assert_int_equal(mb_e820_build(mem, res, 2, e, 3), -ENOSPC);
	mb_mem_free(mem);
}

/* The pure zero-page builder, on a header given as bytes. */
static void test_zeropage_builder(void **state)
{
	static uint8_t b[IMG_SIZE];
	static struct boot_params zp;
	struct mb_mem *mem = ram(128 * MiB);
	struct mb_linux_layout lay = { .load = 0x1000000, .cmdline = 0x20000,
				       .initrd = 0x7000000, .initrd_size = 0x1234 };
	struct mb_range res = { 0xfec00000, 0x1000 };
	make_bz(b);
	b[0x1ef] = 0x55; /* the image's own sentinel byte is not copied */
	assert_int_equal(mb_linux_zeropage(mem, b, sizeof b, &lay, &res, 1, &zp), 0);
	assert_int_equal(zp.sentinel, 0);
	assert_int_equal(zp.hdr.version, 0x20f);
	assert_int_equal(zp.hdr.type_of_loader, 0xff);
	assert_int_equal(zp.hdr.loadflags, 0x81);
	assert_int_equal(zp.hdr.cmd_line_ptr, 0x20000);
	assert_int_equal(zp.hdr.ramdisk_image, 0x7000000);
	assert_int_equal(zp.hdr.ramdisk_size, 0x1234);
	assert_int_equal(zp.hdr.code32_start, 0x1000000);
	assert_int_equal(zp.hdr.pref_address, 0x1000000);
	assert_int_equal(zp.e820_entries, 4);
	assert_int_equal(zp.e820_table[2].addr, MiB);
	assert_int_equal(zp.e820_table[2].size, 127 * MiB);
	assert_int_equal(zp.e820_table[3].addr, 0xfec00000);
	assert_int_equal(zp.e820_table[3].type, 2);
	mb_mem_free(mem);
}

/* The kernel `make deps` builds, when present. */
static void test_real_bzimage(void **state)
{
	const char *path = getenv("MB_BZIMAGE") ? getenv("MB_BZIMAGE")
						: ".cache/guest/bzImage";
	struct mb_bzimage_info o;
	struct mb_linux_layout lay;
	if (access(path, R_OK))
		skip();
	assert_int_equal(mb_bzimage_info(path, &o), 0);
	assert_true(o.version >= 0x20f);
	assert_true(o.xloadflags & XLF_KERNEL_64);
	assert_true(o.init_size >= o.kernel_size);
	assert_true(o.kernel_offset + o.kernel_size <= 64 * MiB);
	assert_true(o.kernel_version[0] != 0);
	struct mb_mem *mem = ram(256 * MiB);
	struct mb_linux_config cfg = { .kernel = path, .cmdline = "console=ttyS0" };
	assert_int_equal(mb_linux_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.entry, lay.load + 0x200);
	const uint8_t *zp = mb_mem_ptr(mem, 0x7000, 4096, false);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(zp[0x210], 0xff);
	mb_mem_free(mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_refusals),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_load_layout),
		cmocka_unit_test(test_relocate_and_fixed),
		cmocka_unit_test(test_cmdline_limits),
		cmocka_unit_test(test_initrd_placement),
		cmocka_unit_test(test_e820),
		cmocka_unit_test(test_zeropage_builder),
		cmocka_unit_test(test_real_bzimage),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
