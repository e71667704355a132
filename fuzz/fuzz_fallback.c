/* libFuzzer: the emulation fallback's executor (core/fallback.c) on a
 * state and a guest memory both taken from the input: everything int n
 * reads (IVT, IDT, GDT, TSSes, stacks, SSE operands) is the guest's, so any of it must
 * be refused or completed, never read or write outside what the callbacks
 * give, and a refusal must leave the registers as they were. Addresses
 * are drawn small so that they land in the input's memory window. A
 * completed task switch may raise only what the SDM lets it raise in the
 * new task (fallback.c task_gate), and loads only segments that passed
 * their checks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/fallback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes; i++) {
		uint8_t b = 0;
		if (in->n)
			b = *in->p++, in->n--;
		v |= (uint64_t)b << (8 * i);
	}
	return v;
}

static struct mb_seg seg(struct in *in)
{
	struct mb_seg s;
	memset(&s, 0, sizeof s);
	s.selector = (uint16_t)take(in, 2);
	s.base = take(in, 2) << (take(in, 1) & 7);
	s.limit = (uint32_t)take(in, 1) & 1 ? 0xffffffffu : (uint32_t)take(in, 2);
	unsigned a = (unsigned)take(in, 1);
	s.type = a & 0xf, s.present = a >> 4 & 1, s.dpl = a >> 5 & 3;
	s.s = a >> 7;
	unsigned f = (unsigned)take(in, 1);
	s.db = f & 1, s.l = f >> 1 & 1, s.g = f >> 2 & 1;
	return s;
}

/* The memory window: linear [0, n). */
struct mem {
	uint8_t *p;
	size_t n;
};

static int mread(void *ctx, uint64_t la, void *buf, unsigned len)
{
	struct mem *m = ctx;
	if (la >= m->n || len > m->n - la)
		return -1;
	memcpy(buf, m->p + la, len);
	return 0;
}

static int mwrite(void *ctx, uint64_t la, const void *buf, unsigned len)
{
	struct mem *m = ctx;
	if (la >= m->n || len > m->n - la)
		return -1;
	memcpy(m->p + la, buf, len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	struct mb_fb_state st;
	memset(&st, 0, sizeof st);
	for (unsigned i = 0; i < 16; i++)
		st.gpr[i] = take(&in, 1) & 1 ? take(&in, 8) : take(&in, 2);
	st.rip = take(&in, 4);
	st.rflags = take(&in, 3) | 2;
	st.cs = seg(&in), st.ss = seg(&in), st.ds = seg(&in);
	st.es = seg(&in), st.fs = seg(&in), st.gs = seg(&in);
	st.tr = seg(&in), st.ldt = seg(&in);
	st.cr0 = take(&in, 4), st.cr3 = take(&in, 4), st.cr4 = take(&in, 3);
	st.efer = take(&in, 2);
	st.idt_base = take(&in, 2), st.idt_limit = (uint16_t)take(&in, 2);
	st.gdt_base = take(&in, 2), st.gdt_limit = (uint16_t)take(&in, 2);
	st.xcr0 = take(&in, 8);
	st.star = take(&in, 8), st.lstar = take(&in, 8), st.sfmask = take(&in, 8);
	uint8_t insn[15];
	unsigned n = 1 + (unsigned)(take(&in, 1) % 15);
	for (unsigned i = 0; i < n; i++)
		insn[i] = (uint8_t)take(&in, 1);
	/* The SSE registers (core/fallback_sse.c): a pattern from 8 bytes. */
	st.sse_valid = take(&in, 1) & 1;
	st.mxcsr = (uint32_t)take(&in, 4);
	uint64_t x = take(&in, 8);
	for (unsigned i = 0; i < 256; i++, x = x * 6364136223846793005ull + 1)
		st.xmm[i / 16][i % 16] = (uint8_t)(x >> 56);

	struct mem m = { NULL, in.n };
	if (in.n) {
		m.p = malloc(in.n);
		if (!m.p)
			return 0;
		memcpy(m.p, in.p, in.n);
	}
	st.read = mread, st.write = mwrite, st.ctx = &m;
	struct mb_fb_state before = st;
	enum mb_fb_insn k = mb_fallback_exec(&st, insn, n);
	if (k == MB_FB_NONE && memcmp(&st, &before, sizeof st))
		abort(); /* a refusal leaves the registers alone */
	if (k != MB_FB_NONE && !mb_fallback_name(k))
		abort();
	if (st.inject && st.inject_vec >= 32)
		abort();
	/* DR6 bits only come with the #DB of a new task's T bit (injected,
	 * or already delivered through a task gate) */
	if (st.inject_dr6 && (!st.task_switched ||
			      (st.inject && (st.inject_vec != 1 || st.inject_has_err))))
		abort();
	/* what a completed task switch raises in the new task: #DB (T bit),
	 * #TS/#NP/#SS (its segments), #GP(0) (EIP past CS's limit) */
	if (st.task_switched && st.inject &&
	    !(st.inject_vec == 1 || (st.inject_vec >= 10 && st.inject_vec <= 12) ||
	      (st.inject_vec == 13 && st.inject_err == 0)))
		abort();
	/* a loaded (present) segment after a task switch outside VM86 is a
	 * code or data one, and CS is code */
	if (st.task_switched && !(st.rflags & (1u << 17)) &&
	    ((st.cs.present && !(st.cs.type & 8)) ||
	     (st.ss.present && (st.ss.type & 0xa) != 2)))
		abort();
	free(m.p);
	return 0;
}
