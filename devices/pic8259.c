/*
 * Intel 8259A PIC pair, from the 8259A data sheet (Intel 231468) and the
 * PIIX/PIIX3 data sheet for the ELCR. The master's IR2 is wired to the
 * slave's INT, as on every PC. x86 (uPM = 1) mode only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

struct chip {
	uint8_t irr, isr, imr, elcr, input;
	uint8_t vector_base, icw3, init_step, lowest;
	bool ltim, single, icw4_needed, aeoi, sfnm;
	bool rotate_aeoi, special_mask, read_isr, poll;
	uint8_t elcr_mask; /* ELCR bits that exist (PIIX: IRQ0,1,2,8,13 don't) */
	bool is_master;
};

struct mb_pic {
	pthread_mutex_t lock;
	struct chip c[2]; /* master, slave */
	bool int_out;
	bool slave_out; /* the slave's INT as master IR2 last saw it */
	uint64_t acks, spurious;
	void (*notify)(void *opaque);
	void *opaque;
	/* Per line: told when INTA took that line's request (how a timer
	 * knows a tick was delivered and the next one will not merge). */
	void (*acked[16])(void *opaque);
	void *acked_opaque[16];
};

#define CASCADE 2 /* master IR the slave's INT drives */

static bool level_mode(const struct chip *c, unsigned ir)
{
	return c->ltim || (c->elcr & (1u << ir));
}

/* Priority 0 (highest) .. 7 of the IR, given the rotation. */
static unsigned prio(const struct chip *c, unsigned ir)
{
	return (ir - c->lowest - 1) & 7;
}

/* The highest-priority IR set in bits, or -1. */
static int highest(const struct chip *c, uint8_t bits)
{
	for (unsigned p = 0; p < 8; p++) {
		unsigned ir = (p + c->lowest + 1) & 7;
		if (bits & (1u << ir))
			return (int)ir;
	}
	return -1;
}

/* The IR this chip would interrupt for now, or -1 (8259A "priority
 * resolver"): the best unmasked request, if it beats everything in
 * service. In special mask mode masked ISR bits don't block (sec. "Special
 * Mask Mode"); in special fully nested mode the master lets a new slave
 * request through while IR2 is in service (sec. "Special Fully Nest Mode"). */
static int chip_request(const struct chip *c)
{
	int ir = highest(c, c->irr & ~c->imr);
	if (ir < 0)
		return -1;
	uint8_t blocking = c->isr;
	if (c->special_mask)
		blocking &= ~c->imr;
	int cur = highest(c, blocking);
	if (cur < 0 || prio(c, ir) < prio(c, cur))
		return ir;
	if (c->is_master && c->sfnm && ir == CASCADE && cur == CASCADE)
		return ir;
	return -1;
}

static void chip_set_pin(struct chip *c, unsigned ir, bool level)
{
	uint8_t bit = 1u << ir;
	bool old = c->input & bit;
	c->input = level ? c->input | bit : c->input & ~bit;
	if (level_mode(c, ir)) {
		c->irr = level ? c->irr | bit : c->irr & ~bit;
	} else if (level && !old) {
		c->irr |= bit;
	}
}

/* The part of INTA that happens inside one chip. */
static void chip_ack(struct chip *c, unsigned ir)
{
	uint8_t bit = 1u << ir;
	if (c->aeoi) {
		if (c->rotate_aeoi)
			c->lowest = ir;
	} else {
		c->isr |= bit;
	}
	if (!level_mode(c, ir))
		c->irr &= ~bit;
}

/* Propagate the slave's INT to master IR2 and recompute our INT pin.
 * IR2 is an edge input (the PIIX reserves its ELCR bit), so the master
 * latches the slave's request; if the slave drops it before INTA, the
 * slave answers IR7 (vector 15). Returns true when INT changed. */
static bool update(struct mb_pic *pic)
{
	struct chip *m = &pic->c[0];
	bool s = chip_request(&pic->c[1]) >= 0;
	if (s != pic->slave_out) {
		chip_set_pin(m, CASCADE, s);
		pic->slave_out = s;
	}
	bool out = chip_request(m) >= 0;
	bool changed = out != pic->int_out;
	pic->int_out = out;
	return changed;
}

