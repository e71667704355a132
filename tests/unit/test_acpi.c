/* ACPI and MP table builders (core/acpi.c, core/mptable.c): checksums,
 * lengths, pointers between tables, and the AML that names the devices. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/acpi.h"

#define BASE 0xe0000u

static uint8_t buf[MB_ACPI_MAX];

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static const struct mb_acpi_table *table(const struct mb_acpi_image *img,
					 const char *sig)
{
	for (unsigned i = 0; i < img->n; i++)
		if (strcmp(img->t[i].sig, sig) == 0)
			return &img->t[i];
	return NULL;
}

static bool has(const uint8_t *p, size_t n, const void *needle, size_t k)
{
	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(p + i, needle, k) == 0)
			return true;
	return false;
}

static void test_tables(void **state)
{
	struct mb_platform_dev v[12];
	for (unsigned i = 0; i < 12; i++) /* enough to need a 2-byte PkgLength */
		v[i] = (struct mb_platform_dev){ 0xd0000000u + 0x1000 * i, 0x1000, 5 + i };
	struct mb_acpi_desc d = { .ncpu = 3, .ioapic = true, .com1 = true,
				  .fw_cfg_port = 0x510, .nvirtio = 12, .virtio = v };
	struct mb_acpi_image img;
	assert_int_equal(mb_acpi_build(&d, BASE, buf, sizeof buf, &img), 0);
	assert_int_equal(img.rsdp, BASE);
	/* RSDP: both checksums, revision 2, XSDT and RSDT addresses */
	assert_memory_equal(buf, "RSD PTR ", 8);
	assert_int_equal(sum(buf, 20), 0);
	assert_int_equal(sum(buf, 36), 0);
	assert_int_equal(buf[15], 2);
	const char *sigs[] = { "XSDT", "RSDT", "FACP", "DSDT", "APIC", "FACS" };
	for (int i = 0; i < 6; i++) {
		const struct mb_acpi_table *t = table(&img, sigs[i]);
		assert_non_null(t);
		assert_memory_equal(buf + t->off, sigs[i], 4);
		assert_int_equal(le32(buf + t->off + 4), t->len);
		if (i < 5)
			assert_int_equal(sum(buf + t->off, t->len), 0);
	}
	const struct mb_acpi_table *x = table(&img, "XSDT"), *f = table(&img, "FACP"),
				   *m = table(&img, "APIC"), *ds = table(&img, "DSDT"),
				   *fs = table(&img, "FACS");
	assert_int_equal(le32(buf + 24), BASE + x->off);
	assert_int_equal(x->len, 36 + 16);
	assert_int_equal(le32(buf + x->off + 36), BASE + f->off);
	assert_int_equal(le32(buf + x->off + 44), BASE + m->off);
	/* FADT: 276 bytes (rev 6), DSDT/FACS pointers, PM blocks, SCI */
	assert_int_equal(f->len, 276);
	assert_int_equal(le32(buf + f->off + 36), BASE + fs->off);
	assert_int_equal(le32(buf + f->off + 40), BASE + ds->off);
	assert_int_equal(le32(buf + f->off + 140), BASE + ds->off);
	assert_int_equal(fs->off % 64, 0);
	assert_int_equal(le32(buf + f->off + 56), MB_ACPI_PM_PORT);
	assert_int_equal(le32(buf + f->off + 64), MB_ACPI_PM_PORT + 4);
	assert_int_equal(buf[f->off + 46], MB_ACPI_SCI);
	assert_int_equal(le32(buf + f->off + 112) & (1u << 20), 0); /* not HW-reduced */
	/* MADT: header 44, 3 LAPICs, IOAPIC, one override, LAPIC NMI */
	assert_int_equal(m->len, 44 + 3 * 8 + 12 + 10 + 6);
	assert_int_equal(buf[m->off + 44 + 2 * 8 + 3], 2); /* third APIC ID */
	/* DSDT: the devices' ids and resources */
	const uint8_t *a = buf + ds->off;
	uint8_t pnp0501[4] = { 0x41, 0xd0, 0x05, 0x01 };
	assert_true(has(a, ds->len, pnp0501, 4));
	assert_true(has(a, ds->len, "LNRO0005", 8));
	assert_true(has(a, ds->len, "QEMU0002", 8));
	assert_true(has(a, ds->len, "VR11", 4));
	assert_true(has(a, ds->len, "_S5_", 4));
	uint8_t mem11[] = { 0x86, 9, 0, 1, 0x00, 0xb0, 0x00, 0xd0 }; /* 0xd000b000 */
	assert_true(has(a, ds->len, mem11, sizeof mem11));
	uint8_t irq16[] = { 0x89, 6, 0, 3, 1, 16, 0, 0, 0 };
	assert_true(has(a, ds->len, irq16, sizeof irq16));
	/* Scope(\_SB) holds more than 63 bytes: a 2-byte PkgLength whose
	 * value runs to the end of the table */
	const uint8_t *sc = a + 36;
	while (!(sc[0] == 0x10 && sc[3] == '\\'))
		sc++;
	assert_int_equal(sc[1] >> 6, 1);
	size_t plen = (size_t)(sc[1] & 0xf) | (size_t)sc[2] << 4;
	assert_int_equal(sc + 1 + plen, a + ds->len);
}

static void test_user_irqchip_and_space(void **state)
{
	struct mb_acpi_desc d = { .ncpu = 1 };
	struct mb_acpi_image img;
	assert_int_equal(mb_acpi_build(&d, BASE, buf, sizeof buf, &img), 0);
	assert_null(table(&img, "APIC")); /* no APIC to describe */
	assert_int_equal(le32(buf + table(&img, "XSDT")->off + 4), 36 + 8);
	assert_int_equal(mb_acpi_build(&d, BASE, buf, 200, &img), -ENOSPC);
}

static void test_mptable(void **state)
{
	uint8_t b[MB_MPTABLE_MAX];
	int n = mb_mptable_build(4, 0xf0000, b, sizeof b);
	assert_int_equal(n, 16 + 44 + 4 * 20 + 19 * 8);
	assert_memory_equal(b, "_MP_", 4);
	assert_int_equal(sum(b, 16), 0);
	assert_int_equal(le32(b + 4), 0xf0010);
	assert_memory_equal(b + 16, "PCMP", 4);
	unsigned len = b[20] | b[21] << 8;
	assert_int_equal(len, n - 16);
	assert_int_equal(sum(b + 16, len), 0);
	assert_int_equal(b[16 + 34] | b[16 + 35] << 8, 4 + 1 + 1 + 15 + 2);
	assert_int_equal(b[60 + 3], 3);      /* CPU 0: enabled, BSP */
	assert_int_equal(b[60 + 20 + 3], 1); /* CPU 1: enabled */
	assert_int_equal(mb_mptable_build(4, 0xf0000, b, 100), -ENOSPC);
	assert_int_equal(mb_mptable_build(0, 0xf0000, b, sizeof b), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tables),
		cmocka_unit_test(test_user_irqchip_and_space),
		cmocka_unit_test(test_mptable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
