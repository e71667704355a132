-- mb.device: a device in Lua wired as a real device of its machine (name,
-- range, line), with DMA (self:read/self:write), its interrupt line
-- (self:irq/self:pulse) and timers on the machine's clock (self:after,
-- self:every).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

T.case("names and inventory like every device", function()
  local m = mb.machine { memory = "16M" }
  local a = m:add(mb.device { pio = { base = 0x510, size = 1 } })
  local b = m:add(mb.device { mmio = { base = 0xd0000000, size = 0x1000 } })
  local c = m:add(mb.device { name = "mine", pio = { base = 0x511, size = 1 } })
  T.eq(a.name, "device"); T.eq(b.name, "device#2"); T.eq(c.name, "mine")
  T.eq(m:device("device#2"), b, "m:device")
  T.eq(a:info().ranges[1].base, 0x510); T.eq(b:info().ranges[1].space, "mmio")
  T.raises(function() m:add(mb.device { name = "mine", pio = { base = 0x512, size = 1 } }) end,
    "already a device")
  T.raises(function() m:add(mb.device { pio = { base = 0x510, size = 1 } }) end, "pio")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, irq = 99 } end, "irq: 99")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, read = 1 } end,
    "read: expected a function")
  m:close()
end)

T.case("DMA: self:read and self:write, bounds-checked", function()
  local m = mb.machine { memory = "16M" }
  local d = m:add(mb.device { pio = { base = 0x510, size = 1 } })
  d:write(0x8000, "hello")
  T.eq(d:read(0x8000, 5), "hello")
  T.eq(m:read(0x8000, 5), "hello", "the machine sees it")
  T.eq(d:read(0x8000, 0), "")
  T.raises(function() d:read(0x1000000 - 2, 4) end, "read: gpa 0xfffffe, length 4: not guest RAM")
  T.raises(function() d:write(0x2000000, "xy") end, "write: gpa 0x2000000, length 2")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 } }:read(0, 1) end, "not part of a machine")
  m:close()
end)

T.case("self:irq and self:pulse drive the line through the PIC", function()
  local m = mb.machine { memory = "16M" }
  local pic = m:add(mb.pic8259 {})
  local d = m:add(mb.device { pio = { base = 0x510, size = 1 }, irq = 5 })
  T.eq(d:info().irq, 5)
  local function input() local s = pic:state().master; return (s.input or s.irr) & 0x20 end
  d:irq(true); T.eq(input(), 0x20, "raised")
  d:irq(0); T.eq(pic:state().master.input & 0x20, 0, "lowered")
  d:pulse(); T.eq(pic:state().master.input & 0x20, 0, "pulsed: low again")
  T.ok(pic:state().master.irr & 0x20 ~= 0, "the edge was latched")
  T.raises(function() d:irq(2) end, "not 0 or 1")
  local n = m:add(mb.device { pio = { base = 0x511, size = 1 } })
  T.raises(function() n:irq(true) end, "no line")
  m:close()
end)

T.case("timers run on the script's thread while it waits in run", function()
  local m = mb.machine { memory = "16M" }
  local ticks, once, early, selfs = 0, 0, 0, {}
  local d
  d = m:add(mb.device { pio = { base = 0x510, size = 1 } })
  d:after(0, function(self) early = early + 1; selfs[#selfs + 1] = self end) -- fires before run: queues
  local t = d:every(0.02, function() ticks = ticks + 1 end)
  local t5
  t5 = d:every(0.02, function() if ticks >= 5 then t:cancel(); t5:cancel() end end)
  d:after(0.05, function(self) once = once + 1; self:write(0x9000, "T") end)
  local gone = d:after(0.01, function() error("cancelled timer fired") end)
  gone:cancel()
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  os.execute("sleep 0.05")
  T.eq(early, 0, "nothing runs while nobody waits")
  local r = m:run { timeout = 0.5 }
  T.eq(r.reason, "timeout", r.message)
  T.eq(early, 1, "the early timer fired once run waited")
  T.eq(selfs[1], d, "self is the device handle")
  T.eq(once, 1, "after fires once")
  T.ok(ticks >= 5 and ticks <= 6, "every ran until cancelled: " .. ticks)
  T.eq(m:read(0x9000, 1), "T", "DMA from a timer")
  T.ok(tostring(t):match("idle"), tostring(t))
  m:close()
  t:cancel() -- after close: harmless
end)

T.case("an error in a timer stops the run with reason error", function()
  local m = mb.machine { memory = "16M" }
  local d = m:add(mb.device { name = "bomb", pio = { base = 0x510, size = 1 } })
  d:after(0.01, function() error("tick boom") end)
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  local r = T.run(m, "error")
  T.ok(r.message:find("device bomb: timer:", 1, true) and r.message:find("tick boom", 1, true), r.message)
  m:close()
end)

T.done()
