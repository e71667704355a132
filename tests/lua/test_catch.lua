-- m:catch: a breakpoint on the handler of an exception vector (from the
-- IDT at set time), and triple faults stopping with the vCPU's state
-- instead of ending in "shutdown". Guests: catch (a #UD handler), triple
-- (an empty IDT, then ud2), debug (64-bit, to read a long-mode IDT).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function machine(guest, mode, at)
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest(guest), mode = mode, at = at }
  return m
end

T.case("catch { vector = 6 }: stops on the #UD handler the IDT names", function()
  local m = machine("catch", "protected")
  m:symbols(T.root .. "/build/guests/catch.elf")
  m:breakpoint { at = "fault", kind = "hw", once = true }
  T.eq(m:run { timeout = 10 }.reason, "breakpoint", "at ud2, the IDT loaded")
  local bp = m:catch { vector = 6 }
  T.eq(bp:hits(), 0)
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "breakpoint")
  T.eq(r.breakpoint, bp, "the catch's breakpoint")
  T.eq(r.rip, m:sym("ud_handler"))
  T.eq(r.sym, "ud_handler")
  -- the exception frame: the faulting eip on the handler's stack
  local c = r.cpu
  local eip = string.unpack("<I4", c:read(c:regs().rsp, 4))
  T.eq(eip, m:sym("fault"), "#UD pushed the address of ud2")
  T.run(m, "exit", 0x66)
end)

T.case("catch { vector } errors: beyond the IDT, a gate not present, bad options", function()
  local m = machine("catch", "protected")
  m:symbols(T.root .. "/build/guests/catch.elf")
  m:breakpoint { at = "fault", kind = "hw", once = true }
  m:run { timeout = 10 }
  T.raises(function() m:catch { vector = 0x40 } end, "beyond the IDT's limit")
  T.raises(function() m:catch { vector = 0x10 } end, "not present")
  T.raises(function() m:catch { vector = 300 } end, "vector")
  T.raises(function() m:catch { } end, "one of vector, triple_fault or panic")
  T.raises(function() m:catch { vector = 6, bogus = 1 } end, 'unknown option "bogus"')
end)

T.case("catch a vector in long mode (16-byte gates) and with a fn", function()
  local m = machine("debug", "long", 0x100000)
  local c = m:cpu(0)
  -- boot_flat's IDT (base 0, limit 0xffff, empty): gate 3 -> 0x100014 (done)
  local s = c:sregs()
  T.ok(s.gdt.base ~= s.idt.base + 3 * 16, "the gate does not land on the GDT")
  local gate = string.pack("<I2I2BBI2I4I4", 0x0014, 0x08, 0, 0x8e, 0x0010, 0, 0)
  c:write({ phys = s.idt.base + 3 * 16 }, gate)
  local seen
  local bp = m:catch { vector = 3, kind = "sw", fn = function(ev) seen = ev.rip; return "continue" end }
  T.eq(tostring(bp):match("at (0x%x+)"), "0x100014", tostring(bp))
  T.run(m, "exit", 5)
  T.eq(seen, 0x100014, "reached by the guest's own path, fn ran")
end)

T.case("catch { triple_fault = true }: the run stops with the state", function()
  local m = machine("triple", "protected")
  T.eq(m:catch { triple_fault = true }, true)
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "catch")
  T.eq(r.catch, "triple_fault")
  T.ok(r.message:find("triple fault", 1, true), r.message)
  T.eq(r.cpu.index, 0)
  local s = r.cpu:sregs()
  T.eq(s.idt.limit, 0, "the guest's empty IDT")
  T.eq(r.rip, 0x100007, "at the ud2 after lidt")
  T.eq(r.cpu:regs().rip, 0x100007)
  -- off again: the plain "shutdown"
  local m2 = machine("triple", "protected")
  m2:catch { triple_fault = true }
  m2:catch { triple_fault = false }
  T.eq(m2:run { timeout = 10 }.reason, "shutdown")
end)

T.done()
