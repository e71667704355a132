/*
 * Fault injection (docs/faults.md). A plan belongs to a machine: a seed,
 * an optional trace file (every decision as a JSON line) or a replay file
 * (decisions forced from such a trace), and rules. A rule targets one
 * device, matches events by their fields (blk: op and an inclusive range
 * of 512-byte sectors) and acts when its conditions hold.
 *
 * Decisions are a pure function of (seed, rule id, the rule's match
 * ordinal): a counter-based hash, never a shared sequential generator, so
 * the order in which worker threads finish cannot change them. Devices
 * ask at the moment they take a request from the guest (in ring order),
 * not when a worker gets to it.
 *
 * A device with no rule on it has a NULL site pointer: one predictable
 * branch per request.
 */
#include "moonbox.h" /* first: the umbrella includes us in order */
#ifndef MOONBOX_FAULT_H
#define MOONBOX_FAULT_H

#include <sys/uio.h>

struct mb_fault_plan;
struct mb_fault_site;

enum mb_fault_action {
	MB_FAULT_NONE,
	MB_FAULT_BLK_ERROR,   /* complete with status, the file untouched */
	MB_FAULT_BLK_LATENCY, /* complete ms later */
	MB_FAULT_BLK_CORRUPT, /* flip bits of read data in the rule's range */
	MB_FAULT_BLK_LYING_FLUSH, /* FLUSH acknowledged, fdatasync skipped */
	MB_FAULT_BLK_TORN_WRITE,  /* write the first `keep` sectors, report OK */
	MB_FAULT_BLK_BAD,         /* reads of still-bad sectors fail; writes heal */
	MB_FAULT_BLK_HOLD,        /* not completed until mb_fault_plan_release(tag) */
	MB_FAULT_MEM_FLIP,        /* flip bit `bit` of guest RAM at gpa, when added */
	MB_FAULT_UART_DROP,       /* the byte is lost (tx: never sent; rx: never received) */
	MB_FAULT_UART_CORRUPT,    /* `bytes` bits of the byte flipped (1-8) */
	MB_FAULT_UART_ERROR,      /* rx: a line error in LSR (`lsr`: PE, FE, BI or OE) */
	MB_FAULT_IRQ_DROP,        /* a rising edge never reaches the controller */
	MB_FAULT_IRQ_STORM,       /* `pulses` more edges right after it */
	MB_FAULT_IRQ_SPURIOUS,    /* one edge on line `first`, when added */
	MB_FAULT_IRQ_DELAY,       /* the edge reaches the controller `ms` later */
	MB_FAULT_PIT_DROP,        /* a PIT tick consumed, never (re)injected */
	MB_FAULT_PIT_LATE,        /* a PIT tick delivered `ms` later */
	MB_FAULT_RTC_JUMP,        /* the RTC's time moves `seconds`, when added */
	MB_FAULT_VIRTIO_BAD_USED_ID,   /* a used element names a wrong id */
	MB_FAULT_VIRTIO_NEEDS_RESET,   /* DEVICE_NEEDS_RESET, when added */
	MB_FAULT_VIRTIO_CONFIG_CHANGE, /* a config change (blk: capacity), when added */
	/* virtio-net, per frame (op READ: rx, the guest receives it; WRITE:
	 * tx; "sector": the frame's ordinal in its direction, "nsectors": its
	 * length in bytes) */
	MB_FAULT_NET_DROP,        /* lost; `p` or the burst model (ge_*) */
	MB_FAULT_NET_DUPLICATE,   /* `pulses` more copies right after it */
	MB_FAULT_NET_CORRUPT,     /* `bytes` bits flipped at or past `offset` */
	MB_FAULT_NET_REORDER,     /* held until `pulses` later frames went, or `ms` */
	MB_FAULT_NET_DELAY,       /* `ms` later, plus 0-`jitter` ms from the seed */
	MB_FAULT_NET_RATE,        /* `rate` bytes/s; waits over `ms` are dropped */
	MB_FAULT_NET_LINK,        /* link status `up`, when added (no conditions) */
	/* isolated devices, per access the VMM forwards to the process (op
	 * READ or WRITE, "sector": the guest address, "nsectors": its size;
	 * matched on the proxy, core/devproc_fault.c) */
	MB_FAULT_DEV_DELAY,       /* the reply comes `ms` later */
	MB_FAULT_DEV_DROP,        /* the access is lost: a read gets all ones */
	MB_FAULT_DEV_CORRUPT,     /* `bytes` bits of a read's value flipped (1-64) */
	MB_FAULT_DEV_KILL,        /* the process is killed before it gets the access */
};
#define MB_FAULT_LAST_ACTION MB_FAULT_DEV_KILL
#define MB_FAULT_IS_NET(a) ((a) >= MB_FAULT_NET_DROP && (a) <= MB_FAULT_NET_LINK)
/* The families: which devices a kind of fault acts on. */
static inline bool mb_fault_is_uart(int a)
{
	return a >= MB_FAULT_UART_DROP && a <= MB_FAULT_UART_ERROR;
}
static inline bool mb_fault_is_irq(int a)
{
	return (a >= MB_FAULT_IRQ_DROP && a <= MB_FAULT_IRQ_SPURIOUS) ||
	       a == MB_FAULT_IRQ_DELAY;
}
static inline bool mb_fault_is_dev(int a)
{
	return a >= MB_FAULT_DEV_DELAY && a <= MB_FAULT_DEV_KILL;
}
static inline bool mb_fault_is_pit(int a)
{
	return a == MB_FAULT_PIT_DROP || a == MB_FAULT_PIT_LATE;
}
static inline bool mb_fault_is_virtio(int a)
{
	return a >= MB_FAULT_VIRTIO_BAD_USED_ID && a <= MB_FAULT_VIRTIO_CONFIG_CHANGE;
}
/* Rules that act once, as plan:add takes them (no conditions). */
static inline bool mb_fault_is_once(int a)
{
	return a == MB_FAULT_MEM_FLIP || a == MB_FAULT_IRQ_SPURIOUS ||
	       a == MB_FAULT_RTC_JUMP || a == MB_FAULT_VIRTIO_NEEDS_RESET ||
	       a == MB_FAULT_VIRTIO_CONFIG_CHANGE;
}
/* pit events: a tick channel 0 is about to deliver, op WRITE, sector 0.
 * virtio events: an element put in a used ring, op WRITE, the queue's
 * index as sector. */
