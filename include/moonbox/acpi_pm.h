/*
 * ACPI PM1a event and control blocks (ACPI 6.4, sec. 4.8.3.1, 4.8.3.2):
 * the six ports behind the full FADT the Linux loaders write when a
 * machine has acpi on. mb_machine_create attaches it to such a machine
 * (name "acpi_pm"), so it is in the inventory and in snapshots like any
 * device; its ports are fixed by the FADT.
 */
#ifndef MOONBOX_ACPI_PM_H
#define MOONBOX_ACPI_PM_H

#include "moonbox.h"

/* PM1a_EVT_BLK (PM1_STS, PM1_EN: 4 bytes) then PM1a_CNT_BLK (2 bytes),
 * the SCI line the FADT names, and \_S5's SLP_TYP in the DSDT. */
#define MB_ACPI_PM_PORT 0x600u
#define MB_ACPI_PM_LEN 6u
#define MB_ACPI_PM_SCI 9u
#define MB_ACPI_PM_S5_TYP 5u

struct mb_acpi_pm;

/* The registers as they are (SLP_EN is write-only: never set in cnt). */
#define MB_ACPI_PM_STATE(X, S) \
	X(S, u16, sts) X(S, u16, en) X(S, u16, cnt) \
	X(S, ro_u64, sleeps) /* SLP_EN writes seen */
MB_STATE_STRUCT(mb_acpi_pm_state, MB_ACPI_PM_STATE);
#define MB_ACPI_PM_STATE_VERSION 1

/* ---- in a machine ------------------------------------------------------ */

struct mb_acpi_pm_attach_config {
	const char *name; /* NULL: "acpi_pm" */
};

/* The PM blocks at MB_ACPI_PM_PORT; SLP_EN with SLP_TYP 5 (\_S5, soft
 * off) stops the machine with MB_STOP_SHUTDOWN. cfg may be NULL. */
int mb_acpi_pm_attach(struct mb_machine *m,
		      const struct mb_acpi_pm_attach_config *cfg,
		      struct mb_device **out);

/* ---- the model on its own ---------------------------------------------- */

struct mb_acpi_pm_config {
	/* The OS set SLP_EN with this SLP_TYP (sec. 7.4.2.5, 16.1.6). Runs
	 * on the thread of the access, outside the model's lock. */
	void (*sleep)(void *opaque, unsigned typ);
	void *opaque;
};

struct mb_acpi_pm *mb_acpi_pm_new(const struct mb_acpi_pm_config *cfg);
void mb_acpi_pm_free(struct mb_acpi_pm *p);
/* Save (any time) and load (guest stopped): load refuses SLP_EN in cnt
 * (-EINVAL naming the field) and takes the counter. */
void mb_acpi_pm_save(struct mb_acpi_pm *p, struct mb_acpi_pm_state *st);
int mb_acpi_pm_load(struct mb_acpi_pm *p, const struct mb_acpi_pm_state *st);

extern const struct mb_io_ops mb_acpi_pm_ops; /* 6 ports from the base */

#endif
