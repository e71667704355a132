-- examples/embed_pc (the C embedding example, built by make) boots the
-- `make deps` guest with a virtio-blk disk, runs a command after " -- "
-- and powers off: one boot, exit status 0, the command's output on COM1.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local kernel, initrd = T.root .. "/.cache/guest/bzImage", T.root .. "/.cache/guest/initramfs.cpio"
local bin = T.root .. "/build/examples/embed_pc"
if not io.open(kernel) then print("SKIP: no guest kernel (run make deps)"); os.exit(77) end
if not io.open(bin) then print("SKIP: " .. bin .. " not built (run make)"); os.exit(77) end

-- The command line machines/linux.lua uses with the user irqchip.
local cmdline = "console=ttyS0 earlyprintk=ttyS0 acpi=off pci=off reboot=t panic=-1 i8042.noaux " ..
  "noxsave clearcpuid=cx16,erms,fsrm tsc=reliable noreplace-smp percpu_alloc=page rodata=off nolapic noapic -- " ..
  "echo embed-says-$((6*7)); cat /sys/block/vda/size; poweroff -f"

T.case("embed_pc boots Linux with a disk and runs a command", function()
  local disk, out = os.tmpname(), os.tmpname()
  assert(os.execute("truncate -s 1M " .. disk))
  local t0 = os.time()
  local ok, how, rc = os.execute(string.format("timeout 1200 %s %s %s '%s' %s </dev/null >%s 2>&1",
    bin, kernel, initrd, cmdline, disk, out))
  local f = assert(io.open(out)); local text = f:read("a"); f:close()
  os.remove(disk); os.remove(out)
  print(string.format("# embed_pc: %s %s after %d s", how, rc, os.time() - t0))
  local function has(s)
    if not text:find(s, 1, true) then error(string.format("console lacks %q; last lines:\n%s", s, text:sub(-1500)), 2) end
  end
  has("moonbox-guest: init")
  has("embed-says-42")
  has("\n2048") -- /dev/vda: 1 MiB in 512-byte sectors
  T.eq(ok and rc, 0, "exit status (poweroff -f halts: 0)")
end)

T.done()
