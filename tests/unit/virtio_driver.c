/* The fake virtio driver of virtio_driver.h. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "virtio_driver.h"

struct mb_mem *vd_ram(uint64_t size)
{
	struct mb_mem *mem = mb_mem_new();
	if (mem && mb_mem_add(mem, 0, size, 0, NULL, "ram")) {
		mb_mem_free(mem);
		return NULL;
	}
	return mem;
}

void vd_attach(struct vd *d, struct mb_virtio *t, struct mb_mem *mem)
{
	memset(d, 0, sizeof *d);
	d->t = t, d->mem = mem;
}

void *vd_gp(const struct vd *d, uint64_t gpa)
{
	return mb_mem_ptr(d->mem, gpa, 1, false);
}

uint32_t vd_rd(const struct vd *d, uint64_t reg)
{
	uint32_t v = 0;
	mb_virtio_mmio_ops.read(d->t, reg, &v, 4);
	return v;
}

void vd_wr(const struct vd *d, uint64_t reg, uint32_t v)
{
	mb_virtio_mmio_ops.write(d->t, reg, &v, 4);
}

uint32_t vd_status(const struct vd *d)
{
	return vd_rd(d, MB_VIRTIO_MMIO_STATUS);
}

void vd_status_add(const struct vd *d, uint32_t bits)
{
	vd_wr(d, MB_VIRTIO_MMIO_STATUS, vd_status(d) | bits);
}

uint32_t vd_dev_features(const struct vd *d, unsigned sel)
{
	vd_wr(d, MB_VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
	return vd_rd(d, MB_VIRTIO_MMIO_DEVICE_FEATURES);
}

void vd_drv_features(const struct vd *d, unsigned sel, uint32_t v)
{
	vd_wr(d, MB_VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
	vd_wr(d, MB_VIRTIO_MMIO_DRIVER_FEATURES, v);
}

uint32_t vd_isr(const struct vd *d)
{
	return vd_rd(d, MB_VIRTIO_MMIO_INTERRUPT_STATUS);
}

void vd_ack(const struct vd *d, uint32_t bits)
{
	vd_wr(d, MB_VIRTIO_MMIO_INTERRUPT_ACK, bits);
}

/* Sec. 3.1.1 steps 1-6. */
void vd_negotiate(struct vd *d, uint64_t features)
{
	vd_wr(d, MB_VIRTIO_MMIO_STATUS, 0);
	vd_wr(d, MB_VIRTIO_MMIO_STATUS,
	      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	vd_drv_features(d, 0, (uint32_t)features);
	vd_drv_features(d, 1, (uint32_t)(features >> 32));
	vd_status_add(d, VIRTIO_STATUS_FEATURES_OK);
	assert_true(vd_status(d) & VIRTIO_STATUS_FEATURES_OK);
}

/* Steps 7-8: the queues (sec. 4.2.3.2), then DRIVER_OK. */
void vd_setup(struct vd *d, uint64_t features, unsigned nq, uint16_t num)
{
	vd_negotiate(d, features);
	d->num = num;
	for (unsigned q = 0; q < nq; q++) {
		memset(vd_gp(d, VD_DESC(q)), 0, 0x3000);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_SEL, q);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_NUM, num);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DESC_LOW, VD_DESC(q));
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DRIVER_LOW, VD_AVAIL(q));
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DRIVER_HIGH, 0);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DEVICE_LOW, VD_USED(q));
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_DEVICE_HIGH, 0);
		vd_wr(d, MB_VIRTIO_MMIO_QUEUE_READY, 1);
		assert_int_equal(vd_rd(d, MB_VIRTIO_MMIO_QUEUE_READY), 1);
		d->avail[q] = 0;
	}
	vd_status_add(d, VIRTIO_STATUS_DRIVER_OK);
}

void vd_put_desc(struct mb_mem *mem, uint64_t table, unsigned i,
		 uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *p = mb_mem_ptr(mem, table + 16 * i, 16, false);
	memcpy(p, &addr, 8);
	memcpy(p + 8, &len, 4);
	memcpy(p + 12, &flags, 2);
	memcpy(p + 14, &next, 2);
}

void vd_desc(struct vd *d, unsigned q, unsigned i, uint64_t addr,
	     uint32_t len, uint16_t flags, uint16_t next)
{
	vd_put_desc(d->mem, VD_DESC(q), i, addr, len, flags, next);
}

void vd_offer(struct vd *d, unsigned q, uint16_t head)
{
	uint16_t *ring = vd_gp(d, VD_AVAIL(q) + 4);
	ring[d->avail[q] % d->num] = head;
	__atomic_store_n((uint16_t *)vd_gp(d, VD_AVAIL(q) + 2), ++d->avail[q],
			 __ATOMIC_RELEASE);
}

void vd_post(struct vd *d, unsigned q, unsigned i, uint64_t addr,
	     uint32_t len, uint16_t flags)
{
	vd_desc(d, q, i, addr, len, flags, 0);
	vd_offer(d, q, (uint16_t)i);
}

void vd_kick(struct vd *d, unsigned q)
{
	vd_wr(d, MB_VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

uint16_t vd_used_idx(const struct vd *d, unsigned q)
{
	return __atomic_load_n((uint16_t *)vd_gp(d, VD_USED(q) + 2),
			       __ATOMIC_ACQUIRE);
}

uint32_t vd_used(const struct vd *d, unsigned q, unsigned i, uint32_t *id)
{
	uint32_t e[2];
	memcpy(e, vd_gp(d, VD_USED(q) + 4 + 8 * (i % d->num)), 8);
	if (id)
		*id = e[0];
	return e[1];
}

bool vd_wait_used(const struct vd *d, unsigned q, uint16_t idx)
{
	for (long spin = 0; spin < 10000000; spin++) {
		if ((int16_t)(vd_used_idx(d, q) - idx) >= 0)
			return true;
		sched_yield();
	}
	return false;
}

void vd_set_used_event(struct vd *d, unsigned q, uint16_t v)
{
	memcpy(vd_gp(d, VD_AVAIL(q) + 4 + 2 * d->num), &v, 2);
}

uint16_t vd_avail_event(const struct vd *d, unsigned q)
{
	uint16_t v;
	memcpy(&v, vd_gp(d, VD_USED(q) + 4 + 8 * d->num), 2);
	return v;
}
