-- Guest time stands still while the machine is held stopped: the machine
-- clock (RTC, PIT, UART timers) and kvmclock stop at the stop and go on at
-- the resume. Guests: clock_hold (reads the RTC seconds on both sides of a
-- breakpoint), spin.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function sleep(s) os.execute("sleep " .. s) end

T.case("a 2.5 s breakpoint stop: the guest's RTC seconds do not jump", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.rtc {})
  m:boot_flat { file = T.guest("clock_hold"), mode = "protected" }
  m:symbols(T.root .. "/build/guests/clock_hold.elf")
  m:breakpoint { at = "held", kind = "hw" }
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint")
  sleep(2.5)
  r = m:run { timeout = 10 }
  T.eq(r.reason, "exit")
  T.ok(r.exit_code <= 1, "seconds passed in the guest across the hold: " .. r.exit_code)
end)

T.case("paused between runs: RTC and PIT state stand still, then go on", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  local rtc = m:add(mb.rtc {})
  local pit = m:add(mb.pit8254 { irq = 0 })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  T.eq(m:run { timeout = 0.2 }.reason, "timeout")
  local a, pa = rtc:state(), pit:state()
  sleep(2)
  local b, pb = rtc:state(), pit:state()
  T.ok(math.abs(b.wall_ns - a.wall_ns) < 1e6, "RTC moved " .. (b.wall_ns - a.wall_ns) .. " ns")
  T.eq(pb.armed_ago, pa.armed_ago, "PIT ticks since its last edge")
  m:pause()
  sleep(0.5)
  T.ok(math.abs(rtc:state().wall_ns - b.wall_ns) < 1e6, "m:pause(): still")
  T.eq(m:run { timeout = 1 }.reason, "timeout")
  local c = rtc:state()
  T.ok(c.wall_ns - b.wall_ns > 0.8e9 and c.wall_ns - b.wall_ns < 2e9,
    "a 1 s run moved it about 1 s: " .. (c.wall_ns - b.wall_ns))
end)

T.done()
