/* Shared by the Lua binding files: option checking, the machine and
 * device handles. Nothing outside lua/ includes Lua headers. */
#ifndef LMOONBOX_H
#define LMOONBOX_H

#include <lauxlib.h>
#include <lua.h>

#include "moonbox.h"

#define MBL_MACHINE "moonbox.machine"

/* A machine handle. L is the Lua thread currently blocked in run/wait/
 * pause: Lua devices run their callbacks on it. */
struct mbl_machine {
	struct mb_machine *m;
	lua_State *L;
	int devices; /* registry ref: table of attached device handles */
};

struct mbl_dev;

/* A device type: one class (metatable "moonbox.NAME") per type. The
 * constructor checks every option and parses them once into a C config
 * (cfg_size bytes, parse); m:add() calls attach, which wires the device
 * with its C attach function and sets d->dev. */
struct mbl_class {
	const char *name;
	const char *const *keys;  /* allowed options, NULL-terminated */
	int (*attach)(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d);
	lua_CFunction state; /* NULL: the generic state() of d->dev */
	lua_CFunction set_state; /* NULL: the generic set_state() */
	const luaL_Reg *methods;  /* extra methods, or NULL */
	size_t cfg_size;          /* bytes of parsed options at d->cfg */
	/* Check the option table at idx into cfg (raise on any bad value).
	 * Strings may point into the table: the handle keeps it alive. */
	void (*parse)(lua_State *L, int idx, void *cfg);
	/* The machine makes it (mbl_dev_adopt), never m:add: snapshot files
	 * do not record it, the machine they rebuild makes it again. */
	bool machine_made;
};

struct mbl_dev {
	const struct mbl_class *cls;
	struct mbl_machine *mm; /* NULL until m:add() */
	struct mb_device *dev;  /* the machine's device, once added */
	void *impl;             /* the C model (mb_device_impl(dev)) */
	void *cfg;              /* the parsed options */
	/* isolate = true (lisolate.c): the console the VMM relays to the
	 * device process, in place of the class's own (NULL: none) */
	struct mb_chr *con;
};
/* User values of a device handle: 1 its machine, 2 its option table. */

/* Options */
void mbl_checkopts(lua_State *L, int idx, const char *what,
		   const char *const *keys);
uint64_t mbl_tosize(lua_State *L, int idx, const char *key);
uint64_t mbl_optsize(lua_State *L, int idx, const char *key, uint64_t def);
lua_Integer mbl_optint(lua_State *L, int idx, const char *key, lua_Integer def);
const char *mbl_optstr(lua_State *L, int idx, const char *key, const char *def);
int mbl_optbool(lua_State *L, int idx, const char *key, int def);
int mbl_checkenum(lua_State *L, int idx, const char *key, const char *def,
		  const char *const *names);
void mbl_checkrange(lua_State *L, int idx, const char *key, uint64_t *base,
		    uint64_t *size);

/* Devices */
/* Check the options at index 1 (keys, name, cls->parse) and push a handle. */
struct mbl_dev *mbl_dev_new(lua_State *L, const struct mbl_class *cls);
/* A handle for dev, which C attached to the machine at midx: listed by
 * m:devices() after those before it, as if m:add had returned it. */
void mbl_dev_adopt(lua_State *L, int midx, const struct mbl_class *cls,
		   struct mb_device *dev);
/* A device handle's C device once added, or an error naming the class. */
struct mb_device *mbl_checkdevice(lua_State *L, int idx);
/* State tables (lstate.c): push st as a table; overlay the table at idx
 * onto st (errors name the field: "set_state: channels[2].mode: ..."). */
void mbl_push_state(lua_State *L, const struct mb_state_desc *d, const void *st);
void mbl_to_state(lua_State *L, int idx, const struct mb_state_desc *d, void *st);
/* The generic dev:state() (a class's own state function may call it). */
int mbl_dev_state(lua_State *L);
int mbl_dev_set_state(lua_State *L); /* dev:set_state(t), the generic one */
/* dev:state() of a device KVM models (kernel PIC or PIT): { kernel = true }
 * when the device has no state in moonbox, else the generic one. */
int mbl_kernel_state(lua_State *L);
void mbl_open_dev(lua_State *L);
struct mbl_dev *mbl_checkdev(lua_State *L, int idx);
struct mbl_machine *mbl_checkmachine(lua_State *L, int idx);
struct mb_machine *mbl_live(lua_State *L, struct mbl_machine *mm);
void mbl_pushopts(lua_State *L, int idx); /* the handle at idx's options */
int mbl_fail(lua_State *L, const char *what); /* error with mb_errmsg() */
void mbl_pushprint(lua_State *L); /* print's text of the stack, no newline */
/* Lua values a C callback of mm needs (a device's functions, a timer):
 * kept in the machine's own table under a C pointer key, never in a
 * registry reference, so that they die with the machine. set stores the
 * value at idx (nil removes it); push pushes it (nil once the machine is
 * closed) and returns its type. */
