/* The fault engine (core/fault.c, core/fault_trace.c): the matcher, the
 * counter-based decisions (independent of evaluation order), conditions,
 * the trace writer and reader, replay and divergence, and the virtio-blk
 * fault site driven through the transport with worker threads: the same
 * seed gives the same trace whatever order the workers finish in. */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "moonbox/fault.h"
#include "moonbox/devproc.h"

static struct mb_fault_rule rule(enum mb_fault_action a, unsigned ops,
				 uint64_t first, uint64_t last)
{
	struct mb_fault_rule r = { .action = a, .ops = ops, .first = first,
				   .last = last, .status = VIRTIO_BLK_S_IOERR,
				   .ms = 1 };
	strcpy(r.dev, "blk0");
	return r;
}

static struct mb_fault_blk_event ev(unsigned op, uint64_t s, uint64_t n)
{
	return (struct mb_fault_blk_event){ op, s, n };
}

static void test_match(void **state)
{
	(void)state;
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 2048, 2055);
	assert_true(mb_fault_blk_match(&r, &(struct mb_fault_blk_event){ MB_FAULT_OP_READ, 2048, 8 }));
	struct mb_fault_blk_event e = ev(MB_FAULT_OP_READ, 2040, 8); /* 2040-2047 */
	assert_false(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_READ, 2040, 9); /* reaches 2048: overlaps */
	assert_true(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_READ, 2055, 100);
	assert_true(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_READ, 2056, 1);
	assert_false(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_WRITE, 2048, 8); /* wrong op */
	assert_false(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_READ, UINT64_MAX - 1, 10); /* wraps: still overlaps? no */
	assert_false(mb_fault_blk_match(&r, &e));
	r.ops = 0; /* any op */
	e = ev(MB_FAULT_OP_WRITE, 2050, 1);
	assert_true(mb_fault_blk_match(&r, &e));
	e = ev(MB_FAULT_OP_FLUSH, 0, 0); /* flush has no sectors: always in range */
	assert_true(mb_fault_blk_match(&r, &e));
	r.first = 1, r.last = 0; /* no range */
	e = ev(MB_FAULT_OP_READ, 7, 1);
	assert_true(mb_fault_blk_match(&r, &e));
}

/* The decision for (seed, rule, ordinal) is the same whichever order the
 * triples are evaluated in, and differs between streams. */
static void test_hash_streams(void **state)
{
	(void)state;
	uint64_t fwd[3][64], same = 0;
	for (unsigned r = 0; r < 3; r++)
		for (unsigned o = 0; o < 64; o++)
			fwd[r][o] = mb_fault_hash(42, r + 1, o + 1);
	for (int o = 63; o >= 0; o--)
		for (int r = 2; r >= 0; r--)
			assert_true(mb_fault_hash(42, (uint64_t)r + 1, (uint64_t)o + 1) ==
				    fwd[r][o]);
	for (unsigned o = 0; o < 64; o++) {
		same += fwd[0][o] == fwd[1][o];
		assert_true(mb_fault_hash(43, 1, o + 1) != fwd[0][o]);
	}
	assert_int_equal(same, 0);
	/* roughly uniform: p = 0.5 over 10000 ordinals */
	unsigned hits = 0;
	for (unsigned o = 1; o <= 10000; o++)
		hits += (mb_fault_hash(7, 1, o) >> 63) != 0;
	assert_in_range(hits, 4700, 5300);
}

static struct mb_fault_plan *plan(uint64_t seed, const char *trace,
				  const char *replay)
{
	struct mb_fault_plan_config c = { seed, trace, replay };
	struct mb_fault_plan *p = NULL;
	int rc = mb_fault_plan_new(NULL, &c, &p);
	if (rc)
		print_message("plan: %s\n", mb_errmsg());
	assert_int_equal(rc, 0);
	return p;
}

static struct mb_fault_verdict decide(struct mb_fault_site *s, unsigned op,
				      uint64_t sector, uint64_t n)
{
	struct mb_fault_verdict v;
	struct mb_fault_blk_event e = ev(op, sector, n);
	mb_fault_blk_decide(s, &e, &v);
	return v;
}

static uint64_t fired(struct mb_fault_plan *p, int id)
{
	struct mb_fault_rule_stats st;
	assert_int_equal(mb_fault_plan_stats(p, (unsigned)id, &st), 0);
	return st.fired;
}

