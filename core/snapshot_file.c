/*
 * Snapshot files (docs/snapshot.md): a 32-byte header (magic, version,
 * payload length, CRC-32C of the payload, CRC-32C of the header), then
 * records { u32 tag, u32 zero, u64 length, bytes } ending with "END ".
 * A file is read and checked whole before anything uses it: a corrupt or
 * truncated file is refused with what is wrong, never half-loaded.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/snapshot.h"

#define PAGE 4096u
#define MAGIC "MOONSNAP"
#define VERSION 2u /* 2: KEPT records (a disk overlay's blocks); 1 is read too */
#define HDR 32u

#define TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | \
			 (uint32_t)(d) << 24)
enum {
	T_MACH = TAG('M', 'A', 'C', 'H'), T_REGN = TAG('R', 'E', 'G', 'N'),
	T_CONF = TAG('C', 'O', 'N', 'F'), T_DEV = TAG('D', 'E', 'V', ' '),
	T_CPU = TAG('C', 'P', 'U', ' '), T_VM = TAG('V', 'M', ' ', ' '),
	T_RAM = TAG('R', 'A', 'M', ' '), T_END = TAG('E', 'N', 'D', ' '),
	T_KEPT = TAG('K', 'E', 'P', 'T'),
};

/* ---- CRC-32C ------------------------------------------------------------ */

static uint32_t table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		table[i] = c;
	}
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	uint32_t c32 = (uint32_t)c;
	for (; len; p++, len--)
		c32 = __builtin_ia32_crc32qi(c32, *p);
	return c32;
}

uint32_t mb_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	crc = ~crc;
	if (__builtin_cpu_supports("sse4.2")) {
		crc = crc_hw(crc, p, len);
	} else {
		if (!table[1])
			crc_init();
		for (; len; p++, len--)
			crc = table[(crc ^ *p) & 0xff] ^ (crc >> 8);
	}
	return ~crc;
}

/* ---- writing ------------------------------------------------------------ */

struct out {
	FILE *f;
	uint32_t crc;
	uint64_t len;
	bool err;
};

static void put(struct out *o, const void *p, size_t n)
{
	if (o->err || !n)
		return;
	if (fwrite(p, 1, n, o->f) != n)
		o->err = true;
	o->crc = mb_crc32c(o->crc, p, n);
	o->len += n;
}

static void record(struct out *o, uint32_t tag, uint64_t len)
{
	uint32_t h[2] = { tag, 0 };
	put(o, h, sizeof h);
	put(o, &len, sizeof len);
}

static void put_blob(struct out *o, uint32_t tag, uint32_t a, uint32_t b,
		     const struct blob *bl)
{
	if (!bl->len)
		return;
	uint32_t ids[2] = { a, b };
	record(o, tag, sizeof ids + bl->len);
	put(o, ids, sizeof ids);
	put(o, bl->data, bl->len);
}

static bool is_zero(const uint8_t *p)
{
	static const uint8_t zero[PAGE];
	return memcmp(p, zero, PAGE) == 0;
}

static bool resident(const uint8_t *p)
{
	unsigned char v = 1;
	return mincore((void *)p, PAGE, &v) || (v & 1);
}


/* RAM: runs of pages that are not all zero (untouched ones skipped). */
static void put_region(struct out *o, uint32_t idx, const struct snap_region *r)
{
	uint64_t pages = r->size / PAGE;
	for (uint64_t p = 0; p < pages;) {
		if (!resident(r->copy + p * PAGE) || is_zero(r->copy + p * PAGE)) {
			p++;
			continue;
		}
		uint64_t q = p + 1;
		while (q < pages && q - p < (1u << 16) && resident(r->copy + q * PAGE) &&
		       !is_zero(r->copy + q * PAGE))
			q++;
		uint32_t hdr[2] = { idx, 0 };
		uint64_t run[2] = { p, q - p };
		record(o, T_RAM, sizeof hdr + sizeof run + (q - p) * PAGE);
		put(o, hdr, sizeof hdr);
		put(o, run, sizeof run);
		put(o, r->copy + p * PAGE, (q - p) * PAGE);
		p = q;
	}
}

static int put_cb(void *ctx, const void *p, size_t n)
{
	struct out *o = ctx;
	put(o, p, n);
	return o->err ? -EIO : 0;
}

/* KEPT: what a device keeps outside its state struct (a disk overlay's
 * written blocks), in the device's own layout after its name. */
