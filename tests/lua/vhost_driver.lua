-- A fake virtio-mmio driver in Lua for the vhost-user tests: it sets the
-- device up as Linux's virtio_mmio does (virtio v1.2 sec. 3.1.1, 4.2.3),
-- lays one split queue (sec. 2.7) out in guest RAM with m:write, and
-- issues virtio-blk requests (sec. 5.2.6) one at a time, with no guest.
-- Registers go through dev:mmio_read/mmio_write (vhost_user devices).
local D = {}

local RING, BUF = 0x100000, 0x200000 -- guest-physical, RAM of a 16M machine

local function sleep(s) os.execute("sleep " .. s) end
D.sleep = sleep

-- Bring dev up with nq queues (default 1) of num entries; returns the
-- driver object or nil, why (FEATURES_OK refused, ...).
function D.new(m, dev, num, nq)
  num, nq = num or 8, nq or 1
  local d = { m = m, dev = dev, num = num, avail_idx = 0, used_seen = 0,
              desc = RING, avail = RING + 0x1000, used = RING + 0x2000, q = {} }
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
  for qi = 0, nq - 1 do
    local base = RING + 0x4000 * qi
    d.q[qi] = { desc = base, avail = base + 0x1000, used = base + 0x2000, avail_idx = 0,
                used_seen = 0 }
    w(0x30, qi)
    local max = r(0x34)
    if max < num then return nil, "QueueNumMax " .. max end
    m:write(base, string.rep("\0", 0x3000))
    w(0x38, num)
    w(0x80, base); w(0x84, 0)
    w(0x90, base + 0x1000); w(0x94, 0)
    w(0xa0, base + 0x2000); w(0xa4, 0)
    w(0x44, 1)          -- QueueReady
  end
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

-- A virtio-blk request put in the ring and notified, not waited for:
-- type 0 read (data = bytes to read) or 1 write (data = the string to
-- write) at sector. Returns a function giving its status byte and the data
-- read; D:done() tells when the device used it.
function D:submit(type, sector, data)
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
  return function()
    return m:read(st, 1):byte(), type == 0 and m:read(buf, len) or nil
  end
end

-- Has the device used the request submitted last? (once per request)
function D:done()
  local idx = string.unpack("<I2", self.m:read(self.used + 2, 2))
  if idx == self.used_seen then return false end
  self.used_seen = idx
  return true
end

-- One virtio-blk request (D:submit), waited for: returns status byte,
-- data read (or nil, why when the device did not answer within timeout
-- seconds).
function D:blk(type, sector, data, timeout)
  local result = self:submit(type, sector, data)
  local deadline = os.time() + (timeout or 10)
  while not self:done() do
    if os.time() > deadline then return nil, "no completion" end
    sleep(0.002)
  end
  return result()
end

-- A generic request on queue qi: outs (strings the device reads), then
-- one device-writable buffer of in_len bytes. Returns the used length and
-- the bytes written, or nil, why.
function D:request(qi, outs, in_len, timeout)
  local m, q = self.m, self.q[qi]
  local descs, addr = {}, BUF
  for _, o in ipairs(outs) do
    m:write(addr, o)
    descs[#descs + 1] = { addr, #o, 0 }
    addr = addr + ((#o + 0xfff) & ~0xfff)
  end
  local inbuf = addr
  m:write(inbuf, string.rep("\0", in_len))
  descs[#descs + 1] = { inbuf, in_len, 2 }
  local tbl = ""
  for i, dsc in ipairs(descs) do
    local last = i == #descs
    tbl = tbl .. desc(dsc[1], dsc[2], dsc[3] | (last and 0 or 1), last and 0 or i)
  end
  m:write(q.desc, tbl)
  m:write(q.avail + 4 + 2 * (q.avail_idx % self.num), string.pack("<I2", 0))
  q.avail_idx = (q.avail_idx + 1) & 0xffff
  m:write(q.avail + 2, string.pack("<I2", q.avail_idx))
  self.dev:mmio_write(0x50, qi)
  local deadline = os.time() + (timeout or 10)
  while true do
    local idx = string.unpack("<I2", m:read(q.used + 2, 2))
    if idx ~= q.used_seen then
      q.used_seen = idx
      break
    end
    if os.time() > deadline then return nil, "no completion" end
    sleep(0.002)
  end
  local slot = (q.used_seen - 1) % self.num
  local _, len = string.unpack("<I4I4", m:read(q.used + 4 + 8 * slot, 8))
  return len, m:read(inbuf, in_len)
end

-- One-buffer requests on queue qi, one descriptor per ring slot (the
-- virtio-net tests): put() offers addr/len with flags (2 = device-writable),
-- used() returns the next used element's length, nil after 10 s.
function D:put(qi, addr, len, flags)
  local m, q = self.m, self.q[qi]
  local slot = q.avail_idx % self.num
  m:write(q.desc + 16 * slot, desc(addr, len, flags, 0))
  m:write(q.avail + 4 + 2 * slot, string.pack("<I2", slot))
  q.avail_idx = (q.avail_idx + 1) & 0xffff
  m:write(q.avail + 2, string.pack("<I2", q.avail_idx))
  self.dev:mmio_write(0x50, qi)
end

function D:used(qi)
  local m, q = self.m, self.q[qi]
  for _ = 1, 2000 do
    local idx = string.unpack("<I2", m:read(q.used + 2, 2))
    if idx ~= q.used_seen then
      local slot = q.used_seen % self.num
      q.used_seen = (q.used_seen + 1) & 0xffff
      local _, len = string.unpack("<I4I4", m:read(q.used + 4 + 8 * slot, 8))
      return len
    end
    sleep(0.005)
  end
end

-- virtio_net_hdr_v1 with no offloads (virtio 1.2 sec. 5.1.6), and a 60-byte
-- Ethernet frame to dst from src (6-byte strings) of the local
-- experimental ethertype, tag first in its payload.
D.NET_HDR = string.rep("\0", 12)
function D.frame(dst, src, tag)
  local eth = dst .. src .. "\x88\xb5"
  return eth .. tag .. string.rep("\xa5", 60 - #eth - #tag)
end

return D