static void unlock_notify(struct mb_pic *pic, bool changed)
{
	pthread_mutex_unlock(&pic->lock);
	if (changed && pic->notify)
		pic->notify(pic->opaque);
}

/* ---- port writes ---------------------------------------------------- */

/* ICW1 (data sheet "Initialization Command Words"): edge sense reset, IMR
 * cleared, IR7 lowest priority, special mask off, status read = IRR, and
 * without IC4 every ICW4 function is cleared. We also clear ISR so a
 * re-initialised chip starts clean. */
static void icw1(struct chip *c, uint8_t v)
{
	c->ltim = v & 0x08;
	c->single = v & 0x02;
	c->icw4_needed = v & 0x01;
	c->imr = c->isr = 0;
	c->lowest = 7;
	c->special_mask = c->read_isr = c->poll = false;
	c->aeoi = c->sfnm = c->rotate_aeoi = false;
	/* Edge sense reset: an edge line needs a fresh low-to-high transition;
	 * a level line requests as long as it is high. */
	c->irr = 0;
	for (unsigned ir = 0; ir < 8; ir++)
		if (level_mode(c, ir) && (c->input & (1u << ir)))
			c->irr |= 1u << ir;
	c->init_step = 2;
}

static void ocw2(struct chip *c, uint8_t v)
{
	unsigned l = v & 7;
	int ir;
	switch (v >> 5) {
	case 0: c->rotate_aeoi = false; break;    /* rotate in AEOI: clear */
	case 4: c->rotate_aeoi = true; break;     /* rotate in AEOI: set */
	case 1: /* non-specific EOI */
	case 5: /* rotate on non-specific EOI */
		/* In special mask mode a masked ISR bit is not reset by a
		 * non-specific EOI (data sheet, "End of Interrupt"). */
		ir = highest(c, c->isr & ~(c->special_mask ? c->imr : 0));
		if (ir >= 0) {
			c->isr &= ~(1u << ir);
			if (v >> 5 == 5)
				c->lowest = (uint8_t)ir;
		}
		break;
	case 3: c->isr &= ~(1u << l); break;      /* specific EOI */
	case 7: c->isr &= ~(1u << l); c->lowest = (uint8_t)l; break;
	case 6: c->lowest = (uint8_t)l; break;    /* set priority */
	case 2: break;                            /* no operation */
	}
}

static void ocw3(struct chip *c, uint8_t v)
{
	if (v & 0x40) /* ESMM: SMM bit is valid */
		c->special_mask = v & 0x20;
	if (v & 0x04)
		c->poll = true;
	if (v & 0x02) /* RR: RIS bit is valid */
		c->read_isr = v & 0x01;
}

static void chip_write(struct chip *c, unsigned a0, uint8_t v)
{
	if (!a0) {
		if (v & 0x10)
			icw1(c, v);
		else if (v & 0x08)
			ocw3(c, v);
		else
			ocw2(c, v);
		return;
	}
	switch (c->init_step) {
	case 2: /* ICW2: T7-T3; the low three bits come from the IR */
		c->vector_base = v & 0xf8;
		c->init_step = c->single ? (c->icw4_needed ? 4 : 0) : 3;
		break;
	case 3: /* ICW3: which IRs have slaves / this slave's ID. The PC
		 * wiring is fixed, so it is only kept for read-out. */
		c->icw3 = v;
		c->init_step = c->icw4_needed ? 4 : 0;
		break;
	case 4: /* ICW4: uPM (assumed 1), AEOI, M/S and BUF (unused), SFNM */
		c->aeoi = v & 0x02;
		c->sfnm = v & 0x10;
		c->init_step = 0;
		break;
	default: /* OCW1 */
		c->imr = v;
		break;
	}
}

/* The poll command turns the next read into an INTA for this chip alone
 * (data sheet "The Poll Command"): I bit 7 and the IR, or 0. */
static uint8_t chip_poll(struct chip *c)
{
	c->poll = false;
	int ir = chip_request(c);
	if (ir < 0)
		return 0;
	chip_ack(c, (unsigned)ir);
	return 0x80 | (uint8_t)ir;
}

