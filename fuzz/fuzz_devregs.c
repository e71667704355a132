/* libFuzzer: the legacy PC devices (8259A PIC pair, 8254 PIT, 16550A UART,
 * MC146818 RTC, 8042) behind a port bus, wired as the machine wires them
 * (PIT -> IRQ0 with re-injection through the PIC's ack hook, UART -> IRQ4,
 * RTC -> IRQ8) and driven by a hand-moved clock (tests/unit/fake_clock.c).
 *
 * Input: an 8-byte header (wiring options, RTC start time, clock start),
 * then 4-byte operations [kind, arg, v0, v1]: port reads and writes at any
 * offset inside a device's range with sizes 1/2/4, clock steps and jumps,
 * console input, INTA cycles, gate/modem lines, CMOS and state read-outs.
 * Crashes, sanitizer reports, aborts of the invariants checked here and
 * hangs (a self-deadlock is a hang: -timeout) are findings. */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/i8042.h"
#include "moonbox/pic8259.h"
#include "moonbox/pit8254.h"
#include "moonbox/rtc.h"
#include "moonbox/uart16550.h"
/* The fake clock is test code, not part of the library the script builds:
 * compiled into this harness. */
#include "tests/unit/fake_clock.c"

#define NS 1000000000ull
#define STEP_BUDGET (200 * 1000 * 1000ull) /* ns stepped timer by timer */
#define MAX_JUMPS 16

/* Name the invariant that broke: the crash report then says which. */
#define abort_if(bad) abort_at((bad), #bad, __LINE__)
static void abort_at(int bad, const char *what, int line)
{
	if (bad) {
		fprintf(stderr, "fuzz_devregs.c:%d: %s (%s)\n", line, what,
			mb_errmsg());
		abort();
	}
}

/* ---- a console backend that counts, queues input, may echo ------------ */

struct fake_chr {
	struct mb_chr c; /* first */
	uint8_t q[256];
	size_t qlen;
	uint64_t out;
	bool echo;   /* feed written bytes back from inside write() */
	bool sync;   /* deliver from inside accept() (else: the loop does) */
	bool wanted; /* accept() was called */
};

static void chr_deliver(struct fake_chr *f)
{
	f->wanted = false;
	if (!f->qlen || !f->c.rx)
		return;
	size_t n = f->c.rx(f->c.rx_dev, f->q, f->qlen);
	abort_if(n > f->qlen);
	memmove(f->q, f->q + n, f->qlen - n);
	f->qlen -= n;
}

static void chr_queue(struct fake_chr *f, const uint8_t *p, size_t n)
{
	if (n > sizeof f->q - f->qlen)
		n = sizeof f->q - f->qlen;
	memcpy(f->q + f->qlen, p, n);
	f->qlen += n;
}

static void chr_write(struct mb_chr *c, const void *buf, size_t len)
{
	struct fake_chr *f = (struct fake_chr *)c;
	f->out += len;
	if (f->echo && f->c.rx)
		(void)f->c.rx(f->c.rx_dev, buf, len); /* a peer that echoes */
}

static void chr_accept(struct mb_chr *c)
{
	struct fake_chr *f = (struct fake_chr *)c;
	if (f->sync)
		chr_deliver(f);
	else
		f->wanted = true;
}

static const struct mb_chr_ops chr_ops = { chr_write, chr_accept, NULL };

/* ---- callbacks -------------------------------------------------------- */

static unsigned notifies, resets;
static void pic_notify(void *opaque) { notifies++; }
static void kbc_reset(void *opaque) { resets++; }

/* ---- the ports ------------------------------------------------------- */

static const struct {
	uint16_t base, len;
} ports[9] = {
	{ 0x20, 2 }, { 0xa0, 2 }, { 0x4d0, 2 }, { 0x40, 4 }, { 0x61, 1 },
	{ 0x3f8, 8 }, { 0x70, 2 }, { 0x60, 1 }, { 0x64, 1 },
};

