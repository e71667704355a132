/*
 * Faults of an isolated device, the VMM's side (docs/faults.md,
 * docs/devproc.md). dev.* rules on its accesses ("Faults at the
 * boundary"): the proxy (core/devproc.c) asks the plan for every access
 * before it crosses; drop and kill act there (the access never leaves,
 * or the process dies with it in flight); what a verdict does to the
 * reply is here. And the rules its model decides ("Fault rules inside an
 * isolated model", core/devproc_fault.h): the process asks, the plan
 * decides here.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "core/devproc_fault.h"
#include "moonbox/uart16550.h"

void mb_devproc_fault_reply(const struct mb_fault_verdict *v, bool write,
			    void *data, unsigned size)
{
	if (v->corrupt && !write && size) {
		/* `bytes` distinct bits of the value, from the rule's seed
		 * (a bit picked twice would cancel itself). */
		uint8_t *b = data;
		unsigned bits = size * 8, n = v->bytes < bits ? v->bytes : bits;
		uint64_t got = 0;
		for (uint64_t j = 0; __builtin_popcountll(got) < (int)n && j < 4096; j++)
			got |= 1ull << (mb_fault_hash(v->key, 0, j) % bits);
		for (unsigned i = 0; i < bits; i++)
			if (got >> i & 1)
				b[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	if (v->delay_ms) {
		/* The vCPU waits for the reply that long (host time: the
		 * guest's clock goes on, as it would for a slow device). */
		struct timespec t = { v->delay_ms / 1000,
				      (long)(v->delay_ms % 1000) * 1000000 };
		while (nanosleep(&t, &t) && errno == EINTR)
			;
	}
}

/* ---- fault rules inside an isolated model ------------------------------- */

void mb_dp_faults_init(struct mb_dp_faults *f,
		       void (*release)(void *ctx, const char *tok), void *ctx)
{
	memset(f, 0, sizeof *f);
	pthread_mutex_init(&f->lock, NULL);
	f->release = release, f->ctx = ctx;
}

void mb_dp_faults_drop_holds(struct mb_dp_faults *f)
{
	/* Only this device's holds are on its site (a site is per device
	 * name, and an isolated device has no model in the VMM). */
	mb_fault_site_release(atomic_load(&f->site));
}

void mb_dp_faults_fini(struct mb_dp_faults *f)
{
	mb_dp_on_cancel(f);
	mb_dp_faults_drop_holds(f);
	mb_fault_site_put(atomic_load(&f->site));
	pthread_mutex_destroy(&f->lock);
}

/* plan:release(tag) (or a death): the process lets the request go. */
static void hold_release(void *arg)
{
	struct mb_dp_fhold *h = arg;
	struct mb_dp_faults *f = h->f;
	f->release(f->ctx, h->tok);
	pthread_mutex_lock(&f->lock);
	h->used = false;
	pthread_mutex_unlock(&f->lock);
}

/* A slot for a hold, its token made (under nothing), or NULL: full. */
static struct mb_dp_fhold *hold_slot(struct mb_dp_faults *f)
{
	struct mb_dp_fhold *h = NULL;
	pthread_mutex_lock(&f->lock);
	for (unsigned i = 0; i < MB_DP_FAULT_HOLDS && !h; i++)
		if (!f->hold[i].used)
			h = &f->hold[i];
	if (h) {
		h->used = true;
		h->f = f;
		snprintf(h->tok, sizeof h->tok, "#%llu", (unsigned long long)++f->ntok);
	}
	pthread_mutex_unlock(&f->lock);
	return h;
}