static void put_kept(struct out *o, const struct snap_dev *e)
{
	uint64_t n = e->kept ? e->kept_size(e->kept) : 0;
	if (!n)
		return;
	record(o, T_KEPT, sizeof e->name + n);
	put(o, e->name, sizeof e->name);
	uint64_t at = o->len;
	if (e->kept_write(e->kept, put_cb, o) || o->len - at != n)
		o->err = true; /* the device wrote other than it said */
}

int mb_snapshot_write(const struct mb_snapshot *s, const char *path)
{
	char tmp[4096];
	for (size_t i = 0; i < s->ndev; i++)
		if (s->dev[i].kept && (!s->dev[i].kept_size || !s->dev[i].kept_write))
			return mb_seterr(-ENOTSUP, "snapshot: device %s (%s) keeps state "
					 "outside its registers that a snapshot file "
					 "cannot hold (take an in-memory snapshot)",
					 s->dev[i].name, s->dev[i].kind);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	struct out o = { .f = fopen(tmp, "wb") };
	if (!o.f)
		return mb_seterr(-errno, "snapshot: %s: %s", tmp, strerror(errno));
	uint8_t hdr[HDR] = { 0 };
	if (fwrite(hdr, 1, HDR, o.f) != HDR)
		o.err = true;
	uint32_t mach[4] = { s->ncpu, s->irqchip, s->kernel_pit, (uint32_t)s->nreg };
	record(&o, T_MACH, sizeof mach);
	put(&o, mach, sizeof mach);
	for (size_t i = 0; i < s->nreg; i++) {
		const struct snap_region *r = &s->reg[i];
		uint64_t bs[2] = { r->base, r->size };
		uint32_t fl[2] = { r->flags, 0 };
		record(&o, T_REGN, sizeof bs + sizeof fl + sizeof r->name);
		put(&o, bs, sizeof bs);
		put(&o, fl, sizeof fl);
		put(&o, r->name, sizeof r->name);
	}
	if (s->conf.len) {
		record(&o, T_CONF, s->conf.len);
		put(&o, s->conf.data, s->conf.len);
	}
	for (size_t i = 0; i < s->ndev; i++) {
		const struct snap_dev *e = &s->dev[i];
		uint32_t ver[2] = { e->version, 0 };
		record(&o, T_DEV, sizeof e->name + sizeof e->kind + sizeof e->desc +
				  sizeof ver + sizeof e->size + e->size);
		put(&o, e->name, sizeof e->name);
		put(&o, e->kind, sizeof e->kind);
		put(&o, e->desc, sizeof e->desc);
		put(&o, ver, sizeof ver);
		put(&o, &e->size, sizeof e->size);
		put(&o, e->data, e->size);
	}
	for (size_t i = 0; i < s->ndev && !o.err; i++)
		put_kept(&o, &s->dev[i]);
	for (unsigned c = 0; c < s->ncpu; c++)
		for (unsigned p = 0; p < CPU_NPARTS; p++)
			put_blob(&o, T_CPU, c, p, &s->cpu[c].part[p]);
	for (unsigned p = 0; p < VM_NPARTS; p++)
		put_blob(&o, T_VM, p, 0, &s->vm[p]);
	for (size_t i = 0; i < s->nreg; i++)
		put_region(&o, (uint32_t)i, &s->reg[i]);
	record(&o, T_END, 0);
	memcpy(hdr, MAGIC, 8);
	uint32_t v[2] = { VERSION, HDR };
	memcpy(hdr + 8, v, 8);
	memcpy(hdr + 16, &o.len, 8);
	memcpy(hdr + 24, &o.crc, 4);
	uint32_t hcrc = mb_crc32c(0, hdr, 28);
	memcpy(hdr + 28, &hcrc, 4);
	if (!o.err && (fseek(o.f, 0, SEEK_SET) || fwrite(hdr, 1, HDR, o.f) != HDR))
		o.err = true;
	int e = errno;
	if (fclose(o.f))
		o.err = true, e = errno;
	if (o.err || rename(tmp, path)) {
		if (!o.err)
			e = errno;
		unlink(tmp);
		return mb_seterr(-e, "snapshot: writing %s: %s", path, strerror(e));
	}
	return 0;
}

/* ---- reading ------------------------------------------------------------ */

struct in {
	const uint8_t *p;
	uint64_t len, at;
	const char *path;
	uint32_t version;
};