static void test_conditions(void **state)
{
	(void)state;
	struct mb_fault_plan *p = plan(1, NULL, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 0, 9);
	r.nth = 3;
	int nth = mb_fault_plan_add(p, &r);
	assert_int_equal(nth, 1);
	r = rule(MB_FAULT_BLK_LATENCY, MB_FAULT_OP_WRITE, 0, 9);
	r.every = 2, r.count = 2, r.ms = 5;
	int every = mb_fault_plan_add(p, &r);
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_FLUSH, 1, 0);
	r.after = (unsigned)nth, r.status = VIRTIO_BLK_S_UNSUPP;
	int armed = mb_fault_plan_add(p, &r);
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 100, 200); /* never matches */
	int never = mb_fault_plan_add(p, &r);
	assert_int_equal(never, 4);

	assert_false(decide(s, MB_FAULT_OP_FLUSH, 0, 0).error); /* not armed yet */
	assert_false(decide(s, MB_FAULT_OP_READ, 0, 1).error);
	assert_false(decide(s, MB_FAULT_OP_READ, 50, 1).error); /* out of range */
	assert_false(decide(s, MB_FAULT_OP_READ, 1, 1).error);
	struct mb_fault_verdict v = decide(s, MB_FAULT_OP_READ, 9, 4);
	assert_true(v.error);
	assert_int_equal(v.status, VIRTIO_BLK_S_IOERR);
	assert_false(decide(s, MB_FAULT_OP_READ, 0, 1).error); /* nth: once */
	v = decide(s, MB_FAULT_OP_FLUSH, 0, 0);
	assert_true(v.error);
	assert_int_equal(v.status, VIRTIO_BLK_S_UNSUPP);
	unsigned lat = 0;
	for (int i = 0; i < 10; i++)
		lat += decide(s, MB_FAULT_OP_WRITE, 0, 1).ms == 5;
	assert_int_equal(lat, 2); /* every 2nd, at most 2 */
	assert_int_equal(fired(p, nth), 1);
	assert_int_equal(fired(p, every), 2);
	assert_int_equal(fired(p, armed), 1);
	assert_int_equal(fired(p, never), 0);
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(p, (unsigned)never, &st);
	assert_int_equal(st.matched, 0);

	/* remove, disable, the whole plan off */
	assert_int_equal(mb_fault_plan_remove(p, (unsigned)armed), 0);
	assert_false(decide(s, MB_FAULT_OP_FLUSH, 0, 0).error);
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 1, 0);
	int all = mb_fault_plan_add(p, &r);
	assert_int_equal(all, 5); /* ids never shift */
	assert_true(decide(s, MB_FAULT_OP_READ, 7, 1).error);
	mb_fault_plan_set_rule_enabled(p, (unsigned)all, false);
	assert_false(decide(s, MB_FAULT_OP_READ, 7, 1).error);
	mb_fault_plan_set_rule_enabled(p, (unsigned)all, true);
	mb_fault_plan_enable(p, false);
	assert_false(decide(s, MB_FAULT_OP_READ, 7, 1).error);
	mb_fault_plan_enable(p, true);
	assert_true(decide(s, MB_FAULT_OP_READ, 7, 1).error);
	assert_true(mb_fault_plan_remove(p, 99) < 0);
	mb_fault_plan_free(p);
}

static void test_bad_rules(void **state)
{
	(void)state;
	struct mb_fault_plan *p = plan(1, NULL, NULL);
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, 0, 1, 0);
	r.has_p = true, r.p = 1.5;
	assert_true(mb_fault_plan_add(p, &r) < 0);
	assert_non_null(strstr(mb_errmsg(), "p:"));
	r = rule(MB_FAULT_BLK_ERROR, 0, 1, 0);
	r.after = 3;
	assert_true(mb_fault_plan_add(p, &r) < 0);
	assert_non_null(strstr(mb_errmsg(), "after:"));
	r = rule(MB_FAULT_BLK_ERROR, 0, 1, 0);
	r.status = 0;
	assert_true(mb_fault_plan_add(p, &r) < 0);
	assert_non_null(strstr(mb_errmsg(), "status:"));
	r = rule(MB_FAULT_BLK_LATENCY, 0, 1, 0);
	r.ms = 0;
	assert_true(mb_fault_plan_add(p, &r) < 0);
	r = rule(MB_FAULT_BLK_CORRUPT, MB_FAULT_OP_WRITE, 1, 0);
	assert_true(mb_fault_plan_add(p, &r) < 0);
	r = rule(MB_FAULT_BLK_ERROR, 0, 1, 0);
	r.dev[0] = 0;
	assert_true(mb_fault_plan_add(p, &r) < 0);
	assert_non_null(strstr(mb_errmsg(), "dev:"));
	assert_int_equal(mb_fault_plan_nrules(p), 0);
	mb_fault_plan_free(p);
}

/* p = 0.5: the acting ordinals are exactly those the hash says, whatever
 * other rules and events are interleaved. */
