/*
 * Fault traces: JSON lines. The first line names the format and the seed,
 * each following line one decision:
 *   {"moonbox_fault_trace":1,"seed":42}
 *   {"rule":1,"ordinal":3,"dev":"blk0","seq":17,"op":"read","sector":2048,
 *    "nsectors":8,"action":"blk.error","status":"ioerr","ms":0,
 *    "guest_ns":123,"host_ns":456}
 * The reader takes only that: flat objects, string values without
 * escapes, unsigned decimal integers, every key known and present once. A
 * trace is input from outside (a file someone sent), so everything is
 * checked and an error names the line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/fault.h"

static const char *const op_names[] = { "read", "write", "flush", "discard" };
static const char *const action_names[] = { "none", "blk.error", "blk.latency",
					    "blk.corrupt", "blk.lying_flush",
					    "blk.torn_write", "blk.bad", "blk.hold",
					    "mem.flip", "uart.drop", "uart.corrupt",
					    "uart.error", "irq.drop", "irq.storm",
					    "irq.spurious", "irq.delay", "pit.drop",
					    "pit.late", "rtc.jump", "virtio.bad_used_id",
					    "virtio.needs_reset", "virtio.config_change",
					    "net.drop", "net.duplicate", "net.corrupt",
					    "net.reorder", "net.delay", "net.rate",
					    "net.link", "dev.delay", "dev.drop",
					    "dev.corrupt", "dev.kill" };
#define NACTIONS (sizeof action_names / sizeof *action_names)

const char *mb_fault_op_name(unsigned op)
{
	for (unsigned i = 0; i < 4; i++)
		if (op == 1u << i)
			return op_names[i];
	return op == MB_FAULT_OP_ANY ? "any" : "?";
}

const char *mb_fault_action_name(enum mb_fault_action a)
{
	return (unsigned)a < NACTIONS ? action_names[a] : "?";
}

static const char *status_name(uint8_t s)
{
	return s == VIRTIO_BLK_S_UNSUPP ? "unsupp" : s == VIRTIO_BLK_S_IOERR ? "ioerr"
									    : "ok";
}

int mb_fault_trace_header(char *buf, size_t len, uint64_t seed)
{
	return snprintf(buf, len, "{\"moonbox_fault_trace\":1,\"seed\":%llu}\n",
			(unsigned long long)seed);
}

int mb_fault_trace_format(char *buf, size_t len, const struct mb_fault_record *r)
{
	return snprintf(buf, len,
			"{\"rule\":%u,\"ordinal\":%llu,\"dev\":\"%s\",\"seq\":%llu,"
			"\"op\":\"%s\",\"sector\":%llu,\"nsectors\":%llu,"
			"\"action\":\"%s\",\"status\":\"%s\",\"ms\":%u,"
			"\"guest_ns\":%llu,\"host_ns\":%llu}\n",
			r->rule, (unsigned long long)r->ordinal, r->dev,
			(unsigned long long)r->seq, mb_fault_op_name(r->op),
			(unsigned long long)r->sector, (unsigned long long)r->nsectors,
			mb_fault_action_name(r->action), status_name(r->status), r->ms,
			(unsigned long long)r->guest_ns, (unsigned long long)r->host_ns);
}

/* ---- the reader ------------------------------------------------------------ */

#define MAX_LINE 1024
#define MAX_KEYS 16

struct kv {
	char key[24];
	bool str;
	char s[MB_DEVICE_NAME_MAX];
	uint64_t n;
};

static int bad(size_t line, const char *why, const char *what)
{
	return mb_seterr(-EINVAL, "line %zu: %s%s%s", line, why, what ? ": " : "",
			 what ? what : "");
}

/* A quoted string without escapes or control bytes, into out (cap bytes
 * with the NUL). Returns the position after the closing quote or NULL. */
