/*
 * The gdb remote protocol as bytes (see gdb_proto.h). Every input byte
 * comes from the network: each write is bounded by the buffer, each count
 * checked, and nothing here allocates.
 */
#include <string.h>

#include "core/gdb_proto.h"

enum { RX_IDLE, RX_DATA, RX_ESC, RX_RUN, RX_CK1, RX_CK2 };

void mb_gdb_rx_init(struct mb_gdb_rx *rx)
{
	memset(rx, 0, sizeof *rx);
}

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void put(struct mb_gdb_rx *rx, uint8_t c)
{
	if (rx->len < MB_GDB_PKT_MAX)
		rx->buf[rx->len++] = c;
	else
		rx->overflow = true;
}

static void start(struct mb_gdb_rx *rx)
{
	rx->st = RX_DATA;
	rx->len = 0;
	rx->sum = 0;
	rx->overflow = false;
}

enum mb_gdb_ev mb_gdb_rx_byte(struct mb_gdb_rx *rx, uint8_t c)
{
	int v;
	switch (rx->st) {
	case RX_IDLE:
		if (c == '$')
			start(rx);
		else if (c == 0x03)
			return MB_GDB_EV_INTR;
		else if (c == '+')
			return MB_GDB_EV_ACK;
		else if (c == '-')
			return MB_GDB_EV_NAK;
		return MB_GDB_EV_NONE; /* noise between packets */
	case RX_DATA:
		if (c == '$') { /* a new packet before the end: resynchronise */
			start(rx);
			return MB_GDB_EV_NONE;
		}
		if (c == '#') {
			rx->st = RX_CK1;
			return MB_GDB_EV_NONE;
		}
		rx->sum += c;
		if (c == '}')
			rx->st = RX_ESC;
		else if (c == '*')
			rx->st = RX_RUN;
		else
			put(rx, c);
		return MB_GDB_EV_NONE;
	case RX_ESC:
		rx->sum += c;
		put(rx, c ^ 0x20);
		rx->st = RX_DATA;
		return MB_GDB_EV_NONE;
	case RX_RUN: /* "x*N": N - 29 more copies of x (Overview) */
		if (c == '#') { /* no count: a broken packet, still framed */
			rx->overflow = true;
			rx->st = RX_CK1;
			return MB_GDB_EV_NONE;
		}
		rx->sum += c;
		if (rx->len == 0 || c < 29 + 3 || c > 126)
			rx->overflow = true;
		else
			for (int n = c - 29; n > 0; n--)
				put(rx, rx->buf[rx->len - 1]);
		rx->st = RX_DATA;
		return MB_GDB_EV_NONE;
	case RX_CK1:
		if ((v = hexval(c)) < 0) {
			rx->st = RX_IDLE;
			return MB_GDB_EV_BAD;
		}
		rx->ck = (uint8_t)(v << 4);
		rx->st = RX_CK2;
		return MB_GDB_EV_NONE;
	case RX_CK2:
		rx->st = RX_IDLE;
		if ((v = hexval(c)) < 0 || rx->overflow ||
		    (uint8_t)(rx->ck | v) != rx->sum)
			return MB_GDB_EV_BAD;
		rx->buf[rx->len] = 0;
		return MB_GDB_EV_PACKET;
	}
	rx->st = RX_IDLE;
	return MB_GDB_EV_NONE;
}

size_t mb_gdb_frame(const void *payload, size_t n, char *out, size_t cap)
{
	static const char hx[] = "0123456789abcdef";
	const uint8_t *p = payload;
	size_t o = 0;
	uint8_t sum = 0;
	if (cap < 4)
		return 0;
	out[o++] = '$';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		bool esc = c == '#' || c == '$' || c == '}' || c == '*';
		if (o + (esc ? 2 : 1) + 3 > cap)
			return 0;
		if (esc) {
			out[o++] = '}';
			sum += '}';
			c ^= 0x20;
		}
		out[o++] = (char)c;
		sum += c;
	}
	out[o++] = '#';
	out[o++] = hx[sum >> 4];
	out[o++] = hx[sum & 15];
	return o;
}

void mb_gdb_hex(const void *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	const uint8_t *p = in;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[p[i] >> 4];
		out[2 * i + 1] = hx[p[i] & 15];
	}
}

bool mb_gdb_unhex(const char *in, size_t n, void *out)
{
	uint8_t *o = out;
	for (size_t i = 0; i < n; i++) {
		int h = hexval((uint8_t)in[2 * i]), l = hexval((uint8_t)in[2 * i + 1]);
		if (h < 0 || l < 0)
			return false;
		o[i] = (uint8_t)(h << 4 | l);
	}
	return true;
}

