-- mb.tap: test output in the Test Anything Protocol, so `prove` (or any
-- TAP harness) runs a directory of moonbox scripts:
--   prove --ext .lua --exec ./moonbox tests/tap/
-- A script:
--   local t = mb.tap()
--   t:ok(r.reason == "exit", "the guest finished")
--   t:eq(plan:fired(rule), 1, "the fault acted once")
--   t:skip("needs the kernel irqchip")
--   t:diag("free text, as a # line")
--   t:done()   -- prints the plan line "1..N"; exits 1 if a check failed
-- (compiled into moonbox.so; docs/faults.md, "TAP").
local tap = {}
tap.__index = tap

local function line(s) io.write(s, "\n"); io.flush() end

local function emit(t, good, name, directive)
  t.n = t.n + 1
  if not good then t.failed = t.failed + 1 end
  local s = (good and "ok " or "not ok ") .. t.n
  if name and name ~= "" then s = s .. " - " .. tostring(name):gsub("\n", " ") end
  if directive then s = s .. " # " .. directive end
  line(s)
  return good
end

function tap:ok(v, name) return emit(self, not not v, name) end

function tap:eq(got, want, name)
  local good = got == want
  emit(self, good, name)
  if not good then
    self:diag(string.format("got: %s", tostring(got)))
    self:diag(string.format("want: %s", tostring(want)))
  end
  return good
end

function tap:skip(name, why) return emit(self, true, name, "SKIP" .. (why and " " .. why or "")) end

function tap:diag(msg)
  for l in (tostring(msg) .. "\n"):gmatch("([^\n]*)\n") do line("# " .. l) end
end

-- The plan line; opts.exit = false returns instead of exiting.
function tap:done(opts)
  line("1.." .. self.n)
  if not (opts and opts.exit == false) then os.exit(self.failed == 0 and 0 or 1) end
  return self.failed == 0
end

return function() return setmetatable({ n = 0, failed = 0 }, tap) end