void mbl_ref_set(lua_State *L, struct mbl_machine *mm, const void *key, int idx);
int mbl_ref_push(lua_State *L, struct mbl_machine *mm, const void *key);

/* Device processes (lisolate.c). Registry key set (true) in the Lua state
 * moonbox-device builds devices in: internal option forms ({ fd = N }
 * consoles, image_fd) are accepted there only. */
#define MBL_DEVPROC "moonbox.devproc"
bool mbl_in_devproc(lua_State *L);
/* The options at idx ask for isolate = true (checked: interrupt
 * controllers refuse it). */
bool mbl_want_isolate(lua_State *L, const struct mbl_class *cls, int idx);
/* m:add of an isolated device: the options at 3; sets d->dev, d->con. */
int mbl_isolate(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d);
/* dev:state() of an isolated device: add sandbox, pid, alive, restarts
 * to the table on top. */
void mbl_isolate_annotate(lua_State *L, struct mb_device *dev);
int mbl_isolate_revoke(lua_State *L, struct mb_device *dev); /* dev:revoke(base) */
int mbl_isolate_grant(lua_State *L, struct mb_device *dev); /* dev:grant(base, size) */
/* lmodule.c: an isolated Lua device's module, inside moonbox-device.
 * moonbox-device sets log (a line to the VMM) and fatal (end the process
 * with code, why logged first; never returns), makes its Lua state with
 * mbl_module_alloc, and holds mbl_module_lock while it builds the device;
 * every later entry into that state (accesses, timers) takes it. */
extern void (*mbl_module_log)(const char *line, size_t len);
extern void (*mbl_module_fatal)(int code, const char *why);
void mbl_module_lock(void);
void mbl_module_unlock(void);
void *mbl_module_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* The budget per call (instructions) and the state's memory ceiling. */
void mbl_module_limits(lua_State *L, lua_Integer instructions, size_t memory);
/* A call into the module starts (what: "read", "a timer"): a fresh budget. */
void mbl_module_enter(const char *what);
/* A pcall into the module returned status: LUA_ERRMEM ends the process. */
void mbl_module_failed(lua_State *L, int status, const char *what);
size_t mbl_module_memory(void);
/* ldevice.c, in moonbox-device once confined: load the built device's
 * module and call its init (a lua_CFunction, for lua_pcall). */
int mbl_module_start(lua_State *L);
/* Load src (text only) as module name in its own environment, call it with
 * the value at args, check and push the table it returns. */
int mbl_module_load(lua_State *L, const char *src, size_t len, const char *name,
		    int args);
/* The VMM's side: push the text of module file path (at most
 * MBL_MODULE_MAX bytes: it crosses in the CREATE message). */
#define MBL_MODULE_MAX 32768
int mbl_module_read(lua_State *L, const char *path);
/* lvirtio_io.c: the network backend virtio_net's options at idx name
 * (inside a device process: backend_fd, the VMM's). */
struct mb_netbe *mbl_net_open_backend(lua_State *L, int idx);
/* lmachine.c: push a handle for a machine made in C (moonbox-device). */
void mbl_push_machine(lua_State *L, struct mb_machine *m);

/* Each device binding file provides its constructors through this list. */
void mbl_open_devices(lua_State *L);
void mbl_open_pic(lua_State *L);
void mbl_open_pit(lua_State *L);
void mbl_open_rtc(lua_State *L);
void mbl_open_fw_cfg(lua_State *L);
void mbl_open_i8042(lua_State *L);
void mbl_open_port80(lua_State *L);
/* lacpi_pm.c: the acpi_pm device of a machine with acpi on (at midx). */
void mbl_acpi_pm_adopt(lua_State *L, int midx);
void mbl_open_debug_exit(lua_State *L);
void mbl_open_uart(lua_State *L);
void mbl_open_boot(lua_State *L);
void mbl_open_virtio(lua_State *L);
void mbl_open_virtio_io(lua_State *L);
void mbl_open_vhost_user(lua_State *L); /* mb.vhost_user (lvhost_user.c) */
void mbl_open_fault(lua_State *L); /* mb.fault, m:faults */
/* The fault (mb.fault's constructors) at idx, or NULL; the machine's open
 * plan, or NULL (lfault.c). */
const struct mb_fault_rule *mbl_testfault(lua_State *L, int idx);
struct mb_fault_plan *mbl_open_plan(lua_State *L, struct mbl_machine *mm);
/* lvirtio.c: mmio = { base, size } and irq at idx (0: automatic), and the
 * state() of every virtio device class. */