bool mb_gdb_num(const char **p, const char *end, uint64_t *v)
{
	const char *s = *p;
	uint64_t x = 0;
	int n = 0, d;
	while (s < end && (d = hexval((uint8_t)*s)) >= 0) {
		if (++n > 16)
			return false;
		x = x << 4 | (uint64_t)d;
		s++;
	}
	if (!n)
		return false;
	*p = s, *v = x;
	return true;
}

static bool tid(const char **p, const char *end, int64_t *t)
{
	uint64_t v;
	if (end - *p >= 2 && (*p)[0] == '-' && (*p)[1] == '1') {
		*p += 2, *t = -1;
		return true;
	}
	if (!mb_gdb_num(p, end, &v) || v > 0x7fffffff)
		return false;
	*t = (int64_t)v;
	return true;
}

static bool lit(const char **p, const char *end, char c)
{
	if (*p < end && **p == c) {
		(*p)++;
		return true;
	}
	return false;
}

/* The rest of the packet as hex, decoded in place. */
static bool hexdata(struct mb_gdb_cmd *c, const char *p, const char *end)
{
	size_t n = (size_t)(end - p);
	if (n % 2)
		return false;
	uint8_t *d = (uint8_t *)(uintptr_t)p;
	if (!mb_gdb_unhex(p, n / 2, d)) /* writes behind where it reads */
		return false;
	c->data = d, c->ndata = n / 2;
	return true;
}

static bool prefix(const char *s, const char *end, const char *pre)
{
	size_t n = strlen(pre);
	return (size_t)(end - s) >= n && memcmp(s, pre, n) == 0;
}

static bool is(const char *s, const char *end, const char *word)
{
	return (size_t)(end - s) == strlen(word) && prefix(s, end, word);
}

/* qXfer:OBJECT:read:ANNEX:OFFSET,LENGTH */
static void xfer(struct mb_gdb_cmd *c, const char *p, const char *end)
{
	const char *o = p, *q;
	c->kind = MB_GDB_MALFORMED;
	if (!(q = memchr(p, ':', (size_t)(end - p))) ||
	    (size_t)(q - o) >= sizeof c->object)
		return;
	memcpy(c->object, o, (size_t)(q - o));
	c->object[q - o] = 0;
	p = q + 1;
	if (!prefix(p, end, "read:")) {
		c->kind = MB_GDB_UNKNOWN; /* write: not supported */
		return;
	}
	p += 5;
	if (!(q = memchr(p, ':', (size_t)(end - p))) ||
	    (size_t)(q - p) >= sizeof c->xannex)
		return;
	memcpy(c->xannex, p, (size_t)(q - p));
	c->xannex[q - p] = 0;
	p = q + 1;
	if (!mb_gdb_num(&p, end, &c->addr) || !lit(&p, end, ',') ||
	    !mb_gdb_num(&p, end, &c->len) || p != end)
		return;
	c->kind = MB_GDB_Q_XFER;
}

static void query(struct mb_gdb_cmd *c, const char *p, const char *end)
{
	if (prefix(p, end, "qSupported"))
		c->kind = MB_GDB_Q_SUPPORTED;
	else if (prefix(p, end, "qXfer:"))
		xfer(c, p + 6, end);
	else if (prefix(p, end, "qRcmd,"))
		c->kind = hexdata(c, p + 6, end) ? MB_GDB_Q_RCMD : MB_GDB_MALFORMED;
	else if (is(p, end, "qfThreadInfo"))
		c->kind = MB_GDB_Q_FTHREAD;
	else if (is(p, end, "qsThreadInfo"))
		c->kind = MB_GDB_Q_STHREAD;
	else if (is(p, end, "qC"))
		c->kind = MB_GDB_Q_C;
	else if (prefix(p, end, "qAttached"))
		c->kind = MB_GDB_Q_ATTACHED;
	else if (prefix(p, end, "qSymbol"))
		c->kind = MB_GDB_Q_SYMBOL;
}

/* vCont;a[:tid];a[:tid]... (a: c, C sig, s, S sig) */
static void vcont(struct mb_gdb_cmd *c, const char *p, const char *end)
{
	c->kind = MB_GDB_MALFORMED;
	c->nact = 0;
	while (p < end) {
		uint64_t sig;
		struct mb_gdb_action a = { .tid = -1 };
		if (!lit(&p, end, ';') || p >= end || c->nact >= MB_GDB_VCONT_MAX)
			return;
		char op = *p++;
		if (op == 'C' || op == 'S') {
			if (!mb_gdb_num(&p, end, &sig))
				return;
			op = op == 'C' ? 'c' : 's';
		} else if (op != 'c' && op != 's') {
			return; /* t, r: not offered by vCont? */
		}
		a.op = op;
		if (lit(&p, end, ':') && !tid(&p, end, &a.tid))
			return;
		c->act[c->nact++] = a;
	}
	if (c->nact)
		c->kind = MB_GDB_VCONT;
}

