/*
 * Input files for the loaders, and the ELF32/ELF64 loader (System V ABI,
 * "Program Header"). Files are untrusted: every offset and size read from
 * them is checked against the file size and guest RAM with arithmetic that
 * cannot overflow before anything is read or written.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/loader.h"

/* ---- files -------------------------------------------------------------- */

int mb_file_open(struct mb_file *f, const char *path, const char *what)
{
	struct stat st;
	*f = (struct mb_file){ .fd = -1, .path = path, .what = what };
	if (!path)
		return mb_seterr(-EINVAL, "%s: no file given", what);
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return mb_seterr(-errno, "%s %s: %s", what, path, strerror(errno));
	if (fstat(f->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		mb_file_close(f);
		return mb_seterr(-EINVAL, "%s %s: not a regular file", what, path);
	}
	f->size = (uint64_t)st.st_size;
	return 0;
}

void mb_file_close(struct mb_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

int mb_file_pread(struct mb_file *f, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;
	if (off > f->size || len > f->size - off)
		return mb_seterr(-EIO, "%s %s: truncated: needs %zu bytes at offset "
				 "%" PRIu64 " but the file has %" PRIu64, f->what,
				 f->path, len, off, f->size);
	while (len) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			return mb_seterr(-e, "%s %s: %s", f->what, f->path,
					 n < 0 ? strerror(e) : "file shrank while reading");
		}
		p += n, off += (uint64_t)n, len -= (size_t)n;
	}
	return 0;
}

int mb_file_load(struct mb_file *f, struct mb_mem *mem, uint64_t off,
		 uint64_t len, uint64_t gpa, uint64_t zero)
{
	uint64_t total = len + zero;
	if (total < len || gpa + total < gpa)
		return mb_seterr(-ERANGE, "%s %s: 0x%" PRIx64 " bytes at 0x%" PRIx64
				 " wrap around", f->what, f->path, total, gpa);
	uint8_t *dst = mb_mem_ptr(mem, gpa, total ? total : 1, true);
	if (!dst)
		return mb_seterr(-EFAULT, "%s %s: 0x%" PRIx64 "-0x%" PRIx64
				 " (0x%" PRIx64 " bytes) is not inside one RAM region",
				 f->what, f->path, gpa, gpa + total, total);
	if (len > SIZE_MAX)
		return mb_seterr(-EFBIG, "%s %s: too big", f->what, f->path);
	int rc = mb_file_pread(f, off, dst, (size_t)len);
	if (rc)
		return rc;
	memset(dst + len, 0, zero);
	return 0;
}

/* ---- ELF ---------------------------------------------------------------- */

/* The fields we use, read from either class into one shape. */
struct phdr {
	uint32_t type;
	uint64_t offset, vaddr, paddr, filesz, memsz;
};

#define PT_LOAD 1
#define ET_EXEC 2
#define EM_386 3
#define EM_X86_64 62
#define GiB4_ELF (1ull << 32)

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

int mb_elf_probe(struct mb_file *f)
{
	uint8_t id[4];
	return f->size >= 4 && !mb_file_pread(f, 0, id, 4) &&
	       memcmp(id, "\177ELF", 4) == 0;
}

static void get_phdr(const uint8_t *p, int bits, struct phdr *ph)
{
	if (bits == 32) { /* Elf32_Phdr: type offset vaddr paddr filesz memsz */
		*ph = (struct phdr){ le32(p), le32(p + 4), le32(p + 8),
				     le32(p + 12), le32(p + 16), le32(p + 20) };
	} else {          /* Elf64_Phdr: type flags offset vaddr paddr filesz memsz */
		*ph = (struct phdr){ le32(p), le64(p + 8), le64(p + 16),
				     le64(p + 24), le64(p + 32), le64(p + 40) };
	}
}

