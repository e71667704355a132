-- Starting inputs for fuzz_fallback, in the order fuzz/fuzz_fallback.c
-- takes its input: states whose int n reaches the paths a blind start
-- rarely finds (virtual-8086 to ring 0, the VME redirection, a task
-- switch, a 16-bit TSS stack switch), then a 36 KiB memory window at
-- linear 0 (IVT, IDT at 0x1000, GDT at 0x2000, TSSes at 0x3000/0x4000).
-- After changing that layout: lua5.4 fuzz/seeds/mkseeds_fallback.lua (from
-- the top directory), and commit what it writes.
local function le(v, n) return string.pack("<I" .. n, v & ((1 << (8 * n)) - 1)) end

-- a segment: selector, base (2 bytes, shift 0), limit (flag byte 1 = 4 GiB,
-- else 0 and 2 bytes), access byte (type, S, DPL, P), flags (DB L G)
local function seg(sel, base, limit, acc, flags)
  limit = limit or 0xffff
  local lim = limit == 0xffffffff and "\1" or "\0" .. le(limit, 2)
  return le(sel, 2) .. le(base or 0, 2) .. "\0" .. lim ..
         string.char(acc or 0x93, flags or 0)
end

local function state(t)
  local b = {}
  for i = 1, 16 do b[#b + 1] = "\0" .. le(i == 5 and 0x0ff0 or 0, 2) end
  b[#b + 1] = le(0x100, 4) .. le(t.rflags, 3) .. table.concat(t.segs)
  b[#b + 1] = le(0x11, 4) .. le(0, 4) .. le(t.cr4 or 0, 3) .. le(0, 2) -- CR0 CR3 CR4 EFER
  b[#b + 1] = le(0x1000, 2) .. le(0x7ff, 2) .. le(0x2000, 2) .. le(0x2f, 2)
  b[#b + 1] = string.rep("\0", 32) -- XCR0 STAR LSTAR SFMASK
  b[#b + 1] = string.char(#t.insn - 1) .. string.char(table.unpack(t.insn))
  return table.concat(b)
end

local function desc(base, limit, acc, fl)
  return string.pack("<I2I2BBBB", limit & 0xffff, base & 0xffff, base >> 16 & 0xff,
                     acc, fl | (limit >> 16 & 0xf), base >> 24)
end
local function gate(off, sel, acc) return string.pack("<I2I2BBI2", off & 0xffff, sel, 0, acc, off >> 16) end

local function memory()
  local m = {}
  local function put(at, s) m[#m + 1] = { at, s } end
  put(0x84, string.pack("<I2I2", 0x0abc, 0x0500))                 -- IVT[0x21]
  put(0x1000 + 0x80 * 8, gate(0x1234, 0x08, 0xee))                -- int gate, DPL 3
  put(0x1000 + 0x90 * 8, gate(0, 0x20, 0xe5))                     -- task gate, DPL 3
  put(0x2000, string.rep("\0", 8) .. desc(0, 0xfffff, 0x9a, 0xc0) ..
      desc(0, 0xfffff, 0x92, 0xc0) .. desc(0x3000, 0x67, 0x8b, 0) ..
      desc(0x4000, 0x67, 0x89, 0) .. desc(0x4100, 0x2b, 0x81, 0))
  put(0x3004, string.pack("<I4I2", 0x8000, 0x10))                 -- ESP0, SS0
  put(0x3066, le(0xa8, 2))                                        -- I/O map base
  put(0x4020, string.pack("<I4I4", 0x100, 0x2))                   -- new task EIP, EFLAGS
  put(0x4048, string.pack("<I4I4I4I4I4I4", 0x10, 0x08, 0x10, 0x10, 0, 0))
  put(0x4102, string.pack("<I2I2", 0x7000, 0x10))                 -- 16-bit SP0, SS0
  table.sort(m, function(a, b) return a[1] < b[1] end)
  local out, at = {}, 0
  for _, p in ipairs(m) do
    out[#out + 1] = string.rep("\0", p[1] - at) .. p[2]
    at = p[1] + #p[2]
  end
  out[#out + 1] = string.rep("\0", 0x9000 - at)
  return table.concat(out)
end

local function v86(sel) return seg(sel, (sel << 4) & 0xffff, 0xffff, 0xf3) end
local tr32 = seg(0x18, 0x3000, 0xa7, 0x8b)
local vm = 0x20000 | 0x3000 | 0x202
local v86segs = { v86(0x100), v86(0x50), v86(0x60), v86(0x70), v86(0x80), v86(0x90), tr32, seg(0) }
local function user(tr)
  local flat = seg(0x10, 0, 0xffffffff, 0x93, 4)
  return { seg(0x1b, 0, 0xffffffff, 0xfb, 4), seg(0x23, 0, 0xffffffff, 0xf3, 4),
           flat, flat, flat, flat, tr, seg(0) }
end
local seeds = {
  vm86_ring0 = state { rflags = vm, segs = v86segs, insn = { 0xcd, 0x80 } },
  vm86_vme = state { rflags = vm, segs = v86segs, cr4 = 1, insn = { 0xcd, 0x21 } },
  task = state { rflags = 0x202, segs = user(tr32), insn = { 0xcd, 0x90 } },
  tss16 = state { rflags = 0x202, segs = user(seg(0x28, 0x4100, 0x2b, 0x83)), insn = { 0xcd, 0x80 } },
}
local dir = "fuzz/seeds/fuzz_fallback"
os.execute("mkdir -p " .. dir)
local mem = memory()
for name, s in pairs(seeds) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(s, mem)
  f:close()
end
