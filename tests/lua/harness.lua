-- A tiny test harness for Lua-level tests: TAP-like lines, a non-zero exit
-- when a case fails, exit 77 (skip) when KVM is needed and missing.
local T = { passed = 0, failed = 0 }

local here = arg[0]:match("^(.*)/tests/") or "."
T.root = here
package.cpath = here .. "/?.so;" .. package.cpath

function T.guest(name) return here .. "/build/guests/" .. name .. ".bin" end

function T.need_kvm()
  local f = io.open("/dev/kvm", "r+")
  if not f then
    print("SKIP: /dev/kvm is not usable here")
    os.exit(77)
  end
  f:close()
end

function T.case(name, fn)
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    T.passed = T.passed + 1
    print("ok - " .. name)
  else
    T.failed = T.failed + 1
    print("not ok - " .. name .. "\n  " .. tostring(err):gsub("\n", "\n  "))
  end
end

function T.eq(got, want, what)
  if got ~= want then
    error(string.format("%s: got %s, want %s", what or "value", tostring(got), tostring(want)), 2)
  end
end

function T.ok(v, what)
  if not v then error((what or "check") .. " failed", 2) end
  return v
end

-- fn must raise an error whose message contains `pattern` (plain text).
function T.raises(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error containing: " .. pattern, 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(string.format("error %q does not contain %q", tostring(err), pattern), 2)
  end
  return err
end

-- run and check reason (and exit code if given)
function T.run(m, want_reason, want_code, timeout)
  local r = m:run { timeout = timeout or 20 }
  if r.reason ~= want_reason or (want_code and r.exit_code ~= want_code) then
    error(string.format("run: got %s/%s (%s), want %s/%s", r.reason, tostring(r.exit_code),
      tostring(r.message), want_reason, tostring(want_code)), 2)
  end
  return r
end

function T.done()
  print(string.format("# %d passed, %d failed", T.passed, T.failed))
  os.exit(T.failed == 0 and 0 or 1)
end

return T
