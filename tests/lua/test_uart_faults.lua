-- UART faults (F.uart.drop / corrupt / error) on tests/guests/uart_echo.S:
-- it prints a banner polling LSR, then echoes by interrupt what it receives
-- until a '\n', and exits with the number of bytes it echoed. What the
-- guest reads from LSR is watched with a tap (guest-visible line errors).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
local F = mb.fault
T.need_kvm()

local banner = "moonbox: com1 ready\r\n"

local function echo_machine(input)
  local m = mb.machine { memory = "16M" }
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local com1 = m:add(mb.uart16550 { com = 1, console = "buffer" })
  if input then com1:input(input) end
  m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
  local lsr = 0
  m:tap { pio = 0x3fd, access = "read", fn = function(ev) lsr = lsr | ev.value end }
  return m, com1, function() return lsr end
end

T.case("tx drop and corrupt: the console misses or gets a changed byte", function()
  local m, com1 = echo_machine("ok\n")
  local plan = m:faults { seed = 1 }
  local drop = plan:add(F.uart.drop { dev = com1, dir = "tx", nth = 3 })
  local bad = plan:add(F.uart.corrupt { dev = "com1", dir = "tx", nth = 5, bits = 1 })
  T.run(m, "exit", 3)
  local out, want = com1:output(), banner .. "ok\n"
  T.eq(#out, #want - 1, "one byte fewer: " .. out)
  T.eq(out:sub(1, 2), "mo", "bytes before the drop")
  T.eq(out:sub(3, 3), "n", "the 3rd (the second o) is gone")
  local c = out:byte(4) ~ want:byte(5) -- the 5th byte sent is the 4th that arrived
  T.ok(c ~= 0 and c & (c - 1) == 0, string.format("exactly one bit flipped: 0x%x", c))
  T.eq(out:sub(5), want:sub(6), "the rest untouched")
  T.eq(plan:fired(drop), 1); T.eq(plan:fired(bad), 1)
end)

T.case("rx drop: the guest never sees the byte", function()
  local m, com1 = echo_machine("ping\n")
  local plan = m:faults { seed = 1 }
  plan:add(F.uart.drop { dev = com1, dir = "rx", nth = 2 })
  T.run(m, "exit", 4)
  T.eq(com1:output(), banner .. "png\n")
end)

T.case("rx corrupt changes what the guest reads", function()
  local m, com1 = echo_machine("ping\n")
  local plan = m:faults { seed = 7 }
  plan:add(F.uart.corrupt { dev = com1, dir = "rx", nth = 1, bits = 8 })
  T.run(m, "exit", 5)
  T.eq(com1:output(), banner .. string.char(("p"):byte() ~ 0xff) .. "ing\n", "every bit of 'p' flipped")
end)

T.case("rx line errors: parity and framing in LSR with the byte, overrun loses it, break is a 0", function()
  for _, k in ipairs {
    { "parity", 0x04, "ping\n", 5 }, { "framing", 0x08, "ping\n", 5 },
    { "overrun", 0x02, "png\n", 4 }, { "break", 0x10, "\0ing\n", 5 },
  } do
    local m, com1, lsr = echo_machine("ping\n")
    local plan = m:faults { seed = 1 }
    local r = plan:add(F.uart.error { dev = com1, kind = k[1], nth = k[1] == "break" and 1 or 2 })
    T.run(m, "exit", k[4])
    T.eq(com1:output(), banner .. k[3], k[1] .. ": what was echoed")
    T.eq(lsr() & 0x1e, k[2], string.format("%s: the guest read LSR bit 0x%x", k[1], k[2]))
    T.eq(plan:fired(r), 1, k[1] .. " fired once")
    if k[1] == "overrun" then T.eq(com1:state().overruns, 1, "overrun counted") end
  end
  local m, _, lsr = echo_machine("ping\n")
  T.run(m, "exit", 5)
  T.eq(lsr() & 0x1e, 0, "no fault: no line error")
end)

T.case("seeded probability: the same seed gives the same bytes, and the trace says so", function()
  local outs = {}
  local trace = os.tmpname()
  for run = 1, 3 do
    local m, com1 = echo_machine("abcdefghijklmnop\n")
    local plan = m:faults { seed = run < 3 and 42 or 43, trace = run == 1 and trace or nil }
    plan:add(F.uart.corrupt { dev = com1, dir = "tx", p = 0.3 })
    m:run { timeout = 20 }
    plan:close()
    outs[run] = com1:output()
  end
  T.eq(outs[1], outs[2], "seed 42 twice")
  T.ok(outs[1] ~= outs[3], "another seed, other bytes")
  local m, com1 = echo_machine("abcdefghijklmnop\n")
  local plan = m:faults { replay = trace }
  plan:add(F.uart.corrupt { dev = com1, dir = "tx", p = 0.3 })
  m:run { timeout = 20 }
  T.eq(com1:output(), outs[1], "a replay of the trace gives the same bytes")
  local f = assert(io.open(trace)); local t = f:read("a"); f:close(); os.remove(trace)
  T.ok(t:find('"action":"uart.corrupt"', 1, true) and t:find('"dev":"com1"', 1, true), t:sub(1, 300))
end)

T.case("the same seed 10 times: the same decisions (traces without their times) and bytes", function()
  -- The decisions: each record without its times and without seq (the
  -- device's count of events in both directions: how the console's rx
  -- bytes interleave with the guest's tx ones is host timing), sorted.
  local function strip(path)
    local lines = {}
    for l in io.lines(path) do
      lines[#lines + 1] = l:gsub(',"guest_ns":%d+,"host_ns":%d+', ""):gsub('"seq":%d+,', "")
    end
    os.remove(path)
    table.sort(lines)
    return table.concat(lines, "\n") .. "\n"
  end
  local first, out1
  for run = 1, 10 do
    local m, com1 = echo_machine("the quick brown fox jumps\n")
    local path = os.tmpname()
    local plan = m:faults { seed = 7, trace = path }
    local drop = plan:add(F.uart.drop { dev = com1, dir = "tx", p = 0.5 })
    local par = plan:add(F.uart.error { dev = com1, kind = "parity", p = 0.5 })
    T.run(m, "exit", 26)
    local fired = { plan:fired(drop), plan:fired(par) }
    local out = com1:output()
    plan:close()
    m:close()
    local t = strip(path)
    if run == 1 then
      first, out1 = t, out
      local _, n = t:gsub("\n", "")
      T.eq(n, 1 + 2 * 26 + #banner, "a record per byte and rule (and the header)")
      T.ok(fired[1] > 5 and fired[1] < 40 and fired[2] > 3 and fired[2] < 23,
        string.format("p = 0.5 acted on some bytes, not all: %d, %d", fired[1], fired[2]))
    else
      T.eq(t, first, "run " .. run .. ": the same trace")
      T.eq(out, out1, "run " .. run .. ": the same bytes")
    end
  end
end)

T.case("uart fault option errors", function()
  local m, com1 = echo_machine()
  local plan = m:faults { seed = 1 }
  T.raises(function() F.uart.error { dev = com1 } end, "kind: missing")
  T.raises(function() F.uart.error { dev = com1, kind = "noise" } end, "kind")
  T.raises(function() F.uart.error { dev = com1, kind = "parity", dir = "tx" } end, "(rx) only")
  T.raises(function() F.uart.corrupt { dev = com1, bits = 9 } end, "bits: 9")
  T.raises(function() F.uart.drop { dev = com1, sectors = { 1, 2 } } end, "sectors")
  T.raises(function() F.uart.drop { dev = com1, dir = "up" } end, "dir")
  T.raises(function() plan:add(F.uart.drop { dev = "debug_exit" }) end, "not a uart16550")
  T.raises(function() plan:add(F.blk.error { dev = com1 }) end, "not a virtio_blk")
end)

T.done()
