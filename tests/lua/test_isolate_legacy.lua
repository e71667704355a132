-- Every legacy device guest test of test_legacy.lua, with each device but
-- the interrupt controller isolated (isolate = true: its own process,
-- docs/devproc.md). The guests must not see a difference. At the end, every
-- device the tests added must have been in a process of its own.
local mb = require "moonbox"
local made = {}
for _, kind in ipairs { "uart16550", "pit8254", "rtc", "i8042", "port80", "debug_exit" } do
  local make = mb[kind]
  mb[kind] = function(opts)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.isolate == nil then o.isolate = true end
    local d = make(o)
    made[#made + 1] = d
    return d
  end
end
local exit = os.exit
os.exit = function(code, ...)
  local n, bad = 0, {}
  for _, d in ipairs(made) do
    local ok, s = pcall(d.state, d)
    if ok and s.kernel then
      -- pit = "kernel": KVM's PIT, nothing to isolate
    elseif ok and s.isolated and s.isolated.pid > 0 then
      n = n + 1
    elseif ok then
      bad[#bad + 1] = tostring(d)
    end
  end
  if #bad > 0 or n < 40 then
    print(string.format("not ok - devices isolated: %d, in process: %s", n, table.concat(bad, ", ")))
    code = 1
  else
    print(string.format("ok - all %d added devices ran in their own process", n))
  end
  return exit(code, ...)
end
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
dofile(dir .. "/test_legacy.lua")
