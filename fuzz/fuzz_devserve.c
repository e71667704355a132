/* libFuzzer: moonbox-device's side of the device protocol (cli/devserve.c)
 * against a hostile VMM. One headless machine per device kind (a 16550A,
 * an RTC, an 8254, an i8042 and a virtio-rng over 1 MiB of RAM), set up
 * once as moonbox-device sets up its one device; the input is records
 * [kind, len lo, len hi] + len bytes:
 *   0: an access channel message, as is;
 *   1: a control message, as is (LOAD with any state, SAVE, QUIESCE...);
 *   2: a well-formed access built from the bytes (read/write, region,
 *      offset, width, data), so that the device models are reached;
 *   3: bytes written into guest RAM at an offset (what a VMM sharing RAM
 *      may do at any time), for the virtio-rng's rings;
 *   4: choose the device (byte % 5);
 *   kind >= 0xf8, or a control DMA_UNMAP: a granted window (a CREATE's
 *      memory entry made of the bytes, over a sealed memfd) mapped on a
 *      scratch machine, then a DMA_UNMAP made of the rest (the devices'
 *      RAM stays mapped: every input starts from the same state);
 *   0xe4..0xe7: a hostile VMM's DMA_MAP (a window granted at run time)
 *      on a scratch machine with a dirty map: the bytes as the message
 *      (an odd length: its header made right), with a descriptor by bits 0-1 (a
 *      sealed memfd, an unsealed one, a pipe, none); then a DMA_UNMAP of
 *      what was mapped and the same DMA_MAP again (the window comes back
 *      at its old address), one at an address a page on (overlapping),
 *      and writes into every window (marks in the dirty map);
 *   0xe8..0xef: a hostile VMM's posted-write ring: the bytes over the
 *      shared ring (head, tail, entries), our count from byte 0 of the
 *      input, then the channel thread's turn (ds_ring_take);
 *   0xe0..0xe3: a hostile VMM's verdict (FAULT's reply): the device
 *      armed (FAULT_ARM, family from bit 1), the bytes queued as the reply
 *      (bit 0: with the awaited id and a right header, the bytes the
 *      verdict), then an event asked through the proxy site and the
 *      verdict applied to a sector's and a frame's worth of data;
 *   0xd8..0xdf: a hostile VMM's FAULT_APPLY (a rule that acts once) on
 *      the chosen device: the action by bits 0-2 (rtc.jump, needs_reset,
 *      config_change, net.link, or any number from the bytes), then up,
 *      seconds and capacity from the bytes; 0xdf: the bytes as the
 *      payload, any length;
 *   0xd0..0xd7: a hostile VMM's console relay to an isolated UART (its
 *      rx bytes in the relay's form, moonbox/uart16550.h): a fresh UART
 *      set up by bits 0-1 (FIFOs on, the guest ready to receive), the
 *      bytes fed whole or (bit 2) one at a time, then LSR and RBR read
 *      as a guest would, the FIFO drained and fed what it refused;
 *   0xf0..0xf7: a hostile VMM's reply to a DMA_READ/DMA_WRITE (dma =
 *      "message"): the bytes are queued as the reply (bit 0: with the
 *      awaited id), then the device reads or writes its remote RAM.
 * A crash, a sanitizer report or a hang is a finding. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/devserve.h"
#include "core/devproc_dma.h"
#include "moonbox/fault.h"
#include "moonbox/i8042.h"
#include "moonbox/pit8254.h"
#include "moonbox/rtc.h"
#include "moonbox/uart16550.h"
#include "moonbox/virtio_rng.h"

#define NDEV 5
#define RAM (1u << 20)
static struct {
	struct mb_machine *m;
	struct mb_device *d;
	struct mb_dp_report rep;
	uint8_t *ram;
	void *st; /* its state after set-up: each input starts from it */
} dev[NDEV];
static int ctl[2], evt[2];

static struct mb_machine *headless(void)
{
	struct mb_machine_config mc = { .headless = true, .irqchip = MB_IRQCHIP_USER,
					.on_stop = ds_on_stop };
	struct mb_machine *m;
	if (mb_machine_create(&mc, &m))
		abort();
	mb_machine_set_intc(m, &ds_intc, NULL);
	return m;
}