/* Check one segment against the file, RAM and the loader's area. */
static int check_segment(struct mb_mem *mem, struct mb_file *f, unsigned i,
			 const struct phdr *ph, uint64_t avoid_lo,
			 uint64_t avoid_hi)
{
	const char *w = f->what, *p = f->path;
	if (ph->filesz > ph->memsz)
		return mb_seterr(-EINVAL, "%s %s: segment %u: p_filesz 0x%" PRIx64
				 " > p_memsz 0x%" PRIx64, w, p, i, ph->filesz,
				 ph->memsz);
	if (ph->offset > f->size || ph->filesz > f->size - ph->offset)
		return mb_seterr(-EINVAL, "%s %s: segment %u: file bytes 0x%" PRIx64
				 "+0x%" PRIx64 " lie beyond the end of the file "
				 "(%" PRIu64 " bytes)", w, p, i, ph->offset,
				 ph->filesz, f->size);
	if (ph->paddr + ph->memsz < ph->paddr)
		return mb_seterr(-EINVAL, "%s %s: segment %u: 0x%" PRIx64 "+0x%"
				 PRIx64 " wraps around", w, p, i, ph->paddr,
				 ph->memsz);
	if (ph->paddr < avoid_hi && avoid_lo < ph->paddr + ph->memsz)
		return mb_seterr(-EINVAL, "%s %s: segment %u at 0x%" PRIx64 "-0x%"
				 PRIx64 " overlaps the loader's area 0x%" PRIx64
				 "-0x%" PRIx64, w, p, i, ph->paddr,
				 ph->paddr + ph->memsz, avoid_lo, avoid_hi);
	if (ph->memsz && !mb_mem_ptr(mem, ph->paddr, ph->memsz, true))
		return mb_seterr(-EFAULT, "%s %s: segment %u at 0x%" PRIx64 "-0x%"
				 PRIx64 " is not inside one RAM region", w, p, i,
				 ph->paddr, ph->paddr + ph->memsz);
	return 0;
}

