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
  -- line errors too, since issue 9 (test_isolate_faults.lua)
  T.ok(plan:add(mb.fault.uart.error { dev = u, kind = "framing" }), "uart.error")
  local img = os.tmpname()
  assert(os.execute("truncate -s 64K " .. img))
  local disk = m:add(mb.virtio_blk { image = img, isolate = true })
  -- decided here, or acting once, in its process (test_isolate_faults.lua)
  T.ok(plan:add(mb.fault.blk.error { dev = disk }), "blk.error on an isolated disk")
  T.ok(plan:add(mb.fault.virtio.needs_reset { dev = disk }), "needs_reset on an isolated disk")
  T.eq(disk:state().needs_reset, true)
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

for _, mode in ipairs { "socket", true } do
  T.case("posted writes (" .. tostring(mode) .. "): reads see every write before them, a posted debug_exit before hlt ends the run", function()
    local m = mb.machine { memory = "16M" }
    keep[#keep + 1] = m
    m:add(mb.pic8259 {})
    local u = m:add(mb.uart16550 { isolate = true, posted = mode, console = "buffer" })
    local ex = m:add(mb.debug_exit { port = 0xf4, isolate = true, posted = mode })
    m:boot_flat { file = T.guest("iso_post"), mode = "protected" }
    T.run(m, "exit", 0x2a)
    local s = u:state().isolated
    T.eq(s.posted, 1200, "the scratch register writes went posted")
    T.eq(s.ring, mode == true, "through the shared ring")
    if mode == "socket" then
      T.ok(s.flushes >= 1000 // 64, "flushes: " .. s.flushes)
    else
      T.ok(s.doorbells_rung >= 1 and s.doorbells_rung <= 1200, "doorbells: " .. s.doorbells_rung)
    end
    T.eq(ex:state().isolated.posted, 1, "the exit write was posted")
    T.raises(function() mb.port80 { posted = true } end, "posted: writes are posted to a device process")
    T.raises(function() mb.port80 { isolate = true, posted = 1 } end, 'posted: expected true, "ring" or "socket"')
    T.raises(function() mb.port80 { isolate = true, posted = "fast" } end, 'posted: "fast" is not')
    m:close()
  end)
end

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

-- DMA grants (docs/devproc.md, "DMA"): tests/guests/blk_seq.S keeps its
-- queue and buffers in 0x10000-0x16fff and reads 32 sectors one by one.
local function blk_granted(grants, dma, on_crash)
  local img = os.tmpname()
  local f = assert(io.open(img, "wb"))
  for i = 0, 127 do f:write(string.rep(string.char(i), 512)) end
  f:close()
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  m:add(mb.pic8259 {})
  m:add(mb.debug_exit { port = 0xf4 })
  local disk = m:add(mb.virtio_blk { image = img, mmio = { base = 0xd0000000, size = 0x1000 },
                                     isolate = { dma = dma or "granted", grants = grants },
                                     on_crash = on_crash })
  m:boot_flat { file = T.guest("blk_seq"), mode = "protected" }
  os.remove(img)
  return m, disk
end

-- The device process's mappings of guest RAM's memfds: { size, ... } in
-- address order; the dirty map (memfd:moonbox-dirty, its own) apart.
local function memfd_maps(pid)
  local f = assert(io.open("/proc/" .. pid .. "/maps"))
  local sizes, dirty = {}, {}
  for l in f:lines() do
    local a, b = l:match("^(%x+)-(%x+)")
    local n = tonumber(b, 16) - tonumber(a, 16)
    if l:find("memfd:moonbox-dirty", 1, true) then dirty[#dirty + 1] = n
    elseif l:find("memfd:", 1, true) then sizes[#sizes + 1] = n end
  end
  f:close()
  return sizes, dirty
end
-- as text, smallest first (where mmap puts each is its business)
local function hexlist(t)
  local o = {}
  for i, v in ipairs(t) do o[i] = v end
  table.sort(o)
  for i, v in ipairs(o) do o[i] = string.format("0x%x", v) end
  return table.concat(o, ",")
end

T.case("isolate option errors: dma and grants", function()
  local m = mb.machine { memory = "16M" }
  T.raises(function() m:add(mb.port80 { isolate = { dma = "all" } }) end, "dma")
  T.raises(function() m:add(mb.port80 { isolate = { dma = "granted" } }) end, "dma = \"granted\" needs grants")
  T.raises(function() m:add(mb.port80 { isolate = { dma = "granted", grants = { { 0x1001, 0x1000 } } } }) end,
    "grants[1]: 0x1001+0x1000 is not a whole number of 4K pages")
  T.raises(function() m:add(mb.port80 { isolate = { dma = "granted", grants = { { 0x2000000, 0x1000 } } } }) end,
    "grants[1]: 0x2000000+0x1000 is not inside one RAM region")
  T.raises(function() m:add(mb.port80 { isolate = { dma = "granted", grants = { { 0, 0x2000 }, { 0x1000, 0x1000 } } } }) end,
    "grants[2] overlaps grants[1]")
  T.raises(function() m:add(mb.port80 { isolate = { dma = "shared", grants = { { 0, 0x1000 } } } }) end,
    "grants: only with dma")
  T.raises(function() m:add(mb.port80 { isolate = { grant = {} } }) end, "isolate: unknown option \"grant\"")
  local post = m:add(mb.port80 {})
  T.raises(function() post:revoke(0) end, "revoke: port80 is not isolated")
  m:close()
end)

T.case("granted: the device maps only its window and serves the guest through it", function()
  local m, disk = blk_granted { { 0x10000, 0x7000 } }
  local s = disk:state()
  T.eq(s.isolated.dma.mode, "granted")
  T.eq(s.isolated.dma.grants[1].base, 0x10000); T.eq(s.isolated.dma.grants[1].size, 0x7000)
  local sizes = memfd_maps(s.isolated.pid)
  T.eq(#sizes, 1, "one memfd mapping in /proc/PID/maps")
  T.eq(sizes[1], 0x7000, "of the grant's size, not the 16M of RAM")
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0, "every read came back OK")
  T.eq(m:read(0x14000, 4), string.rep(string.char(31), 4), "the last sector's data reached the guest")
  m:close()
end)

T.case("granted: a grant without the guest's rings: the device fails the queue, the VMM lives", function()
  local m, disk = blk_granted { { 0x14000, 0x1000 } }
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0xff04, "the request never came back")
  local s = disk:state()
  T.ok(s.status & 0x40 ~= 0, "DEVICE_NEEDS_RESET set: status " .. tostring(s.status))
  T.ok(s.isolated.alive, "the device process lives on")
  m:close()
end)

T.case("revoke: the window leaves the process; later accesses through it fail", function()
  local m, disk = blk_granted { { 0x10000, 0x7000 } }
  local snap = m:snapshot()
  local r = m:run { timeout = 30 }
  T.eq(r.exit_code, 0, "reads before the revoke")
  disk:revoke(0x10000)
  local s = disk:state()
  T.eq(s.isolated.dma.grants[1].revoked, true, "state says revoked")
  T.eq(#memfd_maps(s.isolated.pid), 0, "no memfd mapping left in /proc/PID/maps")
  T.raises(function() disk:revoke(0x20000) end, "revoke: blk0: no grant at 0x20000")
  m:restore(snap)
  r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0xff04, "no request served after the revoke")
  s = disk:state()
  T.ok(s.status & 0x40 ~= 0, "DEVICE_NEEDS_RESET: status " .. tostring(s.status))
  T.ok(s.isolated.alive, "the device process lives on")
  m:close()
end)

T.case("revoke, then kill -9 with on_crash = restart: the new process gets the other grant only", function()
  local m, disk = blk_granted({ { 0x10000, 0x4000 }, { 0x14000, 0x3000 } }, nil, "restart")
  disk:revoke(0x14000)
  local pid = disk:state().isolated.pid
  os.execute("kill -9 " .. pid)
  local s
  for _ = 1, 100 do -- bounded: the policy runs on the event loop
    local ok, st = pcall(disk.state, disk) -- fails while the death is news
    s = ok and st or s
    if ok and st.isolated.alive and st.isolated.pid ~= pid then break end
    sleep(0.05)
  end
  T.ok(s and s.isolated.alive and s.isolated.pid ~= pid, "restarted")
  local sizes = memfd_maps(s.isolated.pid)
  T.eq(#sizes, 1, "one memfd mapping"); T.eq(sizes[1], 0x4000, "the grant not revoked")
  local r = m:run { timeout = 30 }
  T.eq(r.exit_code, 0xff04, "the data buffer at 0x14000 is out of reach")
  T.ok(disk:state().status & 0x40 ~= 0, "DEVICE_NEEDS_RESET")
  m:close()
end)

-- Grants at run time (dev:grant, DMA_MAP): blk_seq's rings and header are
-- in 0x10000-0x13fff, its data buffer, status and clock in 0x14000-0x16fff.
local function restarted(disk, pid)
  local s
  for _ = 1, 400 do -- bounded: the policy runs on the event loop
    local ok, st = pcall(disk.state, disk) -- fails while the death is news
    s = ok and st or s
    if ok and st.isolated.alive and st.isolated.pid ~= pid then break end
    sleep(0.05)
  end
  T.ok(s and s.isolated.alive and s.isolated.pid ~= pid, "restarted")
  return s
end

T.case("grant at run time: a read outside the grant fails; granted, the same read works", function()
  local m, disk = blk_granted { { 0x10000, 0x4000 } }
  local snap = m:snapshot()
  local pid = disk:state().isolated.pid
  T.eq(hexlist(memfd_maps(pid)), hexlist { 0x4000 }, "/proc/PID/maps: the CREATE's window")
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0xff04, "the data buffer at 0x14000 is out of reach: the request fails")
  T.ok(disk:state().status & 0x40 ~= 0, "DEVICE_NEEDS_RESET")
  disk:grant(0x14000, 0x3000)
  local g = disk:state().isolated.dma.grants
  T.eq(#g, 2); T.eq(g[2].base, 0x14000); T.eq(g[2].size, 0x3000); T.eq(g[2].revoked, false)
  local sizes, dirty = memfd_maps(pid)
  T.eq(hexlist(sizes), hexlist { 0x4000, 0x3000 }, "/proc/PID/maps: exactly the two windows")
  T.eq(#dirty, 1, "and the dirty map, its own memfd")
  m:restore(snap)
  r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0, "every read came back OK through the new window")
  T.eq(m:read(0x14000, 4), string.rep(string.char(31), 4), "the last sector's data reached the guest")
  T.eq(disk:state().isolated.pid, pid, "the same process")
  m:close()
end)

T.case("grant: revoke and grant again; a restart (on_crash = restart) keeps the run-time grants", function()
  local m, disk = blk_granted({ { 0x10000, 0x4000 } }, nil, "restart")
  disk:grant { base = 0x14000, size = 0x3000 }
  local pid = disk:state().isolated.pid
  T.eq(hexlist(memfd_maps(pid)), hexlist { 0x4000, 0x3000 })
  disk:revoke(0x14000)
  T.eq(hexlist(memfd_maps(pid)), hexlist { 0x4000 }, "revoked: the window left the process")
  T.eq(disk:state().isolated.dma.grants[2].revoked, true)
  disk:grant { 0x14000, 0x3000 }
  local g = disk:state().isolated.dma.grants
  T.eq(#g, 2, "the same window takes its old slot"); T.eq(g[2].revoked, false)
  T.eq(hexlist(memfd_maps(pid)), hexlist { 0x4000, 0x3000 }, "granted again: mapped again")
  os.execute("kill -9 " .. pid)
  local s = restarted(disk, pid)
  -- the restart maps the run-time grants just after the new process is up
  local maps
  for _ = 1, 100 do
    maps = hexlist(memfd_maps(s.isolated.pid))
    if maps == hexlist { 0x4000, 0x3000 } then break end
    sleep(0.05)
  end
  T.eq(maps, hexlist { 0x4000, 0x3000 }, "the new process has both windows")
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0, "every read came back OK in the restarted process")
  -- a run-time grant revoked before a restart stays out of the new process
  pid = disk:state().isolated.pid
  disk:revoke(0x14000)
  os.execute("kill -9 " .. pid)
  s = restarted(disk, pid)
  T.eq(hexlist(memfd_maps(s.isolated.pid)), hexlist { 0x4000 }, "revoked, then restarted: one window")
  disk:grant(0x14000, 0x3000)
  T.eq(hexlist(memfd_maps(s.isolated.pid)), hexlist { 0x4000, 0x3000 }, "granted again in the new process")
  m:close()
end)

T.case("grant errors name the value", function()
  local m, disk = blk_granted { { 0x10000, 0x4000 } }
  T.raises(function() disk:grant(0x14001, 0x1000) end,
    "grant: blk0: 0x14001+0x1000 is not a whole number of 4K pages")
  T.raises(function() disk:grant(0x14000, 0) end, "grant: blk0: 0x14000+0x0 is not a whole number")
  T.raises(function() disk:grant(0xfff000, 0x2000) end,
    "grant: blk0: 0xfff000+0x2000 is not inside one RAM region")
  T.raises(function() disk:grant(0x12000, 0x4000) end,
    "grant: blk0: 0x12000+0x4000 overlaps grants[1] (0x10000+0x4000)")
  T.raises(function() disk:grant(0x10000, 0x4000) end, "0x10000+0x4000 is granted already")
  T.raises(function() disk:grant(0x14000) end, "grant: size: nil is not an address or size")
  T.raises(function() disk:grant { base = -1, size = 0x1000 } end, "grant: base: -1 is not an address")
  disk:revoke(0x10000)
  T.raises(function() disk:grant(0x10000, 0x1000) end,
    "overlaps revoked grants[1] (0x10000+0x4000): grant that window again, whole")
  for i = 1, 15 do disk:grant(0x100000 + i * 0x2000, 0x1000) end
  T.eq(#disk:state().isolated.dma.grants, 16)
  T.raises(function() disk:grant(0x200000, 0x1000) end,
    "grant: blk0: 0x200000+0x1000: more than 16 grants")
  disk:grant(0x10000, 0x4000) -- its own slot: not past the limit
  T.eq(#memfd_maps(disk:state().isolated.pid), 16, "16 windows mapped")
  m:close()
  for _, c in ipairs {
    { true, "grant: port80: dma is \"shared\" (all RAM, nothing to grant)" },
    { { dma = "message" }, "grant: port80: dma = \"message\" without grants reaches all RAM" },
    { nil, "grant: port80 is not isolated" },
  } do
    local m2 = mb.machine { memory = "16M" }
    local post = m2:add(mb.port80 { isolate = c[1] })
    T.raises(function() post:grant(0x20000, 0x1000) end, c[2])
    m2:close()
  end
end)

T.case("message: a grant at run time joins the VMM's check list", function()
  local m, disk = blk_granted({ { 0x10000, 0x4000 } }, "message")
  local snap = m:snapshot()
  T.eq(m:run { timeout = 30 }.exit_code, 0xff04, "the data buffer is refused")
  local before = disk:state().isolated.dma.refused
  T.ok(before >= 1, "refused " .. before)
  disk:grant(0x14000, 0x3000)
  m:restore(snap)
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0, "granted: served")
  T.eq(disk:state().isolated.dma.refused, before, "nothing refused since")
  m:close()
end)

-- The dirty log (docs/devproc.md, "Dirty pages"): a device process writes
-- guest RAM through its own mapping; an in-memory restore copies back the
-- pages written since the snapshot, which must include those.
local function dirty_case(dma, grants)
  T.case("an in-memory restore undoes what an isolated virtio-blk wrote (dma = " .. dma .. ")", function()
    local m = blk_granted(grants, dma)
    local before = string.rep("snapshot", 64) -- 512 bytes in the data buffer
    m:write(0x14000, before)
    local used = m:read(0x12000, 16)
    local snap = m:snapshot()
    local r = m:run { timeout = 30 }
    T.eq(r.exit_code, 0, "every read came back OK")
    T.eq(m:read(0x14000, 512), string.rep(string.char(31), 512), "the device wrote the data buffer")
    T.ok(m:read(0x12000, 16) ~= used, "and the used ring")
    local _, st = m:restore(snap)
    T.ok(st.dirty_only, "only the dirty pages were copied back")
    T.eq(m:read(0x14000, 512), before, "the data buffer as it was at the snapshot")
    T.eq(m:read(0x12000, 16), used, "the used ring as it was at the snapshot")
    -- the next trial starts from the snapshot too
    T.eq(m:run { timeout = 30 }.exit_code, 0, "the guest runs again")
    _, st = m:restore(snap)
    T.ok(st.dirty_only)
    T.eq(m:read(0x14000, 512), before, "again")
    m:close()
  end)
end
dirty_case("shared")
dirty_case("granted", { { 0x10000, 0x7000 } })

T.case("message: no RAM mapped, every byte by DMA_READ/DMA_WRITE; the guest's reads check out", function()
  local m, disk = blk_granted(nil, "message")
  local s = disk:state()
  T.eq(s.isolated.dma.mode, "message")
  T.eq(#memfd_maps(s.isolated.pid), 0, "no memfd mapping in /proc/PID/maps")
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0, "every read came back OK")
  T.eq(m:read(0x14000, 512), string.rep(string.char(31), 512), "the last sector's data reached the guest")
  local d = disk:state().isolated.dma
  T.ok(d.reads > 32 and d.writes >= 32, "DMA messages: " .. d.reads .. " reads, " .. d.writes .. " writes")
  T.eq(d.refused, 0, "none refused")
  m:close()
end)

T.case("message: the guest's writes reach the disk and read back (snap_disk)", function()
  local img = os.tmpname()
  assert(os.execute("truncate -s 64K " .. img))
  local m = mb.machine { memory = "16M" }
  keep[#keep + 1] = m
  local com = m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "buffer" })
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.virtio_blk { image = img, mmio = { base = 0xd0000000, size = 0x1000 },
                        isolate = { dma = "message" } })
  m:boot_flat { file = T.guest("snap_disk"), mode = "protected" }
  T.run(m, "exit", 1)
  local data = assert(io.open(img, "rb")):read("a")
  T.eq(data:sub(513, 544), "written-through-the-overlay-0042", "sector 1 of the image")
  T.run(m, "exit", 0x99)
  T.ok(com:output():find("written-through-the-overlay-0042", 1, true), "read back: " .. com:output())
  m:close()
  os.remove(img)
end)

T.case("message: a request outside the grants is refused and counted; the VMM lives", function()
  local m, disk = blk_granted({ { 0x10000, 0x4000 } }, "message") -- rings and header, not the data
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit", tostring(r.message))
  T.eq(r.exit_code, 0xff04, "the request never came back")
  local s = disk:state()
  T.ok(s.isolated.dma.refused >= 1, "refused " .. s.isolated.dma.refused)
  T.ok(s.isolated.dma.why:find("0x14000+0x200 refused: outside its grants", 1, true), s.isolated.dma.why)
  T.ok(s.status & 0x40 ~= 0, "DEVICE_NEEDS_RESET: status " .. tostring(s.status))
  T.ok(s.isolated.alive, "the device process lives on")
  m:close()
end)

T.case("message: after a revoke, the device's requests in the window are refused", function()
  local m, disk = blk_granted({ { 0x10000, 0x7000 } }, "message")
  local snap = m:snapshot()
  T.eq(m:run { timeout = 30 }.exit_code, 0, "reads before the revoke")
  local before = disk:state().isolated.dma.refused
  disk:revoke(0x10000)
  m:restore(snap)
  local r = m:run { timeout = 30 }
  T.eq(r.exit_code, 0xff04, "no request served after the revoke")
  local d = disk:state().isolated.dma
  T.ok(d.refused > before, "refused " .. d.refused)
  T.eq(d.grants[1].revoked, true)
  m:close()
end)

T.done()