static const char *str(const char *p, const char *end, char *out, size_t cap)
{
	if (p >= end || *p != '"')
		return NULL;
	size_t n = 0;
	for (p++; p < end && *p != '"'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == '\\' || n + 1 >= cap)
			return NULL;
		out[n++] = (char)c;
	}
	if (p >= end)
		return NULL;
	out[n] = 0;
	return p + 1;
}

static const char *num(const char *p, const char *end, uint64_t *out)
{
	uint64_t v = 0;
	const char *s = p;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return NULL; /* overflow */
		v = v * 10 + d;
	}
	if (p == s || (p - s > 1 && *s == '0'))
		return NULL;
	*out = v;
	return p;
}

static const char *ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++;
	return p;
}

/* One flat object into kv[]; returns the count or a negative code. */
static int object(const char *p, const char *end, size_t line, struct kv *kv)
{
	int n = 0;
	p = ws(p, end);
	if (p >= end || *p != '{')
		return bad(line, "not a JSON object", NULL);
	p = ws(p + 1, end);
	while (p < end && *p != '}') {
		if (n == MAX_KEYS)
			return bad(line, "too many keys", NULL);
		struct kv *k = &kv[n];
		memset(k, 0, sizeof *k);
		if (!(p = str(p, end, k->key, sizeof k->key)))
			return bad(line, "expected a key (a short string)", NULL);
		for (int i = 0; i < n; i++)
			if (strcmp(kv[i].key, k->key) == 0)
				return bad(line, "key given twice", k->key);
		p = ws(p, end);
		if (p >= end || *p != ':')
			return bad(line, "expected ':' after", k->key);
		p = ws(p + 1, end);
		if (p < end && *p == '"') {
			k->str = true;
			p = str(p, end, k->s, sizeof k->s);
		} else {
			p = num(p, end, &k->n);
		}
		if (!p)
			return bad(line, "bad value (a short string or an unsigned "
				   "integer) for", k->key);
		n++;
		p = ws(p, end);
		if (p < end && *p == ',')
			p = ws(p + 1, end);
		else if (p < end && *p != '}')
			return bad(line, "expected ',' or '}' after", k->key);
	}
	if (p >= end)
		return bad(line, "unterminated object", NULL);
	if (ws(p + 1, end) != end)
		return bad(line, "text after the object", NULL);
	return n;
}

static struct kv *find(struct kv *kv, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0)
			return &kv[i];
	return NULL;
}