/* irq rules: dev "irq", lines first..last (the "sectors" of blk); the
 * event is a rising edge a device drives, op WRITE, its line as sector. */
#define MB_FAULT_TAG_MAX 32
/* BAD: the largest range a rule may cover (its heal bitmap) */
#define MB_FAULT_BAD_MAX_SECTORS (1u << 20)

/* blk operations (a rule's op is a mask of them) */
#define MB_FAULT_OP_READ 1u
#define MB_FAULT_OP_WRITE 2u
#define MB_FAULT_OP_FLUSH 4u
#define MB_FAULT_OP_DISCARD 8u
#define MB_FAULT_OP_ANY 15u

struct mb_fault_rule {
	enum mb_fault_action action;
	char dev[MB_DEVICE_NAME_MAX]; /* the device's name */
	unsigned ops;          /* MB_FAULT_OP_* mask; 0: any */
	uint64_t first, last;  /* sectors, inclusive; first > last: every sector */
	/* Conditions, all of which must hold (0: not set). ordinal is the
	 * rule's own count of matching events, from 1. */
	uint64_t nth;          /* only the nth match */
	uint64_t every;        /* matches every, 2*every, ... */
	uint64_t count;        /* act at most count times */
	double p;              /* probability in [0, 1] (from the seed) */
	bool has_p;
	unsigned after;        /* rule id that must have acted first (0: none) */
	/* Only events win_from <= t < win_to ns after the rule was added, in
	 * guest-visible time (the machine's clock). */
	bool has_window;
	uint64_t win_from, win_to;
	bool disabled;
	/* Action parameters */
	uint8_t status;        /* ERROR: VIRTIO_BLK_S_IOERR or _UNSUPP */
	uint32_t ms;           /* LATENCY */
	unsigned bytes;        /* CORRUPT: bits flipped per sector (0: 1) */
	uint32_t keep;         /* TORN_WRITE: sectors written (0: none) */
	char tag[MB_FAULT_TAG_MAX]; /* HOLD: what mb_fault_plan_release names */
	uint64_t gpa;          /* MEM_FLIP: the byte (dev is unused) */
	unsigned bit;          /* MEM_FLIP: 0-7 */
	uint8_t lsr;           /* UART_ERROR: one of MB_FAULT_LSR_* */
	int64_t seconds;       /* RTC_JUMP: forwards (> 0) or backwards */
	uint64_t capacity;     /* CONFIG_CHANGE: blk sectors (0: unchanged) */
	bool has_id;           /* BAD_USED_ID: `id` given (else the real id + 1) */
	uint16_t id;
	unsigned pulses;       /* IRQ_STORM: 1-1000; NET_DUPLICATE: copies,
				* NET_REORDER: frames it waits for (1-64) */
	/* NET_DROP's burst model (Gilbert-Elliott, two states): each match
	 * first moves the chain (good -> bad with ge_enter, bad -> good with
	 * ge_leave), then loses the frame with ge_loss (bad) or ge_good_loss
	 * (good). Conditions (p, nth...) must hold as well. */
	bool has_burst;
	double ge_enter, ge_leave, ge_loss, ge_good_loss;
	uint32_t jitter;       /* NET_DELAY: ms, 0-jitter added per frame */
	uint32_t offset;       /* NET_CORRUPT: bytes of the frame left alone */
	uint64_t rate;         /* NET_RATE: bytes per second */
	bool up;               /* NET_LINK */
};
#define MB_FAULT_DELAY_MAX_MS 60000 /* IRQ_DELAY, PIT_LATE */
/* uart events: op READ is a byte the guest receives (rx), WRITE one it
 * sends (tx); the "sector" is the byte's ordinal in its direction. */
