/* The multiboot loader without KVM: header search and checks, the a.out
 * kludge, ELF kernels, module placement and the information structure
 * (Multiboot Specification 0.6.96, 3.1 and 3.3) read back field by field. */
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

static char kpath[64], m1path[64], m2path[64];
static uint8_t img[0x3000];
static struct mb_mem *mem;

static void put32(uint8_t *p, uint32_t v) { mb_io_put(p, 4, v); }
static uint32_t rd32(uint32_t gpa)
{
	return (uint32_t)mb_io_get(mb_mem_ptr(mem, gpa, 4, false), 4);
}
static uint64_t rd64(uint32_t gpa)
{
	return mb_io_get(mb_mem_ptr(mem, gpa, 8, false), 8);
}
static const char *str(uint32_t gpa) { return mb_mem_ptr(mem, gpa, 1, false); }

static void header(uint8_t *p, uint32_t flags)
{
	put32(p, MULTIBOOT_HEADER_MAGIC);
	put32(p + 4, flags);
	put32(p + 8, (uint32_t)-(MULTIBOOT_HEADER_MAGIC + flags));
}

/* a.out kludge kernel: 0x20 bytes of code, the header at 0x20, data. */
static void make_aout(size_t len, uint32_t load_end, uint32_t bss_end)
{
	memset(img, 0, sizeof img);
	for (size_t i = 0; i < len; i++)
		img[i] = (uint8_t)(i + 3);
	header(img + 0x20, 1u << 16 | 3);
	put32(img + 0x2c, 0x100020);   /* header_addr */
	put32(img + 0x30, 0x100000);   /* load_addr */
	put32(img + 0x34, load_end);
	put32(img + 0x38, bss_end);
	put32(img + 0x3c, 0x100000);   /* entry_addr */
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

static int setup(void **state)
{
	int pid = (int)getpid();
	snprintf(kpath, sizeof kpath, "/tmp/mb-mbk-%d", pid);
	snprintf(m1path, sizeof m1path, "/tmp/mb-mod1-%d", pid);
	snprintf(m2path, sizeof m2path, "/tmp/mb-mod2-%d", pid);
	write_file(m1path, "first module", 12);
	write_file(m2path, "second", 6);
	return 0;
}

static int teardown(void **state)
{
	unlink(kpath), unlink(m1path), unlink(m2path);
	return 0;
}

static int fresh(void **state)
{
	mem = mb_mem_new();
	return mem && !mb_mem_add(mem, 0, 16 * MiB, 0, NULL, "ram") ? 0 : -1;
}

static int release(void **state)
{
	mb_mem_free(mem);
	return 0;
}

static void test_find(void **state)
{
	static uint8_t b[MULTIBOOT_SEARCH + 64];
	struct mb_multiboot_header h;
	memset(b, 0, sizeof b);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "kernel k: no multiboot header in the first 8192 bytes");
	header(b + 4096 + 4, 3);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), 0);
	assert_int_equal(h.offset, 4100);
	assert_int_equal(h.flags, 3);
	/* must be 4-aligned */
	memset(b, 0, sizeof b), header(b + 4098, 3);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -ENOENT);
	/* entirely within the first 8192 bytes */
	memset(b, 0, sizeof b), header(b + 8192, 3);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -ENOENT);
	memset(b, 0, sizeof b), header(b + 8180, 1u << 16);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "cut off"));
	/* bad checksum, alone, then followed by a good header */
	memset(b, 0, sizeof b), header(b + 16, 3), b[24]++;
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -EINVAL);
	assert_string_equal(mb_errmsg(), "kernel k: multiboot header at offset 16 "
			    "has a bad checksum");
	header(b + 64, 0);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), 0);
	assert_int_equal(h.offset, 64);
	/* required flags: 0-2 understood, 3-15 refused, 16-31 optional */
	memset(b, 0, sizeof b), header(b, 1u << 3);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "unknown required bits 0x0008"));
	header(b, 7 | 1u << 20);
	assert_int_equal(mb_multiboot_find(b, sizeof b, "k", &h), 0);
	/* a short file */
	assert_int_equal(mb_multiboot_find(b, 8, "k", &h), -ENOENT);
}

static void test_aout(void **state)
{
	uint32_t entry, info;
	struct mb_multiboot_config cfg = { .kernel = kpath };
	make_aout(0x200, 0, 0x101000);
	write_file(kpath, img, 0x200);
	uint8_t *k = mb_mem_ptr(mem, 0x100000, 0x1000, true);
	memset(k, 0xff, 0x1000);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(entry, 0x100000);
	assert_int_equal(info, MULTIBOOT_INFO);
	assert_memory_equal(k, img, 0x200);
	for (int i = 0x200; i < 0x1000; i++) /* bss */
		assert_int_equal(k[i], 0);

	/* load_end_addr: only the text and data */
	memset(k, 0xff, 0x1000);
	make_aout(0x200, 0x100100, 0);
	write_file(kpath, img, 0x200);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_memory_equal(k, img, 0x100);
	assert_int_equal(k[0x100], 0xff);

	/* header not at the start of the text: file offset = header offset -
	 * (header_addr - load_addr), 3.1.3 */
	make_aout(0x200, 0, 0);
	put32(img + 0x2c, 0x100010);
	write_file(kpath, img, 0x200);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_memory_equal(k, img + 0x10, 0x1f0);
}

