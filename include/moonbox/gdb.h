/*
 * A gdb remote stub for a machine (core/gdb_server.c, protocol in
 * core/gdb_proto.c), built on the debug engine (moonbox/debug.h): its
 * breakpoints live in the engine's table with owner MB_GDB_OWNER, and while
 * gdb holds the machine stopped, mb_machine_run() keeps waiting: the
 * caller sees the run go on once gdb continues or detaches.
 * See docs/gdb.md.
 */
#ifndef MOONBOX_GDB_H
#define MOONBOX_GDB_H

#include "moonbox.h"

#define MB_GDB_OWNER 1 /* mb_bp_config.owner of gdb's breakpoints */

enum mb_gdb_stop {
	MB_GDB_STOP_ENTRY, /* the next run waits for gdb before any instruction */
	MB_GDB_STOP_NOW,   /* the same: the machine is held at its next run */
	MB_GDB_STOP_NONE,  /* runs freely; stopped when gdb connects */
};

enum mb_gdb_detach {
	MB_GDB_DETACH_RESUME, /* the run goes on */
	MB_GDB_DETACH_PAUSE,  /* stays held until the next gdb continues */
	MB_GDB_DETACH_EXIT,   /* the run ends (reason "exit", code 0) */
};

struct mb_gdb_config {
	const char *listen; /* "unix:PATH" or "tcp:HOST:PORT" (HOST may be empty: 127.0.0.1) */
	enum mb_gdb_stop stop;
	enum mb_gdb_detach on_detach;
	/* `monitor LINE`: output as a malloc'd string (freed by the stub), or
	 * NULL. Runs on the stub's thread while the machine is held, with
	 * the waiter of the run asleep (mb_machine_call_main). NULL: no
	 * monitor. */
	char *(*monitor)(void *opaque, const char *line);
	void *opaque;
};

struct mb_gdb;

/* Listen and serve on a thread of its own; freed with the machine, or by
 * mb_gdb_close(). */
int mb_gdb_start(struct mb_machine *m, const struct mb_gdb_config *c,
		 struct mb_gdb **out);
void mb_gdb_close(struct mb_gdb *g);
/* Where it listens ("unix:PATH", "tcp:127.0.0.1:PORT" with the port chosen
 * when 0 was asked). */
const char *mb_gdb_address(const struct mb_gdb *g);
/* Whether gdb holds the machine right now (a run is waiting on it). */
bool mb_gdb_holding(struct mb_gdb *g);

#endif
