-- A guest kernel panic is reported, not hung on: with an init that does not
-- exist Linux panics; panic=-1 reboots at once and reboot=t turns that into
-- a triple fault, so run() ends with "shutdown" and the panic is on the
-- console.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end

T.case("kernel panic ends the run with shutdown and the panic on the console", function()
  local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
    root = T.root, console = "buffer", append = "rdinit=/nonexistent init=/nonexistent",
  }
  local t0 = os.time()
  -- m:catch { panic = true }: a breakpoint on panic() through the vmlinux's
  -- symbols, reporting the format it was given; the next run goes on.
  local vmlinux = T.root .. "/.cache/build/linux-6.1/vmlinux" -- with symbols
  if io.open(vmlinux) then
    m:symbols(vmlinux)
    m:catch { panic = true }
    local c = m:run { timeout = 1200 }
    T.eq(c.reason, "breakpoint", "caught (" .. tostring(c.message) .. ")")
    T.eq(c.catch, "panic")
    panic_prefix = tostring(c.panic):match("^[^%%]*")
    T.ok(#panic_prefix > 8, "the panic's format: " .. tostring(c.panic))
    T.ok(tostring(c.sym):match("^panic"), "stopped in panic: " .. tostring(c.sym))
  else
    T.skip("m:catch { panic }", "no vmlinux")
  end
  local r = m:run { timeout = 1200 }
  local out = com1:output()
  print(string.format("# %s after %d s", r.reason, os.time() - t0))
  T.ok(out:find("Kernel panic - not syncing", 1, true), "panic on the console:\n" .. out:sub(-1200))
  if panic_prefix then
    T.ok(out:find("Kernel panic - not syncing: " .. panic_prefix, 1, true),
      "the caught format is the panic the console shows: " .. panic_prefix)
  end
  T.eq(r.reason, "shutdown", "reason (" .. tostring(r.message) .. ")")
end)

T.done()
