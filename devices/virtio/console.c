/*
 * virtio-console, virtio spec v1.2 sec. 5.3, port 0 without MULTIPORT
 * (5.3.2: queues 0 and 1 only, no control queues).
 *
 * Output: every readable buffer of a transmitq chain goes to the backend
 * as it is, and the chain comes back with used length 0 (5.3.6.2).
 * Input: the backend pushes bytes to con_rx() on the event loop; they fill
 * the device-writable buffers the driver posted on receiveq. With none
 * posted we take nothing: the bytes wait in the backend (backpressure) and
 * mb_chr_accept() asks for them again when the driver kicks receiveq.
 *
 * Input also waits for the port's first output. Without MULTIPORT there is
 * no PORT_OPEN message (5.3.6.2), and Linux posts receive buffers before
 * the port can be found by its interrupt handler (virtio_console.c:
 * add_port() fills receiveq, then registers the hvc and lists the port;
 * in_intr() drops data for an unlisted port), so bytes typed before boot
 * would be lost. A port that has written has been listed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "moonbox/virtio_console.h"

enum { RXQ = 0, TXQ = 1 };

struct mb_virtio_console {
	struct mb_chr *chr;
	struct mb_virtio *t;
	uint16_t cols, rows;
	uint64_t features;

	/* Serialises receiveq popping (con_rx on the event loop) with the
	 * driver's doorbells and reset (vCPU or event loop, transport lock). */
	pthread_mutex_t lock;
	bool open; /* the port wrote something since the last reset */
	bool owed; /* we refused input: call mb_chr_accept() on new buffers */
	struct mb_vq_chain rx, tx;

	struct {
		_Atomic uint64_t tx_bytes, rx_bytes, emerg_bytes, rx_stalls;
	} st;
};

/* ---- backend -> guest ------------------------------------------------------ */

static size_t con_rx(void *dev, const uint8_t *buf, size_t len)
{
	struct mb_virtio_console *c = dev;
	size_t took = 0;
	pthread_mutex_lock(&c->lock);
	struct mb_vq *q = c->open && c->t ? mb_virtio_queue(c->t, RXQ) : NULL;
	while (q && took < len) {
		int rc = mb_vq_pop(q, &c->rx);
		if (rc < 0)
			break; /* broken: the transport asked for a reset */
		if (rc == 0) {
			/* Out of buffers: with EVENT_IDX, ask for a kick at the
			 * next one (2.7.10); it may have come meanwhile. */
			if (mb_vq_arm(q))
				continue;
			break;
		}
		size_t n = mb_iov_from_buf(c->rx.iov + c->rx.nout, c->rx.nin, 0,
					   buf + took, len - took);
		mb_virtio_complete(c->t, q, c->rx.head, (uint32_t)n);
		took += n;
	}
	if (took < len) {
		c->owed = true;
		c->st.rx_stalls++;
	}
	c->st.rx_bytes += took;
	pthread_mutex_unlock(&c->lock);
	return took;
}

/* ---- the driver's doorbells ------------------------------------------------- */

static void con_tx(struct mb_virtio_console *c, struct mb_virtio *t)
{
	struct mb_vq *q = mb_virtio_queue(t, TXQ);
	do {
		int rc;
		while ((rc = mb_vq_pop(q, &c->tx)) > 0) {
			for (unsigned i = 0; i < c->tx.nout; i++)
				mb_chr_write(c->chr, c->tx.iov[i].iov_base,
					     c->tx.iov[i].iov_len);
			c->st.tx_bytes += c->tx.out_len;
			mb_virtio_complete(t, q, c->tx.head, 0);
		}
		if (rc < 0)
			return;
	} while (mb_vq_arm(q));
}

/* Runs with the transport lock held: never concurrent with reset or
 * another doorbell, so transmitq needs no lock of ours. */
static void con_notify(void *dev, struct mb_virtio *t, unsigned qi)
{
	struct mb_virtio_console *c = dev;
	pthread_mutex_lock(&c->lock);
	if (qi == TXQ)
		c->open = true;
	bool owed = c->open && c->owed;
	if (owed)
		c->owed = false;
	pthread_mutex_unlock(&c->lock);
	if (owed)
		mb_chr_accept(c->chr); /* delivery comes back on the event loop */
	if (qi == TXQ)
		con_tx(c, t);
}

static void con_reset(void *dev)
{
	struct mb_virtio_console *c = dev;
	pthread_mutex_lock(&c->lock); /* waits for a con_rx under way */
	c->open = false; /* keep `owed`: refused input is still waiting */
	pthread_mutex_unlock(&c->lock);
}

/* ---- config space: struct virtio_console_config (5.3.4) ---------------------- */

static void con_config_read(void *dev, uint64_t off, void *data, unsigned size)
{
	struct mb_virtio_console *c = dev;
	uint8_t cfg[MB_VIRTIO_CONSOLE_CONFIG_SIZE] = { 0 };
	mb_io_put(cfg + 0, 2, c->cols);
	mb_io_put(cfg + 2, 2, c->rows);
	mb_io_put(cfg + 4, 4, 1); /* max_nr_ports: valid with MULTIPORT only */
	/* emerg_wr (offset 8) is write-only; reads give 0 */
	memcpy(data, cfg + off, size);
}

/* 5.3.4: a write to emerg_wr outputs that character, even before the
 * driver has set up any queue (early debug). */
static void con_config_write(void *dev, uint64_t off, const void *data,
			     unsigned size)
{
	struct mb_virtio_console *c = dev;
	if (off != 8)
		return; /* cols/rows/max_nr_ports are read-only */
	uint8_t ch = *(const uint8_t *)data;
	mb_chr_write(c->chr, &ch, 1);
	c->st.emerg_bytes++;
}

