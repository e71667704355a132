-- A tiny test harness for Lua-level tests: TAP-like lines, a non-zero exit
-- when a case fails, exit 77 (skip) when KVM is needed and missing. A
-- failed case fails the file on every way out (T.done, T.need_kvm,
-- T.skip_all); a check that cannot run here prints "SKIP <name>: <why>"
-- and counts as skipped, never as passed (tests/run.sh counts those lines).
local T = { passed = 0, failed = 0, skipped = 0, checks = 0 }

local here = arg[0]:match("^(.*)/tests/") or "."
T.root = here
-- Where moonbox and moonbox.so are: MB_BIN for another build (make
-- test-asan), else the top level.
T.bin = os.getenv("MB_BIN") or here
package.cpath = T.bin .. "/?.so;" .. package.cpath

-- MB_TEST_KVM points the check at another path (tests/lua/test_runner.lua
-- uses a missing one to play a host without KVM).
T.kvm_path = os.getenv("MB_TEST_KVM") or "/dev/kvm"

function T.guest(name) return here .. "/build/guests/" .. name .. ".bin" end

-- The symbols of a tiny guest's ELF (build/guests/NAME.elf, or a path),
-- name -> address, through nm.
function T.symbols(name)
  local elf = name:find("/", 1, true) and name or here .. "/build/guests/" .. name .. ".elf"
  local sym, p = {}, assert(io.popen("nm " .. elf))
  for line in p:lines() do
    local a, n = line:match("^(%x+) %a (%S+)$")
    if a then sym[n] = tonumber(a, 16) end
  end
  p:close()
  return sym
end

local function summary()
  print(string.format("# %d passed, %d failed, %d skipped", T.passed, T.failed, T.skipped))
end

-- The rest of the file cannot run here: exit 77 (skipped), unless a case
-- already failed, which fails the file.
function T.skip_all(why)
  if T.failed > 0 then
    print("# not skipping the rest (" .. why .. "): a case already failed")
    summary()
    os.exit(1)
  end
  print("SKIP: " .. why)
  os.exit(77)
end

function T.have_kvm()
  local f = io.open(T.kvm_path, "r+")
  if f then f:close() end
  return f ~= nil
end

function T.need_kvm()
  if not T.have_kvm() then T.skip_all(T.kvm_path .. " is not usable here") end
end

-- One check that cannot run here.
function T.skip(name, why)
  T.skipped = T.skipped + 1
  print(string.format("SKIP %s: %s", name, why))
end

-- Runs fn as one case; if `skip` is given (a reason), reports the case as
-- skipped instead of running it. A case that calls T.skip and makes no check
-- (T.eq, T.ok, T.raises, T.run) ran nothing: it is not reported as ok,
-- only its SKIP line stands.
-- MB_TEST_CASE (a Lua pattern) runs only the cases whose name matches it,
-- to chase one case by hand; the others are neither run nor counted.
local only = os.getenv("MB_TEST_CASE")
function T.case(name, fn, skip)
  if only and not name:find(only) then return end
  if skip then return T.skip(name, skip) end
  local checks, skipped = T.checks, T.skipped
  local ok, err = xpcall(fn, debug.traceback)
  if ok and T.skipped > skipped and T.checks == checks then
    return
  elseif ok then
    T.passed = T.passed + 1
    print("ok - " .. name)
  else
    T.failed = T.failed + 1
    print("not ok - " .. name .. "\n  " .. tostring(err):gsub("\n", "\n  "))
  end
end

-- Strings with control bytes print as %q so a binary mismatch is readable.
local function show(v)
  if type(v) == "string" and v:find("[%z\1-\31\127-\255]") then
    return (string.format("%q", v):gsub("\n", "n"))
  end
  return tostring(v)
end

function T.eq(got, want, what)
  T.checks = T.checks + 1
  if got ~= want then
    error(string.format("%s: got %s, want %s", what or "value", show(got), show(want)), 2)
  end
end

function T.ok(v, what)
  T.checks = T.checks + 1
  if not v then error((what or "check") .. " failed", 2) end
  return v
end

-- fn must raise an error whose message contains `pattern` (plain text).
function T.raises(fn, pattern)
  T.checks = T.checks + 1
  local ok, err = pcall(fn)
  if ok then error("expected an error containing: " .. pattern, 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(string.format("error %q does not contain %q", tostring(err), pattern), 2)
  end
  return err
end

-- run and check reason (and exit code if given)
function T.run(m, want_reason, want_code, timeout)
  T.checks = T.checks + 1
  local r = m:run { timeout = timeout or 20 }
  if r.reason ~= want_reason or (want_code and r.exit_code ~= want_code) then
    error(string.format("run: got %s/%s (%s), want %s/%s", r.reason, tostring(r.exit_code),
      tostring(r.message), want_reason, tostring(want_code)), 2)
  end
  return r
end

-- This process's threads under a seccomp filter, and the tids of the
-- others besides the script's own thread (machine { seccomp = true }
-- tests; KVM's kernel workers inherit the filter of the vCPU that made them).
function T.thread_filters()
  local pid = io.open("/proc/self/stat"):read("n")
  local ls = io.popen("ls /proc/" .. pid .. "/task")
  local filtered, free = 0, {}
  for tid in ls:lines() do
    local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/status")
    local st = f and f:read("a") or ""
    if f then f:close() end
    local sc = tonumber(st:match("Seccomp:%s*(%d)"))
    if sc == 2 then filtered = filtered + 1
    elseif tonumber(tid) ~= pid then free[#free + 1] = tid end
  end
  ls:close()
  return filtered, free
end

function T.done()
  summary()
  os.exit(T.failed == 0 and 0 or 1)
end

return T
