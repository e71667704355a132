/*
 * In-memory snapshots: every device's state (through its state
 * description), every vCPU, KVM's irqchip/PIT/clock and a copy of guest RAM.
 *
 * Restoring into the machine a snapshot was taken of copies back only the
 * pages written since: KVM's dirty log (KVM_MEM_LOG_DIRTY_PAGES, turned on
 * by the first snapshot) for what the guest wrote, and mem.c's own bitmap
 * for what moonbox wrote (virtio completions, m:write, loaders), which KVM
 * never sees. That holds while RAM is known to equal the snapshot at the
 * last clearing of both logs (m->snap_base); otherwise, and for snapshots
 * read from a file, every page that differs can be anywhere: full copy.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/snapshot.h"

#define PAGE 4096u

static _Atomic uint64_t next_id = 1;

uint64_t mb_snapshot_new_id(void)
{
	return atomic_fetch_add(&next_id, 1);
}

static size_t bitmap_words(uint64_t size)
{
	return (size / PAGE + 63) / 64;
}

void mb_snapshot_free(struct mb_snapshot *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nreg; i++)
		if (s->reg[i].copy)
			munmap(s->reg[i].copy, s->reg[i].size);
	for (unsigned c = 0; c < MB_MAX_CPUS; c++)
		for (unsigned p = 0; p < CPU_NPARTS; p++)
			mb_blob_free(&s->cpu[c].part[p]);
	for (unsigned p = 0; p < VM_NPARTS; p++)
		mb_blob_free(&s->vm[p]);
	for (size_t i = 0; i < s->ndev; i++) {
		free(s->dev[i].data);
		if (s->dev[i].kept && s->dev[i].drop)
			s->dev[i].drop(s->dev[i].kept);
	}
	free(s->dev);
	mb_blob_free(&s->conf);
	free(s);
}

int mb_snapshot_set_conf(struct mb_snapshot *s, const void *conf, size_t len)
{
	return mb_blob_set(&s->conf, conf, len);
}

const void *mb_snapshot_conf(const struct mb_snapshot *s, size_t *len)
{
	*len = s->conf.len;
	return s->conf.data;
}

const void *mb_snapshot_device_state(const struct mb_snapshot *s,
				     const char *name, size_t *size)
{
	for (size_t i = 0; i < s->ndev; i++)
		if (strcmp(s->dev[i].name, name) == 0 && s->dev[i].size) {
			*size = s->dev[i].size;
			return s->dev[i].data;
		}
	return NULL;
}

uint64_t mb_snapshot_ram_pages(const struct mb_snapshot *s)
{
	uint64_t n = 0;
	for (size_t i = 0; i < s->nreg; i++)
		n += s->reg[i].size / PAGE;
	return n;
}

/* The KVM slot of a region, or NULL (ROM slots never log). */
static struct kvm_userspace_memory_region *slot_of(struct mb_machine *m,
						   uint64_t base)
{
	for (unsigned i = 0; i < m->slots; i++)
		if (m->slot[i].guest_phys_addr == base)
			return &m->slot[i];
	return NULL;
}

static bool logs(const struct kvm_userspace_memory_region *r)
{
	return r && (r->flags & KVM_MEM_LOG_DIRTY_PAGES);
}

