-- virtio devices at the Lua level: placement (automatic and given), option
-- errors that name the key and value, state() and m:virtio_stats().
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"

local img = os.tmpname()
do
  local f = assert(io.open(img, "wb"))
  f:write(string.rep("\0", 1 << 20))
  f:close()
end

local function machine(irqchip)
  return mb.machine { memory = "16M", irqchip = irqchip or "user" }
end

T.case("automatic placement: 4K windows from 0xd0000000, free lines", function()
  local m = machine()
  local b = m:add(mb.virtio_blk { image = img })
  local r = m:add(mb.virtio_rng {})
  local sb, sr = b:state(), r:state()
  T.eq(sb.base, 0xd0000000, "blk base")
  T.eq(sb.size, 0x1000, "blk size")
  T.eq(sb.irq, 5, "blk irq")
  T.eq(sr.base, 0xd0001000, "rng base")
  T.eq(sr.irq, 7, "rng irq")
  T.eq(tostring(b), "blk0 (virtio_blk: mmio 0xd0000000-0xd0000fff, irq 5)", "tostring")
  T.eq(b.name, "blk0", "default name")
  T.eq(r.name, "rng0", "default name")
  T.eq(m:device("blk0"), b, "m:device finds blk0")
  T.eq(m:device("rng0"), r, "m:device finds rng0")
  local b2 = m:add(mb.virtio_blk { image = img, readonly = true })
  T.eq(b2.name, "blk1", "the next free index")
  local named = m:add(mb.virtio_rng { name = "entropy" })
  T.eq(m:device("entropy"), named, "a given name")
  m:close()
end)

T.case("given placement is honoured and the allocator keeps off it", function()
  local m = machine()
  local b = m:add(mb.virtio_blk { image = img, mmio = { base = "0xd0000000", size = "4K" }, irq = 9 })
  local r = m:add(mb.virtio_rng {})
  T.eq(b:state().irq, 9, "blk irq")
  T.eq(r:state().base, 0xd0001000, "rng skips the taken window")
  T.eq(r:state().irq, 5, "rng irq")
  T.raises(function() m:add(mb.virtio_rng { mmio = { base = 0xd0000000, size = 0x1000 } }) end,
    "virtio_rng: mmio: rng1 at 0xd0000000-0xd0000fff overlaps blk0")
  m:close()
end)

T.case("state: features, status, queues, stats", function()
  local m = machine()
  local b = m:add(mb.virtio_blk { image = img, serial = "disk-1" })
  local s = b:state()
  T.ok(s.device_features >> 32 & 1 == 1, "VERSION_1 offered")
  T.ok(s.device_features >> 28 & 1 == 1, "RING_INDIRECT_DESC offered")
  T.ok(s.device_features >> 29 & 1 == 1, "RING_EVENT_IDX offered")
  T.ok(s.device_features >> 9 & 1 == 1, "FLUSH offered")
  T.ok(s.device_features >> 5 & 1 == 0, "not read-only")
  T.eq(s.status, 0, "status")
  T.eq(#s.queues, 1, "one queue")
  T.eq(s.queues[1].ready, false, "queue not ready")
  T.eq(s.stats.capacity, 2048, "capacity in sectors")
  T.eq(s.stats.requests, 0, "no requests yet")
  T.eq(s.stats.syncs, 0, "no fdatasync yet")
  print("# ioeventfd: " .. tostring(s.ioeventfd) .. ", irqfd: " .. tostring(s.irqfd))
  local ro = m:add(mb.virtio_blk { image = img, readonly = true })
  T.ok(ro:state().device_features >> 5 & 1 == 1, "VIRTIO_BLK_F_RO offered")
  local vs = m:virtio_stats()
  T.eq(vs.devices, 2, "virtio_stats devices")
  T.eq(vs.bytes, 0, "virtio_stats bytes")
  m:close()
end)

T.case("kernel irqchip: completions go through KVM_IRQFD", function()
  local m = machine("kernel")
  local r = m:add(mb.virtio_rng {})
  T.eq(r:state().irqfd, true, "irqfd in use")
  m:close()
end)

T.case("option errors name the key and value", function()
  T.raises(function() mb.virtio_blk {} end, "image: missing")
  T.raises(function() mb.virtio_blk { image = "/nonexistent/disk.img" } end,
    "image: /nonexistent/disk.img: No such file or directory")
  T.raises(function() mb.virtio_blk { image = img, colour = 1 } end, "unknown option \"colour\"")
  T.raises(function() mb.virtio_blk { image = img, readonly = "yes" } end, "readonly: expected a boolean")
  T.raises(function() mb.virtio_blk { image = img, serial = string.rep("x", 21) } end,
    "longer than 20 bytes")
  T.raises(function() mb.virtio_blk { image = img, mmio = { base = 0xd0000000, size = 16 } } end,
    "mmio.size")
  T.raises(function() mb.virtio_blk { image = img, mmio = { base = 0xd0000100, size = 0x1000 } } end,
    "not 4K-aligned")
  T.raises(function() mb.virtio_rng { irq = 99 } end, "irq: 99")
  T.raises(function() mb.virtio_rng { irq = "five" } end, "irq: expected an integer")
  local m = machine()
  T.raises(function() m:add(mb.virtio_rng { irq = 20 }) end, "irq: 20 is not an interrupt line")
  m:close()
end)

T.case("state() before m:add is an error", function()
  local d = mb.virtio_rng {}
  T.raises(function() d:state() end, "not part of a running machine")
end)

os.remove(img)
T.done()
