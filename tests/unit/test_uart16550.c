/* 16550A UART register by register (TI PC16550D data sheet). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "moonbox/uart16550.h"
#include "fake_clock.h"

enum { RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR };
#define THR RBR
#define FCR IIR
#define DLL RBR
#define DLM IER

static struct fake_clock *fc;
static struct fake_irq irq;
static struct mb_uart *uart;

/* A backend that records output and holds input the UART refused. */
static struct fake_chr {
	struct mb_chr chr;
	uint8_t out[256];
	size_t nout;
	const uint8_t *in;
	size_t nin;
	unsigned accepts;
} con;

static void con_write(struct mb_chr *c, const void *buf, size_t len)
{
	memcpy(con.out + con.nout, buf, len);
	con.nout += len;
}

static void feed(void)
{
	size_t n = con.chr.rx(con.chr.rx_dev, con.in, con.nin);
	con.in += n;
	con.nin -= n;
}

static void con_accept(struct mb_chr *c)
{
	con.accepts++;
	feed(); /* re-enters the UART, as a real backend may */
}

static const struct mb_chr_ops con_ops = { con_write, con_accept, NULL };

static void input(const char *s)
{
	con.in = (const uint8_t *)s;
	con.nin = strlen(s);
	feed();
}

static void out(unsigned reg, uint8_t v)
{
	mb_uart_ops.write(uart, reg, &v, 1);
}

static uint8_t in(unsigned reg)
{
	uint8_t v;
	mb_uart_ops.read(uart, reg, &v, 1);
	return v;
}

static int setup(void **state)
{
	fc = fake_clock_new(5000);
	irq = (struct fake_irq){ 0 };
	memset(&con, 0, sizeof(con));
	con.chr.ops = &con_ops;
	struct mb_uart_config cfg = { .clock = &fc->clock, .irq = fake_irq_line(&irq),
				      .chr = &con.chr };
	uart = mb_uart_new(&cfg);
	assert_ptr_equal(con.chr.rx_dev, uart);
	/* 115200 8N1, OUT2 on (the PC's interrupt gate) */
	out(LCR, 0x83);
	out(DLL, 1);
	out(DLM, 0);
	out(LCR, 0x03);
	out(MCR, 0x0b);
	return uart ? 0 : -1;
}

static int teardown(void **state)
{
	mb_uart_free(uart);
	assert_null(con.chr.rx);
	fake_clock_free(fc);
	return 0;
}

static void test_dlab_and_scratch(void **state)
{
	out(LCR, 0x80);
	out(DLL, 0x34);
	out(DLM, 0x12);
	assert_int_equal(in(DLL), 0x34);
	assert_int_equal(in(DLM), 0x12);
	out(LCR, 0x1b);
	assert_int_equal(in(LCR), 0x1b);
	out(IER, 0xff);
	assert_int_equal(in(IER), 0x0f); /* four enable bits only */
	out(IER, 0);
	out(LCR, 0x80);
	assert_int_equal(in(DLM), 0x12); /* IER writes left DLM alone */
	out(THR, 'x');                   /* DLAB: THR is DLL */
	assert_int_equal(in(DLL), 'x');
	assert_int_equal(con.nout, 0);
	out(LCR, 0x03);
	out(SCR, 0xa5);
	assert_int_equal(in(SCR), 0xa5);
	assert_int_equal(in(MCR), 0x0b);
	out(MCR, 0xff);
	assert_int_equal(in(MCR), 0x1f);
	assert_int_equal(in(LSR), 0x60); /* THRE, TEMT */
	assert_int_equal(in(IIR), 0x01); /* no FIFO, nothing pending */
}

