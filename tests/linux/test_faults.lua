-- Fault injection against the real Linux guest, ONE boot: an ext2 image
-- (made on the host) on virtio-blk, a read-error rule on the sectors of
-- one file's first block, and a rule that never matches. The guest mounts
-- the disk and runs a script from it: cat of the file fails with EIO, a
-- direct read of the same sectors from /dev/vda fails, a direct read of
-- other sectors works, and the kernel logs "I/O error, dev vda, sector N".
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
local F = mb.fault
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  return p:close(), out
end
if not sh("command -v mke2fs && command -v debugfs") then
  T.skip_all("e2fsprogs (mke2fs, debugfs) not installed")
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/root"))
local img = dir .. "/disk.img"
assert(os.execute("head -c 65536 /dev/urandom > " .. dir .. "/root/data.bin"))
local f = assert(io.open(dir .. "/root/t.sh", "w"))
f:write([[
S=$1
cat /m/data.bin >/dev/null; echo "cat-status: $?"
dd if=/dev/vda of=/dev/null bs=512 skip=$S count=2 iflag=direct; echo "bad-status: $?"
dd if=/dev/vda of=/dev/null bs=512 skip=0 count=8 iflag=direct; echo "good-status: $?"
dmesg | grep "I/O error" | head -3
]])
f:close()
local ok, out = sh("mke2fs -q -F -t ext2 -b 1024 -d " .. dir .. "/root " .. img .. " 16M")
assert(ok, "mke2fs: " .. out)
-- The file's first block (1 KiB), as 512-byte sectors.
local _, bm = sh("debugfs -R 'bmap /data.bin 0' " .. img)
local block = assert(tonumber(bm:match("(%d+)%s*$")), "debugfs bmap: " .. bm)
local first, last = 2 * block, 2 * block + 1
print(string.format("# data.bin starts at block %d: sectors %d-%d", block, first, last))

local trace = dir .. "/run.trace"
local disk, plan, bad, never
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, console = "buffer",
  append = "-- mkdir /m;mount /dev/vda /m;sh /m/t.sh " .. first,
  setup = function(m)
    disk = m:add(mb.virtio_blk { image = img })
    plan = m:faults { seed = 42, trace = trace }
    bad = plan:add(F.blk.error { dev = disk, op = "read", sectors = { first, last } })
    never = plan:add(F.blk.error { dev = disk, op = "discard", sectors = { 30000, 30001 } })
  end,
}

local t0 = os.time()
local r = m:run { timeout = 400 }
local con = com1:output()
print(string.format("# %s after %d s, %d bytes of console", r.reason, os.time() - t0, #con))
local function has(s)
  if not con:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. con:sub(-2000), 2)
  end
end

T.case("the guest ran the script", function()
  has("moonbox-guest: cmd-exit=")
  T.eq(r.reason, "halt", tostring(r.message))
end)

T.case("a read error on a file's sectors: EIO to the reader, I/O error in dmesg", function()
  T.ok(not con:find("cat-status: 0", 1, true), "cat failed")
  has("cat-status: 1")
  has("I/O error, dev vda, sector " .. first)
end)

T.case("a direct read of the faulted sectors fails, of others works", function()
  T.ok(con:match("bad%-status: (%d+)") ~= "0", "dd of the faulted sectors failed")
  has("good-status: 0")
end)

T.case("plan:fired counts, plan:unfired names the rule that never matched", function()
  T.ok(plan:fired(bad) >= 2, "fired " .. plan:fired(bad) .. " times")
  local u = plan:unfired()
  T.eq(#u, 1)
  T.ok(u[1] == never, tostring(u[1]))
  print("# " .. plan:report():gsub("\n", "\n# "))
end)

T.case("every decision is in the trace", function()
  local n = 0
  for line in io.lines(trace) do
    if line:find('"action":"blk.error"', 1, true) then n = n + 1 end
  end
  T.eq(n, plan:fired(bad))
end)

os.execute("rm -rf " .. dir)
T.done()
