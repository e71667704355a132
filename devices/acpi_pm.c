/*
 * ACPI PM1a event and control blocks (ACPI 6.4, sec. 4.8.3.1 and 4.8.3.2)
 * for the full FADT acpi.c writes: PM1_STS (write 1 to clear) and PM1_EN
 * at offsets 0 and 2, PM1_CNT at 4. There are no fixed events to raise
 * (no PM timer, buttons are absent), so the SCI is never asserted. Setting
 * SLP_EN with SLP_TYP = \_S5's value is the OS asking for soft-off (sec.
 * 7.4.2.5, 16.1.6): the sleep callback ends the run.
 */
#include <stdlib.h>
#include <string.h>

#include "devices/acpi_pm.h"

#define SCI_EN 0x0001u  /* PM1_CNT: always in ACPI mode (no SMI_CMD) */
#define SLP_EN 0x2000u
#define SLP_TYP(v) ((v) >> 10 & 7)

static void pm_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_acpi_pm *p = dev;
	uint8_t r[6];
	uint16_t cnt = (uint16_t)(p->cnt | SCI_EN);
	r[0] = (uint8_t)p->sts, r[1] = (uint8_t)(p->sts >> 8);
	r[2] = (uint8_t)p->en, r[3] = (uint8_t)(p->en >> 8);
	r[4] = (uint8_t)cnt, r[5] = (uint8_t)(cnt >> 8);
	uint8_t *d = data;
	for (unsigned i = 0; i < size; i++)
		d[i] = off + i < sizeof r ? r[off + i] : 0xff;
}

static void pm_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_acpi_pm *p = dev;
	const uint8_t *d = data;
	for (unsigned i = 0; i < size && off + i < 6; i++) {
		unsigned at = (unsigned)(off + i), sh = at % 2 * 8;
		uint16_t v = (uint16_t)(d[i] << sh), mask = (uint16_t)(0xff << sh);
		if (at < 2)
			p->sts &= (uint16_t)~v; /* write 1 to clear */
		else if (at < 4)
			p->en = (uint16_t)((p->en & ~mask) | v);
		else /* SLP_EN is write-only: it reads 0 */
			p->cnt = (uint16_t)((p->cnt & ~mask) | v);
	}
	if (off + size > 4 && (p->cnt & SLP_EN)) {
		unsigned typ = SLP_TYP(p->cnt);
		p->cnt &= (uint16_t)~SLP_EN;
		if (p->sleep)
			p->sleep(p->opaque, typ);
	}
}

const struct mb_io_ops mb_acpi_pm_ops = { pm_read, pm_write };