static void test_thre_interrupt(void **state)
{
	out(IER, 0x02);
	assert_int_equal(irq.level, 1);
	assert_int_equal(in(IIR), 0x02);
	/* The IIR read that reported THRE cleared it. */
	assert_int_equal(irq.level, 0);
	assert_int_equal(in(IIR), 0x01);
	/* A THR write clears THRE; the byte leaves at once and THRE comes
	 * back with a new edge. */
	out(THR, 'A');
	assert_int_equal(con.nout, 1);
	assert_int_equal(con.out[0], 'A');
	assert_int_equal(irq.level, 1);
	assert_int_equal(irq.raises, 2);
	/* Still pending (no IIR read) and the write gives another edge. */
	out(THR, 'B');
	assert_int_equal(irq.raises, 3);
	/* Re-enabling ETBEI re-raises it (Linux's UART_BUG_THRE probe). */
	in(IIR);
	out(IER, 0x00);
	assert_int_equal(in(IIR), 0x01);
	out(IER, 0x02);
	assert_int_equal(in(IIR), 0x02);
	/* Writing ETBEI again while set does not. */
	out(IER, 0x02);
	assert_int_equal(in(IIR), 0x01);
	/* OUT2 off: the source stays, the line is gated. */
	out(IER, 0x00);
	out(MCR, 0x03);
	out(IER, 0x02);
	assert_int_equal(irq.level, 0);
	out(MCR, 0x0b);
	assert_int_equal(irq.level, 1);
}

static void test_rx_no_fifo(void **state)
{
	out(IER, 0x01);
	input("ab");
	/* 16450 mode: one byte of room, the backend keeps the other. */
	assert_int_equal(con.nin, 1);
	assert_int_equal(in(LSR) & 0x01, 0x01);
	assert_int_equal(in(IIR), 0x04);
	assert_int_equal(irq.level, 1);
	assert_int_equal(in(RBR), 'a');
	assert_int_equal(con.accepts, 1);
	assert_int_equal(con.nin, 0);
	assert_int_equal(in(RBR), 'b');
	assert_int_equal(in(LSR) & 0x01, 0x00);
	assert_int_equal(in(IIR), 0x01);
	assert_int_equal(irq.level, 0);
	assert_int_equal(con.accepts, 1); /* nothing was refused since */
}

static void test_fifo_trigger_levels(void **state)
{
	static const uint8_t fcr[4] = { 0x01, 0x41, 0x81, 0xc1 };
	static const unsigned level[4] = { 1, 4, 8, 14 };
	out(IER, 0x01);
	for (unsigned i = 0; i < 4; i++) {
		out(FCR, fcr[i] | 0x02); /* also clear RX */
		for (unsigned n = 1; n <= 16; n++) {
			input("z");
			assert_int_equal(in(IIR), n >= level[i] ? 0xc4 : 0xc1);
		}
		struct mb_uart_state st;
		mb_uart_state(uart, &st);
		assert_int_equal(st.rx_count, 16);
		assert_int_equal(st.rx_trigger, level[i]);
	}
	/* Full: the next byte is refused, not overrun. */
	input("q");
	assert_int_equal(con.nin, 1);
	assert_int_equal(in(LSR) & 0x02, 0);
	assert_int_equal(in(RBR), 'z');
	assert_int_equal(con.nin, 0); /* accept() let it in */
	/* Turning FIFOs off empties them. */
	out(FCR, 0x00);
	assert_int_equal(in(LSR) & 0x01, 0);
	assert_int_equal(in(IIR), 0x01);
}

static void test_char_timeout(void **state)
{
	const uint64_t four_chars = 4ull * 10 * 1000000000ull / 115200;
	out(FCR, 0x81); /* trigger 8 */
	out(IER, 0x01);
	input("abc");
	assert_int_equal(in(IIR), 0xc1);
	fake_clock_advance(fc, four_chars - 1);
	assert_int_equal(in(IIR), 0xc1);
	assert_int_equal(irq.level, 0);
	fake_clock_advance(fc, 1);
	assert_int_equal(in(IIR), 0xcc);
	assert_int_equal(irq.level, 1);
	/* Reading a byte clears it and restarts the timer. */
	assert_int_equal(in(RBR), 'a');
	assert_int_equal(in(IIR), 0xc1);
	fake_clock_advance(fc, four_chars / 2);
	input("d"); /* new data restarts the timer too */
	fake_clock_advance(fc, four_chars - 1);
	assert_int_equal(in(IIR), 0xc1);
	fake_clock_advance(fc, 1);
	assert_int_equal(in(IIR), 0xcc);
	assert_int_equal(in(RBR), 'b');
	assert_int_equal(in(RBR), 'c');
	assert_int_equal(in(RBR), 'd');
	assert_int_equal(in(LSR) & 0x01, 0);
	fake_clock_advance(fc, four_chars * 3);
	assert_int_equal(in(IIR), 0xc1); /* empty FIFO: no timeout */
	/* Slower rate, longer timeout: 9600 baud, 7E2 = 11 bits. */
	out(LCR, 0x80);
	out(DLL, 12);
	out(LCR, 0x1e);
	input("x");
	const uint64_t slow = 4ull * 11 * 12 * 1000000000ull / 115200;
	fake_clock_advance(fc, slow - 1000);
	assert_int_equal(in(IIR), 0xc1);
	fake_clock_advance(fc, 1000);
	assert_int_equal(in(IIR), 0xcc);
}

