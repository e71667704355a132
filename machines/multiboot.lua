-- machines/multiboot.lua: a PC for hobby kernels that boot the Multiboot 1 way
-- (straight into 32-bit protected mode with a command line, modules and a
-- memory map), as course projects and GRUB expect.
--
--   ./moonbox machines/multiboot.lua KERNEL [--cmdline "..."] [--memory 128M]
--                                    [--module FILE[,CMDLINE]]... [--irqchip user|kernel]
--
-- COM1 is the terminal; a write of v to port 0xf4 ends moonbox with status v.
local mb = require "moonbox"

local kernel, opts, modules = nil, {}, {}
local i = 1
while arg[i] do
  local a = arg[i]
  local k, v = a:match("^%-%-([%w_]+)=(.*)$")
  if not k and a:match("^%-%-") then k, v, i = a:sub(3), arg[i + 1], i + 1 end
  if k == "module" then
    local file, cmd = v:match("^([^,]*),?(.*)$")
    modules[#modules + 1] = { file = file, cmdline = cmd ~= "" and cmd or file }
  elseif k then
    opts[k] = v
  else
    kernel = a
  end
  i = i + 1
end
if not kernel then
  io.stderr:write("usage: moonbox machines/multiboot.lua KERNEL [--cmdline S] [--module FILE[,CMDLINE]]...\n")
  os.exit(2)
end

local m = mb.machine { memory = opts.memory or "128M", irqchip = opts.irqchip or "user" }
m:add(mb.pic8259 {})
m:add(mb.pit8254 { irq = 0 })
m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "stdio" })
m:add(mb.rtc {})
m:add(mb.i8042 {})
m:add(mb.debug_exit { port = 0xf4 })

m:boot_multiboot { kernel = kernel, cmdline = opts.cmdline or kernel, modules = modules }
local r = m:run {}
if r.reason == "error" then io.stderr:write("\r\nmoonbox: ", r.message or "", "\r\n") end
os.exit(r.reason == "exit" and r.exit_code or (r.reason == "error" and 1 or 0))
