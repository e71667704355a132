-- m:on: Lua functions on UART bytes, console lines and bus accesses
-- (tests/guests/uart_echo.S: a banner, then echo of what it receives up to
-- a '\n'; exit code = bytes echoed).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local banner = "moonbox: com1 ready\r\n"

local function echo_machine(input)
  local m = mb.machine { memory = "16M" }
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local com1 = m:add(mb.uart16550 { com = 1, console = "buffer" })
  if input then com1:input(input) end
  m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
  return m, com1
end

T.case("console lines matching a pattern; every line without a pattern", function()
  local m, com1 = echo_machine("hello\n")
  local ready, all = {}, {}
  local h = m:on("console", { dev = com1, pattern = "ready$" }, function(line, ev)
    ready[#ready + 1] = line .. "|" .. ev.dev
    T.eq(com1:state().tx_bytes > 0, true, "the device can be read from the function")
  end)
  m:on("console", { dev = com1 }, function(line) all[#all + 1] = line end)
  T.run(m, "exit", 6)
  T.eq(table.concat(ready, ","), "moonbox: com1 ready|com1")
  T.eq(table.concat(all, ","), "moonbox: com1 ready,hello", "lines without \\r\\n")
  T.eq(h:count(), 2, "called for each line, matched once")
end)

T.case("uart bytes: change what the guest receives, drop what it sends", function()
  local m, com1 = echo_machine("ping\n")
  local seen = {}
  m:on("uart", { dev = com1, dir = "rx" }, function(ev)
    seen[#seen + 1] = ev.dir .. string.char(ev.byte)
    if ev.byte == ("i"):byte() then return ("o"):byte() end
  end)
  local drop = m:on("uart", { dev = com1, dir = "tx" }, function(ev)
    if ev.byte == ("o"):byte() then return false end
  end)
  T.run(m, "exit", 5)
  T.eq(table.concat(seen), "rxprxirxnrxgrx\n", "each byte the console sent")
  T.eq(com1:output(), (banner:gsub("o", "")) .. "png\n", "pong echoed, its o dropped on the way out")
  drop:remove()
  T.ok(tostring(drop):find("removed"), tostring(drop))
end)

T.case("pio events are taps", function()
  local m, com1 = echo_machine("x\n")
  local n = 0
  local t = m:on("pio", 0x3f8, function(ev) if ev.write then n = n + 1 end end)
  T.run(m, "exit", 2)
  T.eq(n, #banner + 2 + 1, "THR writes, and the divisor latch write at 0x3f8")
  T.eq(t:count() >= n, true)
end)

local function pit_machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.pic8259 {})
  local pit = m:add(mb.pit8254 { irq = 0 })
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("pit_irq"), mode = "protected" }
  return m, pit
end

T.case("pit ticks and interrupt raises, asked in order; a function may add a rule", function()
  local m, pit = pit_machine() -- pit_irq.S counts 100 PIT interrupts, then exits
  local ticks, raises, plan, rule = {}, 0, m:faults { seed = 1 }, nil
  local ht = m:on("pit", { dev = pit }, function(ev)
    T.eq(ev.dev, "pit")
    ticks[#ticks + 1] = ev.tick
    T.eq(pit:state().irq_edges, ev.tick - 1, "the PIT can be read from the function; the tick waits")
    if ev.tick == 10 then rule = plan:add(mb.fault.irq.drop { line = 0, count = 5 }) end
  end)
  local hi = m:on("irq", { irq = 0 }, function(ev) T.eq(ev.irq, 0); raises = raises + 1 end)
  local other = m:on("irq", { irq = 3 }, function() error("no edge on line 3") end)
  T.run(m, "exit", 100)
  T.ok(#ticks >= 10, "ticks told: " .. #ticks)
  for i = 2, #ticks do
    if ticks[i] ~= ticks[i - 1] + 1 then T.ok(false, "ticks in order, none missed") break end
  end
  T.ok(rule and plan:fired(rule) == 5, "the rule a function added acted")
  T.eq(ht:count(), #ticks); T.eq(hi:count(), raises)
  T.ok(raises >= 10, "raises told: " .. raises)
  T.eq(other:count(), 0)
  ht:remove(); hi:remove()
  T.ok(tostring(ht):find("pit of pit (removed)", 1, true), tostring(ht))
end)

T.case("irq: a function's false drops that edge; nil lets it through", function()
  local m = pit_machine()
  local n = 0
  m:on("irq", { irq = 0 }, function() n = n + 1; if n <= 10 then return false end end)
  T.run(m, "exit", 100)
  T.eq(m:irqs()[1].raised, n - 10, "every asked edge but the ten dropped reached the PIC")
end)

T.case("pit: a function's false loses the tick, F.pit.late makes it late", function()
  local m, pit = pit_machine()
  local n = 0
  m:on("pit", { dev = pit }, function()
    n = n + 1
    if n <= 5 then return false end
    if n <= 8 then return mb.fault.pit.late { dev = "pit", ms = 2 } end
  end)
  T.run(m, "exit", 100)
  -- the last one or two asked may still wait for their answer at the exit
  local e = pit:state().irq_edges
  T.ok(e <= n - 5 and e >= n - 7, "five ticks never delivered: " .. e .. " of " .. n)
  T.ok(e >= 100, "the guest got its hundred, the late ones among them")
end)

T.case("an answer that is not one for the event ends the run, naming both", function()
  local m = pit_machine()
  m:on("irq", { irq = 0 }, function() return 42 end)
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "error")
  T.ok(tostring(r.message):find("on irq: the function returned 42, not an answer to a irq event", 1, true),
       tostring(r.message))
  local m2 = pit_machine()
  m2:on("irq", { irq = 0 }, function() return mb.fault.blk.error { dev = "x" } end)
  r = m2:run { timeout = 10 }
  T.eq(r.reason, "error")
  T.ok(tostring(r.message):find("blk.error", 1, true), tostring(r.message))
end)

T.case("blk, irq and pit event option errors", function()
  local m, pit = pit_machine()
  T.raises(function() m:on("pit", { dev = "pic" }, print) end, "dev: pic is not a PIT")
  T.raises(function() m:on("pit", { dev = "nope" }, print) end, 'no device "nope"')
  T.raises(function() m:on("irq", { irq = 99 }, print) end, "irq: 99")
  T.raises(function() m:on("irq", { line = 1 }, print) end, 'unknown option "line"')
  T.raises(function() m:on("blk", {}, print) end, "dev: missing")
  T.raises(function() m:on("blk", { dev = pit }, print) end, "dev: pit is pit8254")
  local img = os.tmpname()
  assert(os.execute("truncate -s 64K " .. img))
  local disk = m:add(mb.virtio_blk { image = img })
  T.raises(function() m:on("blk", { dev = disk, op = "peek" }, print) end, 'op: "peek"')
  T.ok(m:on("blk", { dev = disk, op = "write" }, print), "a disk takes it")
  m:close()
  os.remove(img)
end)

T.case("an error in a function ends the run; option errors", function()
  local m, com1 = echo_machine("x\n")
  m:on("console", { dev = com1 }, function() error("nope") end)
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "error"); T.ok(r.message:find("on console of com1", 1, true) and r.message:find("nope"), r.message)
  local m2 = echo_machine()
  T.raises(function() m2:on("net", {}, print) end, "dev: expected a virtio_net")
  T.raises(function() m2:on("frames", {}, print) end, "invalid option 'frames'")
  T.raises(function() m2:on("uart", {}, print) end, "dev: expected a UART")
  T.raises(function() m2:on("uart", { dev = m2:device("debug_exit") }, print) end, "is not a UART")
  T.raises(function() m2:on("uart", { dev = m2:device("com1"), dir = "up" }, print) end, "dir")
  T.raises(function() m2:on("console", { dev = m2:device("com1") }) end, "function expected")
end)

T.done()