static void test_probability_is_per_rule(void **state)
{
	(void)state;
	struct mb_fault_plan *a = plan(42, NULL, NULL), *b = plan(42, NULL, NULL);
	struct mb_fault_site *sa = mb_fault_plan_site(a, "blk0");
	struct mb_fault_site *sb = mb_fault_plan_site(b, "blk0");
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 1, 0);
	r.has_p = true, r.p = 0.5;
	mb_fault_plan_add(a, &r);
	mb_fault_plan_add(b, &r);
	struct mb_fault_rule w = rule(MB_FAULT_BLK_LATENCY, MB_FAULT_OP_WRITE, 1, 0);
	w.has_p = true, w.p = 0.5;
	mb_fault_plan_add(b, &w); /* b also sees writes, a does not */
	unsigned acted = 0;
	for (unsigned i = 1; i <= 200; i++) {
		bool x = decide(sa, MB_FAULT_OP_READ, i, 1).error;
		decide(sb, MB_FAULT_OP_WRITE, i, 1);
		bool y = decide(sb, MB_FAULT_OP_READ, i, 1).error;
		assert_int_equal(x, y);
		assert_int_equal(x, mb_fault_hash(42, 1, i) >> 11 < (1ull << 52));
		acted += x;
	}
	assert_in_range(acted, 70, 130);
	mb_fault_plan_free(a);
	mb_fault_plan_free(b);
}

