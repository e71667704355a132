-- virtio on a real Linux guest, ONE boot (~90 s here): an ext2 image made
-- on the host with e2fsprogs on virtio-blk, plus virtio-rng, with moonbox's
-- threads under their seccomp filters (machine { seccomp = true }). The guest
-- mounts /dev/vdb, checksums a file the host put there, writes a new file,
-- syncs, unmounts, reads /dev/hwrng, powers off. The host then compares the
-- checksum and reads the guest's file back out of the image with debugfs.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end
if not sh("command -v mke2fs && command -v debugfs") then
  T.skip_all("e2fsprogs (mke2fs, debugfs) not installed")
end

-- The image: 16 MiB ext2 holding 256 KiB of random data and the script
-- the guest runs (the command line after "--" must stay short).
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/root"))
local img = dir .. "/disk.img"
assert(os.execute("head -c 262144 /dev/urandom > " .. dir .. "/root/data.bin"))
local f = assert(io.open(dir .. "/root/t.sh", "w"))
f:write([[
echo "guest-sum: $(sha256sum /m/data.bin)"
echo virtio-blk-write-ok-$((6*7)) > /m/newfile
sync
umount /m && echo guest-umount-ok
echo "serial: $(cat /sys/block/vdb/serial)"
echo "rng: $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | hexdump -v -e '16/1 "%02x"')"
]])
f:close()
local ok, out = sh("mke2fs -q -F -t ext2 -d " .. dir .. "/root " .. img .. " 16M")
assert(ok, "mke2fs: " .. out)
local _, host_sum = sh("sha256sum " .. dir .. "/root/data.bin")
host_sum = host_sum:match("^(%x+)")

local blk, rng
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, console = "buffer",
  -- moonbox's threads run confined (docs/sandbox.md): this boot is also
  -- the proof that virtio-blk and virtio-rng work under the filters
  seccomp = true,
  append = "-- mkdir /m;mount /dev/vdb /m;cp /m/t.sh /;sh /t.sh",
  setup = function(m) -- before boot_linux, which announces the devices
    blk = m:add(mb.virtio_blk { image = img, serial = "moonbox-disk-7" })
    rng = m:add(mb.virtio_rng {})
  end,
}

local t0 = os.time()
local r = m:run { timeout = 1200 }
local con = com1:output()
print(string.format("# %s after %d s, %d bytes of console", r.reason, os.time() - t0, #con))

local function has(s)
  if not con:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. con:sub(-2000), 2)
  end
end

T.case("the boot ran under seccomp: moonbox's threads filtered, the script's not", function()
  local filtered, free = T.thread_filters()
  -- vCPU, event loop, two blk workers (and KVM's kernel worker)
  T.ok(filtered >= 4, filtered .. " filtered threads")
  T.eq(#free, 0, "threads left free besides the script's: " .. table.concat(free, " "))
end)

T.case("the guest found both devices and ran the script", function()
  has("moonbox-guest: init")
  has("virtio_blk")
  has("moonbox-guest: cmd-exit=0")
  T.eq(r.reason, "halt", "poweroff -f halts: " .. tostring(r.message))
end)

T.case("a host file read through virtio-blk has the host's checksum", function()
  has("guest-sum: " .. host_sum)
end)

T.case("the guest's write reached the image (debugfs)", function()
  has("guest-umount-ok")
  local ok2, got = sh("debugfs -R 'cat /newfile' " .. img)
  T.ok(ok2, "debugfs: " .. got)
  T.ok(got:find("virtio-blk-write-ok-42", 1, true), "newfile in the image: " .. got)
end)

T.case("GET_ID serial and /dev/hwrng bytes", function()
  has("serial: moonbox-disk-7")
  local hex = con:match("rng: (%x+)")
  T.ok(hex and #hex == 32, "16 random bytes from virtio-rng: " .. tostring(hex))
  T.ok(rng:state().stats.bytes >= 16, "rng device counted its bytes")
end)

T.case("doorbells came through ioeventfd, not MMIO exits", function()
  local s = blk:state()
  print(string.format("# blk: %d requests, %d bytes, %d doorbells (%d as MMIO exits), %d interrupts, ioeventfd %s",
    s.stats.requests, s.stats.bytes, s.stats.notifications, s.stats.mmio_notifications,
    s.stats.interrupts, tostring(s.ioeventfd)))
  T.ok(s.stats.requests > 10, "requests served")
  T.ok(s.stats.bytes_read >= 262144, "the file was read")
  T.ok(s.stats.bytes_written > 0, "the guest wrote")
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  if s.ioeventfd then T.eq(s.stats.mmio_notifications, 0, "no MMIO doorbells") end
  local vs = m:virtio_stats()
  T.eq(vs.devices, 3, "three virtio devices (the root disk, blk, rng)")
end)

os.execute("rm -rf " .. dir)
T.done()