static uint8_t chip_read(struct chip *c, unsigned a0)
{
	if (c->poll)
		return chip_poll(c);
	if (a0)
		return c->imr;
	return c->read_isr ? c->isr : c->irr;
}

/* Multi-byte accesses are split into byte accesses at consecutive ports. */
static void pic_io_read(struct mb_pic *pic, unsigned idx, uint64_t off,
			void *data, unsigned size)
{
	uint8_t *p = data;
	pthread_mutex_lock(&pic->lock);
	for (unsigned i = 0; i < size; i++)
		p[i] = (off + i) < 2 ? chip_read(&pic->c[idx], (off + i) & 1)
				     : 0xff;
	unlock_notify(pic, update(pic));
}

static void pic_io_write(struct mb_pic *pic, unsigned idx, uint64_t off,
			 const void *data, unsigned size)
{
	const uint8_t *p = data;
	pthread_mutex_lock(&pic->lock);
	for (unsigned i = 0; i < size && off + i < 2; i++)
		chip_write(&pic->c[idx], (off + i) & 1, p[i]);
	unlock_notify(pic, update(pic));
}

static void master_read(void *d, uint64_t off, void *data, unsigned size)
{
	pic_io_read(d, 0, off, data, size);
}
static void master_write(void *d, uint64_t off, const void *data, unsigned size)
{
	pic_io_write(d, 0, off, data, size);
}
static void slave_read(void *d, uint64_t off, void *data, unsigned size)
{
	pic_io_read(d, 1, off, data, size);
}
static void slave_write(void *d, uint64_t off, const void *data, unsigned size)
{
	pic_io_write(d, 1, off, data, size);
}

static void elcr_read(void *d, uint64_t off, void *data, unsigned size)
{
	struct mb_pic *pic = d;
	uint8_t *p = data;
	pthread_mutex_lock(&pic->lock);
	for (unsigned i = 0; i < size; i++)
		p[i] = off + i < 2 ? pic->c[off + i].elcr : 0xff;
	pthread_mutex_unlock(&pic->lock);
}

/* A line switched to level mode requests at once if it is high; one
 * switched to edge keeps what it latched. */
static void elcr_write(void *d, uint64_t off, const void *data, unsigned size)
{
	struct mb_pic *pic = d;
	const uint8_t *p = data;
	pthread_mutex_lock(&pic->lock);
	for (unsigned i = 0; i < size && off + i < 2; i++) {
		struct chip *c = &pic->c[off + i];
		c->elcr = p[i] & c->elcr_mask;
		for (unsigned ir = 0; ir < 8; ir++)
			if (level_mode(c, ir))
				chip_set_pin(c, ir, c->input & (1u << ir));
	}
	unlock_notify(pic, update(pic));
}

const struct mb_io_ops mb_pic_master_ops = { master_read, master_write };
const struct mb_io_ops mb_pic_slave_ops = { slave_read, slave_write };
const struct mb_io_ops mb_pic_elcr_ops = { elcr_read, elcr_write };

/* ---- the lines and the INTA cycle ------------------------------------ */

void mb_pic_set_irq(struct mb_pic *pic, unsigned line, int level)
{
	if (line > 15 || line == CASCADE)
		return;
	pthread_mutex_lock(&pic->lock);
	chip_set_pin(&pic->c[line >> 3], line & 7, level != 0);
	unlock_notify(pic, update(pic));
}

bool mb_pic_pending(struct mb_pic *pic)
{
	pthread_mutex_lock(&pic->lock);
	bool out = pic->int_out;
	pthread_mutex_unlock(&pic->lock);
	return out;
}