static int bad(const struct in *in, const char *why)
{
	return mb_seterr(-EINVAL, "restore: %s: malformed record at byte %" PRIu64
			 ": %s", in->path, in->at + HDR, why);
}

static int parse(struct in *in, struct mb_snapshot *s)
{
	bool mach = false, end = false;
	size_t nregn = 0;
	while (in->at < in->len && !end) {
		if (in->len - in->at < 16)
			return bad(in, "a record header is cut short");
		uint32_t tag, zero;
		uint64_t len;
		memcpy(&tag, in->p + in->at, 4);
		memcpy(&zero, in->p + in->at + 4, 4);
		memcpy(&len, in->p + in->at + 8, 8);
		if (zero || len > in->len - in->at - 16)
			return bad(in, "its length runs past the end");
		const uint8_t *d = in->p + in->at + 16;
		if (tag != T_MACH && !mach)
			return bad(in, "the machine record must come first");
		switch (tag) {
		case T_MACH: {
			uint32_t v[4];
			if (len != sizeof v || mach)
				return bad(in, "machine record");
			memcpy(v, d, sizeof v);
			if (v[0] < 1 || v[0] > MB_MAX_CPUS || v[1] > 1 || v[2] > 1 ||
			    v[3] > MB_MAX_SLOTS)
				return bad(in, "machine record out of range");
			s->ncpu = v[0], s->irqchip = v[1], s->kernel_pit = v[2];
			s->nreg = v[3];
			mach = true;
			break;
		}
		case T_REGN: {
			struct snap_region *r = &s->reg[nregn];
			if (len != 56 || nregn >= s->nreg)
				return bad(in, "memory region record");
			memcpy(&r->base, d, 8);
			memcpy(&r->size, d + 8, 8);
			memcpy(&r->flags, d + 16, 4);
			memcpy(r->name, d + 24, 32);
			r->name[31] = 0;
			if (!r->size || r->size % PAGE || r->base % PAGE ||
			    r->base + r->size < r->base)
				return bad(in, "memory region out of range");
			nregn++;
			break;
		}
		case T_CONF:
			if (s->conf.len || mb_blob_set(&s->conf, d, len))
				return bad(in, "configuration record");
			break;
		case T_DEV: {
			if (len < 112)
				return bad(in, "device record");
			struct snap_dev *nd = realloc(s->dev, (s->ndev + 1) * sizeof *nd);
			if (!nd)
				return mb_seterr(-ENOMEM, "restore: out of memory");
			s->dev = nd;
			struct snap_dev *e = &s->dev[s->ndev++];
			memset(e, 0, sizeof *e);
			memcpy(e->name, d, 32);
			memcpy(e->kind, d + 32, 32);
			memcpy(e->desc, d + 64, 32);
			e->name[31] = e->kind[31] = e->desc[31] = 0;
			memcpy(&e->version, d + 96, 4);
			memcpy(&e->size, d + 104, 8);
			if (e->size != len - 112)
				return bad(in, "device state size");
			if (e->size && !(e->data = malloc(e->size)))
				return mb_seterr(-ENOMEM, "restore: out of memory");
			if (e->size)
				memcpy(e->data, d + 112, e->size);
			break;
		}
		case T_CPU:
		case T_VM: {
			uint32_t a, b;
			if (len < 8 || len - 8 > UINT32_MAX)
				return bad(in, "state record");
			memcpy(&a, d, 4);
			memcpy(&b, d + 4, 4);
			struct blob *bl;
			if (tag == T_CPU) {
				if (a >= s->ncpu || b >= CPU_NPARTS)
					return bad(in, "vcpu record out of range");
				bl = &s->cpu[a].part[b];
			} else {
				if (a >= VM_NPARTS)
					return bad(in, "vm record out of range");
				bl = &s->vm[a];
			}
			if (bl->len || mb_blob_set(bl, d + 8, len - 8))
				return bad(in, "duplicate state record");
			break;
		}
		case T_RAM: {
			uint32_t idx;
			uint64_t run[2];
			if (len < 24)
				return bad(in, "RAM record");
			memcpy(&idx, d, 4);
			memcpy(run, d + 8, 16);
			if (idx >= nregn)
				return bad(in, "RAM record for an unknown region");
			const struct snap_region *r = &s->reg[idx];
			uint64_t pages = r->size / PAGE;
			if (run[0] > pages || run[1] > pages - run[0] ||
			    len - 24 != run[1] * PAGE)
				return bad(in, "RAM record out of its region");
			uint8_t *c = mb_snapshot_region_alloc(s, idx);
			if (!c)
				return mb_seterr(-ENOMEM, "restore: cannot map %" PRIu64
						 " bytes of RAM", r->size);
			memcpy(c + run[0] * PAGE, d + 24, run[1] * PAGE);
			break;
		}
		case T_KEPT: {
			if (in->version < 2)
				return bad(in, "a KEPT record in a version 1 file");
			if (len <= 32)
				return bad(in, "KEPT record");
			char name[32];
			memcpy(name, d, 32);
			name[31] = 0;
			struct snap_dev *e = NULL;
			for (size_t i = 0; i < s->ndev && !e; i++)
				if (strcmp(s->dev[i].name, name) == 0)
					e = &s->dev[i];
			if (!e)
				return bad(in, "KEPT record before its device's record");
			if (e->file_kept_len)
				return bad(in, "duplicate KEPT record");
			if (!(e->file_kept = malloc(len - 32)))
				return mb_seterr(-ENOMEM, "restore: out of memory");
			memcpy(e->file_kept, d + 32, len - 32);
			e->file_kept_len = len - 32;
			break;
		}
		case T_END:
			end = true;
			break;
		default:
			return bad(in, "unknown record type");
		}
		in->at += 16 + len;
	}
	if (!end || in->at != in->len)
		return bad(in, "no end record where the payload ends");
	if (nregn != s->nreg)
		return bad(in, "fewer memory regions than announced");
	for (size_t i = 0; i < s->nreg; i++)
		if (!mb_snapshot_region_alloc(s, i))
			return mb_seterr(-ENOMEM, "restore: out of memory");
	return 0;
}

