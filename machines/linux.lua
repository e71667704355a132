-- machines/linux.lua: the default PC, booting Linux to a busybox shell.
--
--   ./moonbox machines/linux.lua [--kernel F] [--initrd F] [--append "..."]
--                                [--memory 128M] [--irqchip user|kernel]
--                                [--console stdio|null|buffer] [--timeout S]
--                                [--disk IMAGE] [--rng] [--boot pvh|bzimage]
--                                [--seccomp=on|off] [--rootfs disk|initrd]
--                                [--cpus N] [--acpi on|off] [--reinject on|off]
--
-- Defaults to the guest `make deps` built in .cache/guest/: its uncompressed
-- vmlinux through PVH when it is there (the guest runs no decompressor,
-- which is emulated and slow on some hosts: guest/README.md has numbers),
-- else the bzImage; --boot picks one. --kernel F boots F through whichever
-- protocol F speaks (an ELF vmlinux: PVH; a bzImage: the Linux protocol).
-- The root file system is .cache/guest/root.ext2 on a virtio-blk disk
-- (/dev/vda, serial "moonbox-root", with a copy-on-write overlay: the guest
-- may write, the image never changes); --rootfs initrd (or --initrd F)
-- boots the initramfs instead. On the console,
-- Ctrl-a x quits. --disk adds a virtio-blk disk (the next /dev/vdX), --rng a
-- virtio-rng (/dev/hwrng). --cpus N starts N vCPUs (needs --irqchip
-- kernel: KVM's local APICs take the INIT/SIPI that start the others;
-- the default guest is an SMP kernel for up to 4; guest/README.md);
-- --acpi on gives the guest ACPI tables (devices found in the DSDT instead
-- of on the command line, power-off through ACPI). --reinject on makes the
-- PIT replay ticks the guest missed (off by default: Linux does not need
-- them, and under load they slow its boot). From Lua, `loadfile("machines/linux.lua")(opts)`
-- returns the machine (not started) and COM1 for tests and scripts to
-- drive; opts.setup(m), if given, adds devices before the kernel is loaded
-- (boot_linux announces the virtio devices present at that moment).
local mb = require "moonbox"

local root = (arg and arg[0] and arg[0]:match("^(.*)/machines/[^/]*$")) or "."
local opts, standalone = ..., false
if type(opts) ~= "table" then
  standalone, opts = true, {}
  local i = 1
  while arg and arg[i] do
    local k, v = arg[i]:match("^%-%-([%w_]+)=(.*)$")
    if arg[i] == "--rng" then k, v = "rng", true end
    if arg[i] == "--seccomp" then k, v = "seccomp", true end
    if not k then k, v = arg[i]:match("^%-%-([%w_]+)$"), arg[i + 1]; i = i + 1 end
    if not k then error("linux.lua: unexpected argument " .. arg[i - 1], 0) end
    opts[k] = v
    i = i + 1
  end
end
local known = { kernel = 1, initrd = 1, append = 1, memory = 1, irqchip = 1, console = 1,
  timeout = 1, root = 1, disk = 1, rng = 1, setup = 1, boot = 1, seccomp = 1, cpus = 1,
  acpi = 1, rootfs = 1, reinject = 1 }
for k in pairs(opts) do
  if not known[k] then error("linux.lua: unknown option --" .. k, 0) end
end
root = opts.root or root
local irqchip = opts.irqchip or "user"
local cpus = tonumber(opts.cpus or 1)
if not cpus or cpus < 1 or cpus % 1 ~= 0 then
  error("linux.lua: --cpus: expected a number of CPUs, got " .. tostring(opts.cpus), 0)
end
local acpi = opts.acpi == true or opts.acpi == "on"
if opts.acpi ~= nil and not acpi and opts.acpi ~= false and opts.acpi ~= "off" then
  error("linux.lua: --acpi: expected on or off, got " .. tostring(opts.acpi), 0)
end

-- seccomp: moonbox's threads are confined once the guest runs
-- (docs/sandbox.md); on by default here, --seccomp=off (or seccomp = false
-- from Lua) turns it off, e.g. to strace a run.
local seccomp = opts.seccomp
if seccomp == nil or seccomp == true or seccomp == "on" or seccomp == "1" or seccomp == "true" then
  seccomp = true
elseif seccomp == false or seccomp == "off" or seccomp == "0" or seccomp == "false" then
  seccomp = false
else
  error("linux.lua: --seccomp: expected on or off, got " .. tostring(seccomp), 0)
end
-- 128 MiB: plenty for busybox and the tests, and Linux initialises and
-- frees a struct page for every 4 KiB of RAM at boot, emulated on hosts
-- that emulate guest kernel mode (that set-up took ~1.8x as long with
-- 256 MiB there; guest/README.md "Where the boot's time goes").
local m = mb.machine { cpus = cpus, memory = opts.memory or "128M", irqchip = irqchip,
  seccomp = seccomp, acpi = acpi,
  cpuid = cpus > 1 and { hide = { "kvm_pv_send_ipi", "kvm_pv_sched_yield" } } or nil }
