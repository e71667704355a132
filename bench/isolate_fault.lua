-- Fault rules on an isolated virtio-blk (docs/faults.md, "Isolated devices:
-- rules inside the model"): requests/s of tests/guests/blk_seq.S (32
-- one-sector reads, each notified and polled for before the next) with no
-- plan, with a rule that never matches on an op the guest never does
-- (writes: the process lets reads by without asking), and with one that
-- never matches on the reads themselves (sectors past the disk: every read
-- asks the VMM, which decides "none"); the same in process for scale. 20
-- fresh machines per round are made first, then their runs timed one after
-- another (/proc/uptime ticks in 10 ms; BENCH_BATCH sets 20); the rows interleave within each
-- round; best of BENCH_ROUNDS (5). Usage: ./moonbox bench/isolate_fault.lua
local mb = require "moonbox"
local F = mb.fault
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local rounds = tonumber(os.getenv("BENCH_ROUNDS")) or 5

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local img = os.tmpname()
assert(os.execute("truncate -s 64K " .. img))

local batch = tonumber(os.getenv("BENCH_BATCH")) or 20
local function time(isolate, rule)
  local ms = {}
  for i = 1, batch do -- made first: the spawns are not timed
    local m = mb.machine { memory = "16M" }
    m:add(mb.pic8259 {})
    m:add(mb.debug_exit { port = 0xf4 })
    local d = m:add(mb.virtio_blk { image = img, mmio = { base = 0xd0000000, size = 0x1000 },
                                    isolate = isolate })
    if rule then m:faults { seed = 1 }:add(rule(d)) end
    m:boot_flat { file = root .. "/build/guests/blk_seq.bin", mode = "protected" }
    ms[i] = m
  end
  local t0 = uptime()
  for i = 1, batch do
    local r = ms[i]:run { timeout = 60 }
    assert(r.reason == "exit" and r.exit_code == 0, tostring(r.message))
  end
  local t = uptime() - t0
  for i = 1, batch do ms[i]:close() end
  return t
end

local writes = function(d) return F.blk.error { dev = d, op = "write" } end
local far = function(d) return F.blk.error { dev = d, op = "read", sectors = { 1 << 20, 1 << 20 } } end
local rows = {
  { "isolated, no plan", true, nil },
  { "isolated, a rule on writes (never asked)", true, writes },
  { "isolated, a rule on reads, never matching", true, far },
  { "in process, no plan", false, nil },
  { "in process, a rule on reads, never matching", false, far },
}
local best = {}
for _ = 1, rounds do
  for i, r in ipairs(rows) do
    local t = time(r[2], r[3])
    if not best[i] or t < best[i] then best[i] = t end
  end
end
print(string.format("%-46s %12s %9s", "virtio-blk fault rules, blk_seq (32 reads)", "requests/s", "vs none"))
for i, r in ipairs(rows) do
  local base = r[2] and best[1] or best[4]
  print(string.format("%-46s %12.0f %9.2f", r[1], 32 * batch / best[i], base / best[i]))
end
os.remove(img)
