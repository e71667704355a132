/* Fault rules inside an isolated model, the VMM's side and the wire
 * (core/devproc_fault.c): a FAULT question decided on the real site, "no
 * fault" for a device with no rule or a question no model asks, holds
 * counted by the plan and released by token, and the verdict's wire form
 * checked against what a rule can give. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/devproc_fault.h"
#include "moonbox/uart16550.h"

struct q {
	struct mb_dp_hdr h;
	struct mb_dp_fault_event e;
};
struct a {
	struct mb_dp_hdr h;
	struct mb_dp_fault_verdict w;
};

static char released[4][MB_FAULT_TAG_MAX];
static unsigned nreleased;

static void on_release(void *ctx, const char *tok)
{
	(void)ctx;
	if (nreleased < 4)
		strcpy(released[nreleased], tok);
	nreleased++;
}

static size_t ask(struct mb_dp_faults *f, unsigned op, uint64_t sector,
		  uint64_t seq, struct a *out)
{
	struct q q = { { .id = 7, .cmd = MB_DP_FAULT, .size = sizeof q },
		       { seq, sector, 1, op, 0 } };
	memset(out, 0, sizeof *out);
	return mb_dp_fault_serve(f, (const uint8_t *)&q, sizeof q, (uint8_t *)out,
				 sizeof *out);
}

static void test_serve(void **state)
{
	struct mb_dp_faults f;
	struct a a;
	mb_dp_faults_init(&f, on_release, NULL);
	/* no model rule: every well-formed question gets "no fault" */
	assert_int_equal(ask(&f, MB_FAULT_OP_READ, 3, 1, &a), sizeof a);
	assert_int_equal(a.h.id, 7);
	assert_int_equal(a.h.flags, MB_DP_F_REPLY);
	assert_int_equal(a.w.flags, 0);

	struct mb_fault_plan *p;
	struct mb_fault_plan_config c = { .seed = 1 };
	assert_int_equal(mb_fault_plan_new(NULL, &c, &p), 0);
	struct mb_fault_rule e = { .action = MB_FAULT_BLK_ERROR, .dev = "disk",
				   .ops = MB_FAULT_OP_READ, .first = 3, .last = 5,
				   .status = VIRTIO_BLK_S_IOERR };
	struct mb_fault_rule h = { .action = MB_FAULT_BLK_HOLD, .dev = "disk",
				   .ops = MB_FAULT_OP_WRITE, .first = 1, .tag = "slow" };
	assert_int_equal(mb_fault_plan_add(p, &e), 1);
	assert_int_equal(mb_fault_plan_add(p, &h), 2);
	struct mb_fault_site *s = mb_fault_plan_site(p, "disk");
	assert_int_equal(mb_fault_site_install(&f.site, s), 0);

	assert_int_equal(ask(&f, MB_FAULT_OP_READ, 4, 1, &a), sizeof a);
	assert_int_equal(a.w.flags, MB_DP_FV_ERROR);
	assert_int_equal(a.w.status, VIRTIO_BLK_S_IOERR);
	assert_int_equal(ask(&f, MB_FAULT_OP_READ, 9, 2, &a), sizeof a);
	assert_int_equal(a.w.flags, 0);
	struct mb_fault_rule_stats st;
	assert_int_equal(mb_fault_plan_stats(p, 1, &st), 0);
	assert_int_equal(st.matched, 1);

	/* two ops at once, none, or unknown bits: no model asks that */
	assert_int_equal(ask(&f, MB_FAULT_OP_READ | MB_FAULT_OP_WRITE, 4, 3, &a), sizeof a);
	assert_int_equal(a.w.flags, 0);
	assert_int_equal(ask(&f, 0, 4, 3, &a), sizeof a);
	assert_int_equal(ask(&f, 16, 4, 3, &a), sizeof a);
	assert_int_equal(a.w.flags, 0);
	assert_int_equal(atomic_load(&f.refused), 3);
	assert_int_equal(mb_fault_plan_stats(p, 1, &st), 0);
	assert_int_equal(st.matched, 1);

	/* malformed: not answered */
	struct q q = { { .id = 1, .cmd = MB_DP_FAULT, .size = sizeof q }, { 0 } };
	assert_int_equal(mb_dp_fault_serve(&f, (uint8_t *)&q, sizeof q - 1, (uint8_t *)&a,
					   sizeof a), 0);
	q.h.size = sizeof q + 1;
	assert_int_equal(mb_dp_fault_serve(&f, (uint8_t *)&q, sizeof q, (uint8_t *)&a,
					   sizeof a), 0);
	q.h.size = sizeof q, q.h.flags = MB_DP_F_REPLY;
	assert_int_equal(mb_dp_fault_serve(&f, (uint8_t *)&q, sizeof q, (uint8_t *)&a,
					   sizeof a), 0);

	/* a hold: the plan counts it under its tag, the process gets a token */
	assert_int_equal(ask(&f, MB_FAULT_OP_WRITE, 0, 4, &a), sizeof a);
	assert_int_equal(a.w.flags, MB_DP_FV_HOLD);
	assert_string_equal(a.w.tag, "#1");
	assert_int_equal(ask(&f, MB_FAULT_OP_WRITE, 0, 5, &a), sizeof a);
	assert_string_equal(a.w.tag, "#2");
	assert_int_equal(mb_fault_plan_held(p, "slow"), 2);
	assert_int_equal(mb_fault_plan_release(p, "slow"), 2);
	assert_int_equal(nreleased, 2);
	assert_string_equal(released[0], "#1");
	assert_string_equal(released[1], "#2");
	/* one held when the process dies: dropped, its release posted */
	assert_int_equal(ask(&f, MB_FAULT_OP_WRITE, 0, 6, &a), sizeof a);
	assert_int_equal(mb_fault_plan_held(p, NULL), 1);
	mb_dp_faults_drop_holds(&f);
	assert_int_equal(mb_fault_plan_held(p, NULL), 0);
	assert_int_equal(nreleased, 3);

	mb_dp_faults_fini(&f);
	mb_fault_plan_free(p);
}

