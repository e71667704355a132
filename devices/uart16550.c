/*
 * 16550A UART (TI PC16550D data sheet, SNLS378). Transmission is instant:
 * a byte written to THR goes to the backend at once, so THR and the TX
 * FIFO are always empty again by the time the guest looks (THRE and TEMT
 * always read 1). Reception is paced by the backend: the UART takes what
 * fits in its FIFO and asks for more when the guest has read some.
 */
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "moonbox/uart16550.h"

enum {
	IER_RDI = 0x01, IER_THRI = 0x02, IER_RLSI = 0x04, IER_MSI = 0x08,
	IIR_NONE = 0x01, IIR_MSI = 0x00, IIR_THRI = 0x02, IIR_RDI = 0x04,
	IIR_RLSI = 0x06, IIR_TIMEOUT = 0x0c, IIR_FIFO = 0xc0,
	FCR_ENABLE = 0x01, FCR_CLEAR_RX = 0x02,
	LCR_DLAB = 0x80,
	MCR_DTR = 0x01, MCR_RTS = 0x02, MCR_OUT1 = 0x04, MCR_OUT2 = 0x08,
	MCR_LOOP = 0x10,
	LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40,
	MSR_DCTS = 0x01, MSR_DDSR = 0x02, MSR_TERI = 0x04, MSR_DDCD = 0x08,
	MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_RI = 0x40, MSR_DCD = 0x80,
};

#define FIFO_SIZE 16

struct mb_uart {
	pthread_mutex_t lock;
	const struct mb_clock *clock;
	struct mb_irq irq;
	struct mb_chr *chr;
	struct mb_timer *timer;
	uint8_t rx[FIFO_SIZE];
	unsigned rx_head, rx_n;
	uint8_t rbr;      /* last byte read, returned again when empty */
	uint8_t ier, fcr, lcr, mcr, scr, dll, dlm;
	uint8_t lsr_err;  /* OE until LSR is read */
	uint8_t msr_in;   /* MSR bits 4-7 now */
	uint8_t msr_delta;
	uint8_t ext_in;   /* modem inputs outside loopback */
	bool thri;        /* THRE interrupt pending */
	bool timeout;     /* character timeout pending */
	bool line;
	bool rx_blocked;  /* refused backend bytes: owe an accept() */
	uint64_t deadline; /* character timeout, clock ns; 0: not armed */
	uint64_t tx_bytes, rx_bytes, overruns;
	/* NULL unless a fault rule targets this UART (moonbox/fault.h). */
	struct mb_fault_site *_Atomic fault;
	uint64_t fault_tx, fault_rx; /* bytes asked about, per direction */
	/* The relay's decoder (its console's thread only): where it is in a
	 * sequence, and the code it read. */
	uint8_t relay_st, relay_code;
	/* An observer (mb_uart_set_hook), published as one pointer. */
	struct uhook { mb_uart_hook_fn fn; void *ctx; } *_Atomic hook, hooks[2];
	unsigned hook_slot;
};

static bool fifo_on(const struct mb_uart *u)
{
	return u->fcr & FCR_ENABLE;
}

static unsigned rx_cap(const struct mb_uart *u)
{
	return fifo_on(u) ? FIFO_SIZE : 1;
}

static unsigned rx_trigger(const struct mb_uart *u)
{
	static const uint8_t level[4] = { 1, 4, 8, 14 };
	return fifo_on(u) ? level[u->fcr >> 6] : 1;
}

/* Interrupt identification in priority order (data sheet, Table 4). */
static uint8_t iir_id(const struct mb_uart *u)
{
	if ((u->ier & IER_RLSI) && u->lsr_err)
		return IIR_RLSI;
	if ((u->ier & IER_RDI) && u->rx_n >= rx_trigger(u))
		return IIR_RDI;
	if ((u->ier & IER_RDI) && u->timeout)
		return IIR_TIMEOUT;
	if ((u->ier & IER_THRI) && u->thri)
		return IIR_THRI;
	if ((u->ier & IER_MSI) && u->msr_delta)
		return IIR_MSI;
	return IIR_NONE;
}

