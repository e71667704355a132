/*
 * Device processes: a device model in its own sandboxed process
 * (moonbox-device), reached over sockets. The wire format is vfio-user's
 * (header, command numbers, flags) with a moonbox platform profile and
 * vendor commands from 0x4d00 ("M"); docs/devproc.md describes it and
 * marks the extensions.
 *
 * Descriptors moonbox-device is started with (the launcher's 3, 4, ...):
 *   3  control: SOCK_SEQPACKET, VMM requests (CREATE, SAVE, LOAD, ...) and
 *      posted notices (IRQ_ACK, FREEZE); one reply per request
 *   4  events: SOCK_SEQPACKET, device -> VMM: IRQ_LEVEL, STOP (posted)
 *   5 .. 5+nchan-1  access channels (one per vCPU, one for other threads):
 *      REGION_READ / REGION_WRITE, each answered
 *   then the memory fds (dma = "shared": each RAM region's memfd;
 *   "granted": one per grant given at attach, a region's memfd of which
 *   the process maps only the window; "message": placeholders, no memory)
 *   and the backend fds the CREATE names (the dirty map among them).
 *   Windows granted later come with their DMA_MAP (SCM_RIGHTS).
 * Every message from either side is checked against its size and bounds.
 */
#ifndef MOONBOX_DEVPROC_H
#define MOONBOX_DEVPROC_H

#include <stdbool.h>
#include <stdint.h>

struct mb_machine;
struct mb_device;

#define MB_DP_VERSION 1
#define MB_DP_MAX_MSG 65536 /* bytes, header included */
#define MB_DP_MAX_CHAN 65   /* MB_MAX_CPUS + 1 */
#define MB_DP_MAX_MEM 16
#define MB_DP_FD_CONTROL 3
#define MB_DP_FD_EVENTS 4
#define MB_DP_FD_CHAN0 5

/* vfio-user's header (vfio-user.rst, "Header"): 16 bytes. */
struct mb_dp_hdr {
	uint16_t id;
	uint16_t cmd;
	uint32_t size; /* header included */
	uint32_t flags;
	uint32_t error; /* errno, when MB_DP_F_ERROR */
};
#define MB_DP_F_REPLY 0x1    /* type: 0 command, 1 reply */
#define MB_DP_F_NO_REPLY 0x10
#define MB_DP_F_ERROR 0x20

enum mb_dp_cmd {
	/* vfio-user's numbers */
	MB_DP_VERSION_CMD = 1,
	MB_DP_DMA_MAP = 2,
	MB_DP_DMA_UNMAP = 3,
	MB_DP_DEVICE_GET_INFO = 4,
	MB_DP_GET_REGION_INFO = 5,
	MB_DP_SET_IRQS = 8,
	MB_DP_REGION_READ = 9,
	MB_DP_REGION_WRITE = 10,
	MB_DP_DMA_READ = 11,
	MB_DP_DMA_WRITE = 12,
	MB_DP_DEVICE_RESET = 13,
	/* moonbox extensions */
	MB_DP_CREATE = 0x4d00,   /* build the device; reply: mb_dp_report */
	MB_DP_SAVE = 0x4d01,     /* reply: the state struct */
	MB_DP_LOAD = 0x4d02,     /* the state struct; reply: empty or error */
	MB_DP_QUIESCE = 0x4d03,
	MB_DP_IRQ_LEVEL = 0x4d04, /* events: mb_dp_irq */
	MB_DP_IRQ_ACK = 0x4d05,  /* posted: uint32_t line */
	MB_DP_FREEZE = 0x4d06,   /* posted: uint32_t frozen */
	MB_DP_STOP = 0x4d07,     /* events: mb_dp_stop */
	/* channels: answered (an mb_dp_reply, access fields unused) once
	 * everything sent before it on the channel is done; carries what
	 * posted writes caused */
	MB_DP_FLUSH = 0x4d08,
	MB_DP_LOG = 0x4d09, /* events: mb_dp_log (an isolated Lua device's log) */
	/* Fault rules inside an isolated model (docs/devproc.md): */
	MB_DP_FAULT_ARM = 0x4d0a,     /* control: mb_dp_fault_arm; reply: empty */
	MB_DP_FAULT = 0x4d0b,         /* events, answered: mb_dp_fault_event; reply:
				       * mb_dp_fault_verdict */
	MB_DP_FAULT_RELEASE = 0x4d0c, /* control, posted: a hold token (char[32]) */
	MB_DP_FAULT_APPLY = 0x4d0d,   /* control: mb_dp_fault_apply; reply: empty */
	/* m:on asks of an isolated model (docs/devproc.md, "m:on events of
	 * an isolated model"): */
	MB_DP_ON_ARM = 0x4d0e,    /* control: mb_dp_on_arm; reply: empty */
	MB_DP_ON_ASK = 0x4d0f,    /* events, posted: mb_dp_on_event */
	MB_DP_ON_ANSWER = 0x4d10, /* control, posted: mb_dp_on_answer */
};

