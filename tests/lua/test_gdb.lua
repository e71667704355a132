-- The gdb stub with real gdb (Debian's gdb 13, batch mode) over a Unix
-- socket: the script runs the machine, gdb drives it from a background
-- process, and each case checks both gdb's log and what m:run returned.
-- Guests: build/guests/debug.elf (64-bit, symbols) and spin (32-bit).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()
if not os.execute("command -v gdb >/dev/null 2>&1") then
  T.skip_all("gdb not installed (scripts/deps.sh installs it)")
end

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local elf = T.root .. "/build/guests/debug.elf"
local n = 0

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function debug_machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("debug"), at = 0x100000, mode = "long" }
  return m
end

local function spin_machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  return m
end

-- Start gdb in the background on m's stub with the given command lists
-- (one list per gdb session, run one after the other: reconnects), run m,
-- wait for gdb; returns m:run's result, gdb's log and its exit status.
-- opts: stop, on_detach, sigint (seconds: send gdb SIGINT then, as Ctrl-C).
local function session(m, sessions, opts)
  opts = opts or {}
  n = n + 1
  local sock = string.format("%s/g%d.sock", dir, n)
  local log, rcf = string.format("%s/g%d.log", dir, n), string.format("%s/g%d.rc", dir, n)
  m:gdbserver { listen = "unix:" .. sock, stop = opts.stop, on_detach = opts.on_detach }
  local cmd = {}
  for i, cmds in ipairs(sessions) do
    local script = string.format("%s/g%d-%d.gdb", dir, n, i)
    local f = assert(io.open(script, "w"))
    f:write("set pagination off\nset confirm off\n")
    if opts.file ~= false then f:write("file " .. elf .. "\n") end
    f:write("target remote " .. sock .. "\n")
    for _, c in ipairs(cmds) do f:write(c, "\n") end
    f:close()
    -- --foreground: one SIGINT, to gdb only (without it timeout signals its
    -- whole process group too, gdb takes a second Ctrl-C as "give up
    -- waiting" and disconnects when the stop is slow to come)
    local pre = opts.sigint and string.format("timeout --foreground --preserve-status -s INT %g ",
      opts.sigint) or ""
    cmd[#cmd + 1] = string.format("timeout 30 %sgdb -batch -nx -x %s", pre, script)
  end
  os.execute(string.format("(%s) >%s 2>&1 </dev/null; echo $? >%s) &",
    "(" .. table.concat(cmd, "; "), log, rcf))
  local r = m:run { timeout = opts.timeout or 30 }
  local rc
  for _ = 1, 300 do -- gdb may still be printing after the run ended
    rc = slurp(rcf)
    if rc and rc ~= "" then break end
    os.execute("sleep 0.1")
  end
  return r, slurp(log) or "", tonumber(rc)
end

local function has(log, s) T.ok(log:find(s, 1, true), "gdb log has " .. s .. ":\n" .. log) end

local sym = T.symbols(elf)

T.case("handshake, info registers (x86-64 with cr3/efer), threads", function()
  local r, log = session(debug_machine(), { {
    "info registers rip eflags cs cr0 cr3 efer fs_base",
    "p $xmm0.uint128", "p $st0", "info threads", "detach" } })
  T.eq(r.reason, "exit", "the guest ran to its end after detach")
  T.eq(r.exit_code, 5, "exit code")
  has(log, "0x0000000000100000 in _start ()")
  T.ok(log:match("rip%s+0x100000%s+0x100000 <_start>"), "rip: " .. log)
  T.ok(log:match("eflags%s+0x2%s+%[ %]"), "eflags: " .. log)
  T.ok(log:match("cr3%s+0x1000"), "cr3: " .. log)
  T.ok(log:match("efer%s+0x5%x%x"), "efer (LME|LMA): " .. log)
  has(log, 'Thread 1 "vcpu0"')
  T.ok(not log:find("too long", 1, true), "no g packet trouble")
end)

T.case("break (sw) and hbreak: continue past them, re-inserted each time", function()
  local r, log = session(debug_machine(), { {
    "break l4", "hbreak done",
    "continue", "p/x $rcx", "continue", "p/x $rcx", "continue", "p/x $rcx",
    "delete 1", "continue", "p $pc", "p/x $rax", "delete", "continue" } })
  T.eq(r.reason, "exit", "run ends with the guest")
  T.eq(r.exit_code, 5)
  has(log, "Breakpoint 1, 0x0000000000100010 in l4 ()")
  has(log, "$1 = 0x1")
  has(log, "$2 = 0x2")
  has(log, "$3 = 0x3")
  has(log, "Breakpoint 2, 0x0000000000100014 in done ()")
  has(log, "exited with code 05")
end)

T.case("stepi x N lands on each label in turn", function()
  local r, log = session(debug_machine(), { {
    "stepi", "p $pc", "stepi", "p $pc", "stepi", "p $pc", "stepi", "p $pc",
    "stepi 4", "p $pc", "detach" } })
  T.eq(r.reason, "exit")
  has(log, "<l1>")
  has(log, "<loop>")
  has(log, "<l3>")
  has(log, "<l4>")
  -- l4 +4: dec, jnz, inc, mov: back at l4 (one turn of the loop)
  T.ok(select(2, log:gsub("<l4>", "")) >= 2, "a whole turn: " .. log)
end)

T.case("x at a virtual address agrees with a physical read through monitor", function()
  local r, log = session(debug_machine(), { {
    "break done", "continue", "x/wx &var",
    "monitor string.format('phys=%#x', string.unpack('<I4', m:cpu(0):read({ phys = "
      .. string.format("%#x", sym.var) .. " }, 4)))",
    "set *(int *)&var = 7", "x/wx &var", "delete", "continue" } })
  T.eq(r.reason, "exit")
  T.eq(r.exit_code, 7, "gdb's write to var is what the guest exits with")
  has(log, "<var>:\t0x00000005")
  has(log, "phys=0x5")
  has(log, "<var>:\t0x00000007")
end)

T.case("watch (write) on var: old and new values, through the engine", function()
  local r, log = session(debug_machine(), { {
    "watch *(int *)&var", "continue", "continue", "p $pc", "delete", "detach" } })
  T.eq(r.reason, "exit")
  T.eq(r.exit_code, 5)
  has(log, "Hardware watchpoint 1: *(int *)&var")
  has(log, "Old value = 0\nNew value = 1")
  has(log, "Old value = 1\nNew value = 2")
  has(log, "<l4>") -- stopped after the store
end)

T.case("rwatch and awatch on var (Z3/Z4: read and access watches by page protection)", function()
  local r, log = session(debug_machine(), { {
    "rwatch *(int *)&var", "continue", "p $pc", "delete",
    "awatch *(int *)&var", "continue", "p $pc", "delete", "detach" } })
  T.eq(r.reason, "exit")
  T.eq(r.exit_code, 5)
  has(log, "Hardware read watchpoint 1: *(int *)&var")
  -- the loop only stores var: the first read is done's load, after five turns
  has(log, "Value = 5")
  T.ok(log:match("%$1 = %(void %(%*%)%(%)%) 0x%x+ <done%+%d+>"), "stopped after the load: " .. log)
  has(log, "Hardware access (read/write) watchpoint 2: *(int *)&var")
  T.ok(not log:find("Could not insert", 1, true), "gdb inserted them: " .. log)
end)

T.case("interrupt while running (Ctrl-C), registers, then let it finish", function()
  local r, log = session(spin_machine(), { {
    "continue", "info registers eip cr0", "set $eax = 0x1234", "detach" } },
    -- 4 s (12 in a sanitizer build): gdb must be in "continue" by then,
    -- also on a loaded host
    { sigint = os.getenv("MB_SANITIZER") and 12 or 4, file = false })
  T.eq(r.reason, "exit", "the guest saw gdb's eax")
  T.eq(r.exit_code, 0x1235)
  has(log, "Program received signal SIGINT")
  T.ok(log:match("eip%s+0x10000[0-9a-f]"), "i386 layout, eip: " .. log)
  T.ok(log:match("cr0%s+0x11"), "cr0 (PE|ET): " .. log)
  T.ok(not log:find("too long", 1, true), "no g packet trouble")
end)

T.case("a real-mode guest: i386 registers, gdb's i8086 architecture, 16-bit stepping", function()
  local m = mb.machine { memory = "1M" }
  m:add(mb.debug_exit { port = 0xf4, size = 2 })
  m:boot_flat { file = T.guest("real"), at = 0x7c00, mode = "real" }
  local r, log = session(m, { { "show architecture", "info registers eip cs",
    "x/2i 0x7c00", "stepi", "p/x $eip", "detach" } }, { file = false })
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 0x1016, "the guest ran to its end")
  has(log, "i8086")
  -- boot_flat real mode: CS = 0x7c0, IP = 0 (gdb's addresses are linear:
  -- docs/gdb.md)
  T.ok(log:match("eip%s+0x0%s") and log:match("cs%s+0x7c0"), "eip, cs: " .. log)
  T.ok(log:match("mov%s+%$0x7c0,%%ax"), "16-bit decoding: " .. log)
  has(log, "$1 = 0x3")
  T.ok(not log:find("too long", 1, true), "no g packet trouble")
end)

T.case("monitor: Lua in the script's state, with and without output", function()
  mon_seen = nil
  local r, log = session(debug_machine(), { {
    "monitor print('hello', 1 + 1)", "monitor mon_seen = m:cpu(0):regs().rip",
    "monitor 6 * 7", "monitor error('boom')", "detach" } })
  T.eq(r.reason, "exit")
  has(log, "hello\t2")
  has(log, "42")
  has(log, "error: ")
  has(log, "boom")
  T.eq(mon_seen, sym._start, "the line ran in the script's globals")
end)

T.case("detach with on_detach = pause: a second gdb connects and continues", function()
  local r, log = session(debug_machine(), {
    { "stepi", "stepi", "p $pc", "detach" },
    { "p $pc", "set *(int *)&var = 9", "break done", "continue", "delete", "continue" } },
    { on_detach = "pause" })
  T.eq(r.reason, "exit")
  T.eq(r.exit_code, 5, "the loop rewrote var")
  local a, b = log:find("<loop>", 1, true)
  T.ok(a, "first session stepped: " .. log)
  T.ok(log:find("<loop>", b, true), "second session found it where the first left: " .. log)
  has(log, "Breakpoint 1, ")
  has(log, "exited with code 05")
end)

T.case("kill ends the held run", function()
  local r, log = session(spin_machine(), { { "stepi", "kill" } }, { file = false })
  T.eq(r.reason, "shutdown")
  T.ok(r.message:find("killed by gdb", 1, true), r.message)
  has(log, "killed")
end)

T.case("Lua and gdb breakpoints in one table: Lua's fn still runs, gdb's stop gdb", function()
  local m = debug_machine()
  local hits = 0
  m:breakpoint { at = sym.l3, kind = "sw", fn = function() hits = hits + 1; return "continue" end }
  local r, log = session(m, { { "x/1xb l3", "hbreak done", "continue", "p/x $rcx", "detach" } })
  T.eq(r.reason, "exit")
  T.eq(hits, 5, "Lua's breakpoint function at each turn")
  T.ok(log:match("<l3>:%s+0x89"), "gdb reads the byte under Lua's int3: " .. log)
  has(log, "in done ()")
  has(log, "= 0x5")
end)

T.case("info threads on 2 vCPUs; a step runs the selected one only", function()
  local m = mb.machine { memory = "16M", cpus = 2 }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("debug"), at = 0x100000, mode = "long" }
  local r, log = session(m, { { "info threads", "thread 2", "p $pc", "thread 1", "stepi",
    "p $pc", "thread 2", "p $pc", "kill" } })
  T.eq(r.reason, "shutdown") -- vCPU 1 sits at the reset vector: never let it run
  has(log, 'Thread 1 "vcpu0"')
  has(log, 'Thread 2 "vcpu1"')
  has(log, "<l1>")
  T.eq(select(2, log:gsub("= %(void %(%*%)%(%)%) 0xfff0", "")), 2, "vCPU 1 did not move: " .. log)
end)

