/*
 * Classic-BPF seccomp allowlists (core/seccomp.c), shared by the device
 * sandbox (core/sandbox.c) and the VMM's thread filters. A filter checks
 * the architecture (x86-64, x32 numbers refused), then each rule: a
 * syscall number and what its arguments must be; anything else gets the
 * filter's deny action.
 */
#ifndef MB_CORE_SECCOMP_H
#define MB_CORE_SECCOMP_H

#include <stdint.h>

enum sc_how {
	SC_ALLOW,
	SC_ERRNO,   /* return -v[0] (clone3: ENOSYS, so glibc uses clone) */
	SC_ARG_IN,  /* args[arg] (low 32 bits) is one of v[0..nv-1] */
	SC_ARG_SET, /* every bit of v[0] is set in args[arg] */
	SC_ARG_CLEAR, /* no bit of v[0] is set in args[arg] */
	SC_ARG_MASK, /* (args[arg] & v[2i]) == v[2i+1] for some pair i */
};

struct sc_rule {
	int nr;
	uint8_t how, arg, nv;
	uint32_t v[8];
};

/* What a sanitizer's runtime calls on its own from threads (ASan asks the
 * affinity mask at pthread_create): allowed only in those builds (make
 * test-asan). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MB_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MB_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MB_ASAN 1
#endif
#endif
#ifdef MB_SANITIZER
#define SANITIZER_RULES , { .nr = SYS_sched_getaffinity, .how = SC_ALLOW }
#else
#define SANITIZER_RULES
#endif

#define SC_MAX_RULES 160
#define SC_MAX_INSNS 1024

/* Build and install on the calling thread (no TSYNC), after setting
 * no_new_privs. deny: SECCOMP_RET_KILL_PROCESS or SECCOMP_RET_TRAP.
 * extra: more numbers allowed outright. 0 or -errno (message set). */
int mb_sc_install(const struct sc_rule *r, unsigned n, const int *extra,
		  unsigned nextra, uint32_t deny);
/* How many syscall numbers a rule list lets through (for docs, --info). */
unsigned mb_sc_count(const struct sc_rule *r, unsigned n);

#endif
