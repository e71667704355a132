-- The legacy PC devices, driven by in-tree guests under KVM, with both
-- interrupt controllers.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

-- Machines stay referenced until the process exits: closing one with an RTC,
-- PIT or UART touches freed timers (mb_machine_destroy frees the event loop,
-- timers included, before the devices' destroy hooks free their timers).
local keep = {}

local function pc(irqchip, pit)
  local m = mb.machine { memory = "16M", irqchip = irqchip, pit = pit }
  keep[#keep + 1] = m
  local pic = m:add(mb.pic8259 {})
  local pit = m:add(mb.pit8254 { irq = 0 })
  m:add(mb.debug_exit { port = 0xf4 })
  return m, pic, pit
end

for _, cfg in ipairs { { "user", "user" }, { "kernel", "user" }, { "kernel", "kernel" } } do
  local chip = cfg[1]
  T.case(string.format("PIT at 1 kHz: 100 IRQs with EOI, masked line quiet, channel 2 via port 0x61 (irqchip %s, pit %s)", cfg[1], cfg[2]), function()
    local m, pic, pit = pc(cfg[1], cfg[2])
    m:boot_flat { file = T.guest("pit_irq"), mode = "protected" }
    local t0 = os.clock()
    local r = m:run { timeout = 30 }
    T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
    T.eq(r.exit_code, 100, "interrupts counted")
    if chip == "user" then
      local s = pic:state()
      T.eq(s.master.imr, 0xff, "IRQ0 masked at the end")
      T.eq(s.master.vector_base, 0x20, "remapped")
      T.ok(s.acks >= 100, "acks " .. s.acks)
      local p = pit:state()
      T.eq(p.channels[1].mode, 2, "channel 0 mode"); T.eq(p.channels[1].reload, 1193, "reload")
      T.eq(p.channels[3].mode, 0, "channel 2 mode")
    end
  end)
end
local function machine(chip, opts)
  local m = mb.machine { memory = "16M", irqchip = chip }
  keep[#keep + 1] = m
  local pic = m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  return m, pic
end

-- ---- UART -------------------------------------------------------------------

-- uart_loop's exit code: 0x55, or step << 8 | the byte the guest saw.
local uart_loop_steps = {
  "IIR with nothing pending (want 0xc1)", "LSR after one looped byte (want 0x61)",
  "IIR with data and THRE (want 0xc4)", "RBR (want 0xa5)", "IIR after RBR (want 0xc2)",
  "IIR after reading THRE (want 0xc1)", "IIR with overrun (want 0xc6)",
  "LSR with overrun (want 0x63)", "IIR after LSR (want 0xc4)", "IIR after FIFO clear (want 0xc1)",
  "LSR after FIFO clear (want 0x60)", "THRE interrupts (want 1)",
  "bytes received before the guest gave up waiting (want all)", "byte out of order",
  "no data-available interrupt", "no character-timeout interrupt", "spurious interrupts (want 0)",
}

for _, chip in ipairs { "user", "kernel" } do
  T.case("UART loopback by IRQ4: IIR priorities, THRE interrupt, 64 bytes in order (irqchip " .. chip .. ")", function()
    local m = machine(chip)
    local com1 = m:add(mb.uart16550 { com = 1, console = "buffer" })
    m:boot_flat { file = T.guest("uart_loop"), mode = "protected" }
    local r = m:run { timeout = 20 }
    if r.reason == "exit" and r.exit_code ~= 0x55 then
      error(string.format("guest: %s: saw 0x%02x", uart_loop_steps[r.exit_code >> 8] or "?",
        r.exit_code & 0xff))
    end
    T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
    local s = com1:state()
    T.eq(s.tx_bytes, 1 + 17 + 64, "bytes written to THR")
    T.ok(s.overruns >= 1, "overrun counted")
    T.eq(com1:output(), "", "loopback sends nothing to the console")
  end)
end

local banner = "moonbox: com1 ready\r\n"

for _, chip in ipairs { "user", "kernel" } do
  T.case("UART buffer console: polled output, input queued before run echoed by IRQ (irqchip " .. chip .. ")", function()
    local m = machine(chip)
    local com1 = m:add(mb.uart16550 { com = 1, console = "buffer" })
    com1:input("ping\n")
    m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
    local r = m:run { timeout = 20 }
    T.eq(string.format("%q", com1:output()), string.format("%q", banner .. "ping\n"), "console output")
    T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
    T.eq(r.exit_code, 5, "bytes echoed")
  end)

  T.case("UART Lua-function console: output chunks, input fed from inside the function (irqchip " .. chip .. ")", function()
    local m = machine(chip)
    local got, com1 = {}, nil
    com1 = m:add(mb.uart16550 { com = 1, console = function(s)
      got[#got + 1] = s
      if table.concat(got) == banner then com1:input("pong\n") end
    end })
    m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
    local r = T.run(m, "exit", 5)
    T.eq(table.concat(got), banner .. "pong\n", "what the function saw")
    T.eq(com1:state().rx_bytes, 5, "bytes received")
  end)
end

-- ---- RTC ----------------------------------------------------------------------

local function bcd(v) return (v >> 4) * 10 + (v & 15) end

-- Unix time of a UTC date (days_from_civil, proleptic Gregorian).
local function unix(y, mo, d, h, mi, s)
  y = mo <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (mo + (mo > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return ((era * 146097 + doe - 719468) * 24 + h) * 3600 + mi * 60 + s
end

-- Run the rtc guest; returns the BCD and binary readings as Unix times, the
-- raw report bytes, and the wall time the run took (s, 10 ms resolution).
local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end
local function rtc_run(chip, opts)
  local m = machine(chip)
  local rep = {}
  m:add(mb.device { name = "report", pio = { base = 0x510, size = 1 },
    write = function(self, off, size, v) rep[#rep + 1] = v end })
  local rtc = m:add(mb.rtc(opts))
  m:boot_flat { file = T.guest("rtc"), mode = "protected" }
  local t0 = uptime()
  local r = m:run { timeout = 20 }
  local took = uptime() - t0
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(#rep, 16, "report bytes")
  -- sec, min, hour, mday, mon, year, century: BCD, then binary
  local function when(i, dec)
    local y = bcd(rep[i + 6]) * 100 + dec(rep[i + 5])  -- century byte is BCD (rtc.h)
    return unix(y, dec(rep[i + 4]), dec(rep[i + 3]), dec(rep[i + 2]), dec(rep[i + 1]), dec(rep[i]))
  end
  return when(1, bcd), when(8, function(v) return v end), rep, r, took, rtc
end

for _, chip in ipairs { "user", "kernel" } do
  T.case("RTC: host time in BCD and binary after UIP, periodic IRQ8 at 1024 Hz x256 (irqchip " .. chip .. ")", function()
    local before = os.time()
    local t_bcd, t_bin, rep, r, took = rtc_run(chip, {})
    local after = os.time()
    T.ok(t_bcd >= before - 2 and t_bcd <= after + 2,
      string.format("BCD time %s within 2 s of the host's %s", os.date("!%c", t_bcd), os.date("!%c", before)))
    T.ok(t_bin >= t_bcd and t_bin <= t_bcd + 2, "binary time follows the BCD one")
    T.eq(rep[15], 0x06, "status B read back: 24h | DM")
    T.eq(r.exit_code, 256, "IRQ8s counted")
    T.eq(rep[16] & 0xc0, 0xc0, "status C in every handler: IRQF | PF")
    T.ok(took >= 0.2, string.format("256 periodic IRQs at 1024 Hz took %.2f s (>= 0.25 s less 10 ms ticks)", took))
  end)
end

for _, fixed in ipairs { { 1700000000, "2023-11-14 22:13:20" }, { 946684799, "1999-12-31 23:59:59" } } do
  T.case("RTC: time = " .. fixed[1] .. " (" .. fixed[2] .. " UTC) read back exactly, BCD and binary", function()
    local t_bcd, t_bin, rep = rtc_run("user", { time = fixed[1] })
    T.eq(os.date("!%Y-%m-%d %H:%M:%S", t_bcd), fixed[2], "BCD reading")
    T.eq(os.date("!%Y-%m-%d %H:%M:%S", t_bin), fixed[2], "binary reading")
    T.eq(rep[7], fixed[1] < 946684800 and 0x19 or 0x20, "century byte")
  end)
end

-- ---- i8042 reset, port 0x80 ------------------------------------------------------

for _, chip in ipairs { "user", "kernel" } do
  T.case("i8042: command 0xfe ends run with reason reset; port80 keeps the last POST code (irqchip " .. chip .. ")", function()
    local m = machine(chip)
    local kbc = m:add(mb.i8042 {})
    local post = m:add(mb.port80 {})
    m:boot_flat { file = T.guest("reset"), mode = "protected" }
    T.run(m, "reset")
    T.eq(kbc:state().resets, 1, "resets")
    local s = post:state()
    T.eq(s.last_write, 0x5a, "last POST code"); T.eq(s.writes, 2, "POST writes")
  end)
end

T.case("port80 without an i8042: 0xfe to port 0x64 is dropped, the guest goes on", function()
  local m = machine("user")
  local post = m:add(mb.port80 {})
  m:boot_flat { file = T.guest("reset"), mode = "protected" }
  T.run(m, "exit", 0x99)
  T.eq(post:state().last_write, 0x5a, "last POST code")
end)

-- ---- names, inventory and state ---------------------------------------------------

for _, chip in ipairs { "user", "kernel" } do
  T.case("legacy devices: default names, m:device, info (irqchip " .. chip .. ")", function()
    local m = mb.machine { memory = "16M", irqchip = chip, pit = chip }
    keep[#keep + 1] = m
    local pic = m:add(mb.pic8259 {})
    local pit = m:add(mb.pit8254 {})
    local rtc = m:add(mb.rtc { time = 1700000000 })
    local kbc = m:add(mb.i8042 {})
    local post = m:add(mb.port80 {})
    local sink = m:add(mb.port80 { pio = { base = 0x92, size = 1 } })
    local dx = m:add(mb.debug_exit {})
    for name, d in pairs { pic = pic, pit = pit, rtc = rtc, i8042 = kbc, port80 = post,
                           ["port80#2"] = sink, debug_exit = dx } do
      T.eq(d.name, name, "default name")
      T.ok(m:device(name) == d, "m:device(" .. name .. ")")
    end
    T.eq(#m:devices(), 7, "devices")
    if chip == "kernel" then
      T.eq(pic:state().kernel, true, "kernel PIC state")
      T.eq(pit:state().kernel, true, "kernel PIT state")
      T.eq(#pic:info().ranges, 0, "kernel PIC: no ranges")
    else
      T.eq(#pic:info().ranges, 3, "PIC ranges")
      T.eq(pit:info().irq, 0, "PIT line")
      T.eq(pit:state().channels[1].rw, 3, "PIT after reset")
    end
    T.eq(rtc:info().irq, 8, "RTC line")
    T.eq(rtc:state().unix_time // 10, 170000000, "RTC time")
    T.raises(function() m:add(mb.rtc { name = "rtc-b", irq = 9 }) end, "overlaps rtc")
    T.eq(m:device("rtc-b"), nil, "a failed add leaves nothing")
    T.eq(#m:devices(), 7, "devices after the failed add")
    T.raises(function() m:add(mb.i8042 { name = "rtc" }) end, "already a device")
    local m2 = mb.machine { memory = "16M", irqchip = chip }
    keep[#keep + 1] = m2
    local named = m2:add(mb.rtc { name = "clock" })
    T.ok(m2:device("clock") == named, "a given name")
  end)
end

T.case("legacy devices: set_state round trips, errors name the field", function()
  local m = mb.machine { memory = "16M", irqchip = "user", pit = "user" }
  keep[#keep + 1] = m
  local pic = m:add(mb.pic8259 {})
  local pit = m:add(mb.pit8254 {})
  local rtc = m:add(mb.rtc { cmos = { [0x40] = 0x12 } })
  local kbc = m:add(mb.i8042 {})
  local post = m:add(mb.port80 { fill = 0 })
  for _, d in ipairs { pic, pit, rtc, kbc, post } do
    d:set_state(d:state())
  end
  pic:set_state { master = { imr = 0xfb, vector_base = 0x20 } }
  T.eq(pic:state().master.imr, 0xfb, "PIC imr after set_state")
  T.eq(pic:state().master.vector_base, 0x20, "PIC vector_base")
  T.raises(function() pic:set_state { master = { init_step = 1 } } end, "master.init_step")
  T.raises(function() pic:set_state { slave = { nope = 1 } } end, "slave.nope")
  T.eq(pic:state().master.imr, 0xfb, "unchanged after an error")
  T.raises(function() pit:set_state { channels = { { mode = 7 } } } end, "channels[1].mode")
  T.raises(function() pit:set_state { channels = { [4] = {} } } end, "channels")
  pit:set_state { channels = { [3] = { gate = true } }, port61_bits = 1 }
  T.eq(pit:state().channels[3].gate, true, "PIT gate after set_state")
  T.eq(pit:state().port61 & 1, 1, "port 0x61 bit 0")
  local s = rtc:state()
  T.eq(s.cmos:byte(0x41), 0x12, "cmos option")
  T.eq(rtc:cmos(0x40), 0x12, "rtc:cmos")
  T.raises(function() rtc:set_state { flags = 0x80 } end, "flags")
  T.raises(function() rtc:set_state { cmos = "short" } end, "cmos")
  rtc:set_state { wall_ns = 946684799 * 1000000000 }
  T.eq(rtc:state().unix_time, 946684799, "RTC time after set_state")
  T.raises(function() kbc:set_state { pending = 0x55 } end, "pending")
  kbc:set_state { obf = true, out = 0x42 }
  T.eq(kbc:state().status & 1, 1, "i8042 OBF after set_state")
  post:set_state { last_write = 0x99 }
  T.eq(post:state().last_write, 0x99, "port80 after set_state")
  T.eq(post:state().fill, 0, "fill option")
  T.raises(function() post:set_state { version = 99 } end, "version")
end)

T.done()
