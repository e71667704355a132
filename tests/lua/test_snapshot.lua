-- Snapshots with the tiny counting guest (tests/guests/snap_count.S): in
-- memory (restore gives the same output, counter and registers, 50 times
-- over, copying back only dirty pages), to a file restored in a new moonbox
-- process, and the refusals (running machine, other machine, corrupt or
-- truncated file, a Lua device).
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local COUNT = 0x300000

local function machine(console)
  local m = mb.machine { memory = "16M" }
  local com1 = m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = console or "buffer" })
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("snap_count"), mode = "protected" }
  return m, com1
end

local function count(m) return string.unpack("<I4", m:read(COUNT, 4)) end

T.case("in memory: restore gives the same output, counter and registers", function()
  local m, com1 = machine()
  T.run(m, "exit", 8)
  local s = m:snapshot()
  local regs = m:regs()
  local mark = #com1:output()
  T.run(m, "exit", 16)
  T.run(m, "exit", 24)
  local first = com1:output():sub(mark + 1)
  T.eq(count(m), 24, "counter after two more checkpoints")
  local _, st = m:restore(s)
  T.eq(count(m), 8, "counter back at the snapshot")
  T.eq(m:regs().rip, regs.rip, "rip back at the snapshot")
  T.ok(st.dirty_only, "only dirty pages copied back")
  T.ok(st.pages_copied > 0 and st.pages_copied < 64, "pages copied: " .. st.pages_copied)
  mark = #com1:output()
  T.run(m, "exit", 16)
  T.run(m, "exit", 24)
  T.eq(com1:output():sub(mark + 1), first, "output after the restore")
  T.eq(count(m), 24, "counter")
end)

T.case("50 restores in a loop give the same state each time", function()
  local m, com1 = machine()
  T.run(m, "exit", 8)
  local s = m:snapshot()
  local want_regs = m:regs()
  local mark = #com1:output()
  T.run(m, "exit", 16)
  local want = com1:output():sub(mark + 1)
  for i = 1, 50 do
    m:restore(s)
    T.eq(count(m), 8, "counter after restore " .. i)
    local r = m:regs()
    for _, k in ipairs { "rip", "rsp", "rax", "rflags", "cr0" } do
      T.eq(r[k], want_regs[k], k .. " after restore " .. i)
    end
    mark = #com1:output()
    T.run(m, "exit", 16)
    T.eq(com1:output():sub(mark + 1), want, "output after restore " .. i)
  end
end)

T.case("pages moonbox wrote (m:write) go back too, restore after restore", function()
  local m = machine()
  T.run(m, "exit", 8)
  local s = m:snapshot()
  local far = 0xc00000 -- a page the guest never touches
  for i = 1, 3 do
    m:write(far, "moonbox " .. i)
    m:write(COUNT, string.pack("<I4", 1000 + i))
    local _, st = m:restore(s)
    T.ok(st.dirty_only, "dirty only, restore " .. i)
    T.eq(m:read(far, 9), string.rep("\0", 9), "page written by m:write is zero again " .. i)
    T.eq(count(m), 8, "counter back " .. i)
  end
  local _, st = m:restore(s) -- nothing written since: nothing to copy
  T.eq(st.pages_copied, 0, "a restore right after a restore copies nothing")
end)

T.case("refusals: running machine, another machine, a Lua device in a file", function()
  local m = machine()
  T.run(m, "exit", 8)
  local s = m:snapshot()
  local m2 = machine()
  T.raises(function() m2:restore(s) end, "another machine")
  local spin = mb.machine { memory = "16M" }
  spin:boot_flat { file = T.guest("spin"), mode = "protected" }
  local ss = spin:snapshot()
  spin:start()
  T.raises(function() spin:snapshot() end, "pause it first")
  T.raises(function() spin:restore(ss) end, "pause it first")
  spin:pause()
  spin:restore(ss)
  local m3 = machine()
  m3:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 }, write = function() end })
  T.raises(function() m3:snapshot { file = os.tmpname() } end, "mark is an mb.device")
  T.raises(function() m3:snapshot() end, "mark is an mb.device")
  m3:snapshot { ignore = { "mark" } }
  local m4 = mb.machine { memory = "16M" }
  m4:add(mb.uart16550 { port = 0x3f8, console = function() end })
  T.raises(function() m4:snapshot { file = os.tmpname() } end, "console is a function")
end)

local function tmp(name) return os.tmpname() .. "-" .. name end

