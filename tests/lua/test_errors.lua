-- Every documented error of the Lua API, with its message. Runs from the
-- moonbox CLI and from stock lua5.4 (require "moonbox").
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"

-- Checked before KVM is touched: these need no /dev/kvm.
T.case("unknown option", function()
  T.raises(function() mb.machine { memroy = "1M" } end, 'machine: unknown option "memroy"')
end)
T.case("bad size string", function()
  T.raises(function() mb.machine { memory = "12Q" } end, 'memory: "12Q" is not a size')
end)
T.case("wrong type", function()
  T.raises(function() mb.machine { cpus = "two" } end, 'cpus: expected an integer, got "two"')
  T.raises(function() mb.machine { memory = true } end, "memory: expected a size or a list of regions, got boolean")
end)
T.case("bad enum", function()
  T.raises(function() mb.machine { irqchip = "magic" } end, 'irqchip: "magic" is not one of "user", "kernel"')
end)
T.case("cpus out of range", function()
  T.raises(function() mb.machine { cpus = 0 } end, "cpus: 0 is not between 1 and 64")
end)
T.case("overlapping memory regions", function()
  T.raises(function()
    mb.machine { memory = { { base = 0, size = "2M", name = "low" }, { base = "1M", size = "1M", name = "high" } } }
  end, "memory: region high overlaps region low")
end)
T.case("unaligned and zero-size regions", function()
  T.raises(function() mb.machine { memory = { { base = 0, size = 1000 } } } end, "is not 4K-aligned")
  T.raises(function() mb.machine { memory = { { base = 0, size = 0 } } } end, "has size 0")
  T.raises(function() mb.machine { memory = { { base = 0, size = "1M", flie = "x" } } } end,
    'memory[1]: unknown option "flie"')
end)
T.case("cpuid feature names", function()
  T.raises(function() mb.machine { cpuid = { hide = { "nosuch" } } } end, 'cpuid.hide: unknown feature "nosuch"')
  T.raises(function() mb.machine { cpuid = { hidden = {} } } end, 'cpuid: unknown option "hidden"')
end)
T.case("device options", function()
  T.raises(function() mb.device { pio = { base = 1, size = 1 }, mmio = { base = 0, size = 1 } } end,
    "device: give exactly one of pio or mmio")
  T.raises(function() mb.device { pio = { base = 0x10, size = 1 }, colour = 1 } end, 'device: unknown option "colour"')
  T.raises(function() mb.device { pio = { base = 0x10, size = 1 }, read = 5 } end, "read: expected a function, got number")
  T.raises(function() mb.device { pio = { base = 0xffff, size = 2 } } end, "is beyond port 0xffff")
  T.raises(function() mb.device { pio = { base = 0x10 } } end, "pio.size: missing")
  T.raises(function() mb.device { pio = { base = 0x10, size = "x" } } end, 'pio.size: "x" is not a size')
  T.raises(function() mb.debug_exit { size = 3 } end, "size: 3 is not 1, 2 or 4")
end)
T.case("mb.size", function()
  T.eq(mb.size("4G-256K"), 0xfffc0000, "4G-256K")
  T.eq(mb.size("1M+4K"), 0x101000, "1M+4K")
  T.raises(function() mb.size("12Q") end, 'size: "12Q" is not a size')
end)

T.need_kvm()

T.case("device overlap names both devices", function()
  local m = mb.machine { memory = "1M" }
  m:add(mb.device { name = "first", pio = { base = 0x100, size = 8 } })
  T.raises(function() m:add(mb.device { name = "second", pio = { base = 0x107, size = 2 } }) end,
    "second at 0x107-0x108 overlaps first at 0x100-0x107")
  m:add(mb.device { name = "third", pio = { base = 0x108, size = 2 } }) -- adjacent is fine
end)
T.case("adding a device twice", function()
  local m = mb.machine { memory = "1M" }
  local d = m:add(mb.debug_exit {})
  T.raises(function() m:add(d) end, "already part of a machine")
end)
T.case("boot_flat errors", function()
  local m = mb.machine { memory = "1M" }
  T.raises(function() m:boot_flat { at = 0 } end, "file: missing")
  T.raises(function() m:boot_flat { file = "/nonexistent/guest.bin" } end, "/nonexistent/guest.bin: No such file")
  T.raises(function() m:boot_flat { file = T.guest("spin"), mode = "unreal" } end,
    'mode: "unreal" is not one of "real", "protected", "long"')
  T.raises(function() m:boot_flat { file = T.guest("spin"), at = "2M" } end, "does not fit in RAM at 0x200000")
  T.raises(function() m:boot_flat { file = T.guest("real"), at = 0x7c00, entry = "2M", mode = "real" } end,
    "above 1 MiB")
end)
T.case("run options", function()
  local m = mb.machine { memory = "1M" }
  T.raises(function() m:run { timeout = "soon" } end, "timeout: expected seconds")
  T.raises(function() m:run { timout = 1 } end, 'run: unknown option "timout"')
end)
T.case("closed machine", function()
  local m = mb.machine { memory = "1M" }
  m:close()
  T.raises(function() m:run {} end, "machine: already closed")
  T.eq(tostring(m), "moonbox.machine (closed)")
end)
T.case("to-be-closed machine", function()
  local mm
  do
    local m <close> = mb.machine { memory = "1M" }
    mm = m
  end
  T.raises(function() mm:stats() end, "already closed")
end)
T.case("registers need a paused machine", function()
  local m = mb.machine { memory = "2M" }
  m:add(mb.debug_exit {})
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  m:start()
  T.raises(function() m:regs() end, "pause the machine first")
  m:pause()
  T.raises(function() m:regs(5) end, "cpu: 5 does not exist (0-0)")
end)
T.case("guest memory access is bounds-checked", function()
  local m = mb.machine { memory = "1M" }
  T.raises(function() m:read(0xff000, 0x2000) end, "not in RAM")
  T.raises(function() m:write(0x100000, "x") end, "guest address 0x100000 is not in RAM")
  m:write(0x1000, "abc")
  T.eq(m:read(0x1000, 3), "abc")
end)
T.case("memory file larger than its region", function()
  local f = os.tmpname()
  local h = io.open(f, "wb"); h:write(string.rep("x", 8192)); h:close()
  T.raises(function() mb.machine { memory = { { base = 0, size = "4K", file = f } } } end, "do not fit a region")
  os.remove(f)
end)
T.done()