/* On PC boards INTR reaches the PIC through a buffer enabled by OUT2. */
static void irq_update(struct mb_uart *u)
{
	bool level = iir_id(u) != IIR_NONE && (u->mcr & MCR_OUT2);
	if (level != u->line) {
		u->line = level;
		mb_irq_set(&u->irq, level);
	}
}

/* ---- receive side ----------------------------------------------------- */

/* Four character times at the programmed rate and frame (data sheet,
 * "FIFO Interrupt Mode Operation"): 115200 baud / divisor. */
static uint64_t timeout_ns(const struct mb_uart *u)
{
	unsigned div = u->dll | u->dlm << 8;
	unsigned bits = 1 + 5 + (u->lcr & 3) + ((u->lcr & 0x08) ? 1 : 0) +
			((u->lcr & 0x04) ? 2 : 1);
	return 4ull * bits * (div ? div : 1) * 1000000000ull / 115200;
}

static void rearm_timeout(struct mb_uart *u)
{
	if (!u->timer)
		return;
	uint64_t when = 0;
	if (fifo_on(u) && u->rx_n)
		when = u->clock->now(u->clock) + timeout_ns(u);
	u->deadline = when;
	u->clock->timer_mod(u->timer, when);
}

static void on_timeout(void *opaque)
{
	struct mb_uart *u = opaque;
	pthread_mutex_lock(&u->lock);
	u->deadline = 0;
	if (fifo_on(u) && u->rx_n)
		u->timeout = true;
	irq_update(u);
	pthread_mutex_unlock(&u->lock);
}

/* A byte arrives from the wire (or the loopback). A full FIFO overruns:
 * the FIFO keeps its bytes and the new one is lost; without FIFOs the
 * new byte overwrites RBR (data sheet, LSR bit 1). */
static void rx_push(struct mb_uart *u, uint8_t b)
{
	if (u->rx_n >= rx_cap(u)) {
		u->lsr_err |= LSR_OE;
		u->overruns++;
		if (!fifo_on(u))
			u->rx[u->rx_head] = b;
		return;
	}
	u->rx[(u->rx_head + u->rx_n++) % FIFO_SIZE] = b;
	u->rx_bytes++;
	rearm_timeout(u);
}

static void rx_clear(struct mb_uart *u)
{
	u->rx_head = u->rx_n = 0;
	u->timeout = false;
	rearm_timeout(u);
}

/* The console is a peer that honours flow control: it sends only while
 * the guest drives DTR, RTS or OUT2 (a driver that has set up the UART), so
 * input queued early is not lost to the FIFO reset of the guest's init. */
static bool rx_ready(const struct mb_uart *u)
{
	return !(u->mcr & MCR_LOOP) &&
	       (u->mcr & (MCR_DTR | MCR_RTS | MCR_OUT2));
}

/* A received byte's verdict applied (u->lock held): the line error bits
 * raised (data sheet, LSR bits 1-4; OE counts an overrun), then the byte
 * pushed unless it is lost. The in-process UART has the verdict from its
 * fault site, an isolated one from the VMM, on the relay. */
static void rx_line(struct mb_uart *u, uint8_t lsr, bool drop, uint8_t b)
{
	if (lsr & MB_FAULT_LSR_OE)
		u->overruns++;
	u->lsr_err |= lsr;
	if (!drop)
		rx_push(u, b);
}

/* A byte from the wire through the fault site, if any (u->lock held):
 * lost, changed, or pushed with a line error (OE loses the byte; BI
 * comes with a 0 character: mb_fault_uart_rx_byte). */
static void rx_faulted(struct mb_uart *u, struct mb_fault_site *fs, uint8_t b)
{
	struct mb_fault_verdict v = { 0 };
	if (fs) {
		mb_fault_uart_decide(fs, true, ++u->fault_rx, &v);
		b = mb_fault_uart_rx_byte(&v, b);
	}
	rx_line(u, v.lsr, v.drop, b);
}

/* With an observer: one byte at a time, the observer called outside the
 * lock (it may call Lua, which may read this UART's state). It sees the
 * byte as the console sent it, before any rx fault. */
