-- The debugger on a tiny guest (build/guests/debug.S, 64-bit kernel mode):
-- vCPU handles, page walks against KVM_TRANSLATE, stepping, breakpoints
-- (hw and sw), watchpoints. Addresses come from the guest's symbols.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local sym = T.symbols("debug")
T.ok(sym.loop and sym.var, "symbols of debug.elf")

local function machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("debug"), at = 0x100000, mode = "long" }
  return m
end

T.case("vCPU handle: regs, sregs, mode, __tostring", function()
  local m = machine()
  local c = m:cpu(0)
  T.eq(c, m:cpu(0), "one handle per vCPU")
  T.raises(function() m:cpu(1) end, "cpu: 1 does not exist")
  local r = c:regs()
  T.eq(r.rip, sym._start, "rip at entry")
  local s = tostring(r)
  T.ok(s:find("rip 0000000000100000", 1, true), "regs print rip: " .. s)
  local sr = c:sregs()
  T.eq(sr.cs.selector, 0x18, "cs selector")
  T.eq(sr.cs.l, 1, "cs.l")
  T.eq(sr.cr3, 0x1000, "cr3")
  T.eq(sr.gdt.base, 0x500, "gdt base")
  T.ok(sr.efer & 0x400 ~= 0, "efer.lma")
  T.ok(tostring(sr):find("cs  0018", 1, true), "sregs print: " .. tostring(sr))
  T.eq(c:mode(), "long4", "mode")
  c:set { rflags = 0x2 | 0x40 | 0x1 }
  T.ok(tostring(c:regs()):find("[CF ZF]", 1, true), "flags by name: " .. tostring(c:regs()))
  c:set { rflags = 2 }
  T.raises(function() c:set { bogus = 1 } end, 'unknown option "bogus"')
end)

T.case("msr, fpu, events and their __tostring", function()
  local m = machine()
  local c = m:cpu(0)
  T.eq(c:msr(0xc0000080), c:sregs().efer, "EFER through the MSR")
  c:msr(0xc0000102, 0x1234) -- KERNEL_GS_BASE
  T.eq(c:msr(0xc0000102), 0x1234, "written and read back")
  T.raises(function() c:msr(0x12345678) end, "not an MSR KVM knows")
  local f = c:fpu()
  T.eq(f.fcw, 0x37f, "x87 control word at reset")
  T.eq(#f.xmm0, 32, "xmm0 as 32 hex digits")
  T.eq(f.st0, 0.0)
  T.ok(tostring(f):find("fcw 037f", 1, true) and tostring(f):find("mxcsr", 1, true), tostring(f))
  local e = c:events()
  T.eq(e.exception.injected, false); T.eq(e.nmi.pending, false)
  T.ok(tostring(e):find("exception none", 1, true), tostring(e))
  T.eq(c:sregs().pdptrs, nil, "no PDPTEs outside PAE paging")
end)

T.case("sregs: PAE's PDPTEs from KVM_GET_SREGS2", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("pae"), mode = "protected" }
  local r = m:run { timeout = 10 }
  if r.reason ~= "exit" then
    return T.skip("PDPTEs", "this host does not run 32-bit PAE paging (" .. r.reason .. ")")
  end
  local c = m:cpu(0)
  T.eq(c:mode(), "pae")
  local s = c:sregs()
  if not s.pdptrs then return T.skip("PDPTEs", "no KVM_GET_SREGS2 here") end
  T.eq(s.pdptrs[1], 0x11001, "PDPTE 0"); T.eq(s.pdptrs[2], 0)
  T.ok(tostring(s):find("pdptrs 0000000000011001", 1, true), tostring(s))
end)