void mb_gdb_parse(uint8_t *buf, size_t len, struct mb_gdb_cmd *c)
{
	const char *p = (const char *)buf, *end = p + len;
	memset(c, 0, sizeof *c);
	c->kind = MB_GDB_UNKNOWN;
	if (!len)
		return;
	char op = *p++;
	uint64_t v;
	switch (op) {
	case 'q':
		query(c, p - 1, end);
		return;
	case 'Q':
		if (is(p, end, "StartNoAckMode"))
			c->kind = MB_GDB_Q_NOACK;
		return;
	case '?':
		c->kind = MB_GDB_STATUS;
		return;
	case 'g':
		c->kind = p == end ? MB_GDB_READ_REGS : MB_GDB_MALFORMED;
		return;
	case 'G':
		c->kind = hexdata(c, p, end) ? MB_GDB_WRITE_REGS : MB_GDB_MALFORMED;
		return;
	case 'p':
		c->kind = mb_gdb_num(&p, end, &c->reg) && p == end ? MB_GDB_READ_REG
								   : MB_GDB_MALFORMED;
		return;
	case 'P':
		c->kind = mb_gdb_num(&p, end, &c->reg) && lit(&p, end, '=') &&
				  hexdata(c, p, end)
			  ? MB_GDB_WRITE_REG
			  : MB_GDB_MALFORMED;
		return;
	case 'm':
		c->kind = mb_gdb_num(&p, end, &c->addr) && lit(&p, end, ',') &&
				  mb_gdb_num(&p, end, &c->len) && p == end
			  ? MB_GDB_READ_MEM
			  : MB_GDB_MALFORMED;
		return;
	case 'M':
	case 'X':
		c->kind = MB_GDB_MALFORMED;
		if (!mb_gdb_num(&p, end, &c->addr) || !lit(&p, end, ',') ||
		    !mb_gdb_num(&p, end, &c->len) || !lit(&p, end, ':'))
			return;
		if (op == 'M') {
			if (!hexdata(c, p, end))
				return;
		} else {
			c->data = (const uint8_t *)p, c->ndata = (size_t)(end - p);
		}
		if (c->ndata == c->len)
			c->kind = MB_GDB_WRITE_MEM;
		return;
	case 'H':
		c->kind = MB_GDB_MALFORMED;
		if (p < end && (*p == 'g' || *p == 'c')) {
			c->op = *p++;
			if (tid(&p, end, &c->tid) && p == end)
				c->kind = MB_GDB_SET_THREAD;
		}
		return;
	case 'T':
		c->kind = tid(&p, end, &c->tid) && p == end ? MB_GDB_ALIVE
							    : MB_GDB_MALFORMED;
		return;
	case 'c':
	case 's':
	case 'C':
	case 'S':
		c->kind = MB_GDB_MALFORMED;
		if ((op == 'C' || op == 'S') &&
		    (!mb_gdb_num(&p, end, &v) || (p < end && !lit(&p, end, ';'))))
			return;
		if (p < end) {
			if (!mb_gdb_num(&p, end, &c->addr) || p != end)
				return;
			c->has_addr = true;
		}
		c->kind = op == 'c' || op == 'C' ? MB_GDB_CONT : MB_GDB_STEP;
		return;
	case 'v':
		p--;
		if (is(p, end, "vCont?"))
			c->kind = MB_GDB_VCONT_Q;
		else if (prefix(p, end, "vCont;"))
			vcont(c, p + 5, end);
		else if (prefix(p, end, "vKill"))
			c->kind = MB_GDB_KILL;
		else if (is(p, end, "vMustReplyEmpty"))
			c->kind = MB_GDB_MUST_REPLY_EMPTY;
		return;
	case 'Z':
	case 'z':
		c->kind = MB_GDB_MALFORMED;
		if (!mb_gdb_num(&p, end, &v) || v > 4 || !lit(&p, end, ',') ||
		    !mb_gdb_num(&p, end, &c->addr) || !lit(&p, end, ',') ||
		    !mb_gdb_num(&p, end, &c->len) || (p != end && *p != ';'))
			return;
		c->type = (unsigned)v;
		c->kind = op == 'Z' ? MB_GDB_BREAK_INS : MB_GDB_BREAK_DEL;
		return;
	case 'D':
		c->kind = MB_GDB_DETACH;
		return;
	case 'k':
		c->kind = MB_GDB_KILL;
		return;
	}
}