static void test_corrupt(void **state)
{
	(void)state;
	struct mb_fault_plan *p = plan(9, NULL, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	struct mb_fault_rule r = rule(MB_FAULT_BLK_CORRUPT, MB_FAULT_OP_READ, 4, 5);
	r.bytes = 3;
	mb_fault_plan_add(p, &r);
	struct mb_fault_verdict v = decide(s, MB_FAULT_OP_READ, 2, 8);
	assert_true(v.corrupt);
	static uint8_t buf[8 * 512], again[8 * 512];
	struct iovec iov[2] = { { buf, 1000 }, { buf + 1000, sizeof buf - 1000 } };
	mb_fault_blk_corrupt(&v, iov, 2, 2, sizeof buf);
	unsigned flipped = 0;
	for (size_t i = 0; i < sizeof buf; i++) {
		if (buf[i]) {
			assert_in_range(i / 512 + 2, 4, 5); /* inside the range */
			flipped += (unsigned)__builtin_popcount(buf[i]);
		}
	}
	assert_in_range(flipped, 2, 6); /* 3 per sector (two may cancel) */
	struct iovec one = { again, sizeof again };
	mb_fault_blk_corrupt(&v, &one, 1, 2, sizeof again);
	assert_memory_equal(buf, again, sizeof buf); /* deterministic */
	mb_fault_plan_free(p);
}

/* An isolated UART has both kinds of rule on one site: dev.* rules see
 * only accesses at the process boundary, uart.* rules only bytes. */
static void test_dev_rules_see_accesses_only(void **state)
{
	(void)state;
	struct mb_fault_plan *p = plan(5, NULL, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	struct mb_fault_rule d = rule(MB_FAULT_DEV_DROP, MB_FAULT_OP_READ, 0x3f8, 0x3ff);
	struct mb_fault_rule u = rule(MB_FAULT_UART_DROP, MB_FAULT_OP_READ, 1, 0);
	struct mb_fault_rule c = rule(MB_FAULT_DEV_CORRUPT, MB_FAULT_OP_READ, 1, 0);
	c.bytes = 64;
	int di = mb_fault_plan_add(p, &d), ui = mb_fault_plan_add(p, &u);
	int ci = mb_fault_plan_add(p, &c);
	assert_true(di > 0 && ui > 0 && ci > 0);
	struct mb_fault_verdict v;
	mb_fault_uart_decide(s, true, 1, &v); /* a byte: only the uart rule */
	assert_true(v.drop);
	assert_false(v.corrupt);
	mb_fault_dev_decide(s, MB_FAULT_OP_READ, 0x3fd, 1, &v); /* an access */
	assert_true(v.drop && v.corrupt);
	mb_fault_dev_decide(s, MB_FAULT_OP_READ, 0x80, 1, &v); /* outside addr */
	assert_false(v.drop);
	assert_true(v.corrupt);
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(p, (unsigned)di, &st);
	assert_int_equal(st.matched, 1);
	mb_fault_plan_stats(p, (unsigned)ui, &st);
	assert_int_equal(st.matched, 1);
	mb_fault_plan_stats(p, (unsigned)ci, &st);
	assert_int_equal(st.matched, 2);
	/* 64 bits of an 8-byte read: every bit, once */
	uint8_t val[8] = { 0 };
	mb_devproc_fault_reply(&v, false, val, 8);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(val[i], 0xff);
	mb_fault_plan_free(p);
}

/* The site's summary (mb_fault_blk_maybe): false, with the verdict left
 * untouched, exactly when no live rule can match; at the edges of a
 * range, for another op, a disabled or removed rule, and after a reset. */
static bool maybe(struct mb_fault_site *s, unsigned op, uint64_t sector, uint64_t n)
{
	struct mb_fault_verdict v;
	memset(&v, 0xa5, sizeof v);
	struct mb_fault_blk_event e = ev(op, sector, n);
	bool some = mb_fault_blk_maybe(s, &e, &v);
	if (!some) { /* untouched: the caller reads nothing */
		for (size_t i = 0; i < sizeof v; i++)
			assert_int_equal(((unsigned char *)&v)[i], 0xa5);
	}
	return some;
}

static void test_summary_fast_path(void **state)
{
	(void)state;
	struct mb_fault_plan *p = plan(1, NULL, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	assert_false(maybe(s, MB_FAULT_OP_READ, 0, 1)); /* no rule yet */
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 100, 107);
	int rd = mb_fault_plan_add(p, &r);
	assert_false(maybe(s, MB_FAULT_OP_READ, 92, 8));   /* 92-99: just below */
	assert_false(maybe(s, MB_FAULT_OP_READ, 108, 8));  /* just above */
	assert_true(maybe(s, MB_FAULT_OP_READ, 92, 9));    /* reaches 100 */
	assert_true(maybe(s, MB_FAULT_OP_READ, 107, 1));
	assert_true(maybe(s, MB_FAULT_OP_READ, 100, 0));   /* 0 sectors: its first */
	assert_false(maybe(s, MB_FAULT_OP_READ, 99, 0));
	assert_false(maybe(s, MB_FAULT_OP_WRITE, 100, 8)); /* another op */
	assert_false(maybe(s, MB_FAULT_OP_FLUSH, 0, 0));
	assert_false(maybe(s, MB_FAULT_OP_READ, UINT64_MAX - 1, 10)); /* wraps */
	struct mb_fault_rule_stats st;
	mb_fault_plan_stats(p, (unsigned)rd, &st);
	assert_int_equal(st.matched, 3); /* the ones that got past the summary */

	/* a disabled rule is out of the summary, enabled back in */
	mb_fault_plan_set_rule_enabled(p, (unsigned)rd, false);
	assert_false(maybe(s, MB_FAULT_OP_READ, 100, 8));
	mb_fault_plan_set_rule_enabled(p, (unsigned)rd, true);
	assert_true(maybe(s, MB_FAULT_OP_READ, 100, 8));
	/* added disabled: not in it until enabled */
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_WRITE, 5000, 5000);
	r.disabled = true;
	int wr = mb_fault_plan_add(p, &r);
	assert_false(maybe(s, MB_FAULT_OP_WRITE, 5000, 1));
	mb_fault_plan_set_rule_enabled(p, (unsigned)wr, true);
	assert_true(maybe(s, MB_FAULT_OP_WRITE, 5000, 1));
	assert_false(maybe(s, MB_FAULT_OP_WRITE, 4999, 1));
	assert_false(maybe(s, MB_FAULT_OP_READ, 5000, 1)); /* hulls are per op */
	/* two ranges of one op: the hull covers the gap (the matcher decides) */
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 200, 200);
	int rd2 = mb_fault_plan_add(p, &r);
	assert_true(maybe(s, MB_FAULT_OP_READ, 150, 1));
	assert_false(decide(s, MB_FAULT_OP_READ, 150, 1).error);
	assert_false(maybe(s, MB_FAULT_OP_READ, 201, 1));
	/* removed: the hull shrinks back */
	mb_fault_plan_remove(p, (unsigned)rd2);
	assert_false(maybe(s, MB_FAULT_OP_READ, 150, 1));
	assert_true(maybe(s, MB_FAULT_OP_READ, 100, 1));
	/* a flush has no sectors: any flush rule takes every flush */
	r = rule(MB_FAULT_BLK_LYING_FLUSH, 0, 1, 0);
	mb_fault_plan_add(p, &r);
	assert_true(maybe(s, MB_FAULT_OP_FLUSH, 0, 0));
	assert_false(maybe(s, MB_FAULT_OP_DISCARD, 0, 1));
	/* a range at the top of the sector space, an event that wraps */
	r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_DISCARD, UINT64_MAX - 4, UINT64_MAX);
	mb_fault_plan_add(p, &r);
	assert_true(maybe(s, MB_FAULT_OP_DISCARD, UINT64_MAX - 1, 10));
	assert_false(maybe(s, MB_FAULT_OP_DISCARD, UINT64_MAX - 20, 16));
	/* no range, any op: everything goes to the rules */
	r = rule(MB_FAULT_BLK_LATENCY, 0, 1, 0);
	int all = mb_fault_plan_add(p, &r);
	assert_true(maybe(s, MB_FAULT_OP_WRITE, 123456789, 1));
	assert_true(maybe(s, MB_FAULT_OP_DISCARD, 0, 1));
	mb_fault_plan_remove(p, (unsigned)all);
	/* a reset forgets every rule */
	assert_int_equal(mb_fault_plan_reset(p, 2), 0);
	assert_false(maybe(s, MB_FAULT_OP_READ, 100, 8));
	assert_false(maybe(s, MB_FAULT_OP_FLUSH, 0, 0));
	mb_fault_plan_free(p);
}