T.case("symbols: breakpoints by name, sym+off everywhere, backtraces", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("calls"), at = 0x100000, mode = "long" }
  local st = m:symbols(T.root .. "/build/guests/calls.elf")
  T.ok(#st >= 4 and tostring(st):find("calls.elf", 1, true), tostring(st))
  local c = m:cpu(0)
  T.eq(m:sym("deep"), c:translate("deep"), "a name is an address")
  T.eq(m:sym(m:sym("inner") + 1), "inner+0x1", "an address prints as sym+off")
  T.eq(m:sym("inner+1"), m:sym("inner") + 1, "name+off")
  local bp = m:breakpoint { at = "deep" }
  T.ok(tostring(bp):find("<deep>", 1, true), tostring(bp))
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint"); T.eq(r.sym, "deep", "the event names the symbol")
  T.ok(tostring(c:regs()):find("<deep>", 1, true), tostring(c:regs()))
  local bt = c:backtrace()
  T.eq(#bt, 3, tostring(bt))
  T.eq(bt[1].sym, "deep"); T.ok(bt[2].sym:find("^outer%+0x"), bt[2].sym)
  T.ok(bt[3].sym:find("^_start%+0x"), bt[3].sym)
  T.ok(tostring(bt):find("#1 0x", 1, true), tostring(bt))
  bp:remove()
  -- at outer's first instruction there is no frame yet: the stack scan
  local m2 = mb.machine { memory = "16M" }
  m2:add(mb.debug_exit { port = 0xf4 })
  m2:boot_flat { file = T.guest("calls"), at = 0x100000, mode = "long" }
  m2:symbols(T.root .. "/build/guests/calls.elf")
  m2:breakpoint { at = "outer", kind = "sw" }
  r = m2:run { timeout = 10 }
  bt = r.cpu:backtrace()
  T.eq(#bt, 2, tostring(bt)); T.eq(bt[1].sym, "outer")
  T.ok(bt[2].sym:find("^_start%+") and bt[2].scan, tostring(bt))
  r = m2:run { timeout = 10 }
  T.eq(r.exit_code, 9, "the guest completes")
  T.raises(function() m:breakpoint { at = "nosuch" } end, "neither a known symbol")
  T.raises(function() m:symbols("/etc/hostname") end, "not an ELF file")
end)

T.case("symbols: a hostile ELF is refused, never read out of bounds", function()
  local good = io.open(T.root .. "/build/guests/calls.elf", "rb"):read("a")
  local m = mb.machine { memory = "1M" }
  local f = os.tmpname()
  local function try(bytes)
    local h = io.open(f, "wb"); h:write(bytes); h:close()
    return pcall(m.symbols, m, f)
  end
  for n = 0, #good, 7 do try(good:sub(1, n)) end -- every truncation
  math.randomseed(11)
  for _ = 1, 300 do -- random bytes changed in the headers and tables
    local b = { good:byte(1, -1) }
    for _ = 1, 4 do b[math.random(#b)] = math.random(0, 255) end
    try(string.char(table.unpack(b)))
  end
  os.remove(f)
  T.ok(true, "no crash")
end)

T.case("mode() in real and protected mode", function()
  local m = mb.machine { memory = "16M" }
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  T.eq(m:cpu(0):mode(), "protected")
  local m2 = mb.machine { memory = "16M" }
  m2:boot_flat { file = T.guest("real"), at = 0x7c00, mode = "real" }
  T.eq(m2:cpu(0):mode(), "real")
  T.eq(m2:cpu(0):translate(0x7c00), 0x7c00, "no paging: identity")
end)

T.case("translate and walk agree with KVM_TRANSLATE", function()
  local m = machine()
  local c = m:cpu(0)
  for _, va in ipairs { 0, 0x1234, sym.var, 0x300000, 0x7fffffff, 0xfffff000, 0x123456789 } do
    local mine, why = c:translate(va)
    local kvm = c:kvm_translate(va)
    T.eq(mine, kvm, string.format("0x%x (%s)", va, why))
  end
  local gpa, why = c:translate(0x100000000)
  T.eq(gpa, nil, "beyond the identity map")
  T.ok(why:find("level 3 (PDPT)", 1, true) and why:find("not present", 1, true), why)
  T.eq(c:kvm_translate(0x100000000), nil, "KVM agrees")
  local _, why2 = c:translate(0x0000800000000000)
  T.ok(why2:find("non-canonical", 1, true), why2)
  local w = c:walk(sym.var)
  T.eq(#w.levels, 3, "three levels to a 2 MiB page")
  T.eq(w.levels[1].name, "PML4")
  T.eq(w.levels[3].flags, "P W PS")
  T.eq(w.page_size, 2 * 1024 * 1024)
  T.ok(tostring(w):find("PDPT", 1, true), tostring(w))
  T.eq(c:translate { phys = 0x5000 }, 0x5000, "{ phys = N }")
end)

T.case("read and write by virtual address, across pages", function()
  local m = machine()
  local c = m:cpu(0)
  T.eq(c:read(sym._start, 2), "\x31\xc9", "xor ecx, ecx")
  c:write(0x1ffffe, "abcd") -- across a page (and a 2 MiB page) boundary
  T.eq(m:read(0x1ffffe, 4), "abcd", "physical view")
  T.eq(c:read(0x1ffffe, 4), "abcd", "virtual view")
  T.eq(c:read({ phys = 0x1ffffe }, 4), "abcd", "physical through the vCPU")
  T.raises(function() c:read(0x100000000, 1) end, "does not translate")
end)

T.case("step: N instructions land on the labels", function()
  local m = machine()
  local c = m:cpu(0)
  T.eq(c:step(), sym.l1, "step 1")
  T.eq(c:step(), sym.loop, "step 2")
  T.eq(c:step(3), sym.l5, "step 3 more")
  T.eq(c:step(), sym.loop, "jnz taken")
  T.eq(c:regs().rcx, 1, "rcx after one turn")
  -- after a first run (vCPU threads exist), stepping goes through them
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 5, "guest completes")
end)

T.case("step on a running machine is an error; after a pause it works", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  m:start()
  T.raises(function() m:cpu(0):step() end, "pause the machine first")
  m:pause()
  local c = m:cpu(0)
  local after = c:step(3)
  T.ok(after >= 0x100002 and after < 0x100010, string.format("rip 0x%x in the loop", after))
  m:resume()
  T.raises(function() c:set { rip = 2 } end, "pause the machine first")
  m:pause()
  c:set { rax = 0x1234 }
  m:resume()
  local r = m:wait { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 0x1235)
end)

for _, kind in ipairs { "hw", "sw" } do
  T.case(kind .. " breakpoint: stops at every hit, run goes on", function()
    local m = machine()
    local bp = m:breakpoint { at = sym.l4, kind = kind }
    T.ok(tostring(bp):find(kind, 1, true), tostring(bp))
    for i = 1, 5 do
      local r = m:run { timeout = 10 }
      T.eq(r.reason, "breakpoint", "stop " .. i)
      T.eq(r.cpu, m:cpu(0), "r.cpu")
      T.eq(r.breakpoint, bp, "r.breakpoint")
      T.eq(r.cpu:regs().rip, sym.l4, "rip at the breakpoint")
      T.eq(r.cpu:regs().rcx, i, "turn " .. i)
      if kind == "sw" then
        T.eq(m:read(sym.l4, 1), "\xcc", "int3 in memory")
        T.eq(r.cpu:read(sym.l4, 2), "\xff\xcb", "the virtual view hides it (gdb's x too)")
        r.cpu:write(sym.l4, "\xff") -- the same byte, written over the int3
        T.eq(m:read(sym.l4, 1), "\xcc", "a write keeps the int3 in place")
      end
    end
    T.eq(bp:hits(), 5, "hits")
    local r = m:run { timeout = 10 }
    T.eq(r.reason, "exit"); T.eq(r.exit_code, 5, "the guest completes")
  end)

  T.case(kind .. " breakpoint: count, once, step from a stop", function()
    local m = machine()
    local bp = m:breakpoint { at = sym.l4, kind = kind, count = 3, once = true }
    local r = m:run { timeout = 10 }
    T.eq(r.reason, "breakpoint")
    T.eq(m:cpu(0):regs().rcx, 3, "third hit")
    T.eq(m:cpu(0):step(), sym.l5, "step executes the original instruction")
    if kind == "sw" then T.eq(m:read(sym.l4, 1), "\xff", "once: the byte is back") end
    r = m:run { timeout = 10 }
    T.eq(r.reason, "exit"); T.eq(r.exit_code, 5, "once: no more stops")
    T.eq(bp:hits(), 3)
    bp:remove()
  end)

  T.case(kind .. " breakpoint: fn returning continue, fn returning nothing", function()
    local m = machine()
    local seen = {}
    local bp = m:breakpoint { at = sym.l3, kind = kind, fn = function(ev)
      seen[#seen + 1] = ev.cpu:regs().rcx
      T.eq(ev.addr, sym.l3, "ev.addr")
      return "continue"
    end }
    local r = m:run { timeout = 10 }
    T.eq(r.reason, "exit"); T.eq(r.exit_code, 5, "the guest completes")
    T.eq(table.concat(seen, ","), "1,2,3,4,5", "fn at every hit")
    bp:remove()
    T.eq(bp:hits(), 0, "removed")
    local m2 = machine()
    local calls = 0
    m2:breakpoint { at = sym.done, kind = kind, fn = function() calls = calls + 1 end }
    r = m2:run { timeout = 10 }
    T.eq(r.reason, "breakpoint"); T.eq(calls, 1)
    T.eq(r.cpu:regs().rip, sym.done)
    r = m2:run { timeout = 10 }
    T.eq(r.reason, "exit"); T.eq(r.exit_code, 5)
  end)
end

for _, kind in ipairs { "hw", "sw" } do
  T.case(kind .. " breakpoint: when (function and expression), with count and once", function()
    local m = machine()
    local asked = 0
    local bp = m:breakpoint { at = sym.l4, kind = kind,
      when = function(ev) asked = asked + 1; return ev.cpu:regs().rcx % 2 == 0 end }
    local r = m:run { timeout = 10 }
    T.eq(r.reason, "breakpoint"); T.eq(r.cpu:regs().rcx, 2, "first even turn")
    r = m:run { timeout = 10 }
    T.eq(r.reason, "breakpoint"); T.eq(r.cpu:regs().rcx, 4, "second even turn")
    r = m:run { timeout = 10 }
    T.eq(r.reason, "exit"); T.eq(r.exit_code, 5)
    T.eq(asked, 5, "asked at every hit"); bp:remove()
    -- an expression over regs; count counts the hits where it held; once
    local m2 = machine()
    local calls = 0
    m2:breakpoint { at = sym.l4, kind = kind, when = "regs.rcx >= 2", count = 2, once = true,
      fn = function() calls = calls + 1 end }
    r = m2:run { timeout = 10 }
    T.eq(r.reason, "breakpoint"); T.eq(r.cpu:regs().rcx, 3, "second hit where it held")
    T.eq(calls, 1, "fn only where it stops")
    r = m2:run { timeout = 10 }
    T.eq(r.reason, "exit", "once: removed after the stop")
  end)
end

T.case("when on a watchpoint; when errors", function()
  local m = machine()
  local w = m:watch { addr = sym.var, len = 4, access = "w", when = "ev.value == 4" }
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "watchpoint"); T.eq(r.value, 4, "only the write of 4 stops")
  r = m:run { timeout = 10 }
  T.eq(r.reason, "exit"); w:remove()
  T.raises(function() m:breakpoint { at = sym.l4, when = "regs.rcx ==" } end, "when: \"regs.rcx ==\" is not an expression")
  T.raises(function() m:breakpoint { at = sym.l4, when = 3 } end, "when: expected a function or an expression")
end)

T.case("breakpoint errors", function()
  local m = machine()
  T.raises(function() m:breakpoint { at = sym.l4, kind = "hw", bogus = 1 } end, 'unknown option "bogus"')
  T.raises(function() m:breakpoint { kind = "hw" } end, "at: missing")
  T.raises(function() m:breakpoint { at = { phys = sym.l4 }, kind = "hw" } end, "virtual address")
  local bps = {}
  for i = 1, 4 do bps[i] = m:breakpoint { at = sym._start + i, kind = "hw" } end
  T.raises(function() m:breakpoint { at = sym.l5, kind = "hw" } end, "four debug registers")
  local auto = m:breakpoint { at = sym.l5 } -- no register left: software
  T.ok(tostring(auto):find("sw", 1, true), tostring(auto))
  T.raises(function() m:breakpoint { at = sym.l5, kind = "sw" } end, "already")
  local p = m:breakpoint { at = { phys = sym.done }, kind = "sw" }
  T.eq(m:read(sym.done, 1), "\xcc", "physical sw breakpoint")
  p:remove()
  T.eq(m:read(sym.done, 1), "\x8b", "removed: the original byte")
end)

T.case("a foreign int3 still reaches the guest while ours are set", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("fallback"), at = 0x100000, mode = "long" }
  local bp = m:breakpoint { at = 0x300000, kind = "sw" } -- never reached
  local r = m:run { timeout = 30 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 0x600d, "the guest's own #BP handler ran")
  T.eq(m:fallback_counts().int3, 1, "the fallback injected it")
  T.eq(bp:hits(), 0)
end)

T.case("sw breakpoints survive the guest writing over them (bp_survive.S)", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("bp_survive"), at = 0x100000, mode = "long" }
  m:symbols(T.root .. "/build/guests/bp_survive.elf")
  local c = m:cpu(0)
  local at, add, t2 = m:sym("target"), m:sym("target_add"), m:sym("target2")
  -- three breakpoints and a write watch on one page
  local w = m:watch { addr = "wvar", len = 4, access = "w" }
  local b1 = m:breakpoint { at = "target", kind = "sw" }
  local b2 = m:breakpoint { at = "target_add", kind = "sw" }
  local b3 = m:breakpoint { at = "target2", kind = "sw" }
  T.raises(function() m:snapshot() end, "software breakpoints")
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "watchpoint", "the watch on the breakpoints' page")
  w:remove()  -- the page stays write-protected for the breakpoints
  -- the guest now copies new code over target with two 8-byte stores, each
  -- straddling a breakpoint byte; both 0xCC must still be there
  r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint", "at the new code"); T.eq(r.breakpoint, b1)
  T.eq(c:regs().rip, at)
  T.eq(c:read(at, 5), "\xb8\x70\0\0\0", "the debugger's view: the new code")
  T.eq(m:read(at, 1), "\xcc", "memory: our int3 back in place")
  T.eq(m:read(add, 1), "\xcc", "the second breakpoint's too")
  r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint", "the second one, in the new code"); T.eq(r.breakpoint, b2)
  T.eq(c:regs().rip, add); T.eq(c:regs().rax, 0x70, "the new mov ran")
  -- writes either side of target2, not on it
  r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint", "target2: its 0xCC untouched"); T.eq(r.breakpoint, b3)
  T.eq(c:read(t2 - 1, 1), "\x5a", "the byte before it was written")
  T.eq(c:read(t2 + 6, 2), "\xa5\xa5", "the bytes after it were written")
  T.eq(c:read(t2, 1), "\xb8", "its own byte as it was")
  T.eq(b1:hits() + b2:hits() + b3:hits(), 3, "one hit each")
  b1:remove(); b2:remove()
  T.eq(m:read(at, 1), "\xb8", "removed: the new byte, not the old one, is back")
  r = m:run { timeout = 10 }
  T.eq(r.reason, "exit")
  T.eq(r.exit_code, 0x7722, "the code the guest wrote ran as written")
  b3:remove()
  T.ok(m:snapshot(), "no breakpoint left: the page is writable again, snapshots work")
end)

T.case("sw breakpoint: physical, set before anything ran; remove makes the page writable", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("bp_survive"), at = 0x100000, mode = "long" }
  m:symbols(T.root .. "/build/guests/bp_survive.elf")
  local b = m:breakpoint { at = { phys = m:sym("target") }, kind = "sw" }
  local w = m:watch { addr = "wvar", len = 4, access = "w" }
  b:remove()  -- the watch alone keeps the page read-only
  T.eq(m:run { timeout = 10 }.reason, "watchpoint")
  w:remove()
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 0x7722)
  b = m:breakpoint { at = { phys = m:sym("target2") }, kind = "sw" }
  b:remove()
  T.ok(m:snapshot(), "nothing protected after the last remove")