static void test_overrun_and_line_status(void **state)
{
	struct mb_uart_state st;
	out(MCR, 0x18); /* loopback, OUT2 */
	out(IER, 0x05); /* RX data and line status */
	out(FCR, 0x01); /* FIFO, trigger 1 */
	for (unsigned i = 0; i < 17; i++)
		out(THR, (uint8_t)('a' + i));
	assert_int_equal(con.nout, 0); /* loopback: nothing on the wire */
	assert_int_equal(in(IIR), 0xc6); /* line status first */
	assert_int_equal(in(LSR), 0x63);  /* DR, OE, THRE, TEMT */
	assert_int_equal(in(LSR), 0x61);  /* OE cleared by the read */
	assert_int_equal(in(IIR), 0xc4);
	mb_uart_state(uart, &st);
	assert_int_equal(st.rx_count, 16);
	assert_int_equal(st.overruns, 1);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(in(RBR), 'a' + i); /* 'q' was lost */
	/* 16450 mode: the new byte overwrites RBR. */
	out(FCR, 0x00);
	out(THR, '1');
	out(THR, '2');
	assert_int_equal(in(LSR), 0x63);
	assert_int_equal(in(RBR), '2');
}

/* Twenty bytes into the 16-byte FIFO (16550D, LSR bit 1): the FIFO keeps
 * the first sixteen, each later character is overwritten in the shift
 * register and never reaches the FIFO; OE is set once, every lost byte is
 * counted. */
static void test_overrun_keeps_first_16(void **state)
{
	struct mb_uart_state st;
	out(MCR, 0x18); /* loopback, OUT2 */
	out(IER, 0x05);
	out(FCR, 0xc1); /* FIFO, trigger 14 */
	for (unsigned i = 0; i < 20; i++)
		out(THR, (uint8_t)('A' + i));
	mb_uart_state(uart, &st);
	assert_int_equal(st.rx_count, 16);
	assert_int_equal(st.rx_bytes, 16);
	assert_int_equal(st.overruns, 4);
	assert_int_equal(st.tx_bytes, 20);
	assert_int_equal(in(IIR), 0xc6);
	assert_int_equal(in(LSR), 0x63);
	assert_int_equal(in(IIR), 0xc4); /* OE read: the data is next */
	for (unsigned i = 0; i < 16; i++) {
		assert_int_equal(in(LSR), 0x61);
		assert_int_equal(in(RBR), 'A' + i);
	}
	assert_int_equal(in(LSR), 0x60);
	/* Reading an empty FIFO gives the last byte again, no new error. */
	assert_int_equal(in(RBR), 'P');
	assert_int_equal(in(LSR), 0x60);
	assert_int_equal(in(IIR), 0xc1);
	mb_uart_state(uart, &st);
	assert_int_equal(st.overruns, 4);
}

/* Reading and writing on without a FIFO clear: the FIFO is a ring, bytes
 * come out in order across its wrap, and an overrun after the wrap still
 * loses the newest byte, not one inside the FIFO. */
