-- machine { seccomp = true } (docs/sandbox.md): once the machine runs,
-- each thread moonbox made filters itself (Seccomp 2 in its
-- /proc/self/task/TID/status), the script's thread does not; Lua device
-- callbacks still run (on the script's thread); a forbidden call from a
-- moonbox thread ends the process with a message naming the thread and
-- the call (MOONBOX_SECCOMP_TEST, a test-only knob, provokes one);
-- moonbox --seccomp does the same for every machine of the script.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local pid = io.open("/proc/self/stat"):read("n")

-- Every task of this process: tid -> { seccomp =, nnp =, name = }.
local function tasks()
  local out = {}
  local ls = io.popen("ls /proc/" .. pid .. "/task")
  for tid in ls:lines() do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/status")
    if f then
      local s = f:read("a")
      f:close()
      out[tonumber(tid)] = { seccomp = tonumber(s:match("Seccomp:%s*(%d)")),
        nnp = tonumber(s:match("NoNewPrivs:%s*(%d)")), name = s:match("Name:%s*(%S+)") }
    end
  end
  ls:close()
  return out
end

local function pio_machine(opts)
  local m = mb.machine(opts)
  local opened = 0
  m:add(mb.debug_exit { port = 0xf4 })
  -- io.open in a callback: under the filters it would be refused on a
  -- vCPU thread; moonbox runs it on the script's thread instead
  m:add(mb.device { name = "regs", pio = { base = 0x520, size = 4 },
    read = function()
      local f = io.open("/proc/self/stat")
      if f then opened = opened + 1; f:close() end
      return 0
    end })
  m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 } })
  m:boot_flat { file = T.guest("pio"), mode = "protected" }
  return m, function() return opened end
end

T.case("seccomp = true: moonbox's threads are filtered, the script's is not", function()
  -- One unfiltered run first: a sanitizer's runtime starts a thread of its
  -- own at the first pthread_create, which must be in `before`.
  T.run((pio_machine { memory = "16M" }), "exit", 0)
  local before = tasks()
  local m, opened = pio_machine { memory = "16M", seccomp = true }
  T.run(m, "exit", 0)
  T.eq(opened(), 3, "the Lua read callback opened a file each time (3 widths)")
  -- the event loop filters itself when it wakes, which the machine's
  -- start asks at once: give it a moment on a loaded host
  local now
  for _ = 1, 100 do
    now = tasks()
    local all = true
    for tid, t in pairs(now) do
      if tid ~= pid and not before[tid] and t.seccomp ~= 2 then all = false end
    end
    if all then break end
    os.execute("sleep 0.02")
  end
  local mine = 0
  for tid, t in pairs(now) do
    if tid == pid then
      T.eq(t.seccomp, 0, "the script's thread stays free")
    elseif not before[tid] and t.name ~= "kvm-nx-lpage-re" then
      mine = mine + 1
      T.eq(t.seccomp, 2, "moonbox thread " .. tid .. " filtered")
      T.eq(t.nnp, 1, "moonbox thread " .. tid .. " no_new_privs")
    end
  end
  T.ok(mine >= 2, "the vCPU and the event loop threads at least (" .. mine .. ")")
  -- the launcher was started before the filters: a child of this process
  local kids = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children"):read("a")
  local launcher = false
  for child in kids:gmatch("%d+") do
    local c = io.open("/proc/" .. child .. "/comm")
    if c and c:read("l") == "moonbox-launche" then launcher = true end
    if c then c:close() end
  end
  T.ok(launcher, "moonbox-launcher runs, started before the first filter")
  m:close()
end)

T.case("seccomp off (the default): no thread is filtered", function()
  local m = pio_machine { memory = "16M" }
  local before = tasks()
  T.run(m, "exit", 0)
  for tid, t in pairs(tasks()) do
    if not before[tid] and t.name ~= "kvm-nx-lpage-re" then
      T.eq(t.seccomp, 0, "thread " .. tid)
    end
  end
  m:close()
end)

T.case("seccomp: a boolean", function()
  T.raises(function() mb.machine { memory = "16M", seccomp = "yes" } end, "seccomp")
end)

-- A child moonbox, its output and exit status.
local function child(env, flags, body)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write('package.cpath = "' .. T.bin .. '/?.so;" .. package.cpath\n',
    'local mb = require "moonbox"\n', body)
  f:close()
  local p = io.popen(env .. " " .. T.bin .. "/moonbox " .. flags .. " " .. script ..
    " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  os.remove(script)
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

local guest_script = [[
local m = mb.machine { memory = "16M" } -- seccomp from the command line
m:add(mb.debug_exit { port = 0xf4 })
m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 } })
m:boot_flat { file = "]] .. T.guest("pio") .. [[", mode = "protected" }
local r = m:run { timeout = 20 }
print("the run ended: " .. r.reason)
]]

T.case("a forbidden call on a vCPU thread ends moonbox, naming thread and call", function()
  local out, rc = child("MOONBOX_SECCOMP_TEST=vcpu", "--seccomp", guest_script)
  T.eq(rc, 159, "exit status 128 + SIGSYS: " .. out)
  -- getppid(2) is 110 on x86-64
  T.ok(out:find("moonbox: seccomp: the vcpu thread %(tid %d+%) made system call 110"),
    "the message: " .. out)
  T.ok(not out:find("the run ended"), "nothing ran after it")
end)

T.case("a forbidden call on the event loop thread: the same", function()
  local out, rc = child("MOONBOX_SECCOMP_TEST=evloop", "--seccomp", guest_script)
  T.eq(rc, 159, "exit status: " .. out)
  T.ok(out:find("the event loop thread %(tid %d+%) made system call 110"), "the message: " .. out)
end)

T.case("the knob without --seccomp: nothing filtered, the guest runs", function()
  local out, rc = child("MOONBOX_SECCOMP_TEST=vcpu", "", guest_script)
  T.eq(rc, 0, out)
  T.ok(out:find("the run ended: exit"), out)
end)

T.case("moonbox --info reports the launcher, the device sandbox, the thread filters", function()
  local p = io.popen(T.bin .. "/moonbox --info 2>&1")
  local out = p:read("a")
  p:close()
  T.ok(out:find("launcher: /[^\n]*moonbox%-launcher\n"), out)
  T.ok(out:find("device sandbox [^\n]*seccomp kill%-process allowlist"), out)
  T.ok(out:find("thread filters [^\n]*vcpu %d+, event loop %d+, worker %d+, gdb stub %d+"), out)
end)

T.done()
