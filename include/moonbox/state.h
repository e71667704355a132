/*
 * Device state descriptions: a device lists its state fields once, as an
 * X-macro, and gets from that one list the C struct, a descriptor table
 * (what dev:state() and dev:set_state() walk in Lua, and what snapshots
 * serialise), and nothing to keep in sync by hand.
 *
 *   #define MB_FOO_STATE(X, S)              \
 *           X(S, u8, ctrl)                  \
 *           X(S, bytes, fifo, 16)           \
 *           X(S, arr, chan, 3, mb_foo_chan) \
 *           X(S, ro_u64, irqs)
 *   MB_STATE_STRUCT(mb_foo_state, MB_FOO_STATE);     (in the header)
 *   MB_STATE_DESC(mb_foo_state, MB_FOO_STATE, 1);    (in the .c file)
 *
 * gives `struct mb_foo_state { uint8_t ctrl; uint8_t fifo[16];
 * uint32_t fifo_len; struct mb_foo_chan chan[3]; uint64_t irqs; }` and
 * `const struct mb_state_desc mb_foo_state_desc` (version 1), where
 * mb_foo_chan is itself such a state (MB_STATE_STRUCT + MB_STATE_DESC).
 *
 * Field kinds: u8 u16 u32 u64 i64 bool (settable); ro_u8 ... ro_bool
 * (read-only: counters and values derived from the rest; set_state ignores
 * them); bytes NAME CAP (a byte string of at most CAP bytes, its length in
 * NAME_len); arr NAME COUNT TYPE (COUNT nested TYPE states, a list in Lua);
 * sub NAME TYPE (one nested TYPE state, a table in Lua: the PIC's master).
 * Times are stored relative to now (nanoseconds remaining), never as host
 * clock values, so a state loads into a machine started at another time.
 */
#ifndef MOONBOX_STATE_H
#define MOONBOX_STATE_H

#include <stddef.h>
#include <stdint.h>

enum mb_ftype {
	MB_FT_U8, MB_FT_U16, MB_FT_U32, MB_FT_U64, MB_FT_I64, MB_FT_BOOL,
	MB_FT_BYTES, MB_FT_ARRAY, MB_FT_SUB,
};

enum { MB_FF_RO = 1 }; /* read-only: reported, never loaded */

struct mb_state_desc;

struct mb_field {
	const char *name;
	uint8_t type, flags;
	size_t off;
	size_t n;   /* BYTES: capacity; ARRAY: element count */
	size_t aux; /* BYTES: offset of the uint32_t length; ARRAY: element size */
	const struct mb_state_desc *sub; /* ARRAY, SUB: the nested description */
};

struct mb_state_desc {
	const char *name;  /* the struct's name */
	unsigned version;  /* bumped whenever the field list changes */
	size_t size;       /* sizeof the struct */
	const struct mb_field *fields;
	size_t nfields;
};

/* Largest value an integer field may hold (U64/I64: all). */
uint64_t mb_field_max(const struct mb_field *f);
/* A field by name, or NULL. */
const struct mb_field *mb_state_field(const struct mb_state_desc *d,
				      const char *name);

/* ---- the X-macro machinery ------------------------------------------- */

#define MB_ST_MEMBER(S, t, ...) MB_ST_M_##t(__VA_ARGS__)
#define MB_ST_M_u8(n) uint8_t n;
#define MB_ST_M_u16(n) uint16_t n;
#define MB_ST_M_u32(n) uint32_t n;
#define MB_ST_M_u64(n) uint64_t n;
#define MB_ST_M_i64(n) int64_t n;
#define MB_ST_M_bool(n) _Bool n;
#define MB_ST_M_ro_u8(n) uint8_t n;
#define MB_ST_M_ro_u16(n) uint16_t n;
#define MB_ST_M_ro_u32(n) uint32_t n;
#define MB_ST_M_ro_u64(n) uint64_t n;
#define MB_ST_M_ro_i64(n) int64_t n;
#define MB_ST_M_ro_bool(n) _Bool n;
#define MB_ST_M_bytes(n, cap) uint8_t n[cap]; uint32_t n##_len;
#define MB_ST_M_arr(n, cnt, T) struct T n[cnt];
#define MB_ST_M_sub(n, T) struct T n;

#define MB_ST_SCALAR(S, n, ty, fl) { #n, ty, fl, offsetof(S, n), 1, 0, NULL },
#define MB_ST_FIELD(S, t, ...) MB_ST_F_##t(S, __VA_ARGS__)
#define MB_ST_F_u8(S, n) MB_ST_SCALAR(S, n, MB_FT_U8, 0)
#define MB_ST_F_u16(S, n) MB_ST_SCALAR(S, n, MB_FT_U16, 0)
#define MB_ST_F_u32(S, n) MB_ST_SCALAR(S, n, MB_FT_U32, 0)
#define MB_ST_F_u64(S, n) MB_ST_SCALAR(S, n, MB_FT_U64, 0)
#define MB_ST_F_i64(S, n) MB_ST_SCALAR(S, n, MB_FT_I64, 0)
#define MB_ST_F_bool(S, n) MB_ST_SCALAR(S, n, MB_FT_BOOL, 0)
#define MB_ST_F_ro_u8(S, n) MB_ST_SCALAR(S, n, MB_FT_U8, MB_FF_RO)
#define MB_ST_F_ro_u16(S, n) MB_ST_SCALAR(S, n, MB_FT_U16, MB_FF_RO)
#define MB_ST_F_ro_u32(S, n) MB_ST_SCALAR(S, n, MB_FT_U32, MB_FF_RO)
#define MB_ST_F_ro_u64(S, n) MB_ST_SCALAR(S, n, MB_FT_U64, MB_FF_RO)
#define MB_ST_F_ro_i64(S, n) MB_ST_SCALAR(S, n, MB_FT_I64, MB_FF_RO)
#define MB_ST_F_ro_bool(S, n) MB_ST_SCALAR(S, n, MB_FT_BOOL, MB_FF_RO)
#define MB_ST_F_bytes(S, n, cap) \
	{ #n, MB_FT_BYTES, 0, offsetof(S, n), cap, offsetof(S, n##_len), NULL },
#define MB_ST_F_arr(S, n, cnt, T) \
	{ #n, MB_FT_ARRAY, 0, offsetof(S, n), cnt, sizeof(struct T), &T##_desc },
#define MB_ST_F_sub(S, n, T) \
	{ #n, MB_FT_SUB, 0, offsetof(S, n), 1, sizeof(struct T), &T##_desc },

/* The struct: `struct T { fields }`. */
#define MB_STATE_STRUCT(T, LIST) \
	struct T { LIST(MB_ST_MEMBER, struct T) }; \
	extern const struct mb_state_desc T##_desc

/* The description, `const struct mb_state_desc T##_desc`, at version VER. */
#define MB_STATE_DESC(T, LIST, VER) \
	static const struct mb_field T##_fields[] = { LIST(MB_ST_FIELD, struct T) }; \
	const struct mb_state_desc T##_desc = { \
		#T, VER, sizeof(struct T), T##_fields, \
		sizeof T##_fields / sizeof T##_fields[0] }

#endif
