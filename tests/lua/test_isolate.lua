-- Device processes (isolate = true, docs/devproc.md): option errors, the
-- process seen from outside, and a device process that dies (kill -9) or
-- hangs (SIGSTOP) under a guest that keeps doing I/O to it: the VMM lives
-- on and on_crash decides. The legacy guest tests run isolated in
-- test_isolate_legacy.lua, Linux in tests/linux/test_isolate.lua.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local keep = {}
local function machine(post_opts)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local post = m:add(mb.port80(post_opts))
  m:boot_flat { file = T.guest("iso_loop"), mode = "protected" }
  return m, post
end

local function status(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function sleep(s) os.execute("sleep " .. s) end

T.case("option errors name the key and value", function()
  T.raises(function() mb.pic8259 { isolate = true } end, "isolate: the interrupt controller")
  T.raises(function() mb.port80 { isolate = "yes" } end, "isolate: expected a boolean")
  T.raises(function() mb.port80 { isolat = true } end, "unknown option \"isolat\"")
  local m = mb.machine { memory = "16M" }
  T.raises(function() m:add(mb.port80 { isolate = true, on_crash = "explode" }) end, "on_crash")
  T.raises(function() m:add(mb.port80 { isolate = true, timeout = -1 }) end, "timeout: -1")
  T.raises(function() m:add(mb.uart16550 { isolate = true, console = "nope" }) end, "console: \"nope\"")
  m:close()
end)

T.case("uart drop and corrupt on an isolated UART act on the wire, in the VMM", function()
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local u = m:add(mb.uart16550 { isolate = true, console = "buffer" })
  m:boot_flat { file = T.guest("uart_echo"), mode = "protected" }
  local path = os.tmpname()
  local plan = m:faults { seed = 1, trace = path }
  local drop = plan:add(mb.fault.uart.drop { dev = u, dir = "tx", nth = 3 })
  local bad = plan:add(mb.fault.uart.corrupt { dev = u, dir = "rx", nth = 1, bits = 1 })
  u:input("ok\n") -- crosses to the process now, through the rules
  T.run(m, "exit", 3)
  local out, want = u:output(), "moonbox: com1 ready\r\nok\n"
  T.eq(out:sub(1, 2), "mo"); T.eq(out:sub(3, 5), "nbo", "the 3rd byte (the second o) is gone")
  local echoed = out:sub(-3, -3)
  local c = echoed:byte() ~ ("o"):byte()
  T.ok(c ~= 0 and c & (c - 1) == 0, string.format("the received o arrived with one bit flipped: 0x%x", c))
  T.eq(#out, #want - 1)
  T.eq(plan:fired(drop), 1); T.eq(plan:fired(bad), 1)
  local f = assert(io.open(path)); local t = f:read("a"); f:close(); os.remove(path)
  T.ok(t:find('"action":"uart.drop"', 1, true) and t:find('"action":"uart.corrupt"', 1, true), t)
  T.raises(function() plan:add(mb.fault.uart.error { dev = u, kind = "framing" }) end,
    "dev: com1 is isolated (isolate = true): line errors need the UART's own LSR")
  local img = os.tmpname()
  assert(os.execute("truncate -s 64K " .. img))
  local disk = m:add(mb.virtio_blk { image = img, isolate = true })
  T.raises(function() plan:add(mb.fault.blk.error { dev = disk }) end,
    "dev: blk0 is isolated (isolate = true): blk.error is decided inside the virtio_blk model, "
    .. "which runs in the device's own process, out of the VMM's reach; at the process "
    .. "boundary act dev.* (delay, drop, corrupt, kill) and a UART's uart.drop and uart.corrupt")
  m:close()
  os.remove(img)
end)

T.case("the process: its own pid, alive, no_new_privs, state() says what confines it", function()
  local m, post = machine { isolate = true }
  local s = post:state()
  T.ok(s.isolated, "state().isolated")
  local pid = s.isolated.pid
  T.ok(pid > 0, "pid " .. pid)
  local st = T.ok(status(pid), "/proc/" .. pid .. "/status")
  T.ok(st:find("NoNewPrivs:%s*1"), "NoNewPrivs 1")
  T.ok(st:find("PPid:%s*%d+"), "PPid")
  T.ok(type(s.sandbox) == "string" and #s.sandbox > 0, "sandbox report: " .. tostring(s.sandbox))
  if st:find("Seccomp:%s*2") then
    T.ok(st:find("CapEff:%s*0+\n"), "CapEff 0")
    local function ns(p, kind)
      local h = io.popen("readlink /proc/" .. p .. "/ns/" .. kind)
      local v = h:read("l"); h:close(); return v
    end
    for _, kind in ipairs { "net", "mnt", "ipc", "uts" } do
      local mine, its = ns("self", kind), ns(pid, kind)
      T.ok(mine and its and mine ~= its, kind .. " namespace differs: " .. tostring(its))
    end
  else
    T.skip("device process seccomp/capabilities", "sandbox not in this build: " .. s.sandbox)
  end
  T.run(m, "exit", 0x2a)
  local s2 = post:state()
  T.eq(s2.last_write, 1, "last POST code the guest wrote")
  T.eq(s2.writes, 40000, "writes served by the process")
  T.eq(s2.reads, 40000, "reads served by the process")
  m:close()
  sleep(0.1)
  T.eq(status(pid), nil, "the process went with the machine")
end)

T.case("snapshots take and put back an isolated device's state", function()
  local m, post = machine { isolate = true }
  local snap = m:snapshot()
  T.run(m, "exit", 0x2a)
  T.eq(post:state().writes, 40000, "writes after the run")
  m:restore(snap)
  T.eq(post:state().writes, 0, "writes after the restore")
  T.run(m, "exit", 0x2a)
  T.eq(post:state().writes, 40000, "writes after the run again")
  m:close()
end)

-- Start the guest, do `act` to the device process once it is busy, wait.
local function ordeal(opts, act)
  local m, post = machine(opts)
  local pid = post:state().isolated.pid
  m:start()
  sleep(0.2)
  os.execute(act .. " " .. pid)
  local r = m:wait { timeout = 30 }
  return r, post, pid, m
end

T.case("kill -9 with on_crash = \"stop\": the run ends with reason error naming the device", function()
  local r, post = ordeal({ isolate = true, on_crash = "stop" }, "kill -9")
  T.eq(r.reason, "error", "reason (" .. tostring(r.message) .. ")")
  T.ok(r.message:find("port80", 1, true) and r.message:find("signal 9", 1, true), "message: " .. r.message)
  local s = post:state() -- the last state seen, and why it died
  T.eq(s.isolated.alive, false, "dead")
  T.eq(s.isolated.pid, -1, "no pid")
end)

T.case("kill -9 with on_crash = \"restart\": a new process, the guest runs to its end", function()
  local r, post, pid = ordeal({ isolate = true, on_crash = "restart" }, "kill -9")
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x2a, "exit code")
  local s = post:state()
  T.eq(s.isolated.restarts, 1, "restarts")
  T.ok(s.isolated.alive and s.isolated.pid ~= pid, "a new pid")
  T.ok(s.isolated.why:find("signal 9", 1, true), "why: " .. s.isolated.why)
end)

T.case("kill -9 with on_crash = function: called with the device and why; reads return all ones", function()
  local calls = {}
  local r, post = ordeal({ isolate = true, on_crash = function(dev, why)
    calls[#calls + 1] = { dev = dev, why = why }
  end }, "kill -9")
  T.eq(r.reason, "exit", "the guest went on (" .. tostring(r.message) .. ")")
  T.eq(#calls, 1, "calls")
  T.eq(calls[1].dev, post, "the device handle")
  T.ok(calls[1].why:find("signal 9", 1, true), "why: " .. calls[1].why)
end)

T.case("a hung device (SIGSTOP): the access times out, the VMM restarts it, run returns normally", function()
  local t0 = os.time()
  local r, post = ordeal({ isolate = true, on_crash = "restart", timeout = 0.2 }, "kill -STOP")
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x2a, "exit code")
  local s = post:state()
  T.eq(s.isolated.restarts, 1, "restarts")
  T.ok(s.isolated.why:find("hung", 1, true), "why: " .. s.isolated.why)
  T.ok(os.time() - t0 < 15, "quick")
end)

-- Faults at the process boundary (F.dev.*): a guest that reads an isolated
-- port80 (fill 0x5a) 20 times and exits with the count of reads that were
-- not 0x5a.
local function fault_machine(opts)
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  opts.isolate, opts.fill = true, 0x5a
  local post = m:add(mb.port80(opts))
  m:boot_flat { file = T.guest("iso_fault"), mode = "protected" }
  return m, post
end

local function slurp(path)
  local f = assert(io.open(path)); local t = f:read("a"); f:close(); return t
end

T.case("dev.kill at the 5th read, on_crash = \"restart\": the read in flight goes to the new process", function()
  local m, post = fault_machine { on_crash = "restart" }
  local pid = post:state().isolated.pid
  local path = os.tmpname()
  local plan = m:faults { seed = 7, trace = path }
  local k = plan:add(mb.fault.dev.kill { dev = post, op = "read", nth = 5 })
  T.run(m, "exit", 0) -- every read gave 0x5a: none got the dead process's all ones
  T.eq(plan:fired(k), 1)
  local s = post:state()
  T.eq(s.isolated.restarts, 1, "restarts")
  T.ok(s.isolated.alive and s.isolated.pid ~= pid, "a new process")
  T.ok(s.isolated.why:find("dev.kill", 1, true), "why: " .. s.isolated.why)
  local t = slurp(path); os.remove(path)
  T.ok(t:find('"action":"dev.kill"', 1, true), t)
  m:close()
end)

T.case("dev.kill with on_crash = \"needs_reset\": from the 5th read on, all ones", function()
  local m, post = fault_machine { on_crash = "needs_reset" }
  local plan = m:faults { seed = 7 }
  plan:add(mb.fault.dev.kill { dev = post, op = "read", nth = 5 })
  T.run(m, "exit", 16)
  T.raises(function() post:state() end, "the device process is dead (killed by a fault rule (dev.kill))")
  m:close()
end)

T.case("dev.drop loses the access (a read gets all ones), dev.corrupt flips a read's bits", function()
  local m, post = fault_machine {}
  local plan = m:faults { seed = 3 }
  local dr = plan:add(mb.fault.dev.drop { dev = post, op = "read", nth = 3 })
  local dw = plan:add(mb.fault.dev.drop { dev = post, op = "write", addr = 0x80, nth = 2 })
  local c = plan:add(mb.fault.dev.corrupt { dev = post, nth = 7, bits = 3 })
  local none = plan:add(mb.fault.dev.drop { dev = post, addr = { 0x81, 0x87 } })
  T.run(m, "exit", 2) -- the dropped read and the corrupt one
  T.eq(plan:fired(dr), 1); T.eq(plan:fired(dw), 1); T.eq(plan:fired(c), 1)
  T.eq(plan:matched(none), 0, "no access to 0x81-0x87")
  local s = post:state()
  T.eq(s.reads, 19, "the dropped read never reached the process")
  T.eq(s.writes, 19, "nor the dropped write")
  m:close()
end)

T.case("dev.delay holds the reply; dev rules are traced and replay", function()
  local path = os.tmpname()
  local m, post = fault_machine {}
  local plan = m:faults { seed = 11, trace = path }
  local d = plan:add(mb.fault.dev.delay { dev = post, op = "write", ms = 5, count = 3 })
  local p = plan:add(mb.fault.dev.drop { dev = post, op = "read", p = 0.3 })
  local r = T.run(m, "exit")
  local code, fired = r.exit_code, plan:fired(p)
  T.eq(plan:fired(d), 3, "delayed")
  T.eq(code, fired, "each dropped read is one the guest saw wrong")
  T.eq(post:state().writes, 20, "delayed, not lost")
  m:close()
  local m2, post2 = fault_machine {}
  local plan2 = m2:faults { replay = path }
  plan2:add(mb.fault.dev.delay { dev = post2, op = "write", ms = 5, count = 3 })
  local p2 = plan2:add(mb.fault.dev.drop { dev = post2, op = "read", p = 0.3 })
  T.run(m2, "exit", code)
  T.eq(plan2:fired(p2), fired, "the same reads dropped")
  m2:close()
  os.remove(path)
end)

T.case("dev.* rule errors name the field", function()
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  local here = m:add(mb.port80 {})
  local plan = m:faults { seed = 1 }
  T.raises(function() plan:add(mb.fault.dev.drop { dev = here }) end,
    "dev.* faults act on isolated devices")
  T.raises(function() mb.fault.dev.corrupt { dev = here, bits = 65 } end, "bits: 65")
  T.raises(function() mb.fault.dev.corrupt { dev = here, op = "write" } end, "op: corrupt acts on reads")
  T.raises(function() mb.fault.dev.drop { dev = here, op = "flush" } end, "op: an access")
  T.raises(function() mb.fault.dev.delay { dev = here } end, "ms: missing")
  T.raises(function() mb.fault.dev.kill { dev = here, sectors = { 1, 2 } } end, "sectors")
  m:close()
end)

T.case("posted writes: reads see every write before them, a posted debug_exit before hlt ends the run", function()
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  local u = m:add(mb.uart16550 { isolate = true, posted = true, console = "buffer" })
  local ex = m:add(mb.debug_exit { port = 0xf4, isolate = true, posted = true })
  m:boot_flat { file = T.guest("iso_post"), mode = "protected" }
  T.run(m, "exit", 0x2a)
  local s = u:state().isolated
  T.eq(s.posted, 1200, "the scratch register writes went posted")
  T.ok(s.flushes >= 1000 // 64, "flushes: " .. s.flushes)
  T.eq(ex:state().isolated.posted, 1, "the exit write was posted")
  T.raises(function() mb.port80 { posted = true } end, "posted: writes are posted to a device process")
  T.raises(function() mb.port80 { isolate = true, posted = 1 } end, "posted: expected a boolean")
  m:close()
end)

T.case("an isolated virtio-blk's doorbells are KVM ioeventfds it waits on itself", function()
  local img = os.tmpname()
  assert(os.execute("truncate -s 64K " .. img))
  for _, chip in ipairs { "user", "kernel" } do
    local m = mb.machine { memory = "16M", irqchip = chip }
    keep[#keep + 1] = m
    if chip == "user" then m:add(mb.pic8259 {}) end
    m:add(mb.debug_exit { port = 0xf4 })
    local disk = m:add(mb.virtio_blk { image = img, isolate = true })
    m:boot_flat { file = T.guest("blk_seq"), mode = "protected" }
    T.run(m, "exit", 0)
    local s = disk:state()
    T.eq(s.isolated.doorbells, 1, chip .. ": one queue, one ioeventfd")
    T.eq(s.ioeventfd, true, chip .. ": the process's transport waits on it")
    T.ok(s.notifications >= 32, chip .. ": 32 requests, each kicked: " .. s.notifications)
    T.eq(s.mmio_notifications, 0, chip .. ": no kick crossed as an MMIO write")
    T.eq(s.isolated.interrupts, chip == "kernel" and "irqfd" or "line", chip .. ": interrupts")
    T.eq(s.irqfd, chip == "kernel", chip .. ": the process's transport writes the irqfd")
    m:close()
  end
  os.remove(img)
end)

T.done()
