/*
 * TEMPORARY (issue 8): stand-ins for the attach functions being written
 * now (mb_pic_attach, mb_pit_attach, mb_rtc_attach, mb_i8042_attach,
 * mb_virtio_blk_attach), with the names and configs they will have, built
 * from today's internal device APIs so that embed_pc builds and boots.
 * Each block disappears by itself once <moonbox.h> brings the real one
 * (its header's guard); then delete this file and its #include in
 * embed_pc.c. Needs -I. (internal headers) while it exists: the Makefile
 * adds it only when this file is present.
 */
#ifndef EMBED_SHIM_H
#define EMBED_SHIM_H

#include <errno.h>
#include <stdlib.h>

#if !defined(MOONBOX_PIC8259_H)
#include "devices/pic8259.h"
struct mb_pic_attach_config { const char *name; };

static void shim_pic_notify(void *m) { mb_machine_kick_irq(m); }
static void shim_pic_free(void *p) { mb_pic_free(p); }
static const struct mb_device_ops shim_pic_ops = { .kind = "pic8259",
						   .free = shim_pic_free };

static int mb_pic_attach(struct mb_machine *m, const struct mb_pic_attach_config *cfg,
			 struct mb_device **out)
{
	struct mb_pic_config pc = { shim_pic_notify, m };
	struct mb_pic *pic = mb_pic_new(&pc);
	int rc;
	if (!pic)
		return mb_seterr(-ENOMEM, "pic8259: out of memory");
	if ((rc = mb_device_new(m, cfg->name, "pic", &shim_pic_ops, pic, out)))
		return rc;
	if ((rc = mb_device_map(*out, MB_SPACE_PIO, 0x20, 2, &mb_pic_master_ops, pic)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0xa0, 2, &mb_pic_slave_ops, pic)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0x4d0, 2, &mb_pic_elcr_ops, pic))) {
		mb_device_remove(*out);
		return rc;
	}
	mb_machine_set_intc(m, &mb_pic_intc_ops, pic);
	return 0;
}
#endif

#if !defined(MOONBOX_PIT8254_H)
#include "devices/pit8254.h"
struct mb_pit_attach_config { const char *name; bool reinject; };

static void shim_pit_free(void *p) { mb_pit_free(p); }
static const struct mb_device_ops shim_pit_ops = { .kind = "pit8254",
						   .free = shim_pit_free };

static int mb_pit_attach(struct mb_machine *m, const struct mb_pit_attach_config *cfg,
			 struct mb_device **out)
{
	struct mb_pit_config pc = { .clock = mb_machine_clock(m) };
	int rc = mb_machine_irq(m, 0, &pc.irq);
	if (rc)
		return rc;
	struct mb_pit *pit = mb_pit_new(&pc);
	if (!pit)
		return mb_seterr(-ENOMEM, "pit8254: out of memory");
	if ((rc = mb_device_new(m, cfg->name, "pit", &shim_pit_ops, pit, out)))
		return rc;
	if ((rc = mb_device_irq(*out, 0, &pc.irq)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0x40, 4, &mb_pit_ops, pit)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0x61, 1, &mb_pit_port61_ops, pit))) {
		mb_device_remove(*out);
		return rc;
	}
	if (cfg->reinject && mb_machine_irq_on_ack(m, 0, mb_pit_irq_acked, pit) == 0)
		mb_pit_set_reinject(pit, true);
	return 0;
}
#endif

#if !defined(MOONBOX_RTC_H)
#include "devices/rtc.h"
struct mb_rtc_attach_config { const char *name; };

static void shim_rtc_free(void *p) { mb_rtc_free(p); }
static const struct mb_device_ops shim_rtc_ops = { .kind = "rtc",
						   .free = shim_rtc_free };

static int mb_rtc_attach(struct mb_machine *m, const struct mb_rtc_attach_config *cfg,
			 struct mb_device **out)
{
	struct mb_rtc_config rc_ = { .clock = mb_machine_clock(m),
				     .start_ns = MB_RTC_HOST_TIME };
	int rc = mb_machine_irq(m, 8, &rc_.irq);
	if (rc)
		return rc;
	struct mb_rtc *rtc = mb_rtc_new(&rc_);
	if (!rtc)
		return mb_seterr(-ENOMEM, "rtc: out of memory");
	if ((rc = mb_device_new(m, cfg->name, "rtc", &shim_rtc_ops, rtc, out)))
		return rc;
	if ((rc = mb_device_irq(*out, 8, &rc_.irq)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0x70, 2, &mb_rtc_ops, rtc))) {
		mb_device_remove(*out);
		return rc;
	}
	return 0;
}
#endif

