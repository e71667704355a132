-- Snapshots of a booted Linux (machines/linux.lua), both irqchips, with a
-- test disk (an overlay, serial "mbtest": the guest finds it by serial).
-- User irqchip (one boot): at the shell prompt, with the workload ready
-- (the disk's name in $D, a counter N=0 in the shell, a function t that
-- bumps N, prints it and writes the disk a few times), pause and snapshot
-- in memory; start `sleep 8` and snapshot to a file while it sleeps. A new
-- moonbox process restores the file: the sleep ends, a typed command runs,
-- `sleep 2` takes its time. Then in this process: five
-- restores with a command each, and a 50-trial campaign of blk errors on
-- the nth write, each trial started from the same state (N reads 1 after
-- every t). Kernel irqchip (a second boot): the same with the file.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
local mb = require "moonbox"
T.need_kvm()
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end

-- Run m in slices until the console shows `pat` after byte `from`.
local function until_seen(m, com1, pat, from, secs)
  local t0 = os.time()
  while os.time() - t0 < secs do
    local r = m:run { timeout = 0.5 }
    if r.reason ~= "timeout" then
      error("guest stopped: " .. r.reason .. " " .. tostring(r.message) .. "\n" ..
        com1:output():sub(-1500), 2)
    end
    local at = com1:output():find(pat, from + 1, true)
    if at then return at end
  end
  error("no " .. pat .. " within " .. secs .. " s; console:\n" .. com1:output():sub(-1500), 2)
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local img = dir .. "/disk.img"
assert(io.open(img, "wb")):write(string.rep("\0", 1 << 20)):close()

-- The workload, typed once before the snapshot: a trial types only "t".
local PREP = 'for d in /sys/block/*; do read s < $d/serial; [ "$s" = mbtest ] && D=/dev/${d##*/}; done; ' ..
  'N=0; t() { N=$((N+1)); echo "c=$N"; i=0; while [ $i -lt 6 ]; do echo $i >$D || break; ' ..
  'i=$((i+1)); done; echo "rc=$? end"; }; echo "disk=$D"\n'

local function boot(irqchip)
  local build = assert(loadfile(T.root .. "/machines/linux.lua"))
  local disk
  local m, com1 = build { root = T.root, console = "buffer", irqchip = irqchip,
    setup = function(mm)
      disk = mm:add(mb.virtio_blk { image = img, disk = "overlay", serial = "mbtest" })
    end }
  until_seen(m, com1, "moonbox-guest: init", 0, 300)
  until_seen(m, com1, "# ", 0, 60)
  local mark = #com1:output()
  com1:input(PREP)
  local at = until_seen(m, com1, "disk=/dev/vd", mark, 60)
  until_seen(m, com1, "# ", at, 30)
  m:pause()
  return m, com1, disk
end

-- Start a command that is still sleeping when the snapshot is taken (a
-- timer armed in the guest: with the kernel irqchip, the LAPIC's
-- TSC-deadline timer) and pause there; the new process must see it end.
local function start_sleeper(m, com1)
  local mark = #com1:output()
  com1:input('echo "st""art"; sleep 8; echo "wo""ke"\n')
  until_seen(m, com1, "start", mark, 60)
  m:run { timeout = 3 } -- sleep is exec'd and waiting (8 s of guest time)
  m:pause()
  T.ok(not com1:output():find("woke", mark + 1, true), "still sleeping at the snapshot")
end

-- A new moonbox process restores file, types a command, then times a
-- `sleep 2` by the guest's own clock; returns what it saw.
local function in_new_process(file)
  local script, out = dir .. "/restore.lua", dir .. "/out"
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local m = mb.restore { file = %q, consoles = { com1 = "buffer" } }
local com1 = m:device("com1")
local function wait(pat, secs)
  local t0 = os.time()
  while os.time() - t0 < secs do
    local r = m:run { timeout = 0.5 }
    if r.reason ~= "timeout" then return nil end
    local a, b = com1:output():match(pat)
    if a then return a, b end
  end
end
local woke = wait("(woke)", 60)
com1:input("echo restored-$((6*7))\n")
local ok = woke and wait("(restored%%-42)", 60)
com1:input('read a _ </proc/uptime; sleep 2; read b _ </proc/uptime; echo "u""p=$a $b"\n')
local t0 = os.time()
local a, b = wait("up=([%%d.]+) ([%%d.]+)", 60)
local o = assert(io.open(%q, "w"))
o:write(ok and "ok" or "missing", " ", a or "-", " ", b or "-", " ", os.time() - t0, "\n", com1:output())
o:close()
]], T.root, file, out))
  f:close()
  local ran = os.execute(T.root .. "/moonbox " .. script)
  local got = assert(io.open(out)):read("a")
  os.remove(script); os.remove(out)
  return ran, got
end

