/*
 * The moonbox command: a Lua 5.4 interpreter with the moonbox module built
 * in, behaving like the stock `lua` for scripts, -e, -i and -v.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/attach.h"
#include "moonbox.h"
#include "moonbox/sandbox.h"

int luaopen_moonbox(lua_State *L);

static const char *progname = "moonbox";
/* For "to replay this run": the script and its arguments. */
static char **script_argv;
static int script_argc;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [options] [script [args]]\n"
		"Available options are:\n"
		"  -e stat   execute string 'stat'\n"
		"  -i        enter interactive mode after executing 'script'\n"
		"  -l mod    require library 'mod' into global 'mod'\n"
		"  -v        show version information\n"
		"  --info    describe this host's KVM (version, backend, capabilities)\n"
		"  --gdb SPEC  the first machine the script runs waits for gdb on SPEC\n"
		"            (unix:PATH or tcp:HOST:PORT) before its first instruction\n"
		"  --fault-seed N       the seed m:faults uses when the script gives none\n"
		"  --fault-replay TRACE m:faults replays TRACE (docs/faults.md)\n"
		"  --seccomp every machine confines its threads once it runs\n"
		"            (mb.machine { seccomp = true }, docs/sandbox.md)\n"
		"  --help    show this help\n"
		"  --        stop handling options\n"
		"  -         stop handling options and execute stdin\n"
		"or: %s attach PATH  a REPL on a running machine that called\n"
		"            m:listen { repl = \"unix:PATH\" }\n"
		"Scripts get `require \"moonbox\"` built in; see README.md.\n",
		progname, progname);
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (!msg) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)",
				      luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

static int report(lua_State *L, int status)
{
	if (status != LUA_OK) {
		fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
		fflush(stderr);
		lua_pop(L, 1);
	}
	return status;
}

static int docall(lua_State *L, int narg, int nres)
{
	int base = lua_gettop(L) - narg;
	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	int status = lua_pcall(L, narg, nres, base);
	lua_remove(L, base);
	return status;
}

static int dostring(lua_State *L, const char *s, const char *name)
{
	int status = luaL_loadbuffer(L, s, strlen(s), name);
	if (status == LUA_OK)
		status = docall(L, 0, 0);
	return report(L, status);
}

/* The global `arg`: script at 0, its arguments at 1.., options before. */
static void create_arg(lua_State *L, char **argv, int argc, int script)
{
	int narg = argc - (script + 1);
	lua_createtable(L, narg > 0 ? narg : 0, script + 1);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i - script);
	}
	lua_setglobal(L, "arg");
}

static int doscript(lua_State *L, const char *fname, char **argv, int n)
{
	if (strcmp(fname, "-") == 0)
		fname = NULL;
	int status = luaL_loadfile(L, fname);
	if (status == LUA_OK) {
		luaL_checkstack(L, n, "too many arguments to script");
		for (int i = 0; i < n; i++)
			lua_pushstring(L, argv[i]);
		status = docall(L, n, LUA_MULTRET);
	}
	return report(L, status);
}

static int incomplete(lua_State *L, int status)
{
	size_t lmsg;
	const char *msg = lua_tolstring(L, -1, &lmsg);
	const char *eof = "<eof>";
	size_t le = strlen(eof);
	if (status == LUA_ERRSYNTAX && lmsg >= le &&
	    strcmp(msg + lmsg - le, eof) == 0) {
		lua_pop(L, 1);
		return 1;
	}
	return 0;
}

/* Compile code as "return CODE" (an expression) or as a statement.
 * Returns the status; 1 with nothing pushed means "incomplete, read more". */
static int compile(lua_State *L, const char *code)
{
	const char *ret = lua_pushfstring(L, "return %s;", code);
	int status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
	lua_remove(L, -2);
	if (status == LUA_OK)
		return status;
	lua_pop(L, 1);
	status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
	if (status != LUA_OK && incomplete(L, status))
		return -1;
	return status;
}