static size_t rx_hooked(struct mb_uart *u, struct uhook *h, const uint8_t *buf,
			size_t len)
{
	size_t n = 0;
	for (; n < len; n++) {
		pthread_mutex_lock(&u->lock);
		bool room = rx_ready(u) && u->rx_n < rx_cap(u);
		pthread_mutex_unlock(&u->lock);
		if (!room)
			break;
		uint8_t b = buf[n];
		bool drop = false;
		h->fn(h->ctx, true, &b, &drop);
		pthread_mutex_lock(&u->lock);
		if (!drop)
			rx_faulted(u, atomic_load_explicit(&u->fault, memory_order_acquire), b);
		irq_update(u);
		pthread_mutex_unlock(&u->lock);
	}
	if (n < len) {
		pthread_mutex_lock(&u->lock);
		u->rx_blocked = true;
		pthread_mutex_unlock(&u->lock);
	}
	return n;
}

/* Outside loopback, and only what fits: the backend keeps the rest
 * until mb_chr_accept(). */
static size_t uart_rx(void *dev, const uint8_t *buf, size_t len)
{
	struct mb_uart *u = dev;
	size_t n = 0;
	struct uhook *h = atomic_load_explicit(&u->hook, memory_order_acquire);
	if (h)
		return rx_hooked(u, h, buf, len);
	struct mb_fault_site *fs = atomic_load_explicit(&u->fault, memory_order_acquire);
	pthread_mutex_lock(&u->lock);
	if (rx_ready(u) && fs)
		while (n < len && u->rx_n < rx_cap(u))
			rx_faulted(u, fs, buf[n++]);
	else if (rx_ready(u))
		while (n < len && u->rx_n < rx_cap(u))
			rx_push(u, buf[n++]);
	if (n < len)
		u->rx_blocked = true;
	irq_update(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* Whether to call mb_chr_accept() after unlocking. */
static bool owe_accept(struct mb_uart *u)
{
	if (u->rx_blocked && rx_ready(u) && u->rx_n < rx_cap(u)) {
		u->rx_blocked = false;
		return true;
	}
	return false;
}

/* ---- an isolated UART's relay (moonbox/uart16550.h) ------------------ */

/* What the relay's decoder waits for: a byte, the code after ESC, the
 * byte a valid code marks, or the byte of a refused sequence. */
enum { RELAY_BYTE, RELAY_CODE, RELAY_MARKED, RELAY_SKIP };

/* A code the VMM's verdicts can give: error bits only, at least one, and
 * an overrun always loses its byte (core/fault.c's UART_ERROR). */
static bool relay_code_ok(uint8_t c)
{
	return !(c & ~(0x1e | MB_UART_RELAY_DROP)) && (c & 0x1e) &&
	       (!(c & MB_FAULT_LSR_OE) || (c & MB_UART_RELAY_DROP));
}

/* A marked byte, taken as rx_faulted takes one: only with room in the
 * FIFO, so its error bits rise at the moment the in-process UART would
 * raise them. */
static bool relay_marked(struct mb_uart *u, uint8_t code, uint8_t b)
{
	pthread_mutex_lock(&u->lock);
	bool room = rx_ready(u) && u->rx_n < rx_cap(u);
	if (room)
		rx_line(u, code & 0x1e, code & MB_UART_RELAY_DROP, b);
	else
		u->rx_blocked = true;
	irq_update(u);
	pthread_mutex_unlock(&u->lock);
	return room;
}

size_t mb_uart_relay_rx(struct mb_uart *u, const uint8_t *buf, size_t len)
{
	static const uint8_t esc = MB_UART_RELAY_ESC;
	size_t n = 0;
	while (n < len) {
		uint8_t c = buf[n];
		switch (u->relay_st) {
		case RELAY_BYTE: { /* plain bytes up to the next ESC, at once */
			const uint8_t *e = memchr(buf + n, MB_UART_RELAY_ESC, len - n);
			size_t run = e ? (size_t)(e - (buf + n)) : len - n;
			if (run) {
				size_t took = uart_rx(u, buf + n, run);
				n += took;
				if (took < run)
					return n;
			}
			if (e)
				u->relay_st = RELAY_CODE, n++;
			break;
		}
		case RELAY_CODE:
			if (c == MB_UART_RELAY_LIT) {
				if (!uart_rx(u, &esc, 1))
					return n; /* ESC taken: LIT is asked again */
				u->relay_st = RELAY_BYTE;
			} else {
				u->relay_code = c;
				u->relay_st = relay_code_ok(c) ? RELAY_MARKED : RELAY_SKIP;
			}
			n++;
			break;
		case RELAY_MARKED:
			/* a lost byte comes as 0: anything else is not ours */
			if (!(u->relay_code & MB_UART_RELAY_DROP) || !c) {
				if (!relay_marked(u, u->relay_code, c))
					return n;
			}
			u->relay_st = RELAY_BYTE;
			n++;
			break;
		default: /* RELAY_SKIP */
			u->relay_st = RELAY_BYTE;
			n++;
			break;
		}
	}
	return n;
}

static size_t uart_relay_rx(void *dev, const uint8_t *buf, size_t len)
{
	return mb_uart_relay_rx(dev, buf, len);
}

/* ---- modem lines ------------------------------------------------------ */

static void set_modem_in(struct mb_uart *u, uint8_t in)
{
	uint8_t ch = u->msr_in ^ in;
	if (ch & MSR_CTS)
		u->msr_delta |= MSR_DCTS;
	if (ch & MSR_DSR)
		u->msr_delta |= MSR_DDSR;
	if (ch & MSR_DCD)
		u->msr_delta |= MSR_DDCD;
	if ((u->msr_in & MSR_RI) && !(in & MSR_RI)) /* trailing edge */
		u->msr_delta |= MSR_TERI;
	u->msr_in = in;
}

/* Loopback wires RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD (data sheet,
 * MCR bit 4); Linux's probe checks this. */
static uint8_t modem_in(const struct mb_uart *u)
{
	if (!(u->mcr & MCR_LOOP))
		return u->ext_in;
	return (uint8_t)(((u->mcr & MCR_RTS) ? MSR_CTS : 0) |
			 ((u->mcr & MCR_DTR) ? MSR_DSR : 0) |
			 ((u->mcr & MCR_OUT1) ? MSR_RI : 0) |
			 ((u->mcr & MCR_OUT2) ? MSR_DCD : 0));
}

/* ---- registers -------------------------------------------------------- */

static uint8_t lsr(const struct mb_uart *u)
{
	return (uint8_t)((u->rx_n ? LSR_DR : 0) | u->lsr_err | LSR_THRE |
			 LSR_TEMT);
}

static uint8_t reg_read(struct mb_uart *u, unsigned off, bool *accept)
{
	bool dlab = u->lcr & LCR_DLAB;
	uint8_t v;
	switch (off) {
	case 0:
		if (dlab)
			return u->dll;
		if (u->rx_n) {
			u->rbr = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % FIFO_SIZE;
			u->rx_n--;
		}
		/* Reading clears a timeout and restarts its timer. */
		u->timeout = false;
		rearm_timeout(u);
		*accept = owe_accept(u);
		return u->rbr;
	case 1:
		return dlab ? u->dlm : u->ier;
	case 2:
		v = iir_id(u);
		/* Reading IIR clears THRE when it is the source reported
		 * (data sheet, Table 4 "Reset control"). */
		if (v == IIR_THRI)
			u->thri = false;
		return v | (fifo_on(u) ? IIR_FIFO : 0);
	case 3:
		return u->lcr;
	case 4:
		return u->mcr;
	case 5:
		v = lsr(u);
		u->lsr_err = 0;
		return v;
	case 6:
		v = u->msr_in | u->msr_delta;
		u->msr_delta = 0;
		return v;
	default:
		return u->scr;
	}
}

/* Returns true when a byte is to be sent to the backend. */
static bool reg_write(struct mb_uart *u, unsigned off, uint8_t v,
		      bool *accept)
{
	bool dlab = u->lcr & LCR_DLAB;
	switch (off) {
	case 0:
		if (dlab) {
			u->dll = v;
			return false;
		}
		/* Writing THR clears THRE; the byte leaves at once and THRE
		 * comes back, so the line shows a fresh edge. */
		u->tx_bytes++;
		u->thri = false;
		irq_update(u);
		u->thri = true;
		if (u->mcr & MCR_LOOP) {
			rx_push(u, v);
			return false;
		}
		return true;
	case 1:
		if (dlab) {
			u->dlm = v;
			return false;
		}
		/* Enabling ETBEI while THR is empty raises THRE, each time
		 * (Linux's UART_BUG_THRE probe expects it). */
		if ((v & IER_THRI) && !(u->ier & IER_THRI))
			u->thri = true;
		u->ier = v & 0x0f;
		return false;
	case 2:
		/* Switching FIFO mode empties the FIFOs; the other bits are
		 * only taken with FCR0 set. */
		if ((v ^ u->fcr) & FCR_ENABLE) {
			u->fcr = v & FCR_ENABLE;
			rx_clear(u);
		}
		if (v & FCR_ENABLE) {
			u->fcr = v & 0xc9;
			if (v & FCR_CLEAR_RX)
				rx_clear(u);
		}
		*accept = owe_accept(u);
		return false;
	case 3:
		u->lcr = v;
		return false;
	case 4:
		u->mcr = v & 0x1f;
		set_modem_in(u, modem_in(u));
		*accept = owe_accept(u);
		return false;
	case 5: /* LSR: factory test only */
	case 6: /* MSR: read-only */
		return false;
	default:
		u->scr = v;
		return false;
	}
}

static void uart_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_uart *u = dev;
	uint8_t *p = data;
	for (unsigned i = 0; i < size; i++) {
		bool accept = false;
		pthread_mutex_lock(&u->lock);
		p[i] = off + i < 8 ? reg_read(u, (unsigned)(off + i), &accept)
				   : 0xff;
		irq_update(u);
		pthread_mutex_unlock(&u->lock);
		if (accept)
			mb_chr_accept(u->chr);
	}
}

/* The backend is called without the lock: it may block, or feed input
 * back to us from inside its write. */
static void uart_write(void *dev, uint64_t off, const void *data,
		       unsigned size)
{
	struct mb_uart *u = dev;
	const uint8_t *p = data;
	for (unsigned i = 0; i < size && off + i < 8; i++) {
		bool accept = false;
		pthread_mutex_lock(&u->lock);
		bool tx = reg_write(u, (unsigned)(off + i), p[i], &accept);
		uint8_t b = p[i];
		struct mb_fault_site *fs =
			tx ? atomic_load_explicit(&u->fault, memory_order_acquire) : NULL;
		if (fs) { /* the guest sent it; the wire may lose or change it */
			struct mb_fault_verdict v;
			mb_fault_uart_decide(fs, false, ++u->fault_tx, &v);
			tx = !v.drop;
			b ^= v.flip;
		}
		irq_update(u);
		pthread_mutex_unlock(&u->lock);
		struct uhook *h = tx ? atomic_load_explicit(&u->hook, memory_order_acquire)
				     : NULL;
		if (h) { /* outside the lock: the observer may call Lua */
			bool drop = false;
			h->fn(h->ctx, false, &b, &drop);
			tx = !drop;
		}
		if (tx)
			mb_chr_write(u->chr, &b, 1);
		if (accept)
			mb_chr_accept(u->chr);
	}
}

const struct mb_io_ops mb_uart_ops = { uart_read, uart_write };

/* ---- life cycle and state -------------------------------------------- */

struct mb_uart *mb_uart_new(const struct mb_uart_config *cfg)
{
	struct mb_uart *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	pthread_mutex_init(&u->lock, NULL);
	u->clock = cfg->clock;
	u->irq = cfg->irq;
	u->chr = cfg->chr;
	u->ext_in = u->msr_in = MSR_CTS | MSR_DSR | MSR_DCD;
	u->thri = true; /* THR empty after reset */
	u->dll = 12;    /* 9600 baud, until the guest says otherwise */
	if (u->clock) {
		u->timer = u->clock->timer_new(u->clock, on_timeout, u);
		if (!u->timer) {
			pthread_mutex_destroy(&u->lock);
			free(u);
			return NULL;
		}
	}
	if (u->chr) {
		u->chr->rx = cfg->relay ? uart_relay_rx : uart_rx;
		u->chr->rx_dev = u;
	}
	return u;
}

void mb_uart_free(struct mb_uart *u)
{
	if (!u)
		return;
	if (u->chr && u->chr->rx_dev == u) {
		u->chr->rx = NULL;
		u->chr->rx_dev = NULL;
	}
	if (u->timer)
		u->clock->timer_free(u->timer);
	mb_fault_site_put(atomic_load(&u->fault));
	pthread_mutex_destroy(&u->lock);
	free(u);
}

int mb_uart_set_fault(struct mb_uart *u, struct mb_fault_site *s)
{
	return mb_fault_site_install(&u->fault, s);
}

void mb_uart_set_hook(struct mb_uart *u, mb_uart_hook_fn fn, void *ctx)
{
	/* Two slots, alternated under the lock: a reader holding the old
	 * pointer finishes under that same lock before a third set could
	 * reuse its slot. */
	pthread_mutex_lock(&u->lock);
	struct uhook *h = NULL;
	if (fn) {
		h = &u->hooks[u->hook_slot ^= 1];
		h->fn = fn, h->ctx = ctx;
	}
	atomic_store_explicit(&u->hook, h, memory_order_release);
	pthread_mutex_unlock(&u->lock);
}

void mb_uart_set_modem(struct mb_uart *u, uint8_t msr_bits)
{
	pthread_mutex_lock(&u->lock);
	u->ext_in = msr_bits & 0xf0;
	set_modem_in(u, modem_in(u));
	irq_update(u);
	pthread_mutex_unlock(&u->lock);
}

MB_STATE_DESC(mb_uart_state, MB_UART_STATE, MB_UART_STATE_VERSION);

void mb_uart_save(struct mb_uart *u, struct mb_uart_state *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&u->lock);
	st->ier = u->ier;
	st->fcr = u->fcr;
	st->lcr = u->lcr;
	st->mcr = u->mcr;
	st->scr = u->scr;
	st->dll = u->dll;
	st->dlm = u->dlm;
	st->last_read = u->rbr;
	for (unsigned i = 0; i < u->rx_n; i++)
		st->rx_fifo[i] = u->rx[(u->rx_head + i) % FIFO_SIZE];
	st->rx_fifo_len = u->rx_n;
	st->lsr_errors = u->lsr_err;
	st->msr_lines = u->msr_in;
	st->msr_delta = u->msr_delta;
	st->modem_in = u->ext_in;
	st->thre_pending = u->thri;
	st->timeout_pending = u->timeout;
	st->rx_blocked = u->rx_blocked;
	if (u->deadline && u->clock) {
		uint64_t now = u->clock->now(u->clock);
		st->timeout_ns = u->deadline > now ? u->deadline - now : 1;
	}
	st->rbr = u->rx_n ? u->rx[u->rx_head] : u->rbr;
	st->iir = iir_id(u) | (fifo_on(u) ? IIR_FIFO : 0);
	st->lsr = lsr(u);
	st->msr = u->msr_in | u->msr_delta;
	st->rx_count = (uint8_t)u->rx_n;
	st->rx_trigger = (uint8_t)rx_trigger(u);
	st->irq_level = u->line;
	st->tx_bytes = u->tx_bytes;
	st->rx_bytes = u->rx_bytes;
	st->overruns = u->overruns;
	pthread_mutex_unlock(&u->lock);
}

