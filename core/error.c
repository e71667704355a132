/* Error reporting: negative errno-style codes plus a per-thread message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "moonbox.h"

static _Thread_local char msg[1024];

const char *mb_errmsg(void)
{
	return msg;
}

int mb_seterr(int code, const char *fmt, ...)
{
	/* Formatted apart first: callers may pass mb_errmsg() itself, to add
	 * context to an error below them ("seccomp: ...: %s"), and vsnprintf
	 * into the buffer it reads from garbled the message. */
	char tmp[sizeof msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	memcpy(msg, tmp, sizeof msg);
	return code;
}

const char *mb_strerror(int code)
{
	return strerror(code < 0 ? -code : code);
}

const char *mb_stop_name(enum mb_stop s)
{
	static const char *const names[] = {
		[MB_STOP_NONE] = "none",         [MB_STOP_EXIT] = "exit",
		[MB_STOP_SHUTDOWN] = "shutdown", [MB_STOP_RESET] = "reset",
		[MB_STOP_HALT] = "halt",         [MB_STOP_TIMEOUT] = "timeout",
		[MB_STOP_ERROR] = "error",       [MB_STOP_BREAKPOINT] = "breakpoint",
		[MB_STOP_WATCHPOINT] = "watchpoint",
		[MB_STOP_DIVERGENCE] = "divergence", [MB_STOP_DEBUGGER] = "debugger",
		[MB_STOP_CATCH] = "catch", [MB_STOP_CONSOLE] = "console",
		[MB_STOP_IO] = "io",
	};
	return (unsigned)s < sizeof names / sizeof *names ? names[s] : "?";
}
