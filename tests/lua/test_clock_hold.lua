-- Guest time stands still while the machine is held stopped: the machine
-- clock (RTC, PIT, UART timers) and kvmclock stop at the stop and go on at
-- the resume; with irqchip = "kernel" the in-kernel PIT and LAPIC timers
-- and (where KVM honours the TSC offset) the TSC too. Guests: clock_hold
-- (reads the RTC seconds on both sides of a breakpoint), clock_kernel
-- (PIT ticks, LAPIC current count, rdtsc around one; a TSC-deadline timer
-- across a second), spin.
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

-- What this host freezes of the TSC (core/holdtime.c probes it for --info).
local function tsc_frozen()
  local p = io.popen(T.bin .. "/moonbox --info 2>/dev/null")
  local out = p:read("a")
  p:close()
  return out:match("while held: [^\n]*TSC stopped") ~= nil, out:match("TSC runs on %(([^)]*)%)")
end

T.case("irqchip = kernel, pit = kernel: a 2.5 s stop is not seen by the PIT, LAPIC timer, TSC", function()
  local m = mb.machine { memory = "16M", irqchip = "kernel", pit = "kernel" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("clock_kernel"), mode = "protected" }
  m:symbols(T.root .. "/build/guests/clock_kernel.elf")
  m:breakpoint { at = "held", kind = "hw" }
  m:breakpoint { at = "held2", kind = "hw" }
  local r = m:run { timeout = 20 }
  T.eq(r.reason, "breakpoint")
  sleep(2.5)
  r = m:run { timeout = 20 }  -- a LAPIC timer left stopped never ends the window
  T.eq(r.sym, "held2", "the second stop, a TSC-deadline timer armed")
  T.eq(r.cpu:msr(0x6e0), 0, "held: the deadline disarmed")
  r = m:run { timeout = 20 }
  T.eq(r.reason, "exit")
  local function u32(n) return (string.unpack("<I4", m:read(m:sym(n), 4))) end
  local function u64(n) return (string.unpack("<I8", m:read(m:sym(n), 8))) end
  local a, b = u32("ticks_a"), u32("ticks_b")
  T.ok(a > 0, "PIT ticks in the 200 ms before the hold: " .. a)
  -- 200 ms of LAPIC time at 100 Hz is 20 ticks; the 250 the hold missed
  -- would come back to back (KVM's reinjection, ~2 kHz here)
  T.ok(b <= 28, "PIT ticks in the 200 ms after it (no burst): " .. b)
  local ns = (u32("tmcct0") - u32("tmcct1")) * 128
  T.ok(ns < 0.5e9, "LAPIC timer time across the hold: " .. ns .. " ns")
  T.eq(u32("lapic_irqs"), 0, "the one-shot due within the hold did not fire")
  T.ok(u64("dl0") ~= 0, "a deadline was set")
  T.eq(u64("dl1"), u64("dl0"), "IA32_TSC_DEADLINE put back at the resume")
  local frozen, why = tsc_frozen()
  local cyc = u64("tsc1") - u64("tsc0")
  if frozen then
    -- any TSC of 1 GHz or more counts 2.5e9 in 2.5 s
    T.ok(cyc < 1e9, "TSC cycles across the hold: " .. cyc)
  else
    T.skip("TSC across a hold", "not frozen on this host: " .. tostring(why) ..
      " (it moved " .. cyc .. " cycles)")
  end
end)

T.done()