/* REGION_READ / REGION_WRITE (vfio-user's layout: offset, region, count,
 * data): region indexes the report's ranges, offset is within it. */
struct mb_dp_access {
	uint64_t offset;
	uint32_t region;
	uint32_t count; /* 1, 2, 4 or 8 */
	uint8_t data[8];
};

struct mb_dp_irq {
	uint32_t line, level;
	uint64_t seq; /* per device: a later change has a larger seq */
};

struct mb_dp_stop {
	uint32_t reason; /* enum mb_stop */
	int32_t code;
	char msg[240];
};

/* A line an isolated Lua device's module logged (log(...), print(...)):
 * in sequence with the line changes (the same counter), so an access's
 * irq_seq covers the lines it logged too. text is NUL-terminated. */
#define MB_DP_LOG_TEXT 200
struct mb_dp_log {
	uint64_t seq;
	char text[MB_DP_LOG_TEXT];
};
/* moonbox-device's exit statuses for a Lua module it stopped (docs/devproc.md,
 * "Lua devices"): past its instruction budget in one call, past its memory. */
#define MB_DP_EXIT_MEMORY 124
#define MB_DP_EXIT_INSTRUCTIONS 125

/* The reply to an access: what the access caused travels with it, so the
 * guest sees line changes and stops as in process (moonbox extension of
 * vfio-user's reply). Line changes all go, in order, on the events socket;
 * irq_seq is the last one the access made (0: none): the VMM applies the
 * events up to it before the access completes. */
#define MB_DP_SIDE_OUT 252
struct mb_dp_reply {
	struct mb_dp_access a;
	uint64_t irq_seq;
	uint32_t stopped; /* 1: stop is valid */
	uint32_t pad;
	struct mb_dp_stop stop;
	uint32_t nout; /* console bytes the access wrote (a UART's THR) */
	uint8_t out[MB_DP_SIDE_OUT];
};

struct mb_dp_mem {
	uint64_t base, size;
	int32_t fd; /* in the device process */
	uint32_t flags;
	char name[32];
	/* The device maps [offset, offset+size) of the memfd and nothing
	 * else (dma = "granted": a window of a RAM region); fd_size is the
	 * memfd's whole size, checked with its seals (mb_memfd_check). */
	uint64_t offset, fd_size;
	/* Where the entry's first page is in the dirty map (CREATE's
	 * dirty_fd), or MB_DP_NO_DIRTY: the device marks the pages it
	 * writes there (moonbox extension, "Dirty pages" in docs/devproc.md). */
	uint64_t dirty_bit;
};
#define MB_DP_NO_DIRTY UINT64_MAX

/* DMA_MAP (vfio-user.rst, "DMA Map"), VMM -> device, control: guest
 * memory [addr, addr+size) is the memfd passed with the message
 * (SCM_RIGHTS) from offset on; flags bit 0 readable, bit 1 writeable.
 * moonbox adds dirty_bit (argsz 40), as in mb_dp_mem. The device checks
 * the memfd's size and seals, maps the window alone, closes the fd.
 * Reply: the same, or an error. */
struct mb_dp_dma_map {
	uint32_t argsz, flags;
	uint64_t offset, addr, size;
	uint64_t dirty_bit;
};
#define MB_DP_DMA_MAP_READ 0x1u
#define MB_DP_DMA_MAP_WRITE 0x2u

