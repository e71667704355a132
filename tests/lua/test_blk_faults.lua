-- blk faults and events on a tiny guest with a fixed request order:
-- tests/guests/blk_seq.S reads sectors 0-31 of a virtio-blk disk one at a
-- time (each polled for before the next) and exits with the number of
-- reads that failed (0xff05: a used element named the wrong descriptor).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
local F = mb.fault
T.need_kvm()

local img = os.tmpname()
assert(os.execute("truncate -s 64K " .. img))

local function blk_machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local disk = m:add(mb.virtio_blk { image = img })
  m:boot_flat { file = T.guest("blk_seq"), mode = "protected" }
  return m, disk
end

local function times_stripped(path)
  local f = assert(io.open(path)); local t = f:read("a"); f:close(); os.remove(path)
  return (t:gsub(',"guest_ns":%d+,"host_ns":%d+', ""))
end

T.case("the same seed 10 times: the same trace (without times) and the same guest result", function()
  local first, code1
  for run = 1, 10 do
    local m, disk = blk_machine()
    local path = os.tmpname()
    local plan = m:faults { seed = 11, trace = path }
    local e = plan:add(F.blk.error { dev = disk, op = "read", p = 0.5 })
    plan:add(F.blk.error { dev = disk, op = "read", sectors = { 7, 7 }, status = "unsupp", p = 0.5 })
    local r = m:run { timeout = 30 }
    T.eq(r.reason, "exit", tostring(r.message))
    local code = tonumber(tostring(r.message):match("wrote (%d+)"))
    local t = times_stripped(path)
    m:close()
    if run == 1 then
      first, code1 = t, code
      T.ok(code > 4 and code < 28, "p = 0.5 failed some reads, not all: " .. tostring(code))
      local _, n = t:gsub("\n", "")
      T.eq(n, 1 + 32 + 1, "the header, a record per read, one for sector 7's rule")
    else
      T.eq(t, first, "run " .. run .. ": the same trace")
      T.eq(code, code1, "run " .. run .. ": the guest saw the same failures")
    end
  end
end)