int mb_pic_ack(struct mb_pic *pic)
{
	struct chip *m = &pic->c[0], *s = &pic->c[1];
	int vector, line = -1;
	pthread_mutex_lock(&pic->lock);
	pic->acks++;
	int ir = chip_request(m);
	if (ir < 0) {
		/* Request gone before INTA: the 8259A answers IR7 without
		 * setting ISR (data sheet, "Interrupt Sequence"). */
		vector = m->vector_base | 7;
		pic->spurious++;
	} else if (ir == CASCADE) {
		chip_ack(m, CASCADE);
		int sir = chip_request(s);
		if (sir < 0) {
			/* IR15: the master's IR2 stays in service, so the
			 * guest must EOI the master (Linux does). */
			vector = s->vector_base | 7;
			pic->spurious++;
		} else {
			chip_ack(s, (unsigned)sir);
			vector = s->vector_base | (unsigned)sir;
			line = 8 + sir;
		}
		/* The slave's INT falls during INTA: if it still has a request
		 * (AEOI, SFNM) the master must see a new edge. */
		pic->slave_out = false;
		m->input &= ~(1u << CASCADE);
	} else {
		chip_ack(m, (unsigned)ir);
		vector = m->vector_base | (unsigned)ir;
		line = ir;
	}
	void (*acked)(void *) = line >= 0 ? pic->acked[line] : NULL;
	void *ao = line >= 0 ? pic->acked_opaque[line] : NULL;
	unlock_notify(pic, update(pic));
	if (acked)
		acked(ao); /* outside the lock: it may raise the line again */
	return vector;
}

void mb_pic_on_ack(struct mb_pic *pic, unsigned line, void (*fn)(void *),
		   void *opaque)
{
	if (line >= 16)
		return;
	pthread_mutex_lock(&pic->lock);
	pic->acked[line] = fn;
	pic->acked_opaque[line] = opaque;
	pthread_mutex_unlock(&pic->lock);
}

static void intc_on_ack(void *pic, unsigned line, void (*fn)(void *),
			void *opaque)
{
	mb_pic_on_ack(pic, line, fn, opaque);
}

void mb_pic_irq_set(void *pic, unsigned line, int level)
{
	mb_pic_set_irq(pic, line, level);
}

static bool intc_pending(void *pic) { return mb_pic_pending(pic); }
static int intc_ack(void *pic) { return mb_pic_ack(pic); }

const struct mb_intc_ops mb_pic_intc_ops = {
	.pending = intc_pending,
	.on_ack = intc_on_ack,
	.ack = intc_ack,
	.set_line = mb_pic_irq_set,
};

/* ---- life cycle and state -------------------------------------------- */

struct mb_pic *mb_pic_new(const struct mb_pic_config *cfg)
{
	struct mb_pic *pic = calloc(1, sizeof(*pic));
	if (!pic)
		return NULL;
	pthread_mutex_init(&pic->lock, NULL);
	for (unsigned i = 0; i < 2; i++) {
		pic->c[i].lowest = 7;
		pic->c[i].is_master = i == 0;
	}
	/* PIIX: ELCR1 bits 0-2 (IRQ0-2) and ELCR2 bits 0, 5 (IRQ8, IRQ13)
	 * are reserved and read 0: those lines are always edge. */
	pic->c[0].elcr_mask = 0xf8;
	pic->c[1].elcr_mask = 0xde;
	if (cfg) {
		pic->notify = cfg->notify;
		pic->opaque = cfg->opaque;
	}
	return pic;
}

void mb_pic_free(struct mb_pic *pic)
{
	if (!pic)
		return;
	pthread_mutex_destroy(&pic->lock);
	free(pic);
}

MB_STATE_DESC(mb_pic_chip_state, MB_PIC_CHIP_STATE, MB_PIC_STATE_VERSION);
MB_STATE_DESC(mb_pic_state, MB_PIC_STATE, MB_PIC_STATE_VERSION);

static void chip_save(const struct chip *c, struct mb_pic_chip_state *s)
{
	s->irr = c->irr;
	s->isr = c->isr;
	s->imr = c->imr;
	s->elcr = c->elcr;
	s->input = c->input;
	s->vector_base = c->vector_base;
	s->icw3 = c->icw3;
	s->init_step = c->init_step;
	s->lowest = c->lowest;
	s->ltim = c->ltim;
	s->single = c->single;
	s->icw4_needed = c->icw4_needed;
	s->aeoi = c->aeoi;
	s->sfnm = c->sfnm;
	s->rotate_aeoi = c->rotate_aeoi;
	s->special_mask = c->special_mask;
	s->read_isr = c->read_isr;
	s->poll = c->poll;
}

