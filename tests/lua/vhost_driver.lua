-- A fake virtio-mmio driver in Lua for the vhost-user tests: it sets the
-- device up as Linux's virtio_mmio does (virtio v1.2 sec. 3.1.1, 4.2.3),
-- lays one split queue (sec. 2.7) out in guest RAM with m:write, and
-- issues virtio-blk requests (sec. 5.2.6) one at a time, with no guest.
-- Registers go through dev:mmio_read/mmio_write (vhost_user devices).
local D = {}

local RING, BUF = 0x100000, 0x200000 -- guest-physical, RAM of a 16M machine

local function sleep(s) os.execute("sleep " .. s) end
D.sleep = sleep

-- Bring dev up with one queue of num entries; returns the driver object
-- or nil, why (FEATURES_OK refused, ...).
function D.new(m, dev, num)
  num = num or 8
  local d = { m = m, dev = dev, num = num, avail_idx = 0, used_seen = 0,
              desc = RING, avail = RING + 0x1000, used = RING + 0x2000 }
  local r, w = function(o) return dev:mmio_read(o) end, function(o, v) dev:mmio_write(o, v) end
  assert(r(0) == 0x74726976, "magic")
  w(0x70, 0)          -- reset
  w(0x70, 1)          -- ACKNOWLEDGE
  w(0x70, 3)          -- DRIVER
  w(0x14, 1)
  local hi = r(0x10)
  if hi & 1 == 0 then return nil, "no VERSION_1" end
  w(0x24, 1); w(0x20, 1) -- VERSION_1 only
  w(0x24, 0); w(0x20, 0)
  w(0x70, 11)         -- FEATURES_OK
  if r(0x70) & 8 == 0 then return nil, "FEATURES_OK refused" end
  w(0x30, 0)
  local max = r(0x34)
  if max < num then return nil, "QueueNumMax " .. max end
  m:write(RING, string.rep("\0", 0x3000))
  w(0x38, num)
  w(0x80, d.desc); w(0x84, 0)
  w(0x90, d.avail); w(0x94, 0)
  w(0xa0, d.used); w(0xa4, 0)
  w(0x44, 1)          -- QueueReady
  w(0x70, 15)         -- DRIVER_OK
  d.status = r(0x70)
  return setmetatable(d, { __index = D })
end

function D:config(off, n)
  local v = 0
  for i = 0, n - 1 do
    v = v | (self.dev:mmio_read(0x100 + off + 4 * i) << (32 * i))
  end
  return v
end

local function desc(addr, len, flags, next)
  return string.pack("<I8I4I2I2", addr, len, flags, next)
end

-- One virtio-blk request: type 0 read (data = bytes to read) or 1 write
-- (data = the string to write) at sector; returns status byte, data read
-- (or nil, why when the device did not answer within timeout seconds).
function D:blk(type, sector, data, timeout)
  local m = self.m
  local len = type == 0 and data or #data
  local hdr, buf, st = BUF, BUF + 0x1000, BUF + 0x1000 + len
  m:write(hdr, string.pack("<I4I4I8", type, 0, sector))
  if type == 1 then m:write(buf, data) end
  m:write(st, "\xff")
  m:write(self.desc, desc(hdr, 16, 1, 1) ..
    desc(buf, len, 1 | (type == 0 and 2 or 0), 2) .. desc(st, 1, 2, 0))
  local slot = self.avail_idx % self.num
  m:write(self.avail + 4 + 2 * slot, string.pack("<I2", 0))
  self.avail_idx = (self.avail_idx + 1) & 0xffff
  m:write(self.avail + 2, string.pack("<I2", self.avail_idx))
  self.dev:mmio_write(0x50, 0) -- QueueNotify
  local deadline = os.time() + (timeout or 10)
  while true do
    local idx = string.unpack("<I2", m:read(self.used + 2, 2))
    if idx ~= self.used_seen then
      self.used_seen = idx
      break
    end
    if os.time() > deadline then return nil, "no completion" end
    sleep(0.002)
  end
  local status = m:read(st, 1):byte()
  return status, type == 0 and m:read(buf, len) or nil
end

return D