static void check(struct mb_pic *pic, struct mb_pit *pit, struct mb_uart *uart,
		  struct mb_rtc *rtc, struct mb_i8042 *kbc)
{
	struct mb_pic_state ps;
	struct mb_pit_state ts;
	struct mb_uart_state us;
	struct mb_rtc_state rs;
	struct mb_i8042_state ks;
	mb_pic_state(pic, &ps);
	abort_if(ps.master.lowest > 7 || ps.slave.lowest > 7);
	abort_if(ps.spurious > ps.acks);
	mb_pit_state(pit, &ts);
	for (int i = 0; i < 3; i++) {
		abort_if(ts.channels[i].mode > 5 || ts.channels[i].rw > 3);
		abort_if(ts.channels[i].reload == 0 || ts.channels[i].reload > 65536);
	}
	mb_uart_state(uart, &us);
	abort_if(us.rx_count > 16);
	abort_if(us.rx_trigger != 1 && us.rx_trigger != 4 &&
		 us.rx_trigger != 8 && us.rx_trigger != 14);
	abort_if(!(us.lsr & 0x60)); /* THRE and TEMT: transmission is instant */
	mb_rtc_state(rtc, &rs);
	abort_if(rs.index > 0x7f || (rs.a & 0x80 && rs.b & 0x80));
	mb_i8042_state(kbc, &ks);
	/* Every state the guest can reach loads back (load's checks are not
	 * stricter than the device). */
	abort_if(mb_pic_load(pic, &ps));
	abort_if(mb_pit_load(pit, &ts));
	abort_if(mb_rtc_load(rtc, &rs));
	abort_if(mb_i8042_load(kbc, &ks));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8)
		return 0;
	uint8_t opt = data[0];
	int64_t start_ns = (int64_t)mb_io_get(data + 1, 4) * (int64_t)NS +
			   (int64_t)mb_io_get(data + 5, 2) * 15259;
	uint64_t clock0 = (uint64_t)data[7] * 7777777ull;
	data += 8, size -= 8;

	notifies = resets = 0;
	struct fake_clock *fc = fake_clock_new(clock0);
	abort_if(!fc);
	struct mb_pic_config pc = { pic_notify, NULL };
	struct mb_pic *pic = mb_pic_new(&pc);
	struct mb_pit_config tc = { &fc->clock, { mb_pic_irq_set, pic, 0 } };
	struct mb_pit *pit = mb_pit_new(&tc);
	static struct fake_chr chr;
	memset(&chr, 0, sizeof chr);
	chr.c.ops = &chr_ops;
	chr.echo = opt & 0x02;
	chr.sync = opt & 0x04;
	struct mb_uart_config ucfg = { .clock = (opt & 0x08) ? NULL : &fc->clock,
				       .irq = { mb_pic_irq_set, pic, 4 }, .chr = &chr.c };
	struct mb_uart *uart = mb_uart_new(&ucfg);
	struct mb_rtc_config rc = { &fc->clock, { mb_pic_irq_set, pic, 8 },
				    start_ns };
	struct mb_rtc *rtc = mb_rtc_new(&rc);
	struct mb_i8042_config kc = { kbc_reset, NULL };
	struct mb_i8042 *kbc = mb_i8042_new(&kc);
	struct mb_bus *bus = mb_bus_new("pio", 0x10000);
	abort_if(!pic || !pit || !uart || !rtc || !kbc || !bus);
	if (opt & 0x01) { /* as mb_pit_attach does with the userspace PIC */
		mb_pic_on_ack(pic, 0, mb_pit_irq_acked, pit);
		mb_pit_set_reinject(pit, true);
	}
	bool auto_ack = opt & 0x10, auto_eoi = opt & 0x20;
	const struct mb_io_ops *ops[9] = {
		&mb_pic_master_ops, &mb_pic_slave_ops, &mb_pic_elcr_ops,
		&mb_pit_ops, &mb_pit_port61_ops, &mb_uart_ops, &mb_rtc_ops,
		&mb_i8042_data_ops, &mb_i8042_cmd_ops,
	};
	void *devs[9] = { pic, pic, pic, pit, pit, uart, rtc, kbc, kbc };
	for (unsigned i = 0; i < 9; i++)
		abort_if(mb_bus_register(bus, ports[i].base, ports[i].len, ops[i],
					 devs[i], "dev") != 0);

	uint64_t stepped = 0;
	unsigned jumps = 0;
	for (; size >= 4; data += 4, size -= 4) {
		uint8_t kind = data[0] % 16, arg = data[1];
		uint16_t v = (uint16_t)(data[2] | data[3] << 8);
		switch (kind) {
		case 0: case 1: case 2: case 3: case 4:
		case 5: case 6: case 7: case 8: {
			static const unsigned sizes[4] = { 1, 1, 2, 4 };
			unsigned sz = sizes[arg >> 1 & 3];
			unsigned len = ports[kind].len;
			unsigned off = (arg >> 3) % len;
			/* mostly inside the range; sometimes straddling it
			 * (the bus leaves those unclaimed) */
			if (off + sz > len && !(arg & 0x80))
				off = sz <= len ? len - sz : 0;
			uint8_t buf[4];
			uint32_t val = v | (uint32_t)(v ^ 0x5aa5) << 16;
			mb_io_put(buf, 4, val);
			if (arg & 1) {
				mb_bus_write(bus, ports[kind].base + off, buf, sz);
			} else {
				memset(buf, 0xcc, sizeof buf);
				mb_bus_read(bus, ports[kind].base + off, buf, sz);
			}
			break;
		}
		case 9: { /* step: every timer fires at its own deadline */
			uint64_t ns = (uint64_t)v << (arg % 12);
			if (stepped + ns > STEP_BUDGET)
				ns = STEP_BUDGET - stepped;
			stepped += ns;
			fake_clock_advance(fc, ns);
			break;
		}
		case 10: /* jump: time passes, timers fire once, late */
			if (jumps++ < MAX_JUMPS) {
				fc->now += (uint64_t)v << (arg % 30);
				fake_clock_advance(fc, 0);
			}
			break;
		case 11: { /* console input */
			uint8_t in[32];
			size_t n = (size_t)(arg % 32) + 1;
			for (size_t i = 0; i < n; i++)
				in[i] = (uint8_t)(v + i * (v >> 8));
			chr_queue(&chr, in, n);
			chr_deliver(&chr);
			break;
		}
		case 12: /* an INTA cycle, pending or not */
			(void)mb_pic_ack(pic);
			break;
		case 13:
			if (arg & 1)
				mb_pit_set_gate(pit, v % 4, v & 0x100);
			else
				mb_uart_set_modem(uart, (uint8_t)v);
			break;
		case 14: {
			uint8_t b = 0;
			if (arg & 1) {
				int rc = mb_rtc_set_cmos(rtc, v & 0xff, (uint8_t)(v >> 8));
				abort_if((rc != 0) != ((v & 0xff) > 0x7f));
			} else {
				int rc = mb_rtc_get_cmos(rtc, v & 0xff, &b);
				abort_if((rc != 0) != ((v & 0xff) > 0x7f));
			}
			check(pic, pit, uart, rtc, kbc);
			break;
		}
		default: /* another device's line */
			mb_pic_set_irq(pic, v % 17, arg & 1);
			break;
		}
		if (chr.wanted)
			chr_deliver(&chr);
		/* A vCPU with interrupts enabled takes what is pending. */
		for (int n = 0; auto_ack && n < 4 && mb_pic_pending(pic); n++) {
			int vec = mb_pic_ack(pic);
			abort_if(vec < 0 || vec > 255);
			if (auto_eoi) {
				uint8_t eoi = 0x20;
				struct mb_pic_state ps;
				mb_pic_state(pic, &ps);
				if (ps.slave.isr)
					mb_bus_write(bus, 0xa0, &eoi, 1);
				mb_bus_write(bus, 0x20, &eoi, 1);
			}
		}
	}
	check(pic, pit, uart, rtc, kbc);

	mb_bus_free(bus);
	mb_uart_free(uart);
	abort_if(chr.c.rx != NULL);
	mb_i8042_free(kbc);
	mb_rtc_free(rtc);
	mb_pit_free(pit);
	mb_pic_free(pic);
	abort_if(fc->timers != NULL); /* every device freed its timer */
	fake_clock_free(fc);
	return 0;
}
