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

T.case("m:on blk: every request, in ring order, after the fact", function()
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
