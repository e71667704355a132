/*
 * The wire between the VMM (core/launch.c) and moonbox-launcher
 * (cli/moonbox-launcher.c): one SOCK_SEQPACKET message per request, one
 * per reply, so a message is never split or merged.
 *
 * Request: struct launch_req, then (for LAUNCH_SPAWN) argc NUL-terminated
 * strings, the file descriptors as one SCM_RIGHTS control message.
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
};

struct launch_rep {
	int32_t err;    /* 0 or -errno */
	int32_t pid;    /* spawn: the child */
	int32_t status; /* status: a wait(2) status */
	int32_t pidfd;  /* spawn: 1 when a pidfd comes with the reply */
};

#endif
