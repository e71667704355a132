-- m:on events of isolated devices (docs/faults.md, "Events for Lua: m:on";
-- docs/devproc.md, "m:on events of an isolated model"): the model in its
-- device process parks the event as in process and posts it to the VMM,
-- whose Lua answers; an isolated UART's bytes are seen on its wire in the
-- VMM. Each case runs the in-process case's guest and checks the same
-- fields, the same effect and the same trace.
-- tests/guests/blk_seq.S reads sectors 0-31 one at a time and exits with
-- the number that failed; uart_echo.S prints a banner and echoes a line;
-- pit_irq.S counts 100 PIT interrupts and exits 100.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local mb = require "moonbox"
local F = mb.fault
T.need_kvm()

local img = os.tmpname()
assert(os.execute("truncate -s 64K " .. img))

local keep = {}
local function blk_machine(isolate, guest)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local disk = m:add(mb.virtio_blk { image = img, isolate = isolate })
  m:boot_flat { file = T.guest(guest or "blk_seq"), mode = "protected" }
  return m, disk
end

local function slurp(path)
  local f = assert(io.open(path)); local t = f:read("a"); f:close()
  return t
end
local function times_stripped(path)
  return (slurp(path):gsub(',"guest_ns":%d+,"host_ns":%d+', ""))
end

