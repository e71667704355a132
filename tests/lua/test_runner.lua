-- tests/run.sh and the harness on a scratch tree of small tests made here:
-- a failure stays a failure (before need_kvm on a host without KVM, before
-- a bare os.exit), a check that did not run is a counted skip (harness and
-- cmocka), a hang is a failure with its time bound, no clang is a counted
-- skip, and a filter picks the tests. Needs no KVM: the scratch tests point
-- need_kvm at a path that does not exist.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  return out:gsub("rc=%d+\n$", ""), tonumber(out:match("rc=(%d+)\n$"))
end
local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local tree = os.tmpname()
os.remove(tree)
local function write(path, text)
  local f = assert(io.open(tree .. "/" .. path, "w"))
  f:write(text)
  f:close()
end
local root = sh("cd " .. q(T.root) .. " && pwd"):gsub("\n$", "")
assert(os.execute("mkdir -p " .. tree .. "/tests/lua " .. tree .. "/build/tests"))
assert(os.execute(string.format("cp %s/tests/run.sh %s/tests/ && cp %s/tests/lua/harness.lua %s/tests/lua/ " ..
  "&& ln -s %s/moonbox %s/moonbox", root, tree, root, tree, root, tree)))

local head = 'local T = dofile(arg[0]:match("^(.*)/[^/]*$") .. "/harness.lua")\n' ..
  'T.kvm_path = "/nonexistent/kvm"\n'
local fails = 'T.case("wrong", function() T.eq(1 + 1, 3, "sum") end)\n'
local passes = 'T.case("right", function() T.eq(1 + 1, 2, "sum") end)\n'
write("tests/lua/test_fail_before_kvm.lua", head .. passes .. fails .. "T.need_kvm()\n" .. passes .. "T.done()\n")
write("tests/lua/test_pass_before_kvm.lua", head .. passes .. "T.need_kvm()\n" .. passes .. "T.done()\n")
write("tests/lua/test_fail_then_exit77.lua", head .. fails .. "os.exit(77)\n")
write("tests/lua/test_fail_then_exit0.lua", head .. fails .. "os.exit(0)\n")
write("tests/lua/test_no_done.lua", head .. passes)
write("tests/lua/test_check_skip.lua", head .. passes ..
  'T.skip("one check", "not here")\n' ..
  'T.case("another check", function() error("ran although skipped") end, "needs a unicorn")\n' ..
  'T.case("a case that skips itself", function() return T.skip("its check", "no gadget") end)\n' ..
  'T.case("a case that checks, then skips", function() T.ok(true); T.skip("the rest", "later") end)\n' ..
  "T.done()\n")
local pidfile = tree .. "/hang.pid"
write("tests/lua/test_hang.lua", head .. passes ..
  "os.execute(\"sh -c 'echo $$ >" .. pidfile .. "; exec sleep 600'\")\nT.done()\n")

local function run_tests(filter, env)
  return sh(string.format("cd %s && env FUZZ_CC=%s MB_TEST_TIMEOUT=%s tests/run.sh %s", tree,
    env and env.cc or "clang", env and env.timeout or 60, q(filter)))
end
local function has(out, pattern, what) T.ok(out:find(pattern), (what or pattern) .. " in:\n" .. out) end

T.case("a case failed before need_kvm fails the file on a host without KVM", function()
  local out, rc = run_tests("lua/test_(fail|pass)_before_kvm")
  T.eq(rc, 1, "exit status (" .. out .. ")")
  has(out, "FAIL  lua/test_fail_before_kvm +%d+s %(exit 1%)")
  has(out, "SKIP  lua/test_pass_before_kvm +SKIP: /nonexistent/kvm is not usable here")
  has(out, "moonbox tests: 0 passed, 1 failed, 1 skipped %(failed: lua/test_fail_before_kvm%)\n$")
end)

T.case("a failed case fails the file whatever its exit status", function()
  local out, rc = run_tests("lua/test_(fail_then_exit|no_done)")
  T.eq(rc, 1, "exit status (" .. out .. ")")
  has(out, "FAIL  lua/test_fail_then_exit77 +%d+s %(a case failed, yet exit 77%)")
  has(out, "FAIL  lua/test_fail_then_exit0 +%d+s %(a case failed, yet exit 0%)")
  has(out, "FAIL  lua/test_no_done +%d+s %(exit 0 without the harness summary %(T.done%)%)")
  has(out, "moonbox tests: 0 passed, 3 failed, 0 skipped")
end)