#define MB_FAULT_LSR_OE 0x02 /* overrun: the byte is lost */
#define MB_FAULT_LSR_PE 0x04 /* parity error, with the byte */
#define MB_FAULT_LSR_FE 0x08 /* framing error, with the byte */
#define MB_FAULT_LSR_BI 0x10 /* break: a 0 byte with BI */

struct mb_fault_plan_config {
	uint64_t seed;
	const char *trace;  /* NULL: no trace */
	const char *replay; /* NULL: decide from the rules */
};

/* m: the plan's machine (its clock, its devices, stopped with reason
 * "divergence" by a replay); freed with it. m may be NULL (unit tests):
 * then mb_fault_plan_free() is the caller's, and sites are attached by
 * hand with mb_fault_plan_site(). A replay file is read and checked
 * whole here (errors name the line). */
int mb_fault_plan_new(struct mb_machine *m, const struct mb_fault_plan_config *c,
		      struct mb_fault_plan **out);
void mb_fault_plan_free(struct mb_fault_plan *p);
/* Close without freeing: every later decision is "none", the trace is
 * closed, counts stay readable, and a device may take another plan's site
 * (a machine can have one open plan at a time). Idempotent. */
void mb_fault_plan_close(struct mb_fault_plan *p);
bool mb_fault_plan_closed(struct mb_fault_plan *p);

/* Add a rule: returns its id (1, 2, ... in the order added) or a negative
 * code (the message names the field). With a machine, the device is
 * looked up by name and given the plan's site. */
int mb_fault_plan_add(struct mb_fault_plan *p, const struct mb_fault_rule *r);
int mb_fault_plan_remove(struct mb_fault_plan *p, unsigned id);
/* Forget every rule (ids start again at 1), take a new seed, zero the
 * sites' event counts and enable the plan: the plan is as new, still
 * attached to the same devices (a campaign's next trial, after a restore).
 * -EINVAL on a replaying plan. */
int mb_fault_plan_reset(struct mb_fault_plan *p, uint64_t seed);
int mb_fault_plan_set_rule_enabled(struct mb_fault_plan *p, unsigned id, bool on);
void mb_fault_plan_enable(struct mb_fault_plan *p, bool on); /* the whole plan */
unsigned mb_fault_plan_nrules(struct mb_fault_plan *p); /* ids ever given */

struct mb_fault_rule_stats {
	uint64_t matched, fired;
	bool removed;
};
int mb_fault_plan_stats(struct mb_fault_plan *p, unsigned id,
			struct mb_fault_rule_stats *st);
/* A copy of the rule as added (for reports). */
int mb_fault_plan_rule(struct mb_fault_plan *p, unsigned id,
		       struct mb_fault_rule *out);
const char *mb_fault_action_name(enum mb_fault_action a); /* "blk.error" */
uint64_t mb_fault_plan_seed(struct mb_fault_plan *p);

