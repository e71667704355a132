/* The ELF loader on crafted files: valid ELF32 and ELF64, then hostile
 * headers, each refused with a message naming the file, before anything is
 * written to guest memory. */
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

struct seg {
	uint32_t type;
	uint64_t off, vaddr, paddr, filesz, memsz;
};

static char path[64];
static uint8_t img[0x4000];

static void put(uint8_t *p, unsigned n, uint64_t v) { mb_io_put(p, n, v); }

/* ELF header, program headers right after it; data is the caller's. */
static void make_elf(int bits, uint16_t machine, uint64_t entry,
		     const struct seg *s, int n)
{
	unsigned eh = bits == 32 ? 52 : 64, ph = bits == 32 ? 32 : 56;
	memset(img, 0, eh + (size_t)n * ph);
	memcpy(img, "\177ELF", 4);
	img[4] = bits == 32 ? 1 : 2, img[5] = 1, img[6] = 1;
	put(img + 16, 2, 2); /* ET_EXEC */
	put(img + 18, 2, machine);
	put(img + 20, 4, 1);
	if (bits == 32) {
		put(img + 24, 4, entry), put(img + 28, 4, eh);
		put(img + 40, 2, eh), put(img + 42, 2, ph), put(img + 44, 2, n);
	} else {
		put(img + 24, 8, entry), put(img + 32, 8, eh);
		put(img + 52, 2, eh), put(img + 54, 2, ph), put(img + 56, 2, n);
	}
	for (int i = 0; i < n; i++) {
		uint8_t *p = img + eh + i * ph;
		if (bits == 32) {
			put(p, 4, s[i].type), put(p + 4, 4, s[i].off);
			put(p + 8, 4, s[i].vaddr), put(p + 12, 4, s[i].paddr);
			put(p + 16, 4, s[i].filesz), put(p + 20, 4, s[i].memsz);
		} else {
			put(p, 4, s[i].type), put(p + 8, 8, s[i].off);
			put(p + 16, 8, s[i].vaddr), put(p + 24, 8, s[i].paddr);
			put(p + 32, 8, s[i].filesz), put(p + 40, 8, s[i].memsz);
		}
	}
}

static void write_img(size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(img, 1, len, f), len);
	fclose(f);
}

static struct mb_mem *mem;

static int setup(void **state)
{
	snprintf(path, sizeof path, "/tmp/mb-elf-%d", (int)getpid());
	mem = mb_mem_new();
	return mem && !mb_mem_add(mem, 0, 16 * MiB, 0, NULL, "ram") ? 0 : -1;
}

static int teardown(void **state)
{
	unlink(path);
	mb_mem_free(mem);
	return 0;
}

static int load(size_t len, struct mb_elf_image *out)
{
	struct mb_file f;
	write_img(len);
	assert_int_equal(mb_file_open(&f, path, "kernel"), 0);
	int rc = mb_elf_load(mem, &f, 0x500, 0x7000, out);
	mb_file_close(&f);
	return rc;
}

static void test_elf64(void **state)
{
	struct mb_elf_image o;
	struct seg s[] = {
		{ 1, 0x1000, 0x200000, 0x200000, 0x100, 0x3000 }, /* bss */
		{ 4, 0, 0, 0, 0, 0 },                              /* PT_NOTE */
		{ 1, 0x2000, 0x400000, 0x400000, 0x800, 0x800 },
	};
	make_elf(64, 62, 0x200010, s, 3);
	memset(img + 0x1000, 0xc3, 0x100);
	memset(img + 0x2000, 0x90, 0x800);
	uint8_t *bss = mb_mem_ptr(mem, 0x200100, 0x2f00, true);
	memset(bss, 0xff, 0x2f00);
	assert_int_equal(load(0x2800, &o), 0);
	assert_int_equal(o.bits, 64);
	assert_int_equal(o.entry, 0x200010);
	assert_int_equal(o.lo, 0x200000);
	assert_int_equal(o.hi, 0x400800);
	assert_memory_equal(mb_mem_ptr(mem, 0x200000, 0x100, false), img + 0x1000,
			    0x100);
	assert_memory_equal(mb_mem_ptr(mem, 0x400000, 0x800, false), img + 0x2000,
			    0x800);
	for (int i = 0; i < 0x2f00; i++)
		assert_int_equal(bss[i], 0);
}

static void test_elf32_higher_half(void **state)
{
	struct mb_elf_image o;
	/* linked at 0xc0100000, loaded at 1 MiB: enter at the physical alias */
	struct seg s[] = { { 1, 0x100, 0xc0100000, 0x100000, 0x40, 0x40 } };
	make_elf(32, 3, 0xc0100020, s, 1);
	memset(img + 0x100, 0xf4, 0x40);
	assert_int_equal(load(0x140, &o), 0);
	assert_int_equal(o.bits, 32);
	assert_int_equal(o.entry, 0x100020);
	assert_int_equal(*(uint8_t *)mb_mem_ptr(mem, 0x100000, 1, false), 0xf4);
}

