-- Kernel loaders from Lua: a multiboot guest that checks its boot
-- information from inside (tests/guests/multiboot.S), ELF32 and ELF64
-- guests made here with string.pack, mb.bzimage_info on the kernel that
-- `make deps` builds, and every option and file error of boot_linux,
-- boot_multiboot and boot_elf.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"

local bzimage = T.root .. "/.cache/guest/bzImage"
local have_bzimage = io.open(bzimage, "rb") ~= nil
-- The reason a check of the make-deps kernel cannot run (nil when it can).
local no_bzimage = not have_bzimage and ("no " .. bzimage .. " (run make deps)") or nil
local tmp = {}
local function tmpfile(content)
  local p = os.tmpname()
  local f = assert(io.open(p, "wb"))
  f:write(content)
  f:close()
  tmp[#tmp + 1] = p
  return p
end

-- ---- no KVM needed -------------------------------------------------------

T.case("bzimage_info on the make-deps kernel", function()
  local b = mb.bzimage_info(bzimage)
  T.ok(b.version >= 0x20f, "protocol 2.15+")
  T.eq(b.kernel_64, true, "XLF_KERNEL_64")
  T.ok(b.xloadflags & 1 == 1, "xloadflags")
  T.ok(b.init_size >= b.kernel_size, "init_size covers the kernel")
  T.ok(b.cmdline_size >= 255, "cmdline_size")
  T.eq(type(b.relocatable), "boolean", "relocatable")
  T.ok(b.pref_address >= 0x100000, "pref_address")
  T.ok(b.kernel_alignment > 0, "kernel_alignment")
  T.ok(b.kernel_version:match("^%d+%.%d+"), "kernel_version " .. b.kernel_version)
end, no_bzimage)

T.case("bzimage_info errors name the file", function()
  T.raises(function() mb.bzimage_info("/nonexistent/bzImage") end,
    "bzimage_info: kernel /nonexistent/bzImage: No such file or directory")
  local junk = tmpfile(("x"):rep(4096))
  T.raises(function() mb.bzimage_info(junk) end, "kernel " .. junk .. ": not a bzImage")
  T.raises(function() mb.bzimage_info() end, "bad argument #1")
end)

-- ---- under KVM ------------------------------------------------------------

T.need_kvm()

local function machine(memory)
  local m = mb.machine { memory = memory or "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  return m
end

local module = tmpfile("moonbox module\n")

T.case("multiboot guest checks magic, cmdline, module, mmap, loader name", function()
  local m = machine()
  m:boot_multiboot { kernel = T.guest("multiboot"), cmdline = "mbtest answer=42",
    modules = { { file = module, cmdline = "mod1 key=value" } } }
  T.run(m, "exit", 0)
end)

T.case("multiboot guest linked at 0x8000 (where the info area used to be)", function()
  local m = machine()
  m:boot_multiboot { kernel = T.guest("multiboot_low"), cmdline = "mbtest answer=42",
    modules = { { file = module, cmdline = "mod1 key=value" } } }
  T.run(m, "exit", 0)
end)

T.case("machines/multiboot.lua boots the same guest from the command line", function()
  local cmd = string.format("%s/moonbox %s/machines/multiboot.lua %s --cmdline 'mbtest answer=42' " ..
    "--memory 16M --module '%s,mod1 key=value' </dev/null 2>&1; echo rc=$?", T.bin, T.root, T.guest("multiboot"), module)
  local p = io.popen(cmd); local out = p:read("a"); p:close()
  T.eq(out:match("rc=(%d+)"), "0", "exit status (" .. out .. ")")
end)

T.case("multiboot guest notices a wrong command line and module", function()
  local m = machine()
  m:boot_multiboot { kernel = T.guest("multiboot"), cmdline = "mbtest answer=41",
    modules = { { file = module, cmdline = "mod1 key=value" } } }
  T.run(m, "exit", 2)
  m = machine()
  m:boot_multiboot { kernel = T.guest("multiboot"), cmdline = "mbtest answer=42",
    modules = { { file = module } } }
  T.run(m, "exit", 6)
  m = machine()
  m:boot_multiboot { kernel = T.guest("multiboot"), cmdline = "mbtest answer=42" }
  T.run(m, "exit", 3)
end)

-- An ELF executable with one PT_LOAD segment holding code at `at`.
local function elf(bits, at, code)
  local off, eh, ph = 0x100
  if bits == 32 then
    eh = string.pack("<c4BBBBc8I2I2I4I4I4I4I4I2I2I2I2I2I2", "\127ELF", 1, 1, 1, 0, "",
      2, 3, 1, at, 52, 0, 0, 52, 32, 1, 0, 0, 0)
    ph = string.pack("<I4I4I4I4I4I4I4I4", 1, off, at, at, #code, #code + 0x100, 5, 0x1000)
  else
    eh = string.pack("<c4BBBBc8I2I2I4I8I8I8I4I2I2I2I2I2I2", "\127ELF", 2, 1, 1, 0, "",
      2, 62, 1, at, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = string.pack("<I4I4I8I8I8I8I8I8", 1, 5, off, at, at, #code, #code + 0x100, 0x1000)
  end
  return tmpfile(eh .. ph .. ("\0"):rep(off - #eh - #ph) .. code)
end
-- mov $v, %eax; mov $0xf4, %dx; out %eax, %dx; cli; hlt (same bytes in
-- 32- and 64-bit mode)
local function exit_code(v) return string.pack("<BI4", 0xb8, v) .. "\x66\xba\xf4\x00\xef\xfa\xf4" end

T.case("boot_elf: ELF32 in protected mode, ELF64 in long mode", function()
  local m = machine()
  m:boot_elf { file = elf(32, 0x200000, exit_code(0x3e1f)) }
  T.run(m, "exit", 0x3e1f)
  m = machine()
  m:boot_elf { file = elf(64, 0x300000, exit_code(0x6401)) }
  T.run(m, "exit", 0x6401)
  m = machine()
  m:boot_elf { file = elf(64, 0x300000, exit_code(0x6402)), mode = "long" }
  T.run(m, "exit", 0x6402)
  m:pause()
  local r = m:regs()
  T.ok(r.efer & 0x400 ~= 0, "long mode active")
end)

T.case("boot_linux option errors", function()
  local m = machine()
  T.raises(function() m:boot_linux {} end, "kernel: missing (the bzImage to boot)")
  T.raises(function() m:boot_linux { kernel = 1 } end, "kernel: expected a string, got number")
  T.raises(function() m:boot_linux { kernal = "x" } end, 'boot_linux: unknown option "kernal"')
  T.raises(function() m:boot_linux { kernel = "k", initrd = true } end, "initrd: expected a string, got boolean")
  T.raises(function() m:boot_linux { kernel = "k", cmdline = {} } end, "cmdline: expected a string, got table")
  T.raises(function() m:boot_linux { kernel = "k", reserved = 5 } end, "reserved: expected a list")
  T.raises(function() m:boot_linux { kernel = "k", reserved = { { base = 0xd0000000 } } } end,
    "reserved[1].size: missing")
  T.raises(function() m:boot_linux { kernel = "k", reserved = { 7 } } end,
    "reserved[1]: expected a table")
  T.raises(function() m:boot_linux "k" end, "bad argument #1")
end)

T.case("boot_linux file errors name the file and the problem", function()
  local m = machine()
  T.raises(function() m:boot_linux { kernel = "/nonexistent/bzImage" } end,
    "boot_linux: kernel /nonexistent/bzImage: No such file or directory")
  T.raises(function() m:boot_linux { kernel = T.guest("multiboot") } end,
    "boot_linux: kernel " .. T.guest("multiboot") .. ": ")
  T.raises(function() m:boot_linux { kernel = "/tmp" } end, "kernel /tmp: not a regular file")
end)

T.case("boot_linux errors with the make-deps kernel", function()
  local m = machine()
  T.raises(function() m:boot_linux { kernel = bzimage, cmdline = ("a"):rep(5000) } end,
    "cmdline: 5000 bytes is longer than the kernel's cmdline_size")
  local b = mb.bzimage_info(bzimage)
  if not b.relocatable then -- 16M is too small for where it decompresses
    T.raises(function() m:boot_linux { kernel = bzimage } end, "not relocatable: it needs RAM")
  end
  T.raises(function() m:boot_linux { kernel = bzimage, initrd = "/nonexistent/initrd" } end,
    "initrd /nonexistent/initrd: No such file or directory")
  m = machine("32M")
  local big = tmpfile(("\0"):rep(33 << 20))
  T.raises(function() m:boot_linux { kernel = bzimage, initrd = big } end,
    "initrd " .. big .. ": 34603008 bytes is larger than the machine's RAM (33554432 bytes)")
end, no_bzimage)

T.case("boot_multiboot errors", function()
  local m = machine()
  T.raises(function() m:boot_multiboot {} end, "kernel: missing")
  T.raises(function() m:boot_multiboot { kernel = "k", modules = "m" } end,
    "modules: expected a list of { file = ..., cmdline = ... }, got string")
  T.raises(function() m:boot_multiboot { kernel = "k", modules = { {} } } end, "modules[1].file: missing")
  T.raises(function() m:boot_multiboot { kernel = "k", modules = { { file = 3 } } } end,
    "modules[1].file: expected a string, got number")
  T.raises(function() m:boot_multiboot { kernel = "k", modules = { { file = "f", cmd = "x" } } } end,
    'modules[1]: unknown option "cmd"')
  T.raises(function() m:boot_multiboot { kernel = "k", modules = { "f" } } end,
    "modules[1]: expected a table")
  T.raises(function() m:boot_multiboot { kernel = T.guest("multiboot"),
    modules = { { file = module }, { file = "/nonexistent/mod" } } } end,
    "boot_multiboot: module /nonexistent/mod: No such file or directory")
  T.raises(function() m:boot_multiboot { kernel = T.guest("halt") } end,
    "boot_multiboot: kernel " .. T.guest("halt") .. ": no multiboot header in the first 8192 bytes")
end)

T.case("boot_elf errors", function()
  local m = machine()
  T.raises(function() m:boot_elf {} end, "file: missing (the ELF executable to boot)")
  T.raises(function() m:boot_elf { file = "f", mode = "real" } end,
    'mode: "real" is not one of "protected", "long"')
  T.raises(function() m:boot_elf { file = "f", at = 0 } end, 'boot_elf: unknown option "at"')
  T.raises(function() m:boot_elf { file = T.guest("halt") } end,
    "boot_elf: kernel " .. T.guest("halt") .. ": too small for an ELF header")
  T.raises(function() m:boot_elf { file = T.guest("multiboot") } end,
    "boot_elf: kernel " .. T.guest("multiboot") .. ": not an ELF file (bad magic)")
  T.raises(function() m:boot_elf { file = elf(32, 0x1000, exit_code(1)) } end,
    "overlaps the loader's area 0x500-0x7000")
  T.raises(function() m:boot_elf { file = elf(32, 0x2000000, exit_code(1)) } end,
    "is not inside one RAM region")
end)

-- The real kernel through boot_linux, as far as its first memory-map lines
-- (tests/linux boots it to init). MB_TEST_LINUX=1 runs it; tests/run.sh
-- sets that when the make-deps kernel exists.
local no_linux = no_bzimage or (os.getenv("MB_TEST_LINUX") ~= "1" and "set MB_TEST_LINUX=1 to run") or nil
T.case("Linux sees the command line and e820 map boot_linux built", function()
  local m = mb.machine { memory = "64M" }
  local out = {}
  m:add(mb.device { name = "uart", pio = { base = 0x3f8, size = 8 },
    read = function(_, off) return off == 5 and 0x60 or 0 end, -- LSR: THR empty
    write = function(_, off, _, v) if off == 0 then out[#out + 1] = string.char(v) end end })
  m:boot_linux { kernel = bzimage, cmdline = "console=ttyS0 earlyprintk=serial noapic acpi=off",
    reserved = { { base = 0xd0000000, size = 0x1000 } } }
  local s, t0 = "", os.time()
  -- a sanitizer build runs each console byte's Lua callback much slower
  local bound = os.getenv("MB_SANITIZER") and 400 or 120
  repeat
    m:run { timeout = 1 }
    s = table.concat(out)
  until s:find("bootconsole") or os.time() - t0 > bound
  T.ok(s:find("Command line: console=ttyS0 earlyprintk=serial noapic acpi=off\r?\n"), "command line")
  T.ok(s:find("BIOS%-e820: %[mem 0x0000000000000000%-0x000000000009fbff%] usable"), "low RAM")
  T.ok(s:find("BIOS%-e820: %[mem 0x000000000009fc00%-0x00000000000fffff%] reserved"), "legacy hole")
  T.ok(s:find("BIOS%-e820: %[mem 0x0000000000100000%-0x0000000003ffffff%] usable"), "high RAM")
  T.ok(s:find("BIOS%-e820: %[mem 0x00000000d0000000%-0x00000000d0000fff%] reserved"), "MMIO window")
end, no_linux)

for _, p in ipairs(tmp) do os.remove(p) end
T.done()
