/* libFuzzer: the gdb remote protocol receiver and packet parser
 * (core/gdb_proto.c), the stub's only door to the network. Any byte
 * stream must be taken without a crash; every packet it yields must parse
 * to something; and what the framer writes, the receiver reads back
 * unchanged (escapes of # $ } * included). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/gdb_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mb_gdb_rx rx, back;
static char framed[2 * MB_GDB_PKT_MAX + 8];

/* frame p and receive it again: the same bytes, one packet */
static void roundtrip(const uint8_t *p, size_t n)
{
	size_t f = mb_gdb_frame(p, n, framed, sizeof framed);
	if (!f) {
		if (n <= MB_GDB_PKT_MAX / 2)
			abort(); /* a packet of ours always fits */
		return;
	}
	mb_gdb_rx_init(&back);
	int packets = 0;
	for (size_t i = 0; i < f; i++) {
		enum mb_gdb_ev e = mb_gdb_rx_byte(&back, (uint8_t)framed[i]);
		if (e == MB_GDB_EV_BAD)
			abort();
		if (e == MB_GDB_EV_PACKET) {
			packets++;
			if (i != f - 1 || back.len != n || memcmp(back.buf, p, n))
				abort();
		}
	}
	if (packets != 1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mb_gdb_cmd cmd;
	static uint8_t copy[MB_GDB_PKT_MAX + 1];
	mb_gdb_rx_init(&rx);
	for (size_t i = 0; i < size; i++) {
		if (mb_gdb_rx_byte(&rx, data[i]) != MB_GDB_EV_PACKET)
			continue;
		if (rx.len > MB_GDB_PKT_MAX || rx.buf[rx.len] != 0)
			abort();
		memcpy(copy, rx.buf, rx.len + 1);
		mb_gdb_parse(rx.buf, rx.len, &cmd);
		if (cmd.ndata > rx.len || cmd.nact > MB_GDB_VCONT_MAX ||
		    (cmd.data && (cmd.data < rx.buf || cmd.data + cmd.ndata > rx.buf + rx.len)))
			abort(); /* what the parser hands out stays in the packet */
		roundtrip(copy, rx.len);
	}
	/* and the raw input as a payload */
	roundtrip(data, size > MB_GDB_PKT_MAX / 2 ? MB_GDB_PKT_MAX / 2 : size);
	return 0;
}
