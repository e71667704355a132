-- A fault test as a TAP producer (mb.tap): `prove --ext .lua --exec ./moonbox tests/tap/`
-- runs this directory; tests/lua/test_prove.lua does.
local mb = require "moonbox"
local F = mb.fault
local root = arg[0]:match("^(.*)/tests/") or "."
local t = mb.tap()

local function echo(input)
  local m = mb.machine { memory = "16M" }
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local com1 = m:add(mb.uart16550 { com = 1, console = "buffer" })
  com1:input(input)
  m:boot_flat { file = root .. "/build/guests/uart_echo.bin", mode = "protected" }
  return m, com1
end

local m, com1 = echo("ping\n")
local plan = m:faults { seed = 3 }
local rule = plan:add(F.uart.drop { dev = com1, dir = "rx", nth = 2 })
local r = m:run { timeout = 20 }
t:eq(r.reason, "exit", "the guest finished")
t:eq(r.exit_code, 4, "it echoed one byte fewer")
t:eq(plan:fired(rule), 1, "the fault acted once")
t:ok(com1:output():find("png\n", 1, true), "the echo lacks the dropped byte")
t:done()