/* DMA_UNMAP (vfio-user.rst, "DMA Unmap"): the window at addr of size
 * bytes is revoked; the device unmaps it. Reply: the same, or an error. */
struct mb_dp_unmap {
	uint32_t argsz, flags;
	uint64_t addr, size;
};

/* DMA_READ / DMA_WRITE (vfio-user.rst, "DMA Read/Write"): the device
 * asks the VMM to move count bytes at guest address addr; the data
 * follows (WRITE request, READ reply). */
struct mb_dp_dma_rw {
	uint64_t addr, count;
};
#define MB_DP_DMA_MAX (MB_DP_MAX_MSG - 16 - 16) /* bytes in one message */

/* CREATE: build kind from opts (a Lua table constructor, scalars only). */
struct mb_dp_create {
	uint32_t version;
	uint32_t irqchip; /* enum mb_irqchip: the line count */
	uint32_t nchan, nmem;
	uint32_t nfds; /* fds the process holds from 3 on */
	char kind[32];
	struct mb_dp_mem mem[MB_DP_MAX_MEM];
	uint32_t optlen; /* bytes of opts that follow, no NUL */
	uint32_t pad;
	/* A virtio device's doorbells and interrupt (moonbox extension):
	 * nkick eventfds from kick_fd on, queue i's the VMM's KVM ioeventfd
	 * on QueueNotify == i; irq_fd an eventfd the VMM made a KVM irqfd of
	 * the device's line (-1: none, the line goes as IRQ_LEVEL). */
	uint32_t nkick;
	int32_t kick_fd, irq_fd;
	/* Posted writes through shared rings (moonbox extension, "Posted
	 * writes" in docs/devproc.md): nring rings (one per channel, 0: none)
	 * in the sealed memfd ring_fd of ring_size bytes, and nring doorbell
	 * eventfds from bell_fd on. */
	uint32_t nring;
	int32_t ring_fd, bell_fd;
	uint32_t pad3;
	uint64_t ring_size;
	/* The dirty map (moonbox extension): a sealed memfd of dirty_size
	 * bytes, one bit per 4K page of guest RAM, in which the device marks
	 * what it writes through its mappings (-1: none, dma = "message").
	 * The VMM takes and clears it with its own log at snapshots. */
	int32_t dirty_fd;
	uint32_t pad4;
	uint64_t dirty_size;
};
#define MB_DP_MAX_KICK 4

/* One channel's ring of posted writes, in memory both sides map. The VMM
 * writes entries and head (release), the device takes entries from its own
 * count of what it did and publishes tail (release). Each side keeps its
 * own index and treats the other's as a hint: the VMM reads tail only to
 * know whether there is room, the device reads head and copies each entry
 * out once before checking it. sleeping: the device's ring thread waits on
 * the doorbell (the VMM writes the eventfd only then). */
#define MB_DP_RING_N 256
struct mb_dp_ring_ent {
	uint64_t offset;
	uint32_t region, count;
	uint8_t data[8];
};
struct mb_dp_ring {
	uint32_t head;
	uint32_t pad0[15]; /* head and tail in cache lines of their own */
	uint32_t tail;
	uint32_t sleeping;
	uint32_t pad1[14];
	struct mb_dp_ring_ent e[MB_DP_RING_N];
};

struct mb_dp_range {
	uint32_t space; /* enum mb_space */
	uint32_t pad;
	uint64_t base, size;
};

struct mb_dp_report {
	char name[32];
	char kind[32];
	uint32_t nranges;
	int32_t irq;        /* -1: none */
	uint64_t ack_lines; /* lines whose acknowledgements it wants */
	struct mb_dp_range r[8];
	uint32_t state_size, state_version;
	char state_name[32];
	uint32_t nvirtio; /* virtio-mmio windows the guest must be told of */
	uint32_t nkick;   /* doorbell eventfds it waits on (queues 0..nkick-1) */
	struct mb_dp_range virtio[2]; /* pad field: the line */
	char sandbox[512];
	int32_t pid;
	uint32_t pad2;
};