/* The site for a device name (created on first use; the plan keeps it). A
 * device given a site takes a reference and puts it when it is freed. */
struct mb_fault_site *mb_fault_plan_site(struct mb_fault_plan *p,
					 const char *dev);
struct mb_fault_site *mb_fault_site_get(struct mb_fault_site *s);
void mb_fault_site_put(struct mb_fault_site *s);
/* A device's fault site pointer: install s (taking a reference). A site
 * of a closed plan is replaced (kept alive until s goes: a request may be
 * deciding on it); one of an open plan is -EBUSY. Not concurrent with
 * itself for one slot (plan:add runs on the thread that runs Lua). */
int mb_fault_site_install(struct mb_fault_site *_Atomic *slot,
			  struct mb_fault_site *s);

/* ---- blk ---------------------------------------------------------------- */

struct mb_fault_blk_event {
	unsigned op; /* one MB_FAULT_OP_* */
	uint64_t sector, nsectors;
};

struct mb_fault_verdict {
	bool error;
	uint8_t status;
	uint32_t ms;
	bool corrupt;
	uint64_t key;          /* corrupt: the bits flipped derive from it */
	uint64_t first, last;  /* corrupt: the sectors it may touch */
	unsigned bytes;
	bool lie;              /* a FLUSH: acknowledge, do not sync */
	bool torn;             /* a write: only the first keep sectors */
	uint32_t keep;
	bool hold;             /* park the request until its tag is released */
	char tag[MB_FAULT_TAG_MAX];
	bool drop;             /* uart: the byte is lost */
	uint8_t flip;          /* uart: XOR mask for the byte */
	uint8_t lsr;           /* uart: LSR error bits to raise */
	unsigned pulses;       /* irq: extra edges after this one */
	bool bad_id;           /* virtio: put used_id instead of the real one */
	bool has_id;
	uint16_t used_id;
	/* net (drop above; corrupt with key, bytes = bits and first =
	 * offset): */
	unsigned dup;          /* copies sent after the frame */
	unsigned reorder;      /* hold it until that many later frames went */
	uint32_t reorder_ms;   /* ... or this long */
	uint32_t delay_ms;     /* irq.delay, pit.late, net.delay: deliver it this
				* much later (the longest of the rules that acted) */
	uint64_t rate;         /* the lowest rate cap (bytes/s), 0: none */
	uint32_t rate_ms;      /* its longest wait before frames are dropped */
	bool kill;             /* dev.kill: the device process dies now */
};

/* The decision for one event (every rule on the site, in id order; each
 * decision goes to the trace). Any thread; serialised per plan. */
void mb_fault_blk_decide(struct mb_fault_site *s,
			 const struct mb_fault_blk_event *e,
			 struct mb_fault_verdict *v);
/* The same decision for a caller that reads v only on true: false, with v
 * untouched, when no live rule on s can match e (the site's summary of
 * ops and sector ranges, checked without the plan's lock: what a rule
 * that never matches costs a request). */
bool mb_fault_blk_maybe(struct mb_fault_site *s,
			const struct mb_fault_blk_event *e,
			struct mb_fault_verdict *v);
/* Hold: a request parked by a device until plan:release(tag). The device
 * embeds the struct; release(arg) runs once, on the thread that calls
 * mb_fault_plan_release (or at once when the plan is closed or gone). */
struct mb_fault_held {
	struct mb_fault_held *next;
	struct mb_fault_site *site;
	char tag[MB_FAULT_TAG_MAX];
	void (*release)(void *arg);
	void *arg;
};
void mb_fault_hold(struct mb_fault_site *s, const char *tag,
		   struct mb_fault_held *h, void (*release)(void *), void *arg);
/* Release the requests held under tag (NULL: all); returns how many. */
int mb_fault_plan_release(struct mb_fault_plan *p, const char *tag);
/* Release everything held on one device (its reset). */
void mb_fault_site_release(struct mb_fault_site *s);
unsigned mb_fault_plan_held(struct mb_fault_plan *p, const char *tag);

/* ---- uart ------------------------------------------------------------- */

/* The decision for one byte: rx (the guest receives it) or tx (it sends
 * it), the ordinal-th in that direction. */
void mb_fault_uart_decide(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			  struct mb_fault_verdict *v);
/* The byte a received one becomes under v (unless v->drop): a break is a
 * 0 character, then the corrupt rules' bits. One definition for the
 * in-process UART and an isolated one's VMM, so both push the same. */
