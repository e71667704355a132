/*
 * An ELF file's symbol table (.symtab, ELF32 or ELF64, little-endian), for
 * the debugger's sym+off and names-as-addresses. The file is untrusted:
 * every offset, count and string is checked against the file's size before
 * use, and a table that does not fit is refused, never half-read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/debug.h"

#define MAX_FILE (1ull << 30)
#define SHT_SYMTAB 2
#define SHF_EXECINSTR 4
#define STT_SECTION 3
#define STT_FILE 4
#define STB_LOCAL 0
#define NEAR 0x100000 /* an unsized symbol names at most 1 MiB after it */

struct sym {
	uint64_t addr, size;
	uint32_t name; /* offset in names */
	bool text, global;
};

struct mb_symtab {
	struct sym *s;
	size_t n;
	char *names;
	size_t names_len;
};

static uint64_t get(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = n; i--;)
		v = v << 8 | p[i];
	return v;
}

static bool inside(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

static int by_addr(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;
	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	/* at one address, globals first, then sized ones: the better name */
	if (x->global != y->global)
		return x->global ? -1 : 1;
	return (y->size > 0) - (x->size > 0);
}

static int parse(const uint8_t *f, uint64_t size, int64_t bias,
		 struct mb_symtab *t, const char *path)
{
	if (size < 52 || memcmp(f, "\177ELF", 4))
		return mb_seterr(-ENOEXEC, "%s: not an ELF file", path);
	bool e64 = f[4] == 2;
	if ((f[4] != 1 && f[4] != 2) || f[5] != 1)
		return mb_seterr(-ENOEXEC, "%s: not a little-endian ELF32/ELF64 "
				 "file", path);
	if (e64 && size < 64)
		return mb_seterr(-ENOEXEC, "%s: truncated ELF header", path);
	uint64_t shoff = e64 ? get(f + 40, 8) : get(f + 32, 4);
	unsigned shentsize = (unsigned)get(f + (e64 ? 58 : 46), 2);
	unsigned shnum = (unsigned)get(f + (e64 ? 60 : 48), 2);
	unsigned want = e64 ? 64 : 40;
	if (!shnum || shentsize < want ||
	    !inside(shoff, (uint64_t)shnum * shentsize, size))
		return mb_seterr(-ENOEXEC, "%s: no valid section headers", path);
#define SH(i) (f + shoff + (uint64_t)(i) * shentsize)
#define SH_TYPE(p) get((p) + 4, 4)
#define SH_FLAGS(p) (e64 ? get((p) + 8, 8) : get((p) + 8, 4))
#define SH_OFF(p) (e64 ? get((p) + 24, 8) : get((p) + 16, 4))
#define SH_SIZE(p) (e64 ? get((p) + 32, 8) : get((p) + 20, 4))
#define SH_LINK(p) get((p) + (e64 ? 40 : 24), 4)
#define SH_ENTSIZE(p) (e64 ? get((p) + 56, 8) : get((p) + 36, 4))
	const uint8_t *sym = NULL;
	for (unsigned i = 0; i < shnum && !sym; i++)
		if (SH_TYPE(SH(i)) == SHT_SYMTAB)
			sym = SH(i);
	if (!sym)
		return mb_seterr(-ENOENT, "%s: no symbol table (.symtab): was it "
				 "stripped?", path);
	uint64_t soff = SH_OFF(sym), ssize = SH_SIZE(sym), ent = SH_ENTSIZE(sym);
	uint64_t link = SH_LINK(sym);
	if (ent < (e64 ? 24u : 16u) || ent > 256 || !inside(soff, ssize, size) ||
	    link >= shnum)
		return mb_seterr(-ENOEXEC, "%s: bad .symtab header", path);
	const uint8_t *str = SH(link);
	uint64_t stroff = SH_OFF(str), strsize = SH_SIZE(str);
	if (!inside(stroff, strsize, size) || strsize > 0xffffffffu)
		return mb_seterr(-ENOEXEC, "%s: bad string table", path);
	uint64_t n = ssize / ent;
	t->names = malloc(strsize + 1);
	t->s = calloc(n ? n : 1, sizeof *t->s);
	if (!t->names || !t->s)
		return mb_seterr(-ENOMEM, "%s: out of memory for %llu symbols", path,
				 (unsigned long long)n);
	memcpy(t->names, f + stroff, strsize);
	t->names[strsize] = 0; /* every name ends inside the copy */
	t->names_len = strsize;
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *e = f + soff + i * ent;
		uint32_t name = (uint32_t)get(e, 4);
		unsigned info = e64 ? e[4] : e[12];
		unsigned shndx = (unsigned)get(e + (e64 ? 6 : 14), 2);
		uint64_t value = e64 ? get(e + 8, 8) : get(e + 4, 4);
		uint64_t sz = e64 ? get(e + 16, 8) : get(e + 8, 4);
		unsigned type = info & 15;
		if (!name || name >= strsize || !t->names[name] || shndx == 0 ||
		    type == STT_SECTION || type == STT_FILE)
			continue;
		bool text = shndx < shnum && (SH_FLAGS(SH(shndx)) & SHF_EXECINSTR);
		t->s[t->n++] = (struct sym){ .addr = value + (uint64_t)bias,
					     .size = sz, .name = name, .text = text,
					     .global = (info >> 4) != STB_LOCAL };
	}
#undef SH
	qsort(t->s, t->n, sizeof *t->s, by_addr);
	return 0;
}

int mb_symtab_load(const char *path, int64_t bias, struct mb_symtab **out)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return mb_seterr(-errno, "%s: %s", path, strerror(errno));
	uint8_t *buf = NULL;
	struct mb_symtab *t = calloc(1, sizeof *t);
	int rc = -ENOMEM;
	long size = -1;
	if (fseek(fp, 0, SEEK_END) == 0)
		size = ftell(fp);
	if (size < 0 || (uint64_t)size > MAX_FILE) {
		rc = mb_seterr(-EFBIG, "%s: not a readable file of at most 1 GiB",
			       path);
		goto out;
	}
	rewind(fp);
	if (!t || !(buf = malloc(size ? (size_t)size : 1))) {
		rc = mb_seterr(-ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if (fread(buf, 1, (size_t)size, fp) != (size_t)size) {
		rc = mb_seterr(-EIO, "%s: short read", path);
		goto out;
	}
	rc = parse(buf, (uint64_t)size, bias, t, path);
out:
	fclose(fp);
	free(buf);
	if (rc) {
		mb_symtab_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void mb_symtab_free(struct mb_symtab *t)
{
	if (!t)
		return;
	free(t->s);
	free(t->names);
	free(t);
}

size_t mb_symtab_count(const struct mb_symtab *t) { return t->n; }

int mb_symtab_find(const struct mb_symtab *t, const char *name, uint64_t *addr)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->names + t->s[i].name, name)) {
			*addr = t->s[i].addr;
			return 0;
		}
	return -ENOENT;
}

const char *mb_symtab_name(const struct mb_symtab *t, uint64_t addr,
			   uint64_t *off, bool *text)
{
	size_t lo = 0, hi = t->n; /* first symbol above addr */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->s[mid].addr <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo)
		return NULL;
	size_t i = lo - 1;
	while (i > 0 && t->s[i - 1].addr == t->s[i].addr)
		i--; /* the best of those at that address sorts first */
	const struct sym *s = &t->s[i];
	uint64_t d = addr - s->addr;
	if (s->size ? d >= s->size : d >= NEAR)
		return NULL;
	if (off)
		*off = d;
	if (text)
		*text = s->text;
	return t->names + s->name;
}
