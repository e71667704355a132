-- An isolated virtio-net (mb.virtio_net { isolate = true }, docs/devproc.md):
-- the VMM opens the backend (here one end of mb.netpair()) and hands its
-- descriptor to the device process, which waits for received frames on its
-- own event loop. A Lua driver (tests/lua/vhost_driver.lua, registers through
-- dev:mmio_read/mmio_write) sets up the isolated NIC and an in-process one on
-- the other end of the cable and sends frames both ways, with no guest.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local mb = require "moonbox"
local D = require "vhost_driver"
T.need_kvm()

local NUM = 8
local HDR, put, used = D.NET_HDR, D.put, D.used
local function frame(dst, tag) return D.frame(dst, "\2\0\0\0\0\1", tag) end

-- Send frame f from driver a to driver b: b's receive buffer gets it.
local function send(a, b, f, what)
  local RX, TX = 0x300000, 0x310000
  b.m:write(RX, string.rep("\0", 2048))
  put(b, 0, RX, 2048, 2)                  -- device-writable receive buffer
  a.m:write(TX, HDR .. f)
  put(a, 1, TX, #HDR + #f, 0)
  T.ok(used(a, 1), what .. ": transmitted")
  local len = used(b, 0)
  T.ok(len, what .. ": received")
  T.eq(len, #HDR + #f, what .. ": length")
  T.eq(b.m:read(RX + #HDR, #f), f, what .. ": the frame's bytes")
end

T.case("option errors: a listening socket has no peer to hand over", function()
  local m = mb.machine { memory = "16M" }
  local path = os.tmpname() .. ".sock"
  T.raises(function() m:add(mb.virtio_net { backend = { socket = path, listen = true }, isolate = true }) end,
    "backend: socket:" .. path .. ": a listening backend takes its peer later")
  T.raises(function() mb.virtio_net { backend_fd = 3 } end, "unknown option \"backend_fd\"")
  m:close()
  os.remove(path)
end)

T.case("frames both ways between an isolated NIC and one in process", function()
  local a, b = mb.netpair()
  local m1, m2 = mb.machine { memory = "16M" }, mb.machine { memory = "16M" }
  local n1 = m1:add(mb.virtio_net { backend = a, isolate = true, mac = "02:00:00:00:00:01" })
  local n2 = m2:add(mb.virtio_net { backend = b, mac = "02:00:00:00:00:02" })
  T.ok(n1:state().isolated.pid > 0, "in its own process")
  T.eq(n1:state().mac, "02:00:00:00:00:01", "its MAC, from the process's state")
  local d1 = assert(D.new(m1, n1, NUM, 2))
  local d2 = assert(D.new(m2, n2, NUM, 2))
  for i = 1, 3 do
    send(d1, d2, frame("\2\0\0\0\0\2", "out" .. i), "isolated -> in process " .. i)
    send(d2, d1, frame("\2\0\0\0\0\1", "in" .. i), "in process -> isolated " .. i)
  end
  local s = n1:state()
  T.eq(s.isolated.doorbells, 2, "both queues' doorbells are KVM ioeventfds the process waits on")
  T.eq(s.needs_reset, false)
  m1:close(); m2:close()
end)

T.case("net faults on an isolated NIC: decided by the VMM's plan, applied in its process", function()
  local a, b = mb.netpair()
  local m1, m2 = mb.machine { memory = "16M" }, mb.machine { memory = "16M" }
  local n1 = m1:add(mb.virtio_net { backend = a, isolate = true, mac = "02:00:00:00:00:01" })
  local n2 = m2:add(mb.virtio_net { backend = b, mac = "02:00:00:00:00:02" })
  local path = os.tmpname()
  local plan = m1:faults { seed = 7, trace = path }
  local c = plan:add(mb.fault.net.corrupt { dev = n1, dir = "tx", nth = 1, bits = 1, offset = 14 })
  local dr = plan:add(mb.fault.net.drop { dev = n1, dir = "rx", nth = 1 })
  local d1 = assert(D.new(m1, n1, NUM, 2))
  local d2 = assert(D.new(m2, n2, NUM, 2))
  local RX, TX = 0x300000, 0x310000
  -- tx: the first frame leaves the isolated NIC with one bit flipped
  local f = frame("\2\0\0\0\0\2", "out1")
  m2:write(RX, string.rep("\0", 2048)); put(d2, 0, RX, 2048, 2)
  m1:write(TX, HDR .. f); put(d1, 1, TX, #HDR + #f, 0)
  T.ok(used(d1, 1), "transmitted")
  T.eq(used(d2, 0), #HDR + #f, "received, its length kept")
  local got, flips = m2:read(RX + #HDR, #f), 0
  for i = 1, #f do
    local x = got:byte(i) ~ f:byte(i)
    while x ~= 0 do flips = flips + (x & 1); x = x >> 1 end
    if i <= 14 then T.eq(got:byte(i), f:byte(i), "the Ethernet header is past offset 14's reach") end
  end
  T.eq(flips, 1, "one bit flipped")
  -- rx: the first frame for it is lost; the next lands in the same buffer
  m1:write(RX, string.rep("\0", 2048)); put(d1, 0, RX, 2048, 2)
  local lost, kept = frame("\2\0\0\0\0\1", "lost"), frame("\2\0\0\0\0\1", "kept")
  m2:write(TX, HDR .. lost); put(d2, 1, TX, #HDR + #lost, 0)
  T.ok(used(d2, 1), "the lost frame went")
  m2:write(TX + 0x1000, HDR .. kept); put(d2, 1, TX + 0x1000, #HDR + #kept, 0)
  T.ok(used(d2, 1), "the kept frame went")
  T.eq(used(d1, 0), #HDR + #kept)
  T.eq(m1:read(RX + #HDR, #kept), kept, "the second frame, not the first")
  T.eq(plan:fired(c), 1); T.eq(plan:fired(dr), 1)
  local f2 = assert(io.open(path)); local t = f2:read("a"); f2:close(); os.remove(path)
  T.ok(t:find('"action":"net.corrupt"', 1, true) and t:find('"action":"net.drop"', 1, true), t)
  plan:add(mb.fault.net.link { dev = n1, up = false })
  T.eq(n1:state().link_up, false, "net.link acts in the isolated NIC's process")
  m1:close(); m2:close()
end)

T.done()