const struct mb_virtio_dev_ops mb_virtio_console_ops = {
	.name = "virtio-console",
	.device_id = VIRTIO_ID_CONSOLE,
	.nqueues = 2,
	.queue_max = MB_VQ_MAX_SIZE,
	.config_size = MB_VIRTIO_CONSOLE_CONFIG_SIZE,
	.config_read = con_config_read,
	.config_write = con_config_write,
	.notify = con_notify,
	.reset = con_reset,
};

/* ---- life cycle ---------------------------------------------------------------- */

struct mb_virtio_console *
mb_virtio_console_new(const struct mb_virtio_console_config *cfg)
{
	struct mb_virtio_console *c = calloc(1, sizeof *c);
	if (!c) {
		mb_seterr(-ENOMEM, "virtio-console: out of memory");
		return NULL;
	}
	c->chr = cfg->chr;
	c->cols = cfg->cols, c->rows = cfg->rows;
	c->features = 1ull << VIRTIO_CONSOLE_F_EMERG_WRITE;
	if (c->cols && c->rows)
		c->features |= 1ull << VIRTIO_CONSOLE_F_SIZE;
	else
		c->cols = c->rows = 0;
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

void mb_virtio_console_bind(struct mb_virtio_console *c, struct mb_virtio *t)
{
	c->t = t;
	if (c->chr) {
		c->chr->rx = con_rx;
		c->chr->rx_dev = c;
	}
}

void mb_virtio_console_free(struct mb_virtio_console *c)
{
	if (!c)
		return;
	if (c->chr && c->chr->rx_dev == c) {
		c->chr->rx = NULL;
		c->chr->rx_dev = NULL;
	}
	pthread_mutex_destroy(&c->lock);
	free(c);
}

uint64_t mb_virtio_console_features(struct mb_virtio_console *c)
{
	return c->features;
}

void mb_virtio_console_stats(struct mb_virtio_console *c,
			     struct mb_virtio_console_stats *st)
{
	st->tx_bytes = c->st.tx_bytes;
	st->rx_bytes = c->st.rx_bytes;
	st->emerg_bytes = c->st.emerg_bytes;
	st->rx_stalls = c->st.rx_stalls;
}

/* ---- state and the machine ------------------------------------------------- */

MB_STATE_DESC(mb_virtio_console_state, MB_VIRTIO_CONSOLE_STATE, 1);

void mb_virtio_console_save(struct mb_virtio_console *c, struct mb_virtio *t,
			    struct mb_virtio_console_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	memset(st, 0, sizeof *st);
	mb_virtio_save(t, ts, st->queues);
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_GET, _)
	pthread_mutex_lock(&c->lock);
	st->open = c->open;
	st->owed = c->owed;
	pthread_mutex_unlock(&c->lock);
	st->cols = c->cols, st->rows = c->rows;
	st->tx_bytes = c->st.tx_bytes;
	st->rx_bytes = c->st.rx_bytes;
	st->emerg_bytes = c->st.emerg_bytes;
	st->rx_stalls = c->st.rx_stalls;
}

int mb_virtio_console_load(struct mb_virtio_console *c, struct mb_virtio *t,
			   const struct mb_virtio_console_state *st)
{
	struct mb_virtio_mmio_state tss, *ts = &tss;
	MB_VIRTIO_MMIO_STATE(MB_VIRTIO_ST_PUT, _)
	int rc = mb_virtio_load(t, ts, st->queues);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	c->open = st->open;
	c->owed = st->owed;
	pthread_mutex_unlock(&c->lock);
	c->st.tx_bytes = st->tx_bytes;
	c->st.rx_bytes = st->rx_bytes;
	c->st.emerg_bytes = st->emerg_bytes;
	c->st.rx_stalls = st->rx_stalls;
	return 0;
}

static void m_save(void *dev, struct mb_virtio *t, void *st)
{
	mb_virtio_console_save(dev, t, st);
}

static int m_load(void *dev, struct mb_virtio *t, const void *st)
{
	return mb_virtio_console_load(dev, t, st);
}

static void m_bind(void *dev, struct mb_virtio *t)
{
	mb_virtio_console_bind(dev, t);
}

static void m_free(void *dev)
{
	mb_virtio_console_free(dev);
}

static const struct mb_device_ops con_dev_ops = {
	.kind = "virtio_console", .state = &mb_virtio_console_state_desc,
	.save = mb_virtio_dev_save, .load = mb_virtio_dev_load,
	.quiesce = mb_virtio_dev_quiesce, .free = mb_virtio_dev_free,
};

static const struct mb_virtio_model con_model = {
	.ops = &mb_virtio_console_ops, .dev_ops = &con_dev_ops, .save = m_save,
	.load = m_load, .bind = m_bind, .free = m_free,
};

int mb_virtio_console_attach(struct mb_machine *m,
			     const struct mb_virtio_console_attach_config *cfg,
			     struct mb_device **out)
{
	if (!cfg->cols != !cfg->rows)
		return mb_seterr(-EINVAL, "%s: give cols and rows together",
				 cfg->cols ? "rows" : "cols");
	struct mb_virtio_console_config c = { cfg->chr, cfg->cols, cfg->rows };
	struct mb_virtio_console *con = mb_virtio_console_new(&c);
	if (!con)
		return -ENOMEM;
	struct mb_virtio_place p = { cfg->name, "console%u", cfg->mmio_base,
				     cfg->mmio_size, cfg->irq };
	return mb_virtio_place(m, &p, &con_model, con,
			       mb_virtio_console_features(con), out);
}
