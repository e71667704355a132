-- gdb on the default Linux guest (one boot): the stub holds the machine at
-- its first instruction, gdb loads the kernel's vmlinux (symbols), sets a
-- hardware breakpoint on start_kernel (a __START_KERNEL_map virtual
-- address: the debug register matches once the kernel's own page tables
-- are live), takes a backtrace, and detaches; the boot then completes.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local kernel = T.root .. "/.cache/guest/bzImage"
local vmlinux = T.root .. "/.cache/build/linux-6.1/vmlinux"
if not io.open(kernel) or not io.open(vmlinux) then
  T.skip_all("no guest kernel or vmlinux (run make deps)")
end
if not os.execute("command -v gdb >/dev/null 2>&1") then
  T.skip_all("gdb not installed (scripts/deps.sh installs it)")
end

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

T.case("hbreak start_kernel, bt, continue: the boot completes", function()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local build = assert(loadfile(T.root .. "/machines/linux.lua"))
  -- The default PVH boot enters the vmlinux in 32-bit mode; the stub
  -- still offers gdb the x86-64 layout, because the loader knows the
  -- kernel is 64-bit (docs/gdb.md).
  local m, com1 = build { root = T.root, console = "buffer",
    append = "nokaslr -- echo gdb-boot-ok" }
  local sock, log, rcf = dir .. "/g.sock", dir .. "/g.log", dir .. "/g.rc"
  m:gdbserver { listen = "unix:" .. sock, stop = "entry" }
  local script = assert(io.open(dir .. "/g.gdb", "w"))
  script:write(table.concat({ "set pagination off", "set confirm off",
    "file " .. vmlinux, "target remote " .. sock, "hbreak start_kernel", "continue",
    "p $pc", "bt", "info registers cr3", "delete", "detach" }, "\n"), "\n")
  script:close()
  os.execute(string.format("(timeout 300 gdb -batch -nx -x %s/g.gdb >%s 2>&1 </dev/null; echo $? >%s) &",
    dir, log, rcf))
  local t0 = os.time()
  local r = m:run { timeout = 1200 }
  local out = com1:output()
  local glog
  for _ = 1, 100 do
    if (slurp(rcf) or "") ~= "" then break end
    os.execute("sleep 0.1")
  end
  glog = slurp(log) or ""
  print(string.format("# %s after %d s; gdb said:\n# %s", r.reason, os.time() - t0,
    glog:gsub("\n", "\n# ")))
  os.execute("rm -rf " .. dir)
  T.ok(glog:find("Hardware assisted breakpoint 1 at 0xffffffff", 1, true), "hbreak set: " .. glog)
  T.ok(glog:find("Breakpoint 1, 0xffffffff%x+ in start_kernel"), "stopped in start_kernel: " .. glog)
  -- x86_64_start_kernel ends in a tail call: the caller gdb finds is the
  -- code that called it
  T.ok(glog:match("#0 +0xffffffff%x+ in start_kernel") and
       glog:match("#1 +0xffffffff%x+ in %a[%w_]*start[%w_]*"), "bt names the callers: " .. glog)
  T.ok(out:find("Linux version 6.1", 1, true), "the kernel printed its banner")
  T.ok(out:find("moonbox-guest: init", 1, true), "the boot reached init: " .. out:sub(-800))
  T.ok(out:find("gdb-boot-ok", 1, true), "init ran the command")
  T.eq(r.reason, "halt", "init powers off after the command")
end)

T.done()
