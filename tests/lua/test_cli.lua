-- The moonbox command behaves like `lua` and explains KVM problems.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local exe = T.bin .. "/moonbox"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)\n$"))
  return out:gsub("rc=%d+\n$", ""), rc
end

T.case("-v and --help", function()
  local out, rc = sh(exe .. " -v")
  T.eq(rc, 0); T.ok(out:find("^moonbox %d+%.%d+%.%d+ %(Lua 5%.4"), out)
  out, rc = sh(exe .. " --help")
  T.eq(rc, 0); T.ok(out:find("usage: moonbox", 1, true), out)
  out, rc = sh(exe .. " --bogus")
  T.eq(rc, 1); T.ok(out:find("unrecognized option '--bogus'", 1, true), out)
end)

T.case("-e runs code with the module available", function()
  local out, rc = sh(exe .. [[ -e 'print(type(require "moonbox".machine))']])
  T.eq(rc, 0); T.eq(out, "function\n")
end)

T.case("a script gets arg and ... like lua", function()
  local f = os.tmpname()
  local h = io.open(f, "w")
  h:write('print(arg[0] == ..., select("#", ...), arg[1], arg[2]); os.exit(3)')
  h:close()
  local out, rc = sh(exe .. " " .. f .. " one two")
  os.remove(f)
  T.eq(rc, 3, "os.exit status"); T.eq(out, "false\t2\tone\ttwo\n")
end)

T.case("a Lua error prints moonbox: FILE:LINE: message and a traceback", function()
  local f = os.tmpname()
  local h = io.open(f, "w")
  h:write('local mb = require "moonbox"\nmb.machine { memory = "12Q" }\n')
  h:close()
  local out, rc = sh(exe .. " " .. f)
  os.remove(f)
  T.eq(rc, 1, "exit status")
  T.ok(out:find("moonbox: " .. f .. ":2: memory: \"12Q\" is not a size", 1, true), out)
  T.ok(out:find("stack traceback:", 1, true), "traceback")
end)

T.case("-i runs the REPL after the script", function()
  local out, rc = sh("printf 'x = 6 * 7\\nx\\nfor i = 1, 2 do\\nprint(i)\\nend\\n' | " .. exe .. " -i -e 'y=1'")
  T.eq(rc, 0)
  T.ok(out:find("42", 1, true), out); T.ok(out:find("1\n", 1, true) and out:find("2\n", 1, true), out)
end)

T.case("--info names the backend and capabilities", function()
  local out, rc = sh(exe .. " --info")
  T.eq(rc, 0, out)
  T.ok(out:find("kvm api version: 12", 1, true), out)
  T.ok(out:find("kvm backend: kvm_", 1, true), out)
  T.ok(out:find("USER_MEMORY%s+present"), out)
end, not T.have_kvm() and T.kvm_path .. " is not usable here" or nil)

T.case("--info reports the confinement the host allows", function()
  local out, rc = sh(exe .. " --info")
  T.ok(out:find("confinement this host allows:", 1, true), out)
  T.ok(out:find("  seccomp: this process %a+ %(status Seccomp: %d"), out)
  T.ok(out:find("SECCOMP_RET_KILL_PROCESS %a+"), out)
  T.ok(out:find("  landlock: ABI %d+\n") or out:find("  landlock: [bu][un]"), out)
  T.ok(out:find("  user namespaces: unprivileged unshare%(CLONE_NEWUSER%) %a+"), out)
end)

-- Root can take KVM away to check the messages a user would see.
local root = (sh("id -u")) == "0\n"
local function needs(tool)
  if not root or select(2, sh("command -v " .. tool)) ~= 0 then return "needs root and " .. tool end
end

T.case("no /dev/kvm: one clear line, non-zero exit", function()
  local out, rc = sh("unshare -m sh -c 'mount -t tmpfs none /dev && " .. exe ..
    [[ -e "require(\"moonbox\").machine{memory=\"1M\"}"']])
  T.eq(rc, 1, out)
  T.ok(out:find("/dev/kvm does not exist: enable virtualization and load kvm_intel or kvm_amd", 1, true), out)
end, needs("unshare"))

T.case("no permission on /dev/kvm: says what to do", function()
  local out, rc = sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. exe .. " --info")
  T.eq(rc, 1, out)
  T.ok(out:find("permission denied: add yourself to the kvm group", 1, true), out)
  T.ok(out:find("confinement this host allows:", 1, true), "confinement without KVM: " .. out)
end, needs("setpriv"))

T.case("--fault-seed, --fault-replay, and a failing run says how to replay it", function()
  local f, img, tr = os.tmpname(), os.tmpname(), os.tmpname()
  assert(os.execute("truncate -s 1M " .. img))
  local h = io.open(f, "w")
  h:write(([[
local mb = require "moonbox"
local m = mb.machine { memory = "16M" }
m:add(mb.virtio_blk { image = "%s" })
local plan = m:faults { trace = %s }
print("seed " .. tostring(mb.fault.defaults().seed) .. " " .. tostring(plan))
if arg[1] == "error" then error("boom") end
os.exit(tonumber(arg[1]))
]]):format(img, "arg[2] and arg[2] ~= '' and arg[2] or nil"))
  h:close()
  local out, rc = sh(exe .. " --fault-seed 77 " .. f .. " 0")
  T.eq(rc, 0); T.ok(out:find("seed 77 fault plan (seed 77, 0 rules)", 1, true), out)
  T.ok(not out:find("to replay", 1, true), out)
  out, rc = sh(exe .. " --fault-seed 77 " .. f .. " 3")
  T.eq(rc, 3)
  T.ok(out:find("moonbox: to replay this run's faults: moonbox --fault-seed 77 " .. f .. " 3\n", 1, true), out)
  out, rc = sh(exe .. " " .. f .. " error " .. tr)
  T.eq(rc, 1)
  T.ok(out:find("boom", 1, true), out)
  T.ok(out:find("moonbox --fault-replay " .. tr .. " " .. f .. " error " .. tr, 1, true), out)
  -- the recorded trace (seed 0) replays; the trace it writes goes next to it
  out, rc = sh(exe .. " --fault-replay " .. tr .. " " .. f .. " 0 " .. tr)
  T.eq(rc, 0); T.ok(out:find("(seed 0, 0 rules)", 1, true), out)
  T.ok(io.open(tr .. ".replay"), "the replay's own trace")
  out, rc = sh(exe .. " --fault-seed x " .. f)
  T.eq(rc, 1); T.ok(out:find("--fault-seed: \"x\" is not a number", 1, true), out)
  out, rc = sh(exe .. " --fault-replay /nonexistent/t " .. f .. " 0")
  T.eq(rc, 1); T.ok(out:find("/nonexistent/t", 1, true), out)
  os.remove(f); os.remove(img); os.remove(tr); os.remove(tr .. ".replay")
end, not T.have_kvm() and T.kvm_path .. " is not usable here" or nil)

T.done()