/* ---- line editing: readline on a terminal, plain stdio otherwise ------ */

static lua_State *completing; /* the state tab completion looks into */
static char **cands;
static size_t ncands;

static void add_cand(const char *prefix, const char *name, const char *text)
{
	size_t lp = strlen(prefix), ln = strlen(name);
	if (strncmp(prefix, text, lp) || strncmp(name, text + lp, strlen(text + lp)))
		return;
	for (size_t i = 0; i < ncands; i++)
		if (!strncmp(cands[i] + lp, name, ln) && !cands[i][lp + ln])
			return; /* a method seen through two tables */
	char **c = realloc(cands, (ncands + 1) * sizeof *c);
	char *s = malloc(lp + ln + 1);
	if (!c || !s) {
		free(s);
		if (c)
			cands = c;
		return;
	}
	memcpy(s, prefix, lp);
	memcpy(s + lp, name, ln + 1);
	cands = c;
	cands[ncands++] = s;
}

/* The string keys of the table on top, into the candidates. */
static void add_keys(lua_State *L, const char *prefix, const char *text)
{
	if (!lua_istable(L, -1))
		return;
	lua_pushnil(L);
	while (lua_next(L, -2)) {
		if (lua_type(L, -2) == LUA_TSTRING)
			add_cand(prefix, lua_tostring(L, -2), text);
		lua_pop(L, 1);
	}
}

/* The strings of the list on top (a metatable's __fields), into the
 * candidates: the fields an __index function computes, which no table
 * walk can see. At most 256 of them. */
static void add_list(lua_State *L, const char *prefix, const char *text)
{
	if (!lua_istable(L, -1))
		return;
	for (lua_Integer i = 1; i <= 256; i++) {
		int t = lua_rawgeti(L, -1, i);
		if (t == LUA_TSTRING)
			add_cand(prefix, lua_tostring(L, -1), text);
		lua_pop(L, 1);
		if (t == LUA_TNIL)
			break;
	}
}

/* Fields and methods of the value on top: its own keys, then what its
 * metatable offers: the names in __fields (computed by an __index
 * function), a "methods" table (as vCPU handles have) and __index when it
 * is a table, a few levels deep. */
static void add_fields(lua_State *L, const char *prefix, const char *text)
{
	for (int depth = 0; depth < 4; depth++) {
		add_keys(L, prefix, text);
		if (!lua_getmetatable(L, -1))
			return;
		lua_getfield(L, -1, "__fields");
		add_list(L, prefix, text);
		lua_pop(L, 1);
		if (lua_getfield(L, -1, "methods") == LUA_TTABLE)
			add_keys(L, prefix, text);
		lua_pop(L, 1);
		lua_getfield(L, -1, "__index");
		if (!lua_istable(L, -1))
			return;
	}
}

/* Protected: walk "a.b:c" from _G up to the last separator, gather. */
static int gather(lua_State *L)
{
	const char *text = lua_tostring(L, 1);
	const char *sep = NULL;
	for (const char *p = text; *p; p++)
		if (*p == '.' || *p == ':')
			sep = p;
	lua_pushglobaltable(L);
	if (!sep) {
		add_fields(L, "", text);
		return 0;
	}
	const char *p = text;
	while (p < sep) {
		const char *q = p;
		while (q < sep && *q != '.' && *q != ':')
			q++;
		lua_pushlstring(L, p, (size_t)(q - p));
		int t = lua_type(L, -2);
		if (t != LUA_TTABLE && t != LUA_TUSERDATA)
			return 0;
		lua_gettable(L, -2);
		p = q + 1;
	}
	char prefix[512];
	size_t n = (size_t)(sep - text) + 1;
	if (n >= sizeof prefix)
		return 0;
	memcpy(prefix, text, n);
	prefix[n] = 0;
	add_fields(L, prefix, text);
	return 0;
}

