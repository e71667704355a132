-- Interrupt faults as a TAP producer (see uart_faults.lua).
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/tests/") or "."
local t = mb.tap()
local m = mb.machine { memory = "16M" }
m:add(mb.pic8259 {})
m:add(mb.pit8254 { irq = 0 })
m:add(mb.debug_exit { port = 0xf4 })
m:boot_flat { file = root .. "/build/guests/pit_irq.bin", mode = "protected" }
local plan = m:faults { seed = 1 }
local rule = plan:add(mb.fault.irq.drop { line = 0, count = 5 })
local r = m:run { timeout = 20 }
t:eq(r.exit_code, 100, "100 timer interrupts despite 5 lost")
t:eq(plan:fired(rule), 5, "five dropped")
t:done()
