-- Peak RSS of the hello example (64 MiB of RAM) minus the guest memory it
-- touched. Usage: ./moonbox bench/rss.lua
-- Prints: rss hwm_kb=X guest_kb=Y overhead_kb=X-Y
local mb = require "moonbox"
local m = mb.machine { memory = "64M" }
local text = {}
m:add(mb.device {
  name = "greeter",
  pio = { base = 0x510, size = 1 },
  write = function(self, offset, size, value) text[#text + 1] = string.char(value) end,
})
m:add(mb.debug_exit { port = 0xf4 })
m:boot_flat { file = "build/examples/hello.bin", at = 0x100000, mode = "protected" }
local r = m:run { timeout = 10 }
assert(r.reason == "exit" and table.concat(text):match("^Hello"), "hello did not run")

local hwm
for line in io.lines("/proc/self/status") do
  hwm = hwm or tonumber(line:match("^VmHWM:%s*(%d+)"))
end
local guest = m:stats().memory_resident // 1024
print(string.format("rss hwm_kb=%d guest_kb=%d overhead_kb=%d", hwm, guest, hwm - guest))
