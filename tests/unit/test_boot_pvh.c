/* The PVH loader without KVM: the entry note, the hvm_start_info (magic,
 * version, command line, the initrd as module 0, the memory map) read back
 * from guest memory, and what it refuses. */
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

static char kpath[64], rdpath[64];
static uint8_t img[0x2000];
static struct mb_mem *mem;

static void put(uint8_t *p, uint64_t v, unsigned n) { mb_io_put(p, n, v); }
static uint64_t rd(uint64_t gpa, unsigned n)
{
	return mb_io_get(mb_mem_ptr(mem, gpa, n, false), n);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	fclose(f);
}

/* An ELF64 like a vmlinux: one PT_LOAD at 16 MiB (0x1000 bytes of file,
 * 0x3000 in memory), a PT_NOTE with a GNU note and then Xen's
 * PHYS32_ENTRY (desc_bytes 4 or 8, or 0: no Xen note). */
static size_t make_vmlinux(uint64_t entry, unsigned desc_bytes)
{
	memset(img, 0, sizeof img);
	memcpy(img, "\177ELF\2\1\1", 7);
	put(img + 16, 2, 2), put(img + 18, 62, 2), put(img + 20, 1, 4);
	put(img + 24, 0xffffffff81000000ull, 8); /* e_entry: virtual */
	put(img + 32, 64, 8);                    /* e_phoff */
	put(img + 54, 56, 2), put(img + 56, 2, 2);
	uint8_t *ph = img + 64;                  /* PT_LOAD */
	put(ph, 1, 4), put(ph + 8, 0x1000, 8);
	put(ph + 16, 0xffffffff81000000ull, 8), put(ph + 24, 16 * MiB, 8);
	put(ph + 32, 0x1000, 8), put(ph + 40, 0x3000, 8);
	ph += 56;                                /* PT_NOTE at 0x200 */
	uint8_t *n = img + 0x200;
	put(n, 4, 4), put(n + 4, 4, 4), put(n + 8, 3, 4); /* GNU build id */
	memcpy(n + 12, "GNU", 4), put(n + 16, 0xabcd, 4);
	n += 20;
	if (desc_bytes) {
		put(n, 4, 4), put(n + 4, desc_bytes, 4), put(n + 8, 18, 4);
		memcpy(n + 12, "Xen", 4);
		put(n + 16, entry, desc_bytes);
		n += 16 + desc_bytes;
	}
	put(ph, 4, 4), put(ph + 8, 0x200, 8), put(ph + 32, n - (img + 0x200), 8);
	for (int i = 0x1000; i < 0x2000; i++)
		img[i] = (uint8_t)i;
	return 0x2000;
}

static int setup(void **state)
{
	snprintf(kpath, sizeof kpath, "/tmp/mb-pvhk-%d", (int)getpid());
	snprintf(rdpath, sizeof rdpath, "/tmp/mb-pvhrd-%d", (int)getpid());
	write_file(rdpath, "initrd bytes", 12);
	mem = mb_mem_new();
	return mem && !mb_mem_add(mem, 0, 64 * MiB, 0, NULL, "ram") ? 0 : -1;
}

static int teardown(void **state)
{
	unlink(kpath), unlink(rdpath);
	mb_mem_free(mem);
	return 0;
}

static void test_note(void **state)
{
	struct mb_file f;
	uint32_t e = 0;
	write_file(kpath, img, make_vmlinux(0x1000040, 8)); /* Linux: .quad */
	assert_int_equal(mb_file_open(&f, kpath, "kernel"), 0);
	assert_int_equal(mb_elf_pvh_entry(&f, &e), 0);
	assert_int_equal(e, 0x1000040);
	mb_file_close(&f);
	write_file(kpath, img, make_vmlinux(0x1000080, 4));
	assert_int_equal(mb_file_open(&f, kpath, "kernel"), 0);
	assert_int_equal(mb_elf_pvh_entry(&f, &e), 0);
	assert_int_equal(e, 0x1000080);
	mb_file_close(&f);
	write_file(kpath, img, make_vmlinux(0, 0));
	assert_int_equal(mb_file_open(&f, kpath, "kernel"), 0);
	assert_int_equal(mb_elf_pvh_entry(&f, &e), -ENOENT);
	assert_non_null(strstr(mb_errmsg(), "CONFIG_PVH"));
	mb_file_close(&f);
	write_file(kpath, img, make_vmlinux(0x100000000ull, 8));
	assert_int_equal(mb_file_open(&f, kpath, "kernel"), 0);
	assert_int_equal(mb_elf_pvh_entry(&f, &e), -EINVAL);
	mb_file_close(&f);
	/* a note whose sizes run past its segment */
	make_vmlinux(0x1000040, 8);
	put(img + 0x200 + 4, 0x1000, 4);
	write_file(kpath, img, sizeof img);
	assert_int_equal(mb_file_open(&f, kpath, "kernel"), 0);
	assert_int_equal(mb_elf_pvh_entry(&f, &e), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "malformed"));
	mb_file_close(&f);
}