/* The VMM side (core/devproc.c). */
struct mb_devproc;
/* What guest memory a device process sees (docs/devproc.md, "DMA"). */
enum mb_dp_dma {
	MB_DP_DMA_SHARED,  /* every RAM region mapped (the default) */
	MB_DP_DMA_GRANTED, /* only the grants mapped, each revocable */
	MB_DP_DMA_MESSAGE, /* nothing mapped: DMA_READ/WRITE, checked */
};
/* A window of guest-physical memory: page aligned, inside one region. */
struct mb_dp_grant {
	uint64_t base, size;
};
enum mb_dp_policy {
	MB_DP_ON_CRASH_STOP,
	MB_DP_ON_CRASH_RESTART,
	MB_DP_ON_CRASH_NEEDS_RESET,
	MB_DP_ON_CRASH_CALL, /* crashed() decides */
};
struct mb_devproc_config {
	const char *kind;
	const char *name; /* NULL: the device's default */
	const char *opts; /* Lua table constructor */
	const int *fds;   /* backend fds (the process gets copies) */
	/* Where console bytes an access wrote go (before its reply counts),
	 * or NULL; later output comes through the relay fd in fds. */
	struct mb_chr *console;
	unsigned nfds;
	bool posted;    /* writes go without waiting (flushed by reads, hlt) */
	bool posted_socket; /* posted: over the channel socket, not a ring */
	double timeout; /* seconds for a synchronous access; 0: 1 */
	enum mb_dp_policy on_crash;
	/* on the event loop thread, with why ("killed by signal 9") */
	void (*crashed)(void *ctx, struct mb_devproc *p, const char *why);
	void *ctx;
	/* DMA: shared (0) maps all RAM; granted maps grants[] only; message
	 * maps nothing and checks each DMA message against grants[] (none
	 * given: all RAM). */
	enum mb_dp_dma dma;
	const struct mb_dp_grant *grants;
	unsigned ngrants; /* at most MB_DP_MAX_MEM */
};
/* As mb_devproc_first_fd for a device made with cfg (its memfds). */
int mb_devproc_first_fd_for(struct mb_machine *m, const struct mb_devproc_config *cfg);
/* Revoke the grant at base (granted: the device unmaps it first; message:
 * later requests in it are refused). 0 or -errno with a message. */
int mb_devproc_revoke(struct mb_devproc *p, uint64_t base);
/* Grant [base, base+size) at run time (granted: DMA_MAP with the region's
 * memfd, the process maps the window; message: the VMM's check list).
 * Whole pages inside one RAM region, no overlap with another grant, at
 * most MB_DP_MAX_MEM grants in all (revoked ones keep their slot; the
 * same window granted again takes its old one). Kept across restarts.
 * 0 or -errno with a message. */
int mb_devproc_grant(struct mb_devproc *p, uint64_t base, uint64_t size);
struct mb_dp_dma_info {
	enum mb_dp_dma mode;
	unsigned ngrants;
	struct mb_dp_grant grant[MB_DP_MAX_MEM];
	bool revoked[MB_DP_MAX_MEM];
	uint64_t reads, writes, bytes, refused; /* DMA messages served */
	char why[160]; /* the last refusal */
};
void mb_devproc_dma_info(struct mb_devproc *p, struct mb_dp_dma_info *out);
/* The number fds[0] will have in a device process of m (fds[i]: + i). */
int mb_devproc_first_fd(struct mb_machine *m);
/* Spawn, create, map: *out is the machine's device (a proxy). */
int mb_devproc_attach(struct mb_machine *m, const struct mb_devproc_config *cfg,
		      struct mb_device **out);
struct mb_devproc *mb_devproc_of(struct mb_device *d); /* NULL: in process */
int mb_devproc_pid(struct mb_devproc *p);     /* -1 while dead */
const char *mb_devproc_sandbox(struct mb_devproc *p);
unsigned mb_devproc_restarts(struct mb_devproc *p);
bool mb_devproc_alive(struct mb_devproc *p);
const char *mb_devproc_why(struct mb_devproc *p); /* last death, or "" */
/* A virtio device's doorbells as KVM ioeventfds the process waits on, and
 * how its interrupt goes: "irqfd" (KVM's, kernel irqchip), "relayed" (an
 * eventfd the event loop turns into a pulse) or "line" (IRQ_LEVEL). */