static uint64_t lcg(uint64_t *x)
{
	*x = *x * 6364136223846793005ull + 1442695040888963407ull;
	return *x >> 33;
}

/* The summary against the matcher on random rules and events: whenever
 * it says no, no live rule matches (it is a superset); and ops it has no
 * rule for are always refused. */
static void test_summary_superset(void **state)
{
	(void)state;
	uint64_t x = 12345;
#define RND() lcg(&x)
	for (int trial = 0; trial < 200; trial++) {
		struct mb_fault_plan *p = plan(1, NULL, NULL);
		struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
		struct mb_fault_rule rs[6];
		bool live[6];
		unsigned n = 1 + RND() % 6;
		for (unsigned i = 0; i < n; i++) {
			uint64_t a = RND() % 64, b = RND() % 64;
			rs[i] = rule(MB_FAULT_BLK_ERROR, (unsigned)(RND() % 16), a, b); /* a > b: no range */
			assert_int_equal(mb_fault_plan_add(p, &rs[i]), (int)i + 1);
			live[i] = true;
			if (RND() % 4 == 0)
				mb_fault_plan_set_rule_enabled(p, i + 1, false), live[i] = false;
			else if (RND() % 4 == 0)
				mb_fault_plan_remove(p, i + 1), live[i] = false;
		}
		for (int k = 0; k < 200; k++) {
			unsigned op = 1u << (RND() % 4);
			uint64_t sector = RND() % 80;
			struct mb_fault_blk_event e = ev(op, sector, RND() % 6);
			bool any = false;
			for (unsigned i = 0; i < n; i++)
				any |= live[i] && mb_fault_blk_match(&rs[i], &e);
			if (any)
				assert_true(maybe(s, e.op, e.sector, e.nsectors));
		}
		mb_fault_plan_free(p);
	}
#undef RND
}

/* A traced plan counts every event in seq, the ones the summary refused
 * too: the trace's seq is the device's event count, as before. */
static void test_summary_keeps_seq(void **state)
{
	(void)state;
	char path[] = "/tmp/mb-test-seq-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct mb_fault_plan *p = plan(1, path, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 100, 100);
	mb_fault_plan_add(p, &r);
	decide(s, MB_FAULT_OP_READ, 0, 1);
	decide(s, MB_FAULT_OP_WRITE, 100, 1);
	assert_true(decide(s, MB_FAULT_OP_READ, 100, 1).error);
	mb_fault_plan_free(p);
	struct mb_fault_trace t;
	assert_int_equal(mb_fault_trace_load(path, &t), 0);
	unlink(path);
	assert_int_equal(t.n, 1);
	assert_int_equal(t.r[0].seq, 3);
	assert_int_equal(t.r[0].ordinal, 1);
	mb_fault_trace_fini(&t);
}

/* ---- traces ------------------------------------------------------------------ */

static void test_trace_round_trip(void **state)
{
	(void)state;
	struct mb_fault_record r = {
		.rule = 3, .ordinal = 17, .seq = 99, .op = MB_FAULT_OP_DISCARD,
		.sector = 123456789012ull, .nsectors = 8,
		.action = MB_FAULT_BLK_LATENCY, .status = VIRTIO_BLK_S_IOERR, .ms = 250,
		.guest_ns = 1, .host_ns = UINT64_MAX,
	};
	strcpy(r.dev, "disk-2");
	char buf[2048];
	int n = mb_fault_trace_header(buf, sizeof buf, 18446744073709551615ull);
	n += mb_fault_trace_format(buf + n, sizeof buf - (size_t)n, &r);
	struct mb_fault_trace t;
	assert_int_equal(mb_fault_trace_parse(buf, (size_t)n, &t), 0);
	assert_true(t.seed == UINT64_MAX);
	assert_int_equal(t.n, 1);
	assert_memory_equal(&t.r[0], &r, sizeof r);
	mb_fault_trace_fini(&t);
}