m:add(mb.pic8259 {})                       -- with "kernel" it stands for KVM's own
-- No re-injection of missed ticks by default: Linux keeps time from
-- kvm-clock or the TSC, not by counting ticks, and on a loaded host where
-- kernel code is emulated, replaying a backlog of ticks (each three PIC
-- port exits and the tick handler) starved the boot: a boot at load 10 ran
-- 25 % longer with it (guest/README.md). --reinject on brings it back.
local reinject = opts.reinject or "off"
if reinject ~= "on" and reinject ~= "off" then
  error("linux.lua: --reinject: expected on or off, got " .. tostring(reinject), 0)
end
m:add(mb.pit8254 { irq = 0, reinject = reinject == "on" })
local com1 = m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = opts.console or "stdio" })
m:add(mb.rtc {})
m:add(mb.i8042 {})                         -- reset through port 0x64
m:add(mb.port80 {})                        -- the kernel's I/O delay port

-- The command line that works on KVM hosts that emulate guest kernel code
-- (see docs): no ACPI/PCI to probe, reboot by triple fault, no XSAVE.
-- Four more choices make the boot cheaper where each kernel instruction is
-- emulated, and cost next to nothing on VMX/SVM hardware (guest/README.md
-- "Night cuts"): without ERMS/FSRM the kernel's memset/memcpy/clear_page
-- move 8 bytes per string-instruction step instead of 1 (the emulator pays
-- per step); noreplace-smp keeps the lock prefixes of a one-CPU boot
-- instead of rewriting ~4,400 of them, each through a temporary mm and a
-- TLB flush; percpu_alloc=page gives the per-CPU area the 35 pages it uses
-- instead of zeroing a 2 MiB unit and freeing most of it. rodata=off skips
-- write-protecting the kernel image and freeing its alignment gaps (~2 s of
-- page-attribute changes and page poisoning here; it leaves ~3.5 MiB of the
-- guest's RAM reserved and the kernel's text writable: append rodata=on for
-- a guest whose kernel must fault on a stray write to its own text).
local cmdline = "console=ttyS0 earlyprintk=ttyS0 pci=off reboot=t panic=-1 "
  .. "i8042.noaux noxsave clearcpuid=cx16,erms,fsrm tsc=reliable "
  .. "noreplace-smp percpu_alloc=page rodata=off"
if not acpi then cmdline = cmdline .. " acpi=off" end
if irqchip == "user" then
  -- moonbox's PIC has no APIC behind it; CPUID hiding is not reliable on
  -- every host, so tell Linux too.
  cmdline = cmdline .. " nolapic noapic"
end
-- The root disk first, so that it is /dev/vda whatever the caller adds.
local rootfs = opts.rootfs or (opts.initrd and "initrd" or "disk")
if rootfs ~= "disk" and rootfs ~= "initrd" then
  error("linux.lua: --rootfs: expected disk or initrd, got " .. tostring(rootfs), 0)
end
if rootfs == "disk" and opts.initrd then
  error("linux.lua: --rootfs disk and --initrd " .. tostring(opts.initrd) .. ": the initramfs would be the root; pick one", 0)
end
local rootimg = root .. "/.cache/guest/root.ext2"
if rootfs == "disk" then
  local f = io.open(rootimg, "rb")
  if f then f:close() else rootfs = "initrd" end -- an older make deps: no disk
end
if rootfs == "disk" then
  m:add(mb.virtio_blk { name = "rootfs", image = rootimg, disk = "overlay", serial = "moonbox-root" })
  cmdline = cmdline .. " root=/dev/vda rw rootfstype=ext2 init=/init"
end

if opts.append then cmdline = cmdline .. " " .. opts.append end

if opts.disk then m:add(mb.virtio_blk { image = opts.disk }) end  -- the next /dev/vdX
if opts.rng then m:add(mb.virtio_rng {}) end                      -- /dev/hwrng
if opts.setup then opts.setup(m) end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end
local kernel = opts.kernel
if not kernel then
  local vmlinux = root .. "/.cache/guest/vmlinux"
  local boot = opts.boot or (exists(vmlinux) and "pvh" or "bzimage")
  if boot ~= "pvh" and boot ~= "bzimage" then
    error("linux.lua: --boot: expected pvh or bzimage, got " .. tostring(boot), 0)
  end
  kernel = boot == "pvh" and vmlinux or root .. "/.cache/guest/bzImage"
end

m:boot_linux {   -- an ELF kernel (vmlinux) goes through PVH
  kernel = kernel,
  initrd = rootfs == "initrd" and (opts.initrd or root .. "/.cache/guest/initramfs.cpio") or nil,
  cmdline = cmdline,
}

if not standalone then return m, com1 end

local r = m:run { timeout = tonumber(opts.timeout) }
if r.reason ~= "halt" then
  -- A kernel panic reboots at once (panic=-1) by triple fault (reboot=t):
  -- it shows up here as "shutdown", with the panic text on the console.
  io.stderr:write("\r\nmoonbox: guest stopped: ", r.reason, ": ", r.message or "", "\r\n")
end
-- poweroff -f powers off through ACPI ("shutdown"), or without ACPI halts
-- with interrupts off ("halt"): a clean end, status 0.
local ok = { exit = r.exit_code, shutdown = 0, halt = 0, reset = 0 }
os.exit(ok[r.reason] or r.exit_code)
