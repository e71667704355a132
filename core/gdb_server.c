/*
 * The gdb stub: one thread per stub, listening on a Unix or TCP socket,
 * one gdb at a time (another may connect after a detach). It speaks
 * through core/gdb_proto.c and acts only through the debug engine
 * (moonbox/debug.h) and the machine's holds (internal.h, mb_holder):
 *   - a stop gdb must see (its breakpoint, watchpoint, Ctrl-C, entry, and
 *     errors) holds the run: mb_machine_wait keeps sleeping on the
 *     script's thread, the vCPUs parked, until gdb continues;
 *   - gdb's breakpoints live in the engine's table with owner
 *     MB_GDB_OWNER; hits of Lua's own go to the script as before;
 *   - stops gdb did not ask for are reported as plain signals (SIGTRAP only
 *     for its own), since gdb resumes silently from a SIGTRAP at a place
 *     where it has no breakpoint (../shared/docs/kvm-here.md).
 * The holder's callback runs on the script's thread: it only records the
 * stop and wakes this thread, which alone writes to the socket.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "core/gdb_proto.h"
#include "core/internal.h"
#include "moonbox/debug.h"
#include "moonbox/gdb.h"
#include "moonbox/sandbox.h"

/* gdb's signal numbers (include/gdb/signals.def), not the host's. */
enum { SIG_HUP = 1, SIG_INT = 2, SIG_ILL = 4, SIG_TRAP = 5, SIG_SEGV = 11,
       SIG_ALRM = 14, SIG_STOP = 17 };

struct gbp {
	struct gbp *next;
	unsigned type;
	uint64_t addr;
	struct mb_bp *bp; /* NULL: one of Lua's was already there */
};

struct gwp {
	struct gwp *next;
	unsigned type;
	uint64_t va, len, gpa;
	struct mb_wp *wp;
};

struct mb_gdb {
	struct mb_machine *m;
	struct mb_gdb_config cfg;
	char addr[160], path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd, cfd, wake;
	pthread_t thread;
	bool started;
	struct mb_holder holder;

	/* shared with the holder's callback */
	pthread_mutex_t lock;
	bool quit;
	bool connected;
	bool stopped;      /* gdb's view: the target is stopped */
	bool owe;          /* gdb waits for a stop reply */
	bool fresh;        /* reply not sent yet */
	bool interrupting; /* the next debugger stop is a Ctrl-C */
	/* A Ctrl-C asked for by a gdb that went before the stop came: that
	 * stop is let go at once, as the detach policy says (else a run
	 * stayed held with nobody to release it). */
	bool orphan;
	bool orphan_end;             /* ...by ending the run with orphan_r */
	struct mb_result orphan_r;
	bool foreign;      /* the held stop is the script's: end the run with it */
	struct mb_result foreign_r;
	char reply[160];
	unsigned cur;      /* the thread that stopped (vCPU index) */

	/* this thread only */
	bool noack, x86_64;
	bool real; /* i386 layout, gdb's i8086 architecture (16-bit code) */
	unsigned gcpu;
	struct gbp *bps;
	struct gwp *wps;
	struct mb_gdb_rx rx;
	char *xml;
	size_t xml_len;
	char out[2 * MB_GDB_PKT_MAX + 16];
	size_t out_len;
};

/* ---- the holder: on the script's thread -------------------------------- */

static void wake(struct mb_gdb *g)
{
	uint64_t one = 1;
	if (write(g->wake, &one, 8) < 0) {
		/* the counter is full: the thread is awake anyway */
	}
}

static int sig_of(enum mb_stop s)
{
	switch (s) {
	case MB_STOP_ERROR:
	case MB_STOP_DIVERGENCE: return SIG_ILL;
	case MB_STOP_SHUTDOWN:
	case MB_STOP_CATCH: return SIG_SEGV;
	case MB_STOP_RESET: return SIG_HUP;
	case MB_STOP_HALT: return SIG_STOP;
	case MB_STOP_TIMEOUT: return SIG_ALRM;
	case MB_STOP_CONSOLE: return SIG_INT;
	default: return SIG_TRAP;
	}
}