static void test_fifo_wraps(void **state)
{
	struct mb_uart_state st;
	out(MCR, 0x18);
	out(FCR, 0x01);
	for (unsigned i = 0; i < 16; i++)
		out(THR, (uint8_t)('a' + i)); /* a..p */
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(in(RBR), 'a' + i);
	for (unsigned i = 0; i < 6; i++)
		out(THR, (uint8_t)('q' + i)); /* q..u fit, v overruns */
	mb_uart_state(uart, &st);
	assert_int_equal(st.rx_count, 16);
	assert_int_equal(st.overruns, 1);
	assert_int_equal(in(LSR), 0x63);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(in(RBR), 'f' + i); /* f..u */
	assert_int_equal(in(LSR), 0x60);
	/* Once more round the ring, from where the reads left it. */
	for (unsigned i = 0; i < 16; i++)
		out(THR, (uint8_t)('0' + i));
	assert_int_equal(in(LSR), 0x61);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(in(RBR), '0' + i);
	assert_int_equal(in(LSR), 0x60);
	mb_uart_state(uart, &st);
	assert_int_equal(st.rx_bytes, 37);
	assert_int_equal(st.overruns, 1);
}

/* From the backend, more than a FIFO's worth: the UART takes sixteen, the
 * backend keeps the rest and sends it as the guest reads, so nothing is
 * lost and nothing overruns. */
static void test_rx_beyond_fifo_from_backend(void **state)
{
	static const char text[] = "The quick brown fox jumps over the lazy dog.";
	struct mb_uart_state st;
	out(FCR, 0x01);
	input(text);
	assert_int_equal(con.nin, sizeof text - 1 - 16);
	for (size_t i = 0; i < sizeof text - 1; i++) {
		assert_int_equal(in(LSR) & 0x03, 0x01);
		assert_int_equal(in(RBR), (uint8_t)text[i]);
	}
	assert_int_equal(in(LSR), 0x60);
	assert_int_equal(con.nin, 0);
	mb_uart_state(uart, &st);
	assert_int_equal(st.rx_bytes, sizeof text - 1);
	assert_int_equal(st.overruns, 0);
}

/* Transmission is instant: more than sixteen THR writes in FIFO mode all
 * reach the backend, in order, and THR never fills. */
static void test_tx_beyond_fifo(void **state)
{
	struct mb_uart_state st;
	out(FCR, 0x07); /* FIFO, clear both */
	for (unsigned i = 0; i < 40; i++) {
		out(THR, (uint8_t)(' ' + i));
		assert_int_equal(in(LSR), 0x60);
	}
	assert_int_equal(con.nout, 40);
	for (unsigned i = 0; i < 40; i++)
		assert_int_equal(con.out[i], ' ' + i);
	mb_uart_state(uart, &st);
	assert_int_equal(st.tx_bytes, 40);
	assert_int_equal(st.rx_count, 0);
	assert_int_equal(st.overruns, 0);
}

static void test_loopback_modem(void **state)
{
	in(MSR);
	out(MCR, 0x1a); /* Linux's probe: LOOP | OUT2 | RTS */
	assert_int_equal(in(MSR) & 0xf0, 0x90);
	out(MCR, 0x1f);
	assert_int_equal(in(MSR), 0xf2); /* all four, DDSR from DTR */
	out(MCR, 0x1b);                 /* OUT1 (RI) falls: TERI */
	assert_int_equal(in(MSR), 0xb4);
	assert_int_equal(in(MSR), 0xb0); /* deltas cleared by reading */
	/* Modem status interrupt is the lowest priority. */
	out(IER, 0x0a);
	in(IIR);
	out(MCR, 0x19); /* RTS off: DCTS */
	assert_int_equal(in(IIR), 0x00);
	assert_int_equal(irq.level, 1);
	in(MSR);
	assert_int_equal(in(IIR), 0x01);
	/* Out of loopback the external inputs come back. */
	out(MCR, 0x0b);
	assert_int_equal(in(MSR), 0xb1); /* CTS came back: DCTS */
	mb_uart_set_modem(uart, 0x30);
	assert_int_equal(in(MSR), 0x38);
}

static void test_loopback_rx_interrupt(void **state)
{
	out(MCR, 0x18);
	out(IER, 0x01);
	out(THR, 'L');
	assert_int_equal(irq.level, 1);
	assert_int_equal(in(IIR), 0x04);
	assert_int_equal(in(RBR), 'L');
	assert_int_equal(irq.level, 0);
	/* The wire is disconnected in loopback: input waits... */
	input("w");
	assert_int_equal(con.nin, 1);
	assert_int_equal(in(LSR) & 1, 0);
	/* ...and comes in when loopback ends. */
	out(MCR, 0x08);
	assert_int_equal(con.nin, 0);
	assert_int_equal(in(RBR), 'w');
}