void mb_devproc_doorbells(struct mb_devproc *p, unsigned *ioeventfds, const char **irq);
/* Writes posted and flushes done (the FLUSH round trips). */
void mb_devproc_posted(struct mb_devproc *p, uint64_t *posted, uint64_t *flushes);
/* Posted writes go through shared rings (true) or the socket; doorbells
 * rung (the process's ring thread was asleep) and writes replayed into a
 * restarted process. */
bool mb_devproc_post_ring(struct mb_devproc *p, uint64_t *bells, uint64_t *replayed);
/* The last lines an isolated Lua device logged, oldest first, into
 * lines (at most max): how many. Events not yet taken are taken first. */
#define MB_DP_LOG_KEEP 32
unsigned mb_devproc_log(struct mb_devproc *p, char (*lines)[MB_DP_LOG_TEXT],
			unsigned max);
/* Respawn now with the last saved state (on_crash = "restart" does it). */
int mb_devproc_restart(struct mb_devproc *p);
/* Path of moonbox-device: $MB_DEVICE, next to the running program, or
 * PREFIX/libexec/moonbox. */
const char *mb_devproc_program(void);

/* Fault rules on an isolated UART (F.uart.drop / corrupt / error,
 * docs/faults.md): matched here in the VMM on the bytes that cross the
 * process boundary, the console's (tx: from the access replies and the
 * relay; rx: what the relay sends the process), each byte once. */
struct mb_fault_site;
int mb_devproc_set_uart_fault(struct mb_devproc *p, struct mb_fault_site *s);
/* m:on("uart" | "console") of an isolated UART: fn sees every byte of
 * that wire as the in-process UART's observer would (moonbox/uart16550.h,
 * mb_uart_set_hook: rx before the rules, tx after them), on the thread
 * that carries it (a vCPU's access reply or the console relay on the
 * event loop). Set once; ctx must outlive the device. */
int mb_devproc_set_uart_hook(struct mb_devproc *p,
			     void (*fn)(void *ctx, bool rx, uint8_t *byte, bool *drop),
			     void *ctx);
/* Rules or a hook on the wire (p may be NULL). */
bool mb_devproc_wire_faulted(struct mb_devproc *p);
/* tx: the bytes in[0..len) after the rules and the hook (out: room for
 * len); its length. rx goes through mb_devproc_relay_rx. */
size_t mb_devproc_wire(struct mb_devproc *p, const uint8_t *in, size_t len, uint8_t *out);
/* rx: each byte of in[0..len) seen by the hook, decided (p NULL or no rule:
 * no fault) and
 * put in the relay's form (moonbox/uart16550.h: a line error next to its
 * byte, a 0xff escaped) into out, room for 3 * len; its length. */
size_t mb_devproc_relay_rx(struct mb_devproc *p, const uint8_t *in, size_t len,
			   uint8_t *out);

/* Fault rules inside an isolated model: which of the model's fault site
 * slots the process gives its proxy site (FAULT_ARM's fam), and the ops
 * it lets through (MB_FAULT_OP_*). */
#define MB_DP_FAULT_MODEL 1u  /* the model's own: blk, net, pit */
#define MB_DP_FAULT_VIRTIO 2u /* its virtio-mmio transport's */
struct mb_dp_fault_arm {
	uint32_t fam, ops;
};
/* One event the model asks about: its fields (moonbox/fault.h's
 * mb_fault_blk_event) and the proxy site's count (seq, for the trace). */
struct mb_dp_fault_event {
	uint64_t seq, sector, nsectors;
	uint32_t op, pad;
};
/* The verdict (moonbox/fault.h's mb_fault_verdict, every field a model
 * reads, in a fixed layout). A hold's tag is a token ("#N") the VMM
 * names in FAULT_RELEASE; plan:release(tag) is the VMM's. */