static void refused(const char *text, const char *why)
{
	struct mb_fault_trace t;
	int rc = mb_fault_trace_parse(text, strlen(text), &t);
	if (rc == 0 || !strstr(mb_errmsg(), why))
		fail_msg("%s: got %d \"%s\", wanted \"%s\"", text, rc, mb_errmsg(), why);
	assert_null(t.r);
}

#define HDR "{\"moonbox_fault_trace\":1,\"seed\":1}\n"
#define REC(x) "{\"rule\":1,\"ordinal\":1,\"dev\":\"blk0\",\"seq\":1,\"op\":\"read\"," \
	"\"sector\":0,\"nsectors\":1,\"action\":\"blk.error\",\"status\":\"ioerr\"," \
	"\"ms\":0,\"guest_ns\":0," x "}\n"

static void test_trace_refuses(void **state)
{
	(void)state;
	refused("", "line 1: empty");
	refused("{\"seed\":1}\n", "line 1: not a moonbox fault trace");
	refused("{\"moonbox_fault_trace\":2,\"seed\":1}\n", "line 1: not a moonbox");
	refused(HDR "\n", "line 2: not a JSON object");
	refused(HDR REC("\"host_ns\":0") "{", "line 3: unterminated");
	refused(HDR REC("\"host_ns\":-1"), "line 2: bad value");
	refused(HDR REC("\"host_ns\":99999999999999999999"), "line 2: bad value");
	refused(HDR REC("\"host_ns\":007"), "line 2: bad value");
	refused(HDR REC("\"host_ns\":0,\"host_ns\":0"), "line 2: key given twice");
	refused(HDR REC("\"hostns\":0"), "line 2: missing or not an integer: host_ns");
	refused(HDR REC("\"host_ns\":\"0\""), "line 2: missing or not an integer");
	refused(HDR REC("\"host_ns\":0,\"x\":1"), "line 2: a record has exactly 12 keys");
	refused(HDR REC("\"host_ns\":0") "x", "line 3: not a JSON object");
	refused(HDR "{\"rule\":1,\"ordinal\":1,\"dev\":\"bl\\\"k0\"}\n", "line 2: bad value");
	refused(HDR "{\"rule\":0,\"ordinal\":1,\"dev\":\"blk0\",\"seq\":1,\"op\":\"read\","
		"\"sector\":0,\"nsectors\":1,\"action\":\"blk.error\",\"status\":\"ioerr\","
		"\"ms\":0,\"guest_ns\":0,\"host_ns\":0}\n", "line 2: rule out of range");
	refused(HDR "{\"rule\":1,\"ordinal\":1,\"dev\":\"blk0\",\"seq\":1,\"op\":\"peek\","
		"\"sector\":0,\"nsectors\":1,\"action\":\"blk.error\",\"status\":\"ioerr\","
		"\"ms\":0,\"guest_ns\":0,\"host_ns\":0}\n", "line 2: unknown op: peek");
	char nul[] = HDR "{\0}";
	struct mb_fault_trace t;
	assert_true(mb_fault_trace_parse(nul, sizeof nul - 1, &t) < 0);
	assert_non_null(strstr(mb_errmsg(), "line 2: a NUL byte"));
	assert_true(mb_fault_trace_load("/nonexistent/t", &t) < 0);
	assert_non_null(strstr(mb_errmsg(), "/nonexistent/t"));
}

static char *slurp(const char *path, bool strip_times)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *out = malloc(n + 1), *o = out;
	for (char *p = buf; *p;) {
		if (strip_times && strncmp(p, ",\"guest_ns\":", 12) == 0) {
			p = strchr(p, '}');
			continue;
		}
		*o++ = *p++;
	}
	*o = 0;
	return out;
}

/* Record, then replay the same events (decisions forced from the trace
 * even with a different seed), then diverge. */
static void test_replay(void **state)
{
	(void)state;
	char path[] = "/tmp/mb-fault-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 1, 0);
	r.has_p = true, r.p = 0.5;
	bool got[40];
	struct mb_fault_plan *p = plan(5, path, NULL);
	struct mb_fault_site *s = mb_fault_plan_site(p, "blk0");
	mb_fault_plan_add(p, &r);
	for (unsigned i = 0; i < 40; i++)
		got[i] = decide(s, MB_FAULT_OP_READ, i, 1).error;
	mb_fault_plan_free(p);

	p = plan(6, NULL, path);
	assert_true(mb_fault_plan_seed(p) == 5);
	s = mb_fault_plan_site(p, "blk0");
	r.p = 0; /* the trace decides, not the rule */
	mb_fault_plan_add(p, &r);
	for (unsigned i = 0; i < 40; i++)
		assert_int_equal(decide(s, MB_FAULT_OP_READ, i, 1).error, got[i]);
	mb_fault_plan_free(p);

	p = plan(6, NULL, path);
	s = mb_fault_plan_site(p, "blk0");
	mb_fault_plan_add(p, &r);
	for (unsigned i = 0; i < 3; i++)
		decide(s, MB_FAULT_OP_READ, i, 1);
	mb_seterr(0, "%s", "");
	decide(s, MB_FAULT_OP_READ, 1000, 1); /* the 4th read was sector 3 */
	assert_non_null(strstr(mb_errmsg(), "diverged"));
	assert_non_null(strstr(mb_errmsg(), "1000"));
	bool any = false;
	for (unsigned i = 4; i < 40; i++) /* nothing more is decided */
		any |= decide(s, MB_FAULT_OP_READ, i, 1).error;
	assert_false(any);
	mb_fault_plan_free(p);
	unlink(path);
}