static void setup(void)
{
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, ctl) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, evt))
		abort();
	ds_ctl_fd = ctl[0], ds_evt_fd = evt[0];
	mb_chr_fd_sink(ds_out_sink);
	for (int i = 0; i < NDEV; i++) {
		struct mb_machine *m = dev[i].m = headless();
		int rc = -1;
		switch (i) {
		case 0: rc = mb_uart_attach(m, NULL, &dev[i].d); break;
		case 1: rc = mb_rtc_attach(m, NULL, &dev[i].d); break;
		case 2: rc = mb_pit_attach(m, NULL, &dev[i].d); break;
		case 3: rc = mb_i8042_attach(m, NULL, &dev[i].d); break;
		case 4:
			dev[i].ram = aligned_alloc(4096, RAM);
			memset(dev[i].ram, 0, RAM);
			if (mb_mem_add(mb_machine_mem(m), 0, RAM, 0, dev[i].ram, "ram"))
				abort();
			rc = mb_virtio_rng_attach(m, NULL, &dev[i].d);
			break;
		}
		if (rc)
			abort();
		ds_machine = m, ds_device = dev[i].d;
		memset(&ds_rep, 0, sizeof ds_rep);
		if (ds_report())
			abort();
		dev[i].rep = ds_rep;
		const struct mb_state_desc *sd = mb_device_state_desc(dev[i].d);
		if (!sd || !(dev[i].st = malloc(sd->size)) ||
		    mb_device_save(dev[i].d, dev[i].st))
			abort();
	}
}

/* Every device as set up, so that an input replays alone (a crash file
 * reproduces without the inputs before it). */
static void reset_all(void)
{
	for (int i = 0; i < NDEV; i++) {
		mb_device_quiesce(dev[i].d);
		if (mb_device_load(dev[i].d, dev[i].st))
			abort(); /* its own saved state must load */
		if (dev[i].ram)
			memset(dev[i].ram, 0, RAM);
	}
}

static void choose(unsigned i)
{
	ds_machine = dev[i].m, ds_device = dev[i].d, ds_rep = dev[i].rep;
}