static inline uint8_t mb_fault_uart_rx_byte(const struct mb_fault_verdict *v,
					    uint8_t b)
{
	return (uint8_t)(((v->lsr & MB_FAULT_LSR_BI) ? 0 : b) ^ v->flip);
}

/* ---- isolated devices: accesses at the process boundary ---------------- */

/* The decision for one access the VMM is about to forward (op
 * MB_FAULT_OP_READ or _WRITE, at guest address addr, size bytes). Only
 * dev.* rules see it, and they see nothing else. */
void mb_fault_dev_decide(struct mb_fault_site *s, unsigned op, uint64_t addr,
			 unsigned size, struct mb_fault_verdict *v);

/* ---- virtio-net ---------------------------------------------------------- */

/* The decision for one frame: rx (the guest receives it) or tx, the
 * ordinal-th in that direction, len bytes. */
void mb_fault_net_decide(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			 uint32_t len, struct mb_fault_verdict *v);
/* The same, but false with *v untouched when no rule on s can match the
 * frame (the caller zeroed v): the per-frame path saves clearing it. */
bool mb_fault_net_maybe(struct mb_fault_site *s, bool rx, uint64_t ordinal,
			uint32_t len, struct mb_fault_verdict *v);
/* Flip the verdict's bits in a frame (positions from its key). */
void mb_fault_net_corrupt(const struct mb_fault_verdict *v, uint8_t *frame,
			  size_t len);

/* ---- interrupt lines --------------------------------------------------- */

/* The decision for a rising edge on line (the machine asks, any thread). */
void mb_fault_irq_decide(struct mb_fault_site *s, unsigned line,
			 struct mb_fault_verdict *v);
/* The machine's interrupt lines ask s about every rising edge a device
 * drives (moonbox's side only: KVM's in-kernel PIT and the IOAPIC's own
 * sources never pass here). */
int mb_machine_set_irq_fault(struct mb_machine *m, struct mb_fault_site *s);
/* m:on("irq"): fn(ctx, line) for every rising edge a device drives, before
 * the fault site decides (any thread, often with the raising device's
 * lock held: record it and return). Set once (-EBUSY). */
/* Returns true when it took the edge (an m:on function is asked about
 * it): the edge is not driven now; mb_machine_irq_answer drives it (or
 * not) later. */
typedef bool mb_irq_observer(void *ctx, unsigned line);
int mb_machine_set_irq_observer(struct mb_machine *m, mb_irq_observer *fn, void *ctx);

/* The answer to an edge the observer took (the event loop, no lock held):
 * v NULL or no action: driven now; drop: never; delay_ms: that much later
 * (as irq.delay; a full pool: now); pulses: a storm after it. */
void mb_machine_irq_answer(struct mb_machine *m, unsigned line,
			   const struct mb_fault_verdict *v);

/* ---- m:on asks (docs/faults.md, "Events for Lua") ----------------------- */

/* An event a device parks until a Lua function answered: the device fills
 * answer and arg and hands the ask to its observer; an observer that
 * returns true took it and calls answer(arg, v) exactly once, later, on
 * another thread and with no device lock held (v NULL: cancelled or no
 * answer, the event proceeds unchanged). Embedded in what the device
 * already has for the event (a blk request): asking allocates nothing. */
struct mb_fault_ask {
	void (*answer)(void *arg, const struct mb_fault_verdict *v);
	void *arg;
};
/* Called by a device's reset and free: every ask of dev still pending is
 * answered now (v NULL), so nothing waits on Lua across them. */
typedef void mb_fault_ask_cancel(void *ctx, const void *dev);
/* In a trace, m:on registration n's answers are rule MB_FAULT_ON_RULE + n
 * (rule ids of a plan stay far below). */
#define MB_FAULT_ON_RULE 900000u
struct mb_fault_record;
/* Record an m:on function's answer a (action, status, ms; the event's dev,
 * op, sector, nsectors) to registration on's ordinal-th event in p's
 * trace; on a replaying plan, replace it by the recorded one (found by
 * registration and ordinal). -EINVAL when the trace has no such record
 * or one for another event: the machine stops with "divergence". */
int mb_fault_plan_answer(struct mb_fault_plan *p, unsigned on, uint64_t ordinal,
			 struct mb_fault_record *a);
