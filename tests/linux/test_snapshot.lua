-- Snapshots of a booted Linux (machines/linux.lua, one boot): boot to the
-- interactive shell, pause, snapshot to a file and in memory; a new moonbox
-- process restores the file and a command typed on the console runs; then
-- in this process, five restores from the in-memory snapshot, each time the
-- same command works.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
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
    if com1:output():find(pat, from + 1, true) then return end
  end
  error("no " .. pat .. " within " .. secs .. " s; console:\n" .. com1:output():sub(-1500), 2)
end

local file = os.tmpname() .. "-linux.snap"
local m, com1, s
T.case("boot to the shell, pause, snapshot to a file and in memory", function()
  local build = assert(loadfile(T.root .. "/machines/linux.lua"))
  -- the initramfs root: a snapshot file cannot hold the root disk's overlay
  -- blocks yet (docs/snapshot.md)
  m, com1 = build { root = T.root, console = "buffer", rootfs = "initrd" }
  until_seen(m, com1, "moonbox-guest: init", 0, 300)
  until_seen(m, com1, "# ", 0, 60)
  m:pause()
  local t0 = os.clock()
  m:snapshot { file = file }
  print(string.format("# snapshot file: %.1f MiB in %.0f ms", #assert(io.open(file, "rb")):read("a") / 2^20,
    (os.clock() - t0) * 1000))
  s = m:snapshot()
end)

T.case("a new moonbox process restores the file; a typed command runs", function()
  T.ok(s, "snapshot taken")
  local script, out = os.tmpname() .. "-restore.lua", os.tmpname() .. "-out"
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local m = mb.restore { file = %q, consoles = { com1 = "buffer" } }
local com1 = m:device("com1")
com1:input("echo restored-$((6*7))\n")
local t0, ok = os.time(), false
while os.time() - t0 < 60 and not ok do
  local r = m:run { timeout = 0.5 }
  if r.reason ~= "timeout" then break end
  ok = com1:output():find("restored-42", 1, true) ~= nil
end
local o = assert(io.open(%q, "w"))
o:write(ok and "ok\n" or "missing\n", com1:output())
o:close()
]], T.root, file, out))
  f:close()
  T.ok(os.execute(T.root .. "/moonbox " .. script), "second process ran")
  local got = assert(io.open(out)):read("a")
  T.ok(got:sub(1, 3) == "ok\n", "restored-42 on the new process's console:\n" .. got:sub(-800))
  os.remove(script); os.remove(out)
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

os.remove(file)
T.done()
