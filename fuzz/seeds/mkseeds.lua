-- Well-formed starting inputs for fuzz_virtq and fuzz_blk, in the layout
-- of fuzz/vq_input.h: chains from nonzero heads, at a nonzero start index,
-- direct and indirect, with the avail ring's flags and used_event set.
-- After changing that layout: lua5.4 fuzz/seeds/mkseeds.lua (from the top
-- directory), and commit what it writes.
local VQ_DATA = 0x3000
local NEXT, WRITE, INDIRECT = 1, 2, 4
-- header byte 1
local F_INDIRECT, F_EVENT_IDX, SANE, RAW_IDX = 1, 2, 4, 8
local OPT0 = 16 -- the harness's opt bit 0

-- The data area: blobs placed 16-aligned from VQ_DATA on.
local function area()
  local a = { bytes = "" }
  function a:put(s)
    self.bytes = self.bytes .. string.rep("\0", -#self.bytes % 16)
    local at = VQ_DATA + #self.bytes
    self.bytes = self.bytes .. s
    return at
  end
  return a
end

local function desc(addr, len, flags, next)
  return string.pack("<I8I4I2I2", addr, len, flags or 0, next or 0)
end

-- t.desc: { [i] = desc(...) } for i in 0..n-1 (gaps are zero).
local function input(t)
  local num = t.num
  local log = 0
  while 1 << log < num do log = log + 1 end
  local n = -1
  for i in pairs(t.desc) do n = math.max(n, i) end
  local d = {}
  for i = 0, n do d[#d + 1] = t.desc[i] or string.rep("\0", 16) end
  local heads = {}
  for i, h in ipairs(t.heads) do heads[i] = string.pack("<I2", h) end
  local idx = t.idx or #t.heads
  return string.pack("<BBI2I2I2I2BBI2I2", log, t.flags, t.start or 0, idx,
      t.avail_flags or 0, t.used_event or 0, t.used_at or 0, t.opt2 or 0,
      n + 1, #t.heads)
    .. table.concat(d) .. table.concat(heads) .. (t.data and t.data.bytes or "")
end

local function write(dir, name, s)
  os.execute("mkdir -p fuzz/seeds/" .. dir)
  local f = assert(io.open("fuzz/seeds/" .. dir .. "/" .. name, "wb"))
  f:write(s)
  f:close()
end

-- ---- fuzz_virtq -------------------------------------------------------------

do -- 3 -> 5 -> 1: out, out, in, from ring slot start % 8 = 4
  local a = area()
  local b1, b2, b3 = a:put(string.rep("h", 16)), a:put(string.rep("d", 64)), a:put("\0")
  write("fuzz_virtq", "chain", input {
    num = 8, flags = F_INDIRECT | F_EVENT_IDX | SANE, start = 0x1234, used_event = 0x1234,
    desc = { [3] = desc(b1, 16, NEXT, 5), [5] = desc(b2, 64, NEXT, 1), [1] = desc(b3, 1, WRITE) },
    heads = { 3 }, data = a })
end

do -- head 200 of 256 is an indirect table of three
  local a = area()
  local b1, b2 = a:put(string.rep("h", 16)), a:put(string.rep("\0", 513))
  local tbl = a:put(desc(b1, 16, NEXT, 2) .. desc(b2 + 512, 1, WRITE) .. desc(b2, 512, NEXT | WRITE, 1))
  write("fuzz_virtq", "indirect-256", input {
    num = 256, flags = F_INDIRECT | F_EVENT_IDX | SANE, start = 300, used_event = 300,
    desc = { [200] = desc(tbl, 48, INDIRECT) }, heads = { 200 }, data = a })
end

do -- four chains, heads 7 2 11 15, indices wrapping, NO_INTERRUPT
  local a = area()
  local b = a:put(string.rep("x", 256))
  write("fuzz_virtq", "four-heads-wrap", input {
    num = 16, flags = SANE, start = 0xfffe, avail_flags = 1, used_at = 3,
    desc = { [7] = desc(b, 16, NEXT, 8), [8] = desc(b + 16, 32, WRITE),
             [2] = desc(b + 64, 8), [11] = desc(b + 128, 64, WRITE),
             [15] = desc(b + 192, 16, NEXT, 0), [0] = desc(b + 208, 16, WRITE) },
    heads = { 7, 2, 11, 15 }, data = a })
end

do -- a direct head ending in an indirect table; the avail idx given raw
  local a = area()
  local b = a:put(string.rep("y", 64))
  local tbl = a:put(desc(b + 16, 16, NEXT, 1) .. desc(b + 32, 8, WRITE))
  write("fuzz_virtq", "direct-then-indirect", input {
    num = 4, flags = F_INDIRECT | SANE | RAW_IDX, start = 9, idx = 10,
    desc = { [1] = desc(b, 16, NEXT, 3), [3] = desc(tbl, 32, INDIRECT) },
    heads = { 1 }, data = a })
end

-- ---- fuzz_blk (a 64 KiB image: 128 sectors) ---------------------------------

local function hdr(type, sector)
  return string.pack("<I4I4I8", type, 0, sector or 0)
end
local T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11

do -- read 2 sectors at 3, head 2
  local a = area()
  local h, d, s = a:put(hdr(T_IN, 3)), a:put(string.rep("\0", 1024)), a:put("\xee")
  write("fuzz_blk", "read", input {
    num = 8, flags = SANE, start = 5,
    desc = { [2] = desc(h, 16, NEXT, 6), [6] = desc(d, 1024, NEXT | WRITE, 4), [4] = desc(s, 1, WRITE) },
    heads = { 2 }, data = a })
end

do -- write a sector, then flush (FLUSH negotiated), heads 5 and 1
  local a = area()
  local h1, d, s1 = a:put(hdr(T_OUT, 7)), a:put(string.rep("\xab", 512)), a:put("\xee")
  local h2, s2 = a:put(hdr(T_FLUSH)), a:put("\xee")
  write("fuzz_blk", "write-flush", input {
    num = 8, flags = F_EVENT_IDX | SANE | OPT0, start = 100, used_event = 101, opt2 = 1,
    desc = { [5] = desc(h1, 16, NEXT, 6), [6] = desc(d, 512, NEXT, 7), [7] = desc(s1, 1, WRITE),
             [1] = desc(h2, 16, NEXT, 3), [3] = desc(s2, 1, WRITE) },
    heads = { 5, 1 }, data = a })
end

do -- get-id through an indirect table
  local a = area()
  local h, id, s = a:put(hdr(T_GET_ID)), a:put(string.rep("\0", 20)), a:put("\xee")
  local tbl = a:put(desc(h, 16, NEXT, 1) .. desc(id, 20, NEXT | WRITE, 2) .. desc(s, 1, WRITE))
  write("fuzz_blk", "get-id-indirect", input {
    num = 16, flags = F_INDIRECT | SANE, start = 3,
    desc = { [9] = desc(tbl, 48, INDIRECT) }, heads = { 9 }, data = a })
end

do -- discard 8 sectors at 8; an unknown type after it
  local a = area()
  local h, seg, s = a:put(hdr(T_DISCARD)), a:put(string.pack("<I8I4I4", 8, 8, 0)), a:put("\xee")
  local h2, s2 = a:put(hdr(99)), a:put("\xee")
  write("fuzz_blk", "discard-unknown", input {
    num = 8, flags = SANE, start = 2,
    desc = { [3] = desc(h, 16, NEXT, 0), [0] = desc(seg, 16, NEXT, 2), [2] = desc(s, 1, WRITE),
             [4] = desc(h2, 16, NEXT, 5), [5] = desc(s2, 1, WRITE) },
    heads = { 3, 4 }, data = a })
end

do -- header split over two buffers, data and status in one, 3 kicks
  local a = area()
  local h = a:put(hdr(T_IN, 9))
  local d = a:put(string.rep("\0", 513))
  write("fuzz_blk", "split-header", input {
    num = 32, flags = F_EVENT_IDX | SANE, start = 0xffff, used_event = 0xffff, opt2 = 2,
    desc = { [20] = desc(h, 5, NEXT, 21), [21] = desc(h + 5, 11, NEXT, 22), [22] = desc(d, 513, WRITE) },
    heads = { 20 }, data = a })
end