static void test_iir_priority(void **state)
{
	out(FCR, 0x01);
	out(MCR, 0x18);
	out(IER, 0x0f);
	for (unsigned i = 0; i < 17; i++)
		out(THR, 'p');
	out(MCR, 0x1a); /* CTS rises: modem status */
	assert_int_equal(in(IIR), 0xc6);
	in(LSR);
	assert_int_equal(in(IIR), 0xc4);
	out(FCR, 0x03); /* clear RX */
	assert_int_equal(in(IIR), 0xc2);
	assert_int_equal(in(IIR), 0xc0);
	in(MSR);
	assert_int_equal(in(IIR), 0xc1);
	assert_int_equal(irq.level, 0);
}

/* Mid-activity: FIFO on and half full (below its trigger of 14), the
 * character timeout running, a THRE interrupt pending. A second UART (its
 * own clock at the same time) loaded from the state saves the same, its
 * timeout fires at the same moment and its FIFO reads out the same bytes. */
static void test_state_round_trip(void **state)
{
	const uint64_t four_chars = 4ull * 10 * 1000000000ull / 115200;
	out(FCR, 0xc1); /* FIFO, trigger 14 */
	out(IER, 0x03); /* RDA (and its timeout), THRE */
	out(SCR, 0x5a);
	input("abcdefgh");
	assert_int_equal(in(RBR), 'a');
	fake_clock_advance(fc, four_chars / 3);
	struct mb_uart_state a, b;
	mb_uart_save(uart, &a);
	assert_int_equal(a.rx_fifo_len, 7);
	assert_true(a.timeout_ns > 0 && a.timeout_ns < four_chars);
	assert_true(a.thre_pending);

	struct fake_clock *fc2 = fake_clock_new(fc->now);
	struct fake_irq irq2 = { 0 };
	struct fake_chr con2 = { .chr.ops = &con_ops };
	struct mb_uart_config cfg = { .clock = &fc2->clock, .irq = fake_irq_line(&irq2),
				      .chr = &con2.chr };
	struct mb_uart *u2 = mb_uart_new(&cfg);
	assert_int_equal(mb_uart_load(u2, &a), 0);
	mb_uart_save(u2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	assert_int_equal(irq2.level, irq.level);

	/* Both go on alike: the timeout fires at the same moment. */
	fake_clock_advance(fc, a.timeout_ns - 1);
	fake_clock_advance(fc2, a.timeout_ns - 1);
	struct mb_uart *keep = uart;
	for (int i = 0; i < 2; i++) {
		uart = i ? u2 : keep;
		assert_int_equal(in(IIR), 0xc2); /* THRE: the timeout not yet */
	}
	fake_clock_advance(fc, 1);
	fake_clock_advance(fc2, 1);
	for (int i = 0; i < 2; i++) {
		uart = i ? u2 : keep;
		assert_int_equal(in(IIR), 0xcc);
		for (const char *c = "bcdefgh"; *c; c++)
			assert_int_equal(in(RBR), *c);
		assert_int_equal(in(SCR), 0x5a);
	}
	uart = keep;

	/* A refused field names itself and changes nothing. */
	mb_uart_save(u2, &a);
	b = a;
	b.ier = 0xff;
	assert_int_not_equal(mb_uart_load(u2, &b), 0);
	assert_non_null(strstr(mb_errmsg(), "ier"));
	b = a;
	b.rx_fifo_len = 17;
	assert_int_not_equal(mb_uart_load(u2, &b), 0);
	assert_non_null(strstr(mb_errmsg(), "rx_fifo"));
	mb_uart_save(u2, &b);
	assert_memory_equal(&a, &b, sizeof a);
	mb_uart_free(u2);
	fake_clock_free(fc2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dlab_and_scratch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_no_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fifo_trigger_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_char_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overrun_and_line_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overrun_keeps_first_16, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fifo_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_beyond_fifo_from_backend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_beyond_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loopback_modem, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loopback_rx_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_iir_priority, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
