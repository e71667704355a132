-- Bus taps and I/O traces (m:tap, m:trace) on tiny guests.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

-- pio.S: writes 0x11, 0x2233, 0x44556677 to 0x520, reads 1/2/4 bytes back
-- and echoes each to 0x524.
local function pio_machine(regs_value)
  local m = mb.machine { memory = "2M" }
  m:add(mb.debug_exit { port = 0xf4 })
  local got, echoes = {}, {}
  m:add(mb.device { name = "regs", pio = { base = 0x520, size = 4 },
    read = function(_, _, size) return regs_value & ((1 << (8 * size)) - 1) end,
    write = function(_, _, size, v) got[#got + 1] = { size, v } end })
  m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 },
    write = function(_, _, size, v) echoes[#echoes + 1] = { size, v } end })
  m:boot_flat { file = T.guest("pio"), mode = "protected" }
  return m, got, echoes
end

T.case("tap sees every write and read of its range, in order, with cpu and count", function()
  local m, got = pio_machine(0x0a0b0c0d)
  local seen = {}
  local t = m:tap { pio = { base = 0x520, size = 4 }, fn = function(ev)
    seen[#seen + 1] = string.format("%s %s 0x%x/%d 0x%x cpu%d #%d", ev.space,
      ev.write and "w" or "r", ev.addr, ev.size, ev.value, ev.cpu, ev.count)
  end }
  T.run(m, "exit", 0)
  T.eq(table.concat(seen, "\n"), table.concat({
    "pio w 0x520/1 0x11 cpu0 #0", "pio w 0x520/2 0x2233 cpu0 #1",
    "pio w 0x520/4 0x44556677 cpu0 #2", "pio r 0x520/1 0xd cpu0 #3",
    "pio r 0x520/2 0xc0d cpu0 #4", "pio r 0x520/4 0xa0b0c0d cpu0 #5" }, "\n"))
  T.eq(t:count(), 6, "count")
  T.eq(#got, 3, "the device still got the writes")
end)

T.case("tap changes values both ways and drops writes", function()
  local m, got, echoes = pio_machine(0x0a0b0c0d)
  m:tap { pio = 0x520, access = "write", fn = function(ev)
    if ev.size == 1 then return false end      -- the byte write never arrives
    if ev.size == 2 then return 0xbeef end     -- the word is changed
  end }
  m:tap { pio = 0x520, access = "read", fn = function(ev)
    return ev.value + 1                        -- the guest reads one more
  end }
  T.run(m, "exit", 0)
  T.eq(#got, 2, "the dropped write did not reach the device")
  T.eq(got[1][2], 0xbeef, "changed write"); T.eq(got[2][2], 0x44556677, "untouched write")
  T.eq(echoes[1][2], 0x0e, "byte read + 1"); T.eq(echoes[2][2], 0x0c0e, "word read + 1")
  T.eq(echoes[3][2], 0x0a0b0c0e, "dword read + 1")
end)

T.case("a value wider than the access is cut to its size", function()
  local m, _, echoes = pio_machine(0)
  m:tap { pio = 0x520, access = "read", fn = function() return -1 end }
  T.run(m, "exit", 0)
  T.eq(echoes[1][2], 0xff); T.eq(echoes[2][2], 0xffff); T.eq(echoes[3][2], 0xffffffff)
end)

T.case("a removed tap sees nothing; others keep their order", function()
  local m = pio_machine(0)
  local a, b = 0, 0
  local ta = m:tap { pio = 0x524, fn = function() a = a + 1 end }
  m:tap { pio = 0x524, fn = function() b = b + 1 end }
  ta:remove()
  ta:remove() -- twice is harmless
  T.run(m, "exit", 0)
  T.eq(a, 0, "removed"); T.eq(b, 3, "kept")
  T.ok(tostring(ta):find("removed"), tostring(ta))
end)

T.case("mmio tap (long mode, 8-byte access)", function()
  local m = mb.machine { memory = "2M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.device { name = "mmio", mmio = { base = 0xd0000000, size = 0x1000 },
    read = function() return 0x1122334455667788 end, write = function() end })
  m:boot_flat { file = T.guest("mmio"), mode = "long" }
  local w8
  m:tap { mmio = { base = 0xd0000008, size = 8 }, access = "write", fn = function(ev)
    w8 = string.format("%s 0x%x/%d 0x%x", ev.space, ev.addr, ev.size, ev.value) end }
  T.run(m, "exit", 0)
  T.eq(w8, "mmio 0xd0000008/8 0x8899aabbccddeeff")
end)

T.case("trace to a file: one line per access, C only", function()
  local m = pio_machine(0x55)
  local path = os.tmpname()
  local tr = m:trace { pio = { base = 0x520, size = 8 }, file = path }
  T.run(m, "exit", 0)
  tr:stop()
  local lines = {}
  for l in io.lines(path) do lines[#lines + 1] = l end
  os.remove(path)
  T.eq(#lines, 9, "3 writes + 3 reads of 0x520, 3 echo writes")
  T.ok(lines[1]:match("^%d+ cpu0 pio w 0x520/1 0x11$"), lines[1])
  T.ok(lines[4]:match("^%d+ cpu0 pio r 0x520/1 0x55$"), lines[4])
  T.ok(lines[5]:match("^%d+ cpu0 pio w 0x524/1 0x55$"), lines[5])
  T.eq(tr:count(), 9, "count, also once stopped")
end)

T.case("trace fn's return is ignored (it cannot change values)", function()
  local m, got = pio_machine(0)
  local n = 0
  m:trace { pio = 0x520, fn = function() n = n + 1; return false end }
  T.run(m, "exit", 0)
  T.eq(n, 6); T.eq(#got, 3, "writes not dropped by a trace")
end)

T.case("an error in a tap ends the run with reason error", function()
  local m = pio_machine(0)
  m:tap { pio = 0x520, fn = function() error("boom") end }
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "error")
  T.ok(r.message:find("tap fn at pio 0x520", 1, true) and r.message:find("boom", 1, true), r.message)
end)

T.case("wait_for { io }: stops after the first matching access, the run goes on", function()
  local m, _, echoes = pio_machine(0x0a0b0c0d)
  local r = m:wait_for { io = { pio = 0x524, access = "write", value = 0x0c0d }, timeout = 10 }
  T.eq(r.reason, "io")
  T.eq(r.io.addr, 0x524); T.eq(r.io.size, 2); T.eq(r.io.value, 0x0c0d); T.eq(r.io.write, true)
  T.eq(#echoes, 2, "the access completed, the next not yet made")
  T.eq(m:run { timeout = 10 }.reason, "exit", "the waiter is gone: the run goes on to the end")
  T.eq(#echoes, 3)
  T.raises(function() m:wait_for { io = { pio = 1, value = "x" } } end, "io.value")
  T.raises(function() m:wait_for { io = { } } end, "io: give one of pio or mmio")
end)

-- The voluntary context switches of the script's thread (the process's
-- first: /proc/self/status is its line, not the vCPU thread's).
local function waiter_switches()
  local f = assert(io.open("/proc/self/status"))
  local n = tonumber(f:read("a"):match("\nvoluntary_ctxt_switches:%s*(%d+)"))
  f:close()
  return n
end

T.case("a tap call borrows the waiter's world without waking the waiter", function()
  -- bench_pio.S: 100,000 writes to port 0x80. Each tap call runs on the
  -- vCPU thread in the world the script's thread lends while it sleeps
  -- in m:run; it used to broadcast the machine's condition variable on
  -- the way out, waking that thread for nothing, a thread switch per
  -- call (docs/debugging.md, "I/O taps and traces": the cost).
  local m = mb.machine { memory = "2M" }
  m:add(mb.port80 { pio = { base = 0x80, size = 1 } })
  m:add(mb.debug_exit { port = 0xf4, size = 1 })
  m:boot_flat { file = T.guest("bench_pio"), at = 0x100000, mode = "protected" }
  local n, opened = 0, 0
  local t = m:tap { pio = 0x80, fn = function()
    n = n + 1
    if n % 25000 == 1 then -- the waiter's world: io is there (no filter)
      local f = io.open("/proc/self/stat")
      if f then opened = opened + 1; f:close() end
    end
  end }
  local before = waiter_switches()
  T.run(m, "exit", 0)
  local woke = waiter_switches() - before
  T.eq(n, 100000, "every write seen"); T.eq(t:count(), 100000, "count")
  T.eq(opened, 4, "io.open in the tap's fn")
  -- a few wake-ups are the run's own (start, the stop, a probe a second)
  T.ok(woke < 1000, "the waiter woke " .. woke .. " times for 100000 calls")
end)

T.case("option errors name the key", function()
  local m = mb.machine { memory = "1M" }
  T.raises(function() m:tap { fn = print } end, "give one of pio or mmio")
  T.raises(function() m:tap { pio = 1, mmio = 2, fn = print } end, "give one of pio or mmio")
  T.raises(function() m:tap { pio = 0x3f8 } end, "fn: missing")
  T.raises(function() m:tap { pio = 0x3f8, fn = 1 } end, "fn: expected a function")
  T.raises(function() m:tap { pio = 0x3f8, fn = print, access = "x" } end, "access")
  T.raises(function() m:tap { pio = 0x3f8, fn = print, colour = 1 } end, "colour")
  T.raises(function() m:tap { pio = { base = 0xfff0, size = 0x20 }, fn = print } end, "beyond the port space")
  T.raises(function() m:trace { pio = 0x3f8 } end, "give one of fn or file")
  T.raises(function() m:trace { pio = 0x3f8, file = "/nonexistent/x" } end, "cannot open")
end)

T.done()