T.case("m:on blk of an isolated disk: every request, in ring order, with the in-process fields", function()
  local m, disk = blk_machine(true)
  local seen, writes = {}, 0
  local h = m:on("blk", { dev = disk, op = "read" }, function(ev)
    T.eq(ev.dev, "blk0")
    seen[#seen + 1] = ev.op .. ":" .. ev.sector .. "+" .. ev.nsectors
  end)
  m:on("blk", { dev = disk, op = "write" }, function() writes = writes + 1 end)
  T.run(m, "exit", 0)
  local want = {}
  for i = 0, 31 do want[#want + 1] = "read:" .. i .. "+1" end
  T.eq(table.concat(seen, " "), table.concat(want, " "))
  T.eq(h:count(), 32); T.eq(writes, 0)
  m:close()
end)

local function blk_answers(ev)
  if ev.sector == 3 or ev.sector == 9 then return F.blk.error { dev = "blk0", status = "ioerr" } end
  if ev.sector == 5 then return false end -- shorthand: an I/O error
  if ev.sector == 1 then return F.blk.latency { dev = "blk0", ms = 300 } end
end

T.case("m:on blk answers on an isolated disk: errors and latency act; the in-process trace; replay", function()
  local function run(isolate, opts, fn)
    local m, disk = blk_machine(isolate)
    m:faults(opts)
    local h = m:on("blk", { dev = disk, op = "read" }, fn)
    local w0 = tonumber(io.popen("date +%s.%N"):read("l"))
    T.run(m, "exit", 3)
    local w1 = tonumber(io.popen("date +%s.%N"):read("l"))
    T.eq(h:count(), 32)
    m:close()
    return w1 - w0
  end
  local rec, iso, rp = os.tmpname(), os.tmpname(), os.tmpname()
  run(false, { seed = 3, trace = rec }, blk_answers)
  local took = run(true, { seed = 3, trace = iso }, blk_answers)
  T.ok(took >= 0.3, string.format("sector 1's answer made it 300 ms late: %.3f s", took))
  local want = times_stripped(rec)
  local _, n = want:gsub('"rule":900001,', "")
  T.eq(n, 32, "a record per answer")
  T.ok(want:find('"rule":900001,"ordinal":4,"dev":"blk0","seq":0,"op":"read","sector":3,'
                 .. '"nsectors":1,"action":"blk.error","status":"ioerr"', 1, true), want)
  T.eq(times_stripped(iso), want, "the isolated disk's trace is the in-process one")
  -- Replay, isolated, of the in-process recording: the function answers
  -- nil and is still called; the recorded answers act.
  local calls = 0
  run(true, { replay = rec, trace = rp }, function() calls = calls + 1 end)
  T.eq(calls, 32, "Lua called again, its nil overridden")
  T.eq(times_stripped(rp), want, "the replay's own trace is the recording")
  os.remove(rec); os.remove(iso); os.remove(rp)
end)

T.case("m:on blk on an isolated disk with rules: a rule's error wins, the answer's latency joins", function()
  local m, disk = blk_machine(true)
  local plan = m:faults { seed = 1 }
  local e = plan:add(F.blk.error { dev = disk, op = "read", sectors = { 4, 4 } })
  local asked = {}
  m:on("blk", { dev = disk, op = "read" }, function(ev)
    asked[#asked + 1] = ev.sector
    if ev.sector == 4 then return F.blk.latency { dev = disk, ms = 1 } end
    if ev.sector == 6 then return false end
  end)
  T.run(m, "exit", 2, 30)
  T.eq(plan:fired(e), 1); T.eq(#asked, 32, "the rule's request was asked too")
  m:close()
end)

T.case("m:on blk on an isolated disk: a value that is no blk answer ends the run, naming it", function()
  local m, disk = blk_machine(true)
  m:on("blk", { dev = disk }, function() return "oops" end)
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "error")
  T.ok(tostring(r.message):find("on blk: the function returned oops, not an answer to a blk event", 1, true),
       tostring(r.message))
  m:close()
end)

T.case("m:on blk on an isolated disk: a slow function (3 s) still acts; the process does not give up", function()
  -- blk_seq gives a request ~1.5 s, so the guest here is a spinner and a
  -- Lua driver makes the one request (tests/lua/vhost_driver.lua's layout).
  local m, disk = blk_machine(true, "spin")
  local D = require "vhost_driver"
  local d = assert(D.new(m, disk))
  local n = 0
  m:on("blk", { dev = disk }, function(ev)
    n = n + 1
    os.execute("sleep 3")
    return F.blk.error { dev = disk, status = "unsupp" }
  end)
  local st = d:submit(0, 7, 512)
  T.eq(m:run { timeout = 4 }.reason, "timeout")
  T.eq(n, 1)
  T.eq(d:done(), true, "answered after the function's 3 s")
  T.eq(st(), 2, "VIRTIO_BLK_S_UNSUPP, the function's answer")
  T.eq(disk:state().isolated.alive, true)
  m:close()
end)

-- A disk reset (the driver writes status 0) while its request is parked:
-- held by F.blk.hold, or asked about by an m:on function whose answer is
-- still pending (the function cannot run: nothing waits in m:run). The
-- reset must not hang, the request is answered as docs/faults.md says
-- (it runs, unchanged), and the disk works after the driver sets it up
-- again. In process and isolated.
for _, isolate in ipairs { false, true } do
  local where = isolate and "an isolated disk" or "a disk in process"
  T.case("a reset of " .. where .. " with a request held by blk.hold: it runs; the disk works again", function()
    local m, disk = blk_machine(isolate, "spin")
    local D = require "vhost_driver"
    local plan = m:faults { seed = 1 }
    local h = plan:add(F.blk.hold { dev = disk, tag = "h", nth = 1 })
    local d = assert(D.new(m, disk))
    local st = d:submit(0, 3, 512)
    for _ = 1, 200 do if plan:held("h") == 1 then break end D.sleep(0.01) end
    T.eq(plan:held("h"), 1, "parked")
    D.sleep(0.1)
    T.eq(d:done(), false, "not completed while held")
    disk:mmio_write(0x70, 0) -- reset: 0 to Status (virtio 1.2, 2.1 and 4.2.2)
    T.eq(disk:mmio_read(0x70), 0, "the reset is done")
    T.eq(d:done(), true, "the held request ran before the rings went")
    T.eq(st(), 0, "and completed OK")
    -- in process the plan forgets it; an isolated disk's plan still
    -- counts it until a release (docs/faults.md, isolated devices)
    T.eq(plan:held("h"), isolate and 1 or 0)
    plan:release("h")
    d = assert(D.new(m, disk))
    local s2, data = d:blk(1, 4, string.rep("z", 512)), nil
    T.eq(s2, 0, "a write after the re-init")
    s2, data = d:blk(0, 4, 512)
    T.eq(s2, 0); T.eq(data, string.rep("z", 512), "and its read back")
    T.eq(plan:fired(h), 1)
    m:close()
  end)

  T.case("a reset of " .. where .. " with a request an m:on function is asked about: it runs unanswered", function()
    local m, disk = blk_machine(isolate, "spin")
    local D = require "vhost_driver"
    local calls = {}
    local on = m:on("blk", { dev = disk }, function(ev)
      calls[#calls + 1] = ev.sector
      return F.blk.error { dev = disk, status = "ioerr" }
    end)
    local d = assert(D.new(m, disk))
    local st = d:submit(0, 5, 512)
    D.sleep(0.2)
    T.eq(d:done(), false, "parked: its function has not run (no m:run)")
    disk:mmio_write(0x70, 0)
    T.eq(disk:mmio_read(0x70), 0, "the reset is done, not waiting on Lua")
    T.eq(d:done(), true, "the asked request ran")
    T.eq(st(), 0, "unanswered: OK, not the function's error")
    d = assert(D.new(m, disk))
    st = d:submit(0, 6, 512)
    T.eq(m:run { timeout = 1 }.reason, "timeout")
    T.eq(d:done(), true, "asked after the re-init")
    T.eq(st(), 1, "the function's answer acts again (IOERR)")
    -- the first request's function still ran, late; its answer was dropped
    T.eq(table.concat(calls, ","), "5,6"); T.eq(on:count(), 2)
    m:close()
  end)
end

local banner = "moonbox: com1 ready\r\n"
local function echo_machine(input)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local com1 = m:add(mb.uart16550 { com = 1, console = "buffer", isolate = true })
  m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
  return m, com1
end

T.case("m:on uart and console of an isolated UART: change what the guest receives, drop what it sends", function()
  local m, com1 = echo_machine()
  local seen, lines = {}, {}
  m:on("uart", { dev = com1, dir = "rx" }, function(ev)
    T.eq(ev.dev, "com1")
    seen[#seen + 1] = ev.dir .. string.char(ev.byte)
    if ev.byte == ("i"):byte() then return ("o"):byte() end
  end)
  local drop = m:on("uart", { dev = com1, dir = "tx" }, function(ev)
    if ev.byte == ("o"):byte() then return false end
  end)
  m:on("console", { dev = com1 }, function(line, ev) lines[#lines + 1] = line .. "|" .. ev.dev end)
  com1:input("ping\n") -- crosses to the process now, through the function
  T.run(m, "exit", 5)
  T.eq(table.concat(seen), "rxprxirxnrxgrx\n", "each byte the console sent")
  T.eq(com1:output(), (banner:gsub("o", "")) .. "png\n", "pong echoed, its o dropped on the way out")
  T.eq(table.concat(lines, ","), "moonbox: com1 ready|com1,pong|com1",
       "the lines the guest printed (as in process: before the functions on its bytes)")
  T.ok(drop:count() >= #banner, "every byte sent asked: " .. drop:count())
  m:close()
end)

local function pit_machine(isolate)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  local pit = m:add(mb.pit8254 { irq = 0, isolate = isolate })
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("pit_irq"), mode = "protected" }
  return m, pit
end

T.case("m:on pit of an isolated PIT: ticks in order; false loses one, F.pit.late delays one", function()
  local m, pit = pit_machine(true)
  local ticks, n = {}, 0
  m:on("pit", { dev = pit }, function(ev)
    T.eq(ev.dev, "pit")
    ticks[#ticks + 1] = ev.tick
    n = n + 1
    if n <= 5 then return false end
    if n <= 8 then return F.pit.late { dev = "pit", ms = 2 } end
  end)
  T.run(m, "exit", 100)
  -- ev.tick is the number the tick would have (edges + 1): a lost one's
  -- is taken again by the next, as in process
  T.eq(table.concat(ticks, ",", 1, 6), "1,1,1,1,1,1", "five ticks lost, then the first delivered")
  for i = 2, #ticks do
    if ticks[i] < ticks[i - 1] then T.ok(false, "ticks in order: " .. table.concat(ticks, ",")) break end
  end
  local e = pit:state().irq_edges
  T.ok(e <= n - 5 and e >= n - 7, "five ticks never delivered: " .. e .. " of " .. n)
  m:close()
end)

T.case("m:on irq of an isolated PIT's line: a function's false drops that edge", function()
  local m = pit_machine(true)
  local n = 0
  m:on("irq", { irq = 0 }, function(ev) T.eq(ev.irq, 0); n = n + 1; if n <= 10 then return false end end)
  T.run(m, "exit", 100)
  -- the last edge asked may still wait for its answer at the exit
  local raised = m:irqs()[1].raised
  T.ok(raised == n - 10 or raised == n - 11,
       "every asked edge but the ten dropped reached the PIC: " .. raised .. " of " .. n)
  m:close()
end)

T.case("m:on net of an isolated NIC is refused, naming why", function()
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  local nic = m:add(mb.virtio_net { backend = mb.netpair(), isolate = true })
  T.raises(function() m:on("net", { dev = nic }, print) end,
    "dev: net0 is isolated (isolate = true): its frames stay in its process")
  m:close()
end)

os.remove(img)
T.done()
