-- Linux boots (about a minute each on hosts that emulate guest kernel
-- mode): the `make deps` guest on machines/linux.lua with a buffer console,
-- once per interrupt controller: the bzImage with moonbox's PIC, the
-- vmlinux through PVH with KVM's irqchip. Each boot checks the /init marker, runs a
-- command and checks its output, then checks how the guest ended.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local kernel = T.root .. "/.cache/guest/bzImage"
if not io.open(kernel) then
  T.skip_all("no guest kernel (run make deps)")
end

local function boot(irqchip, command, how)
  local build = assert(loadfile(T.root .. "/machines/linux.lua"))
  local m, com1 = build { root = T.root, console = "buffer", irqchip = irqchip,
    append = "-- " .. command, boot = how }
  local t0 = os.time()
  local r = m:run { timeout = 1200 }
  local out = com1:output()
  print(string.format("# irqchip %s, %s: %s after %d s, %d bytes of console", irqchip, how,
    r.reason, os.time() - t0, #out))
  return r, out, m
end

local function has(out, s)
  if not out:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. out:sub(-1500), 2)
  end
end

T.case("user irqchip: init, a command, poweroff -f ends with halt", function()
  local r, out, m = boot("user", "echo guest-says-$((6*7)); grep -c processor /proc/cpuinfo; cat /proc/interrupts",
    "bzimage")
  has(out, "Linux version 6.1")
  has(out, "moonbox-guest: init")
  has(out, "guest-says-42")
  has(out, "moonbox-guest: cmd-exit=0")
  has(out, "XT-PIC") -- /proc/interrupts: the 8259 delivered them
  T.eq(r.reason, "halt", "poweroff -f without ACPI halts with interrupts off")
  T.ok(m:stats().irqs_injected > 100, "timer interrupts injected by moonbox's PIC")
end)

local have_vmlinux = io.open(T.root .. "/.cache/guest/vmlinux") ~= nil
T.case("PVH vmlinux, kernel irqchip: init, a command, reboot -f (reboot=t) ends with shutdown", function()
  local r, out = boot("kernel", "echo kernel-chip-$((6*7)); reboot -f", "pvh")
  has(out, "moonbox-guest: init")
  has(out, "kernel-chip-42")
  T.eq(r.reason, "shutdown", "reboot=t triple-faults: " .. tostring(r.message))
end, not have_vmlinux and "no .cache/guest/vmlinux (run make deps)" or nil)

T.done()
