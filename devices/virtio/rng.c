/*
 * virtio entropy device, virtio spec v1.2 sec. 5.4: one queue of
 * device-writable buffers, each filled with random bytes. Served in
 * notify (getrandom does not block once the host pool is up).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "moonbox/virtio_rng.h"

#define MAX_FILL (64u << 10) /* per request: a guest asks for a few bytes */

struct mb_virtio_rng {
	_Atomic uint64_t bytes;
	struct mb_vq_chain c;
};

static size_t fill(void *p, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = getrandom((char *)p + done, len - done, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		done += (size_t)r;
	}
	return done;
}

static void rng_notify(void *dev, struct mb_virtio *t, unsigned qi)
{
	struct mb_virtio_rng *r = dev;
	struct mb_vq *q = mb_virtio_queue(t, qi);
	do {
		int rc;
		while ((rc = mb_vq_pop(q, &r->c)) > 0) {
			size_t total = 0; /* readable buffers are ignored */
			for (unsigned i = r->c.nout; i < r->c.nout + r->c.nin; i++) {
				size_t n = r->c.iov[i].iov_len;
				if (n > MAX_FILL - total)
					n = MAX_FILL - total;
				size_t got = fill(r->c.iov[i].iov_base, n);
				total += got;
				if (got < n || total == MAX_FILL)
					break;
			}
			r->bytes += total;
			mb_virtio_complete(t, q, r->c.head, (uint32_t)total);
		}
		if (rc < 0)
			return;
	} while (mb_vq_arm(q));
}

const struct mb_virtio_dev_ops mb_virtio_rng_ops = {
	.name = "virtio-rng",
	.device_id = VIRTIO_ID_RNG,
	.nqueues = 1,
	.queue_max = MB_VQ_MAX_SIZE,
	.config_size = 0,
	.notify = rng_notify,
};

struct mb_virtio_rng *mb_virtio_rng_new(void)
{
	struct mb_virtio_rng *r = calloc(1, sizeof *r);
	if (!r)
		mb_seterr(-ENOMEM, "virtio-rng: out of memory");
	return r;
}

void mb_virtio_rng_free(struct mb_virtio_rng *r)
{
	free(r);
}

uint64_t mb_virtio_rng_bytes(struct mb_virtio_rng *r)
{
	return r->bytes;
}

/* ---- state and the machine ------------------------------------------------- */

MB_STATE_DESC(mb_virtio_rng_state, MB_VIRTIO_RNG_STATE, 1);

void mb_virtio_rng_save(struct mb_virtio_rng *r, struct mb_virtio *t,
			struct mb_virtio_rng_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	memset(st, 0, sizeof *st);
	mb_virtio_save(t, ts, st->queues);
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
	st->bytes = r->bytes;
}

int mb_virtio_rng_load(struct mb_virtio_rng *r, struct mb_virtio *t,
		       const struct mb_virtio_rng_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_PUT, _)
	int rc = mb_virtio_load(t, ts, st->queues);
	if (!rc)
		r->bytes = st->bytes;
	return rc;
}

static void m_save(void *dev, struct mb_virtio *t, void *st)
{
	mb_virtio_rng_save(dev, t, st);
}

static int m_load(void *dev, struct mb_virtio *t, const void *st)
{
	return mb_virtio_rng_load(dev, t, st);
}

static void m_free(void *dev)
{
	mb_virtio_rng_free(dev);
}

static const struct mb_device_ops rng_dev_ops = {
	.kind = "virtio_rng", .state = &mb_virtio_rng_state_desc,
	.save = mb_virtio_dev_save, .load = mb_virtio_dev_load,
	.quiesce = mb_virtio_dev_quiesce, .free = mb_virtio_dev_free,
};

static const struct mb_virtio_model rng_model = {
	.ops = &mb_virtio_rng_ops, .dev_ops = &rng_dev_ops, .save = m_save,
	.load = m_load, .free = m_free,
};

int mb_virtio_rng_attach(struct mb_machine *m,
			 const struct mb_virtio_rng_attach_config *cfg,
			 struct mb_device **out)
{
	static const struct mb_virtio_rng_attach_config defaults;
	if (!cfg)
		cfg = &defaults;
	struct mb_virtio_rng *r = mb_virtio_rng_new();
	if (!r)
		return -ENOMEM;
	struct mb_virtio_place p = { cfg->name, "rng%u", cfg->mmio_base,
				     cfg->mmio_size, cfg->irq };
	return mb_virtio_place(m, &p, &rng_model, r, 0, out);
}
