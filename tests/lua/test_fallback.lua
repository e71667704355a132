-- The emulation fallback from a guest: stac/clac, popcnt, fwait, int3 and a
-- user-mode syscall (tests/guests/fallback.S). On hosts whose KVM emulates
-- guest kernel mode (kvm-here.md) these need core/fallback.c; elsewhere the
-- guest passes without it, so counts are reported, not required.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

T.case("long-mode guest runs clac, stac, popcnt, fwait, int3, syscall", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("fallback"), at = 0x100000, mode = "long" }
  T.run(m, "exit", 0x600d)
  if m.fallback_counts then
    local c = m:fallback_counts()
    local names = {}
    for k in pairs(c) do names[#names + 1] = k end
    table.sort(names)
    local parts = {}
    for _, k in ipairs(names) do
      T.ok(math.type(c[k]) == "integer" and c[k] >= 0, "count " .. k)
      parts[#parts + 1] = k .. "=" .. c[k]
    end
    print("# fallback counts: " .. table.concat(parts, " "))
    -- The guest executes each once (popcnt five times): never more.
    for k, most in pairs { int3 = 1, clac = 1, stac = 1, popcnt = 5, fwait = 1, syscall = 1 } do
      T.ok((c[k] or 0) <= most, "at most " .. most .. " " .. k)
    end
  end
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
    T.ok(tostring(r.message):find("cd 40", 1, true), "instruction bytes in: " .. tostring(r.message))
  end
end)

T.done()
