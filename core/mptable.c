/*
 * The Intel MultiProcessor Specification 1.4 table (chapter 4): how a
 * kernel booted with acpi=off finds the CPUs and KVM's IOAPIC. The
 * floating pointer (sec. 4.1) sits in the BIOS area Linux scans
 * (0xf0000-0xfffff); the configuration table (sec. 4.2) right after it.
 */
#include <errno.h>
#include <string.h>

#include "core/acpi.h"

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static void w16(uint8_t *p, unsigned v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void w32(uint8_t *p, uint32_t v) { w16(p, v & 0xffff), w16(p + 2, v >> 16); }

int mb_mptable_build(unsigned ncpu, uint32_t base, uint8_t *b, size_t max)
{
	/* Table 4-3 entries: 20 bytes per processor, 8 for the rest: one
	 * bus, one IOAPIC, 15 ISA interrupts, 2 local interrupts. */
	size_t cfg = 16, n = cfg + 44 + 20 * (size_t)ncpu + 8 * (1 + 1 + 15 + 2);
	if (n > max || ncpu == 0 || ncpu > 255)
		return -ENOSPC;
	memset(b, 0, n);
	uint8_t ioapic = (uint8_t)ncpu; /* unique among APIC IDs (sec. 4.3.3) */

	uint8_t *f = b; /* floating pointer structure, sec. 4.1, table 4-1 */
	memcpy(f, "_MP_", 4);
	w32(f + 4, base + (uint32_t)cfg);
	f[8] = 1;    /* length in 16-byte units */
	f[9] = 4;    /* spec revision 1.4 */
	/* feature bytes 0: a configuration table is present */
	f[10] = (uint8_t)-sum(f, 16);

	uint8_t *h = b + cfg, *e = h + 44; /* header, table 4-2 */
	memcpy(h, "PCMP", 4);
	h[6] = 4;
	memcpy(h + 8, "MOONBOX ", 8);
	memcpy(h + 16, "MOONBOX     ", 12);
	w32(h + 36, MB_LAPIC_BASE);
	unsigned count = 0;
	for (unsigned i = 0; i < ncpu; i++, e += 20, count++) {
		e[0] = 0;                       /* processor, table 4-4 */
		e[1] = (uint8_t)i;              /* local APIC ID */
		e[2] = 0x14;                    /* local APIC version */
		e[3] = (uint8_t)(1 | (i == 0) << 1); /* enabled, BSP */
		w32(e + 4, 0x600);              /* family 6 */
		w32(e + 8, 1u << 0 | 1u << 9);  /* FPU, APIC */
	}
	e[0] = 1, e[1] = 0, memcpy(e + 2, "ISA   ", 6); /* bus 0, table 4-8 */
	e += 8, count++;
	e[0] = 2, e[1] = ioapic, e[2] = 0x11, e[3] = 1; /* IOAPIC, table 4-10 */
	w32(e + 4, MB_IOAPIC_BASE);
	e += 8, count++;
	/* ISA IRQ n on IOAPIC pin n, as KVM routes them (table 4-12); IRQ 2
	 * is the cascade and reaches no pin. Flags 0: as the ISA bus says. */
	for (unsigned irq = 0; irq < 16; irq++) {
		if (irq == 2)
			continue;
		e[0] = 3, e[1] = 0, e[4] = 0, e[5] = (uint8_t)irq;
		e[6] = ioapic, e[7] = (uint8_t)irq;
		e += 8, count++;
	}
	/* Local interrupts (table 4-14): ExtINT on LINT0, NMI on LINT1. */
	e[0] = 4, e[1] = 3, e[6] = 0xff, e[7] = 0;
	e += 8, count++;
	e[0] = 4, e[1] = 1, e[6] = 0xff, e[7] = 1;
	e += 8, count++;
	w16(h + 4, (unsigned)(e - h));
	w16(h + 34, count);
	h[7] = (uint8_t)-sum(h, (size_t)(e - h));
	return (int)(e - b);
}
