-- The emulation fallback from a guest: stac/clac, popcnt, fwait, int3 and a
-- user-mode syscall (tests/guests/fallback.S). On hosts whose KVM emulates
-- guest kernel mode (kvm_pvm, kvm-here.md) each of these ends KVM_RUN and
-- needs core/fallback.c, so the counts must be exact there: each went
-- through the fallback once, counted as what it is. Elsewhere KVM runs
-- them itself and the counts can only be lower.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function loaded(module)
  local f = io.open("/sys/module/" .. module)
  if f then f:close() end
  return f ~= nil
end
local emulated = loaded("kvm_pvm")

-- What fallback.S executes: stac and clac once each, popcnt five times
-- (64/32/16-bit, REX, zero source), fwait and int3 once, and one syscall
-- (rebuilt at the #PF handler's clac, which is counted as the syscall,
-- not as a clac); xgetbv once (#UD) and once more when the guest's CPUID
-- has XSAVE, one movbe register form (#UD: "ud") and one int $0x40.
local expect = { stac = 1, clac = 1, popcnt = 5, fwait = 1, int3 = 1, syscall = 1,
                 xgetbv = 2, ud = 1, int = 1, clflush = 1, clflushopt = 1, clwb = 1 }
-- Kinds whose count here may be lower: KVM's emulator runs clflush and
-- (depending on the host kernel) clflushopt/clwb itself; the second xgetbv
-- only runs with XSAVE.
local at_least = { xgetbv = 1, clflush = 0, clflushopt = 0, clwb = 0 }

T.case("long-mode guest runs clac, stac, popcnt, fwait, int3, xgetbv, clflush*, movbe #UD, int n, syscall", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("fallback"), at = 0x100000, mode = "long" }
  T.run(m, "exit", 0x600d)
  local c = m:fallback_counts()
  local names = {}
  for k in pairs(c) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do
    T.ok(math.type(c[k]) == "integer", "count " .. k .. " is an integer")
    parts[#parts + 1] = k .. "=" .. c[k]
  end
  print("# fallback counts: " .. table.concat(parts, " ") ..
        (emulated and "" or " (not kvm_pvm: upper bounds only)"))
  for _, k in ipairs(names) do
    local want = expect[k] or 0 -- a kind the guest never runs
    if emulated and at_least[k] then
      T.ok(c[k] >= at_least[k] and c[k] <= want, k .. " in " .. at_least[k] .. ".." .. want)
    elseif emulated then
      T.eq(c[k], want, "fallback count " .. k)
    else
      T.ok(c[k] >= 0 and c[k] <= want, "at most " .. want .. " " .. k)
    end
  end
  for k in pairs(expect) do T.ok(c[k], "fallback_counts() has " .. k) end
end)

-- tests/guests/task_gate.S: int n through a task gate in 32-bit protected
-- mode (the guest checks TR, NT, the back-link, the saved state, the busy
-- bits and CR0.TS itself). Where KVM switches tasks itself, the count is 0.
local function task_guest(entry)
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("task_gate"), at = 0x100000, entry = entry,
                mode = "protected" }
  return m, m:run { timeout = 20 }
end

T.case("int n through a task gate (32-bit protected mode)", function()
  local m, r = task_guest(0x100000)
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x600d, "exit code")
  local c = m:fallback_counts()
  if emulated then T.eq(c.int_task, 1, "int_task") else T.ok(c.int_task <= 1, "int_task <= 1") end
  T.eq(c.int, 0, "int")
end)

-- Then a task gate into a virtual-8086 task whose int n goes to a ring-0
-- handler. Measured on kvm_pvm: the host drops EFLAGS.VM from
-- KVM_SET_REGS (read back without it), so VM86 code cannot run there; the
-- fallback sees that after the switch and ends the run with "error" and
-- the registers put back at the `int $0x42`. That outcome skips the VM86
-- case; any other must be the guest's pass.
local vm, vr = task_guest(0x100010)
local vc = vm:fallback_counts()
local vm86_dropped = emulated and vr.reason == "error"

T.case("a task gate into a virtual-8086 task: taken, or refused cleanly where VM86 cannot run", function()
  if vm86_dropped then
    T.ok(tostring(vr.message):find("cd 42", 1, true), "the int's bytes in: " .. tostring(vr.message))
    T.eq(vc.int_task, 1, "int_task (the refused switch not counted)")
    local g = vm:regs(0)
    T.eq(vm:read(g.rip, 2), "\xcd\x42", "RIP back at the int")
    T.eq(g.rflags & 0x20000, 0, "no VM flag left")
  else
    T.eq(vr.reason, "exit", "reason (" .. tostring(vr.message) .. ")")
    if emulated then T.eq(vc.int_task, 2, "int_task") else T.ok(vc.int_task <= 2, "int_task <= 2") end
  end
end)

T.case("int n in a virtual-8086 task reaches its ring-0 handler", function()
  T.eq(vr.exit_code, 0x600d, "exit code")
  if emulated then T.eq(vc.int_vm86, 1, "int_vm86") else T.ok(vc.int_vm86 <= 1, "int_vm86 <= 1") end
end, vm86_dropped and "kvm_pvm does not run virtual-8086 code (EFLAGS.VM dropped by KVM_SET_REGS)" or nil)

-- Past a task switch's commit point (tests/guests/task_gate.S, entries
-- 0x100020 and 0x100030): a new task whose DS is a TSS descriptor and
-- whose SS lies in its own LDT gets #TS(DS) in its own context (the guest's
-- handler checks TR, SS, the error code and the pushed EIP); one whose TSS
-- has the T bit gets a #DB with DR6.BT before its first instruction.
T.case("a bad DS in the new TSS: the switch completes, #TS in the new task (SS from its LDT)", function()
  local m, r = task_guest(0x100020)
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x600d, "exit code")
  local c = m:fallback_counts()
  if emulated then T.eq(c.int_task, 1, "int_task") else T.ok(c.int_task <= 1, "int_task <= 1") end
end)

T.case("a late #TS through a task gate: the fallback switches again, the error code on the #TS task's stack", function()
  local m, r = task_guest(0x100040)
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x600d, "exit code")
  local c = m:fallback_counts()
  if emulated then T.eq(c.int_task, 1, "int_task (both switches one int)") else T.ok(c.int_task <= 1, "int_task <= 1") end
end)

T.case("the T bit of the new TSS: #DB with DR6.BT in the new task", function()
  local m, r = task_guest(0x100030)
  T.eq(r.reason, "exit", "reason (" .. tostring(r.message) .. ")")
  T.eq(r.exit_code, 0x600d, "exit code")
  local c = m:fallback_counts()
  if emulated then T.eq(c.int_task, 1, "int_task") else T.ok(c.int_task <= 1, "int_task <= 1") end
end)

T.case("an instruction the fallback does not know still ends with error", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("fallback_unknown"), at = 0x100000, mode = "long" }
  local r = m:run { timeout = 20 }
  if r.reason == "exit" then
    -- KVM delivered it to the guest itself: nothing to complete.
    T.eq(r.exit_code, 0xe40, "exit code")
  else
    T.eq(r.reason, "error", "reason")
    T.ok(tostring(r.message):find("f0 48 0f c7", 1, true), "instruction bytes in: " .. tostring(r.message))
  end
end)

T.done()
