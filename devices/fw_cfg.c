/*
 * QEMU fw_cfg (moonbox/fw_cfg.h; QEMU docs/specs/fw_cfg.rst). Every value
 * the guest writes is hostile: selectors pick an item or nothing, offsets
 * stop at the item's end, DMA descriptors and buffers are reached only
 * through mb_mem_read/mb_mem_write (bounds checked), transfers are cut
 * into bounded chunks.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moonbox.h"
#include "moonbox/device.h"
#include "moonbox/fw_cfg.h"

#define MAX_ITEMS (16 + MB_FW_CFG_MAX_FILES)
#define MAX_ITEM (256u << 20) /* one item's bytes */

/* FWCfgDmaAccess control bits (fw_cfg.rst, "DMA interface") */
#define DMA_ERROR 0x01u
#define DMA_READ 0x02u
#define DMA_SKIP 0x04u
#define DMA_SELECT 0x08u
#define DMA_WRITE 0x10u

struct item {
	uint16_t key;
	uint8_t *data;
	uint32_t len;
	char name[MB_FW_CFG_NAME_MAX]; /* files only */
};

struct mb_fw_cfg {
	pthread_mutex_t lock; /* vCPUs of an SMP guest may race */
	struct mb_mem *mem;
	struct item items[MAX_ITEMS];
	unsigned nitems, nfiles;
	uint16_t selector;
	uint32_t offset;
	uint8_t dma[8]; /* the address register, big-endian, as written */
	uint64_t dma_ops, dma_errors;
	void (*first)(void *, struct mb_fw_cfg *);
	void *first_opaque;
};

static void be16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void be32(uint8_t *p, uint32_t v) { be16(p, v >> 16), be16(p + 2, v & 0xffff); }
static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static struct item *find(struct mb_fw_cfg *f, uint16_t key)
{
	for (unsigned i = 0; i < f->nitems; i++)
		if (f->items[i].key == key)
			return &f->items[i];
	return NULL;
}

static int set_item(struct mb_fw_cfg *f, uint16_t key, const void *data,
		    size_t len, struct item **out)
{
	if (len > MAX_ITEM)
		return mb_seterr(-EFBIG, "fw_cfg: item 0x%x: %zu bytes is more "
				 "than %u", key, len, MAX_ITEM);
	struct item *it = find(f, key);
	if (!it) {
		if (f->nitems == MAX_ITEMS)
			return mb_seterr(-ENOSPC, "fw_cfg: more than %d items",
					 MAX_ITEMS);
		it = &f->items[f->nitems++];
		*it = (struct item){ .key = key };
	}
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return mb_seterr(-ENOMEM, "fw_cfg: out of memory");
	if (len)
		memcpy(copy, data, len);
	free(it->data);
	it->data = copy;
	it->len = (uint32_t)len;
	if (out)
		*out = it;
	return 0;
}

/* The directory (fw_cfg.rst, "File Directory"): be32 count, then per file
 * be32 size, be16 select, be16 reserved, char name[56]. */
static int rebuild_dir(struct mb_fw_cfg *f)
{
	size_t len = 4 + 64 * (size_t)f->nfiles;
	uint8_t *d = calloc(1, len);
	if (!d)
		return mb_seterr(-ENOMEM, "fw_cfg: out of memory");
	be32(d, f->nfiles);
	uint8_t *e = d + 4;
	for (unsigned i = 0; i < f->nitems; i++) {
		struct item *it = &f->items[i];
		if (it->key < MB_FW_CFG_FILE_FIRST || !it->name[0])
			continue;
		be32(e, it->len), be16(e + 4, it->key);
		memcpy(e + 8, it->name, strlen(it->name));
		e += 64;
	}
	int rc = set_item(f, MB_FW_CFG_FILE_DIR, d, len, NULL);
	free(d);
	return rc;
}

struct mb_fw_cfg *mb_fw_cfg_new(struct mb_mem *mem)
{
	struct mb_fw_cfg *f = calloc(1, sizeof *f);
	if (!f)
		return NULL;
	pthread_mutex_init(&f->lock, NULL);
	f->mem = mem;
	uint8_t id[4] = { 0x03, 0, 0, 0 }; /* bit 0 traditional, bit 1 DMA */
	if (set_item(f, MB_FW_CFG_SIGNATURE, "QEMU", 4, NULL) ||
	    set_item(f, MB_FW_CFG_ID, id, 4, NULL) || rebuild_dir(f)) {
		mb_fw_cfg_free(f);
		return NULL;
	}
	return f;
}

