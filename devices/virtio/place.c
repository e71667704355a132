/*
 * Placing a virtio device in a machine: a free 4K window and interrupt
 * line from the machine's allocator unless given, an irqfd with KVM's
 * irqchip, the transport with its doorbells on the bus, and the device
 * announced for boot_linux's virtio_mmio.device= list. Cleanup runs the
 * other way: the backend's watch, the model (blk joins its workers, which
 * still complete through the transport), the transport, the irqfd.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "moonbox/virtio_mmio.h"

struct mb_virtio_dev {
	struct mb_machine *m;
	const struct mb_virtio_model *model;
	void *dev;
	struct mb_virtio *t;
	int irqfd;  /* -1: interrupts through the machine's line */
	unsigned irq;
	int pollfd; /* watched for the model, or -1 */
};

void mb_virtio_dev_free(void *impl)
{
	struct mb_virtio_dev *v = impl;
	if (v->pollfd >= 0)
		mb_machine_unwatch(v->m, v->pollfd);
	if (v->dev)
		v->model->free(v->dev);
	mb_virtio_free(v->t);
	if (v->irqfd >= 0) {
		mb_machine_irqfd(v->m, v->irqfd, v->irq, false);
		close(v->irqfd);
	}
	free(v);
}

void mb_virtio_dev_quiesce(void *impl)
{
	struct mb_virtio_dev *v = impl;
	if (v->model->quiesce)
		v->model->quiesce(v->dev);
}

int mb_virtio_dev_save(void *impl, void *st)
{
	struct mb_virtio_dev *v = impl;
	mb_virtio_dev_quiesce(v); /* a state that continues: nothing in flight */
	v->model->save(v->dev, v->t, st);
	return 0;
}

int mb_virtio_dev_keep(void *impl, void **kept)
{
	struct mb_virtio_dev *v = impl;
	mb_virtio_dev_quiesce(v);
	*kept = NULL;
	return v->model->keep ? v->model->keep(v->dev, kept) : 0;
}

int mb_virtio_dev_put_back(void *impl, const void *kept)
{
	struct mb_virtio_dev *v = impl;
	mb_virtio_dev_quiesce(v);
	return v->model->put_back ? v->model->put_back(v->dev, kept) : 0;
}

int mb_virtio_dev_load(void *impl, const void *st)
{
	struct mb_virtio_dev *v = impl;
	mb_virtio_dev_quiesce(v);
	return v->model->load(v->dev, v->t, st);
}

static struct mb_virtio_dev *placed(struct mb_device *d)
{
	/* Every "virtio_*" kind is placed here (its impl is ours). */
	return strncmp(mb_device_kind(d), "virtio_", 7) == 0 && !mb_devproc_of(d)
		       ? mb_device_impl(d) : NULL;
}

void *mb_virtio_dev_model(struct mb_device *d)
{
	struct mb_virtio_dev *v = placed(d);
	return v ? v->dev : NULL;
}

struct mb_virtio *mb_virtio_dev_transport(struct mb_device *d)
{
	struct mb_virtio_dev *v = placed(d);
	return v ? v->t : NULL;
}

int mb_virtio_dev_watch(struct mb_device *d, int fd,
			void (*fn)(void *opaque, int fd), void *opaque)
{
	struct mb_virtio_dev *v = placed(d);
	int rc = mb_machine_watch(v->m, fd, fn, opaque);
	if (!rc)
		v->pollfd = fd;
	return rc;
}

int mb_virtio_place(struct mb_machine *m, const struct mb_virtio_place *p,
		    const struct mb_virtio_model *model, void *dev,
		    uint64_t features, struct mb_device **out)
{
	const char *kind = model->dev_ops->kind;
	struct mb_virtio_dev *v = calloc(1, sizeof *v);
	if (!v) {
		model->free(dev);
		return mb_seterr(-ENOMEM, "%s: out of memory", kind);
	}
	*v = (struct mb_virtio_dev){ .m = m, .model = model, .dev = dev,
				     .irqfd = -1, .pollfd = -1 };
	struct mb_device *d;
	int rc = mb_device_new(m, p->name, p->defname, model->dev_ops, v, &d);
	if (rc)
		return rc; /* v and dev freed */
	uint64_t base = p->mmio_base, size = p->mmio_size;
	if (!size)
		size = MB_VIRTIO_MMIO_SIZE;
	struct mb_irq irq;
	if (size < 0x200) {
		rc = mb_seterr(-EINVAL, "mmio_size: 0x%llx is too small for a "
			       "virtio-mmio window (at least 0x200)",
			       (unsigned long long)size);
		goto fail;
	}
	if (base & 0xfff) {
		rc = mb_seterr(-EINVAL, "mmio_base: 0x%llx is not 4K-aligned",
			       (unsigned long long)base);
		goto fail;
	}
	if (!p->mmio_base && (rc = mb_machine_alloc_mmio(m, size, &base)))
		goto fail;
	if ((rc = mb_device_irq(d, p->irq > 0 ? p->irq : -1, &irq)))
		goto fail;
	v->irq = (unsigned)mb_device_irq_line(d);
	/* Kernel irqchip: completions raise the line from any thread through
	 * KVM_IRQFD, no ioctl per interrupt (virtio_mmio.h: edge, not level). */
	if (mb_machine_irqchip(m) == MB_IRQCHIP_KERNEL) {
		v->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (v->irqfd >= 0 && mb_machine_irqfd(m, v->irqfd, v->irq, true)) {
			close(v->irqfd);
			v->irqfd = -1;
		}
	}
	struct mb_virtio_config cfg = { model->ops, dev, features,
					mb_machine_mem(m), irq, v->irqfd };
	if (!(v->t = mb_virtio_new(&cfg))) {
		rc = -ENOMEM;
		goto fail;
	}
	if (model->bind)
		model->bind(dev, v->t);
	if ((rc = mb_virtio_doorbells(v->t, m, base)) ||
	    (rc = mb_device_map(d, MB_SPACE_MMIO, base, size, &mb_virtio_mmio_ops,
				v->t)) ||
	    (rc = mb_machine_add_virtio_mmio(m, base, size, v->irq)))
		goto fail;
	*out = d;
	return 0;
fail:
	mb_device_remove(d);
	return rc;
}