end)

T.case("write watchpoint by page protection: stops after each write", function()
  local m = machine()
  local w = m:watch { addr = sym.var, len = 4, access = "w" }
  for i = 1, 3 do
    local r = m:run { timeout = 10 }
    T.eq(r.reason, "watchpoint", "stop " .. i)
    T.eq(r.watchpoint, w)
    T.eq(r.addr, sym.var, "address written")
    T.eq(r.len, 4); T.eq(r.value, i, "value written")
    T.eq(r.cpu:regs().rip, sym.l4, "rip after the store")
    T.eq(string.unpack("<I4", m:read(sym.var, 4)), i, "the write completed")
  end
  w:remove()
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 5, "the guest read back what it wrote")
  T.eq(w:hits(), 0, "removed")
end)

T.case("write watchpoint with fn, and what is not supported", function()
  local m = machine()
  local values = {}
  m:watch { addr = sym.var, len = 4, fn = function(ev)
    values[#values + 1] = ev.value
    return "continue"
  end }
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 5)
  T.eq(table.concat(values, ","), "1,2,3,4,5")
  T.raises(function() m:watch { addr = sym.var, access = "x" } end, "access")
  -- a write next to the watched bytes (same page) completes silently
  local m2 = machine()
  local w2 = m2:watch { addr = sym.var + 8, len = 4 }
  r = m2:run { timeout = 10 }
  T.eq(r.reason, "exit"); T.eq(r.exit_code, 5)
  T.eq(w2:hits(), 0)
end)

