/*
 * National Semiconductor / TI 16550A UART: eight registers at a base port
 * (0x3f8, 0x2f8, 0x3e8, 0x2e8 for COM1-4), 16-byte FIFOs, interrupt output
 * gated by MCR OUT2 as on PC boards, connected to a character backend.
 */
#ifndef MOONBOX_UART16550_H
#define MOONBOX_UART16550_H

#include "moonbox.h"

struct mb_uart;

/* ---- in a machine ------------------------------------------------------ */

struct mb_uart_attach_config {
	const char *name; /* NULL: "com1".."com4" at a COM port, else "uart" */
	/* Where: com = 1-4 takes that COM port's base and line (the PC map:
	 * 0x3f8/4, 0x2f8/3, 0x3e8/4, 0x2e8/3); port and irq, when non-zero,
	 * override them. All zero: COM1. */
	unsigned com;
	uint16_t port;
	unsigned irq;
	/* The console (mb_chr_stdio(m), mb_chr_buffer(m), ...); NULL: output
	 * is dropped and nothing comes in. */
	struct mb_chr *chr;
	/* chr is an isolated UART's console relay, in its device process:
	 * its input is in the relay's form (below), not raw bytes. */
	bool relay;
};

/* Create a UART, register its 8 ports, take its line. cfg may be NULL
 * (COM1, no console). */
int mb_uart_attach(struct mb_machine *m, const struct mb_uart_attach_config *cfg,
		   struct mb_device **out);
/* The PC's COM port n (1-4): base port and line; -EINVAL otherwise. */
int mb_uart_com(unsigned n, uint16_t *port, unsigned *irq);

/* ---- the model on its own (unit tests, other boards) ------------------- */

struct mb_uart_config {
	const struct mb_clock *clock; /* for the RX FIFO character timeout */
	struct mb_irq irq;
	/* The console. The UART sets chr->rx/rx_dev to its receiver and
	 * calls mb_chr_accept() when it has room after refusing bytes. May
	 * be NULL: output is dropped, nothing comes in. */
	struct mb_chr *chr;
	bool relay; /* chr's input is in the relay's form (below) */
};

/* The state: everything the UART needs to go on (registers, the RX FIFO,
 * pending interrupts, the character timeout as time left), then read-only
 * views (registers as the guest would read them, without read side
 * effects) and counters. */
#define MB_UART_STATE(X, S) \
	X(S, u8, ier) X(S, u8, fcr) X(S, u8, lcr) X(S, u8, mcr) \
	X(S, u8, scr) X(S, u8, dll) X(S, u8, dlm) \
	X(S, u8, last_read)        /* RBR's last byte: read again when empty */ \
	X(S, bytes, rx_fifo, 16)   /* received bytes, oldest first */ \
	X(S, u8, lsr_errors)       /* OE 0x02, PE 0x04, FE 0x08, BI 0x10 until LSR is read */ \
	X(S, u8, msr_lines)        /* MSR bits 4-7 as they are now */ \
	X(S, u8, msr_delta)        /* MSR bits 0-3 until MSR is read */ \
	X(S, u8, modem_in)         /* inputs outside loopback (bits 4-7) */ \
	X(S, bool, thre_pending) X(S, bool, timeout_pending) \
	X(S, bool, rx_blocked)     /* refused input: owes the backend an accept */ \
	X(S, u64, timeout_ns)      /* character timeout: ns left, 0 = off */ \
	X(S, ro_u8, rbr) X(S, ro_u8, iir) X(S, ro_u8, lsr) X(S, ro_u8, msr) \
	X(S, ro_u8, rx_count) X(S, ro_u8, rx_trigger) X(S, ro_bool, irq_level) \
	X(S, ro_u64, tx_bytes) X(S, ro_u64, rx_bytes) X(S, ro_u64, overruns)
MB_STATE_STRUCT(mb_uart_state, MB_UART_STATE);
#define MB_UART_STATE_VERSION 1

struct mb_uart *mb_uart_new(const struct mb_uart_config *cfg);
/* Detaches from the backend (chr->rx = NULL) and frees. */
void mb_uart_free(struct mb_uart *uart);
/* Save (any time) and load (guest stopped) the state. Load checks every
 * field first (-EINVAL, message naming it) and changes nothing on error;
 * the read-only fields are ignored, the counters are taken. */
void mb_uart_save(struct mb_uart *uart, struct mb_uart_state *st);
int mb_uart_load(struct mb_uart *uart, const struct mb_uart_state *st);
#define mb_uart_state(u, st) mb_uart_save(u, st) /* the older name */
/* The modem inputs outside loopback, as MSR bits 4-7 (CTS 0x10, DSR
 * 0x20, RI 0x40, DCD 0x80). Default: CTS, DSR and DCD asserted. */
void mb_uart_set_modem(struct mb_uart *uart, uint8_t msr_bits);
/* Fault injection (moonbox/fault.h): the UART asks s about every byte it
 * sends and receives; NULL detaches. mb_uart_of_device: the model of a
 * device mb_uart_attach made, or NULL (another kind, or out of process). */
struct mb_fault_site;
struct mb_device;
int mb_uart_set_fault(struct mb_uart *uart, struct mb_fault_site *s);
/* An observer of every byte at the console's end of the wire (m:on
 * "uart"/"console"): fn sees a byte the guest sent (rx false; after any
 * tx fault) or one the console sends it (before any rx fault), and may
 * change it or set *drop. Runs on the thread of the access (a vCPU for
 * tx, the event loop for rx), outside the UART's lock. Set it once per
 * UART (a reader may still hold an older one); ctx must outlive it. */
typedef void (*mb_uart_hook_fn)(void *ctx, bool rx, uint8_t *byte, bool *drop);
void mb_uart_set_hook(struct mb_uart *uart, mb_uart_hook_fn fn, void *ctx);
struct mb_uart *mb_uart_of_device(struct mb_device *d);

/* An isolated UART's input, as the VMM sends it to the device process on
 * the console relay (docs/devproc.md, "Line errors on the relay"): the
 * VMM has decided every received byte (uart.drop, corrupt and error),
 * and a line error travels in the stream next to its byte. A byte is
 * itself, except ESC: ESC LIT is a 0xff byte; ESC code byte is a byte
 * received with the LSR error bits code & 0x1e, or with DROP in code only
 * the error bits (the byte is lost, and then 0). Anything else (another
 * code, OE without DROP, a lost byte that is not 0) is refused: the three
 * bytes are skipped. mb_uart_relay_rx takes buf[0..len) in that form (on
 * the console's thread, which keeps the decoder's place between calls)
 * and returns how much it took: a byte, marked or not, only when the FIFO
 * has room, as mb_uart_new's receiver. */
#define MB_UART_RELAY_ESC 0xff
#define MB_UART_RELAY_LIT 0x00
#define MB_UART_RELAY_DROP 0x01
#define MB_UART_RELAY_MAX 3 /* the longest sequence */
/* The length of the well-formed sequence at s[0] (the VMM's own: 1-3). */
static inline size_t mb_uart_relay_seq(const uint8_t *s)
{
	return s[0] != MB_UART_RELAY_ESC ? 1 : s[1] == MB_UART_RELAY_LIT ? 2 : 3;
}
size_t mb_uart_relay_rx(struct mb_uart *uart, const uint8_t *buf, size_t len);

extern const struct mb_io_ops mb_uart_ops; /* 8 ports from the base */

#endif
