/* Bus lookup cost: mb_bus_read() dispatch with 1, 16, 256 and 4096 ranges,
 * on random and on repeated addresses, against a linear scan over the same
 * ranges doing the same dispatch. Prints one line per case:
 *   bus ranges=N pattern=random|repeat moonbox_ns=X linear_ns=Y */
#include <stdbool.h>

#include "moonbox.h"
#include "bench.h"

#define NADDR (1u << 16) /* addresses cycled through (power of two) */
#define GAP 0x1000ull    /* ranges at i*GAP, 0x100 bytes each */

static volatile uint64_t sink;

static void dev_read(void *dev, uint64_t off, void *data, unsigned size)
{
	*(uint32_t *)data = (uint32_t)off;
}
static const struct mb_io_ops ops = { dev_read, NULL };

/* The reference: an unsorted array scanned front to back. */
struct lin {
	size_t n;
	uint64_t *base, *last;
};

static bool lin_read(const struct lin *l, uint64_t addr, void *data, unsigned size)
{
	for (size_t i = 0; i < l->n; i++)
		if (addr >= l->base[i] && addr + size - 1 <= l->last[i]) {
			ops.read(NULL, addr - l->base[i], data, size);
			return true;
		}
	memset(data, 0xff, size);
	return false;
}

/* ns per access over iters accesses through addrs[]: best of 5. */
static double run1(struct mb_bus *bus, const struct lin *l, const uint64_t *addrs,
		  uint64_t iters)
{
	uint32_t v = 0, acc = 0;
	uint64_t t = bench_ns(CLOCK_MONOTONIC);
	for (uint64_t i = 0; i < iters; i++) {
		if (bus)
			mb_bus_read(bus, addrs[i & (NADDR - 1)], &v, 4);
		else
			lin_read(l, addrs[i & (NADDR - 1)], &v, 4);
		acc += v;
	}
	t = bench_ns(CLOCK_MONOTONIC) - t;
	sink += acc;
	return (double)t / (double)iters;
}

static double run(struct mb_bus *bus, const struct lin *l, const uint64_t *addrs,
		  uint64_t iters)
{
	double best = 1e30;
	for (int i = 0; i < 5; i++) {
		double ns = run1(bus, l, addrs, iters);
		best = ns < best ? ns : best;
	}
	return best;
}

int main(void)
{
	static const unsigned counts[] = { 1, 16, 256, 4096 };
	static uint64_t rnd[NADDR], rep[NADDR];
	srand(1);
	for (unsigned c = 0; c < 4; c++) {
		unsigned n = counts[c];
		struct mb_bus *bus = mb_bus_new("mmio", 0);
		struct lin l = { n, malloc(n * 8), malloc(n * 8) };
		for (unsigned i = 0; i < n; i++) {
			/* register in a scrambled order; the linear table keeps it */
			unsigned k = (i * 2654435761u) % n;
			k = n == 1 ? 0 : k;
			l.base[i] = 0x10000000 + k * GAP;
			l.last[i] = l.base[i] + 0xff;
			if (mb_bus_register(bus, l.base[i], 0x100, &ops, NULL, "dev")) {
				fprintf(stderr, "bus: %s\n", mb_errmsg());
				return 1;
			}
		}
		for (unsigned i = 0; i < NADDR; i++) {
			rnd[i] = 0x10000000 + (uint64_t)(rand() % n) * GAP + (rand() & 0xfc);
			rep[i] = 0x10000000 + (n / 2) * GAP + 0x10;
		}
		for (int p = 0; p < 2; p++) {
			const uint64_t *a = p ? rep : rnd;
			/* ~20 ms each: the linear scan gets fewer iterations */
			double mb = run(bus, NULL, a, 1000000);
			double lin = run(NULL, &l, a, 1000000 / (n / 8 + 1));
			printf("bus ranges=%u pattern=%s moonbox_ns=%.2f linear_ns=%.2f\n",
			       n, p ? "repeat" : "random", mb, lin);
		}
		mb_bus_free(bus);
		free(l.base), free(l.last);
	}
	return 0;
}