T.case("to a file, restored in a new moonbox process", function()
  local m, com1 = machine()
  T.run(m, "exit", 8)
  local file = tmp("snap")
  m:snapshot { file = file }
  local mark = #com1:output()
  T.run(m, "exit", 16)
  local want = com1:output():sub(mark + 1)
  local script, out = tmp("restore.lua"), tmp("out")
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local m = mb.restore { file = %q, consoles = { com1 = "buffer" } }
local r = m:run { timeout = 20 }
local o = assert(io.open(%q, "w"))
o:write(r.reason, " ", r.exit_code, "\n", m:device("com1"):output())
o:close()
]], T.root, file, out))
  f:close()
  T.ok(os.execute(T.root .. "/moonbox " .. script), "second process ran")
  local got = assert(io.open(out)):read("a")
  T.eq(got, "exit 16\n" .. want, "the new process's guest goes on")
  -- A flipped byte in the payload, then a cut file: refused, saying why.
  local data = assert(io.open(file, "rb")):read("a")
  local bad = tmp("bad")
  local pos = #data - 5000
  local flipped = string.char(data:byte(pos) ~ 0x40)
  assert(io.open(bad, "wb")):write(data:sub(1, pos - 1) .. flipped .. data:sub(pos + 1)):close()
  T.raises(function() mb.restore { file = bad } end, "checksum mismatch")
  assert(io.open(bad, "wb")):write(data:sub(1, #data - 100)):close()
  T.raises(function() mb.restore { file = bad } end, "truncated")
  assert(io.open(bad, "wb")):write("not a snapshot at all, just some text here"):close()
  T.raises(function() mb.restore { file = bad } end, "not a moonbox snapshot")
  T.raises(function() mb.restore { file = file, consoles = { com9 = "null" } } end,
    "com9 is not a device")
  os.remove(bad); os.remove(file); os.remove(script); os.remove(out)
end)

-- A disk overlay in a snapshot file (tests/guests/snap_disk.S): the guest
-- writes sector 1 through the overlay, the machine is saved to a file
-- there, and a new moonbox process restores it and lets the guest read
-- sector 1 back: the written data, from the file's KEPT record; the image
-- still holds what it held.
T.case("a disk overlay's written blocks in a snapshot file, read back in a new process", function()
  local img, file = tmp("disk.img"), tmp("disk.snap")
  local base = "base-image-sector-one-0000000000" .. string.rep("\0", 480)
  assert(io.open(img, "wb")):write(string.rep("\0", 512) .. base .. string.rep("\0", 65536 - 1024)):close()
  local m = mb.machine { memory = "16M" }
  m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "buffer" })
  m:add(mb.debug_exit { port = 0xf4 })
  local disk = m:add(mb.virtio_blk { image = img, disk = "overlay", mmio = { base = 0xd0000000, size = 0x1000 } })
  m:boot_flat { file = T.guest("snap_disk"), mode = "protected" }
  T.run(m, "exit", 1)
  m:snapshot { file = file }
  local script, out = tmp("restore.lua"), tmp("out")
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local m = mb.restore { file = %q, consoles = { com1 = "buffer" } }
local r = m:run { timeout = 20 }
local o = assert(io.open(%q, "w"))
o:write(r.reason, " ", tostring(r.exit_code), "\n", m:device("com1"):output())
o:close()
]], T.root, file, out))
  f:close()
  T.ok(os.execute(T.root .. "/moonbox " .. script), "second process ran")
  local got = assert(io.open(out)):read("a")
  T.eq(got, "exit 153\nwritten-through-the-overlay-0042\n", "the new process's guest reads the written sector")
  local data = assert(io.open(img, "rb")):read("a")
  T.eq(data:sub(513, 1024), base, "the image is unchanged")
  T.eq(#data, 65536, "image size")
  -- The same machine, in this process: the guest reads its write too.
  local r = m:run { timeout = 20 }
  T.eq(r.exit_code, 0x99, "this process's guest")
  T.ok(m:device("com1"):output():find("written-through-the-overlay-0042", 1, true), "and reads it too")
  T.eq(disk:state().writes, 1, "one write, into the overlay")
  local raw = assert(io.open(file, "rb")):read("a")
  T.ok(raw:find("KEPT", 33, true), "the file has a KEPT record")
  os.remove(img); os.remove(file); os.remove(script); os.remove(out)
end)

T.case("watchpoints and snapshots: refused while set, full copy after", function()
  local m = machine()
  T.run(m, "exit", 8)
  local s = m:snapshot()
  T.run(m, "exit", 16)
  local w = m:watch { addr = { phys = COUNT }, len = 4, access = "w" }
  T.raises(function() m:snapshot() end, "watchpoints are set")
  T.raises(function() m:restore(s) end, "watchpoints are set")
  T.run(m, "watchpoint")
  w:remove()
  local _, st = m:restore(s)
  T.eq(st.dirty_only, false, "slots were made again: a full copy")
  T.eq(count(m), 8, "counter back at the snapshot")
  T.run(m, "exit", 16)
  T.eq(count(m), 16, "counter")
  local _, st2 = m:restore(s)
  T.eq(count(m), 8, "second restore")
  T.ok(st2 ~= nil, "restore stats")
end)

T.done()