static int check(const struct mb_uart_state *st)
{
	if (st->ier & ~0x0f)
		return mb_seterr(-EINVAL, "ier: 0x%x has bits beyond 0x0f", st->ier);
	if (st->fcr & ~0xc9)
		return mb_seterr(-EINVAL, "fcr: 0x%x has bits beyond 0xc9", st->fcr);
	if (st->mcr & ~0x1f)
		return mb_seterr(-EINVAL, "mcr: 0x%x has bits beyond 0x1f", st->mcr);
	if (st->rx_fifo_len > ((st->fcr & FCR_ENABLE) ? FIFO_SIZE : 1u))
		return mb_seterr(-EINVAL, "rx_fifo: %u bytes do not fit (%s)",
				 st->rx_fifo_len, (st->fcr & FCR_ENABLE)
				 ? "16 with the FIFO on" : "1 with the FIFO off");
	if (st->lsr_errors & ~0x1e)
		return mb_seterr(-EINVAL, "lsr_errors: 0x%x has bits beyond OE, PE, "
				 "FE and BI (0x1e)", st->lsr_errors);
	if ((st->msr_lines | st->modem_in) & 0x0f)
		return mb_seterr(-EINVAL, "%s: only bits 4-7 are modem lines",
				 (st->msr_lines & 0x0f) ? "msr_lines" : "modem_in");
	if (st->msr_delta & 0xf0)
		return mb_seterr(-EINVAL, "msr_delta: 0x%x has bits beyond 0x0f",
				 st->msr_delta);
	return 0;
}