#if !defined(MOONBOX_I8042_H)
#include "devices/i8042.h"
struct mb_i8042_attach_config { const char *name; };

static void shim_kbc_reset(void *m)
{
	mb_machine_stop(m, MB_STOP_RESET, 0, "guest reset (i8042 0xfe)");
}
static void shim_kbc_free(void *p) { mb_i8042_free(p); }
static const struct mb_device_ops shim_kbc_ops = { .kind = "i8042",
						   .free = shim_kbc_free };

static int mb_i8042_attach(struct mb_machine *m,
			   const struct mb_i8042_attach_config *cfg,
			   struct mb_device **out)
{
	struct mb_i8042_config kc = { shim_kbc_reset, m };
	struct mb_i8042 *k = mb_i8042_new(&kc);
	int rc;
	if (!k)
		return mb_seterr(-ENOMEM, "i8042: out of memory");
	if ((rc = mb_device_new(m, cfg->name, "i8042", &shim_kbc_ops, k, out)))
		return rc;
	if ((rc = mb_device_map(*out, MB_SPACE_PIO, 0x60, 1, &mb_i8042_data_ops, k)) ||
	    (rc = mb_device_map(*out, MB_SPACE_PIO, 0x64, 1, &mb_i8042_cmd_ops, k))) {
		mb_device_remove(*out);
		return rc;
	}
	return 0;
}
#endif

#if !defined(MOONBOX_VIRTIO_BLK_H)
#include "devices/virtio/blk.h"
struct mb_virtio_blk_attach_config { const char *name; const char *image; bool readonly; };

struct shim_blk {
	struct mb_virtio_blk *b;
	struct mb_virtio *t;
};
static void shim_blk_free(void *p)
{
	struct shim_blk *s = p;
	mb_virtio_blk_free(s->b); /* joins its workers, which use the transport */
	mb_virtio_free(s->t);
	free(s);
}
static const struct mb_device_ops shim_blk_ops = { .kind = "virtio_blk",
						   .free = shim_blk_free };

/* The user irqchip's way only (no irqfd), as machines/linux.lua uses it. */
static int mb_virtio_blk_attach(struct mb_machine *m,
				const struct mb_virtio_blk_attach_config *cfg,
				struct mb_device **out)
{
	struct mb_virtio_blk_config bc = { .image = cfg->image,
					   .readonly = cfg->readonly, .threads = 2 };
	struct shim_blk *s = calloc(1, sizeof *s);
	uint64_t base;
	unsigned line;
	struct mb_irq irq;
	int rc;
	if (!s)
		return mb_seterr(-ENOMEM, "virtio_blk: out of memory");
	if (!(s->b = mb_virtio_blk_new(&bc))) {
		free(s);
		return -EINVAL; /* message from mb_virtio_blk_new */
	}
	if ((rc = mb_machine_alloc_mmio(m, MB_VIRTIO_MMIO_SIZE, &base)) ||
	    (rc = mb_machine_alloc_irq(m, &line)) ||
	    (rc = mb_machine_irq(m, line, &irq))) {
		mb_virtio_blk_free(s->b);
		free(s);
		return rc;
	}
	struct mb_virtio_config vc = { &mb_virtio_blk_ops, s->b,
				       mb_virtio_blk_features(s->b),
				       mb_machine_mem(m), irq, -1 };
	if (!(s->t = mb_virtio_new(&vc))) {
		mb_virtio_blk_free(s->b);
		free(s);
		return mb_seterr(-ENOMEM, "virtio_blk: out of memory");
	}
	if ((rc = mb_device_new(m, cfg->name, "blk%u", &shim_blk_ops, s, out)))
		return rc;
	if ((rc = mb_device_irq(*out, (int)line, &irq)) ||
	    (rc = mb_virtio_doorbells(s->t, m, base)) ||
	    (rc = mb_device_map(*out, MB_SPACE_MMIO, base, MB_VIRTIO_MMIO_SIZE,
				&mb_virtio_mmio_ops, s->t)) ||
	    (rc = mb_machine_add_virtio_mmio(m, base, MB_VIRTIO_MMIO_SIZE, line))) {
		mb_device_remove(*out);
		return rc;
	}
	return 0;
}
#endif

#endif
