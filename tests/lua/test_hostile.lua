-- The hostile-guest campaign: tests/guests/hostile.S hammers every device
-- of the default PC and a virtio-blk and a virtio-rng window (random
-- values and widths, unaligned and straddling accesses, string I/O across
-- a page boundary, garbage virtqueues, resets mid-request), one machine per
-- seed, for MB_HOSTILE_SECONDS (20; longer by hand or from make fuzz). For
-- each seed the VMM must stay up: m:run returns (a guest that resets itself
-- through the 8042 or wrecks its own code is its business: any reason but
-- a crash is fine), and every device's state() reads and set_state(state())
-- gives the same state back. MB_HOSTILE_SEED starts elsewhere (a failing
-- seed is printed); MB_HOSTILE_OPS sets operations per seed (3000).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local seconds = tonumber(os.getenv("MB_HOSTILE_SECONDS") or "") or 20
local first = tonumber(os.getenv("MB_HOSTILE_SEED") or "") or 1
local ops = tonumber(os.getenv("MB_HOSTILE_OPS") or "") or 3000
local P, SCRATCH, SCRATCH_SIZE = 0x8000, 0x10000, 0x20000

local img = os.tmpname()
do
  local f = assert(io.open(img, "wb")); f:write(string.rep("\0", 64 * 1024)); f:close()
end

-- Garbage for the rings, but plausible garbage: half the 16-byte slots
-- look like descriptors (addresses in SCRATCH, small lengths, NEXT and
-- WRITE at random, now and then INDIRECT, a small next), a quarter like
-- virtio-blk request headers (in, out, flush, get-id, discard... sectors
-- near the disk), the rest is noise.
local function garbage(seed)
  local rng = seed
  local function r() -- xorshift32, like the guest's
    rng = rng ~ (rng << 13) & 0xffffffff; rng = rng ~ (rng >> 17); rng = rng ~ (rng << 5) & 0xffffffff
    return rng
  end
  local t = {}
  for i = 1, SCRATCH_SIZE // 16 do
    local k = r() & 3
    if k <= 1 then
      local flags = r() & 3
      if r() & 7 == 0 then flags = flags | 4 end
      t[i] = string.pack("<I8I4I2I2", SCRATCH + (r() & 0x1fff0), r() & 0x7ff, flags, r() & 0x7f)
    elseif k == 2 then
      local types = { 0, 1, 4, 8, 11, 13, r() }
      t[i] = string.pack("<I4I4I8", types[r() % #types + 1], r(), r() & 0xff)
    else
      t[i] = string.pack("<I4I4I4I4", r(), r(), r(), r())
    end
  end
  return table.concat(t)
end

-- Fields that follow the host's clock between two state() calls (the
-- machine is stopped, its clock is not), and by how much they may move in
-- a second: ns, PIT ticks, or anything (counters and levels read now).
local any = math.huge
local moving = { wall_ns = 1e9, eval_ago = 1e9, timer_ns = any, timeout_ns = 1e9,
  armed_ago = 1193182, load_in = 1193182, null_ticks = 1193182, count = any, out = any, null_count = any, port61 = any,
  sec = any, min = any, hour = any, wday = any, irq_edges = any }

-- Equal as data: the state tables are trees of scalars.
local function same(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    local key = path:match("([^.]+)$")
    if moving[key] == any and type(a) == type(b) then return true end
    if moving[key] and math.type(a) and math.type(b) and math.abs(a - b) <= moving[key] then
      return true
    end
    if a ~= b and not (a ~= a and b ~= b) then
      return false, string.format("%s: %s then %s", path, tostring(a), tostring(b))
    end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": appeared" end
  end
  return true
end

local function one(seed, reasons)
  local m = mb.machine { memory = "4M" }
  local devs = {
    pic = m:add(mb.pic8259 {}),
    pit = m:add(mb.pit8254 { irq = 0 }),
    com1 = m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "buffer" }),
    rtc = m:add(mb.rtc {}),
    i8042 = m:add(mb.i8042 {}),
    port80 = m:add(mb.port80 {}),
    blk = m:add(mb.virtio_blk { image = img }),
    rng = m:add(mb.virtio_rng {}),
  }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("hostile"), mode = "protected" }
  m:write(SCRATCH, garbage(seed))
  m:write(P, string.pack("<I4I4I4I4I4", seed, ops, devs.blk:state().base, devs.rng:state().base, 0))
  local r = m:run { timeout = 30 }
  reasons[r.reason] = (reasons[r.reason] or 0) + 1
  local done = string.unpack("<I4", m:read(P + 16, 4))
  for name, d in pairs(devs) do
    local ok, s = pcall(d.state, d)
    if not ok then error(string.format("seed %d: %s:state(): %s", seed, name, s), 0) end
    local ok2, err = pcall(d.set_state, d, s)
    if not ok2 then error(string.format("seed %d: %s:set_state(state()): %s", seed, name, err), 0) end
    local same_, why = same(s, d:state(), name)
    if not same_ then error(string.format("seed %d: set_state(state()) changed %s", seed, why), 0) end
  end
  local st = devs.blk:state().stats
  reasons.blk_requests = (reasons.blk_requests or 0) + st.reads + st.writes + st.flushes +
    st.get_ids + st.discards + st.unsupp + st.ioerr
  m:close()
  return done, r
end

T.case(string.format("hostile guest for %d s: the VMM stays up, devices stay defined", seconds), function()
  local reasons, total, seeds = {}, 0, 0
  local t0 = os.time()
  local seed = first
  repeat
    local done = one(seed, reasons)
    total = total + done
    seeds = seeds + 1
    seed = seed + 1
  until os.time() - t0 >= seconds
  local rs = {}
  local requests = reasons.blk_requests or 0
  reasons.blk_requests = nil
  for k, v in pairs(reasons) do rs[#rs + 1] = k .. "=" .. v end
  table.sort(rs)
  print(string.format("# %d seeds (%d-%d), %d guest operations survived in %d s; ends: %s; " ..
    "virtio-blk requests completed: %d", seeds, first, seed - 1, total, os.time() - t0,
    table.concat(rs, " "), requests))
  T.ok(seeds > 0 and total > 0, "operations ran")
  T.ok((reasons.exit or 0) > 0, "some seeds ran to the end")
end)

os.remove(img)
T.done()