static int lookup(const char *const *names, unsigned nn, const char *s)
{
	for (unsigned i = 0; i < nn; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

static int record(struct kv *kv, int n, size_t line, struct mb_fault_record *r)
{
	static const char *const ints[] = { "rule", "ordinal", "seq", "sector",
					    "nsectors", "ms", "guest_ns", "host_ns" };
	static const char *const strs[] = { "dev", "op", "action", "status" };
	uint64_t v[8];
	const char *s[4];
	if (n != 12)
		return bad(line, "a record has exactly 12 keys", NULL);
	for (unsigned i = 0; i < 8; i++) {
		struct kv *k = find(kv, n, ints[i]);
		if (!k || k->str)
			return bad(line, "missing or not an integer", ints[i]);
		v[i] = k->n;
	}
	for (unsigned i = 0; i < 4; i++) {
		struct kv *k = find(kv, n, strs[i]);
		if (!k || !k->str)
			return bad(line, "missing or not a string", strs[i]);
		s[i] = k->s;
	}
	memset(r, 0, sizeof *r);
	if (v[0] == 0 || v[0] > 1000000 || v[1] == 0)
		return bad(line, v[0] == 0 || v[0] > 1000000 ? "rule out of range"
							      : "ordinal is 0", NULL);
	if (v[5] > 3600000)
		return bad(line, "ms is more than an hour", NULL);
	if (!s[0][0])
		return bad(line, "dev is empty", NULL);
	int op = lookup(op_names, 4, s[1]);
	int act = lookup(action_names, NACTIONS, s[2]);
	int st = lookup((const char *const[]){ "ok", "ioerr", "unsupp" }, 3, s[3]);
	if (op < 0)
		return bad(line, "unknown op", s[1]);
	if (act < 0)
		return bad(line, "unknown action", s[2]);
	if (st < 0)
		return bad(line, "unknown status", s[3]);
	r->rule = (unsigned)v[0], r->ordinal = v[1], r->seq = v[2];
	r->sector = v[3], r->nsectors = v[4], r->ms = (uint32_t)v[5];
	r->guest_ns = v[6], r->host_ns = v[7];
	snprintf(r->dev, sizeof r->dev, "%s", s[0]);
	r->op = 1u << op;
	r->action = (enum mb_fault_action)act;
	r->status = (uint8_t)st;
	return 0;
}

int mb_fault_trace_parse(const char *buf, size_t len, struct mb_fault_trace *t)
{
	memset(t, 0, sizeof *t);
	struct kv kv[MAX_KEYS];
	size_t line = 0;
	const char *p = buf, *end = buf + len;
	int rc = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;
		line++;
		if (e - p > MAX_LINE) {
			rc = bad(line, "longer than 1024 bytes", NULL);
			goto fail;
		}
		if (memchr(p, 0, (size_t)(e - p))) {
			rc = bad(line, "a NUL byte", NULL);
			goto fail;
		}
		int n = object(p, e, line, kv);
		if (n < 0) {
			rc = n;
			goto fail;
		}
		if (line == 1) {
			struct kv *f = find(kv, n, "moonbox_fault_trace");
			struct kv *s = find(kv, n, "seed");
			if (n != 2 || !f || f->str || f->n != 1 || !s || s->str) {
				rc = bad(line, "not a moonbox fault trace (expected "
					 "{\"moonbox_fault_trace\":1,\"seed\":N})", NULL);
				goto fail;
			}
			t->seed = s->n;
		} else {
			if (t->n == t->cap) {
				size_t cap = t->cap ? 2 * t->cap : 64;
				void *nr = realloc(t->r, cap * sizeof *t->r);
				if (!nr) {
					rc = mb_seterr(-ENOMEM, "line %zu: out of memory", line);
					goto fail;
				}
				t->r = nr, t->cap = cap;
			}
			if ((rc = record(kv, n, line, &t->r[t->n])))
				goto fail;
			t->n++;
		}
		p = nl ? nl + 1 : end;
	}
	if (line == 0) {
		rc = mb_seterr(-EINVAL, "line 1: empty (not a moonbox fault trace)");
		goto fail;
	}
	return 0;
fail:
	mb_fault_trace_fini(t);
	return rc;
}

int mb_fault_trace_load(const char *path, struct mb_fault_trace *t)
{
	memset(t, 0, sizeof *t);
	FILE *f = fopen(path, "rb");
	if (!f)
		return mb_seterr(-errno, "replay: %s: %s", path, strerror(errno));
	size_t cap = 0, len = 0;
	char *buf = NULL;
	int rc = 0;
	for (;;) {
		if (len == cap) {
			if (cap >= (256u << 20)) {
				rc = mb_seterr(-EFBIG, "replay: %s: larger than 256 MiB", path);
				break;
			}
			char *nb = realloc(buf, cap = cap ? 2 * cap : 65536);
			if (!nb) {
				rc = mb_seterr(-ENOMEM, "replay: %s: out of memory", path);
				break;
			}
			buf = nb;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
	}
	if (!rc && ferror(f))
		rc = mb_seterr(-EIO, "replay: %s: read error", path);
	fclose(f);
	if (!rc && (rc = mb_fault_trace_parse(buf, len, t))) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", mb_errmsg());
		mb_seterr(rc, "replay: %s: %s", path, msg);
	}
	free(buf);
	return rc;
}

void mb_fault_trace_fini(struct mb_fault_trace *t)
{
	free(t->r);
	memset(t, 0, sizeof *t);
}