local function check_new_process(file)
  local ran, got = in_new_process(file)
  T.ok(ran, "second process ran")
  local ok, a, b, secs = got:match("^(%S+) (%S+) (%S+) (%d+)\n")
  T.eq(ok, "ok", "woke, then restored-42 on the new process's console:\n" .. got:sub(-800))
  local dt = (tonumber(b) or 0) - (tonumber(a) or 0)
  T.ok(dt >= 1.9 and dt < 30, string.format("sleep 2 took %.2f s of guest time (host: %s s)", dt,
    tostring(secs)))
  print(string.format("# new process: sleep 2 took %.2f s guest time, ~%s s host", dt, secs))
end

local file = dir .. "/linux.snap"
local m, com1, disk, s
T.case("user irqchip: boot to the shell with the workload ready, snapshot to a file and in memory", function()
  m, com1, disk = boot("user")
  local t0 = os.clock()
  s = m:snapshot()
  start_sleeper(m, com1)
  m:snapshot { file = file }
  print(string.format("# snapshot file: %.1f MiB in %.0f ms", #assert(io.open(file, "rb")):read("a") / 2^20,
    (os.clock() - t0) * 1000))
end)

T.case("user irqchip: a new moonbox process restores the file; the sleep started before ends, a typed command runs, sleep 2 takes its time", function()
  T.ok(s, "snapshot taken")
  check_new_process(file)
end)

T.case("five in-process restores, the command works each time", function()
  T.ok(s, "snapshot taken")
  for i = 1, 5 do
    local t0 = os.clock()
    local _, st = m:restore(s)
    local ms = (os.clock() - t0) * 1000
    print(string.format("# restore %d: %.2f ms CPU, %d pages, dirty_only=%s", i, ms,
      st.pages_copied, tostring(st.dirty_only)))
    local mark = #com1:output()
    com1:input("echo restored-$((6*7))\n")
    until_seen(m, com1, "restored-42", mark, 60)
    m:pause()
  end
end)

-- The golden run counts the workload's writes (W); trial v errors the
-- v-th write: trials 1..W hit one, the others are masked (no v-th write).
T.case("50 restores, a blk error on the nth write each: every trial classified, each from the same state", function()
  T.ok(s, "snapshot taken")
  m:restore(s)
  local w0 = disk:state().writes
  local mark = #com1:output()
  com1:input("t\n")
  until_seen(m, com1, " end", mark, 60)
  m:pause()
  local W = disk:state().writes - w0
  T.ok(W >= 6, "golden run: " .. W .. " writes")
  local counters, fired = {}, {}
  local t0 = os.time()
  local res = mb.campaign {
    name = "linux-blk-nth", machine = m, base = s, space = { nth = { 1, 50 } }, progress = false,
    results = dir .. "/linux.jsonl",
    fault = function(v, plan)
      plan:add(mb.fault.blk.error { dev = disk, op = "write", nth = v })
    end,
    run = function(mm, trial)
      local from = #com1:output()
      com1:input("t\n")
      local t1 = os.time()
      while os.time() - t1 < 30 do
        local r = mm:run { timeout = 0.25 }
        if r.reason ~= "timeout" then return r end
        if com1:output():find(" end", from + 1, true) then return { reason = "seen" } end
      end
      return { reason = "timeout" }
    end,
    classify = function(r, out, _, trial)
      counters[trial.value] = out:match("c=(%d+)")
      if r.reason ~= "seen" then return "hang" end
      local rc = out:match("rc=(%d+) end")
      if rc ~= "0" then return "detected" end            -- the shell saw it
      if out:find("I/O error", 1, true) then return "logged" end -- only the kernel did
      return "masked"
    end,
  }
  local secs = os.time() - t0
  T.eq(res.total, 50, "trials")
  local sum = 0
  for _, n in pairs(res.classes) do sum = sum + n end
  T.eq(sum, 50, "every trial classified")
  for v = 1, 50 do T.eq(counters[v], "1", "the shell's counter in trial nth=" .. v) end
  for _, t in ipairs(res.all) do
    fired[t.value] = t.rules:match("fired (%d+)")
    if t.value <= W then
      T.ok(fired[t.value] == "1" and t.class ~= "masked" and t.class ~= "hang",
        "nth=" .. t.value .. " hits a write: " .. t.class .. ", " .. t.rules)
    else
      T.ok(fired[t.value] == "0" and t.class == "masked", "nth=" .. t.value .. " never fires: " ..
        t.class .. ", " .. t.rules)
    end
  end
  local parts = {}
  for c, n in pairs(res.classes) do parts[#parts + 1] = c .. " " .. n end
  table.sort(parts)
  print(string.format("# campaign: 50 trials in %d s (%s), %d writes a trial", secs,
    table.concat(parts, ", "), W))
end)

T.case("kernel irqchip: boot, snapshot to a file while a sleep runs, a new process: it ends, a typed command, sleep 2", function()
  if m then m:close(); m = nil end
  local mk, kcom1 = boot("kernel")
  start_sleeper(mk, kcom1)
  local kfile = dir .. "/linux-kernel.snap"
  mk:snapshot { file = kfile }
  mk:close()
  check_new_process(kfile)
end)

os.execute("rm -rf " .. dir)
T.done()
