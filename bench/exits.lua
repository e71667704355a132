-- The exit benchmark through the Lua CLI (informational: the sink here is a
-- Lua device, so every exit calls into Lua, on the vCPU thread while run() sleeps).
-- Usage: ./moonbox bench/exits.lua GUEST.bin [lua|c|tap]
--   lua (default): the port 0x80 sink is a Lua device; c: a C sink
--   (mb.port80); tap: the C sink with a Lua m:tap on its port (issue 9:
--   a Lua tap should cost at most 1.5 times a bare exit, c against tap;
--   `moonbox --seccomp` measures the handoff to the script's thread)
-- Prints: lua exits=N seconds=S exits_per_s=X
local mb = require "moonbox"
local image = assert(arg[1], "usage: moonbox bench/exits.lua GUEST.bin [lua|c|tap]")
local mode = arg[2] or "lua"
assert(mode == "lua" or mode == "c" or mode == "tap", "mode: lua, c or tap")

-- Wall clock with 10 ms resolution (Lua has no finer one): fine for ~1 s runs.
local function uptime()
  local f = assert(io.open("/proc/uptime"))
  local t = f:read("n")
  f:close()
  return t
end

local m = mb.machine { memory = "2M" }
local sink = function(self, offset, size, value) end
if mode == "lua" then
  m:add(mb.device { name = "pio_sink", pio = { base = 0x80, size = 1 }, write = sink })
else
  m:add(mb.port80 { pio = { base = 0x80, size = 1 } })
end
local tap = mode == "tap" and m:tap { pio = 0x80, fn = function(ev) end }
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
print(string.format("lua exits=%d seconds=%.2f exits_per_s=%.0f taps=%d", n, t,
  n / math.max(t, 0.01), tap and tap:count() or 0))
