-- Linux boots (15-45 s each on hosts that emulate guest kernel mode): the
-- `make deps` guest on machines/linux.lua with a buffer console, once per
-- interrupt controller (the bzImage with moonbox's PIC, the vmlinux through
-- PVH with KVM's irqchip), then twice on the default boot for /init's
-- protocol (a command; no command: the interactive shell). Each boot checks
-- the /init marker and the output, then how the guest ended.
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

-- guest/init.c keeps the protocol guest/README.md gives: the raw text after
-- " -- " with its quoting, the environment, the mounts and /etc/fstab, the
-- shell's $? (here 128 + SIGKILL), then poweroff.
T.case("default boot (PVH, disk root): /init runs the raw command, reports its status", function()
  local r, out = boot("user", [[echo "q  u" $HOME:$PATH:$TERM; grep -c ' /proc proc ' /proc/mounts; ]] ..
    [[echo fstab-$(wc -l </etc/fstab); kill -9 $$]], nil)
  has(out, "moonbox-guest: init")
  has(out, "q  u /root:/bin:/sbin:/usr/bin:/usr/sbin:vt100")
  has(out, "\n1\r\n")
  has(out, "fstab-3")
  has(out, "moonbox-guest: cmd-exit=137")
  has(out, "moonbox-guest: poweroff")
  T.eq(r.reason, "halt", "power-off without ACPI halts: " .. tostring(r.message))
end)

T.case("no command: /init starts a shell on ttyS0, and powers off when it exits", function()
  local build = assert(loadfile(T.root .. "/machines/linux.lua"))
  local m, com1 = build { root = T.root, console = "buffer" }
  local deadline, sent, r = os.time() + 300, false, nil
  repeat
    r = m:run { timeout = 1 }
    local out = com1:output()
    -- the shell's prompt ("/ # ", then busybox's cursor-position query)
    -- once it reads the console
    local init = out:find("moonbox-guest: init", 1, true)
    if not sent and init and out:find("# ", init, true) then
      com1:input("tty; echo inter-$((6*7)); exit\r")
      sent = true
    end
  until r.reason ~= "timeout" or os.time() > deadline
  local out = com1:output()
  T.ok(sent, "a prompt appeared; console ends with: " .. out:sub(-300))
  has(out, "/dev/ttyS0")
  has(out, "inter-42")
  has(out, "moonbox-guest: poweroff")
  T.eq(r.reason, "halt", "the shell's exit powers off: " .. tostring(r.message))
end)

T.done()
