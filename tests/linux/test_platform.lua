-- ACPI and fw_cfg (and SMP, with MB_TEST_SMP=1 or =VMLINUX) on the `make deps` Linux
-- guest, ONE boot: KVM's irqchip, ACPI tables, a fw_cfg device and a virtio-blk disk
-- announced only by the DSDT (no virtio_mmio.device= on the command line).
-- The script the guest runs comes through fw_cfg itself; init ends with
-- poweroff -f, which must power off through ACPI (reason "shutdown").
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end
do -- the default guest is built without ACPI (guest/README.md says why)
  local f = assert(io.open(T.root .. "/guest/kernel.config"))
  local cfg = f:read("a")
  f:close()
  if not cfg:find("\nCONFIG_ACPI=y") then
    T.skip_all("the guest kernel has no CONFIG_ACPI (guest/README.md: the config change was not adopted)")
  end
end

local script = [[
echo "cpus: $(grep -c ^processor /proc/cpuinfo) online=$(cat /sys/devices/system/cpu/online)"
taskset -c 0 cat /proc/self/stat | awk '{ print "ran-on-cpu:", $39 }'
taskset -c 1 cat /proc/self/stat | awk '{ print "ran-on-cpu:", $39 }'
echo "pnp: $(cat /sys/bus/pnp/devices/*/id | tr '\n' ' ')"
echo "ttyS0-parent: $(basename $(readlink /sys/class/tty/ttyS0/device))"
echo "acpi-devs: $(ls /sys/bus/acpi/devices | tr '\n' ' ')"
echo "vdb-sectors: $(cat /sys/block/vdb/size)"
echo "fwcfg: $(cat /sys/firmware/qemu_fw_cfg/by_name/opt/moonbox/hello/raw)"
echo "ioapic-lines: $(grep -c IO-APIC /proc/interrupts)"
echo "cmdline: $(cat /proc/cmdline)"
]]

local disk = os.tmpname()
assert(os.execute("truncate -s 1M " .. disk))

-- Two vCPUs: the default guest is an SMP kernel (guest/kernel.config), so
-- the boot has 2 CPUs (the MADT lists them, acpi is on). MB_TEST_SMP=0
-- boots one CPU; MB_TEST_SMP=PATH boots the kernel at PATH with 2.
local smpenv = os.getenv("MB_TEST_SMP")
local smp = smpenv ~= "0"
local kernel = smp and smpenv ~= nil and smpenv ~= "" and smpenv ~= "1" and smpenv or nil
if kernel and not io.open(kernel) then
  T.skip_all("MB_TEST_SMP=" .. kernel .. ": no such kernel")
end
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, kernel = kernel, console = "buffer", irqchip = "kernel", cpus = smp and 2 or 1, acpi = "on",
  append = "-- sh /sys/firmware/qemu_fw_cfg/by_name/opt/moonbox/t.sh/raw",
  setup = function(m)
    m:add(mb.virtio_blk { image = disk })
    m:add(mb.fw_cfg { files = { ["opt/moonbox/t.sh"] = script,
      ["opt/moonbox/hello"] = "hello-through-fw-cfg" } })
  end,
}
local t0 = os.time()
local r = m:run { timeout = 1200 }
local out = com1:output()
os.remove(disk)
print(string.format("# %s after %d s, %d bytes of console", r.reason, os.time() - t0, #out))

local function has(s)
  if not out:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. out:sub(-2500), 2)
  end
end

T.case("SMP: 2 CPUs online, a command runs on each", function()
  if not smp then
    return T.skip("smp", "MB_TEST_SMP=0: one CPU")
  end
  has("cpus: 2 online=0-1")
  has("ran-on-cpu: 0")
  has("ran-on-cpu: 1")
end)

T.case("ACPI: COM1 and the virtio disk found in the DSDT", function()
  has("PNP0501")
  has("ttyS0-parent: 00:0")  -- the PNP device, not the legacy platform port
  has("LNRO0005:00")
  has("vdb-sectors: 2048")
  local cmd = out:match("cmdline: ([^\n]*)") or ""
  T.ok(cmd ~= "" and not cmd:find("virtio_mmio.device", 1, true),
    "no virtio_mmio.device= on the command line: " .. cmd)
  T.ok(not cmd:find("acpi=off", 1, true), "ACPI on")
  local n = tonumber(out:match("ioapic%-lines: (%d+)"))
  T.ok(n and n > 0, "interrupts through the IOAPIC of the MADT")
end)

T.case("fw_cfg: a file in /sys/firmware/qemu_fw_cfg, found through ACPI", function()
  has("fwcfg: hello-through-fw-cfg")
  has("QEMU0002:00")
end)

T.case("poweroff -f powers off through ACPI", function()
  has("moonbox-guest: cmd-exit=0")
  T.eq(r.reason, "shutdown", tostring(r.message))
  T.ok(tostring(r.message):find("ACPI S5", 1, true), tostring(r.message))
end)

T.done()