size_t mb_dp_fault_serve(struct mb_dp_faults *f, const uint8_t *msg, size_t n,
			 uint8_t *out, size_t cap)
{
	struct mb_dp_hdr q;
	struct mb_dp_fault_event e;
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_fault_verdict w;
	} a;
	if (n != sizeof q + sizeof e || cap < sizeof a)
		return 0;
	memcpy(&q, msg, sizeof q);
	memcpy(&e, msg + sizeof q, sizeof e);
	if (q.size != n || q.cmd != MB_DP_FAULT || (q.flags & MB_DP_F_REPLY))
		return 0;
	atomic_fetch_add(&f->asked, 1);
	struct mb_fault_verdict v = { 0 };
	struct mb_fault_site *s = atomic_load_explicit(&f->site, memory_order_acquire);
	/* One op, as a model asks: anything else is a hostile process's. */
	bool one = e.op && !(e.op & (e.op - 1)) && !(e.op & ~MB_FAULT_OP_ANY);
	if (!one)
		atomic_fetch_add(&f->refused, 1);
	else if (s)
		mb_fault_remote_decide(s, &(struct mb_fault_blk_event){
			e.op, e.sector, e.nsectors }, e.seq, &v);
	memset(&a, 0, sizeof a);
	a.h = (struct mb_dp_hdr){ .id = q.id, .cmd = MB_DP_FAULT,
				  .size = sizeof a, .flags = MB_DP_F_REPLY };
	if (v.hold) {
		/* Held here, in the plan (plan:held, plan:release), under a
		 * token the process parks the request by. */
		struct mb_dp_fhold *h = hold_slot(f);
		if (h) {
			char tag[MB_FAULT_TAG_MAX];
			memcpy(tag, v.tag, sizeof tag);
			memcpy(v.tag, h->tok, sizeof v.tag);
			mb_fault_hold(s, tag, &h->h, hold_release, h);
		} else {
			v.hold = false;
			atomic_fetch_add(&f->refused, 1);
		}
	}
	mb_dp_fault_to_wire(&v, &a.w);
	memcpy(out, &a, sizeof a);
	return sizeof a;
}

/* ---- m:on asks of an isolated model --------------------------------------- */

void mb_dp_on_cancel(struct mb_dp_faults *f)
{
	if (atomic_load(&f->on) && f->on_cancel)
		f->on_cancel(f->on_ctx, f->dp);
}

/* The Lua side's answer (or none): to the process, and the slot freed. */
static void onask_answer(void *arg, const struct mb_fault_verdict *v)
{
	struct mb_dp_onask *a = arg;
	struct mb_dp_faults *f = a->f;
	if (f->answer)
		f->answer(f->ctx, a->tok, v);
	pthread_mutex_lock(&f->lock);
	a->used = false;
	pthread_mutex_unlock(&f->lock);
}

void mb_dp_on_serve(struct mb_dp_faults *f, const uint8_t *msg, size_t n)
{
	struct mb_dp_hdr q;
	struct mb_dp_on_event e;
	if (n != sizeof q + sizeof e)
		return;
	memcpy(&q, msg, sizeof q);
	memcpy(&e, msg + sizeof q, sizeof e);
	if (q.size != n || q.cmd != MB_DP_ON_ASK || (q.flags & MB_DP_F_REPLY) ||
	    (e.flags & ~(MB_DP_ON_ASKED | MB_DP_ON_CANCEL)))
		return (void)atomic_fetch_add(&f->refused, 1);
	mb_devproc_on_fn *fn = atomic_load_explicit(&f->on, memory_order_acquire);
	if (e.flags & MB_DP_ON_CANCEL) {
		mb_dp_on_cancel(f);
		return;
	}
	bool asked = e.flags & MB_DP_ON_ASKED;
	struct mb_dp_onask *a = NULL;
	pthread_mutex_lock(&f->lock);
	/* One kind it was armed for; a blk request of one op armed, a tick
	 * of none: anything else is a hostile process's. */
	bool ok = fn && (e.kind == MB_DP_ON_BLK || e.kind == MB_DP_ON_PIT) &&
		  (e.kind & f->on_kinds) &&
		  (e.kind == MB_DP_ON_BLK ? e.op && !(e.op & (e.op - 1)) && (e.op & f->on_ops)
					  : e.op == 0);
	for (unsigned i = 0; ok && asked && i < MB_DP_ON_ASKS && !a; i++)
		if (!f->onask[i].used)
			a = &f->onask[i];
	if (a) {
		a->used = true, a->f = f, a->tok = e.token;
		a->a = (struct mb_fault_ask){ onask_answer, a };
	}
	pthread_mutex_unlock(&f->lock);
	if (!ok)
		atomic_fetch_add(&f->refused, 1);
	if (ok && (!asked || a)) {
		struct mb_fault_blk_event be = { e.op, e.sector, e.nsectors };
		if (fn(f->on_ctx, f->dp, e.kind, &be, a ? &a->a : NULL) || !a)
			return;
		onask_answer(a, NULL); /* not taken: unchanged */
		return;
	}
	if (asked && f->answer) /* never left waiting */
		f->answer(f->ctx, e.token, NULL);
}

