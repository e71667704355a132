-- The stdio console on a real terminal (a pty from script(1)): raw mode
-- while the guest runs, Ctrl-a x quits, and the terminal is restored on
-- every way out: quit, guest stop, SIGTERM, SIGINT.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
T.need_kvm()
if not os.execute("command -v script >/dev/null") then
  T.skip_all("script(1) is not installed")
end
local mb_bin = T.bin .. "/moonbox"
local bare = T.root .. "/machines/bare.lua"

-- Run sh code on a pty; input is written after `delay` seconds.
local function on_pty(code, input, delay)
  local f = os.tmpname()
  local h = io.open(f, "w"); h:write(code); h:close()
  local cmd = string.format("(sleep %s; printf '%s'; sleep 2) | script -qec 'sh %s' /dev/null 2>&1",
    delay or 1, input or "", f)
  local p = io.popen(cmd); local out = p:read("a"); p:close()
  os.remove(f)
  return out
end

local function restored(out)
  -- stty -a after moonbox: canonical mode and echo are back
  T.ok(out:find(" icanon", 1, true) and not out:find("-icanon", 1, true), "icanon restored:\n" .. out)
  T.ok(out:find(" echo ", 1, true) and not out:find(" -echo ", 1, true), "echo restored:\n" .. out)
end

T.case("raw mode while running, Ctrl-a x quits, terminal restored", function()
  local out = on_pty(string.format([[
%s -e 'local mb = require "moonbox"
local m = mb.machine { memory = "4M" }
m:add(mb.uart16550 { console = "stdio" })
m:boot_flat { file = "%s", mode = "protected" }
local t = io.popen("stty -a"):read("a")
io.stderr:write(t:find("-icanon", 1, true) and "RAW-ON\n" or "RAW-OFF\n")
local r = m:run { timeout = 20 }
io.stderr:write("REASON=", r.reason, " MSG=", r.message or "", "\n")'
stty -a
]], mb_bin, T.guest("spin")), "\\001x")
  T.ok(out:find("RAW-ON", 1, true), "raw mode during the run:\n" .. out)
  T.ok(out:find("REASON=shutdown MSG=console: quit (Ctrl-a x)", 1, true), out)
  restored(out)
end)

T.case("Ctrl-a c: the REPL with the guest paused, continue goes back to the console", function()
  local f = os.tmpname()
  local h = io.open(f, "w")
  h:write(string.format([[
%s -e 'local mb = require "moonbox"
m = mb.machine { memory = "4M" }
m:add(mb.uart16550 { console = "stdio" })
m:boot_flat { file = "%s", mode = "protected" }
local r = m:run { timeout = 30 }
io.stderr:write("REASON=", r.reason, " MSG=", r.message or "", "\n")'
stty -a
]], mb_bin, T.guest("spin")))
  h:close()
  -- Ctrl-a c; a line read in the REPL; continue; Ctrl-a c again, m:resume(); Ctrl-a x
  local steps = {
    "\\001c", "print(\"PAUSED=\" .. tostring(m:cpu(0):regs().rip < 0x100010))\\n",
    "print(\"TTY=\" .. (io.popen(\"stty -a\"):read(\"a\"):find(\"-ican\" .. \"on\", 1, true) and \"raw\" or \"cooked\"))\\n",
    "continue\\n", "\\001c", "m:resume()\\n", "\\001x" }
  local feed = {}
  for i, s in ipairs(steps) do -- the first waits for the console's raw mode
    feed[#feed + 1] = (i == 1 and "sleep 3" or "sleep 1") .. "; printf '" .. s .. "'"
  end
  local cmd = string.format("(%s; sleep 2) | script -qec 'sh %s' /dev/null 2>&1",
    table.concat(feed, "; "), f)
  local p = io.popen(cmd); local out = p:read("a"); p:close()
  os.remove(f)
  local _, n = out:gsub("guest paused %(Ctrl%-a c%)", "")
  T.eq(n, 2, "two breaks into the REPL:\n" .. out)
  T.ok(out:find("PAUSED=true", 1, true), "registers read in the REPL:\n" .. out)
  T.ok(out:find("TTY=cooked", 1, true), "the REPL has a cooked terminal:\n" .. out)
  T.ok(out:find("REASON=shutdown MSG=console: quit (Ctrl-a x)", 1, true),
    "back on the console after each, Ctrl-a x quits:\n" .. out)
  restored(out)
end)

T.case("terminal restored when the guest stops by itself", function()
  local out = on_pty(string.format("%s %s %s; echo STATUS=$?\nstty -a\n", mb_bin, bare, T.guest("triple")))
  T.ok(out:find("STATUS=0", 1, true), out)
  restored(out)
end)

for _, sig in ipairs { "TERM", "INT" } do
  T.case("terminal restored after SIG" .. sig, function()
    local out = on_pty(string.format([[
exec 3<&0
%s %s %s <&3 &
sleep 1; kill -%s $!; wait $!; echo STATUS=$?
stty -a
]], mb_bin, bare, T.guest("spin"), sig))
    T.ok(out:find("STATUS=1[34]%d"), "killed by the signal: " .. out)
    restored(out)
  end)
end

T.done()