static void test_start_info(void **state)
{
	struct mb_pvh_layout lay;
	struct mb_range res[] = { { 0xd0000000, 0x1000 } };
	struct mb_linux_config cfg = { .kernel = kpath, .initrd = rdpath,
				       .cmdline = "console=ttyS0 -- true",
				       .reserved = res, .nreserved = 1 };
	write_file(kpath, img, make_vmlinux(0x1000040, 8));
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), 0);
	assert_int_equal(lay.entry, 0x1000040);
	assert_memory_equal(mb_mem_ptr(mem, 16 * MiB, 0x1000, false),
			    img + 0x1000, 0x1000);
	assert_int_equal(rd(16 * MiB + 0x1000, 8), 0); /* bss */
	uint64_t si = lay.start_info;
	assert_int_equal(rd(si, 4), 0x336ec578);
	assert_int_equal(rd(si + 4, 4), 1);
	assert_int_equal(rd(si + 12, 4), 1);       /* nr_modules */
	uint64_t cl = rd(si + 24, 8);
	assert_string_equal(mb_mem_ptr(mem, cl, 1, false), "console=ttyS0 -- true");
	uint64_t mod = rd(si + 16, 8);
	assert_int_equal(rd(mod + 8, 8), 12);      /* size */
	uint64_t at = rd(mod, 8);
	assert_int_equal(at, lay.initrd);
	assert_int_equal(at & 0xfff, 0);
	assert_true(at >= 16 * MiB + 0x3000);      /* clear of the kernel */
	assert_true(at + 12 <= 64 * MiB);
	assert_memory_equal(mb_mem_ptr(mem, at, 12, false), "initrd bytes", 12);
	/* memmap: the e820 boot_linux builds (RAM, legacy hole, RAM, the
	 * caller's reserved range) */
	assert_int_equal(rd(si + 48, 4), 4);
	uint64_t mm = rd(si + 40, 8);
	static const uint64_t want[][3] = { { 0, 0x9fc00, 1 },
					    { 0x9fc00, 0x60400, 2 },
					    { MiB, 63 * MiB, 1 },
					    { 0xd0000000, 0x1000, 2 } };
	for (int i = 0; i < 4; i++) {
		assert_int_equal(rd(mm + i * 24, 8), want[i][0]);
		assert_int_equal(rd(mm + i * 24 + 8, 8), want[i][1]);
		assert_int_equal(rd(mm + i * 24 + 16, 4), want[i][2]);
	}
	/* No initrd: no module. */
	cfg.initrd = NULL;
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), 0);
	assert_int_equal(rd(lay.start_info + 12, 4), 0);
}

static void test_refusals(void **state)
{
	struct mb_pvh_layout lay;
	struct mb_linux_config cfg = { .kernel = kpath };
	write_file(kpath, img, make_vmlinux(0, 0));
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), -ENOENT);
	write_file(kpath, img, make_vmlinux(0x2000000, 8)); /* outside */
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), -EINVAL);
	assert_non_null(strstr(mb_errmsg(), "outside the loaded image"));
	write_file(kpath, "not an elf file", 15);
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), -ENOENT);
	write_file(kpath, img, make_vmlinux(0x1000040, 8));
	char big[80];
	snprintf(big, sizeof big, "%s-big", rdpath);
	write_file(big, "x", 1);
	assert_int_equal(truncate(big, 60 * MiB), 0);
	cfg.initrd = big;
	assert_int_equal(mb_pvh_load(mem, &cfg, &lay), -ENOMEM);
	assert_non_null(strstr(mb_errmsg(), big));
	unlink(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_note),
		cmocka_unit_test(test_start_info),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
