-- hello.lua: the smallest moonbox machine. Run with `./moonbox examples/hello.lua`.
local mb = require "moonbox"

-- where `make` put the guest (examples/hello.S, assembled to a flat binary)
local here = arg and arg[0] and arg[0]:match("^(.*)/examples/[^/]*$") or "."
local image = here .. "/build/examples/hello.bin"

local m = mb.machine { memory = "64M" }

-- A device written in Lua: the guest's bytes arrive here one `out` at a time.
local text = {}
m:add(mb.device {
  name = "greeter",
  pio = { base = 0x510, size = 1 },
  write = function(self, offset, size, value) text[#text + 1] = string.char(value) end,
})
m:add(mb.debug_exit { port = 0xf4 })

m:boot_flat { file = image, at = 0x100000, mode = "protected" }
local r = m:run { timeout = 10 }
io.write(table.concat(text))
if r.reason ~= "exit" then
  io.stderr:write("hello: guest stopped with ", r.reason, ": ", r.message or "", "\n")
  os.exit(1)
end
os.exit(r.exit_code)
