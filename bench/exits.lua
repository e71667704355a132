-- The exit benchmark through the Lua CLI (informational: the sink here is a
-- Lua device, so every exit calls into Lua, on the vCPU thread while run() sleeps).
-- Usage: ./moonbox bench/exits.lua GUEST.bin
-- Prints: lua exits=N seconds=S exits_per_s=X
local mb = require "moonbox"
local image = assert(arg[1], "usage: moonbox bench/exits.lua GUEST.bin")

-- Wall clock with 10 ms resolution (Lua has no finer one): fine for ~1 s runs.
local function uptime()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("n")
  f:close()
  return t
end

local m = mb.machine { memory = "2M" }
local sink = function(self, offset, size, value) end
m:add(mb.device { name = "pio_sink", pio = { base = 0x80, size = 1 }, write = sink })
m:add(mb.device { name = "mmio_sink", mmio = { base = 0xd0000000, size = 0x1000 }, write = sink })
m:add(mb.debug_exit { port = 0xf4, size = 1 })
m:boot_flat { file = image, at = 0x100000, mode = "protected" }
local t = uptime()
local r = m:run { timeout = 60 }
t = uptime() - t
if r.reason ~= "exit" then
  io.stderr:write("exits.lua: guest stopped with ", r.reason, ": ", r.message or "", "\n")
  os.exit(1)
end
local n = m:stats().exits
print(string.format("lua exits=%d seconds=%.2f exits_per_s=%.0f", n, t, n / math.max(t, 0.01)))
