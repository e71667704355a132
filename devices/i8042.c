/*
 * A minimal 8042 (IBM PC/AT technical reference, "Keyboard Controller").
 * Status: bit 0 OBF, bit 1 IBF (never: we take bytes at once), bit 2
 * system flag, bit 3 last write was a command.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox.h"

enum { ST_OBF = 0x01, ST_SYS = 0x04, ST_CMD = 0x08 };

struct mb_i8042 {
	pthread_mutex_t lock;
	uint8_t status, ctr, outport, out, pending;
	bool obf;
	uint64_t resets;
	void (*reset)(void *opaque);
	void *opaque;
};

static void reply(struct mb_i8042 *k, uint8_t v)
{
	k->out = v;
	k->obf = true;
}

/* Returns true when the reset line is pulsed. */
static bool command(struct mb_i8042 *k, uint8_t c)
{
	k->status |= ST_CMD;
	switch (c) {
	case 0x20: reply(k, k->ctr); break;             /* read CTR */
	case 0x60: case 0xd1: k->pending = c; break;    /* data follows */
	case 0xa7: k->ctr |= 0x20; break;               /* aux off */
	case 0xa8: k->ctr &= (uint8_t)~0x20; break;     /* aux on */
	case 0xa9: case 0xab: reply(k, 0x00); break;    /* port tests: ok */
	case 0xaa: reply(k, 0x55); k->status |= ST_SYS; break; /* self test */
	case 0xad: k->ctr |= 0x10; break;               /* kbd off */
	case 0xae: k->ctr &= (uint8_t)~0x10; break;     /* kbd on */
	case 0xd0: reply(k, k->outport); break;         /* read output port */
	default:
		/* 0xf0-0xff pulse output port bits 0-3 low for those bits
		 * clear in the command; bit 0 is the CPU reset line. */
		if ((c & 0xf0) == 0xf0 && !(c & 1))
			return true;
	}
	return false;
}

static bool data(struct mb_i8042 *k, uint8_t v)
{
	k->status &= (uint8_t)~ST_CMD;
	uint8_t cmd = k->pending;
	k->pending = 0;
	if (cmd == 0x60) {
		k->ctr = v;
		k->status = (uint8_t)((k->status & ~ST_SYS) | (v & ST_SYS));
	} else if (cmd == 0xd1) {
		k->outport = v;
		return !(v & 1); /* output port bit 0 low: reset */
	}
	/* Bytes for the keyboard itself: there is none; dropped. */
	return false;
}

static void kbc_io(struct mb_i8042 *k, bool is_cmd, const uint8_t *w,
		   uint8_t *r)
{
	bool reset = false;
	pthread_mutex_lock(&k->lock);
	if (w) {
		reset = is_cmd ? command(k, *w) : data(k, *w);
		k->resets += reset;
	} else if (is_cmd) {
		*r = (uint8_t)(k->status | (k->obf ? ST_OBF : 0));
	} else {
		*r = k->out;
		k->obf = false;
	}
	pthread_mutex_unlock(&k->lock);
	if (reset && k->reset)
		k->reset(k->opaque);
}

static void data_read(void *d, uint64_t off, void *buf, unsigned size)
{
	memset(buf, 0xff, size);
	kbc_io(d, false, NULL, buf);
}
static void data_write(void *d, uint64_t off, const void *buf, unsigned size)
{
	kbc_io(d, false, buf, NULL);
}
static void cmd_read(void *d, uint64_t off, void *buf, unsigned size)
{
	memset(buf, 0xff, size);
	kbc_io(d, true, NULL, buf);
}
static void cmd_write(void *d, uint64_t off, const void *buf, unsigned size)
{
	kbc_io(d, true, buf, NULL);
}

const struct mb_io_ops mb_i8042_data_ops = { data_read, data_write };
const struct mb_io_ops mb_i8042_cmd_ops = { cmd_read, cmd_write };

struct mb_i8042 *mb_i8042_new(const struct mb_i8042_config *cfg)
{
	struct mb_i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	pthread_mutex_init(&k->lock, NULL);
	k->ctr = 0x30;     /* both ports disabled, no interrupts */
	k->outport = 0x01; /* reset line inactive (high) */
	if (cfg) {
		k->reset = cfg->reset;
		k->opaque = cfg->opaque;
	}
	return k;
}

void mb_i8042_free(struct mb_i8042 *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->lock);
	free(k);
}

MB_STATE_DESC(mb_i8042_state, MB_I8042_STATE, MB_I8042_STATE_VERSION);

void mb_i8042_save(struct mb_i8042 *k, struct mb_i8042_state *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&k->lock);
	st->flags = k->status;
	st->ctr = k->ctr;
	st->outport = k->outport;
	st->obf = k->obf;
	st->out = k->out;
	st->pending = k->pending;
	st->status = (uint8_t)(k->status | (k->obf ? ST_OBF : 0));
	st->resets = k->resets;
	pthread_mutex_unlock(&k->lock);
}

int mb_i8042_load(struct mb_i8042 *k, const struct mb_i8042_state *st)
{
	if (st->flags & ~(ST_SYS | ST_CMD))
		return mb_seterr(-EINVAL, "flags: 0x%x is not 0x04 | 0x08",
				 st->flags);
	if (st->pending && st->pending != 0x60 && st->pending != 0xd1)
		return mb_seterr(-EINVAL, "pending: 0x%x is not 0, 0x60 or 0xd1",
				 st->pending);
	pthread_mutex_lock(&k->lock);
	k->status = st->flags;
	k->ctr = st->ctr;
	k->outport = st->outport;
	k->obf = st->obf;
	k->out = st->out;
	k->pending = st->pending;
	k->resets = st->resets;
	pthread_mutex_unlock(&k->lock);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

static void kbc_reset(void *m)
{
	mb_machine_stop(m, MB_STOP_RESET, 0, "guest reset (i8042 0xfe)");
}

static int dev_save(void *impl, void *st)
{
	mb_i8042_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_i8042_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_i8042_free(impl);
}

static const struct mb_device_ops i8042_dev_ops = {
	.kind = "i8042", .state = &mb_i8042_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

int mb_i8042_attach(struct mb_machine *m,
		    const struct mb_i8042_attach_config *cfg,
		    struct mb_device **out)
{
	struct mb_i8042_config kc = { kbc_reset, m };
	struct mb_i8042 *k = mb_i8042_new(&kc);
	if (!k)
		return mb_seterr(-ENOMEM, "i8042: out of memory");
	struct mb_device *d;
	int rc;
	if ((rc = mb_device_new(m, cfg ? cfg->name : NULL, "i8042", &i8042_dev_ops,
				k, &d)))
		return rc;
	if ((rc = mb_device_map(d, MB_SPACE_PIO, 0x60, 1, &mb_i8042_data_ops, k)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, 0x64, 1, &mb_i8042_cmd_ops, k))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
