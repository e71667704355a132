/*
 * The wire between the VMM (core/launch.c) and moonbox-launcher
 * (cli/moonbox-launcher.c): one SOCK_SEQPACKET message per request, one
 * per reply, so a message is never split or merged.
 *
 * Request: struct launch_req, then (for LAUNCH_SPAWN) argc NUL-terminated
 * strings, then (MB_LAUNCH_CONFINE) nro read-only and nrw read-write
 * paths, the file descriptors as one SCM_RIGHTS control message.
 * Reply: struct launch_rep; for a spawn the child's pidfd as SCM_RIGHTS.
 */
#ifndef MB_CORE_LAUNCH_H
#define MB_CORE_LAUNCH_H

#include <stdint.h>

#include "moonbox/sandbox.h"

#define LAUNCH_MAGIC 0x6d626c31u /* "mbl1" */
#define LAUNCH_MAX_ARGV 8192     /* bytes of argv strings in one request */
#define LAUNCH_MAX_CHILDREN 256  /* live or unreported children */
#define LAUNCH_SOCK_FD 3         /* the launcher's end of the socketpair */

enum launch_op {
	LAUNCH_SPAWN = 1,  /* start argv with the fds */
	LAUNCH_STATUS = 2, /* how child pid ended (reaps what has ended) */
};

struct launch_req {
	uint32_t magic, op;
	uint32_t nfds, argc; /* spawn */
	int32_t pid;         /* status */
	uint32_t len;        /* bytes of argv strings that follow */
	uint32_t flags;      /* spawn: MB_LAUNCH_* */
	uint32_t nro, nrw;   /* spawn: paths after argv (MB_LAUNCH_CONFINE) */
};

/* What a confined child got (launch_rep.applied) */
enum { LAUNCH_NNP = 1, LAUNCH_RLIMITS = 2, LAUNCH_PIDNS = 4, LAUNCH_NETNS = 8 };

struct launch_rep {
	int32_t err;    /* 0 or -errno */
	int32_t pid;    /* spawn: the child */
	int32_t status; /* status: a wait(2) status */
	int32_t pidfd;  /* spawn: 1 when a pidfd comes with the reply */
	uint32_t applied;     /* spawn, MB_LAUNCH_CONFINE: LAUNCH_NNP... */
	int32_t landlock_abi; /* ... 0: no Landlock */
	char refused[200];    /* ... what the host refused, and why */
};

#endif