local cmocka = [[
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
static void runs(void **state) { (void)state; }
static void cannot_run_here(void **state) { (void)state; skip(); }
int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(runs), cmocka_unit_test(cannot_run_here) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
]]
write("test_cmocka_skip.c", cmocka)
local cc_out, cc_rc = sh(string.format("cc -o %s/build/tests/test_cmocka_skip %s/test_cmocka_skip.c -lcmocka",
  tree, tree))

T.case("checks that did not run are counted and listed, also in passing tests", function()
  local out, rc = run_tests("lua/test_check_skip|unit/test_cmocka_skip")
  T.eq(rc, 0, "exit status (" .. out .. ")")
  has(out, "PASS  unit/test_cmocka_skip +%d+s\n      SKIP cannot_run_here: cmocka skip%(%)\n")
  has(out, "PASS  lua/test_check_skip +%d+s\n      SKIP one check: not here\n" ..
    "      SKIP another check: needs a unicorn\n      SKIP its check: no gadget\n" ..
    "      SKIP the rest: later\n")
  has(out, "moonbox tests: 2 passed, 0 failed, 5 skipped\n$")
  -- the case that ran no check is no "ok"; the one that checked something is
  local f = assert(io.open(tree .. "/build/test-logs/lua/test_check_skip.log"))
  local log = f:read("a")
  f:close()
  T.ok(not log:find("ok - a case that skips itself", 1, true), "a case that only skipped printed ok:\n" .. log)
  T.ok(log:find("\nok - a case that checks, then skips\n", 1, true), "the case that checked:\n" .. log)
  T.ok(log:find("\n# 2 passed, 0 failed, 4 skipped\n", 1, true), "the harness's own count:\n" .. log)
end, cc_rc ~= 0 and "cannot build a cmocka test: " .. cc_out or nil)

-- A process that has exited or is only a zombie (here PID 1 may not reap
-- orphans), within two seconds.
local function gone(pid)
  for _ = 1, 20 do
    local f = io.open("/proc/" .. pid .. "/stat")
    local state = f and f:read("a"):match("^%d+ %b() (%a)")
    if f then f:close() end
    if state == nil or state == "Z" then return true end
    os.execute("sleep 0.1")
  end
  return false
end

T.case("a test that hangs fails with its time bound, its children killed", function()
  local out, rc = run_tests("lua/test_hang", { timeout = 2 })
  T.eq(rc, 1, "exit status (" .. out .. ")")
  has(out, "FAIL  lua/test_hang +%d+s %(timed out after 2 s%)")
  has(out, "moonbox tests: 0 passed, 1 failed, 0 skipped %(failed: lua/test_hang%)\n$")
  local f = assert(io.open(pidfile), "the hanging test started its child")
  local pid = f:read("n")
  f:close()
  T.ok(gone(pid), "the hanging child " .. pid .. " is gone")
end)

T.case("no fuzzing compiler: the fuzzers are a counted skip", function()
  local out, rc = run_tests("fuzz/", { cc = "/nonexistent/clang" })
  T.eq(rc, 0, "exit status (" .. out .. ")")
  has(out, "SKIP  fuzz/libfuzzer +SKIP: /nonexistent/clang not found")
  has(out, "moonbox tests: 0 passed, 0 failed, 1 skipped\n$")
end)

T.case("a filter picks the tests; one matching nothing is an error", function()
  local out, rc = run_tests("check_skip")
  T.eq(rc, 0, "exit status (" .. out .. ")")
  T.eq(select(2, out:gsub("\n(%u%u%u%u)  ", "")), 0, "only the first line names a test: " .. out)
  has(out, "^PASS  lua/test_check_skip ")
  has(out, "moonbox tests: 1 passed, 0 failed, 4 skipped\n$")
  out, rc = run_tests("nosuchtest")
  T.eq(rc, 2, "exit status (" .. out .. ")")
  has(out, "no test name matches nosuchtest")
  out, rc = run_tests("(")
  T.eq(rc, 2, "exit status (" .. out .. ")")
  has(out, "bad regular expression")
end)

os.execute("rm -rf " .. q(tree))
T.done()
