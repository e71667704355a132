-- DMA modes of an isolated virtio-blk (docs/devproc.md, "DMA"): requests/s
-- of tests/guests/blk_seq.S (32 one-sector reads, each notified and polled
-- for before the next, plus its ~20 setup accesses) with the disk in
-- process, isolated with dma = "shared", "granted" (one window over the
-- guest's queue and buffers) and "message" (every ring and buffer access
-- a DMA_READ/DMA_WRITE). 20 fresh machines are made, then their runs
-- timed one after another (/proc/uptime ticks in 10 ms); best of
-- BENCH_ROUNDS (3). Usage: ./moonbox bench/isolate_dma.lua
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local rounds = tonumber(os.getenv("BENCH_ROUNDS")) or 3

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local img = os.tmpname()
assert(os.execute("truncate -s 64K " .. img))

local batch = 20
local function rate(isolate)
  local best = math.huge
  for _ = 1, rounds do
    local ms = {}
    for i = 1, batch do -- made first: the spawns are not timed
      local m = mb.machine { memory = "16M" }
      m:add(mb.pic8259 {})
      m:add(mb.debug_exit { port = 0xf4 })
      m:add(mb.virtio_blk { image = img, mmio = { base = 0xd0000000, size = 0x1000 }, isolate = isolate })
      m:boot_flat { file = root .. "/build/guests/blk_seq.bin", mode = "protected" }
      ms[i] = m
    end
    local t0 = uptime()
    for i = 1, batch do
      local r = ms[i]:run { timeout = 60 }
      assert(r.reason == "exit" and r.exit_code == 0, tostring(r.message))
    end
    local t = uptime() - t0
    if t < best then best = t end
    for i = 1, batch do ms[i]:close() end
  end
  return 32 * batch / best
end

print(string.format("%-44s %12s %9s", "isolated virtio-blk, blk_seq (32 reads)", "requests/s", "vs shared"))
local shared = rate({ dma = "shared" })
for _, c in ipairs {
  { "in process", nil },
  { "dma = \"shared\"", { dma = "shared" } },
  { "dma = \"granted\" (one 28K window)", { dma = "granted", grants = { { 0x10000, 0x7000 } } } },
  { "dma = \"message\"", { dma = "message" } },
} do
  local r = c[2] == nil and rate(nil) or rate(c[2])
  print(string.format("%-44s %12.0f %9.2f", c[1], r, r / shared))
end
os.remove(img)
