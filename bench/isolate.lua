-- Device processes (docs/devproc.md): the cost of one PIO access to a port80
-- in its own process (isolate = true) against the same device in process,
-- reads (synchronous round trip) and writes (each also waits for its reply:
-- posted writes are not built yet). 100,000 accesses per run, interleaved,
-- best of BENCH_ROUNDS (5). Usage: ./moonbox bench/isolate.lua
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local G = root .. "/build/guests/"
local rounds = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local keep = {}

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local function run(guest, isolate)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.port80 { isolate = isolate })
  m:boot_flat { file = G .. guest .. ".bin", mode = "protected" }
  local t0 = uptime()
  local r = m:run { timeout = 120 }
  local t = uptime() - t0
  assert(r.reason == "exit", r.message)
  return t / 100000 * 1e6 -- µs per access, exit included
end

print(string.format("%-44s %12s %12s %9s", "device process (isolate = true)", "isolated", "in process", "ratio"))
for _, g in ipairs { { "bench_pio_in", "PIO read" }, { "bench_pio", "PIO write" } } do
  local bi, bp = math.huge, math.huge
  for _ = 1, rounds do
    bp = math.min(bp, run(g[1], false))
    bi = math.min(bi, run(g[1], true))
  end
  print(string.format("%-44s %12.2f %12.2f %9.2f   extra %.2f us (goal <= 5)",
    g[2] .. " us per access, exit included", bi, bp, bi / bp, bi - bp))
  print(string.format("isolate %s iso_us=%.3f inproc_us=%.3f extra_us=%.3f", g[1], bi, bp, bi - bp))
end