static void drain(void)
{
	static uint8_t buf[MB_DP_MAX_MSG];
	while (recv(ctl[1], buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
	while (recv(evt[1], buf, sizeof buf, MSG_DONTWAIT) > 0)
		;
}

static void window(const uint8_t *b, size_t len)
{
	static int memfd = -1;
	if (memfd < 0) {
		memfd = memfd_create("fz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (memfd < 0 || ftruncate(memfd, 16384) ||
		    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
			abort();
	}
	struct mb_dp_mem r;
	memset(&r, 0, sizeof r);
	memcpy(&r, b, len < sizeof r ? len : sizeof r);
	size_t used = len < sizeof r ? len : sizeof r;
	r.name[sizeof r.name - 1] = 0;
	struct mb_machine *keep = ds_machine, *m = headless();
	ds_machine = m;
	int fd = dup(memfd);
	r.fd = fd;
	char msg[300];
	if (ds_map_mem(&r, 0, 1 << 20, "w", msg, sizeof msg))
		close(fd);
	const char *why;
	if (len - used == sizeof(struct mb_dp_unmap) || !mb_mem_count(m->mem)) {
		ds_unmap(b + used, len - used, &why);
	} else { /* the window itself, well-formed */
		const struct mb_mem_region *w = mb_mem_region(m->mem, 0);
		struct mb_dp_unmap u = { sizeof u, 0, w->base, w->size };
		ds_unmap((const uint8_t *)&u, sizeof u, &why);
	}
	struct mb_mem_region w = { 0 };
	if (mb_mem_count(m->mem))
		w = *mb_mem_region(m->mem, 0);
	ds_machine = keep;
	mb_machine_destroy(m);
	if (w.host)
		munmap(w.host, w.size); /* mapped by ds_map_mem, not the map */
}

static void dma_map(unsigned kind, const uint8_t *b, size_t len)
{
	static int sealed = -1, loose = -1, pipe_r = -1;
	static uint64_t *dirty;
	if (sealed < 0) {
		int p[2];
		sealed = memfd_create("fz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		loose = memfd_create("fz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (sealed < 0 || loose < 0 || ftruncate(sealed, 16384) ||
		    ftruncate(loose, 16384) ||
		    fcntl(sealed, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) || pipe(p) ||
		    !(dirty = aligned_alloc(4096, 4096)))
			abort();
		close(p[1]);
		pipe_r = p[0];
	}
	memset(dirty, 0, 4096);
	struct mb_machine *keep = ds_machine, *m = headless();
	uint64_t *kd = ds_dirty, kb = ds_dirty_bits;
	ds_machine = m, ds_dirty = dirty, ds_dirty_bits = 4096 * 8;
	uint8_t msg[sizeof(struct mb_dp_hdr) + sizeof(struct mb_dp_dma_map) + 8] = { 0 };
	size_t n = len < sizeof msg ? len : sizeof msg;
	memcpy(msg, b, n);
	struct mb_dp_hdr *h = (void *)msg;
	if (kind & 4) {
		n = sizeof *h + sizeof(struct mb_dp_dma_map);
		h->size = (uint32_t)n, h->cmd = MB_DP_DMA_MAP;
	}
	for (int round = 0; round < 3; round++) {
		int fd = (kind & 3) == 0 ? dup(sealed) : (kind & 3) == 1 ? dup(loose)
			 : (kind & 3) == 2 ? dup(pipe_r) : -1;
		if (round == 2 && n >= sizeof *h + 24) { /* the address, a page on */
			uint64_t a;
			memcpy(&a, msg + sizeof *h + 16, sizeof a);
			a += 4096;
			memcpy(msg + sizeof *h + 16, &a, sizeof a);
		}
		ds_control_map(msg, (ssize_t)n, fd);
		if (round == 0 && mb_mem_count(m->mem)) {
			const struct mb_mem_region *w = mb_mem_region(m->mem, 0);
			struct mb_dp_unmap u = { sizeof u, 0, w->base, w->size };
			const char *why;
			ds_unmap((const uint8_t *)&u, sizeof u, &why);
		}
	}
	struct mb_mem_region w[4];
	size_t nw = mb_mem_count(m->mem);
	for (size_t i = 0; i < nw && i < 4; i++) {
		w[i] = *mb_mem_region(m->mem, i);
		(void)mb_mem_write(m->mem, w[i].base + (len ? b[len - 1] : 0) * 16 % w[i].size,
				   "dirty", 5);
	}
	ds_machine = keep, ds_dirty = kd, ds_dirty_bits = kb;
	mb_machine_destroy(m);
	for (size_t i = 0; i < nw && i < 4; i++)
		munmap(w[i].host, w[i].size); /* mapped by ds_dma_map, not the map */
}

static void dma_reply(unsigned kind, const uint8_t *b, size_t len)
{
	static struct mb_machine *m;
	if (!m) { /* a scratch machine whose RAM is remote: 64 KiB at 0 */
		struct mb_machine *keep = ds_machine;
		m = ds_machine = headless();
		struct mb_dp_mem r = { .base = 0, .size = 0x10000, .fd = dup(0),
				       .flags = MB_DP_MEM_REMOTE, .name = "r" };
		char msg[300];
		if (r.fd < 0 || ds_map_mem(&r, 0, 1 << 20, "r", msg, sizeof msg))
			abort();
		ds_machine = keep;
	}
	static uint8_t q[MB_DP_MAX_MSG];
	memcpy(q, b, len);
	if ((kind & 1) && len >= sizeof(struct mb_dp_hdr)) {
		uint16_t id = ds_dma_next_id();
		memcpy(q, &id, sizeof id); /* the header's id */
	}
	send(evt[1], q, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	ds_dma_timeout_ms = 0; /* what is queued, or nothing */
	uint8_t buf[64];
	uint64_t gpa = len >= 8 ? (b[len - 1] | (uint64_t)b[len - 2] << 8) : 0;
	if (kind & 2)
		(void)mb_mem_write(m->mem, gpa, b, len < sizeof buf ? len : sizeof buf);
	else
		(void)mb_mem_read(m->mem, gpa, buf, kind & 4 ? 4 : sizeof buf);
	uint8_t sink[MB_DP_MAX_MSG];
	while (recv(evt[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
		; /* a reply the device did not take */
}

static void apply(unsigned kind, const uint8_t *b, size_t len)
{
	static const uint32_t act[] = {
		MB_FAULT_RTC_JUMP, MB_FAULT_VIRTIO_NEEDS_RESET,
		MB_FAULT_VIRTIO_CONFIG_CHANGE, MB_FAULT_NET_LINK,
	};
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_fault_apply a;
	} q = { { .id = 1, .cmd = MB_DP_FAULT_APPLY, .size = sizeof q }, { 0 } };
	static uint8_t raw[MB_DP_MAX_MSG];
	if ((kind & 7) == 7) { /* any payload */
		struct mb_dp_hdr h = { .id = 1, .cmd = MB_DP_FAULT_APPLY,
				       .size = (uint32_t)(sizeof h + len) };
		memcpy(raw, &h, sizeof h);
		memcpy(raw + sizeof h, b, len);
		ds_control(raw, sizeof h + len);
		return;
	}
	memcpy(&q.a, b, len < sizeof q.a ? len : sizeof q.a);
	if ((kind & 7) < 4)
		q.a.action = act[kind & 3];
	/* a capacity a virtio-rng refuses and a disk might take, sometimes */
	if (kind & 4 && len > 20)
		q.a.capacity %= 1u << 20;
	ds_control((const uint8_t *)&q, sizeof q);
}

static void verdict(unsigned kind, const uint8_t *b, size_t len)
{
	struct {
		struct mb_dp_hdr h;
		struct mb_dp_fault_arm a;
	} arm = { { .id = 1, .cmd = MB_DP_FAULT_ARM, .size = sizeof arm },
		  { kind & 2 ? MB_DP_FAULT_VIRTIO : MB_DP_FAULT_MODEL, MB_FAULT_OP_ANY } };
	ds_control((const uint8_t *)&arm, sizeof arm); /* refused by some kinds */
	drain();
	struct mb_fault_site *s = ds_fault_site();
	if (!s)
		return;
	static uint8_t q[MB_DP_MAX_MSG];
	size_t n = len;
	memcpy(q, b, len);
	if (kind & 1) {
		struct mb_dp_hdr h = { .id = ds_dma_next_id(), .cmd = MB_DP_FAULT,
				       .size = sizeof h + sizeof(struct mb_dp_fault_verdict),
				       .flags = MB_DP_F_REPLY };
		memset(q, 0, h.size);
		memcpy(q, &h, sizeof h);
		memcpy(q + sizeof h, b, len < h.size - sizeof h ? len : h.size - sizeof h);
		n = h.size;
	}
	send(evt[1], q, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	ds_dma_timeout_ms = 0;
	struct mb_fault_blk_event e = { MB_FAULT_OP_READ, len, 1 };
	struct mb_fault_verdict v;
	mb_fault_blk_decide(s, &e, &v);
	/* what a model does with the fields it reads */
	static uint8_t data[4096];
	struct iovec iov[2] = { { data, 512 }, { data + 512, 3584 } };
	mb_fault_blk_corrupt(&v, iov, 2, len, sizeof data);
	mb_fault_net_corrupt(&v, data, 1514);
	uint8_t sink[MB_DP_MAX_MSG];
	while (recv(evt[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
		; /* the question (and a reply it did not take) */
}

static void relay(unsigned kind, const uint8_t *b, size_t len)
{
	struct mb_uart_config c = { .relay = true };
	struct mb_uart *u = mb_uart_new(&c);
	if (!u)
		abort();
	uint8_t v = kind & 1 ? 0xc1 : 0, r;
	mb_uart_ops.write(u, 2, &v, 1);
	v = kind & 2 ? 0x0b : 0;
	mb_uart_ops.write(u, 4, &v, 1);
	size_t n = 0;
	for (int round = 0; round < 64 && n < len; round++) {
		size_t took = kind & 4 ? mb_uart_relay_rx(u, b + n, 1)
				       : mb_uart_relay_rx(u, b + n, len - n);
		n += took;
		for (int i = 0; i < 17; i++) { /* LSR, then RBR, as a driver */
			mb_uart_ops.read(u, 5, &r, 1);
			mb_uart_ops.read(u, 0, &r, 1);
		}
		if (!took && !(kind & 2))
			break; /* not ready: nothing is ever taken */
	}
	mb_uart_free(u);
}

static void ring(const uint8_t *b, size_t len)
{
	static struct mb_dp_ring *r;
	if (!r) {
		if (!(r = aligned_alloc(4096, (sizeof *r + 4095) & ~(size_t)4095)))
			abort();
		ds_rings[0] = (struct ds_ring){ .r = r, .bell = -1, .go = true };
		pthread_mutex_init(&ds_rings[0].lock, NULL);
		ds_nring = 1;
	}
	memset(r, 0, sizeof *r);
	memcpy(r, b, len < sizeof *r ? len : sizeof *r);
	ds_rings[0].tail = len ? b[0] : 0;
	ds_ring_take(0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		setup();
		ready = true;
	}
	reset_all();
	choose(0);
	uint8_t reply[sizeof(struct mb_dp_hdr) + sizeof(struct mb_dp_reply)];
	static uint8_t msg[MB_DP_MAX_MSG];
	while (size >= 3) {
		unsigned kind = data[0], len = data[1] | data[2] << 8;
		data += 3, size -= 3;
		if (len > size)
			len = (unsigned)size;
		const uint8_t *b = data;
		data += len, size -= len;
		uint16_t cmd = 0;
		if (len >= sizeof(struct mb_dp_hdr))
			memcpy(&cmd, b + 2, sizeof cmd); /* the header's cmd */
		if (kind >= 0xd0 && kind < 0xd8) {
			relay(kind, b, len);
			continue;
		}
		if (kind >= 0xd8 && kind < 0xe0) {
			apply(kind, b, len);
			drain();
			continue;
		}
		if (kind >= 0xe0 && kind < 0xe8) {
			if (kind < 0xe4)
				verdict(kind, b, len);
			else
				dma_map((kind & 3) | (len & 1) << 2, b, len);
			drain();
			continue;
		}
		if (kind >= 0xe8 && kind < 0xf0) {
			ring(b, len);
			drain();
			continue;
		}
		if (kind >= 0xf0 && kind < 0xf8) {
			dma_reply(kind, b, len);
			drain();
			continue;
		}
		if (kind >= 0xf8 || (kind % 5 == 1 && cmd == MB_DP_DMA_UNMAP)) {
			window(b, len);
			drain();
			continue;
		}
		switch (kind % 5) {
		case 0:
			memcpy(msg, b, len);
			ds_access(msg, len, reply);
			break;
		case 1:
			memcpy(msg, b, len);
			/* the size field right, sometimes: past the first check */
			if (len >= sizeof(struct mb_dp_hdr) && (kind & 0x80))
				((struct mb_dp_hdr *)msg)->size = len;
			ds_control(msg, len);
			break;
		case 2: {
			struct {
				struct mb_dp_hdr h;
				struct mb_dp_access a;
			} q = { 0 };
			uint8_t f[14] = { 0 };
			memcpy(f, b, len < sizeof f ? len : sizeof f);
			q.h.size = sizeof q;
			q.h.cmd = f[0] & 1 ? MB_DP_REGION_WRITE : MB_DP_REGION_READ;
			q.a.region = f[1] % 9; /* one past the ranges too */
			q.a.offset = (uint64_t)(f[2] | f[3] << 8) % 0x2000;
			q.a.count = 1u << (f[4] % 4);
			memcpy(&q.a.data, f + 5, 8);
			ds_access(&q, sizeof q, reply);
			break;
		}
		case 3:
			if (dev[4].ram && len >= 4) {
				uint32_t off;
				memcpy(&off, b, 4);
				off %= RAM;
				size_t n = len - 4;
				if (n > RAM - off)
					n = RAM - off;
				memcpy(dev[4].ram + off, b + 4, n);
			}
			break;
		case 4:
			if (len)
				choose(b[0] % NDEV);
			break;
		}
		drain();
	}
	return 0;
}