void mbl_virtio_place_opts(lua_State *L, int idx, uint64_t *base,
			   uint64_t *size, int *irq);
int mbl_virtio_state(lua_State *L);
/* dev:set_state(t) for virtio devices: takes what mbl_virtio_state gave. */
int mbl_virtio_set_state(lua_State *L);
struct mb_chr *mbl_console(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key);
int mbl_console_output(lua_State *L, struct mb_chr *c);
int mbl_console_input(lua_State *L, struct mb_chr *c);
void mbl_machine_method(lua_State *L, const char *name, lua_CFunction f);
/* The option table mb.machine was given (snapshots rebuild from it). */
void mbl_push_machine_opts(lua_State *L, struct mbl_machine *mm);
/* lsnapshot.c: m:snapshot, m:restore, mb.restore (module table on top) */
void mbl_open_snapshot(lua_State *L);
void mbl_open_campaign(lua_State *L); /* mb.campaign (lua/campaign.lua) */
void mbl_open_tap(lua_State *L);      /* m:tap, m:trace (ltap.c) */
void mbl_open_listen(lua_State *L);   /* m:listen (llisten.c) */
void mbl_open_on(lua_State *L);       /* m:on (lon.c) */
/* The handle m:on returns (lon_handle.c): pushes it; removed and count are
 * the registration's, valid while the machine lives; key its function's
 * ref; what names it in tostring ("uart of com1"). */
void mbl_on_handle_new(lua_State *L, struct mbl_machine *mm, bool *removed,
		       uint64_t *count, const void *key, const char *what);
void mbl_open_on_handle(lua_State *L);
void mbl_open_on_events(lua_State *L); /* its blk, irq, pit events (lon_events.c) */
int mbl_on_event(lua_State *L, const char *event);
int mbl_on_net(lua_State *L);
/* lgdb.c: run one line of Lua in the script's state, as gdb's monitor
 * does (globals, m = the machine bound with mbl_eval_bind, print
 * collected, an expression's value shown); from any thread, through
 * mb_machine_call_main. Returns malloc'd output, NULL when nothing ran. */
void mbl_eval_bind(lua_State *L, struct mbl_machine *mm, int midx);
char *mbl_eval_line(struct mbl_machine *mm, const char *line);
/* m:wait_for's io = { pio | mmio, access, value } at idx: a C tap that
 * stops the machine (reason "io") at the first matching access; returns
 * its tap id (mb_tap_remove it). hit: pushes the access as a table. */
struct mbl_io_wait;
int mbl_tap_waiter(lua_State *L, struct mbl_machine *mm, int idx,
		   struct mbl_io_wait **w);
bool mbl_tap_waiter_hit(lua_State *L, struct mbl_io_wait *w);

/* Debugging (lcpu.c, ldebug.c). */
void mbl_open_cpu(lua_State *L);
void mbl_open_debug(lua_State *L);
/* Push the vCPU handle idx of the machine at machine_idx (one per vCPU). */
void mbl_push_cpu(lua_State *L, int machine_idx, unsigned idx);
/* An address: a number, a size string or { phys = N } (*phys set). */
uint64_t mbl_checkaddr(lua_State *L, int idx, const char *key, bool *phys);
/* After run/wait returned r: call the breakpoint and watchpoint functions
 * of the hits; true when all of them said "continue" (run again). */
bool mbl_debug_continue(lua_State *L, int machine_idx, struct mb_result *r);
/* Symbols (lsym.c): "name" or "name+off" through mm's tables; addr as
 * "name+0x4" into buf (false, buf "", when no symbol covers it); an
 * address argument that may also be a symbol. */
void mbl_open_sym(lua_State *L);
bool mbl_sym_lookup(lua_State *L, struct mbl_machine *mm, const char *s,
		    uint64_t *addr);
bool mbl_sym_format(lua_State *L, struct mbl_machine *mm, uint64_t addr,
		    char *buf, size_t len, bool *text);
uint64_t mbl_checkaddr_sym(lua_State *L, struct mbl_machine *mm, int idx,
			   const char *key, bool *phys);
/* Add cpu (and breakpoint/watchpoint details) to the result table on top. */
void mbl_debug_annotate(lua_State *L, int machine_idx, const struct mb_result *r);

/* The gdb stub (lgdb.c). `moonbox --gdb SPEC` leaves SPEC in the registry
 * under MBL_GDB_SPEC; the first machine to run takes it (run, start, wait
 * call mbl_gdb_autostart). */
#define MBL_GDB_SPEC "moonbox.gdb"
void mbl_open_gdb(lua_State *L);
void mbl_open_map(lua_State *L); /* m:mtree, m:irqs (lmap.c) */
void mbl_gdb_autostart(lua_State *L, int machine_idx);

#endif
