-- Legacy-device benchmarks, printed as one table (called by bench/run.sh):
--   * interrupt latency: PIT channel 0 in mode 0 (one-shot, re-armed by the
--     guest) raises IRQ0 from a timer on the event thread; the handler
--     latches the count first thing, and as the counter runs on below 0
--     after terminal count, 0x10000 - count = PIT ticks from the due time
--     to the handler; median and p99 of 500 samples, user vs kernel
--     irqchip (and KVM's PIT), guest spinning or halted
--     (tests/guests/bench_irq.S);
--   * PIT at 1 kHz (mode 2) for 10 s: IRQ0s the guest counted vs expected;
--   * UART: bytes/s a guest pushes through THR (`rep outsb`) to a "null"
--     console, against the same guest on a bare KVM_RUN loop
--     (build/bench/rawkvm, interleaved) and on a C sink at port 0x80.
-- Usage: ./moonbox bench/legacy.lua
-- Environment: BENCH_PIT_SECONDS (10).
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local G = root .. "/build/guests/"
local pit_seconds = tonumber(os.getenv("BENCH_PIT_SECONDS")) or 10

local TICK_US = 1e6 / 1193182
local keep = {} -- machines live until exit (see tests/lua/test_legacy.lua)

-- Wall clock with 10 ms resolution (Lua has no finer one).
local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local function u32(s, i) return string.unpack("<I4", s, i) end

local function machine(chip, pit)
  local m = mb.machine { memory = "4M", irqchip = chip, pit = pit }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  local p = m:add(mb.pit8254 { irq = 0 })
  m:add(mb.debug_exit { port = 0xf4 })
  return m, p
end

local function check(r, want, what)
  if r.reason ~= want then
    io.stderr:write(string.format("legacy.lua: %s: %s (%s)\n", what, r.reason, tostring(r.message)))
    os.exit(1)
  end
end

local function pct(sorted, p)
  return sorted[math.max(1, math.ceil(#sorted * p))]
end

local rows = {}
local function row(metric, a, b, ratio, note)
  rows[#rows + 1] = string.format("%-46s %12s %12s %9s   %s", metric, a, b, ratio, note or "")
end
local function ratio(a, b) return b and b > 0 and string.format("%.3f", a / b) or "-" end

-- ---- interrupt latency ---------------------------------------------------------
local function latency(chip, pit, mode)
  local m = machine(chip, pit)
  m:boot_flat { file = G .. "bench_irq.bin", mode = "protected" }
  m:write(0x8000, string.pack("<I4", mode))
  m:write(0x8008, string.pack("<I2", 1193)) -- one-shot after 1 ms
  check(m:run { timeout = 30 }, "exit", "latency " .. chip)
  local s, lat = m:read(0x10000, 1000), {}
  for i = 1, 500 do
    lat[i] = ((0x10000 - string.unpack("<I2", s, 2 * i - 1)) & 0xffff) * TICK_US
  end
  table.sort(lat)
  -- back-to-back latch-and-read sequences: one PIO round trip costs a third
  local c, cal = m:read(0x9000, 128), {}
  for i = 1, 32 do
    local a, b = string.unpack("<I2I2", c, 4 * i - 3)
    cal[i] = ((a - b) & 0xffff) * TICK_US / 3
  end
  table.sort(cal)
  return pct(lat, 0.5), pct(lat, 0.99), pct(cal, 0.5)
end

-- Three rounds, configurations interleaved; per configuration the best
-- (least disturbed) median and p99 of the rounds, as bench/run.sh does.
local ROUNDS = 3
local lat = {}
for _, cfg in ipairs {
  { "user", "user", 0, "spin" }, { "kernel", "user", 0, "spin" },
  { "user", "user", 1, "hlt" }, { "kernel", "user", 1, "hlt" },
  { "kernel", "kernel", 0, "spin" }, { "kernel", "kernel", 1, "hlt" },
} do
  lat[#lat + 1] = { cfg = cfg, med = math.huge, p99 = math.huge, exit_us = math.huge }
end
for _ = 1, ROUNDS do
  for _, l in ipairs(lat) do
    local med, p99, exit_us = latency(l.cfg[1], l.cfg[2], l.cfg[3])
    l.med, l.p99 = math.min(l.med, med), math.min(l.p99, p99)
    l.exit_us = math.min(l.exit_us, exit_us)
  end
end
local function lat_rows(chip_a, chip_b, pit_b, wait)
  local a, b
  for _, l in ipairs(lat) do
    local c = l.cfg
    if c[4] == wait and c[1] == chip_a and c[2] == "user" then a = l end
    if c[4] == wait and c[1] == chip_b and c[2] == pit_b then b = l end
  end
  local what = string.format("IRQ0 us, %s: user vs %s", wait,
    pit_b == "kernel" and "kernel+KVM PIT" or "kernel irqchip")
  row(what .. ", median", string.format("%.1f", a.med), string.format("%.1f", b.med), ratio(a.med, b.med))
  row(what .. ", p99", string.format("%.1f", a.p99), string.format("%.1f", b.p99), ratio(a.p99, b.p99))
end
lat_rows("user", "kernel", "user", "spin")
lat_rows("user", "kernel", "user", "hlt")
lat_rows("user", "kernel", "kernel", "spin")
lat_rows("user", "kernel", "kernel", "hlt")
do
  local e = lat[1].exit_us
  row("one PIO exit, us (guest-timed, for scale)", string.format("%.1f", e), "-", "-", "informational")
end

-- ---- PIT at 1 kHz for N seconds --------------------------------------------------
-- The three machines run at the same time (their vCPUs mostly halt), so host
-- noise hits them alike and the section takes N seconds, not 3N.
local pits = {}
for _, cfg in ipairs { { "user", "user" }, { "kernel", "user" }, { "kernel", "kernel" } } do
  local m, pit = machine(cfg[1], cfg[2])
  m:boot_flat { file = G .. "bench_irq.bin", mode = "protected" }
  m:write(0x8000, string.pack("<I4", 2))
  m:write(0x8008, string.pack("<I2", 1193)) -- 1000.15 Hz
  pits[#pits + 1] = { cfg = cfg, m = m, pit = pit }
end
for _, p in ipairs(pits) do p.t0 = uptime(); p.m:start() end
for i, p in ipairs(pits) do
  check(p.m:wait { timeout = i == 1 and pit_seconds or 0.001 }, "timeout", "pit")
  p.took = uptime() - p.t0
end
for _, p in ipairs(pits) do
  local got = u32(p.m:read(0x800c, 4))
  local want = p.took * 1193182 / 1193
  local what = string.format("PIT 1 kHz %d s, %s", pit_seconds,
    p.cfg[2] == "kernel" and "kernel+KVM PIT" or p.cfg[1] .. " irqchip")
  row(what .. ": IRQs/expected", got, string.format("%.0f", want), ratio(got, want),
    p.cfg[2] == "kernel" and "baseline" or "within 0.5 %")
  local edges = p.pit:state().irq_edges
  if edges then
    row(what .. ": IRQs/PIT edges", got, edges, ratio(got, edges), "informational")
  end
end

-- ---- UART throughput ------------------------------------------------------------
local NB = 100 * 1024
local function uart_rate(port)
  local m = mb.machine { memory = "4M" }
  keep[#keep + 1] = m
  m:add(mb.uart16550 { com = 1, console = "null" })
  if port ~= 0x3f8 then m:add(mb.port80 { pio = { base = port, size = 1 }, name = "sink" }) end
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = G .. "bench_uart.bin", mode = "protected" }
  m:write(0x8000, string.pack("<I2", port))
  local t0 = uptime()
  check(m:run { timeout = 60 }, "exit", "uart")
  local took = math.max(uptime() - t0, 0.01)
  return NB / took, m:stats().io_exits
end
local function raw_rate() -- the same guest on a bare KVM_RUN loop (every port a sink)
  local p = io.popen(root .. "/build/bench/rawkvm " .. G .. "bench_uart.bin 4")
  local line = p:read("a"); p:close()
  return tonumber(line:match("exits_per_s=(%d+)")) or 0
end
local best, best_sink, best_raw, exits = 0, 0, 0, 0
for _ = 1, 3 do -- best of three, interleaved
  best_raw = math.max(best_raw, raw_rate())
  local r, e = uart_rate(0x3f8)
  if r > best then best, exits = r, e end
  best_sink = math.max(best_sink, (uart_rate(0x80)))
end
row("UART THR -> null console B/s (best of 3)", string.format("%.0f", best),
  string.format("%.0f", best_raw), ratio(best, best_raw), "vs bare KVM_RUN exits/s")
row("same guest to a C sink at 0x80, B/s", string.format("%.0f", best_sink),
  string.format("%.0f", best_raw), ratio(best_sink, best_raw), "informational")
row("PIO exits per UART byte", string.format("%.3f", exits / NB), "1", "-", "one exit per byte")

print(string.format("legacy devices (latency: 500 samples, best of %d rounds; PIT latch %.3f us per tick)", ROUNDS, TICK_US))
print(string.format("%-46s %12s %12s %9s   %s", "metric", "moonbox", "baseline", "ratio", "target"))
for _, r in ipairs(rows) do print(r) end
