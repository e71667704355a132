-- The emulation fallback's SSE instructions from a long-mode guest at CPL 0
-- (tests/guests/fallback_sse.S, core/fallback_sse.c): the guest checks the
-- values itself, so "exit 0x600d" means every move, pxor, ldmxcsr/stmxcsr
-- and the #NM under CR0.TS behaved as on a CPU. On hosts whose KVM
-- emulates guest kernel mode (kvm_pvm, kvm-here.md) KVM's emulator runs
-- some of these itself (the 128-bit moves, for MMIO) and cannot run others
-- (movd/movq, pxor, movss, ldmxcsr/stmxcsr), so counts are bounded by what the
-- guest executes, and exact for the kinds measured to reach the fallback.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local f = io.open("/sys/module/kvm_pvm")
if f then f:close() end
local emulated = f ~= nil

-- How often the guest executes each kind (the #NM and #GP attempts
-- included: a fault is a completed instruction). movq: %xmm15->%rax,
-- %rcx->%xmm1, %xmm1->mem, mem->%xmm2, %xmm2->%rax, %rcx->%xmm3,
-- %xmm4/5/5/15 ->%rax.
local runs = { movd = 4, movq = 11, pxor = 1, movdqu = 2, movaps = 2, movss = 1,
               ldmxcsr = 2, stmxcsr = 1 }
-- What kvm_pvm was measured to leave to the fallback (2026-12-02).
local exact = { movd = true, movq = true, pxor = true, movss = true, ldmxcsr = true, stmxcsr = true }

T.case("long-mode guest runs movd/movq/pxor/movdqu/movaps/movss, ldmxcsr/stmxcsr, #GP and #NM", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("fallback_sse"), at = 0x100000, mode = "long" }
  T.run(m, "exit", 0x600d)
  local c = m:fallback_counts()
  local parts = {}
  for k, want in pairs(runs) do
    T.ok(math.type(c[k]) == "integer", "fallback_counts() has " .. k)
    parts[#parts + 1] = k .. "=" .. tostring(c[k])
    if emulated and exact[k] then
      T.eq(c[k], want, "fallback count " .. k)
    else
      T.ok(c[k] >= 0 and c[k] <= want, "at most " .. want .. " " .. k)
    end
  end
  table.sort(parts)
  print("# sse fallback counts: " .. table.concat(parts, " "))
  for _, k in ipairs { "movsd", "movups", "movdqa", "xorps" } do
    T.eq(c[k], 0, k .. " never run")
  end
end)

T.done()
