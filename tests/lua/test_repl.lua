-- The REPL on a real terminal (a pty from script(1)): line editing with
-- readline, values printed through __tostring, history recall with the up
-- arrow, tab completion of fields and methods, multi-line input.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
T.need_kvm()
if not os.execute("command -v script >/dev/null") then
  T.skip_all("script(1) is not installed")
end
local mb_bin = T.root .. "/moonbox"

-- Type `keys` (printf format) into `moonbox -i -e setup` on a pty.
local function session(setup, keys)
  local home = os.tmpname()
  os.remove(home); os.execute("mkdir -p " .. home)
  local f = home .. "/run.sh"
  local h = io.open(f, "w")
  h:write(string.format("HOME=%s %s -i -e '%s'\n", home, mb_bin, setup)); h:close()
  local p = io.popen(string.format(
    "(sleep 1; printf '%s'; sleep 1; printf '\\004'; sleep 1) | script -qec 'sh %s' /dev/null 2>&1",
    keys, f))
  local out = p:read("a"); p:close()
  local hist = io.open(home .. "/.moonbox_history"); local hs = hist and hist:read("a") or ""
  if hist then hist:close() end
  os.execute("rm -rf " .. home)
  out = out:gsub("\r", ""):gsub("\27%[[%?%d;]*%a", "") -- bracketed paste and the like
  return out, hs
end

local setup = string.format([[mb = require "moonbox"; m = mb.machine { memory = "16M" }
m:boot_flat { file = "%s", at = 0x100000, mode = "long" }
m:symbols("%s/build/guests/debug.elf"); c = m:cpu(0)]], T.guest("debug"), T.root)

T.case("an expression prints its value; __tostring for registers", function()
  local out = session(setup, "6 * 7\\nc:regs()\\n")
  T.ok(out:find("\n42\n", 1, true), out)
  T.ok(out:find("rip 0000000000100000 <_start>", 1, true), out)
end)

T.case("history: the up arrow recalls the last line; saved on exit", function()
  local out, hist = session(setup, "print(\"hi\" .. \"ya\")\\n\\033[A\\n")
  local n = select(2, out:gsub("\nhiya\n", "\n"))
  T.eq(n, 2, "run twice:\n" .. out)
  T.ok(hist:find('print("hi" .. "ya")', 1, true), "history file: " .. hist)
end)

T.case("tab completes table fields and methods", function()
  local out = session(setup, "string.forma\\t(\"%%05d\", 42)\\nc:mo\\t()\\n")
  T.ok(out:find("00042", 1, true), out)
  T.ok(out:find("c:mode()\n", 1, true) and out:find("\nlong4\n", 1, true), out)
end)

T.case("tab completes fields an __index function computes (__fields)", function()
  local out = session(setup, "c.ind\\t + 40\\n")
  T.ok(out:find("c.index + 40\n", 1, true) and out:find("\n40\n", 1, true), out)
end)

T.case("multi-line input as before", function()
  local out = session(setup, "for i = 1, 2 do\\nprint(i * 11)\\nend\\n")
  T.ok(out:find(">> ", 1, true) and out:find("\n11\n22\n", 1, true), out)
end)

T.done()