static int enable_dirty_log(struct mb_machine *m)
{
	if (m->dirty_log)
		return 0;
	for (unsigned i = 0; i < m->slots; i++) {
		struct kvm_userspace_memory_region r = m->slot[i];
		if (r.flags & KVM_MEM_READONLY)
			continue;
		r.flags |= KVM_MEM_LOG_DIRTY_PAGES;
		if (ioctl(m->vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return 0; /* no dirty logging here: full copies then */
		m->slot[i] = r;
	}
	m->dirty_log = true;
	return 0;
}

/* Pages of region i written since the last call, by the guest (KVM's log,
 * cleared by reading it) or by moonbox, gathered in mem.c's scratch bitmap
 * for the region; the caller zeroes the words it finds set (consume()).
 * Nothing is allocated: a restore costs the pages it copies plus one pass
 * over a bitmap of RAM/32768 bytes. */
static int take_dirty(struct mb_machine *m, size_t i, uint64_t **out)
{
	const struct mb_mem_region *g = mb_mem_region(m->mem, i);
	uint64_t *bm = mb_mem_log(m->mem, i);
	struct kvm_userspace_memory_region *r = slot_of(m, g->base);
	*out = bm;
	if (logs(r)) {
		/* KVM writes the whole bitmap: no need to have it zeroed. */
		struct kvm_dirty_log dl = { .slot = r->slot, .dirty_bitmap = bm };
		if (ioctl(m->vm, KVM_GET_DIRTY_LOG, &dl) < 0) {
			memset(bm, 0, bitmap_words(g->size) * sizeof *bm);
			return mb_seterr(-errno, "KVM_GET_DIRTY_LOG: %s", strerror(errno));
		}
	}
	mb_mem_take_dirty(m->mem, i, bm);
	return 0;
}

/* Call fn(page) for every page set in bm (region of size bytes), clearing
 * bm as it goes (fn NULL: only clear). */
static uint64_t consume(uint64_t *bm, uint64_t size, const uint8_t *src,
			uint8_t *dst)
{
	uint64_t n = 0, pages = size / PAGE;
	for (size_t w = 0; w < bitmap_words(size); w++) {
		if (!bm[w])
			continue;
		for (uint64_t bits = bm[w]; bits && src; bits &= bits - 1) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
			if (p >= pages)
				break;
			memcpy(dst + p * PAGE, src + p * PAGE, PAGE);
			n++;
		}
		bm[w] = 0;
	}
	return n;
}

static int clear_dirty(struct mb_machine *m)
{
	for (size_t i = 0; i < mb_mem_count(m->mem); i++) {
		uint64_t *bm;
		int rc = take_dirty(m, i, &bm);
		consume(bm, mb_mem_region(m->mem, i)->size, NULL, NULL);
		if (rc)
			return rc;
	}
	return 0;
}

/* Call fn(page index) for every page of [p, p+size) that is resident. */
static void resident_pages(const uint8_t *p, uint64_t size,
			   void (*fn)(void *ctx, uint64_t page), void *ctx)
{
	unsigned char vec[4096];
	uint64_t pages = size / PAGE;
	for (uint64_t at = 0; at < pages; at += sizeof vec) {
		uint64_t k = pages - at < sizeof vec ? pages - at : sizeof vec;
		if (mincore((void *)(p + at * PAGE), k * PAGE, vec)) {
			for (uint64_t j = 0; j < k; j++) /* cannot tell: all */
				fn(ctx, at + j);
			continue;
		}
		for (uint64_t j = 0; j < k; j++)
			if (vec[j] & 1)
				fn(ctx, at + j);
	}
}

struct copyctx {
	uint8_t *dst;
	const uint8_t *src;
	uint64_t n;
};

static void copy_page(void *ctx, uint64_t page)
{
	struct copyctx *c = ctx;
	memcpy(c->dst + page * PAGE, c->src + page * PAGE, PAGE);
	c->n++;
}

static void zero_page(void *ctx, uint64_t page)
{
	struct copyctx *c = ctx;
	memset(c->dst + page * PAGE, 0, PAGE);
	c->n++;
}

static uint8_t *anon(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

uint8_t *mb_snapshot_region_alloc(struct mb_snapshot *s, size_t i)
{
	if (!s->reg[i].copy)
		s->reg[i].copy = anon(s->reg[i].size);
	return s->reg[i].copy;
}

static int take_devices(struct mb_machine *m, struct mb_snapshot *s)
{
	s->dev = calloc(m->ndevs ? m->ndevs : 1, sizeof *s->dev);
	if (!s->dev)
		return mb_seterr(-ENOMEM, "snapshot: out of memory");
	/* Nothing in flight while states are read: all first, then each. */
	for (size_t i = 0; i < m->ndevs; i++)
		mb_device_quiesce(m->devs[i]);
	for (size_t i = 0; i < m->ndevs; i++) {
		struct mb_device *d = m->devs[i];
		struct snap_dev *e = &s->dev[s->ndev++];
		const struct mb_state_desc *desc = mb_device_state_desc(d);
		snprintf(e->name, sizeof e->name, "%s", mb_device_name(d));
		snprintf(e->kind, sizeof e->kind, "%s", mb_device_kind(d));
		int krc = mb_device_keep(d, &e->kept, &e->drop);
		if (krc == -ENOMEM)
			return mb_seterr(-ENOMEM, "snapshot: device %s: out of memory",
					 e->name);
		if (krc) /* the device says why (a write-back cache not flushed) */
			return krc;
		if (!desc)
			continue;
		snprintf(e->desc, sizeof e->desc, "%s", desc->name);
		e->version = desc->version;
		e->size = desc->size;
		if (!(e->data = malloc(desc->size)))
			return mb_seterr(-ENOMEM, "snapshot: out of memory");
		int rc = mb_device_save(d, e->data);
		if (rc)
			return rc;
	}
	return 0;
}

int mb_snapshot_take(struct mb_machine *m, struct mb_snapshot **out)
{
	int rc;
	if (!mb_machine_paused(m))
		return mb_seterr(-EBUSY, "snapshot: the machine is running (pause it "
				 "first)");
	if (mb_debug_has_watch(m))
		return mb_seterr(-EBUSY, "snapshot: watchpoints are set, or software "
				 "breakpoints (they split "
				 "guest RAM into slots of their own): remove them "
				 "first");
	struct mb_snapshot *s = calloc(1, sizeof *s);
	if (!s)
		return mb_seterr(-ENOMEM, "snapshot: out of memory");
	if (!m->snap_id)
		m->snap_id = atomic_fetch_add(&next_id, 1);
	s->machine_id = m->snap_id;
	s->id = atomic_fetch_add(&next_id, 1);
	s->ncpu = m->ncpu;
	s->irqchip = m->irqchip;
	s->kernel_pit = m->kernel_pit;
	if ((rc = take_devices(m, s)))
		goto fail;
	mb_holdtime_thaw(m); /* the timers as they stand, not disarmed */
	for (unsigned i = 0; i < m->ncpu && !rc; i++)
		rc = mb_vcpu_state_save(&m->cpu[i], &s->cpu[i]);
	if (!rc)
		rc = mb_vm_state_save(m, s->vm);
	mb_holdtime_refreeze(m);
	if (rc)
		goto fail;
	if ((rc = enable_dirty_log(m)) ||
	    (rc = clear_dirty(m)))
		goto fail;
	s->nreg = mb_mem_count(m->mem);
	for (size_t i = 0; i < s->nreg; i++) {
		const struct mb_mem_region *g = mb_mem_region(m->mem, i);
		struct snap_region *r = &s->reg[i];
		r->base = g->base, r->size = g->size, r->flags = g->flags;
		snprintf(r->name, sizeof r->name, "%s", g->name);
		if (!mb_snapshot_region_alloc(s, i)) {
			rc = mb_seterr(-ENOMEM, "snapshot: cannot map %" PRIu64 " bytes "
				       "for a copy of %s", g->size, g->name);
			goto fail;
		}
		struct copyctx c = { r->copy, g->host, 0 };
		resident_pages(g->host, g->size, copy_page, &c);
	}
	m->snap_base = s->id;
	*out = s;
	return 0;
fail:
	mb_snapshot_free(s);
	return rc;
}

/* ---- restore -------------------------------------------------------------- */

static const char *chip_name(unsigned c)
{
	return c == MB_IRQCHIP_KERNEL ? "kernel" : "user";
}

/* Everything that must match before anything is changed. */
static int check_layout(struct mb_machine *m, const struct mb_snapshot *s)
{
	if (s->ncpu != m->ncpu)
		return mb_seterr(-EINVAL, "restore: the snapshot has %u cpus, the "
				 "machine %u", s->ncpu, m->ncpu);
	if (s->irqchip != (unsigned)m->irqchip)
		return mb_seterr(-EINVAL, "restore: the snapshot has irqchip \"%s\", "
				 "the machine \"%s\"", chip_name(s->irqchip),
				 chip_name(m->irqchip));
	if (s->kernel_pit != (unsigned)m->kernel_pit)
		return mb_seterr(-EINVAL, "restore: the snapshot has pit \"%s\", the "
				 "machine \"%s\"", s->kernel_pit ? "kernel" : "user",
				 m->kernel_pit ? "kernel" : "user");
	if (s->nreg != mb_mem_count(m->mem))
		return mb_seterr(-EINVAL, "restore: the snapshot has %zu memory "
				 "regions, the machine %zu", s->nreg,
				 mb_mem_count(m->mem));
	for (size_t i = 0; i < s->nreg; i++) {
		const struct mb_mem_region *g = mb_mem_region(m->mem, i);
		const struct snap_region *r = &s->reg[i];
		if (g->base != r->base || g->size != r->size || g->flags != r->flags)
			return mb_seterr(-EINVAL, "restore: memory region %zu is %s at "
					 "0x%" PRIx64 " size 0x%" PRIx64 "%s in the "
					 "snapshot, %s at 0x%" PRIx64 " size 0x%" PRIx64
					 "%s in the machine", i, r->name, r->base, r->size,
					 (r->flags & MB_MEM_READONLY) ? " (ROM)" : "",
					 g->name, g->base, g->size,
					 (g->flags & MB_MEM_READONLY) ? " (ROM)" : "");
	}
	if (s->ndev != m->ndevs)
		return mb_seterr(-EINVAL, "restore: the snapshot has %zu devices, the "
				 "machine %zu", s->ndev, m->ndevs);
	for (size_t i = 0; i < s->ndev; i++) {
		const struct snap_dev *e = &s->dev[i];
		struct mb_device *d = mb_machine_device(m, e->name);
		if (!d)
			return mb_seterr(-EINVAL, "restore: device %s (%s) of the "
					 "snapshot is not in the machine", e->name, e->kind);
		if (strcmp(mb_device_kind(d), e->kind))
			return mb_seterr(-EINVAL, "restore: device %s is a %s in the "
					 "snapshot, a %s in the machine", e->name, e->kind,
					 mb_device_kind(d));
		const struct mb_state_desc *desc = mb_device_state_desc(d);
		if (!desc != !e->size ||
		    (desc && (strcmp(desc->name, e->desc) || desc->version != e->version ||
			      desc->size != e->size)))
			return mb_seterr(-EINVAL, "restore: device %s: the snapshot has "
					 "state %s version %u (%" PRIu64 " bytes), the "
					 "machine %s version %u (%zu bytes)", e->name,
					 e->size ? e->desc : "(none)", e->version, e->size,
					 desc ? desc->name : "(none)",
					 desc ? desc->version : 0, desc ? desc->size : 0);
	}
	for (unsigned i = 0; i < s->ncpu; i++)
		if (!s->cpu[i].part[CPU_REGS].len || !s->cpu[i].part[CPU_BOOK].len)
			return mb_seterr(-EINVAL, "restore: vcpu %u has no registers in "
					 "the snapshot", i);
	return 0;
}

/* Does KVM translate guest addresses through shadow page tables here
 * (PVM, or VMX/SVM without EPT/NPT)? Then it caches translations derived
 * from the guest's page tables and notices their changes only through
 * write faults: pages moonbox copies back from userspace (a restore) are
 * page tables it never saw change. */
static bool shadow_paging(void)
{
	static int known = -1;
	if (known >= 0)
		return known;
	char c = 'Y';
	FILE *f;
	known = access("/sys/module/kvm_pvm", F_OK) == 0;
	if (!known && (f = fopen("/sys/module/kvm_intel/parameters/ept", "r"))) {
		known = fread(&c, 1, 1, f) == 1 && (c == 'N' || c == '0');
		fclose(f);
	}
	if (!known && (f = fopen("/sys/module/kvm_amd/parameters/npt", "r"))) {
		known = fread(&c, 1, 1, f) == 1 && (c == 'N' || c == '0');
		fclose(f);
	}
	return known;
}

/* Drop KVM's shadow pages of region i's slot: delete it and add it back
 * (KVM_MR_DELETE flushes them); its dirty log starts empty again. */
static int rezap(struct mb_machine *m, size_t i)
{
	struct kvm_userspace_memory_region *r =
		slot_of(m, mb_mem_region(m->mem, i)->base);
	if (!r)
		return 0;
	struct kvm_userspace_memory_region del = *r;
	del.memory_size = 0;
	if (ioctl(m->vm, KVM_SET_USER_MEMORY_REGION, &del) < 0 ||
	    ioctl(m->vm, KVM_SET_USER_MEMORY_REGION, r) < 0)
		return mb_seterr(-errno, "restore: re-adding memory slot %u: %s",
				 r->slot, strerror(errno));
	return 0;
}

/* Guest paging on in s (CR0.PG of any vCPU): only then are there guest
 * page tables for a shadow MMU to cache. kvm_sregs2 starts as kvm_sregs. */
static bool paging(const struct mb_snapshot *s)
{
	for (unsigned c = 0; c < s->ncpu; c++) {
		const struct blob *b = s->cpu[c].part[CPU_SREGS2].len
					       ? &s->cpu[c].part[CPU_SREGS2]
					       : &s->cpu[c].part[CPU_SREGS];
		uint64_t cr0;
		if (b->len < offsetof(struct kvm_sregs, cr0) + sizeof cr0)
			return true; /* cannot tell: assume so */
		memcpy(&cr0, (const uint8_t *)b->data + offsetof(struct kvm_sregs, cr0),
		       sizeof cr0);
		if (cr0 & (1u << 31))
			return true;
	}
	return false;
}

static int restore_ram(struct mb_machine *m, const struct mb_snapshot *s,
		       struct mb_restore_stats *st)
{
	bool zap = shadow_paging() && paging(s);
	bool dirty_only = m->dirty_log && s->machine_id == m->snap_id &&
			  m->snap_base == s->id;
	uint64_t copied = 0;
	for (size_t i = 0; i < s->nreg; i++) {
		const struct mb_mem_region *g = mb_mem_region(m->mem, i);
		const struct snap_region *r = &s->reg[i];
		uint64_t *bm;
		int rc = take_dirty(m, i, &bm); /* clears both logs in any case */
		if (rc)
			return rc;
		if (dirty_only) {
			uint64_t n = consume(bm, g->size, r->copy, g->host);
			copied += n;
			if (n && zap && (rc = rezap(m, i)))
				return rc;
		} else {
			/* Pages the machine touched go back to the copy's (zero
			 * where the copy has none); then the copy's pages. */
			consume(bm, g->size, NULL, NULL);
			struct copyctx z = { g->host, NULL, 0 }, c = { g->host, r->copy, 0 };
			resident_pages(g->host, g->size, zero_page, &z);
			resident_pages(r->copy, g->size, copy_page, &c);
			copied += c.n;
		}
	}
	if (st) {
		st->dirty_only = dirty_only;
		st->pages_copied = copied;
	}
	return 0;
}

/* "restore: [device NAME: ]" before the message already set. */
static int prefixed(int rc, const char *dev)
{
	char msg[1024];
	snprintf(msg, sizeof msg, "%s", mb_errmsg());
	if (dev)
		return mb_seterr(rc, "restore: device %s: %s", dev, msg);
	return mb_seterr(rc, "restore: %s", msg);
}

int mb_snapshot_restore(struct mb_machine *m, const struct mb_snapshot *s,
			struct mb_restore_stats *st)
{
	int rc;
	if (!mb_machine_paused(m))
		return mb_seterr(-EBUSY, "restore: the machine is running (pause it "
				 "first)");
	if (mb_debug_has_watch(m))
		return mb_seterr(-EBUSY, "restore: watchpoints are set, or software "
				 "breakpoints (they split "
				 "guest RAM into slots of their own): remove them "
				 "first");
	if (s->machine_id && s->machine_id != m->snap_id)
		return mb_seterr(-EINVAL, "restore: this snapshot was taken of another "
				 "machine (restore it there, or save it to a file and "
				 "use mb.restore)");
	if ((rc = check_layout(m, s)))
		return rc;
	if ((rc = enable_dirty_log(m)))
		return rc;
	for (size_t i = 0; i < m->ndevs; i++)
		mb_device_quiesce(m->devs[i]);
	if ((rc = restore_ram(m, s, st)))
		return rc;
	/* Devices first (they may move their lines), then KVM's controllers,
	 * which put the lines' levels back as they were, then the vCPUs and
	 * the clock. */
	for (size_t i = 0; i < s->ndev; i++) {
		const struct snap_dev *e = &s->dev[i];
		struct mb_device *d = mb_machine_device(m, e->name);
		if (e->size && (rc = mb_device_load(d, e->data)))
			return prefixed(rc, e->name);
		if ((rc = mb_device_put_back(d, e->kept)))
			return mb_seterr(rc, "restore: device %s: out of memory", e->name);
	}
	for (unsigned c = 0; c < m->ncpu; c++)
		if ((rc = mb_vcpu_state_load(&m->cpu[c], &s->cpu[c])))
			return prefixed(rc, NULL);
	if ((rc = mb_vm_state_load(m, s->vm)))
		return prefixed(rc, NULL);
	mb_holdtime_forget(m); /* the restored timers stand still from here */
	mb_holdtime_refreeze(m);
	m->snap_base = s->id;
	if (!m->snap_id)
		m->snap_id = atomic_fetch_add(&next_id, 1);
	mb_machine_kick_irq(m);
	return 0;
}
