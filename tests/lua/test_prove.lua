-- mb.tap under a real TAP harness: `prove --exec moonbox` on tests/tap/
-- passes, and a script with a failing check makes prove fail.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
T.need_kvm()
if os.execute("command -v prove >/dev/null 2>&1") ~= true then
  T.skip_all("prove (perl) is not installed")
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo rc=$?")
  local out = p:read("a"); p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

T.case("prove runs the fault tests in tests/tap/", function()
  local out, rc = sh(string.format("cd %s && prove --ext .lua --exec %s/moonbox tests/tap/", T.root, T.bin))
  T.eq(rc, 0, out)
  T.ok(out:find("All tests successful", 1, true), out)
  T.ok(out:find("Files=2, Tests=6", 1, true), "both files, every check: " .. out)
end)

T.case("a failing check fails the run under prove", function()
  local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
  local f = assert(io.open(dir .. "/bad.lua", "w"))
  f:write('local t = require("moonbox").tap()\nt:ok(true, "fine")\nt:eq(1 + 1, 3, "arith")\nt:done()\n')
  f:close()
  local out, rc = sh(string.format("prove --ext .lua --exec %s/moonbox %s/", T.bin, dir))
  os.execute("rm -rf " .. dir)
  T.ok(rc ~= 0, "prove failed: " .. out)
  T.ok(out:find("Failed 1/2 subtests", 1, true), out)
end)

T.done()
