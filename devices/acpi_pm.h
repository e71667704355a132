/* The ACPI PM1 blocks behind acpi.c's FADT (see acpi_pm.c). */
#ifndef MB_ACPI_PM_H
#define MB_ACPI_PM_H

#include <stdint.h>

#include "moonbox.h"

struct mb_acpi_pm {
	uint16_t sts, en, cnt;
	/* SLP_EN was set with this SLP_TYP */
	void (*sleep)(void *opaque, unsigned typ);
	void *opaque;
};

/* Six ports: PM1a_EVT_BLK (4) then PM1a_CNT_BLK (2). */
extern const struct mb_io_ops mb_acpi_pm_ops;

#endif