/* Fold what record r says alone (its action, status, ms) into v, as a
 * rule's decision does: the first error wins, the longest delay, any
 * drop. False, v untouched: an action that needs its rule (a tag, bits
 * from the seed, a copy count) or none. The plan's decisions and the m:on
 * answers (lua/lon_events.c) both fold through it. */
struct mb_fault_verdict;
bool mb_fault_verdict_fold(struct mb_fault_verdict *v, const struct mb_fault_record *r);

/* ---- PIT ticks, virtio used elements ------------------------------------ */

/* The decision for a tick the PIT is about to deliver on channel 0. */
void mb_fault_pit_decide(struct mb_fault_site *s, struct mb_fault_verdict *v);
/* The decision for an element about to go into queue qi's used ring. */
void mb_fault_virtio_decide(struct mb_fault_site *s, unsigned qi,
			    struct mb_fault_verdict *v);

/* ---- device processes: the model's rules decided in the VMM ------------ */

/* An isolated device's model asks its site as in process; in the device
 * process that site belongs to a proxy plan whose events all go to the
 * VMM (docs/devproc.md, "Fault rules inside an isolated model"): fn gets
 * the event and the site's own count of events (seq, from 1) and fills
 * v. The proxy has no rules: only the ops armed reach fn, the rest are
 * "none" as in process. */
typedef void mb_fault_remote_fn(void *ctx, const struct mb_fault_blk_event *e,
				uint64_t seq, struct mb_fault_verdict *v);
void mb_fault_plan_set_remote(struct mb_fault_plan *p, mb_fault_remote_fn *fn,
			      void *ctx);
/* Let s's events of these ops through (a proxy site; ORed in). */
void mb_fault_site_arm(struct mb_fault_site *s, unsigned ops);
/* The VMM: decide a process's event on the real site, as if the model
 * had asked here (seq: the process's count, for the trace). */
void mb_fault_remote_decide(struct mb_fault_site *s,
			    const struct mb_fault_blk_event *e, uint64_t seq,
			    struct mb_fault_verdict *v);

/* Flip the verdict's bits in data read for [sector, sector + len/512). */
void mb_fault_blk_corrupt(const struct mb_fault_verdict *v,
			  const struct iovec *iov, unsigned n, uint64_t sector,
			  uint64_t len);

/* ---- the pieces, for tests and the fuzzer ---------------------------------- */

/* The counter-based generator: a 64-bit value for (seed, rule, ordinal). */
uint64_t mb_fault_hash(uint64_t seed, uint64_t rule, uint64_t ordinal);
/* A rule's other streams: mb_fault_hash(seed, rule, ordinal ^ STREAM).
 * p uses the plain ordinal; net.drop's burst chain moves on STATE and
 * loses on LOSS; net.delay's jitter is JITTER modulo (jitter + 1). */
#define MB_FAULT_STREAM_STATE (1ull << 62)
#define MB_FAULT_STREAM_LOSS (2ull << 62)
#define MB_FAULT_STREAM_JITTER (3ull << 62)
/* Does e fall in r's filter (op and sector range)? */
bool mb_fault_blk_match(const struct mb_fault_rule *r,
			const struct mb_fault_blk_event *e);

/* A trace: its seed and its decision records (fault_trace.c). */
struct mb_fault_record {
	unsigned rule;
	uint64_t ordinal, seq;
	char dev[MB_DEVICE_NAME_MAX];
	unsigned op;
	uint64_t sector, nsectors;
	enum mb_fault_action action; /* MB_FAULT_NONE: matched, did not act */
	uint8_t status;
	uint32_t ms;
	uint64_t guest_ns, host_ns;
};
struct mb_fault_trace {
	uint64_t seed;
	size_t n, cap;
	struct mb_fault_record *r;
};
/* Parse a whole trace; errors are "LINE N: why". */
int mb_fault_trace_parse(const char *buf, size_t len, struct mb_fault_trace *t);
int mb_fault_trace_load(const char *path, struct mb_fault_trace *t);
void mb_fault_trace_fini(struct mb_fault_trace *t);
/* One record as a JSON line (with '\n'), or the header line. Returns the
 * length (snprintf-style). */
int mb_fault_trace_format(char *buf, size_t len, const struct mb_fault_record *r);
int mb_fault_trace_header(char *buf, size_t len, uint64_t seed);
const char *mb_fault_op_name(unsigned op); /* "read"... */

#endif