#define MB_DP_FV_ERROR 0x1
#define MB_DP_FV_CORRUPT 0x2
#define MB_DP_FV_LIE 0x4
#define MB_DP_FV_TORN 0x8
#define MB_DP_FV_HOLD 0x10
#define MB_DP_FV_DROP 0x20
#define MB_DP_FV_BAD_ID 0x40
#define MB_DP_FV_HAS_ID 0x80
#define MB_DP_FV_ALL 0xff
struct mb_dp_fault_verdict {
	uint32_t flags; /* MB_DP_FV_* */
	uint8_t status, flip, lsr, pad;
	uint32_t ms, keep, bytes, pulses, dup, reorder, reorder_ms, delay_ms,
		rate_ms;
	uint16_t used_id, pad2;
	uint64_t key, first, last, rate;
	char tag[32];
};
/* FAULT_APPLY: a rule that acts once (rtc.jump, virtio.needs_reset,
 * virtio.config_change, net.link), acting now in the process's model as
 * core/fault.c acts in process. action: enum mb_fault_action. */
struct mb_dp_fault_apply {
	uint32_t action, up; /* up: net.link's state, 0 or 1 */
	int64_t seconds;     /* rtc.jump */
	uint64_t capacity;   /* virtio.config_change on a virtio_blk; 0: none */
};
/* Send it (0, or -errno with the process's reason). */
int mb_devproc_fault_apply(struct mb_devproc *p, const struct mb_dp_fault_apply *a);

/* m:on("blk" | "pit") on an isolated device: ON_ARM tells the process
 * which of its model's events to post (kinds, and a blk request's ops);
 * the model parks each such event as in process and posts ON_ASK with a
 * token; the VMM's Lua answers later with ON_ANSWER (the token and a
 * verdict, checked like FAULT's). A token the process no longer has (a
 * reset answered it "unchanged" already) is ignored. ON_ASK with
 * MB_DP_ON_CANCEL: every pending ask was answered in the process (a
 * reset): the VMM drops what it still holds of them. */
#define MB_DP_ON_BLK 1u
#define MB_DP_ON_PIT 2u
#define MB_DP_ON_ASKED 1u  /* parked: an ON_ANSWER is wanted (else told) */
#define MB_DP_ON_CANCEL 2u /* the pending asks are gone (no event) */
struct mb_dp_on_arm {
	uint32_t kinds, ops;
};
struct mb_dp_on_event {
	uint64_t token, sector, nsectors; /* pit: sector is the tick */
	uint32_t kind, op, flags, pad;
};
struct mb_dp_on_answer {
	uint64_t token;
	struct mb_dp_fault_verdict w;
};
/* The Lua side's observer of an isolated device's m:on events (any
 * thread, the events socket's reader: record it and return). kind is
 * MB_DP_ON_*; ask NULL: told, not asked. True: it took the ask and calls
 * ask->answer exactly once, later, with no lock held. */
struct mb_fault_ask;
struct mb_fault_blk_event;
typedef bool mb_devproc_on_fn(void *ctx, struct mb_devproc *p, unsigned kind,
			      const struct mb_fault_blk_event *e, struct mb_fault_ask *ask);
/* Set the observer (once per device: -EBUSY for another) and arm the
 * process for kinds / ops (ORed in; kept for restarts). cancel(ctx, p):
 * every ask of p still pending is to be answered now (a reset in the
 * process, its death, its free). 0 or -errno with a message. */
int mb_devproc_set_on(struct mb_devproc *p, unsigned kinds, unsigned ops,
		      mb_devproc_on_fn *fn, void (*cancel)(void *ctx, const void *dev),
		      void *ctx);

/* Give the model of an isolated device the rules of site s (plan:add of
 * a rule the model decides): the process arms a proxy site for fam with
 * ops; its events are decided on s. Kept for restarts. */
int mb_devproc_set_model_fault(struct mb_devproc *p, struct mb_fault_site *s,
			       unsigned fam, unsigned ops);

/* dev.* fault rules (F.dev.delay / drop / corrupt / kill, docs/faults.md):
 * matched on the proxy for every access before it crosses; the rest of a
 * verdict, applied to the reply (core/devproc_fault.c). */
int mb_devproc_set_dev_fault(struct mb_devproc *p, struct mb_fault_site *s);
struct mb_fault_verdict;
void mb_devproc_fault_reply(const struct mb_fault_verdict *v, bool write,
			    void *data, unsigned size);

#endif