T.case("replay: the recorded decisions again; an edited trace stops with divergence", function()
  local function run(opts, want_reason)
    local m, disk = blk_machine()
    local plan = m:faults(opts)
    plan:add(F.blk.error { dev = disk, op = "read", p = 0.5 })
    plan:add(F.virtio.bad_used_id { dev = disk, p = 0.02 })
    local r = m:run { timeout = 30 }
    T.eq(r.reason, want_reason, tostring(r.message))
    m:close()
    return r
  end
  local rec, rp, dv = os.tmpname(), os.tmpname(), os.tmpname()
  local r1 = run({ seed = 5, trace = rec }, "exit")
  local r2 = run({ replay = rec, trace = rp }, "exit")
  T.eq(r2.message, r1.message, "the guest ends the same way")
  T.eq(times_stripped(rp), (function()
    local f = assert(io.open(rec)); local t = f:read("a"); f:close()
    return (t:gsub(',"guest_ns":%d+,"host_ns":%d+', ""))
  end)(), "the replay's own trace is the recording")
  local out = {}
  for line in io.lines(rec) do
    if line:find('"rule":1,"ordinal":4,', 1, true) then line = line:gsub('"sector":3,', '"sector":30,') end
    out[#out + 1] = line
  end
  local f = assert(io.open(dv, "w")); f:write(table.concat(out, "\n"), "\n"); f:close()
  local r3 = run({ replay = dv }, "divergence")
  T.ok(tostring(r3.message):find("match #4", 1, true), tostring(r3.message))
  os.remove(rec); os.remove(dv)
end)

T.case("m:on blk: every request, in ring order, asked (nil: unchanged)", function()
  local m, disk = blk_machine()
  local seen, writes = {}, 0
  local h = m:on("blk", { dev = disk, op = "read" }, function(ev)
    T.eq(ev.dev, "blk0")
    seen[#seen + 1] = ev.op .. ":" .. ev.sector .. "+" .. ev.nsectors
  end)
  m:on("blk", { dev = disk, op = "write" }, function() writes = writes + 1 end)
  T.run(m, "exit", 0)
  local want = {}
  for i = 0, 31 do want[#want + 1] = "read:" .. i .. "+1" end
  T.eq(table.concat(seen, " "), table.concat(want, " "))
  T.eq(h:count(), 32); T.eq(writes, 0)
end)

local function blk_answers(ev)
  if ev.sector == 3 or ev.sector == 9 then return F.blk.error { dev = "blk0", status = "ioerr" } end
  if ev.sector == 5 then return false end -- shorthand: an I/O error
  if ev.sector == 1 then return F.blk.latency { dev = "blk0", ms = 1 } end
end

T.case("m:on blk answers: the guest sees the errors; the trace has them; replay forces them", function()
  local m, disk = blk_machine()
  local path = os.tmpname()
  m:faults { seed = 3, trace = path }
  local h = m:on("blk", { dev = disk, op = "read" }, blk_answers)
  T.run(m, "exit", 3)
  T.eq(h:count(), 32)
  m:close()
  local recs, errs = 0, 0
  for line in io.lines(path) do
    if line:find('"rule":900001,', 1, true) then
      recs = recs + 1
      if line:find('"action":"blk.error","status":"ioerr"', 1, true) then errs = errs + 1 end
    end
  end
  T.eq(recs, 32, "a record per answer"); T.eq(errs, 3, "the three errors")
  -- Replay: the function still runs (its side effects happen again) but
  -- the recorded answer is the one the device gets.
  local m2, disk2 = blk_machine()
  m2:faults { replay = path }
  local calls = 0
  m2:on("blk", { dev = disk2, op = "read" }, function() calls = calls + 1 end)
  T.run(m2, "exit", 3)
  T.eq(calls, 32, "Lua called again, its nil overridden")
  m2:close()
  os.remove(path)
end)

T.case("m:on blk: a value that is no blk answer ends the run, naming it", function()
  local m, disk = blk_machine()
  m:on("blk", { dev = disk }, function() return "oops" end)
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "error")
  T.ok(tostring(r.message):find("on blk: the function returned oops, not an answer to a blk event", 1, true),
       tostring(r.message))
end)

T.case("virtio.needs_reset after = rule: the device stops after the third read error", function()
  local function run(opts)
    local m, disk = blk_machine()
    local plan = m:faults(opts)
    local e = plan:add(F.blk.error { dev = disk, op = "read", nth = 3 })
    local nr = plan:add(F.virtio.needs_reset { dev = disk, after = e })
    local cc = plan:add(F.virtio.config_change { dev = disk, after = nr })
    T.run(m, "exit", 0xff04)
    T.eq(plan:fired(nr), 1); T.eq(plan:fired(cc), 1, "a chain: armed by the once fault")
    T.eq(disk:state().needs_reset, true)
    m:close()
  end
  local path = os.tmpname()
  run { seed = 1, trace = path }
  local t = times_stripped(path)
  T.ok(t:find('"rule":2,"ordinal":1,"dev":"blk0","seq":1,"op":"write","sector":0,"nsectors":0,'
              .. '"action":"virtio.needs_reset"', 1, true), t)
  T.ok(t:find('"rule":3,"ordinal":1,[^\n]*virtio.config_change'), t)
end)

T.case("virtio.bad_used_id: the guest finds another descriptor in its used ring", function()
  local m, disk = blk_machine()
  local plan = m:faults { seed = 1 }
  local r = plan:add(F.virtio.bad_used_id { dev = disk, nth = 5 })
  T.run(m, "exit", 0xff05)
  T.eq(plan:fired(r), 1); T.eq(plan:matched(r), 5)
end)

T.case("virtio.needs_reset: the device stops answering; the guest's request never comes back", function()
  local m, disk = blk_machine()
  local plan = m:faults { seed = 1 }
  local n = 0
  m:on("blk", { dev = disk }, function()
    n = n + 1
    if n == 3 then plan:add(F.virtio.needs_reset { dev = disk }) end
  end)
  T.run(m, "exit", 0xff04)
  T.eq(disk:state().needs_reset, true)
  T.ok(disk:state().status & 64 == 64, "DEVICE_NEEDS_RESET in the status")
  -- virtio 1.2, 2.1.2: and a configuration change notification (the
  -- polling guest never acks it, so InterruptStatus still has bit 1)
  T.ok(disk:state().isr & 2 == 2, "config change interrupt pending: isr " .. disk:state().isr)
end)

os.remove(img)
T.done()