int mb_uart_load(struct mb_uart *u, const struct mb_uart_state *st)
{
	int rc = check(st);
	if (rc)
		return rc;
	pthread_mutex_lock(&u->lock);
	u->ier = st->ier;
	u->fcr = st->fcr;
	u->lcr = st->lcr;
	u->mcr = st->mcr;
	u->scr = st->scr;
	u->dll = st->dll;
	u->dlm = st->dlm;
	u->rbr = st->last_read;
	memcpy(u->rx, st->rx_fifo, st->rx_fifo_len);
	u->rx_head = 0;
	u->rx_n = st->rx_fifo_len;
	u->lsr_err = st->lsr_errors;
	u->msr_in = st->msr_lines;
	u->msr_delta = st->msr_delta;
	u->ext_in = st->modem_in;
	u->thri = st->thre_pending;
	u->timeout = st->timeout_pending;
	u->rx_blocked = st->rx_blocked;
	u->tx_bytes = st->tx_bytes;
	u->rx_bytes = st->rx_bytes;
	u->overruns = st->overruns;
	if (u->timer) {
		u->deadline = st->timeout_ns
			? u->clock->now(u->clock) + st->timeout_ns : 0;
		u->clock->timer_mod(u->timer, u->deadline);
	}
	irq_update(u);
	bool accept = owe_accept(u);
	pthread_mutex_unlock(&u->lock);
	if (accept)
		mb_chr_accept(u->chr);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

static const uint16_t com_port[] = { 0x3f8, 0x2f8, 0x3e8, 0x2e8 };
static const uint8_t com_irq[] = { 4, 3, 4, 3 };

int mb_uart_com(unsigned n, uint16_t *port, unsigned *irq)
{
	if (n < 1 || n > 4)
		return mb_seterr(-EINVAL, "com: %u is not 1-4", n);
	*port = com_port[n - 1];
	*irq = com_irq[n - 1];
	return 0;
}

static int dev_save(void *impl, void *st)
{
	mb_uart_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st)
{
	return mb_uart_load(impl, st);
}

static void dev_free(void *impl)
{
	mb_uart_free(impl);
}

static const struct mb_device_ops uart_dev_ops;

struct mb_uart *mb_uart_of_device(struct mb_device *d)
{
	return d && mb_device_ops_of(d) == &uart_dev_ops ? mb_device_impl(d) : NULL;
}

static const struct mb_device_ops uart_dev_ops = {
	.kind = "uart16550", .state = &mb_uart_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

int mb_uart_attach(struct mb_machine *m, const struct mb_uart_attach_config *cfg,
		   struct mb_device **out)
{
	static const struct mb_uart_attach_config com1; /* all zero: COM1 */
	if (!cfg)
		cfg = &com1;
	uint16_t port;
	unsigned irq;
	int rc = mb_uart_com(cfg->com ? cfg->com : 1, &port, &irq);
	if (rc)
		return rc;
	if (cfg->port)
		port = cfg->port;
	if (cfg->irq)
		irq = cfg->irq;
	if (port > 0xfff8)
		return mb_seterr(-EINVAL, "port: 0x%x is beyond 0xfff8", port);
	const char *def = "uart";
	static const char *const com_names[] = { "com1", "com2", "com3", "com4" };
	for (int i = 0; i < 4; i++)
		if (port == com_port[i])
			def = com_names[i];
	struct mb_uart_config uc = { .clock = mb_machine_clock(m), .chr = cfg->chr,
				     .relay = cfg->relay };
	struct mb_uart *u = mb_uart_new(&uc);
	if (!u)
		return mb_seterr(-ENOMEM, "uart16550: out of memory");
	struct mb_device *d;
	if ((rc = mb_device_new(m, cfg->name, def, &uart_dev_ops, u, &d)))
		return rc;
	/* The line before the ports: no access can see a UART without one. */
	if ((rc = mb_device_irq(d, (int)irq, &u->irq)) ||
	    (rc = mb_device_map(d, MB_SPACE_PIO, port, 8, &mb_uart_ops, u))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
