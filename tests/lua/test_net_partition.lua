-- One-way partitions between two machines on a netpair (docs/faults.md,
-- "Partitions between machines on a netpair"): a net.drop on A's transmit
-- side, or on B's receive side, cuts A -> B while B -> A still flows, and
-- disabling the rule heals it. No guest: a Lua driver
-- (tests/lua/vhost_driver.lua) runs each NIC's queues through
-- dev:mmio_read/mmio_write.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local mb = require "moonbox"
local D = require "vhost_driver"
local F = mb.fault
T.need_kvm()

local NUM = 8
local HDR, put, used = D.NET_HDR, D.put, D.used
local function frame(dst, tag) return D.frame(dst, "\2\0\0\0\0\9", tag) end
local MAC = { "\2\0\0\0\0\1", "\2\0\0\0\0\2" }

local RX, TX = 0x300000, 0x310000
local function pair()
  local a, b = mb.netpair()
  local m1, m2 = mb.machine { memory = "16M" }, mb.machine { memory = "16M" }
  local n1 = m1:add(mb.virtio_net { backend = a, mac = "02:00:00:00:00:01" })
  local n2 = m2:add(mb.virtio_net { backend = b, mac = "02:00:00:00:00:02" })
  return { m = m1, n = n1, d = assert(D.new(m1, n1, NUM, 2)) },
         { m = m2, n = n2, d = assert(D.new(m2, n2, NUM, 2)) }
end

-- from sends "lost" (cut) then, once heal() ran, "kept": to's one receive
-- buffer holds "kept", so "lost" never arrived (no wait for an absence).
local function cut_then_heal(from, to, dst, heal, what)
  to.m:write(RX, string.rep("\0", 2048)); put(to.d, 0, RX, 2048, 2)
  local lost, kept = frame(dst, "lost"), frame(dst, "kept")
  from.m:write(TX, HDR .. lost); put(from.d, 1, TX, #HDR + #lost, 0)
  T.ok(used(from.d, 1), what .. ": the cut frame was sent")
  heal()
  from.m:write(TX + 0x1000, HDR .. kept); put(from.d, 1, TX + 0x1000, #HDR + #kept, 0)
  T.ok(used(from.d, 1), what .. ": the frame after healing was sent")
  T.eq(used(to.d, 0), #HDR + #kept, what .. ": one frame received")
  T.eq(to.m:read(RX + #HDR, #kept), kept, what .. ": the frame after healing, not the cut one")
end

local function flows(from, to, dst, tag, what)
  local f = frame(dst, tag)
  to.m:write(RX + 0x2000, string.rep("\0", 2048)); put(to.d, 0, RX + 0x2000, 2048, 2)
  from.m:write(TX + 0x2000, HDR .. f); put(from.d, 1, TX + 0x2000, #HDR + #f, 0)
  T.ok(used(from.d, 1), what .. ": sent")
  T.eq(used(to.d, 0), #HDR + #f, what .. ": received")
  T.eq(to.m:read(RX + 0x2000 + #HDR, #f), f, what .. ": its bytes")
end

T.case("A -> B cut by a drop on A's transmit side; B -> A flows; disable heals", function()
  local A, B = pair()
  local plan = A.m:faults { seed = 3 }
  local r = plan:add(F.net.drop { dev = A.n, dir = "tx" })
  flows(B, A, MAC[1], "b2a", "B -> A during the partition")
  cut_then_heal(A, B, MAC[2], function() plan:disable(r) end, "A -> B")
  T.eq(plan:fired(r), 1, "the one frame A sent while cut")
  flows(A, B, MAC[2], "a2b", "A -> B after healing")
  A.m:close(); B.m:close()
end)

T.case("A -> B cut by a drop on B's receive side; the other plan sees nothing", function()
  local A, B = pair()
  local pa, pb = A.m:faults { seed = 3 }, B.m:faults { seed = 3 }
  local r = pb:add(F.net.drop { dev = B.n, dir = "rx" })
  local other = pa:add(F.net.drop { dev = A.n, dir = "rx", nth = 1000 })
  flows(B, A, MAC[1], "b2a", "B -> A during the partition")
  -- B's side receives asynchronously (the netpair's reader), so A's used
  -- element does not mean B has decided yet: heal only once it dropped.
  cut_then_heal(A, B, MAC[2], function()
    for _ = 1, 2000 do
      if pb:fired(r) > 0 then break end
      D.sleep(0.005)
    end
    pb:remove(r)
  end, "A -> B")
  T.eq(pb:fired(r), 1, "B dropped the one frame A sent while cut")
  T.eq(pa:fired(other), 0, "A's plan decided nothing about it")
  A.m:close(); B.m:close()
end)

T.done()
