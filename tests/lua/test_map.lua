-- m:mtree() and m:irqs() on a small PC (8259 pair, 8254, UART, RTC) after
-- the pit_irq guest counted 100 timer interrupts.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function pc(irqchip)
  local m = mb.machine { memory = "16M", irqchip = irqchip }
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.pic8259 {})
  m:add(mb.pit8254 { irq = 0 })
  m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "null" })
  m:add(mb.rtc {})
  m:add(mb.device { name = "probe", mmio = { base = 0xd0000000, size = 0x1000 } })
  m:boot_flat { file = T.guest("pit_irq"), mode = "protected" }
  return m
end

local function find(t, f)
  for _, e in ipairs(t) do
    local ok = true
    for k, v in pairs(f) do ok = ok and e[k] == v end
    if ok then return e end
  end
end

T.case("mtree: both buses and RAM, owners by name and kind", function()
  local m = pc()
  local t = m:mtree()
  local e = find(t, { bus = "pio", base = 0x3f8 })
  T.ok(e, "COM1 listed")
  T.eq(e.name, "com1"); T.eq(e.kind, "uart16550"); T.eq(e.size, 8); T.eq(e.last, 0x3ff)
  T.eq(find(t, { bus = "pio", base = 0x20 }).kind, "pic8259")
  T.eq(find(t, { bus = "pio", base = 0x40 }).name, "pit")
  T.eq(find(t, { bus = "pio", base = 0x70 }).kind, "rtc")
  T.eq(find(t, { bus = "pio", base = 0xf4 }).kind, "debug_exit")
  local p = find(t, { bus = "mmio", base = 0xd0000000 })
  T.ok(p and p.name == "probe" and p.size == 0x1000, "the Lua device's MMIO range")
  T.eq(find(t, { bus = "ram", base = 0 }).size, 16 << 20)
  local last = -1
  for _, r in ipairs(t) do
    if r.bus == "pio" then T.ok(r.base > last, "pio in address order"); last = r.base end
  end
  local s = tostring(t)
  T.ok(s:find("pio:\n", 1, true) and s:find("mmio:\n", 1, true) and s:find("ram:\n", 1, true), s)
  T.ok(s:find("  03f8-03ff  com1 (uart16550)", 1, true), s)
  T.ok(s:find("00000000d0000000-00000000d0000fff  probe", 1, true), s)
end)

T.case("irqs: owners, levels, rising edges, the 8259's bits", function()
  local m = pc()
  local before = m:irqs()
  T.eq(#before, 16, "16 lines with the user PIC")
  T.eq(before.chip, "user")
  T.eq(before[1].raised, 0)
  T.eq(m:run { timeout = 20 }.exit_code, 100, "the guest counted 100 IRQ0s")
  local t = m:irqs()
  T.eq(t[1].line, 0)
  T.eq(t[1].owners[1], "pit")
  T.ok(t[1].raised >= 100, "IRQ0 rose at least 100 times: " .. t[1].raised)
  T.eq(t[1].vector, 0x20, "remapped by the guest")
  T.eq(t[1].masked, true, "the guest masked IRQ0 at the end")
  T.eq(t[5].owners[1], "com1")
  T.eq(t[5].raised, 0)
  T.eq(t[9].owners[1], "rtc")
  T.eq(t[9].vector, 0x28)
  local s = tostring(t)
  T.ok(s:match("\n  0 +%d +%d+  pit  vector 0x20 masked"), s)
  T.ok(s:find("com1", 1, true) and s:find("more lines unused", 1, true), s)
end)

T.case("irqs with the kernel irqchip: 24 lines, counts, no 8259 bits", function()
  local m = pc("kernel")
  T.eq(m:run { timeout = 20 }.exit_code, 100)
  local t = m:irqs()
  T.eq(#t, 24)
  T.eq(t.chip, "kernel")
  T.ok(t[1].raised >= 100, "IRQ0 edges: " .. t[1].raised)
  T.eq(t[1].vector, nil)
end)

T.done()
