/*
 * virtio entropy device, virtio spec v1.2 sec. 5.4: one queue of
 * device-writable buffers, each filled with random bytes. Served in
 * notify (getrandom does not block once the host pool is up).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
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