/* m:on answers: recorded as rule MB_FAULT_ON_RULE + n under the
 * registration's ordinal, forced by key on replay (whatever the function
 * answered this time), and another event at that key diverges. */
static void test_answers(void **state)
{
	(void)state;
	char path[] = "/tmp/mb-fault-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	struct mb_fault_plan *p = plan(1, path, NULL);
	for (unsigned o = 1; o <= 4; o++) {
		struct mb_fault_record a = { .op = MB_FAULT_OP_READ, .sector = o, .nsectors = 1 };
		snprintf(a.dev, sizeof a.dev, "blk0");
		if (o == 3)
			a.action = MB_FAULT_BLK_ERROR, a.status = VIRTIO_BLK_S_IOERR;
		assert_int_equal(mb_fault_plan_answer(p, 2, o, &a), 0);
		assert_int_equal(a.rule, MB_FAULT_ON_RULE + 2);
	}
	assert_int_equal(mb_fault_plan_answer(p, 0, 1, &(struct mb_fault_record){ 0 }),
			 -EINVAL);
	mb_fault_plan_free(p);

	struct mb_fault_trace t;
	assert_int_equal(mb_fault_trace_load(path, &t), 0);
	assert_int_equal(t.n, 4);
	assert_int_equal(t.r[2].rule, MB_FAULT_ON_RULE + 2);
	assert_int_equal(t.r[2].ordinal, 3);
	assert_int_equal(t.r[2].action, MB_FAULT_BLK_ERROR);
	mb_fault_trace_fini(&t);

	p = plan(9, NULL, path);
	for (unsigned o = 4; o >= 1; o--) { /* by key: any order */
		struct mb_fault_record a = { .op = MB_FAULT_OP_READ, .sector = o, .nsectors = 1 };
		snprintf(a.dev, sizeof a.dev, "blk0");
		assert_int_equal(mb_fault_plan_answer(p, 2, o, &a), 0);
		assert_int_equal(a.action, o == 3 ? MB_FAULT_BLK_ERROR : MB_FAULT_NONE);
	}
	struct mb_fault_record a = { .op = MB_FAULT_OP_READ, .sector = 7, .nsectors = 1 };
	snprintf(a.dev, sizeof a.dev, "blk0");
	mb_seterr(0, "%s", "");
	assert_int_equal(mb_fault_plan_answer(p, 2, 1, &a), -EINVAL); /* sector 1 there */
	assert_non_null(strstr(mb_errmsg(), "diverged"));
	mb_fault_plan_free(p);
	unlink(path);
}

/* ---- the virtio-blk site with worker threads --------------------------------------- */

#define RAM (1u << 20)
#define DESC 0x1000u
#define AVAIL 0x2000u
#define USED 0x3000u
#define HDRS 0x10000u
#define DATA 0x20000u
#define QN 16

static void no_irq(void *ctx, unsigned line, int level) {}

static void *gp(struct mb_mem *m, uint64_t gpa)
{
	return mb_mem_ptr(m, gpa, 1, true);
}

static void wr(struct mb_virtio *t, uint64_t off, uint32_t v)
{
	mb_virtio_mmio_ops.write(t, off, &v, 4);
}

