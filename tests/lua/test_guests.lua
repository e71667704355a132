-- Tiny in-tree guests under KVM: every CPU mode, PIO and MMIO at every
-- width, string I/O, triple fault, halt, timeout, pause and resume.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

-- A machine with debug_exit and a Lua device at port 0x510 that records bytes.
local function machine(opts)
  local m = mb.machine(opts or { memory = "16M" })
  local seen = {}
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 },
    write = function(_, _, _, v) seen[#seen + 1] = string.char(v) end })
  return m, seen
end

T.case("real mode", function()
  local m, seen = machine()
  m:boot_flat { file = T.guest("real"), at = 0x7c00, mode = "real" }
  T.run(m, "exit", 0x1016)
  T.eq(table.concat(seen), "R", "marker")
end)

T.case("protected mode (flat segments, lret through the GDT)", function()
  local m, seen = machine()
  m:boot_flat { file = T.guest("protected"), at = 0x100000, mode = "protected" }
  T.run(m, "exit", 0x20)
  T.eq(table.concat(seen), "P", "marker")
end)

T.case("long mode (identity page tables above 2 MiB)", function()
  local m, seen = machine()
  m:boot_flat { file = T.guest("long"), at = 0x100000, mode = "long" }
  T.run(m, "exit", 0x40)
  T.eq(table.concat(seen), "L", "marker")
end)

T.case("PIO at 1, 2 and 4 bytes, in and out", function()
  local m = machine()
  local writes, echoes = {}, {}
  local answer = { [1] = 0xa1, [2] = 0xb2c3, [4] = 0xd4e5f607 }
  m:add(mb.device { name = "regs", pio = { base = 0x520, size = 4 },
    read = function(_, off, size) T.eq(off, 0, "read offset"); return answer[size] end,
    write = function(_, off, size, v) writes[#writes + 1] = { off, size, v } end })
  m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 },
    write = function(_, _, size, v) echoes[#echoes + 1] = { size, v } end })
  m:boot_flat { file = T.guest("pio"), mode = "protected" }
  T.run(m, "exit", 0)
  T.eq(#writes, 3, "writes")
  T.eq(writes[1][2], 1); T.eq(writes[1][3], 0x11)
  T.eq(writes[2][2], 2); T.eq(writes[2][3], 0x2233)
  T.eq(writes[3][2], 4); T.eq(writes[3][3], 0x44556677)
  T.eq(#echoes, 3, "echoes")
  for i, size in ipairs { 1, 2, 4 } do
    T.eq(echoes[i][1], size, "echo size")
    T.eq(echoes[i][2], answer[size], "value the guest read at size " .. size)
  end
end)

T.case("string PIO (rep outsb, rep outsw, rep insb)", function()
  local m = machine()
  local out, words, echo, n = {}, {}, {}, 0
  m:add(mb.device { name = "str", pio = { base = 0x530, size = 2 },
    read = function(_, _, size) n = n + 1; return 0x40 + n end,
    write = function(_, _, size, v)
      if size == 1 then out[#out + 1] = string.char(v) else words[#words + 1] = v end
    end })
  m:add(mb.device { name = "echo", pio = { base = 0x534, size = 1 },
    write = function(_, _, _, v) echo[#echo + 1] = string.char(v) end })
  m:boot_flat { file = T.guest("strio"), mode = "protected" }
  T.run(m, "exit", 0)
  T.eq(table.concat(out), "0123456789abcdef", "rep outsb")
  T.eq(#words, 4, "rep outsw count")
  T.eq(words[1], 0x1111); T.eq(words[4], 0x4444)
  T.eq(table.concat(echo), "ABCDEFGH", "rep insb then outsb")
end)

T.case("MMIO to a Lua device at 1, 2, 4 and 8 bytes", function()
  local m = machine()
  local writes, echoes = {}, {}
  local answer = { [1] = 0x5a, [2] = 0x1234, [4] = 0x89abcdef, [8] = 0x0123456789abcdef }
  m:add(mb.device { name = "mmio", mmio = { base = 0xd0000000, size = 0x1000 },
    read = function(_, off, size) T.eq(off, 0x10, "read offset"); return answer[size] end,
    write = function(_, off, size, v)
      if off == 0x20 then echoes[#echoes + 1] = { size, v } else writes[#writes + 1] = { off, size, v } end
    end })
  m:boot_flat { file = T.guest("mmio"), mode = "long" }
  T.run(m, "exit", 0)
  T.eq(#writes, 4, "writes")
  local want = { { 0, 1, 0x11 }, { 2, 2, 0x2233 }, { 4, 4, 0x44556677 }, { 8, 8, -0x7766554433221101 } }
  for i, w in ipairs(want) do
    T.eq(writes[i][1], w[1], "offset " .. i); T.eq(writes[i][2], w[2], "size " .. i)
    T.eq(writes[i][3], w[3], "value " .. i)
  end
  for i, size in ipairs { 1, 2, 4, 8 } do
    T.eq(echoes[i][1], size); T.eq(echoes[i][2], answer[size], "echo at size " .. size)
  end
end)

T.case("triple fault ends with reason shutdown", function()
  local m = machine()
  m:boot_flat { file = T.guest("triple"), mode = "protected" }
  T.run(m, "shutdown", 0)
end)

T.case("cli; hlt ends with reason halt", function()
  local m = machine()
  m:boot_flat { file = T.guest("halt"), mode = "protected" }
  T.run(m, "halt", 0)
end)

T.case("cli; hlt with KVM's irqchip also ends with halt", function()
  local m = machine { memory = "16M", irqchip = "kernel" }
  m:boot_flat { file = T.guest("halt"), mode = "protected" }
  T.run(m, "halt", 0, 10)
end)

T.case("timeout stops a spinning guest", function()
  local m = machine()
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  local t0 = os.time()
  local r = T.run(m, "timeout", nil, 0.5)
  T.ok(r.exit_code ~= 0, "timeout has a non-zero exit code")
  T.ok(os.time() - t0 < 5, "returned promptly")
end)

T.case("pause, read and write registers, resume", function()
  local m = machine()
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  m:start()
  local t0 = os.clock()
  while os.clock() - t0 < 0.2 do end -- let the guest reach its loop
  m:pause()
  local r = m:regs()
  T.ok(r.rip >= 0x100002 and r.rip < 0x100020, string.format("rip 0x%x inside the loop", r.rip))
  T.eq(r.rax, 0, "rax before")
  T.raises(function() m:set_regs { bogus = 1 } end, 'unknown option "bogus"')
  m:set_regs { rax = 0x1234 }
  T.eq(m:regs().rax, 0x1234, "rax after set")
  m:resume()
  local res = m:wait { timeout = 10 }
  T.eq(res.reason, "exit"); T.eq(res.exit_code, 0x1235, "guest saw the new rax")
end)

T.case("run again after a timeout continues the guest", function()
  local m = machine()
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  T.run(m, "timeout", nil, 0.2)
  m:set_regs { rax = 0x1234 }
  T.run(m, "exit", 0x1235)
end)

T.case("unclaimed I/O reads all ones and is counted", function()
  local m = machine()
  m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 },
    write = function() end })
  m:boot_flat { file = T.guest("pio"), mode = "protected" } -- port 0x520 has no device
  T.run(m, "exit", 0)
  local s = m:stats()
  T.eq(s.unclaimed_pio_writes, 3, "unclaimed writes")
  T.eq(s.unclaimed_pio_reads, 3, "unclaimed reads")
end)

T.case("a Lua device error stops the run with reason error", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit {})
  m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 },
    write = function() error("boom") end })
  m:boot_flat { file = T.guest("protected"), mode = "protected" }
  local r = T.run(m, "error")
  T.ok(r.message:find("boom", 1, true), "message carries the Lua error: " .. r.message)
end)

T.case("ROM is read-only to the guest", function()
  local rom = os.tmpname()
  local f = assert(io.open(rom, "wb")); f:write(string.rep("\x5a", 4096)); f:close()
  local m = mb.machine { memory = { { base = 0, size = "16M" },
    { base = 0xd0000000, size = "4K", file = rom, readonly = true } } }
  os.remove(rom)
  m:add(mb.debug_exit {})
  m:boot_flat { file = T.guest("mmio"), mode = "long" } -- writes to 0xd0000000..
  T.run(m, "exit", 0)
  T.eq(m:read(0xd0000000, 16), string.rep("\x5a", 16), "ROM keeps its bytes")
  T.eq(m:stats().unclaimed_mmio_writes, 8, "writes to ROM dropped and counted")
end)

T.case("CPUID policy: hide and set named features", function()
  local plain = mb.machine { memory = "1M", irqchip = "kernel" }
  local m = mb.machine { memory = "1M", irqchip = "kernel", cpuid = { hide = { "xsave", "cx16" }, set = { "hypervisor" } } }
  T.eq(m:cpuid("xsave"), false, "xsave hidden"); T.eq(m:cpuid("cx16"), false, "cx16 hidden")
  T.eq(m:cpuid("hypervisor"), true, "hypervisor set")
  local _, _, c0 = plain:cpuid(1)
  local _, _, c1 = m:cpuid(1)
  T.eq(c1, c0 & ~((1 << 26) | (1 << 13)) | (1 << 31), "leaf 1 ECX differs only in those bits")
  local u = mb.machine { memory = "1M", irqchip = "user" }
  T.eq(u:cpuid("apic"), false, "user irqchip hides the local APIC")
end)

T.done()