int mb_elf_load(struct mb_mem *mem, struct mb_file *f, uint64_t avoid_lo,
		uint64_t avoid_hi, struct mb_elf_image *out)
{
	const char *w = f->what, *p = f->path;
	uint8_t eh[64];
	int rc;
	if (f->size < 52)
		return mb_seterr(-EINVAL, "%s %s: too small for an ELF header "
				 "(%" PRIu64 " bytes)", w, p, f->size);
	if ((rc = mb_file_pread(f, 0, eh, f->size < 64 ? 52 : 64)))
		return rc;
	if (memcmp(eh, "\177ELF", 4))
		return mb_seterr(-EINVAL, "%s %s: not an ELF file (bad magic)", w, p);
	int bits = eh[4] == 1 ? 32 : eh[4] == 2 ? 64 : 0;
	if (!bits)
		return mb_seterr(-EINVAL, "%s %s: unknown ELF class %u", w, p, eh[4]);
	if (eh[5] != 1)
		return mb_seterr(-EINVAL, "%s %s: not a little-endian ELF file", w, p);
	if (bits == 64 && f->size < 64)
		return mb_seterr(-EINVAL, "%s %s: too small for an ELF64 header", w, p);
	uint16_t type = le16(eh + 16), machine = le16(eh + 18);
	if (machine != (bits == 32 ? EM_386 : EM_X86_64))
		return mb_seterr(-EINVAL, "%s %s: ELF%d for machine %u, not %s", w, p,
				 bits, machine, bits == 32 ? "i386 (3)" : "x86-64 (62)");
	if (type != ET_EXEC)
		return mb_seterr(-EINVAL, "%s %s: ELF type %u is not an executable "
				 "(ET_EXEC)", w, p, type);
	uint64_t entry = bits == 32 ? le32(eh + 24) : le64(eh + 24);
	uint64_t phoff = bits == 32 ? le32(eh + 28) : le64(eh + 32);
	unsigned phentsize = le16(eh + (bits == 32 ? 42 : 54));
	unsigned phnum = le16(eh + (bits == 32 ? 44 : 56));
	unsigned want = bits == 32 ? 32 : 56;
	if (phnum == 0)
		return mb_seterr(-EINVAL, "%s %s: no program headers", w, p);
	if (phentsize != want)
		return mb_seterr(-EINVAL, "%s %s: e_phentsize %u is not the size of "
				 "an ELF%d program header (%u)", w, p, phentsize,
				 bits, want);
	/* phnum * want <= 65535 * 56: cannot overflow; phoff can be anything */
	uint64_t phlen = (uint64_t)phnum * want;
	if (phoff > f->size || phlen > f->size - phoff)
		return mb_seterr(-EINVAL, "%s %s: %u program headers at offset "
				 "0x%" PRIx64 " lie beyond the end of the file "
				 "(%" PRIu64 " bytes)", w, p, phnum, phoff, f->size);
	uint8_t *tab = malloc(phlen);
	if (!tab)
		return mb_seterr(-ENOMEM, "%s %s: out of memory", w, p);
	if ((rc = mb_file_pread(f, phoff, tab, phlen)))
		goto out;

	/* Check every segment before loading any: nothing half-loaded. */
	struct mb_elf_image img = { .bits = bits, .entry = entry, .lo = UINT64_MAX };
	unsigned nload = 0;
	for (unsigned i = 0; i < phnum; i++) {
		struct phdr ph;
		get_phdr(tab + (size_t)i * want, bits, &ph);
		if (ph.type != PT_LOAD)
			continue;
		if ((rc = check_segment(mem, f, i, &ph, avoid_lo, avoid_hi)))
			goto out;
		nload++;
		if (ph.paddr < img.lo)
			img.lo = ph.paddr;
		if (ph.paddr + ph.memsz > img.hi)
			img.hi = ph.paddr + ph.memsz;
		/* A kernel linked high (vaddr != paddr) enters at its physical
		 * alias, as GRUB does for multiboot ELF kernels. */
		if (entry - ph.vaddr < ph.memsz && ph.vaddr != ph.paddr)
			img.entry = ph.paddr + (entry - ph.vaddr);
	}
	if (!nload) {
		rc = mb_seterr(-EINVAL, "%s %s: no PT_LOAD segment", w, p);
		goto out;
	}
	for (unsigned i = 0; i < phnum; i++) {
		struct phdr ph;
		get_phdr(tab + (size_t)i * want, bits, &ph);
		if (ph.type == PT_LOAD && ph.memsz &&
		    (rc = mb_file_load(f, mem, ph.offset, ph.filesz, ph.paddr,
				       ph.memsz - ph.filesz)))
			goto out;
	}
	*out = img;
out:
	free(tab);
	return rc;
}

/* ---- notes: the PVH entry -------------------------------------------------- */

#define PT_NOTE 4
#define NOTE_MAX 0x10000 /* a note segment bigger than this is not a kernel's */

/* Notes (System V ABI, "Note Section"): namesz, descsz, type, then name and
 * desc each padded to 4 bytes. */
static int find_note(const uint8_t *p, size_t len, const char *name,
		     uint32_t type, const uint8_t **desc, uint32_t *dlen)
{
	size_t nlen = strlen(name) + 1, off = 0;
	while (len - off >= 12) {
		uint32_t nsz = le32(p + off), dsz = le32(p + off + 4);
		uint32_t t = le32(p + off + 8);
		size_t n4 = ((size_t)nsz + 3) & ~(size_t)3;
		size_t d4 = ((size_t)dsz + 3) & ~(size_t)3;
		off += 12;
		if (n4 > len - off || d4 > len - off - n4)
			return -EINVAL;
		if (t == type && nsz == nlen && memcmp(p + off, name, nlen) == 0) {
			*desc = p + off + n4, *dlen = dsz;
			return 0;
		}
		off += n4 + d4;
	}
	return -ENOENT;
}