static void test_wire(void **state)
{
	struct mb_fault_verdict v = { .error = true, .status = VIRTIO_BLK_S_UNSUPP,
				      .ms = 5, .corrupt = true, .key = 99, .first = 2,
				      .last = 9, .bytes = 3, .torn = true, .keep = 2,
				      .dup = 4, .reorder = 3, .reorder_ms = 7,
				      .delay_ms = 11, .rate = 1000, .rate_ms = 20,
				      .bad_id = true, .has_id = true, .used_id = 5,
				      .flip = 0x81, .lsr = MB_FAULT_LSR_FE, .pulses = 2 };
	struct mb_dp_fault_verdict w, w2;
	struct mb_fault_verdict back;
	mb_dp_fault_to_wire(&v, &w);
	assert_int_equal(mb_dp_fault_from_wire(&w, &back), 0);
	assert_true(back.error && back.corrupt && back.torn && back.bad_id && back.has_id);
	assert_false(back.hold || back.drop || back.lie || back.kill);
	assert_int_equal(back.status, v.status);
	assert_int_equal(back.ms, 5);
	assert_int_equal(back.key, 99);
	assert_int_equal(back.first, 2);
	assert_int_equal(back.last, 9);
	assert_int_equal(back.bytes, 3);
	assert_int_equal(back.keep, 2);
	assert_int_equal(back.dup, 4);
	assert_int_equal(back.reorder, 3);
	assert_int_equal(back.reorder_ms, 7);
	assert_int_equal(back.delay_ms, 11);
	assert_int_equal(back.rate, 1000);
	assert_int_equal(back.rate_ms, 20);
	assert_int_equal(back.used_id, 5);
	assert_int_equal(back.flip, 0x81);
	assert_int_equal(back.lsr, MB_FAULT_LSR_FE);
	assert_int_equal(back.pulses, 2);

	/* each field past what a rule gives: none of it applies */
#define BAD(stmt)                                                         \
	do {                                                              \
		w2 = w;                                                   \
		stmt;                                                     \
		assert_int_equal(mb_dp_fault_from_wire(&w2, &back), -EINVAL); \
		assert_false(back.error || back.corrupt || back.torn);    \
	} while (0)
	BAD(w2.flags |= 0x100);
	BAD(w2.status = 0);
	BAD(w2.status = 7);
	BAD(w2.ms = 3600001);
	BAD(w2.bytes = 513);
	BAD(w2.pulses = 1001);
	BAD(w2.dup = 17);
	BAD(w2.reorder = 65);
	BAD(w2.reorder_ms = 60001);
	BAD(w2.delay_ms = 120001);
	BAD(w2.rate_ms = 60001);
	BAD(w2.rate = 7);
	BAD(w2.rate = (1ull << 40) + 1);
	BAD(w2.lsr = 0x01);
	BAD(memset(w2.tag, 'x', sizeof w2.tag));
	BAD((w2.flags |= MB_DP_FV_HOLD, strcpy(w2.tag, "slow")));
	w2 = w;
	w2.flags |= MB_DP_FV_HOLD;
	strcpy(w2.tag, "#3");
	assert_int_equal(mb_dp_fault_from_wire(&w2, &back), 0);
	assert_true(back.hold);
	assert_string_equal(back.tag, "#3");
}