static char *next_cand(const char *text, int state)
{
	static size_t i;
	(void)text;
	if (!state)
		i = 0;
	return i < ncands ? strdup(cands[i++]) : NULL;
}

static char **complete(const char *text, int start, int end)
{
	(void)start, (void)end;
	for (size_t i = 0; i < ncands; i++)
		free(cands[i]);
	ncands = 0;
	rl_attempted_completion_over = 1; /* never file names */
	rl_completion_append_character = '\0'; /* reset before each call */
	lua_State *L = completing;
	int top = lua_gettop(L);
	lua_pushcfunction(L, gather);
	lua_pushstring(L, text);
	lua_pcall(L, 1, 0, 0); /* an __index that errors: no candidates */
	lua_settop(L, top);
	return ncands ? rl_completion_matches(text, next_cand) : NULL;
}

static bool use_readline;
static char history_path[4096];

static void edit_init(lua_State *L)
{
	use_readline = isatty(0) && isatty(1);
	if (!use_readline)
		return;
	completing = L;
	rl_readline_name = "moonbox";
	rl_attempted_completion_function = complete;
	rl_basic_word_break_characters = " \t\n\"'<>=;+-*/%^~#&|{}()[],";
	rl_completion_append_character = '\0';
	const char *h = getenv("MOONBOX_HISTORY"), *home = getenv("HOME");
	if (h)
		snprintf(history_path, sizeof history_path, "%s", h);
	else if (home)
		snprintf(history_path, sizeof history_path, "%s/.moonbox_history",
			 home);
	if (history_path[0])
		read_history(history_path);
}

static void edit_done(void)
{
	if (use_readline && history_path[0]) {
		write_history(history_path);
		history_truncate_file(history_path, 1000);
	}
}

/* One line into buf (with its newline), false at end of input. */
static bool read_line(const char *prompt, char *buf, size_t size)
{
	if (!use_readline) {
		fputs(prompt, stdout);
		fflush(stdout);
		return fgets(buf, (int)size, stdin) != NULL;
	}
	char *l = readline(prompt);
	if (!l)
		return false;
	if (l[0])
		add_history(l);
	snprintf(buf, size, "%s\n", l);
	free(l);
	return true;
}

/* The REPL: expressions print their values (through __tostring),
 * statements run, an unfinished statement asks for more lines. */
static bool resume_asked(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, "moonbox.break_go");
	bool go = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return go;
}

static bool edit_ready;

static void repl_loop(lua_State *L, bool nested);

static void repl(lua_State *L)
{
	edit_init(L);
	edit_ready = true;
	repl_loop(L, false);
	edit_done();
}

/* registry "moonbox.repl", called by m:run at Ctrl-a c (lua/lmachine.c):
 * the REPL with the machine paused, until `continue`, m:resume() or EOF. */