/* Expect a refusal whose message names the file and contains want, with
 * the guest's RAM at 3 MiB untouched. */
static void refused(size_t len, int code, const char *want)
{
	struct mb_elf_image o;
	uint8_t *probe = mb_mem_ptr(mem, 3 * MiB, 16, true);
	memset(probe, 0xee, 16);
	assert_int_equal(load(len, &o), code);
	if (!strstr(mb_errmsg(), want) || !strstr(mb_errmsg(), path))
		fail_msg("message \"%s\" lacks \"%s\"", mb_errmsg(), want);
	for (int i = 0; i < 16; i++)
		assert_int_equal(probe[i], 0xee);
}

static void test_hostile(void **state)
{
	const struct seg ok = { 1, 0x100, 3 * MiB, 3 * MiB, 0x10, 0x10 };
	struct seg s[2] = { ok, ok };

	make_elf(64, 62, 3 * MiB, s, 1);
	refused(40, -EINVAL, "too small");
	img[1] = 'X';
	refused(0x200, -EINVAL, "bad magic");
	make_elf(64, 62, 3 * MiB, s, 1), img[4] = 3;
	refused(0x200, -EINVAL, "class 3");
	make_elf(64, 62, 3 * MiB, s, 1), img[5] = 2;
	refused(0x200, -EINVAL, "little-endian");
	make_elf(64, 3, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "machine 3");
	make_elf(32, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "machine 62");
	make_elf(64, 62, 3 * MiB, s, 1), put(img + 16, 2, 3); /* ET_DYN */
	refused(0x200, -EINVAL, "ELF type 3");
	make_elf(64, 62, 3 * MiB, s, 0);
	refused(0x200, -EINVAL, "no program headers");
	make_elf(64, 62, 3 * MiB, s, 1), put(img + 54, 2, 32);
	refused(0x200, -EINVAL, "e_phentsize 32");
	/* program headers past EOF: phoff, then a huge phnum */
	make_elf(64, 62, 3 * MiB, s, 1), put(img + 32, 8, 0x10000);
	refused(0x200, -EINVAL, "beyond the end of the file");
	make_elf(64, 62, 3 * MiB, s, 1), put(img + 32, 8, UINT64_MAX - 8);
	refused(0x200, -EINVAL, "beyond the end of the file");
	make_elf(64, 62, 3 * MiB, s, 1), put(img + 56, 2, 0xffff);
	refused(0x200, -EINVAL, "65535 program headers");
	/* segments */
	s[0].filesz = 0x20;
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "p_filesz 0x20 > p_memsz 0x10");
	s[0] = ok, s[0].off = 0x1f8;
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "beyond the end of the file");
	s[0] = ok, s[0].off = UINT64_MAX - 0x8, s[0].filesz = 0x10; /* wraps */
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "beyond the end of the file");
	s[0] = ok, s[0].paddr = UINT64_MAX - 0x8;
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "wraps around");
	s[0] = ok, s[0].paddr = 16 * MiB - 8; /* past the end of RAM */
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EFAULT, "not inside one RAM region");
	s[0] = ok, s[0].paddr = 0x6ff8; /* the page tables */
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "overlaps the loader's area");
	s[0] = ok, s[0].type = 4;
	make_elf(64, 62, 3 * MiB, s, 1);
	refused(0x200, -EINVAL, "no PT_LOAD");
	/* one bad segment after a good one: nothing loaded */
	s[0] = ok, s[1] = ok, s[1].filesz = 0x1000;
	make_elf(32, 3, 3 * MiB, s, 2);
	refused(0x200, -EINVAL, "segment 1");
	/* a program header table cut short */
	s[0] = ok;
	make_elf(32, 3, 3 * MiB, s, 2);
	refused(52 + 40, -EINVAL, "beyond the end of the file");
}

static void test_missing(void **state)
{
	struct mb_file f;
	assert_int_equal(mb_file_open(&f, "/nonexistent/k.elf", "kernel"), -ENOENT);
	assert_string_equal(mb_errmsg(),
			    "kernel /nonexistent/k.elf: No such file or directory");
	assert_int_equal(mb_file_open(&f, "/tmp", "kernel"), -EINVAL);
	assert_string_equal(mb_errmsg(), "kernel /tmp: not a regular file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_elf64),
		cmocka_unit_test(test_elf32_higher_half),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_missing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