local function watch_guest(name)
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest(name), at = 0x100000, mode = "long" }
  m:symbols(T.root .. "/build/guests/" .. name .. ".elf")
  return m
end

-- Every stop of a run as "value@sym", then how it ended.
local function stops(m)
  local s = {}
  for _ = 1, 20 do
    local r = m:run { timeout = 10 }
    if r.reason ~= "watchpoint" then return table.concat(s, " "), r end
    s[#s + 1] = string.format("%x@%s", r.value, r.sym)
  end
end

T.case("read and rw watchpoints on a data page (no slot: every access exits)", function()
  local m = watch_guest("debug")
  local w = m:watch { addr = "var", len = 4, access = "r" }
  local s, r = stops(m)
  T.eq(s, "5@done", "one read, named by the reading instruction")
  T.eq(r.exit_code, 5, "the read completed from RAM"); T.eq(w:hits(), 1)
  m = watch_guest("debug")
  m:watch { addr = "var", len = 4, access = "rw" }
  s, r = stops(m)
  T.eq(s, "1@l4 2@l4 3@l4 4@l4 5@l4 5@done", "five writes, one read")
  T.eq(r.exit_code, 5)
end)

T.case("read and rw watchpoints on a page the guest executes from", function()
  local m = watch_guest("watch")
  m:watch { addr = "cvar", len = 4, access = "r" }
  local s, r = stops(m)
  T.eq(s, "1234@far 1235@w1", "both reads from the other page")
  T.eq(r.exit_code, 0x1235, "code on the watched page ran (stepped with the page mapped back)")
  m = watch_guest("watch")
  m:watch { addr = "cvar", len = 4, access = "rw" }
  s, r = stops(m)
  T.eq(s, "1234@far 1235@w1 1235@w1", "read, write, read")
  T.eq(r.exit_code, 0x1235)
  m = watch_guest("watch")
  local n = 0
  m:watch { addr = "cvar", len = 4, access = "r", fn = function() n = n + 1; return "continue" end }
  r = m:run { timeout = 10 }
  T.eq(r.exit_code, 0x1235); T.eq(n, 2, "fn at each read")
end)

T.case("wait_for: a console pattern, a breakpoint by name, a timeout", function()
  local m = mb.machine { memory = "16M" }
  local u = m:add(mb.uart16550 { console = "buffer" })
  m:boot_flat { file = T.guest("hello"), mode = "protected" }
  m:symbols(T.root .. "/build/guests/hello.elf")
  local r = m:wait_for { console = "login:", timeout = 10 }
  T.eq(r.reason, "console"); T.eq(r.match, "login:")
  T.ok(u:output():find("booting...", 1, true), u:output())
  r = m:wait_for { console = "booting", timeout = 0.3 }
  T.eq(r.reason, "timeout", "only output printed from now on counts")
  local m2 = mb.machine { memory = "16M" }
  m2:add(mb.uart16550 { console = "buffer" })
  m2:boot_flat { file = T.guest("hello"), mode = "protected" }
  m2:symbols(T.root .. "/build/guests/hello.elf")
  r = m2:wait_for { at = "spin", timeout = 10 }
  T.eq(r.reason, "breakpoint"); T.eq(r.sym, "spin")
  T.eq(r.breakpoint:hits(), 0, "its breakpoint is gone")
  T.raises(function() m2:wait_for { timeout = 1 } end, "console = PATTERN, at = ADDR or io")
end)

T.done()