static void chip_load(struct chip *c, const struct mb_pic_chip_state *s)
{
	c->irr = s->irr;
	c->isr = s->isr;
	c->imr = s->imr;
	c->elcr = s->elcr;
	c->input = s->input;
	c->vector_base = s->vector_base;
	c->icw3 = s->icw3;
	c->init_step = s->init_step;
	c->lowest = s->lowest;
	c->ltim = s->ltim;
	c->single = s->single;
	c->icw4_needed = s->icw4_needed;
	c->aeoi = s->aeoi;
	c->sfnm = s->sfnm;
	c->rotate_aeoi = s->rotate_aeoi;
	c->special_mask = s->special_mask;
	c->read_isr = s->read_isr;
	c->poll = s->poll;
}

void mb_pic_save(struct mb_pic *pic, struct mb_pic_state *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&pic->lock);
	chip_save(&pic->c[0], &st->master);
	chip_save(&pic->c[1], &st->slave);
	st->slave_out = pic->slave_out;
	st->int_output = pic->int_out;
	st->acks = pic->acks;
	st->spurious = pic->spurious;
	pthread_mutex_unlock(&pic->lock);
}

static int chip_check(const struct mb_pic_chip_state *s, const char *n,
		      uint8_t elcr_mask)
{
	if (s->init_step == 1 || s->init_step > 4)
		return mb_seterr(-EINVAL, "%s.init_step: %u is not 0, 2, 3 or 4", n,
				 s->init_step);
	if (s->lowest > 7)
		return mb_seterr(-EINVAL, "%s.lowest: %u is not an IR (0-7)", n,
				 s->lowest);
	if (s->vector_base & 7)
		return mb_seterr(-EINVAL, "%s.vector_base: 0x%x is not a multiple "
				 "of 8", n, s->vector_base);
	if (s->elcr & ~elcr_mask)
		return mb_seterr(-EINVAL, "%s.elcr: 0x%x sets reserved bits (only "
				 "0x%x exist)", n, s->elcr, elcr_mask);
	return 0;
}

int mb_pic_load(struct mb_pic *pic, const struct mb_pic_state *st)
{
	int rc;
	if ((rc = chip_check(&st->master, "master", pic->c[0].elcr_mask)) ||
	    (rc = chip_check(&st->slave, "slave", pic->c[1].elcr_mask)))
		return rc;
	pthread_mutex_lock(&pic->lock);
	chip_load(&pic->c[0], &st->master);
	chip_load(&pic->c[1], &st->slave);
	pic->slave_out = st->slave_out;
	pic->acks = st->acks;
	pic->spurious = st->spurious;
	/* INT from the loaded registers; tell the vCPUs either way, a
	 * pending request may belong to another guest than the last one. */
	update(pic);
	unlock_notify(pic, true);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

static void kick(void *m)
{
	mb_machine_kick_irq(m);
}

static int dev_save(void *impl, void *st)
{
	mb_pic_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_pic_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_pic_free(impl);
}

static const struct mb_device_ops pic_dev_ops = {
	.kind = "pic8259", .state = &mb_pic_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

/* KVM's pair, listed so that every PC has a "pic" (its state is KVM's). */
static const struct mb_device_ops kernel_pic_ops = { .kind = "pic8259" };

int mb_pic_attach(struct mb_machine *m, const struct mb_pic_attach_config *cfg,
		  struct mb_device **out)
{
	const char *name = cfg ? cfg->name : NULL;
	struct mb_device *d;
	int rc;
	if (mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL) {
		if ((rc = mb_device_new(m, name, "pic", &kernel_pic_ops, NULL, &d)))
			return rc;
		*out = d;
		return 0;
	}
	struct mb_pic_config pc = { kick, m };
	struct mb_pic *pic = mb_pic_new(&pc);
	if (!pic)
		return mb_seterr(-ENOMEM, "pic8259: out of memory");
	if ((rc = mb_device_new(m, name, "pic", &pic_dev_ops, pic, &d)))
		return rc;
	if ((rc = mb_device_map(d, MB_SPACE_PIO, 0x20, 2, &mb_pic_master_ops, pic)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0xa0, 2, &mb_pic_slave_ops, pic)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0x4d0, 2, &mb_pic_elcr_ops, pic))) {
		mb_device_remove(d);
		return rc;
	}
	mb_machine_set_intc(m, &mb_pic_intc_ops, pic);
	*out = d;
	return 0;
}