T.case("gdbserver option errors", function()
  local m = debug_machine()
  T.raises(function() m:gdbserver { listen = "unix:" .. dir .. "/x", bogus = 1 } end,
    'unknown option "bogus"')
  T.raises(function() m:gdbserver { listen = "pipe:x" } end, 'expected "unix:PATH"')
  T.raises(function() m:gdbserver { listen = "tcp:127.0.0.1:x" } end, "bad port")
  T.raises(function() m:gdbserver { listen = "unix:" .. dir .. "/y", stop = "later" } end, "stop")
  local a = m:gdbserver { listen = "tcp:127.0.0.1:0", stop = "none" }
  T.ok(a:match("^tcp:127%.0%.0%.1:%d+$"), "the port chosen: " .. a)
  T.raises(function() m:gdbserver { listen = "unix:" .. dir .. "/z" } end, "has one already")
  T.run(m, "exit", 5) -- stop = "none" and no gdb: runs as usual
end)

T.case("moonbox --gdb waits at entry for gdb", function()
  n = n + 1
  local sock = string.format("%s/cli%d.sock", dir, n)
  local script = dir .. "/cli.lua"
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
local mb = require "moonbox"
local m = mb.machine { memory = "16M" }
m:add(mb.debug_exit { port = 0xf4 })
m:boot_flat { file = %q, at = 0x100000, mode = "long" }
local r = m:run { timeout = 30 }
print("run", r.reason, r.exit_code)
]], T.guest("debug")))
  f:close()
  local out = dir .. "/cli.out"
  os.execute(string.format("timeout 30 %s/moonbox --gdb unix:%s %s >%s 2>&1 &", T.root, sock,
    script, out))
  for _ = 1, 50 do
    if os.execute("test -S " .. sock) then break end
    os.execute("sleep 0.1")
  end
  local p = io.popen(string.format("timeout 30 gdb -batch -nx -ex 'file %s' -ex 'target remote %s' "
    .. "-ex 'p $pc' -ex 'continue' 2>&1", elf, sock))
  local log = p:read("a")
  p:close()
  has(log, "<_start>")
  has(log, "exited with code 05")
  local s
  for _ = 1, 50 do
    s = slurp(out) or ""
    if s:find("run", 1, true) then break end
    os.execute("sleep 0.1")
  end
  T.ok(s:find("waiting for gdb on unix:", 1, true), s)
  T.ok(s:find("run\texit\t5", 1, true), s)
end)

os.execute("rm -rf " .. dir)
T.done()
