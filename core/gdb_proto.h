/*
 * The gdb remote serial protocol as bytes: framing, checksums, escapes and
 * run-length encoding, hex, and the arguments of the packets the stub
 * serves. No I/O and no machine here: everything arrives as a buffer from
 * a peer we do not trust (fuzz/fuzz_gdb.c feeds it at random).
 * Reference: gdb's manual, "Remote Protocol" (Overview, Packets).
 */
#ifndef MB_GDB_PROTO_H
#define MB_GDB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest packet we take and announce (qSupported PacketSize): a whole
 * `G` of the x86-64 layout (600 bytes as hex) fits with room to spare. */
#define MB_GDB_PKT_MAX 4096

enum mb_gdb_ev {
	MB_GDB_EV_NONE,   /* byte taken, nothing complete yet */
	MB_GDB_EV_PACKET, /* a packet with a good checksum: rx->buf, rx->len */
	MB_GDB_EV_BAD,    /* a packet with a bad checksum or too long: NAK it */
	MB_GDB_EV_INTR,   /* 0x03 outside a packet: Ctrl-C */
	MB_GDB_EV_ACK,    /* '+' */
	MB_GDB_EV_NAK,    /* '-': send the last packet again */
};

struct mb_gdb_rx {
	int st;
	bool overflow;
	uint8_t sum, ck;
	size_t len;
	/* the decoded payload (escapes and runs expanded), NUL-terminated */
	uint8_t buf[MB_GDB_PKT_MAX + 1];
};

void mb_gdb_rx_init(struct mb_gdb_rx *rx);
enum mb_gdb_ev mb_gdb_rx_byte(struct mb_gdb_rx *rx, uint8_t c);

/* "$payload#cs" into out (escaping # $ } *); the length, or 0 when it does
 * not fit in cap. */
size_t mb_gdb_frame(const void *payload, size_t n, char *out, size_t cap);

/* Hex: encode n bytes as 2n characters; decode 2n characters into n
 * bytes (false on a non-hex digit). */
void mb_gdb_hex(const void *in, size_t n, char *out);
bool mb_gdb_unhex(const char *in, size_t n, void *out);
/* A hex number at *p (at most 16 digits, at least one), moved past it. */
bool mb_gdb_num(const char **p, const char *end, uint64_t *v);
/* Binary escapes ('}' x ^ 0x20) already undone by the receiver, so X data
 * arrives raw. */

/* A thread id: -1 (all), 0 (any) or N (vCPU N-1). */
enum mb_gdb_cmd_kind {
	MB_GDB_UNKNOWN,     /* reply empty */
	MB_GDB_MALFORMED,   /* reply E01 */
	MB_GDB_Q_SUPPORTED, MB_GDB_Q_NOACK, MB_GDB_Q_XFER, MB_GDB_Q_RCMD,
	MB_GDB_Q_FTHREAD, MB_GDB_Q_STHREAD, MB_GDB_Q_C, MB_GDB_Q_ATTACHED,
	MB_GDB_Q_SYMBOL,
	MB_GDB_STATUS,      /* ? */
	MB_GDB_READ_REGS,   /* g */
	MB_GDB_WRITE_REGS,  /* G data */
	MB_GDB_READ_REG,    /* p n */
	MB_GDB_WRITE_REG,   /* P n=v */
	MB_GDB_READ_MEM,    /* m addr,len */
	MB_GDB_WRITE_MEM,   /* M addr,len:hex  X addr,len:bin (data decoded) */
	MB_GDB_SET_THREAD,  /* H op tid */
	MB_GDB_ALIVE,       /* T tid */
	MB_GDB_CONT,        /* c [addr]  C sig[;addr] */
	MB_GDB_STEP,        /* s [addr]  S sig[;addr] */
	MB_GDB_VCONT_Q,     /* vCont? */
	MB_GDB_VCONT,       /* vCont;action[:tid]... */
	MB_GDB_BREAK_INS,   /* Z type,addr,kind */
	MB_GDB_BREAK_DEL,   /* z type,addr,kind */
	MB_GDB_DETACH,      /* D */
	MB_GDB_KILL,        /* k, vKill */
	MB_GDB_MUST_REPLY_EMPTY,
};

#define MB_GDB_VCONT_MAX 64
struct mb_gdb_action {
	char op;     /* 'c' or 's' (C/S: their signal is ignored) */
	int64_t tid; /* -1: every thread without an action of its own */
};

struct mb_gdb_cmd {
	enum mb_gdb_cmd_kind kind;
	char op;                 /* H: 'g' or 'c' */
	int64_t tid;             /* H, T */
	uint64_t addr, len, reg, val;
	bool has_addr;           /* c, s with an address */
	unsigned type;           /* Z/z: 0-4 */
	const uint8_t *data;     /* G, P, M, X: the bytes (decoded in place) */
	size_t ndata;
	const char *annex;       /* qXfer: "features:read:target.xml" ... */
	char object[32], xannex[64];
	unsigned nact;
	struct mb_gdb_action act[MB_GDB_VCONT_MAX];
};

/* Parse the packet in buf[0..len) (NUL-terminated; hex data is decoded in
 * place, so buf is changed). */
void mb_gdb_parse(uint8_t *buf, size_t len, struct mb_gdb_cmd *c);

#endif
