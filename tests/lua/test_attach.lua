-- m:listen { repl } and `moonbox attach`: a REPL on a running machine
-- from another process (tests/guests/spin.S runs until told otherwise).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function slurp(p)
  local f = io.open(p)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function spin_machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  return m
end

-- Run `moonbox attach sock` in the background on the given input lines;
-- run m in slices until the client is done; return its output and status.
local function attach(m, sock, lines, n)
  local input, out, rc = dir .. "/in" .. n, dir .. "/out" .. n, dir .. "/rc" .. n
  local f = assert(io.open(input, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  os.execute(string.format("(timeout 60 %s/moonbox attach %s <%s >%s 2>&1; echo $? >%s) &",
    T.bin, sock, input, out, rc))
  for _ = 1, 300 do
    local r = m:run { timeout = 0.1 }
    if r.reason ~= "timeout" then return r, slurp(out), tonumber(slurp(rc)) end
    local s = slurp(rc)
    if s and s ~= "" then return r, slurp(out), tonumber(s) end
  end
  return nil, slurp(out), nil
end

T.case("attach: pause, read registers, resume, globals of the script", function()
  local m = spin_machine()
  local sock = dir .. "/repl.sock"
  T.eq(m:listen { repl = "unix:" .. sock }, "unix:" .. sock)
  script_value = 41
  local _, out, rc = attach(m, sock, {
    "m:pause()", "print('paused', m:paused())",
    "string.format('eip=%x', m:cpu(0):regs().rip)",
    "script_value + 1", "attached_here = true",
    "for i = 1, 2 do", "print('loop', i)", "end",
    "error('oops')", "m:resume()", "print('after', m:paused())" }, 1)
  T.eq(rc, 0, "attach exits 0 at the end of its input: " .. tostring(out))
  T.ok(out:find("moonbox attach", 1, true), "banner: " .. out)
  T.ok(out:find("paused\ttrue", 1, true), "paused: " .. out)
  T.ok(out:match("eip=10000%x"), "registers of the spinning guest: " .. out)
  T.ok(out:find("42", 1, true), "the script's globals: " .. out)
  T.ok(out:find("loop\t1\nloop\t2", 1, true), "a chunk over several lines: " .. out)
  T.ok(out:find("oops", 1, true), "an error is printed, the session goes on: " .. out)
  T.eq(attached_here, true, "a global set from the client")
  T.ok(out:find("after\tfalse", 1, true), "resumed by the client: " .. out)
  -- a second client after the first left
  local _, out2, rc2 = attach(m, sock, { "1 + 1" }, 2)
  T.eq(rc2, 0); T.ok(out2:find("\n2\n", 1, true) or out2:find("2\n", 1, true), out2)
end)

T.case("a run that stops while a client's chunk runs returns once it is done", function()
  -- The chunk runs on the attach server's thread in the world the script
  -- lends while it waits in m:run; each 0.1 s slice of attach() times out
  -- in the middle of the 0.5 s chunk and waits for it before returning to
  -- Lua, woken when it ends (core/machine.c, drain()). No wake: a hang.
  local m = spin_machine()
  local sock = dir .. "/slow.sock"
  m:listen { repl = "unix:" .. sock }
  -- once started, a client's lines wait for the next slice; before the
  -- first run they are refused ("the machine has not run yet")
  T.eq(m:run { timeout = 0.05 }.reason, "timeout")
  local t0 = os.time()
  local _, out, rc = attach(m, sock, { "os.execute('sleep 0.5'); print('slept', m:paused())" }, 3)
  T.eq(rc, 0, "attach exits 0: " .. tostring(out))
  T.ok(out:find("slept", 1, true), "the chunk ran to its end: " .. tostring(out))
  T.ok(os.time() - t0 < 30, "no slice hung")
end)

T.case("listen: errors, and a client before the first run", function()
  local m = spin_machine()
  T.raises(function() m:listen {} end, "repl: missing")
  T.raises(function() m:listen { repl = "tcp:127.0.0.1:1" } end, "is not unix:PATH")
  T.raises(function() m:listen { repl = "unix:/nonexistent/dir/s" } end, "cannot listen")
  local sock = dir .. "/early.sock"
  m:listen { repl = "unix:" .. sock }
  local p = io.popen(string.format("echo '1+1' | timeout 10 %s/moonbox attach %s 2>&1", T.bin, sock))
  local out = p:read("a"); p:close()
  T.ok(out:find("has not run yet", 1, true), out)
  local p2 = io.popen(string.format("timeout 10 %s/moonbox attach %s/none.sock 2>&1; echo rc=$?", T.bin, dir))
  local out2 = p2:read("a"); p2:close()
  T.ok(out2:find("rc=1", 1, true) and out2:find("none.sock", 1, true), out2)
end)

os.execute("rm -rf " .. dir)
T.done()