static int break_repl(lua_State *L)
{
	lua_setglobal(L, "_paused"); /* the machine, for scripts without m */
	lua_pushnil(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.break_go");
	fprintf(stdout, "\r\nmoonbox: guest paused (Ctrl-a c); `continue` or "
		"m:resume() goes back to the console\n");
	fflush(stdout);
	if (!edit_ready) {
		edit_init(L);
		edit_ready = true;
	}
	lua_State *T = lua_newthread(L); /* a clean stack for the REPL */
	repl_loop(T, true);
	lua_pop(L, 1);
	lua_pushnil(L);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.break_go");
	return 0;
}

static void repl_loop(lua_State *L, bool nested)
{
	static char code[1 << 16];
	char line[4096];
	for (;;) {
		if (nested && resume_asked(L))
			return;
		size_t len = 0;
		int status;
		code[0] = 0;
		const char *prompt = "> ";
		for (;;) {
			if (!read_line(prompt, line, sizeof line)) {
				fputc('\n', stdout);
				return;
			}
			if (nested && len == 0 && strcmp(line, "continue\n") == 0)
				return;
			size_t n = strlen(line);
			if (len + n >= sizeof code)
				n = sizeof code - len - 1;
			memcpy(code + len, line, n);
			code[len += n] = 0;
			status = compile(L, code);
			if (status != -1)
				break;
			prompt = ">> ";
		}
		if (status == LUA_OK) {
			status = docall(L, 0, LUA_MULTRET);
			int n = lua_gettop(L);
			if (status == LUA_OK && n > 0) {
				lua_getglobal(L, "print");
				lua_insert(L, 1);
				if (lua_pcall(L, n, 0, 0) != LUA_OK)
					report(L, LUA_ERRRUN);
			}
		}
		report(L, status);
		lua_settop(L, 0);
	}
}

/* A failing run with a fault plan says how to run it again with the same
 * decisions: from its trace when it wrote one, else from its seed. */
static void replay_hint(lua_State *L)
{
	if (!script_argv)
		return;
	int top = lua_gettop(L);
	lua_getglobal(L, "package");
	if (lua_getfield(L, -1, "loaded") != LUA_TTABLE ||
	    lua_getfield(L, -1, "moonbox") != LUA_TTABLE ||
	    lua_getfield(L, -1, "fault") != LUA_TTABLE ||
	    lua_getfield(L, -1, "defaults") != LUA_TFUNCTION ||
	    lua_pcall(L, 0, 1, 0) != LUA_OK || !lua_istable(L, -1) ||
	    lua_getfield(L, -1, "last") != LUA_TTABLE) {
		lua_settop(L, top);
		return;
	}
	lua_getfield(L, -1, "trace");
	lua_getfield(L, -2, "replay");
	lua_getfield(L, -3, "seed");
	const char *trace = lua_tostring(L, -3), *replay = lua_tostring(L, -2);
	fprintf(stderr, "%s: to replay this run's faults: %s", progname, progname);
	if (trace || replay)
		fprintf(stderr, " --fault-replay %s", trace ? trace : replay);
	else
		fprintf(stderr, " --fault-seed %s", lua_tostring(L, -1));
	for (int i = 0; i < script_argc; i++)
		fprintf(stderr, " %s", script_argv[i]);
	fputc('\n', stderr);
	fflush(stderr);
	lua_settop(L, top);
}

/* os.exit(code): a non-zero code of a run with a plan gets the hint. */
static int os_exit(lua_State *L)
{
	int ok = lua_isboolean(L, 1) ? lua_toboolean(L, 1)
				     : luaL_optinteger(L, 1, 0) == 0;
	if (!ok)
		replay_hint(L);
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
	return lua_gettop(L);
}

int main(int argc, char **argv)
{
	int interactive = 0, version = 0, script = 0;
	const char *gdb = NULL;
	const char *fault_seed = NULL, *fault_replay = NULL;
	if (argv[0] && argv[0][0])
		progname = "moonbox";
	if (argc >= 2 && strcmp(argv[1], "attach") == 0) {
		if (argc != 3) {
			fprintf(stderr, "usage: moonbox attach PATH\n");
			return 2;
		}
		return mb_cli_attach(argv[2]);
	}
	/* First pass: find options and the script position. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || strcmp(a, "-") == 0) {
			script = i;
			break;
		}
		if (strcmp(a, "--") == 0) {
			script = i + 1 < argc ? i + 1 : 0;
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--info") == 0)
			return mb_kvm_info(stdout) ? 1 : 0;
		if (strcmp(a, "-i") == 0)
			interactive = version = 1;
		else if (strcmp(a, "-v") == 0)
			version = 1;
		else if (strcmp(a, "--seccomp") == 0)
			mb_seccomp_default(1);
		else if (strcmp(a, "--gdb") == 0) {
			if (++i >= argc) {
				fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
				usage(stderr);
				return 1;
			}
			gdb = argv[i];
		} else if (strcmp(a, "--fault-seed") == 0 ||
			 strcmp(a, "--fault-replay") == 0) {
			if (++i >= argc) {
				fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
				return 1;
			}
			char *end;
			if (a[8] == 's' && (strtoull(argv[i], &end, 0), *end || !*argv[i])) {
				fprintf(stderr, "%s: --fault-seed: \"%s\" is not a number\n",
					progname, argv[i]);
				return 1;
			}
			*(a[8] == 's' ? &fault_seed : &fault_replay) = argv[i];
		} else if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
			if (++i >= argc) {
				fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
				usage(stderr);
				return 1;
			}
		} else {
			fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
			usage(stderr);
			return 1;
		}
	}
	lua_State *L = luaL_newstate();
	if (!L) {
		fprintf(stderr, "%s: cannot create Lua state: not enough memory\n",
			progname);
		return 1;
	}
	luaL_openlibs(L);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, luaopen_moonbox);
	lua_setfield(L, -2, "moonbox");
	lua_pop(L, 1);
	lua_pushcfunction(L, break_repl);
	lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.repl");
	if (gdb) { /* lua/lgdb.c takes it at the first run (MBL_GDB_SPEC) */
		lua_pushstring(L, gdb);
		lua_setfield(L, LUA_REGISTRYINDEX, "moonbox.gdb");
	}
	create_arg(L, argv, argc, script);
	if (fault_seed || fault_replay) {
		lua_getglobal(L, "require");
		lua_pushstring(L, "moonbox");
		lua_call(L, 1, 1);
		lua_getfield(L, -1, "fault");
		lua_getfield(L, -1, "defaults");
		lua_createtable(L, 0, 2);
		if (fault_seed) {
			lua_pushinteger(L, (lua_Integer)strtoull(fault_seed, NULL, 0));
			lua_setfield(L, -2, "seed");
		}
		if (fault_replay) {
			lua_pushstring(L, fault_replay);
			lua_setfield(L, -2, "replay");
		}
		if (report(L, docall(L, 1, 0)) != LUA_OK) {
			lua_close(L);
			return 1;
		}
		lua_pop(L, 2);
	}
	if (script) {
		script_argv = argv + script, script_argc = argc - script;
		lua_getglobal(L, "os");
		lua_getfield(L, -1, "exit");
		lua_pushcclosure(L, os_exit, 1);
		lua_setfield(L, -2, "exit");
		lua_pop(L, 1);
	}
	if (version)
		printf("moonbox %s (%s)\n", MB_VERSION, LUA_RELEASE);
	int status = LUA_OK;
	int last = script ? script : argc;
	for (int i = 1; i < last && status == LUA_OK; i++) {
		if (strcmp(argv[i], "--gdb") == 0 ||
		    strcmp(argv[i], "--fault-seed") == 0 ||
		    strcmp(argv[i], "--fault-replay") == 0) {
			i++; /* taken in the first pass, with its argument */
		} else if (strcmp(argv[i], "-e") == 0) {
			status = dostring(L, argv[++i], "=(command line)");
		} else if (strcmp(argv[i], "-l") == 0) {
			const char *mod = argv[++i];
			lua_getglobal(L, "require");
			lua_pushstring(L, mod);
			status = report(L, docall(L, 1, 1));
			if (status == LUA_OK)
				lua_setglobal(L, mod);
		}
	}
	if (status == LUA_OK && script) {
		status = doscript(L, argv[script], argv + script + 1,
				  argc - script - 1);
		if (status != LUA_OK)
			replay_hint(L);
	}
	if (status == LUA_OK) {
		int ran_something = script || argc > 1;
		if (interactive || (!ran_something && isatty(0)))
			repl(L);
		else if (!ran_something)
			status = doscript(L, "-", NULL, 0);
	}
	lua_close(L);
	return status == LUA_OK ? 0 : 1;
}
