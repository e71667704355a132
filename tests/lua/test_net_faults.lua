-- Net faults without a guest: every option error of the F.net
-- constructors, plan:add against the right device, the rules' reports,
-- and F.net.link in the NIC's state. What frames see is in
-- tests/unit/test_virtio_net.c (the device alone) and
-- tests/linux/test_virtio_io.lua (two Linux guests pinging).
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
local F = mb.fault

local m = mb.machine { memory = "16M" }
local a, b = mb.netpair()
local nic = m:add(mb.virtio_net { backend = a })
local rng = m:add(mb.virtio_rng {})
local m2 = mb.machine { memory = "16M" }
local nic2 = m2:add(mb.virtio_net { backend = b })

T.case("F.net constructors check every option", function()
  T.raises(function() F.net.drop { dev = nic, colour = 1 } end, "colour")
  T.raises(function() F.net.drop { dir = "rx" } end, "dev:")
  T.raises(function() F.net.drop { dev = nic, dir = "up" } end, 'dir: "up" is not one of')
  T.raises(function() F.net.drop { dev = nic, p = 1.5 } end, "p:")
  T.raises(function() F.net.drop { dev = nic, nth = 0 } end, "nth:")
  T.raises(function() F.net.drop { dev = nic, sectors = { 1, 2 } } end, "sectors")
  T.raises(function() F.net.drop { dev = nic, burst = 3 } end, "burst: expected")
  T.raises(function() F.net.drop { dev = nic, burst = { enter = 0.1 } } end, "burst: enter and leave")
  T.raises(function() F.net.drop { dev = nic, burst = { enter = 0.1, leave = 2 } } end,
    "burst.leave: 2 is not a probability")
  T.raises(function() F.net.drop { dev = nic, burst = { enter = 0.1, leave = 0.2, lose = 1 } } end,
    "lose")
  T.raises(function() F.net.duplicate { dev = nic, copies = 0 } end, "copies: 0 is not 1-16")
  T.raises(function() F.net.duplicate { dev = nic, copies = 1.5 } end, "copies: 1.5")
  T.raises(function() F.net.corrupt { dev = nic, bits = 65 } end, "bits: 65 is not 1-64")
  T.raises(function() F.net.corrupt { dev = nic, offset = -1 } end, "offset: -1")
  T.raises(function() F.net.reorder { dev = nic, gap = 0 } end, "gap: 0 is not 1-64")
  T.raises(function() F.net.reorder { dev = nic, ms = 0 } end, "ms: 0 is not 1-60000")
  T.raises(function() F.net.delay { dev = nic } end, "ms: missing")
  T.raises(function() F.net.delay { dev = nic, ms = 0 } end, "ms: 0 with no jitter")
  T.raises(function() F.net.delay { dev = nic, ms = 10, jitter = -1 } end, "jitter: -1")
  T.raises(function() F.net.delay { dev = nic, ms = 70000 } end, "ms: 70000 is not 0-60000")
  T.raises(function() F.net.rate { dev = nic } end, "bytes_per_s: missing")
  T.raises(function() F.net.rate { dev = nic, bytes_per_s = 4 } end, "bytes_per_s: 4 is not")
  T.raises(function() F.net.rate { dev = nic, bytes_per_s = 1000, max_wait_ms = 0 } end,
    "max_wait_ms: 0")
  T.raises(function() F.net.link { dev = nic } end, "up: expected true or false")
  T.raises(function() F.net.link { dev = nic, up = false, nth = 1 } end, "nth")
  T.raises(function() F.net.link { dev = nic, up = false, dir = "rx" } end, "dir")
end)

local plan = m:faults { seed = 5 }

T.case("plan:add: net rules on a virtio_net only; their reports", function()
  T.raises(function() plan:add(F.net.drop { dev = rng }) end, "not a virtio_net")
  T.raises(function() plan:add(F.net.drop { dev = "nope" }) end, 'no device "nope"')
  local r1 = plan:add(F.net.drop { dev = nic, dir = "rx", p = 0.3 })
  local r2 = plan:add(F.net.drop { dev = "net0", dir = "tx",
    burst = { enter = 0.05, leave = 0.5 } })
  local r3 = plan:add(F.net.delay { dev = nic, ms = 10, jitter = 5, every = 2 })
  local r4 = plan:add(F.net.rate { dev = nic, bytes_per_s = 125000 })
  local r5 = plan:add(F.net.duplicate { dev = nic, copies = 2, count = 3 })
  local r6 = plan:add(F.net.corrupt { dev = nic, bits = 3, offset = 14 })
  local r7 = plan:add(F.net.reorder { dev = nic, dir = "tx", gap = 2 })
  T.eq(r7.id, 7)
  T.ok(tostring(r1):find("net.drop on net0, rx, p 0.3", 1, true), tostring(r1))
  T.ok(tostring(r2):find("net.drop on net0, tx, burst 0.05/0.5 loss 1/0", 1, true), tostring(r2))
  T.ok(tostring(r3):find("net.delay on net0, rx and tx, 10+0-5 ms, every 2", 1, true), tostring(r3))
  T.ok(tostring(r4):find("125000 bytes/s, waits up to 1000 ms", 1, true), tostring(r4))
  T.ok(tostring(r5):find("2 copies, count 3", 1, true), tostring(r5))
  T.ok(tostring(r6):find("3 bits from byte 14", 1, true), tostring(r6))
  T.ok(tostring(r7):find("gap 2, at most 100 ms", 1, true), tostring(r7))
  T.eq(#plan:unfired(), 7)
end)

T.case("F.net.link: down and up when added, in the NIC's state", function()
  T.eq(nic:state().link_up, true)
  local down = plan:add(F.net.link { dev = nic, up = false })
  T.eq(nic:state().link_up, false, "down")
  T.eq(plan:fired(down), 1)
  T.ok(tostring(down):find("net.link on net0, down", 1, true), tostring(down))
  T.eq(nic2:state().link_up, true, "the other end is another NIC")
  plan:add(F.net.link { dev = nic, up = true })
  T.eq(nic:state().link_up, true, "up again")
end)

T.case("m:on(\"net\"): options checked; a handle with count and remove", function()
  T.raises(function() m:on("net", { dev = rng }, print) end, "rng0 is a virtio_rng, not a virtio_net")
  T.raises(function() m:on("net", { dev = nic, dir = "up" }, print) end, "dir")
  T.raises(function() m:on("net", { dev = nic, colour = 1 }, print) end, "colour")
  T.raises(function() m:on("net", { dev = nic }) end, "function expected")
  local h = m:on("net", { dev = nic, dir = "rx" }, function() end)
  local h2 = m:on("net", { dev = nic }, function() end) -- a second one shares the observer
  T.eq(h:count(), 0)
  T.eq(tostring(h), "moonbox.on net of net0")
  h:remove()
  T.eq(tostring(h), "moonbox.on net of net0 (removed)")
  h2:remove()
end)

T.case("a closed plan takes no net rule", function()
  plan:close()
  T.raises(function() plan:add(F.net.link { dev = nic, up = false }) end, "closed")
  T.eq(nic:state().link_up, true)
end)

m:close()
m2:close()
T.done()
