/*
 * Fault rules inside an isolated model, the VMM's side (docs/devproc.md,
 * "Fault rules inside an isolated model"): the site whose rules decide
 * the events the device process asks about (FAULT on its events socket),
 * the requests its model holds (each a token the VMM names in
 * FAULT_RELEASE), and the verdict's wire form, checked by the process
 * as the message of a hostile VMM.
 */
#ifndef MOONBOX_CORE_DEVPROC_FAULT_H
#define MOONBOX_CORE_DEVPROC_FAULT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "moonbox/devproc.h"
#include "moonbox/fault.h"

/* Requests one device may have held at once (a virtqueue's worth): a
 * hold past it is not made (the request goes on, counted in refused). */
#define MB_DP_FAULT_HOLDS 256

struct mb_dp_faults;
struct mb_dp_fhold {
	struct mb_fault_held h; /* in the VMM plan's list while held */
	struct mb_dp_faults *f;
	bool used;
	char tok[MB_FAULT_TAG_MAX];
};

/* m:on asks a device's process may have pending in the VMM's Lua at once
 * (a hub's ring holds 1024 of all devices): past it, answered
 * "unchanged" at once. */
#define MB_DP_ON_ASKS 256
struct mb_dp_onask {
	struct mb_fault_ask a; /* what the Lua side answers through */
	struct mb_dp_faults *f;
	uint64_t tok; /* the process's */
	bool used;
};

struct mb_dp_faults {
	struct mb_fault_site *_Atomic site; /* NULL: no model rule */
	unsigned fam, ops;                   /* armed so far (under lock) */
	pthread_mutex_t lock;                /* the holds, fam and ops */
	uint64_t ntok;
	struct mb_dp_fhold hold[MB_DP_FAULT_HOLDS];
	/* Tells the process to let the request of token tok go (posted). */
	void (*release)(void *ctx, const char *tok);
	void *ctx;
	_Atomic uint64_t asked, refused;
	/* m:on (MB_DP_ON_*): the Lua side's observer, what the process is
	 * armed for (under lock, kept for restarts), the asks it took. */
	mb_devproc_on_fn *_Atomic on;
	void (*on_cancel)(void *ctx, const void *dev);
	void *on_ctx;
	unsigned on_kinds, on_ops;
	struct mb_devproc *dp; /* the device, as the Lua side knows it */
	/* Tells the process the answer to its ask tok (posted; v NULL: none). */
	void (*answer)(void *ctx, uint64_t tok, const struct mb_fault_verdict *v);
	struct mb_dp_onask onask[MB_DP_ON_ASKS];
};

void mb_dp_faults_init(struct mb_dp_faults *f,
		       void (*release)(void *ctx, const char *tok), void *ctx);
/* Every hold released (the process is gone or going), the site put. */
void mb_dp_faults_fini(struct mb_dp_faults *f);
/* The process died: what it held died with it (plan:held forgets it). */
void mb_dp_faults_drop_holds(struct mb_dp_faults *f);
/* One FAULT request of n bytes (header included): the reply into out (room
 * for cap), its length, or 0 for a message too malformed to answer. A
 * device with no model rule, or an event no rule could match, gets "no
 * fault". Any thread (the events socket's reader). */
size_t mb_dp_fault_serve(struct mb_dp_faults *f, const uint8_t *msg, size_t n,
			 uint8_t *out, size_t cap);
/* One ON_ASK of n bytes (header included) from the process: handed to
 * the observer, or answered "unchanged" at once (no observer, a kind or op
 * not armed, no slot, the observer did not take it). CANCEL: the
 * observer's cancel. Any thread (the events socket's reader). */
void mb_dp_on_serve(struct mb_dp_faults *f, const uint8_t *msg, size_t n);
/* What the Lua side holds of this device's asks goes now (a death, a
 * free: the process's parked events went with it). */
void mb_dp_on_cancel(struct mb_dp_faults *f);
/* The verdict on the wire and back. from_wire checks every field against
 * what a rule can give (a hostile VMM's verdict); -EINVAL: none of it
 * applies (v is zeroed). */
void mb_dp_fault_to_wire(const struct mb_fault_verdict *v,
			 struct mb_dp_fault_verdict *w);
int mb_dp_fault_from_wire(const struct mb_dp_fault_verdict *w,
			  struct mb_fault_verdict *v);
/* An isolated UART's received byte b under verdict v, in the console
 * relay's form (moonbox/uart16550.h, MB_UART_RELAY_*) into out (room for
 * MB_UART_RELAY_MAX): how many bytes, 0 for a byte lost with no error. */
size_t mb_dp_relay_put(const struct mb_fault_verdict *v, uint8_t b, uint8_t *out);

#endif