void mb_dp_fault_to_wire(const struct mb_fault_verdict *v,
			 struct mb_dp_fault_verdict *w)
{
	memset(w, 0, sizeof *w);
	w->flags = (v->error ? MB_DP_FV_ERROR : 0) | (v->corrupt ? MB_DP_FV_CORRUPT : 0) |
		   (v->lie ? MB_DP_FV_LIE : 0) | (v->torn ? MB_DP_FV_TORN : 0) |
		   (v->hold ? MB_DP_FV_HOLD : 0) | (v->drop ? MB_DP_FV_DROP : 0) |
		   (v->bad_id ? MB_DP_FV_BAD_ID : 0) | (v->has_id ? MB_DP_FV_HAS_ID : 0);
	w->status = v->status, w->flip = v->flip, w->lsr = v->lsr;
	w->ms = v->ms, w->keep = v->keep, w->bytes = v->bytes;
	w->pulses = v->pulses, w->dup = v->dup, w->reorder = v->reorder;
	w->reorder_ms = v->reorder_ms, w->delay_ms = v->delay_ms;
	w->rate_ms = v->rate_ms, w->used_id = v->used_id;
	w->key = v->key, w->first = v->first, w->last = v->last, w->rate = v->rate;
	memcpy(w->tag, v->tag, sizeof w->tag < sizeof v->tag ? sizeof w->tag
							      : sizeof v->tag);
	w->tag[sizeof w->tag - 1] = 0;
}

int mb_dp_fault_from_wire(const struct mb_dp_fault_verdict *w,
			  struct mb_fault_verdict *v)
{
	memset(v, 0, sizeof *v);
	uint32_t fl = w->flags;
	/* The limits are the rules' own (core/fault.c's check): a verdict
	 * past them came from no rule. */
	bool bad = (fl & ~MB_DP_FV_ALL) ||
		   ((fl & MB_DP_FV_ERROR) && w->status != VIRTIO_BLK_S_IOERR &&
		    w->status != VIRTIO_BLK_S_UNSUPP) ||
		   w->ms > 3600000 || w->bytes > 512 || w->pulses > 1000 ||
		   w->dup > 16 || w->reorder > 64 || w->reorder_ms > 60000 ||
		   w->delay_ms > 2 * MB_FAULT_DELAY_MAX_MS || w->rate_ms > 60000 ||
		   (w->rate && (w->rate < 8 || w->rate > (1ull << 40))) ||
		   (w->lsr & ~(MB_FAULT_LSR_OE | MB_FAULT_LSR_PE | MB_FAULT_LSR_FE |
			       MB_FAULT_LSR_BI)) ||
		   !memchr(w->tag, 0, sizeof w->tag) ||
		   ((fl & MB_DP_FV_HOLD) && w->tag[0] != '#');
	if (bad)
		return -EINVAL;
	v->error = fl & MB_DP_FV_ERROR, v->corrupt = fl & MB_DP_FV_CORRUPT;
	v->lie = fl & MB_DP_FV_LIE, v->torn = fl & MB_DP_FV_TORN;
	v->hold = fl & MB_DP_FV_HOLD, v->drop = fl & MB_DP_FV_DROP;
	v->bad_id = fl & MB_DP_FV_BAD_ID, v->has_id = fl & MB_DP_FV_HAS_ID;
	v->status = w->status, v->flip = w->flip, v->lsr = w->lsr;
	v->ms = w->ms, v->keep = w->keep, v->bytes = w->bytes;
	v->pulses = w->pulses, v->dup = w->dup, v->reorder = w->reorder;
	v->reorder_ms = w->reorder_ms, v->delay_ms = w->delay_ms;
	v->rate_ms = w->rate_ms, v->used_id = w->used_id;
	v->key = w->key, v->first = w->first, v->last = w->last, v->rate = w->rate;
	memcpy(v->tag, w->tag, sizeof v->tag);
	return 0;
}

/* ---- an isolated UART's received bytes, on the relay ------------------------ */

size_t mb_dp_relay_put(const struct mb_fault_verdict *v, uint8_t b, uint8_t *out)
{
	if (v->lsr) { /* the error goes with its byte: one sequence */
		out[0] = MB_UART_RELAY_ESC;
		out[1] = (uint8_t)(v->lsr | (v->drop ? MB_UART_RELAY_DROP : 0));
		out[2] = v->drop ? 0 : mb_fault_uart_rx_byte(v, b);
		return 3;
	}
	if (v->drop)
		return 0;
	out[0] = mb_fault_uart_rx_byte(v, b);
	if (out[0] != MB_UART_RELAY_ESC)
		return 1;
	out[1] = MB_UART_RELAY_LIT;
	return 2;
}
