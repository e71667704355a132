-- machines/bare.lua: the smallest useful machine for a flat binary.
--
--   ./moonbox machines/bare.lua IMAGE [real|protected|long] [LOAD_ADDRESS]
--
-- The guest reports through debug_exit (port 0xf4, exit status = value
-- written) and prints through COM1 (port 0x3f8) on the terminal.
local mb = require "moonbox"

local image, mode, at = arg[1], arg[2] or "protected", arg[3]
if not image then
  io.stderr:write("usage: moonbox machines/bare.lua IMAGE [real|protected|long] [ADDRESS]\n")
  os.exit(2)
end

local m = mb.machine { memory = "64M" }
m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "stdio" })
m:add(mb.debug_exit { port = 0xf4 })
m:boot_flat { file = image, mode = mode, at = at and mb.size(at) or nil }

local r = m:run {}
if r.reason ~= "exit" then io.stderr:write("bare: ", r.reason, ": ", r.message or "", "\n") end
os.exit(r.exit_code)