/* With g->lock held. */
static void set_reply(struct mb_gdb *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_reply(struct mb_gdb *g, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(g->reply, sizeof g->reply, fmt, ap);
	va_end(ap);
	g->stopped = true;
	g->fresh = true;
}

static void hit_reply(struct mb_gdb *g, const struct mb_debug_hit *h)
{
	g->cur = h->cpu;
	if (h->wp) {
		/* gdb names the kind in the stop reply: watch (Z2), rwatch
		 * (Z3), awatch (Z4); the address is the watched one it set */
		static const char *const kind[] = { "watch", "rwatch", "awatch" };
		uint64_t va = h->addr;
		unsigned t = 2;
		for (struct gwp *w = g->wps; w; w = w->next)
			if (w->wp == h->wp) {
				va = w->va + (h->addr > w->gpa ? h->addr - w->gpa : 0);
				if (va >= w->va + w->len)
					va = w->va;
				t = w->type;
			}
		set_reply(g, "T05thread:%x;%s:%" PRIx64 ";", h->cpu + 1,
			  kind[t >= 2 && t <= 4 ? t - 2 : 0], va);
	} else {
		bool hw = h->bp && mb_bp_kind(h->bp) == MB_BP_HW;
		set_reply(g, "T05thread:%x;%s:;", h->cpu + 1,
			  hw ? "hwbreak" : "swbreak");
	}
}

static bool stopped(void *opaque, const struct mb_result *r)
{
	struct mb_gdb *g = opaque;
	struct mb_machine *m = g->m;
	struct mb_debug_hit h;
	bool hold = false;
	pthread_mutex_lock(&g->lock);
	g->foreign = false;
	switch (r->reason) {
	case MB_STOP_DEBUGGER: /* entry, Ctrl-C, gdb connecting */
		hold = true;
		if (g->orphan && !g->connected) {
			g->orphan = false;
			pthread_mutex_unlock(&g->lock);
			/* held now (m->held): release it the way disconnect()
			 * would have, had the stop come first */
			mb_hold_release(m, g->orphan_end ? &g->orphan_r : NULL);
			return true;
		}
		g->orphan = false;
		if (!g->stopped || g->interrupting)
			set_reply(g, "T%02xthread:%x;", g->interrupting ? SIG_INT : SIG_TRAP,
				  g->cur + 1);
		g->interrupting = false;
		break;
	case MB_STOP_BREAKPOINT:
	case MB_STOP_WATCHPOINT:
		if (!mb_debug_take_hit_of(m, MB_GDB_OWNER, &h))
			break; /* Lua's alone: the script's business */
		while (mb_debug_take_hit_of(m, MB_GDB_OWNER, &(struct mb_debug_hit){ 0 }))
			; /* one report for simultaneous hits */
		hold = true;
		hit_reply(g, &h);
		if (mb_debug_pending(m, 0)) { /* Lua's too: its run ends after */
			g->foreign = true;
			g->foreign_r = *r;
		}
		break;
	case MB_STOP_EXIT:
		if (g->connected && !g->stopped)
			set_reply(g, "W%02x", r->exit_code & 0xff);
		break;
	case MB_STOP_TIMEOUT:
		if (g->connected && !g->stopped)
			set_reply(g, "T%02xthread:%x;", SIG_ALRM, g->cur + 1);
		break;
	default: /* errors and the like: let gdb look before the script */
		if (!g->connected)
			break;
		hold = true;
		g->foreign = true;
		g->foreign_r = *r;
		set_reply(g, "T%02xthread:%x;", sig_of(r->reason), g->cur + 1);
	}
	pthread_mutex_unlock(&g->lock);
	wake(g);
	return hold;
}

/* ---- sending ------------------------------------------------------------ */

static void put_raw(struct mb_gdb *g, const void *p, size_t n)
{
	const char *s = p;
	while (n && g->cfd >= 0) {
		ssize_t w = send(g->cfd, s, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(g->cfd);
			g->cfd = -1;
			return;
		}
		s += w, n -= (size_t)w;
	}
}

static void send_pkt(struct mb_gdb *g, const char *payload, size_t n)
{
	g->out_len = mb_gdb_frame(payload, n, g->out, sizeof g->out);
	if (!g->out_len) /* cannot happen with our replies: say so to gdb */
		g->out_len = mb_gdb_frame("E0e", 3, g->out, sizeof g->out);
	put_raw(g, g->out, g->out_len);
}

static void send_str(struct mb_gdb *g, const char *s)
{
	send_pkt(g, s, strlen(s));
}

static void send_err(struct mb_gdb *g, int rc)
{
	char e[8];
	snprintf(e, sizeof e, "E%02x", (rc < 0 ? -rc : rc) & 0xff);
	send_str(g, e);
}

/* Console output for `monitor`: O packets of hex. */
static void send_output(struct mb_gdb *g, const char *s, size_t n)
{
	char pkt[1 + 2 * 512];
	while (n) {
		size_t k = n > 512 ? 512 : n;
		pkt[0] = 'O';
		mb_gdb_hex(s, k, pkt + 1);
		send_pkt(g, pkt, 1 + 2 * k);
		s += k, n -= k;
	}
}

/* Send the stop reply gdb waits for, if there is one. */
static void flush_stop(struct mb_gdb *g)
{
	char r[sizeof g->reply];
	bool go = false;
	pthread_mutex_lock(&g->lock);
	if (g->owe && g->stopped && g->fresh) {
		snprintf(r, sizeof r, "%s", g->reply);
		g->owe = g->fresh = false;
		go = true;
	}
	pthread_mutex_unlock(&g->lock);
	if (go)
		send_str(g, r);
}

/* ---- registers ---------------------------------------------------------- */

/* Register ids: a kind in the high byte, an index below. */
enum { K_GPR = 1, K_SEG, K_ST, K_FPC, K_XMM, K_MXCSR, K_BASE, K_CR };
#define RID(k, i) ((k) << 8 | (i))

struct greg {
	const char *name;
	unsigned bits;
	unsigned id;
	const char *type; /* NULL: int */
	const char *feature;
};

/* mb_regs order: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags */
static const char f_core[] = "org.gnu.gdb.i386.core", f_sse[] = "org.gnu.gdb.i386.sse",
		  f_seg[] = "org.gnu.gdb.i386.segments", f_sys[] = "org.moonbox.x86.sys";

#define X87(b)                                                              \
	{ "st0", 80, RID(K_ST, 0), "i387_ext", f_core },                    \
	{ "st1", 80, RID(K_ST, 1), "i387_ext", f_core },                    \
	{ "st2", 80, RID(K_ST, 2), "i387_ext", f_core },                    \
	{ "st3", 80, RID(K_ST, 3), "i387_ext", f_core },                    \
	{ "st4", 80, RID(K_ST, 4), "i387_ext", f_core },                    \
	{ "st5", 80, RID(K_ST, 5), "i387_ext", f_core },                    \
	{ "st6", 80, RID(K_ST, 6), "i387_ext", f_core },                    \
	{ "st7", 80, RID(K_ST, 7), "i387_ext", f_core },                    \
	{ "fctrl", 32, RID(K_FPC, 0), "float", f_core },                    \
	{ "fstat", 32, RID(K_FPC, 1), "float", f_core },                    \
	{ "ftag", 32, RID(K_FPC, 2), "float", f_core },                     \
	{ "fiseg", 32, RID(K_FPC, 3), "float", f_core },                    \
	{ "fioff", 32, RID(K_FPC, 4), "float", f_core },                    \
	{ "foseg", 32, RID(K_FPC, 5), "float", f_core },                    \
	{ "fooff", 32, RID(K_FPC, 6), "float", f_core },                    \
	{ "fop", 32, RID(K_FPC, 7), "float", f_core }
#define SEGS                                                                \
	{ "cs", 32, RID(K_SEG, 0), NULL, f_core },                          \
	{ "ss", 32, RID(K_SEG, 1), NULL, f_core },                          \
	{ "ds", 32, RID(K_SEG, 2), NULL, f_core },                          \
	{ "es", 32, RID(K_SEG, 3), NULL, f_core },                          \
	{ "fs", 32, RID(K_SEG, 4), NULL, f_core },                          \
	{ "gs", 32, RID(K_SEG, 5), NULL, f_core }
#define XMM(i) { "xmm" #i, 128, RID(K_XMM, i), "vec128", f_sse }

static const struct greg amd64[] = {
	{ "rax", 64, RID(K_GPR, 0), NULL, f_core }, { "rbx", 64, RID(K_GPR, 1), NULL, f_core },
	{ "rcx", 64, RID(K_GPR, 2), NULL, f_core }, { "rdx", 64, RID(K_GPR, 3), NULL, f_core },
	{ "rsi", 64, RID(K_GPR, 4), NULL, f_core }, { "rdi", 64, RID(K_GPR, 5), NULL, f_core },
	{ "rbp", 64, RID(K_GPR, 7), "data_ptr", f_core },
	{ "rsp", 64, RID(K_GPR, 6), "data_ptr", f_core },
	{ "r8", 64, RID(K_GPR, 8), NULL, f_core },   { "r9", 64, RID(K_GPR, 9), NULL, f_core },
	{ "r10", 64, RID(K_GPR, 10), NULL, f_core }, { "r11", 64, RID(K_GPR, 11), NULL, f_core },
	{ "r12", 64, RID(K_GPR, 12), NULL, f_core }, { "r13", 64, RID(K_GPR, 13), NULL, f_core },
	{ "r14", 64, RID(K_GPR, 14), NULL, f_core }, { "r15", 64, RID(K_GPR, 15), NULL, f_core },
	{ "rip", 64, RID(K_GPR, 16), "code_ptr", f_core },
	{ "eflags", 32, RID(K_GPR, 17), "i386_eflags", f_core },
	SEGS, X87(0),
	XMM(0), XMM(1), XMM(2), XMM(3), XMM(4), XMM(5), XMM(6), XMM(7),
	XMM(8), XMM(9), XMM(10), XMM(11), XMM(12), XMM(13), XMM(14), XMM(15),
	{ "mxcsr", 32, RID(K_MXCSR, 0), "i386_mxcsr", f_sse },
	{ "fs_base", 64, RID(K_BASE, 0), NULL, f_seg },
	{ "gs_base", 64, RID(K_BASE, 1), NULL, f_seg },
	{ "cr0", 64, RID(K_CR, 0), NULL, f_sys }, { "cr2", 64, RID(K_CR, 2), NULL, f_sys },
	{ "cr3", 64, RID(K_CR, 3), NULL, f_sys }, { "cr4", 64, RID(K_CR, 4), NULL, f_sys },
	{ "cr8", 64, RID(K_CR, 8), NULL, f_sys }, { "efer", 64, RID(K_CR, 9), NULL, f_sys },
};

static const struct greg i386[] = {
	{ "eax", 32, RID(K_GPR, 0), NULL, f_core }, { "ecx", 32, RID(K_GPR, 2), NULL, f_core },
	{ "edx", 32, RID(K_GPR, 3), NULL, f_core }, { "ebx", 32, RID(K_GPR, 1), NULL, f_core },
	{ "esp", 32, RID(K_GPR, 6), "data_ptr", f_core },
	{ "ebp", 32, RID(K_GPR, 7), "data_ptr", f_core },
	{ "esi", 32, RID(K_GPR, 4), NULL, f_core }, { "edi", 32, RID(K_GPR, 5), NULL, f_core },
	{ "eip", 32, RID(K_GPR, 16), "code_ptr", f_core },
	{ "eflags", 32, RID(K_GPR, 17), "i386_eflags", f_core },
	SEGS, X87(0),
	XMM(0), XMM(1), XMM(2), XMM(3), XMM(4), XMM(5), XMM(6), XMM(7),
	{ "mxcsr", 32, RID(K_MXCSR, 0), "i386_mxcsr", f_sse },
	/* no org.gnu.gdb.i386.segments: gdb 13 asserts on it for i386
	 * (tdesc_use_registers); the bases are in the sys feature */
	{ "fs_base", 32, RID(K_BASE, 0), NULL, f_sys },
	{ "gs_base", 32, RID(K_BASE, 1), NULL, f_sys },
	{ "cr0", 32, RID(K_CR, 0), NULL, f_sys }, { "cr2", 32, RID(K_CR, 2), NULL, f_sys },
	{ "cr3", 32, RID(K_CR, 3), NULL, f_sys }, { "cr4", 32, RID(K_CR, 4), NULL, f_sys },
	{ "efer", 64, RID(K_CR, 9), NULL, f_sys },
};

static const struct greg *layout(struct mb_gdb *g, size_t *n)
{
	*n = g->x86_64 ? sizeof amd64 / sizeof *amd64 : sizeof i386 / sizeof *i386;
	return g->x86_64 ? amd64 : i386;
}

/* x86-64 when the loader booted a 64-bit kernel (a PVH vmlinux starts in
 * 32-bit mode and reaches long mode at once: QEMU's stub, too, describes
 * such a guest as x86-64 from the start) or vCPU 0 is in long mode when
 * gdb asks for the description. Otherwise i386; a guest that switches
 * later keeps the layout of the connection (reconnect). */
static void pick_layout(struct mb_gdb *g)
{
	struct mb_sregs s;
	bool ok = mb_vcpu_get_sregs(g->m, 0, &s) == 0;
	g->x86_64 = g->m->guest_bits == 64 || (ok && (s.efer & 0x400));
	/* Real mode: the i386 registers (what a 16-bit guest has, widened,
	 * as QEMU's stub gives them too) with gdb's i8086 architecture, so
	 * `x/i` and stepping decode 16-bit instructions. */
	g->real = !g->x86_64 && ok && !(s.cr0 & 1);
}

struct cpu_state {
	struct mb_regs r;
	struct mb_sregs s;
	struct kvm_fpu f;
};

static int get_state(struct mb_gdb *g, unsigned cpu, struct cpu_state *c)
{
	int rc = mb_vcpu_get_regs(g->m, cpu, &c->r);
	if (!rc)
		rc = mb_vcpu_get_sregs(g->m, cpu, &c->s);
	if (!rc && ioctl(g->m->cpu[cpu].fd, KVM_GET_FPU, &c->f) < 0)
		rc = -errno;
	return rc;
}

static struct mb_seg *seg(struct mb_sregs *s, unsigned i)
{
	struct mb_seg *t[] = { &s->cs, &s->ss, &s->ds, &s->es, &s->fs, &s->gs };
	return t[i];
}

static uint64_t *cr(struct mb_sregs *s, unsigned i)
{
	switch (i) {
	case 0: return &s->cr0;
	case 2: return &s->cr2;
	case 3: return &s->cr3;
	case 4: return &s->cr4;
	case 8: return &s->cr8;
	default: return &s->efer;
	}
}

/* The register's bytes (little-endian, bits/8 of them) in or out of c;
 * which parts of c a write touched go to *dirty (1 regs, 2 sregs, 4 fpu). */
static void reg_io(struct cpu_state *c, const struct greg *r, uint8_t *b,
		   bool write, unsigned *dirty)
{
	unsigned n = r->bits / 8, i = r->id & 0xff;
	uint64_t v = 0, *p = NULL;
	uint8_t *raw = NULL;
	unsigned part = 0;
	uint32_t u32;
	switch (r->id >> 8) {
	case K_GPR: p = &((uint64_t *)&c->r)[i], part = 1; break;
	case K_BASE: p = &seg(&c->s, i)->base, part = 2; break;
	case K_CR: p = cr(&c->s, i), part = 2; break;
	case K_SEG:
		if (write) {
			memcpy(&u32, b, 4);
			seg(&c->s, i)->selector = (uint16_t)u32;
			*dirty |= 2;
		} else {
			u32 = seg(&c->s, i)->selector;
			memcpy(b, &u32, 4);
		}
		return;
	case K_ST: raw = c->f.fpr[i], part = 4; break;
	case K_XMM: raw = c->f.xmm[i], part = 4; break;
	case K_MXCSR: raw = (uint8_t *)&c->f.mxcsr, part = 4; break;
	case K_FPC: {
		uint32_t fc[8] = { c->f.fcw, c->f.fsw, 0, 0, (uint32_t)c->f.last_ip, 0,
				   (uint32_t)c->f.last_dp, c->f.last_opcode };
		for (int k = 0; k < 8; k++) /* abridged tag: empty or valid */
			fc[2] |= (c->f.ftwx & (1u << k) ? 0u : 3u) << (2 * k);
		if (!write) {
			memcpy(b, &fc[i], 4);
			return;
		}
		memcpy(&u32, b, 4);
		switch (i) {
		case 0: c->f.fcw = (uint16_t)u32; break;
		case 1: c->f.fsw = (uint16_t)u32; break;
		case 2:
			c->f.ftwx = 0;
			for (int k = 0; k < 8; k++)
				if (((u32 >> (2 * k)) & 3) != 3)
					c->f.ftwx |= (uint8_t)(1u << k);
			break;
		case 4: c->f.last_ip = u32; break;
		case 6: c->f.last_dp = u32; break;
		case 7: c->f.last_opcode = (uint16_t)u32; break;
		}
		*dirty |= 4;
		return;
	}
	}
	if (raw) {
		if (write)
			memcpy(raw, b, n), *dirty |= part;
		else
			memcpy(b, raw, n);
		return;
	}
	if (write) {
		memcpy(&v, b, n > 8 ? 8 : n);
		if (n < 8) /* a 32-bit layout keeps the upper half */
			v |= *p & ~((1ull << (8 * n)) - 1);
		*p = v;
		*dirty |= part;
	} else {
		v = *p;
		memcpy(b, &v, n > 8 ? 8 : n);
	}
}

static int put_state(struct mb_gdb *g, unsigned cpu, struct cpu_state *c,
		     unsigned dirty)
{
	int rc = 0;
	if (dirty & 1)
		rc = mb_vcpu_set_regs(g->m, cpu, &c->r);
	if (!rc && (dirty & 2))
		rc = mb_vcpu_set_sregs(g->m, cpu, &c->s);
	if (!rc && (dirty & 4) && ioctl(g->m->cpu[cpu].fd, KVM_SET_FPU, &c->f) < 0)
		rc = -errno;
	return rc;
}

static void read_regs(struct mb_gdb *g)
{
	struct cpu_state c;
	size_t n, o = 0;
	const struct greg *l = layout(g, &n);
	char hex[2 * 1024];
	uint8_t b[16];
	if (get_state(g, g->gcpu, &c))
		return send_str(g, "E01");
	for (size_t i = 0; i < n; i++) {
		unsigned dirty = 0;
		reg_io(&c, &l[i], b, false, &dirty);
		mb_gdb_hex(b, l[i].bits / 8, hex + o);
		o += l[i].bits / 4;
	}
	send_pkt(g, hex, o);
}

static void write_regs(struct mb_gdb *g, const uint8_t *d, size_t nd,
		       int64_t only)
{
	struct cpu_state c;
	size_t n, o = 0;
	unsigned dirty = 0;
	const struct greg *l = layout(g, &n);
	if (get_state(g, g->gcpu, &c))
		return send_str(g, "E01");
	for (size_t i = 0; i < n; i++) {
		size_t sz = l[i].bits / 8;
		if (only >= 0 && (size_t)only != i)
			continue;
		if (only >= 0 ? nd != sz : o + sz > nd)
			break; /* G may be short: the rest stays */
		reg_io(&c, &l[i], (uint8_t *)(uintptr_t)(only >= 0 ? d : d + o), true,
		       &dirty);
		o += sz;
	}
	if (only >= 0 && !dirty)
		return send_str(g, "E02");
	send_str(g, put_state(g, g->gcpu, &c, dirty) ? "E03" : "OK");
}

static void read_reg(struct mb_gdb *g, uint64_t r)
{
	struct cpu_state c;
	size_t n;
	const struct greg *l = layout(g, &n);
	uint8_t b[16];
	char hex[32];
	unsigned dirty = 0;
	if (r >= n)
		return send_str(g, "E02");
	if (get_state(g, g->gcpu, &c))
		return send_str(g, "E01");
	reg_io(&c, &l[r], b, false, &dirty);
	mb_gdb_hex(b, l[r].bits / 8, hex);
	send_pkt(g, hex, l[r].bits / 4);
}

/* ---- target.xml ----------------------------------------------------------- */

static const char core_types[] =
	"<flags id=\"i386_eflags\" size=\"4\"><field name=\"CF\" start=\"0\" end=\"0\"/>"
	"<field name=\"\" start=\"1\" end=\"1\"/><field name=\"PF\" start=\"2\" end=\"2\"/>"
	"<field name=\"AF\" start=\"4\" end=\"4\"/><field name=\"ZF\" start=\"6\" end=\"6\"/>"
	"<field name=\"SF\" start=\"7\" end=\"7\"/><field name=\"TF\" start=\"8\" end=\"8\"/>"
	"<field name=\"IF\" start=\"9\" end=\"9\"/><field name=\"DF\" start=\"10\" end=\"10\"/>"
	"<field name=\"OF\" start=\"11\" end=\"11\"/><field name=\"NT\" start=\"14\" end=\"14\"/>"
	"<field name=\"RF\" start=\"16\" end=\"16\"/><field name=\"VM\" start=\"17\" end=\"17\"/>"
	"<field name=\"AC\" start=\"18\" end=\"18\"/><field name=\"VIF\" start=\"19\" end=\"19\"/>"
	"<field name=\"VIP\" start=\"20\" end=\"20\"/><field name=\"ID\" start=\"21\" end=\"21\"/>"
	"</flags>";
static const char sse_types[] =
	"<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>"
	"<vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>"
	"<vector id=\"v16i8\" type=\"int8\" count=\"16\"/>"
	"<vector id=\"v8i16\" type=\"int16\" count=\"8\"/>"
	"<vector id=\"v4i32\" type=\"int32\" count=\"4\"/>"
	"<vector id=\"v2i64\" type=\"int64\" count=\"2\"/>"
	"<union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/>"
	"<field name=\"v2_double\" type=\"v2d\"/><field name=\"v16_int8\" type=\"v16i8\"/>"
	"<field name=\"v8_int16\" type=\"v8i16\"/><field name=\"v4_int32\" type=\"v4i32\"/>"
	"<field name=\"v2_int64\" type=\"v2i64\"/><field name=\"uint128\" type=\"uint128\"/>"
	"</union><flags id=\"i386_mxcsr\" size=\"4\"><field name=\"IE\" start=\"0\" end=\"0\"/>"
	"<field name=\"DE\" start=\"1\" end=\"1\"/><field name=\"ZE\" start=\"2\" end=\"2\"/>"
	"<field name=\"OE\" start=\"3\" end=\"3\"/><field name=\"UE\" start=\"4\" end=\"4\"/>"
	"<field name=\"PE\" start=\"5\" end=\"5\"/><field name=\"DAZ\" start=\"6\" end=\"6\"/>"
	"<field name=\"IM\" start=\"7\" end=\"7\"/><field name=\"DM\" start=\"8\" end=\"8\"/>"
	"<field name=\"ZM\" start=\"9\" end=\"9\"/><field name=\"OM\" start=\"10\" end=\"10\"/>"
	"<field name=\"UM\" start=\"11\" end=\"11\"/><field name=\"PM\" start=\"12\" end=\"12\"/>"
	"<field name=\"FZ\" start=\"15\" end=\"15\"/></flags>";

static void build_xml(struct mb_gdb *g)
{
	size_t n, cap = 16384, o = 0;
	const struct greg *l = layout(g, &n);
	char *x = malloc(cap);
	if (!x)
		return;
	o += (size_t)snprintf(x + o, cap - o,
			      "<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM "
			      "\"gdb-target.dtd\"><target><architecture>%s</architecture>",
			      g->x86_64 ? "i386:x86-64" : g->real ? "i8086" : "i386");
	const char *feat = NULL;
	for (size_t i = 0; i < n && o < cap; i++) {
		if (l[i].feature != feat) {
			if (feat)
				o += (size_t)snprintf(x + o, cap - o, "</feature>");
			feat = l[i].feature;
			o += (size_t)snprintf(x + o, cap - o, "<feature name=\"%s\">%s", feat,
					      feat == f_core ? core_types
					      : feat == f_sse ? sse_types : "");
		}
		const char *t = l[i].type, *grp = "";
		if (t && strcmp(t, "float") == 0)
			t = "int", grp = " group=\"float\"";
		if (t && strcmp(t, "i386_mxcsr") == 0)
			grp = " group=\"vector\"";
		o += (size_t)snprintf(x + o, cap - o,
				      "<reg name=\"%s\" bitsize=\"%u\" type=\"%s\"%s/>",
				      l[i].name, l[i].bits,
				      t ? t : l[i].bits == 64 ? "int64" : "int32", grp);
	}
	if (o < cap)
		o += (size_t)snprintf(x + o, cap - o, "</feature></target>");
	free(g->xml);
	g->xml = x;
	g->xml_len = o < cap ? o : cap - 1;
}

static void xfer_reply(struct mb_gdb *g, const char *data, size_t n,
		       uint64_t off, uint64_t len)
{
	char buf[MB_GDB_PKT_MAX];
	if (len > sizeof buf - 1)
		len = sizeof buf - 1;
	if (off >= n)
		return send_str(g, "l");
	size_t k = n - off < len ? n - (size_t)off : (size_t)len;
	buf[0] = off + k < n ? 'm' : 'l';
	memcpy(buf + 1, data + off, k);
	send_pkt(g, buf, k + 1);
}

static void xfer(struct mb_gdb *g, const struct mb_gdb_cmd *c)
{
	if (strcmp(c->object, "features") == 0) {
		if (strcmp(c->xannex, "target.xml"))
			return send_str(g, "E00");
		if (c->addr == 0 || !g->xml) {
			pick_layout(g);
			build_xml(g);
		}
		if (!g->xml)
			return send_str(g, "E0c");
		return xfer_reply(g, g->xml, g->xml_len, c->addr, c->len);
	}
	if (strcmp(c->object, "threads") == 0) {
		char t[MB_MAX_CPUS * 64 + 32];
		size_t o = (size_t)snprintf(t, sizeof t, "<threads>");
		for (unsigned i = 0; i < g->m->ncpu; i++)
			o += (size_t)snprintf(t + o, sizeof t - o,
					      "<thread id=\"%x\" core=\"%u\" name=\"vcpu%u\"/>",
					      i + 1, i, i);
		o += (size_t)snprintf(t + o, sizeof t - o, "</threads>");
		return xfer_reply(g, t, o, c->addr, c->len);
	}
	send_str(g, "");
}

/* ---- breakpoints and watchpoints ---------------------------------------- */

static int cpu_of(struct mb_gdb *g, int64_t tid)
{
	if (tid <= 0)
		return (int)g->gcpu;
	if ((uint64_t)tid > g->m->ncpu)
		return -1;
	return (int)tid - 1;
}

static int insert(struct mb_gdb *g, const struct mb_gdb_cmd *c)
{
	struct mb_machine *m = g->m;
	int rc;
	if (c->type <= 1) {
		for (struct gbp *b = g->bps; b; b = b->next)
			if (b->type == c->type && b->addr == c->addr)
				return 0; /* Z is idempotent */
		struct gbp *b = calloc(1, sizeof *b);
		if (!b)
			return -ENOMEM;
		struct mb_bp_config bc = { .addr = c->addr, .cpu = g->gcpu,
					   .kind = c->type ? MB_BP_HW : MB_BP_SW,
					   .owner = MB_GDB_OWNER };
		rc = mb_debug_break(m, &bc, &b->bp);
		if (rc == -EEXIST)
			rc = 0, b->bp = NULL; /* Lua's own is there: it reports */
		if (rc) {
			free(b);
			return rc;
		}
		b->type = c->type, b->addr = c->addr;
		b->next = g->bps;
		g->bps = b;
		return 0;
	}
	struct mb_paging p;
	struct mb_walk w;
	if (!c->len || c->len > 4096 || ((c->addr & 4095) + c->len) > 4096)
		return -EINVAL; /* one page: the engine takes physical ranges */
	if ((rc = mb_vcpu_paging(m, g->gcpu, &p)))
		return rc;
	if (mb_pagewalk(mb_machine_mem(m), &p, c->addr, &w))
		return -EFAULT;
	struct gwp *x = calloc(1, sizeof *x);
	if (!x)
		return -ENOMEM;
	bool rd = c->type != 2, wr = c->type != 3;
	if ((rc = mb_debug_watch_owned(m, w.gpa, c->len, rd, wr, MB_GDB_OWNER,
				       &x->wp))) {
		free(x);
		return rc;
	}
	*x = (struct gwp){ .next = g->wps, .type = c->type, .va = c->addr,
			   .len = c->len, .gpa = w.gpa, .wp = x->wp };
	g->wps = x;
	return 0;
}

static int remove_one(struct mb_gdb *g, const struct mb_gdb_cmd *c)
{
	if (c->type <= 1) {
		for (struct gbp **p = &g->bps; *p; p = &(*p)->next)
			if ((*p)->type == c->type && (*p)->addr == c->addr) {
				struct gbp *b = *p;
				int rc = b->bp ? mb_debug_unbreak(g->m, b->bp) : 0;
				*p = b->next;
				free(b);
				return rc;
			}
		return 0;
	}
	for (struct gwp **p = &g->wps; *p; p = &(*p)->next)
		if ((*p)->type == c->type && (*p)->va == c->addr &&
		    (*p)->len == c->len) {
			struct gwp *w = *p;
			int rc = mb_debug_unwatch(g->m, w->wp);
			*p = w->next;
			free(w);
			return rc;
		}
	return 0;
}

/* Everything gdb set (detach, kill, a closed connection). */
static void remove_all(struct mb_gdb *g)
{
	bool paused = mb_machine_paused(g->m);
	while (g->bps) {
		struct gbp *b = g->bps;
		if (b->bp && paused)
			mb_debug_unbreak(g->m, b->bp);
		g->bps = b->next;
		free(b);
	}
	while (g->wps) {
		struct gwp *w = g->wps;
		if (paused)
			mb_debug_unwatch(g->m, w->wp);
		g->wps = w->next;
		free(w);
	}
}

/* ---- running and stopping -------------------------------------------- */

/* Let the machine go: the held run continues (or ends with the script's
 * own stop); a machine paused outside a run simply runs at its next. */
static void go(struct mb_gdb *g, bool want_reply)
{
	pthread_mutex_lock(&g->lock);
	g->stopped = false;
	g->fresh = false;
	g->owe = want_reply;
	bool foreign = g->foreign;
	struct mb_result r = g->foreign_r;
	g->foreign = false;
	pthread_mutex_unlock(&g->lock);
	if (mb_hold_held(g->m))
		mb_hold_release(g->m, foreign ? &r : NULL);
	else
		mb_hold_cancel(g->m);
}

/* End the held run with (reason, code, message). */
static void end_run(struct mb_gdb *g, enum mb_stop why, int code,
		    const char *msg)
{
	struct mb_result r = { .reason = why, .exit_code = code };
	snprintf(r.message, sizeof r.message, "%s", msg);
	pthread_mutex_lock(&g->lock);
	g->stopped = false;
	g->owe = g->foreign = false;
	pthread_mutex_unlock(&g->lock);
	mb_hold_release(g->m, &r);
	mb_hold_cancel(g->m);
}

/* Ask for a stop (Ctrl-C, a gdb connecting to a running machine). */
static void interrupt(struct mb_gdb *g)
{
	pthread_mutex_lock(&g->lock);
	bool already = g->stopped;
	if (!already)
		g->interrupting = true;
	pthread_mutex_unlock(&g->lock);
	if (already)
		return;
	if (!mb_hold_request(g->m)) { /* paused outside a run: stopped now */
		pthread_mutex_lock(&g->lock);
		g->interrupting = false;
		set_reply(g, "T%02xthread:%x;", SIG_INT, g->cur + 1);
		pthread_mutex_unlock(&g->lock);
	}
}

static void step(struct mb_gdb *g, unsigned cpu)
{
	struct mb_result r;
	unsigned done = 0;
	struct mb_debug_hit h;
	int rc = mb_debug_step(g->m, cpu, 1, &done, &r);
	pthread_mutex_lock(&g->lock);
	g->cur = cpu;
	bool exited = !rc && r.reason == MB_STOP_EXIT;
	if (rc)
		set_reply(g, "E%02x", -rc & 0xff);
	else if (exited)
		set_reply(g, "W%02x", r.exit_code & 0xff);
	else if (mb_debug_take_hit_of(g->m, MB_GDB_OWNER, &h))
		hit_reply(g, &h);
	else if (r.reason != MB_STOP_NONE)
		set_reply(g, "T%02xthread:%x;", sig_of(r.reason), cpu + 1);
	else
		set_reply(g, "T05thread:%x;", cpu + 1);
	g->owe = true;
	pthread_mutex_unlock(&g->lock);
	if (exited) { /* the guest is gone for gdb: end the run with it */
		flush_stop(g);
		end_run(g, MB_STOP_EXIT, r.exit_code, r.message);
		pthread_mutex_lock(&g->lock);
		g->stopped = true; /* nothing more to report */
		pthread_mutex_unlock(&g->lock);
	}
}

static void vcont(struct mb_gdb *g, const struct mb_gdb_cmd *c)
{
	for (unsigned i = 0; i < c->nact; i++)
		if (c->act[i].op == 's') { /* step that one; the others stay */
			int cpu = cpu_of(g, c->act[i].tid);
			if (cpu < 0)
				return send_str(g, "E01");
			return step(g, (unsigned)cpu);
		}
	go(g, true);
}

/* ---- monitor --------------------------------------------------------- */

static void monitor(struct mb_gdb *g, const struct mb_gdb_cmd *c)
{
	char line[MB_GDB_PKT_MAX / 2 + 1];
	size_t n = c->ndata < sizeof line - 1 ? c->ndata : sizeof line - 1;
	memcpy(line, c->data, n);
	line[n] = 0;
	if (!g->cfg.monitor)
		return send_str(g, "");
	if (!mb_hold_held(g->m)) {
		static const char why[] =
			"monitor: the script is not waiting in a run; Lua runs "
			"only while gdb holds a run stopped\n";
		send_output(g, why, sizeof why - 1);
		return send_str(g, "OK");
	}
	char *out = g->cfg.monitor(g->cfg.opaque, line);
	if (out) {
		send_output(g, out, strlen(out));
		free(out);
	}
	send_str(g, "OK");
}

/* ---- one packet ------------------------------------------------------- */

static bool need_stopped(struct mb_gdb *g)
{
	if (mb_machine_paused(g->m))
		return true;
	send_str(g, "E10"); /* all-stop: gdb asks only while stopped */
	return false;
}

static void disconnect(struct mb_gdb *g, bool killed)
{
	pthread_mutex_lock(&g->lock);
	if (g->interrupting && (killed || g->cfg.on_detach != MB_GDB_DETACH_PAUSE)) {
		g->orphan = true; /* its stop is still on the way */
		g->orphan_end = killed || g->cfg.on_detach == MB_GDB_DETACH_EXIT;
		g->orphan_r = (struct mb_result){
			.reason = killed ? MB_STOP_SHUTDOWN : MB_STOP_EXIT };
		snprintf(g->orphan_r.message, sizeof g->orphan_r.message, "%s",
			 killed ? "killed by gdb" : "gdb detached");
	}
	g->interrupting = false;
	pthread_mutex_unlock(&g->lock);
	if (mb_machine_paused(g->m))
		remove_all(g);
	if (killed) {
		end_run(g, MB_STOP_SHUTDOWN, 0, "killed by gdb");
	} else {
		switch (g->cfg.on_detach) {
		case MB_GDB_DETACH_RESUME: go(g, false); break;
		case MB_GDB_DETACH_PAUSE: break; /* held for the next gdb */
		case MB_GDB_DETACH_EXIT:
			end_run(g, MB_STOP_EXIT, 0, "gdb detached");
			break;
		}
	}
	pthread_mutex_lock(&g->lock);
	g->connected = false;
	g->owe = false;
	pthread_mutex_unlock(&g->lock);
	if (g->cfd >= 0)
		close(g->cfd);
	g->cfd = -1;
}

static void packet(struct mb_gdb *g, uint8_t *buf, size_t len)
{
	struct mb_gdb_cmd *c = malloc(sizeof *c);
	char tmp[256];
	int rc, cpu;
	if (!c)
		return send_str(g, "E0c");
	mb_gdb_parse(buf, len, c);
	switch (c->kind) {
	case MB_GDB_UNKNOWN:
	case MB_GDB_MUST_REPLY_EMPTY:
		send_str(g, "");
		break;
	case MB_GDB_MALFORMED:
		send_str(g, "E01");
		break;
	case MB_GDB_Q_SUPPORTED:
		snprintf(tmp, sizeof tmp,
			 "PacketSize=%x;QStartNoAckMode+;qXfer:features:read+;"
			 "qXfer:threads:read+;swbreak+;hwbreak+",
			 MB_GDB_PKT_MAX);
		send_str(g, tmp);
		break;
	case MB_GDB_Q_NOACK:
		send_str(g, "OK");
		g->noack = true;
		break;
	case MB_GDB_Q_XFER:
		xfer(g, c);
		break;
	case MB_GDB_Q_RCMD:
		monitor(g, c);
		break;
	case MB_GDB_Q_FTHREAD: {
		size_t o = 0;
		tmp[o++] = 'm';
		for (unsigned i = 0; i < g->m->ncpu && o + 12 < sizeof tmp; i++)
			o += (size_t)snprintf(tmp + o, sizeof tmp - o, "%s%x",
					      i ? "," : "", i + 1);
		send_pkt(g, tmp, o);
		break;
	}
	case MB_GDB_Q_STHREAD:
		send_str(g, "l");
		break;
	case MB_GDB_Q_C:
		snprintf(tmp, sizeof tmp, "QC%x", g->cur + 1);
		send_str(g, tmp);
		break;
	case MB_GDB_Q_ATTACHED:
		send_str(g, "1");
		break;
	case MB_GDB_Q_SYMBOL:
		send_str(g, "OK");
		break;
	case MB_GDB_STATUS:
		pthread_mutex_lock(&g->lock);
		g->owe = true;
		g->fresh = g->stopped;
		pthread_mutex_unlock(&g->lock);
		if (!g->stopped)
			interrupt(g);
		flush_stop(g);
		break;
	case MB_GDB_READ_REGS:
		if (need_stopped(g))
			read_regs(g);
		break;
	case MB_GDB_WRITE_REGS:
		if (need_stopped(g))
			write_regs(g, c->data, c->ndata, -1);
		break;
	case MB_GDB_READ_REG:
		if (need_stopped(g))
			read_reg(g, c->reg);
		break;
	case MB_GDB_WRITE_REG:
		if (need_stopped(g))
			write_regs(g, c->data, c->ndata, (int64_t)(c->reg < 4096 ? c->reg : 4096));
		break;
	case MB_GDB_READ_MEM: {
		uint64_t n = c->len > (MB_GDB_PKT_MAX - 8) / 2 ? (MB_GDB_PKT_MAX - 8) / 2
								: c->len;
		uint8_t *b = malloc(n + 1);
		char *hex = malloc(2 * n + 1);
		if (!need_stopped(g)) {
		} else if (!b || !hex) {
			send_str(g, "E0c");
		} else if (mb_vcpu_read_virt(g->m, g->gcpu, c->addr, b, n)) {
			/* a partial read: as much as translates */
			uint64_t k = 0;
			while (k < n && !mb_vcpu_read_virt(g->m, g->gcpu, c->addr + k, b + k, 1))
				k++;
			if (!k)
				send_str(g, "E0e");
			else
				mb_gdb_hex(b, k, hex), send_pkt(g, hex, 2 * k);
		} else {
			mb_gdb_hex(b, n, hex);
			send_pkt(g, hex, 2 * n);
		}
		free(b);
		free(hex);
		break;
	}
	case MB_GDB_WRITE_MEM:
		if (!need_stopped(g))
			break;
		rc = c->ndata ? mb_vcpu_write_virt(g->m, g->gcpu, c->addr, c->data,
						   c->ndata)
			      : 0;
		send_str(g, rc ? "E0e" : "OK");
		break;
	case MB_GDB_SET_THREAD:
		if ((cpu = cpu_of(g, c->tid)) < 0)
			send_str(g, "E01");
		else {
			if (c->op == 'g')
				g->gcpu = (unsigned)cpu;
			send_str(g, "OK");
		}
		break;
	case MB_GDB_ALIVE:
		send_str(g, c->tid > 0 && (uint64_t)c->tid <= g->m->ncpu ? "OK" : "E01");
		break;
	case MB_GDB_VCONT_Q:
		send_str(g, "vCont;c;C;s;S");
		break;
	case MB_GDB_CONT:
	case MB_GDB_STEP:
	case MB_GDB_VCONT:
		if (!need_stopped(g))
			break;
		if (c->has_addr) {
			struct mb_regs r;
			if (!mb_vcpu_get_regs(g->m, g->gcpu, &r)) {
				r.rip = c->addr;
				mb_vcpu_set_regs(g->m, g->gcpu, &r);
			}
		}
		if (c->kind == MB_GDB_VCONT)
			vcont(g, c);
		else if (c->kind == MB_GDB_STEP)
			step(g, g->gcpu);
		else
			go(g, true);
		flush_stop(g);
		break;
	case MB_GDB_BREAK_INS:
	case MB_GDB_BREAK_DEL:
		if (!need_stopped(g))
			break;
		rc = c->kind == MB_GDB_BREAK_INS ? insert(g, c) : remove_one(g, c);
		if (rc == -ENOTSUP)
			send_str(g, ""); /* e.g. no KVM_CAP_READONLY_MEM */
		else if (rc)
			send_err(g, rc);
		else
			send_str(g, "OK");
		break;
	case MB_GDB_DETACH:
		send_str(g, "OK");
		disconnect(g, false);
		break;
	case MB_GDB_KILL:
		if (buf[0] == 'v') /* vKill;pid wants a reply, k none */
			send_str(g, "OK");
		disconnect(g, true);
		break;
	}
	free(c);
}

/* ---- the thread ---------------------------------------------------------- */

static void accepted(struct mb_gdb *g, int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	g->cfd = fd;
	g->noack = false;
	g->gcpu = 0;
	mb_gdb_rx_init(&g->rx);
	pthread_mutex_lock(&g->lock);
	g->connected = true;
	g->owe = false;
	pthread_mutex_unlock(&g->lock);
	if (mb_machine_paused(g->m) && !mb_hold_held(g->m)) {
		/* paused outside a run: stopped for gdb, held at the next */
		interrupt(g);
	} else if (!mb_hold_held(g->m)) {
		interrupt(g); /* running: stop it for gdb */
	}
}

static void input(struct mb_gdb *g)
{
	uint8_t b[4096];
	ssize_t n = recv(g->cfd, b, sizeof b, 0);
	if (n <= 0) {
		if (n < 0 && errno == EINTR)
			return;
		disconnect(g, false);
		return;
	}
	for (ssize_t i = 0; i < n && g->cfd >= 0; i++) {
		switch (mb_gdb_rx_byte(&g->rx, b[i])) {
		case MB_GDB_EV_PACKET:
			if (!g->noack)
				put_raw(g, "+", 1);
			packet(g, g->rx.buf, g->rx.len);
			break;
		case MB_GDB_EV_BAD:
			if (!g->noack)
				put_raw(g, "-", 1);
			break;
		case MB_GDB_EV_NAK:
			if (!g->noack && g->out_len)
				put_raw(g, g->out, g->out_len);
			break;
		case MB_GDB_EV_INTR:
			interrupt(g);
			flush_stop(g);
			break;
		default:
			break;
		}
	}
}

static void *serve(void *arg)
{
	struct mb_gdb *g = arg;
	for (;;) {
		struct pollfd p[2] = { { .fd = g->wake, .events = POLLIN },
				       { .fd = g->cfd >= 0 ? g->cfd : g->lfd,
					 .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		mb_seccomp_point(g->m, MB_THREAD_GDB);
		pthread_mutex_lock(&g->lock);
		bool quit = g->quit;
		pthread_mutex_unlock(&g->lock);
		if (quit) {
			/* the machine goes: gdb still gets its last stop reply
			 * (the guest's exit, W) before the socket closes */
			if (g->cfd >= 0)
				flush_stop(g);
			break;
		}
		if (p[0].revents & POLLIN) {
			uint64_t v;
			if (read(g->wake, &v, 8) < 0) {
				/* nothing to drain */
			}
			if (g->cfd >= 0)
				flush_stop(g);
		}
		if (!(p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (g->cfd >= 0) {
			input(g);
		} else {
			int fd = accept4(g->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				accepted(g, fd);
		}
	}
	return NULL;
}

/* ---- setting up ---------------------------------------------------------- */

static int listen_on(struct mb_gdb *g, const char *spec)
{
	int fd = -1;
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		const char *path = spec + 5;
		if (!*path || strlen(path) >= sizeof a.sun_path)
			return mb_seterr(-EINVAL, "listen: \"%s\": a socket path of 1-%zu "
					 "bytes", spec, sizeof a.sun_path - 1);
		memcpy(a.sun_path, path, strlen(path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		unlink(path); /* a stale socket of an earlier run */
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
		    listen(fd, 1)) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return mb_seterr(-e, "listen: %s: %s", spec, strerror(e));
		}
		snprintf(g->path, sizeof g->path, "%s", path);
		snprintf(g->addr, sizeof g->addr, "%s", spec);
	} else if (strncmp(spec, "tcp:", 4) == 0) {
		const char *hp = spec + 4, *colon = strrchr(hp, ':');
		char host[64] = "127.0.0.1";
		char *end;
		if (!colon)
			return mb_seterr(-EINVAL, "listen: \"%s\": expected tcp:HOST:PORT",
					 spec);
		long port = strtol(colon + 1, &end, 10);
		if (*end || end == colon + 1 || port < 0 || port > 65535)
			return mb_seterr(-EINVAL, "listen: \"%s\": bad port", spec);
		if (colon > hp) {
			if ((size_t)(colon - hp) >= sizeof host)
				return mb_seterr(-EINVAL, "listen: \"%s\": host too long", spec);
			memcpy(host, hp, (size_t)(colon - hp));
			host[colon - hp] = 0;
		}
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_port = htons((uint16_t)port) };
		if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
			return mb_seterr(-EINVAL, "listen: \"%s\": host must be an IPv4 "
					 "address", spec);
		int one = 1;
		socklen_t al = sizeof a;
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0)
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
		    listen(fd, 1) || getsockname(fd, (struct sockaddr *)&a, &al)) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return mb_seterr(-e, "listen: %s: %s", spec, strerror(e));
		}
		snprintf(g->addr, sizeof g->addr, "tcp:%s:%u", host, ntohs(a.sin_port));
	} else {
		return mb_seterr(-EINVAL, "listen: \"%s\": expected \"unix:PATH\" or "
				 "\"tcp:HOST:PORT\"", spec);
	}
	g->lfd = fd;
	return 0;
}

static void destroy(void *p)
{
	struct mb_gdb *g = p;
	if (g->started) {
		pthread_mutex_lock(&g->lock);
		g->quit = true;
		pthread_mutex_unlock(&g->lock);
		wake(g);
		pthread_join(g->thread, NULL);
	}
	mb_hold_set(g->m, NULL);
	for (struct gbp *b = g->bps, *n; b; b = n)
		n = b->next, free(b);
	for (struct gwp *w = g->wps, *n; w; w = n)
		n = w->next, free(w);
	if (g->cfd >= 0)
		close(g->cfd);
	if (g->lfd >= 0)
		close(g->lfd);
	if (g->path[0])
		unlink(g->path);
	if (g->wake >= 0)
		close(g->wake);
	pthread_mutex_destroy(&g->lock);
	free(g->xml);
	free(g);
}

int mb_gdb_start(struct mb_machine *m, const struct mb_gdb_config *c,
		 struct mb_gdb **out)
{
	if (m->holder)
		return mb_seterr(-EBUSY, "gdbserver: this machine has one already");
	struct mb_gdb *g = calloc(1, sizeof *g);
	if (!g)
		return mb_seterr(-ENOMEM, "gdbserver: out of memory");
	g->m = m;
	g->cfg = *c;
	g->cfg.listen = NULL;
	g->lfd = g->cfd = -1;
	g->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&g->lock, NULL);
	int rc = g->wake < 0 ? mb_seterr(-errno, "gdbserver: eventfd: %s",
					 strerror(errno))
			     : listen_on(g, c->listen ? c->listen : "");
	if (!rc && mb_machine_on_destroy(m, destroy, g))
		rc = mb_seterr(-ENOMEM, "gdbserver: out of memory");
	if (rc) {
		destroy(g);
		return rc;
	}
	g->holder = (struct mb_holder){ .stopped = stopped, .opaque = g };
	mb_hold_set(m, &g->holder);
	if (c->stop != MB_GDB_STOP_NONE) {
		g->stopped = true; /* held at the next run, before any instruction */
		snprintf(g->reply, sizeof g->reply, "T05thread:1;");
		g->fresh = true;
		mb_hold_request(m);
	}
	if (pthread_create(&g->thread, NULL, serve, g)) {
		/* the destroy hook frees it with the machine */
		return mb_seterr(-EAGAIN, "gdbserver: cannot start its thread");
	}
	g->started = true;
	if (out)
		*out = g;
	return 0;
}

void mb_gdb_close(struct mb_gdb *g)
{
	/* The machine's destroy hook owns g: close the doors now, free later. */
	if (!g || !g->started)
		return;
	pthread_mutex_lock(&g->lock);
	g->quit = true;
	pthread_mutex_unlock(&g->lock);
	wake(g);
	pthread_join(g->thread, NULL);
	g->started = false;
	go(g, false);
	mb_hold_set(g->m, NULL);
}

const char *mb_gdb_address(const struct mb_gdb *g) { return g->addr; }

bool mb_gdb_holding(struct mb_gdb *g) { return mb_hold_held(g->m); }