int mb_elf_pvh_entry(struct mb_file *f, uint32_t *entry)
{
	const char *w = f->what, *p = f->path;
	uint8_t eh[64];
	int rc;
	if (!mb_elf_probe(f) || f->size < 64)
		return mb_seterr(-ENOENT, "%s %s: not an ELF file", w, p);
	if ((rc = mb_file_pread(f, 0, eh, 64)))
		return rc;
	int bits = eh[4] == 1 ? 32 : eh[4] == 2 ? 64 : 0;
	if (!bits || eh[5] != 1)
		return mb_seterr(-EINVAL, "%s %s: not a little-endian ELF32/ELF64 "
				 "file", w, p);
	uint64_t phoff = bits == 32 ? le32(eh + 28) : le64(eh + 32);
	unsigned phentsize = le16(eh + (bits == 32 ? 42 : 54));
	unsigned phnum = le16(eh + (bits == 32 ? 44 : 56));
	if (phentsize != (bits == 32 ? 32u : 56u))
		return mb_seterr(-EINVAL, "%s %s: bad e_phentsize %u", w, p,
				 phentsize);
	for (unsigned i = 0; i < phnum; i++) {
		uint8_t raw[56];
		struct phdr ph;
		if ((rc = mb_file_pread(f, phoff + (uint64_t)i * phentsize, raw,
					phentsize)))
			return rc;
		get_phdr(raw, bits, &ph);
		if (ph.type != PT_NOTE || ph.filesz == 0)
			continue;
		if (ph.filesz > NOTE_MAX)
			return mb_seterr(-EINVAL, "%s %s: note segment %u is %" PRIu64
					 " bytes", w, p, i, ph.filesz);
		uint8_t *buf = malloc(ph.filesz);
		if (!buf)
			return mb_seterr(-ENOMEM, "%s %s: out of memory", w, p);
		const uint8_t *d = NULL;
		uint32_t dl = 0;
		if ((rc = mb_file_pread(f, ph.offset, buf, ph.filesz))) {
			free(buf);
			return rc;
		}
		rc = find_note(buf, ph.filesz, "Xen", XEN_ELFNOTE_PHYS32_ENTRY,
			       &d, &dl);
		uint64_t v = rc ? 0 : dl == 4 ? le32(d) : dl == 8 ? le64(d)
							      : UINT64_MAX;
		free(buf);
		if (rc == -EINVAL)
			return mb_seterr(rc, "%s %s: note segment %u is malformed",
					 w, p, i);
		if (rc)
			continue;
		if (v >= GiB4_ELF)
			return mb_seterr(-EINVAL, "%s %s: PVH entry note (%u bytes) "
					 "is not a 32-bit address", w, p, dl);
		*entry = (uint32_t)v;
		return 0;
	}
	return mb_seterr(-ENOENT, "%s %s: no PVH entry note "
			 "(XEN_ELFNOTE_PHYS32_ENTRY; Linux needs CONFIG_PVH)", w, p);
}

/* The file's segments into guest memory, clear of the GDT and the page
 * tables boot_flat and the loaders keep at 0x500-0x6fff. */
static int load_file(struct mb_machine *m, const char *file,
		     struct mb_elf_image *img)
{
	struct mb_file f;
	int rc = mb_file_open(&f, file, "kernel");
	if (rc)
		return rc;
	rc = mb_elf_load(mb_machine_mem(m), &f, 0x500, 0x7000, img);
	mb_file_close(&f);
	return rc;
}

int mb_load_elf(struct mb_machine *m, const char *file, uint64_t *entry)
{
	struct mb_elf_image img;
	int rc = load_file(m, file, &img);
	if (!rc)
		*entry = img.entry;
	return rc;
}

int mb_boot_elf(struct mb_machine *m, const char *file, int mode)
{
	struct mb_elf_image img;
	int rc = load_file(m, file, &img);
	if (rc)
		return rc;
	if (mode < 0)
		mode = img.bits == 64 ? MB_MODE_LONG : MB_MODE_PROTECTED;
	return mb_boot_setup_cpu(m, (enum mb_cpu_mode)mode, img.entry);
}