int mb_snapshot_read(const char *path, struct mb_snapshot **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mb_seterr(-errno, "restore: %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		return mb_seterr(-e, "restore: %s: %s", path, strerror(e));
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size < HDR) {
		close(fd);
		return mb_seterr(-EINVAL, "restore: %s: %" PRIu64 " bytes is too short "
				 "for a snapshot (truncated?)", path, size);
	}
	uint8_t *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return mb_seterr(-errno, "restore: %s: %s", path, strerror(errno));
	int rc = mb_snapshot_parse(p, size, path, out);
	munmap(p, size);
	return rc;
}

int mb_snapshot_parse(const void *buf, size_t size, const char *path,
		      struct mb_snapshot **out)
{
	const uint8_t *p = buf;
	if (size < HDR)
		return mb_seterr(-EINVAL, "restore: %s: %zu bytes is too short for a "
				 "snapshot (truncated?)", path, size);
	int rc = 0;
	uint32_t v[2], crc, hcrc;
	uint64_t plen;
	memcpy(v, p + 8, 8);
	memcpy(&plen, p + 16, 8);
	memcpy(&crc, p + 24, 4);
	memcpy(&hcrc, p + 28, 4);
	struct mb_snapshot *s = NULL;
	if (memcmp(p, MAGIC, 8))
		rc = mb_seterr(-EINVAL, "restore: %s is not a moonbox snapshot (bad "
			       "magic)", path);
	else if (v[0] < 1 || v[0] > VERSION)
		rc = mb_seterr(-EINVAL, "restore: %s has format version %u; this "
			       "moonbox reads versions 1-%u", path, v[0], VERSION);
	else if (v[1] != HDR || mb_crc32c(0, p, 28) != hcrc)
		rc = mb_seterr(-EINVAL, "restore: %s: header checksum mismatch "
			       "(corrupt header)", path);
	else if (plen != size - HDR)
		rc = mb_seterr(-EINVAL, "restore: %s is truncated or has trailing "
			       "bytes: the header says %" PRIu64 " bytes of payload, "
			       "the file has %" PRIu64, path, plen, size - HDR);
	else if (mb_crc32c(0, p + HDR, plen) != crc)
		rc = mb_seterr(-EINVAL, "restore: %s: payload checksum mismatch "
			       "(CRC-32C): the file is corrupt", path);
	else if (!(s = calloc(1, sizeof *s)))
		rc = mb_seterr(-ENOMEM, "restore: out of memory");
	if (!rc) {
		struct in in = { p + HDR, plen, 0, path, v[0] };
		rc = parse(&in, s);
		s->id = mb_snapshot_new_id();
		s->machine_id = 0;
	}
	if (rc) {
		mb_snapshot_free(s);
		return rc;
	}
	*out = s;
	return 0;
}
