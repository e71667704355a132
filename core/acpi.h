/*
 * Firmware tables a PC's BIOS would leave for the OS: ACPI (acpi.c) and the
 * Intel MultiProcessor table (mptable.c). Builders work on a buffer and a
 * plain description, so unit tests need no machine; mb_acpi_install puts
 * them into a machine's RAM for the Linux loaders.
 */
#ifndef MB_ACPI_H
#define MB_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "moonbox.h"

/* In the PC's BIOS area (e820 reserved, scanned by OSes for the RSDP and
 * the MP floating pointer): ACPI at 0xe0000, the MP table at 0xf0000. */
#define MB_ACPI_BASE 0xe0000u
#define MB_ACPI_MAX 0x10000u
#define MB_MPTABLE_BASE 0xf0000u
#define MB_MPTABLE_MAX 0x1000u

/* The ACPI PM1 blocks of the acpi_pm device (moonbox/acpi_pm.h, which
 * mb_machine_create attaches with acpi on): PM1a_EVT (status, enable: 4
 * bytes) then PM1a_CNT (2 bytes), and the SCI line. PM1_CNT (ACPI 6.4,
 * sec. 4.8.3.2.1): SLP_TYP bits 10-12, SLP_EN bit 13; \_S5 in the DSDT
 * names MB_ACPI_S5_TYP. */
#define MB_ACPI_SCI MB_ACPI_PM_SCI
#define MB_ACPI_S5_TYP MB_ACPI_PM_S5_TYP

#define MB_IOAPIC_BASE 0xfec00000u
#define MB_LAPIC_BASE 0xfee00000u

struct mb_acpi_desc {
	unsigned ncpu;
	bool ioapic;          /* KVM's irqchip: LAPICs, IOAPIC (GSI 0-23) */
	bool com1;            /* a UART at 0x3f8, IRQ 4 */
	uint16_t fw_cfg_port; /* 0: no fw_cfg device */
	unsigned nvirtio;
	const struct mb_platform_dev *virtio;
};

#define MB_ACPI_TABLES 8
struct mb_acpi_table {
	char sig[5];
	uint32_t off, len; /* from base */
};
struct mb_acpi_image {
	size_t size;     /* bytes used from base */
	uint64_t rsdp;   /* guest address of the RSDP */
	unsigned n;
	struct mb_acpi_table t[MB_ACPI_TABLES];
};

/* Build RSDP, XSDT, RSDT, FADT, FACS, DSDT and (with an IOAPIC) MADT for a
 * load at guest address base into buf (max bytes, zeroed first). */
int mb_acpi_build(const struct mb_acpi_desc *d, uint32_t base, uint8_t *buf,
		  size_t max, struct mb_acpi_image *img);

/* MP spec 1.4 floating pointer + configuration table for ncpu CPUs and
 * KVM's IOAPIC, for a load at base. Returns the size used or -ENOSPC. */
int mb_mptable_build(unsigned ncpu, uint32_t base, uint8_t *buf, size_t max);

struct mb_machine;
/* The port of machine m's fw_cfg device, 0 if it has none. */
uint16_t mb_acpi_fw_cfg_port(struct mb_machine *m);
/* The description of machine m as it stands (CPUs, irqchip, devices). */
void mb_acpi_describe(struct mb_machine *m, struct mb_acpi_desc *d);
/* For the Linux loaders: with acpi on, write the ACPI tables; with the kernel irqchip and several CPUs, write
 * the MP table. *rsdp is 0 when ACPI is off. */
int mb_acpi_install(struct mb_machine *m, uint64_t *rsdp);

#endif
