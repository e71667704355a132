-- gdb's `stepi` round trip vs a Lua c:step() on the same guest (the spin
-- guest, 32-bit kernel mode: every step is an emulated instruction and a
-- KVM_EXIT_DEBUG). Lua: N steps from the script. gdb: real gdb in batch
-- mode, `stepi N` (a vCont;s, a g and a few m packets each).
-- Usage: ./moonbox bench/gdb_step.lua [N]
-- Prints: gdb_step lua_us=X gdb_us=Y ratio=Y/X   (µs a step)
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local N = tonumber(arg[1]) or 2000

local function now_us()
  local p = io.popen("date +%s%N")
  local ns = p:read("n")
  p:close()
  return ns / 1000
end

local function machine()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = root .. "/build/guests/spin.bin", mode = "protected" }
  return m
end

-- Lua: stop at the first instruction on the vCPU's own thread (as gdb's
-- steps are), then N steps
local m = machine()
m:breakpoint { at = 0x100000, kind = "hw", once = true }
assert(m:run { timeout = 10 }.reason == "breakpoint")
local c = m:cpu(0)
local t = now_us()
for _ = 1, N do c:step() end
local lua_us = (now_us() - t) / N

-- gdb: one session; gdb's own Python times `stepi N` (gdb's start-up
-- and the handshake do not count)
local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)
local g = machine()
local sock = dir .. "/g.sock"
g:gdbserver { listen = "unix:" .. sock, stop = "entry" }
os.execute(string.format("(timeout 120 gdb -batch -nx -ex 'target remote %s' " ..
  "-ex 'python import time; t0 = time.time()' -ex 'stepi %d' " ..
  "-ex 'python print(\"gdb_s\", time.time() - t0)' -ex kill >%s/log 2>&1 </dev/null &)",
  sock, N, dir))
g:run { timeout = 120 }
local secs
for _ = 1, 100 do -- kill ends the run before gdb has printed and exited
  local f = io.open(dir .. "/log")
  if f then secs = f:read("a"):match("gdb_s (%S+)"); f:close() end
  if secs then break end
  os.execute("sleep 0.1")
end
os.execute("rm -rf " .. dir)
assert(secs, "gdb did not finish")
local gdb_us = tonumber(secs) * 1e6 / N
print(string.format("gdb_step steps=%d lua_us=%.2f gdb_us=%.2f ratio=%.2f", N, lua_us, gdb_us,
  gdb_us / lua_us))