/* ---- m:on asks (ON_ASK / ON_ANSWER) ---- */

static uint64_t answered[8];
static bool answered_none[8];
static unsigned nanswered, nobserved, ncancelled;
static struct mb_fault_ask *taken;

static void on_answer(void *ctx, uint64_t tok, const struct mb_fault_verdict *v)
{
	(void)ctx;
	if (nanswered < 8)
		answered[nanswered] = tok, answered_none[nanswered] = !v;
	nanswered++;
}

static bool observe(void *ctx, struct mb_devproc *p, unsigned kind,
		    const struct mb_fault_blk_event *e, struct mb_fault_ask *ask)
{
	(void)ctx, (void)p, (void)kind, (void)e;
	nobserved++;
	if (!ask || e->sector == 99) /* 99: not taken */
		return false;
	taken = ask;
	return true;
}

static void on_cancel_(void *ctx, const void *dev)
{
	(void)ctx, (void)dev;
	ncancelled++;
}

static void post_ask(struct mb_dp_faults *f, uint64_t tok, unsigned kind, unsigned op,
		     uint64_t sector, unsigned flags, size_t cut)
{
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_on_event e;
	} m = { { .cmd = MB_DP_ON_ASK, .size = sizeof m - cut, .flags = MB_DP_F_NO_REPLY },
		{ tok, sector, 1, kind, op, flags, 0 } };
	mb_dp_on_serve(f, (const uint8_t *)&m, sizeof m - cut);
}

static void test_on(void **state)
{
	(void)state;
	struct mb_dp_faults f;
	mb_dp_faults_init(&f, on_release, NULL);
	f.answer = on_answer;
	/* no observer: an asked event is answered "unchanged" at once */
	post_ask(&f, 5, MB_DP_ON_BLK, MB_FAULT_OP_READ, 1, MB_DP_ON_ASKED, 0);
	assert_int_equal(nanswered, 1);
	assert_int_equal(answered[0], 5);
	assert_true(answered_none[0]);
	atomic_store(&f.on, observe);
	f.on_cancel = on_cancel_;
	f.on_kinds = MB_DP_ON_BLK, f.on_ops = MB_FAULT_OP_READ;
	/* hostile: a kind, op or flag not armed, two ops, a short message */
	post_ask(&f, 6, MB_DP_ON_PIT, 0, 1, MB_DP_ON_ASKED, 0);
	post_ask(&f, 7, MB_DP_ON_BLK, MB_FAULT_OP_WRITE, 1, MB_DP_ON_ASKED, 0);
	post_ask(&f, 8, MB_DP_ON_BLK, MB_FAULT_OP_READ | MB_FAULT_OP_WRITE, 1,
		 MB_DP_ON_ASKED, 0);
	assert_int_equal(nobserved, 0);
	assert_int_equal(nanswered, 4); /* each answered "unchanged" */
	assert_true(answered_none[1] && answered_none[2] && answered_none[3]);
	post_ask(&f, 9, MB_DP_ON_BLK, MB_FAULT_OP_READ, 1, 0x80, 0);
	post_ask(&f, 9, MB_DP_ON_BLK, MB_FAULT_OP_READ, 1, MB_DP_ON_ASKED, 4);
	assert_int_equal(nanswered, 4); /* malformed: dropped */
	assert_true(atomic_load(&f.refused) >= 5);
	/* taken: answered once, later, through the ask */
	post_ask(&f, 10, MB_DP_ON_BLK, MB_FAULT_OP_READ, 3, MB_DP_ON_ASKED, 0);
	assert_int_equal(nobserved, 1);
	assert_int_equal(nanswered, 4);
	struct mb_fault_verdict v = { .error = true, .status = 1 };
	taken->answer(taken->arg, &v);
	assert_int_equal(nanswered, 5);
	assert_int_equal(answered[4], 10);
	assert_false(answered_none[4]);
	/* not taken by the observer: answered "unchanged" */
	post_ask(&f, 11, MB_DP_ON_BLK, MB_FAULT_OP_READ, 99, MB_DP_ON_ASKED, 0);
	assert_int_equal(nanswered, 6);
	assert_true(answered_none[5]);
	/* every slot taken: the next is answered at once */
	for (unsigned i = 0; i < MB_DP_ON_ASKS; i++)
		post_ask(&f, 100 + i, MB_DP_ON_BLK, MB_FAULT_OP_READ, 3, MB_DP_ON_ASKED, 0);
	assert_int_equal(nanswered, 6);
	post_ask(&f, 999, MB_DP_ON_BLK, MB_FAULT_OP_READ, 3, MB_DP_ON_ASKED, 0);
	assert_int_equal(nanswered, 7);
	assert_int_equal(answered[6], 999);
	/* the process's cancel, and the free: the observer's cancel */
	post_ask(&f, 0, 0, 0, 0, MB_DP_ON_CANCEL, 0);
	assert_int_equal(ncancelled, 1);
	mb_dp_faults_fini(&f);
	assert_int_equal(ncancelled, 2);
}

