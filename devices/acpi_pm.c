/*
 * ACPI PM1a event and control blocks (ACPI 6.4, sec. 4.8.3.1 and 4.8.3.2)
 * for the full FADT acpi.c writes: PM1_STS (write 1 to clear) and PM1_EN
 * at offsets 0 and 2, PM1_CNT at 4. There are no fixed events to raise
 * (no PM timer, buttons are absent), so the SCI is never asserted. Setting
 * SLP_EN with SLP_TYP = \_S5's value is the OS asking for soft-off (sec.
 * 7.4.2.5, 16.1.6): the sleep callback ends the run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

#define SCI_EN 0x0001u  /* PM1_CNT: always in ACPI mode (no SMI_CMD) */
#define SLP_EN 0x2000u
#define SLP_TYP(v) ((v) >> 10 & 7)

struct mb_acpi_pm {
	pthread_mutex_t lock; /* vCPUs vs. save */
	uint16_t sts, en, cnt;
	uint64_t sleeps;
	struct mb_acpi_pm_config cfg;
};

static void pm_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_acpi_pm *p = dev;
	uint8_t r[6];
	pthread_mutex_lock(&p->lock);
	uint16_t cnt = (uint16_t)(p->cnt | SCI_EN);
	r[0] = (uint8_t)p->sts, r[1] = (uint8_t)(p->sts >> 8);
	r[2] = (uint8_t)p->en, r[3] = (uint8_t)(p->en >> 8);
	pthread_mutex_unlock(&p->lock);
	r[4] = (uint8_t)cnt, r[5] = (uint8_t)(cnt >> 8);
	uint8_t *d = data;
	for (unsigned i = 0; i < size; i++)
		d[i] = off + i < sizeof r ? r[off + i] : 0xff;
}

static void pm_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_acpi_pm *p = dev;
	const uint8_t *d = data;
	bool sleep = false;
	unsigned typ = 0;
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < size && off + i < 6; i++) {
		unsigned at = (unsigned)(off + i), sh = at % 2 * 8;
		uint16_t v = (uint16_t)(d[i] << sh), mask = (uint16_t)(0xff << sh);
		if (at < 2)
			p->sts &= (uint16_t)~v; /* write 1 to clear */
		else if (at < 4)
			p->en = (uint16_t)((p->en & ~mask) | v);
		else
			p->cnt = (uint16_t)((p->cnt & ~mask) | v);
	}
	if (off + size > 4 && (p->cnt & SLP_EN)) {
		typ = SLP_TYP(p->cnt);
		p->cnt &= (uint16_t)~SLP_EN; /* write-only: it reads 0 */
		p->sleeps++;
		sleep = true;
	}
	pthread_mutex_unlock(&p->lock);
	if (sleep && p->cfg.sleep)
		p->cfg.sleep(p->cfg.opaque, typ);
}

const struct mb_io_ops mb_acpi_pm_ops = { pm_read, pm_write };

struct mb_acpi_pm *mb_acpi_pm_new(const struct mb_acpi_pm_config *cfg)
{
	struct mb_acpi_pm *p = calloc(1, sizeof *p);
	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	if (cfg)
		p->cfg = *cfg;
	return p;
}

void mb_acpi_pm_free(struct mb_acpi_pm *p)
{
	if (!p)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p);
}

MB_STATE_DESC(mb_acpi_pm_state, MB_ACPI_PM_STATE, MB_ACPI_PM_STATE_VERSION);

void mb_acpi_pm_save(struct mb_acpi_pm *p, struct mb_acpi_pm_state *st)
{
	memset(st, 0, sizeof *st);
	pthread_mutex_lock(&p->lock);
	st->sts = p->sts, st->en = p->en, st->cnt = p->cnt;
	st->sleeps = p->sleeps;
	pthread_mutex_unlock(&p->lock);
}

int mb_acpi_pm_load(struct mb_acpi_pm *p, const struct mb_acpi_pm_state *st)
{
	if (st->cnt & SLP_EN) /* a write, not a state: it never stays set */
		return mb_seterr(-EINVAL, "cnt: 0x%x has SLP_EN (0x%x) set",
				 st->cnt, SLP_EN);
	pthread_mutex_lock(&p->lock);
	p->sts = st->sts, p->en = st->en, p->cnt = st->cnt;
	p->sleeps = st->sleeps;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* ---- in a machine ---- */

static void pm_sleep(void *opaque, unsigned typ)
{
	if (typ == MB_ACPI_PM_S5_TYP)
		mb_machine_stop(opaque, MB_STOP_SHUTDOWN, 0,
				"guest powered off (ACPI S5)");
}

static int dev_save(void *impl, void *st)
{
	mb_acpi_pm_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_acpi_pm_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_acpi_pm_free(impl);
}

static const struct mb_device_ops pm_dev_ops = {
	.kind = "acpi_pm", .state = &mb_acpi_pm_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

int mb_acpi_pm_attach(struct mb_machine *m,
		      const struct mb_acpi_pm_attach_config *cfg,
		      struct mb_device **out)
{
	struct mb_acpi_pm *p = mb_acpi_pm_new(
		&(struct mb_acpi_pm_config){ pm_sleep, m });
	if (!p)
		return mb_seterr(-ENOMEM, "acpi_pm: out of memory");
	struct mb_device *d;
	int rc;
	if ((rc = mb_device_new(m, cfg ? cfg->name : NULL, "acpi_pm", &pm_dev_ops,
				p, &d)))
		return rc;
	if ((rc = mb_device_map(d, MB_SPACE_PIO, MB_ACPI_PM_PORT, MB_ACPI_PM_LEN,
				&mb_acpi_pm_ops, p))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