static void aout_refused(uint32_t field, uint32_t v, size_t len,
			 const char *want)
{
	uint32_t entry, info;
	struct mb_multiboot_config cfg = { .kernel = kpath };
	make_aout(0x200, 0, 0);
	if (field)
		put32(img + field, v);
	write_file(kpath, img, len);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), -EINVAL);
	if (!strstr(mb_errmsg(), want) || !strstr(mb_errmsg(), kpath))
		fail_msg("message \"%s\" lacks \"%s\"", mb_errmsg(), want);
}

static void test_aout_refusals(void **state)
{
	aout_refused(0x30, 0x100040, 0x200, "above header_addr");
	aout_refused(0x2c, 0x100100, 0x200, "before the file");
	aout_refused(0x34, 0x100400, 0x200, "truncated");
	aout_refused(0x34, 0xfff00, 0x200, "below load_addr");
	aout_refused(0x38, 0x100100, 0x200, "bss_end_addr");
	aout_refused(0x3c, 0x100200, 0x200, "entry_addr 0x100200 is outside");
	/* in the first page (IVT, the GDT at 0x500) */
	make_aout(0x200, 0, 0);
	put32(img + 0x2c, 0x820), put32(img + 0x30, 0x800);
	put32(img + 0x3c, 0x800);
	write_file(kpath, img, 0x200);
	uint32_t e, i;
	struct mb_multiboot_config cfg = { .kernel = kpath };
	assert_int_equal(mb_multiboot_load(mem, &cfg, &e, &i), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "first page"));
	/* past the end of RAM */
	make_aout(0x200, 0, 0);
	put32(img + 0x2c, 0xfffff20), put32(img + 0x30, 0xfffff00);
	put32(img + 0x3c, 0xfffff00);
	write_file(kpath, img, 0x200);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &e, &i), -EFAULT);
	/* no address fields and not ELF */
	memset(img, 0, 64), header(img + 8, 3);
	write_file(kpath, img, 64);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &e, &i), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "not ELF"));
}

/* An ELF32 multiboot kernel: one segment at 2 MiB with bss. */
static void test_elf_kernel(void **state)
{
	uint32_t entry, info;
	struct mb_multiboot_config cfg = { .kernel = kpath };
	memset(img, 0, sizeof img);
	memcpy(img, "\177ELF\1\1\1", 7);
	mb_io_put(img + 16, 2, 2), mb_io_put(img + 18, 2, 3);
	put32(img + 20, 1), put32(img + 24, 0x200010), put32(img + 28, 52);
	mb_io_put(img + 42, 2, 32), mb_io_put(img + 44, 2, 1);
	uint8_t *ph = img + 52;
	put32(ph, 1), put32(ph + 4, 0x1000), put32(ph + 8, 0x200000);
	put32(ph + 12, 0x200000), put32(ph + 16, 0x100), put32(ph + 20, 0x3000);
	header(img + 0x1000, 3);
	memset(img + 0x1010, 0x90, 0xf0);
	write_file(kpath, img, 0x1100);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(entry, 0x200010);
	assert_memory_equal(mb_mem_ptr(mem, 0x200000, 0x100, false), img + 0x1000,
			    0x100);
	/* modules would start after the bss: see the info test. Linked low:
	 * loads, the information moves out of the kernel's way. */
	put32(ph + 12, 0x8000), put32(img + 24, 0x8010);
	write_file(kpath, img, 0x1100);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(entry, 0x8010);
	assert_int_equal(info, MiB);
	assert_memory_equal(mb_mem_ptr(mem, 0x8000, 0x100, false), img + 0x1000,
			    0x100);
	put32(ph + 12, 0x800); /* the first page */
	write_file(kpath, img, 0x1100);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "overlaps the loader's area"));
}

/* A kernel linked at 0x8000, where the information area used to be: the
 * kernel stays intact, modules go above 1 MiB, the information after them,
 * and nothing the kernel is given points into it. */