void mb_fw_cfg_free(struct mb_fw_cfg *f)
{
	if (!f)
		return;
	for (unsigned i = 0; i < f->nitems; i++)
		free(f->items[i].data);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int mb_fw_cfg_set(struct mb_fw_cfg *f, uint16_t key, const void *data,
		  size_t len)
{
	if (key >= MB_FW_CFG_FILE_FIRST && key < MB_FW_CFG_FILE_FIRST + MB_FW_CFG_MAX_FILES)
		return mb_seterr(-EINVAL, "fw_cfg: key 0x%x is a file's "
				 "(mb_fw_cfg_add_file)", key);
	if (key == MB_FW_CFG_FILE_DIR)
		return mb_seterr(-EINVAL, "fw_cfg: the directory is built, not set");
	pthread_mutex_lock(&f->lock);
	int rc = set_item(f, key, data, len, NULL);
	pthread_mutex_unlock(&f->lock);
	return rc;
}

int mb_fw_cfg_add_file(struct mb_fw_cfg *f, const char *name,
		       const void *data, size_t len)
{
	size_t n = strlen(name);
	if (n == 0 || n >= MB_FW_CFG_NAME_MAX)
		return mb_seterr(-EINVAL, "fw_cfg: file name \"%s\": 1 to %d "
				 "bytes", name, MB_FW_CFG_NAME_MAX - 1);
	pthread_mutex_lock(&f->lock);
	int rc = 0;
	for (unsigned i = 0; i < f->nitems; i++)
		if (strcmp(f->items[i].name, name) == 0)
			rc = mb_seterr(-EEXIST, "fw_cfg: file \"%s\" twice", name);
	if (!rc && f->nfiles == MB_FW_CFG_MAX_FILES)
		rc = mb_seterr(-ENOSPC, "fw_cfg: more than %d files",
			       MB_FW_CFG_MAX_FILES);
	struct item *it;
	if (!rc && !(rc = set_item(f, (uint16_t)(MB_FW_CFG_FILE_FIRST + f->nfiles),
				   data, len, &it))) {
		memcpy(it->name, name, n + 1);
		f->nfiles++;
		rc = rebuild_dir(f);
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

void mb_fw_cfg_on_first(struct mb_fw_cfg *f,
			void (*fn)(void *, struct mb_fw_cfg *), void *opaque)
{
	f->first = fn;
	f->first_opaque = opaque;
}

/* With the lock held: the first access builds the machine's items. */
static void first(struct mb_fw_cfg *f)
{
	if (!f->first)
		return;
	void (*fn)(void *, struct mb_fw_cfg *) = f->first;
	f->first = NULL;
	pthread_mutex_unlock(&f->lock); /* fn calls mb_fw_cfg_set/add_file */
	fn(f->first_opaque, f);
	pthread_mutex_lock(&f->lock);
}

static void select_item(struct mb_fw_cfg *f, uint16_t key)
{
	f->selector = key;
	f->offset = 0;
}

/* n bytes of the selected item from the offset, zeros past its end. */
static void take(struct mb_fw_cfg *f, uint8_t *out, uint32_t n)
{
	struct item *it = find(f, f->selector);
	for (uint32_t i = 0; i < n; i++) {
		out[i] = it && f->offset < it->len ? it->data[f->offset] : 0;
		if (it && f->offset < it->len)
			f->offset++;
	}
}

/* One FWCfgDmaAccess at gpa: be32 control, be32 length, be64 address.
 * Its control word is written back: 0 done, DMA_ERROR failed. */
static void dma(struct mb_fw_cfg *f, uint64_t gpa)
{
	uint8_t d[16], chunk[4096];
	f->dma_ops++;
	if (!f->mem || mb_mem_read(f->mem, gpa, d, sizeof d)) {
		f->dma_errors++; /* no descriptor to report to */
		return;
	}
	uint32_t ctl = get_be32(d), len = get_be32(d + 4);
	uint64_t addr = get_be64(d + 8);
	bool err = false;
	if (ctl & DMA_SELECT)
		select_item(f, (uint16_t)(ctl >> 16));
	if (ctl & DMA_WRITE) {
		err = true; /* no item is writable */
	} else if (ctl & DMA_READ) {
		for (uint32_t done = 0; done < len && !err;) {
			uint32_t n = len - done < sizeof chunk ? len - done
							       : (uint32_t)sizeof chunk;
			take(f, chunk, n);
			/* addr + done may wrap: mb_mem_write refuses it */
			err = addr + done < addr ||
			      mb_mem_write(f->mem, addr + done, chunk, n) != 0;
			done += n;
		}
	} else if (ctl & DMA_SKIP) {
		struct item *it = find(f, f->selector);
		uint64_t to = (uint64_t)f->offset + len;
		f->offset = it ? (uint32_t)(to < it->len ? to : it->len) : 0;
	}
	f->dma_errors += err;
	uint8_t back[4];
	be32(back, err ? DMA_ERROR : 0);
	mb_mem_write(f->mem, gpa, back, 4);
}

static void fw_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_fw_cfg *f = dev;
	uint8_t *out = data;
	static const uint8_t sig[8] = { 'Q', 'E', 'M', 'U', ' ', 'C', 'F', 'G' };
	pthread_mutex_lock(&f->lock);
	first(f);
	if (off == 1) { /* data: the next bytes of the item */
		take(f, out, size);
	} else {
		for (unsigned i = 0; i < size; i++) /* DMA reads "QEMU CFG" */
			out[i] = off + i >= 4 && off + i < 12 ? sig[off + i - 4] : 0;
	}
	pthread_mutex_unlock(&f->lock);
}

static void fw_write(void *dev, uint64_t off, const void *data, unsigned size)
{
	struct mb_fw_cfg *f = dev;
	const uint8_t *in = data;
	pthread_mutex_lock(&f->lock);
	first(f);
	if (off == 0 && size == 2) {
		select_item(f, (uint16_t)(in[0] | in[1] << 8)); /* x86: LE port */
	} else if (off >= 4) {
		for (unsigned i = 0; i < size && off + i < 12; i++)
			f->dma[off - 4 + i] = in[i];
		/* The low half's write starts the transfer (fw_cfg.rst). */
		if (off + size == 12)
			dma(f, get_be64(f->dma));
	} /* data writes are ignored (QEMU >= 2.4) */
	pthread_mutex_unlock(&f->lock);
}

const struct mb_io_ops mb_fw_cfg_ops = { fw_read, fw_write };

MB_STATE_DESC(mb_fw_cfg_state, MB_FW_CFG_STATE, MB_FW_CFG_STATE_VERSION);

void mb_fw_cfg_save(struct mb_fw_cfg *f, struct mb_fw_cfg_state *st)
{
	memset(st, 0, sizeof *st);
	pthread_mutex_lock(&f->lock);
	st->selector = f->selector;
	st->offset = f->offset;
	st->dma_addr = get_be64(f->dma);
	st->dma_ops = f->dma_ops;
	st->dma_errors = f->dma_errors;
	pthread_mutex_unlock(&f->lock);
}

int mb_fw_cfg_load(struct mb_fw_cfg *f, const struct mb_fw_cfg_state *st)
{
	pthread_mutex_lock(&f->lock);
	struct item *it = find(f, st->selector);
	uint32_t len = it ? it->len : 0;
	if (st->offset > len) {
		pthread_mutex_unlock(&f->lock);
		return mb_seterr(-EINVAL, "offset: %u is past item 0x%x's %u "
				 "bytes", st->offset, st->selector, len);
	}
	f->selector = st->selector;
	f->offset = st->offset;
	for (int i = 0; i < 8; i++)
		f->dma[i] = (uint8_t)(st->dma_addr >> (56 - 8 * i));
	/* The counters too, as every model's C load does: a snapshot
	 * restores them (the Lua set_state leaves them as they were). */
	f->dma_ops = st->dma_ops;
	f->dma_errors = st->dma_errors;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

/* ---- in a machine ------------------------------------------------------ */

#include "core/loader.h" /* mb_e820_build */

/* 8-byte little-endian values (fw_cfg.rst: items are little-endian
 * unless said otherwise). */
static void le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> 8 * i);
}

static void machine_items(void *opaque, struct mb_fw_cfg *f)
{
	struct mb_machine *m = opaque;
	struct mb_mem *mem = mb_machine_mem(m);
	uint8_t v[8];
	le(v, mb_machine_cpus(m), 2);
	mb_fw_cfg_set(f, MB_FW_CFG_NB_CPUS, v, 2);
	mb_fw_cfg_set(f, MB_FW_CFG_MAX_CPUS, v, 2);
	uint64_t ram = 0;
	for (size_t i = 0; i < mb_mem_count(mem); i++) {
		const struct mb_mem_region *r = mb_mem_region(mem, i);
		if (!(r->flags & MB_MEM_READONLY))
			ram += r->size;
	}
	le(v, ram, 8);
	mb_fw_cfg_set(f, MB_FW_CFG_RAM_SIZE, v, 8);
	/* etc/e820: QEMU's struct e820_entry { u64 address, length; u32 type }
	 * packed, little-endian: the machine's map as the loaders build it. */
	const struct mb_range *res;
	size_t nres = mb_machine_reserved(m, &res);
	struct mb_e820 map[E820_MAX];
	int n = mb_e820_build(mem, res, nres, map, E820_MAX);
	if (n < 0)
		n = 0;
	uint8_t buf[E820_MAX * 20];
	for (int i = 0; i < n; i++) {
		le(buf + 20 * i, map[i].addr, 8);
		le(buf + 20 * i + 8, map[i].size, 8);
		le(buf + 20 * i + 16, map[i].type, 4);
	}
	mb_fw_cfg_add_file(f, "etc/e820", buf, 20 * (size_t)n);
}

static int dev_save(void *impl, void *st)
{
	mb_fw_cfg_save(impl, st);
	return 0;
}

static int dev_load(void *impl, const void *st) { return mb_fw_cfg_load(impl, st); }
static void dev_free(void *impl) { mb_fw_cfg_free(impl); }

static const struct mb_device_ops fw_cfg_dev_ops = {
	.kind = "fw_cfg", .state = &mb_fw_cfg_state_desc,
	.save = dev_save, .load = dev_load, .free = dev_free,
};

static int read_all(const char *path, uint8_t **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return mb_seterr(-errno, "fw_cfg: %s: %s", path, strerror(errno));
	if (fstat(fd, &st) || st.st_size > (off_t)MAX_ITEM) {
		close(fd);
		return mb_seterr(-EFBIG, "fw_cfg: %s: larger than %u bytes", path,
				 MAX_ITEM);
	}
	uint8_t *b = malloc(st.st_size ? (size_t)st.st_size : 1);
	size_t done = 0;
	while (b && done < (size_t)st.st_size) {
		ssize_t r = read(fd, b + done, (size_t)st.st_size - done);
		if (r <= 0)
			break;
		done += (size_t)r;
	}
	close(fd);
	if (!b || done != (size_t)st.st_size) {
		free(b);
		return mb_seterr(-EIO, "fw_cfg: %s: short read", path);
	}
	*out = b, *len = done;
	return 0;
}

int mb_fw_cfg_attach(struct mb_machine *m,
		     const struct mb_fw_cfg_attach_config *cfg,
		     struct mb_device **out)
{
	static const struct mb_fw_cfg_attach_config none;
	if (!cfg)
		cfg = &none;
	struct mb_fw_cfg *f = mb_fw_cfg_new(mb_machine_mem(m));
	if (!f)
		return mb_seterr(-ENOMEM, "fw_cfg: out of memory");
	int rc = 0;
	for (size_t i = 0; i < cfg->nfiles && !rc; i++) {
		const struct mb_fw_cfg_file *fl = &cfg->files[i];
		uint8_t *b = NULL;
		size_t len = fl->len;
		if (fl->path && (rc = read_all(fl->path, &b, &len)))
			break;
		rc = mb_fw_cfg_add_file(f, fl->name, b ? b : fl->data, len);
		free(b);
	}
	if (rc) {
		mb_fw_cfg_free(f);
		return rc;
	}
	mb_fw_cfg_on_first(f, machine_items, m);
	struct mb_device *d;
	if ((rc = mb_device_new(m, cfg->name, "fw_cfg", &fw_cfg_dev_ops, f, &d)))
		return rc;
	if ((rc = mb_device_map(d, MB_SPACE_PIO, MB_FW_CFG_PORT, MB_FW_CFG_PORTS,
				&mb_fw_cfg_ops, f))) {
		mb_device_remove(d);
		return rc;
	}
	*out = d;
	return 0;
}