/* ---- an isolated UART's relay: the VMM's form, the process's reading ---- */

static uint8_t ureg(struct mb_uart *u, unsigned off)
{
	uint8_t v = 0;
	mb_uart_ops.read(u, off, &v, 1);
	return v;
}

static void uset(struct mb_uart *u, unsigned off, uint8_t v)
{
	mb_uart_ops.write(u, off, &v, 1);
}

/* A UART as the guest has set it up: FIFOs on, DTR (the relay sends). */
static struct mb_uart *relay_uart(void)
{
	struct mb_uart_config c = { .relay = true };
	struct mb_uart *u = mb_uart_new(&c);
	assert_non_null(u);
	uset(u, 2, 0x01);
	uset(u, 4, 0x01);
	return u;
}

/* What the process's UART gets from byte b under verdict v, as the VMM
 * sends it, fed one byte per call (a sequence cut anywhere). */
static void put1(struct mb_uart *u, const struct mb_fault_verdict *v, uint8_t b)
{
	uint8_t out[MB_UART_RELAY_MAX];
	size_t n = mb_dp_relay_put(v, b, out);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(mb_uart_relay_rx(u, out + i, 1), 1);
}

static void test_relay(void **state)
{
	struct mb_uart *u = relay_uart();
	struct mb_uart_state st;
	struct mb_fault_verdict none = { 0 }, v;
	/* plain bytes as themselves; 0xff escaped and back */
	uint8_t out[MB_UART_RELAY_MAX];
	assert_int_equal(mb_dp_relay_put(&none, 'a', out), 1);
	assert_int_equal(mb_dp_relay_put(&none, 0xff, out), 2);
	assert_int_equal(out[0], MB_UART_RELAY_ESC);
	assert_int_equal(out[1], MB_UART_RELAY_LIT);
	put1(u, &none, 'a');
	put1(u, &none, 0xff);
	assert_int_equal(ureg(u, 5) & 0x1f, 0x01); /* data, no error */
	assert_int_equal(ureg(u, 0), 'a');
	assert_int_equal(ureg(u, 0), 0xff);

	/* each kind as rx_faulted takes it in process: PE and FE with the
	 * byte, BI with a 0 (then corrupt's bits), OE loses it */
	static const struct { uint8_t lsr, flip, in, want; bool pushed; } k[] = {
		{ MB_FAULT_LSR_PE, 0, 'p', 'p', true },
		{ MB_FAULT_LSR_FE, 0x01, 'p', 'p' ^ 0x01, true },
		{ MB_FAULT_LSR_BI, 0, 'x', 0, true },
		{ MB_FAULT_LSR_BI, 0x80, 'x', 0x80, true },
		{ MB_FAULT_LSR_OE, 0, 'o', 0, false },
		{ MB_FAULT_LSR_PE | MB_FAULT_LSR_FE, 0, 0xff, 0xff, true },
	};
	for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
		v = (struct mb_fault_verdict){ .lsr = k[i].lsr, .flip = k[i].flip,
					       .drop = k[i].lsr == MB_FAULT_LSR_OE };
		mb_uart_save(u, &st);
		uint64_t ov = st.overruns;
		put1(u, &none, 'q');   /* the byte before: no error of its own */
		put1(u, &v, k[i].in);
		put1(u, &none, 'r');   /* nor the one after */
		assert_int_equal(ureg(u, 5) & 0x1e, k[i].lsr);
		assert_int_equal(ureg(u, 5) & 0x1e, 0); /* read once, gone */
		assert_int_equal(ureg(u, 0), 'q');
		if (k[i].pushed)
			assert_int_equal(ureg(u, 0), k[i].want);
		assert_int_equal(ureg(u, 0), 'r');
		assert_int_equal(ureg(u, 5) & 0x01, 0); /* nothing else came */
		mb_uart_save(u, &st);
		assert_int_equal(st.overruns, ov + !k[i].pushed);
	}

	/* a drop and an error on one byte: the bits, not the byte */
	v = (struct mb_fault_verdict){ .lsr = MB_FAULT_LSR_PE, .drop = true };
	put1(u, &v, 'z');
	assert_int_equal(ureg(u, 5) & 0x1f, MB_FAULT_LSR_PE);
	/* a drop alone: nothing on the relay */
	v = (struct mb_fault_verdict){ .drop = true };
	assert_int_equal(mb_dp_relay_put(&v, 'z', out), 0);

	/* a full FIFO: a marked byte waits at its place, its bits not yet */
	for (int i = 0; i < 16; i++)
		put1(u, &none, (uint8_t)('A' + i));
	uint8_t seq[] = { MB_UART_RELAY_ESC, MB_FAULT_LSR_FE, 'f', 'g' };
	assert_int_equal(mb_uart_relay_rx(u, seq, sizeof seq), 2);
	assert_int_equal(ureg(u, 5) & 0x1e, 0);
	assert_int_equal(ureg(u, 0), 'A'); /* room for one */
	assert_int_equal(mb_uart_relay_rx(u, seq + 2, 2), 1);
	assert_int_equal(ureg(u, 5) & 0x1e, MB_FAULT_LSR_FE);
	for (int i = 1; i < 16; i++)
		assert_int_equal(ureg(u, 0), 'A' + i);
	assert_int_equal(ureg(u, 0), 'f');
	assert_int_equal(mb_uart_relay_rx(u, seq + 3, 1), 1);
	assert_int_equal(ureg(u, 0), 'g');

	/* a hostile VMM's sequences: refused whole, the stream goes on */
	static const uint8_t bad[][3] = {
		{ MB_UART_RELAY_ESC, 0x20, 'x' },                          /* not an LSR bit */
		{ MB_UART_RELAY_ESC, 0x80, 'x' },
		{ MB_UART_RELAY_ESC, MB_UART_RELAY_DROP, 0 },              /* no error */
		{ MB_UART_RELAY_ESC, MB_FAULT_LSR_OE, 'x' },               /* OE keeping its byte */
		{ MB_UART_RELAY_ESC, MB_FAULT_LSR_PE | MB_UART_RELAY_DROP, 'x' }, /* lost, not 0 */
		{ MB_UART_RELAY_ESC, MB_UART_RELAY_ESC, 'x' },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		mb_uart_save(u, &st);
		uint64_t ov = st.overruns;
		assert_int_equal(mb_uart_relay_rx(u, bad[i], 3), 3);
		put1(u, &none, 'k');
		assert_int_equal(ureg(u, 5) & 0x1f, 0x01);
		assert_int_equal(ureg(u, 0), 'k');
		assert_int_equal(ureg(u, 5) & 0x01, 0);
		mb_uart_save(u, &st);
		assert_int_equal(st.overruns, ov);
	}
	mb_uart_free(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_serve),
		cmocka_unit_test(test_wire),
		cmocka_unit_test(test_on),
		cmocka_unit_test(test_relay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