static void test_low_kernel(void **state)
{
	uint32_t entry, info;
	struct mb_multiboot_module mods[] = { { m1path, "mod1 arg=1" } };
	struct mb_multiboot_config cfg = { .kernel = kpath, .cmdline = "low",
					   .modules = mods, .nmodules = 1 };
	make_aout(0x2000, 0, 0x8000 + 0x3000); /* 0x8000-0xb000 with bss */
	put32(img + 0x2c, 0x8020), put32(img + 0x30, 0x8000);
	put32(img + 0x3c, 0x8000);
	write_file(kpath, img, 0x2000);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(entry, 0x8000);
	assert_memory_equal(mb_mem_ptr(mem, 0x8000, 0x2000, false), img, 0x2000);
	uint32_t m = rd32(info + 24);
	assert_int_equal(rd32(m), MiB);             /* module: never below 1 MiB */
	assert_memory_equal(str(MiB), "first module", 12);
	assert_int_equal(info, MiB + 0x1000);       /* after the module */
	assert_string_equal(str(rd32(info + 16)), "low");
	assert_string_equal(str(rd32(m + 8)), "mod1 arg=1");
	uint32_t ptrs[] = { info, m, rd32(info + 16), rd32(info + 48),
			    rd32(info + 64), rd32(m + 8) };
	for (unsigned i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
		assert_true(ptrs[i] >= 0xb000);
	/* A kernel at 1 MiB still gets the information at 0x8000. */
	make_aout(0x200, 0, 0);
	write_file(kpath, img, 0x200);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(info, MULTIBOOT_INFO);
}

static void test_info(void **state)
{
	uint32_t entry, info;
	struct mb_multiboot_module mods[] = { { m1path, "mod1 arg=1" },
					      { m2path, NULL } };
	struct mb_multiboot_config cfg = { .kernel = kpath, .cmdline = "kernel -v",
					   .modules = mods, .nmodules = 2 };
	make_aout(0x200, 0, 0x102345); /* the kernel ends at 0x102345 */
	write_file(kpath, img, 0x200);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), 0);
	assert_int_equal(rd32(info), 1 | 4 | 8 | 64 | 512); /* flags */
	assert_int_equal(rd32(info + 4), 639);               /* mem_lower */
	assert_int_equal(rd32(info + 8), 15 * 1024);         /* mem_upper */
	assert_string_equal(str(rd32(info + 16)), "kernel -v");
	assert_int_equal(rd32(info + 20), 2);                /* mods_count */
	uint32_t m = rd32(info + 24);
	assert_int_equal(rd32(m), 0x103000);                 /* page-aligned */
	assert_int_equal(rd32(m + 4), 0x103000 + 12);
	assert_memory_equal(str(0x103000), "first module", 12);
	assert_string_equal(str(rd32(m + 8)), "mod1 arg=1");
	assert_int_equal(rd32(m + 12), 0);
	assert_int_equal(rd32(m + 16), 0x104000);
	assert_int_equal(rd32(m + 20), 0x104006);
	assert_memory_equal(str(0x104000), "second", 6);
	assert_string_equal(str(rd32(m + 24)), "");
	/* mmap: size (20) before each entry; mmap_length in bytes */
	assert_int_equal(rd32(info + 44), 3 * 24);
	uint32_t e = rd32(info + 48);
	static const uint64_t want[][3] = { { 0, 0x9fc00, 1 },
					    { 0x9fc00, 0x60400, 2 },
					    { MiB, 15 * MiB, 1 } };
	for (int i = 0; i < 3; i++, e += 24) {
		assert_int_equal(rd32(e), 20);
		assert_int_equal(rd64(e + 4), want[i][0]);
		assert_int_equal(rd64(e + 12), want[i][1]);
		assert_int_equal(rd32(e + 20), want[i][2]);
	}
	assert_string_equal(str(rd32(info + 64)), "moonbox");
	/* everything lies in the info area */
	assert_true(rd32(info + 16) < MULTIBOOT_INFO_END);
	assert_true(rd32(info + 64) < MULTIBOOT_INFO_END);
}

static void test_module_refusals(void **state)
{
	uint32_t entry, info;
	struct mb_multiboot_module mods[] = { { m1path, "" },
					      { "/nonexistent/mod", "" } };
	struct mb_multiboot_config cfg = { .kernel = kpath, .modules = mods,
					   .nmodules = 2 };
	make_aout(0x200, 0, 0);
	write_file(kpath, img, 0x200);
	uint8_t *k = mb_mem_ptr(mem, 0x100000, 16, true);
	memset(k, 0xee, 16);
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "module /nonexistent/mod: No such file or directory");
	assert_int_equal(k[0], 0xee); /* nothing loaded */
	/* a module that does not fit in RAM */
	char big[80];
	snprintf(big, sizeof big, "%s-big", m1path);
	write_file(big, "x", 1);
	assert_int_equal(truncate(big, 16 * MiB), 0);
	mods[1].file = big;
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), -EFAULT);
	assert_non_null(strstr(mb_errmsg(), big));
	unlink(big);
	/* the kernel itself missing */
	cfg.kernel = "/nonexistent/kernel";
	assert_int_equal(mb_multiboot_load(mem, &cfg, &entry, &info), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "kernel /nonexistent/kernel: No such file or directory");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find),
		cmocka_unit_test_setup_teardown(test_aout, fresh, release),
		cmocka_unit_test_setup_teardown(test_aout_refusals, fresh, release),
		cmocka_unit_test_setup_teardown(test_elf_kernel, fresh, release),
		cmocka_unit_test_setup_teardown(test_info, fresh, release),
		cmocka_unit_test_setup_teardown(test_low_kernel, fresh, release),
		cmocka_unit_test_setup_teardown(test_module_refusals, fresh, release),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
