-- Platform firmware interfaces without Linux: ACPI tables (dumped with
-- m:acpi_tables and disassembled by iasl when installed), the MP table,
-- fw_cfg from Lua options and from a tiny guest using its DMA interface.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function byte_sum(s, i, j)
  local n = 0
  for k = i, j do n = n + s:byte(k) end
  return n % 256
end

T.case("acpi: tables for 2 CPUs, COM1, virtio and fw_cfg; checksums", function()
  local m = mb.machine { memory = "64M", cpus = 2, irqchip = "kernel", acpi = true }
  m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "null" })
  m:add(mb.virtio_rng {})
  m:add(mb.fw_cfg { files = { ["opt/x"] = "y" } })
  local t = m:acpi_tables()
  for _, sig in ipairs { "RSDP", "XSDT", "RSDT", "FACP", "FACS", "DSDT", "APIC" } do
    T.ok(t[sig], "table " .. sig)
  end
  T.eq(t.RSDP:sub(1, 8), "RSD PTR ")
  T.eq(byte_sum(t.RSDP, 1, 20), 0, "RSDP checksum")
  T.eq(byte_sum(t.RSDP, 1, 36), 0, "RSDP extended checksum")
  for _, sig in ipairs { "XSDT", "RSDT", "FACP", "DSDT", "APIC" } do
    T.eq(byte_sum(t[sig], 1, #t[sig]), 0, sig .. " checksum")
    T.eq(string.unpack("<I4", t[sig], 5), #t[sig], sig .. " length")
  end
  T.ok(t.DSDT:find("LNRO0005", 1, true), "virtio-mmio in the DSDT")
  T.ok(t.DSDT:find("QEMU0002", 1, true), "fw_cfg in the DSDT")
  local off = mb.machine { memory = "16M" }
  T.raises(function() off:acpi_tables() end, "acpi: off")
  T.raises(function() mb.machine { acpi = 1 } end, "acpi")
end)

-- Real-mode bytes: mov dx, 0x604; mov ax, SLP_EN | 5 << 10; out dx, ax; hlt
local s5_guest = "\xba\x04\x06\xb8\x00\x34\xef\xf4"

T.case("acpi_pm: a device of the machine, its state in a snapshot file, S5 after mb.restore", function()
  local code, snap = os.tmpname(), os.tmpname()
  local f = assert(io.open(code, "wb")); f:write(s5_guest); f:close()
  local m = mb.machine { memory = "1M", acpi = true }
  local pm = m:device("acpi_pm")
  T.ok(pm and m:devices()[1] == pm, "m:device and m:devices list it")
  T.eq(pm.kind, "acpi_pm")
  T.eq(pm:info().ranges[1].base, 0x600, "PM1a_EVT_BLK")
  T.eq(pm:info().ranges[1].size, 6, "PM1a_EVT + PM1a_CNT")
  T.raises(function() m:add(pm) end, "already part of a machine")
  T.raises(function() pm:set_state { cnt = 0x2000 } end, "cnt")
  T.raises(function() pm:set_state { en = 0x10000 } end, "en")
  pm:set_state { en = 0x0120 }
  m:boot_flat { file = code, at = 0x7c00, mode = "real" }
  m:snapshot { file = snap }
  local r = m:run { timeout = 10 }
  T.eq(r.reason, "shutdown", tostring(r.message))
  T.eq(pm:state().sleeps, 1, "SLP_EN writes")
  local m2 = mb.restore { file = snap }
  T.eq(#m2:devices(), 1, "one acpi_pm after restore")
  T.eq(m2:device("acpi_pm"):state().en, 0x0120, "PM1_EN from the file")
  local r2 = m2:run { timeout = 10 }
  T.eq(r2.reason, "shutdown", "S5 after mb.restore: " .. tostring(r2.message))
  T.eq(#mb.machine { memory = "1M" }:devices(), 0, "no acpi_pm without acpi")
  m:close(); m2:close()
  os.remove(code); os.remove(snap)
end)

T.case("acpi: iasl -d disassembles every table without errors", function()
  if not os.execute("command -v iasl >/dev/null 2>&1") then
    return T.skip("iasl", "iasl not installed (apt-get install acpica-tools)")
  end
  local m = mb.machine { memory = "64M", cpus = 2, irqchip = "kernel", acpi = true }
  m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "null" })
  m:add(mb.virtio_rng {})
  m:add(mb.virtio_rng { name = "rng2" })
  m:add(mb.fw_cfg {})
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local dsl = {}
  for sig, data in pairs(m:acpi_tables()) do
    -- iasl 20200925 reads no bare RSDP (no standard header): checked above
    if sig ~= "RSDP" then
      local f = assert(io.open(dir .. "/" .. sig .. ".dat", "wb"))
      f:write(data)
      f:close()
      local p = assert(io.popen("cd " .. dir .. " && iasl -d " .. sig .. ".dat 2>&1; echo rc=$?"))
      local out = p:read("a")
      p:close()
      T.ok(out:find("rc=0\n", 1, true), sig .. ": iasl exit status: " .. out)
      T.ok(not out:lower():find("error") and not out:lower():find("warning"),
        sig .. ": iasl complains: " .. out)
      local g = io.open(dir .. "/" .. sig .. ".dsl")
      dsl[sig] = g and g:read("a") or ""
      if g then g:close() end
    end
  end
  os.execute("rm -rf " .. dir)
  T.ok(dsl.DSDT:find('EisaId ("PNP0501")', 1, true), "COM1: " .. dsl.DSDT)
  T.ok(dsl.DSDT:find('Device (VR01)', 1, true), "second virtio device")
  T.ok(dsl.DSDT:find('Name (_HID, "QEMU0002")', 1, true), "fw_cfg")
  T.ok(dsl.DSDT:find("Name (\\_S5, Package (0x04)", 1, true), "_S5")
  T.ok(dsl.APIC:find("Local Apic ID : 01", 1, true), "second CPU in the MADT")
  T.ok(dsl.FACP:find("PM1A Control Block Address : 00000604", 1, true), "PM1a_CNT")
end)

T.case("fw_cfg: a tiny guest reads a file and the directory by DMA", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  m:add(mb.fw_cfg { files = { ["opt/moonbox/hello"] = "hello from fw_cfg" } })
  m:boot_flat { file = T.guest("fw_cfg"), mode = "protected" }
  T.run(m, "exit", 0)
  T.eq(m:read(0x3000, 16), ("hello from fw_cfg"):sub(1, 16))
  local dir = m:read(0x4000, 132)
  T.eq(string.unpack(">I4", dir), 2, "two files: ours and etc/e820")
  T.eq(string.unpack(">I4", dir, 5), 17, "size")
  T.eq(string.unpack(">I2", dir, 9), 0x20, "select")
  T.eq(dir:sub(13, 29), "opt/moonbox/hello")
  T.eq(dir:sub(64 + 13, 64 + 20), "etc/e820")
  T.eq(string.unpack(">I4", dir, 64 + 5), 20 * 3, "e820: RAM, the legacy hole, RAM above it")
end)

T.case("fw_cfg: options are checked", function()
  local dir = os.tmpname()
  local f = assert(io.open(dir, "wb")); f:write("from a file"); f:close()
  local m = mb.machine { memory = "16M" }
  m:add(mb.fw_cfg { files = { ["opt/f"] = { file = dir } } })
  os.remove(dir)
  T.raises(function() mb.fw_cfg { files = 1 } end, "files: expected a table")
  T.raises(function() mb.fw_cfg { files = { ["opt/x"] = 5 } } end, 'files["opt/x"]: expected')
  T.raises(function() mb.fw_cfg { files = { [("n"):rep(60)] = "" } } end, "is not 1-55 bytes")
  T.raises(function() mb.fw_cfg { files = { ["opt/y"] = { path = "x" } } } end, "path")
  local m2 = mb.machine { memory = "16M" }
  T.raises(function() m2:add(mb.fw_cfg { files = { ["opt/z"] = { file = "/nonexistent/x" } } }) end,
    "/nonexistent/x")
end)

T.case("smp: Linux on several CPUs needs the kernel irqchip", function()
  local m = mb.machine { memory = "16M", cpus = 2 }
  T.raises(function() m:boot_linux { kernel = "/nonexistent/bzImage" } end,
    'cpus: 2 CPUs need irqchip = "kernel"')
  T.raises(function() m:boot_pvh { kernel = "/nonexistent/vmlinux" } end, "INIT/SIPI")
end)

T.case("mptable: written for 2 CPUs with the kernel irqchip, found at 0xf0000", function()
  local m = mb.machine { memory = "16M", cpus = 2, irqchip = "kernel" }
  local k = os.tmpname()
  -- no kernel to load: the tables go first, the loader then fails
  pcall(function() m:boot_linux { kernel = k } end)
  os.remove(k)
  local fp = m:read(0xf0000, 16)
  T.eq(fp:sub(1, 4), "_MP_")
  T.eq(byte_sum(fp, 1, 16), 0, "floating pointer checksum")
  local at = string.unpack("<I4", fp, 5)
  local hdr = m:read(at, 44)
  T.eq(hdr:sub(1, 4), "PCMP")
  local len = string.unpack("<I2", hdr, 5)
  T.eq(byte_sum(m:read(at, len), 1, len), 0, "table checksum")
end)

T.case("cpuid: vendor and family from Lua, as the guest sees them", function()
  local m = mb.machine { memory = "16M", cpuid = { vendor = "AuthenticAMD", family = 25 } }
  local _, b, c, d = m:cpuid(0)
  T.eq(string.pack("<I4I4I4", b, d, c), "AuthenticAMD", "the policy")
  T.eq((m:cpuid(1) >> 8) & 0xf, 15)
  T.eq((m:cpuid(1) >> 20) & 0xff, 10, "extended family: 25 - 15")
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("cpuid"), mode = "protected" }
  T.run(m, "exit", 0)
  local eax = string.unpack("<I4", m:read(0x200c, 4))
  T.eq(m:read(0x2000, 12), "AuthenticAMD", "the guest's CPUID")
  T.eq((eax >> 8) & 0xf, 15)
  T.eq((eax >> 20) & 0xff, 10)
  T.raises(function() mb.machine { cpuid = { vendor = "AMD" } } end, "cpuid.vendor")
  T.raises(function() mb.machine { cpuid = { family = 271 } } end, "cpuid.family")
end)

T.done()
