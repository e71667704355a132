/*
 * National Semiconductor / TI 16550A UART: eight registers at a base port
 * (0x3f8, 0x2f8, 0x3e8, 0x2e8 for COM1-4), 16-byte FIFOs, interrupt output
 * gated by MCR OUT2 as on PC boards, connected to a character backend.
 */
#ifndef DEVICES_UART16550_H
#define DEVICES_UART16550_H

#include "moonbox.h"

struct mb_uart;

struct mb_uart_config {
	const struct mb_clock *clock; /* for the RX FIFO character timeout */
	struct mb_irq irq;
	/* The console. The UART sets chr->rx/rx_dev to its receiver and
	 * calls mb_chr_accept() when it has room after refusing bytes. May
	 * be NULL: output is dropped, nothing comes in. */
	struct mb_chr *chr;
};

struct mb_uart_state {
	/* registers as the guest would read them (without read side
	 * effects); fcr as last written */
	uint8_t rbr, ier, iir, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
	uint8_t rx_count;   /* bytes waiting in the RX FIFO (or RBR) */
	uint8_t rx_trigger; /* 1, 4, 8, 14 */
	uint8_t thre_pending, timeout_pending, irq_level;
	uint64_t tx_bytes, rx_bytes, overruns;
};

struct mb_uart *mb_uart_new(const struct mb_uart_config *cfg);
/* Detaches from the backend (chr->rx = NULL) and frees. */
void mb_uart_free(struct mb_uart *uart);
void mb_uart_state(struct mb_uart *uart, struct mb_uart_state *st);
/* The modem inputs outside loopback, as MSR bits 4-7 (CTS 0x10, DSR
 * 0x20, RI 0x40, DCD 0x80). Default: CTS, DSR and DCD asserted. */
void mb_uart_set_modem(struct mb_uart *uart, uint8_t msr_bits);

extern const struct mb_io_ops mb_uart_ops; /* 8 ports from the base */

#endif
