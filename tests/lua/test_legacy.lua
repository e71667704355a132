-- The legacy PC devices, driven by in-tree guests under KVM, with both
-- interrupt controllers.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function pc(irqchip, pit)
  local m = mb.machine { memory = "16M", irqchip = irqchip, pit = pit }
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

T.done()