static void set_desc(struct mb_mem *m, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	uint8_t *d = gp(m, DESC + 16 * i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* 64 one-sector reads in batches of 8 on 2 workers, under a p = 0.5 rule
 * on sectors 8-55: returns the trace without times and the statuses. */
static char *blk_run(const char *img, const char *trace, uint8_t *statuses)
{
	struct mb_mem *mem = mb_mem_new();
	assert_int_equal(mb_mem_add(mem, 0, RAM, 0, NULL, "ram"), 0);
	struct mb_virtio_blk_config bc = { img, false, "", 2 };
	struct mb_virtio_blk *b = mb_virtio_blk_new(&bc);
	assert_non_null(b);
	struct mb_virtio_config c = { &mb_virtio_blk_ops, b, mb_virtio_blk_features(b),
				      mem, { no_irq, NULL, 5 }, -1 };
	struct mb_virtio *t = mb_virtio_new(&c);
	struct mb_fault_plan *p = plan(42, trace, NULL);
	struct mb_fault_rule r = rule(MB_FAULT_BLK_ERROR, MB_FAULT_OP_READ, 8, 55);
	r.has_p = true, r.p = 0.5;
	assert_int_equal(mb_fault_plan_add(p, &r), 1);
	assert_int_equal(mb_virtio_blk_set_fault(b, mb_fault_plan_site(p, "blk0")), 0);

	uint64_t f = 1ull << VIRTIO_F_VERSION_1;
	wr(t, 0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	wr(t, 0x24, 1), wr(t, 0x20, (uint32_t)(f >> 32));
	wr(t, 0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		    VIRTIO_STATUS_FEATURES_OK);
	wr(t, 0x30, 0), wr(t, 0x38, QN);
	wr(t, 0x80, DESC), wr(t, 0x90, AVAIL), wr(t, 0xa0, USED);
	wr(t, 0x44, 1);
	wr(t, 0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		    VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	uint16_t idx = 0;
	for (unsigned batch = 0; batch < 8; batch++) {
		for (unsigned i = 0; i < 8; i++) {
			unsigned k = batch * 8 + i, d = 2 * i;
			struct { uint32_t type, reserved; uint64_t sector; } h =
				{ VIRTIO_BLK_T_IN, 0, k };
			memcpy(gp(mem, HDRS + 16 * i), &h, 16);
			set_desc(mem, d, HDRS + 16 * i, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
			set_desc(mem, d + 1, DATA + 0x400 * i, 513, VIRTQ_DESC_F_WRITE, 0);
			((uint16_t *)gp(mem, AVAIL + 4))[idx % QN] = (uint16_t)d;
			idx++;
		}
		/* The driver's side of the ring protocol, with its barriers
		 * (virtio 1.2 2.7.13): publish avail idx after the entries,
		 * read the buffers only after used idx says they are done. */
		__atomic_store_n((uint16_t *)gp(mem, AVAIL + 2), idx, __ATOMIC_RELEASE);
		mb_virtio_kick(t, 0);
		for (int spin = 0; spin < 1000000 &&
		     __atomic_load_n((uint16_t *)gp(mem, USED + 2), __ATOMIC_ACQUIRE) != idx;
		     spin++)
			sched_yield();
		assert_int_equal(__atomic_load_n((uint16_t *)gp(mem, USED + 2), __ATOMIC_ACQUIRE),
				 idx);
		for (unsigned i = 0; i < 8; i++)
			statuses[batch * 8 + i] = *(uint8_t *)gp(mem, DATA + 0x400 * i + 512);
	}
	mb_virtio_blk_free(b); /* puts its site */
	mb_virtio_free(t);
	mb_fault_plan_free(p);
	mb_mem_free(mem);
	return slurp(trace, true);
}

static void test_blk_same_seed_same_trace(void **state)
{
	(void)state;
	char img[] = "/tmp/mb-fault-img-XXXXXX", tr[] = "/tmp/mb-fault-tr-XXXXXX";
	int fd = mkstemp(img);
	assert_int_equal(ftruncate(fd, 64 * 512), 0);
	close(fd);
	close(mkstemp(tr));
	uint8_t s1[64], s2[64];
	char *t1 = blk_run(img, tr, s1);
	char *t2 = blk_run(img, tr, s2);
	assert_string_equal(t1, t2);
	assert_memory_equal(s1, s2, sizeof s1);
	unsigned errors = 0;
	for (unsigned k = 0; k < 64; k++) {
		if (k < 8 || k > 55)
			assert_int_equal(s1[k], VIRTIO_BLK_S_OK);
		errors += s1[k] == VIRTIO_BLK_S_IOERR;
	}
	assert_in_range(errors, 10, 38); /* about half of 48 */
	/* one line per matching read, plus the header */
	unsigned lines = 0;
	for (char *p = t1; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 49);
	free(t1);
	free(t2);
	unlink(img);
	unlink(tr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_hash_streams),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_bad_rules),
		cmocka_unit_test(test_probability_is_per_rule),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_dev_rules_see_accesses_only),
		cmocka_unit_test(test_summary_fast_path),
		cmocka_unit_test(test_summary_superset),
		cmocka_unit_test(test_summary_keeps_seq),
		cmocka_unit_test(test_trace_round_trip),
		cmocka_unit_test(test_trace_refuses),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_blk_same_seed_same_trace),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
