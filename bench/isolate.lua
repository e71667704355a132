-- Device processes (docs/devproc.md): the cost of one PIO access to a port80
-- in its own process (isolate = true) against the same device in process,
-- reads (synchronous round trip), writes (each waits for its reply) and
-- posted writes (posted = "socket": sent with vfio-user's no-reply flag;
-- posted = true: into the shared ring, an eventfd doorbell only when the
-- process's ring thread sleeps; both flushed by the guest's hlt at the end). 100,000 accesses per run, interleaved, best of
-- BENCH_ROUNDS (5). Usage: ./moonbox bench/isolate.lua
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local G = root .. "/build/guests/"
local rounds = tonumber(os.getenv("BENCH_ROUNDS")) or 5
local keep = {}

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local function run(guest, isolate, posted)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.port80 { isolate = isolate, posted = posted })
  m:boot_flat { file = G .. guest .. ".bin", mode = "protected" }
  local t0 = uptime()
  local r = m:run { timeout = 120 }
  local t = uptime() - t0
  assert(r.reason == "exit", r.message)
  return t / 100000 * 1e6 -- µs per access, exit included
end

print(string.format("%-44s %12s %12s %9s", "device process (isolate = true)", "isolated", "in process", "ratio"))
for _, g in ipairs { { "bench_pio_in", "PIO read" }, { "bench_pio", "PIO write" },
                     { "bench_pio", "PIO write, posted (socket)", "socket" },
                     { "bench_pio", "PIO write, posted (ring)", true } } do
  local bi, bp = math.huge, math.huge
  for _ = 1, rounds do
    bp = math.min(bp, run(g[1], false))
    bi = math.min(bi, run(g[1], true, g[3]))
  end
  print(string.format("%-44s %12.2f %12.2f %9.2f   extra %.2f us (goal <= 5)",
    g[2] .. " us per access, exit included", bi, bp, bi / bp, bi - bp))
  print(string.format("%-44s %12.0f %12.0f", "  accesses/s", 1e6 / bi, 1e6 / bp))
  print(string.format("isolate %s%s iso_us=%.3f inproc_us=%.3f extra_us=%.3f", g[1],
    g[3] == "socket" and "_posted_socket" or g[3] and "_posted_ring" or "", bi, bp, bi - bp))
end

-- Posted writes side by side, interleaved in each round: in process, posted
-- over the socket, posted into the ring (docs/devproc.md, "Posted writes").
local best = { math.huge, math.huge, math.huge }
for _ = 1, rounds do
  best[1] = math.min(best[1], run("bench_pio", false))
  best[2] = math.min(best[2], run("bench_pio", true, "socket"))
  best[3] = math.min(best[3], run("bench_pio", true, true))
end
print(string.format("%-44s %12.0f %12.0f %12.0f", "posted writes/s: in process, socket, ring",
  1e6 / best[1], 1e6 / best[2], 1e6 / best[3]))
print(string.format("%-44s %12.2f %12.2f", "  ratio to in process: socket, ring",
  best[1] / best[2], best[1] / best[3]))
print(string.format("isolate posted_rows inproc_us=%.3f socket_us=%.3f ring_us=%.3f",
  best[1], best[2], best[3]))
