-- The default Linux guest with two disks served by qemu-storage-daemon over
-- vhost-user, ONE boot (/dev/vda is the root disk, machines/linux.lua). /dev/vdb (shared guest RAM, socket = PATH): the
-- guest checksums its start, writes a pattern at 400 KiB (conv=fsync),
-- reads it back; the host compares the checksums and `cmp`s the image.
-- /dev/vdc (dma = "copy", spawned by moonbox): the guest writes 512 KiB and
-- reads it back three times while the host kills the back-end with SIGKILL
-- twice, each time with requests in flight (it is SIGSTOPped first until
-- some wait); every read must still give the pattern, the image hold it.
-- virtio-fs (tag "hostfs", served by Debian's virtiofsd, spawned by moonbox):
-- the guest mounts it, cats a file the host wrote and writes one the host
-- then reads.
-- /dev/vdd (moonbox's own virtio-blk served by `moonbox-device --vhost-user
-- blk`, spawned on a bound socket): the guest checksums its start and
-- writes a pattern at 200 KiB; the host compares and `cmp`s the image.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end
local qsd = "/usr/bin/qemu-storage-daemon"
if not io.open(qsd) then
  T.skip_all("qemu-storage-daemon not installed (package qemu-system-common)")
end
local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local img, sock = dir .. "/disk.img", dir .. "/blk.sock"
assert(os.execute("head -c 4194304 /dev/urandom > " .. img))
local img2 = dir .. "/copy.img"
assert(os.execute("head -c 4194304 /dev/urandom > " .. img2))
assert(os.execute("yes vdbpattern | head -c 524288 > " .. dir .. "/pat2"))
-- The pattern the guest writes: busybox `yes` output, 64 KiB.
assert(os.execute("yes moonbox-vhost | head -c 65536 > " .. dir .. "/pat"))
-- virtiofsd's own sandbox: chroot (its namespace sandbox needs user
-- namespaces, which a container may not give; docs/vhost_user.md).
local virtiofsd = "/usr/lib/qemu/virtiofsd"
local have_fs = io.open(virtiofsd) ~= nil
local fs_note = "host-file-" .. os.time()
assert(os.execute("mkdir -p " .. dir .. "/share"))
do
  local f = assert(io.open(dir .. "/share/hello", "w"))
  f:write(fs_note .. "\n")
  f:close()
end
local img3 = dir .. "/mbdev.img"
assert(os.execute("head -c 1048576 /dev/urandom > " .. img3))
assert(os.execute("cp " .. img3 .. " " .. img3 .. ".orig"))
assert(os.execute("yes moonbox-device | head -c 65536 > " .. dir .. "/pat3"))
local dev_bin = T.bin .. "/moonbox-device"
local have_mbd = io.open(dev_bin) ~= nil
local _, head_sum = sh("head -c 65536 " .. img .. " | sha256sum")
head_sum = head_sum:match("^(%x+)")

local p = assert(io.popen(string.format(
  "%s --blockdev driver=file,node-name=f0,filename=%s " ..
  "--blockdev driver=raw,node-name=d0,file=f0 " ..
  "--export type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=%s,writable=on " ..
  ">%s/qsd.log 2>&1 & echo $!", qsd, img, sock, dir)))
local pid = tonumber(p:read("l"))
p:close()
for _ = 1, 500 do
  if os.execute("test -S " .. sock) then break end
  os.execute("sleep 0.01")
end

local blk, cp, fs, mbd
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, console = "buffer",
  -- At most 32 words after "--" reach init (the kernel's MAX_INIT_ARGS):
  -- ${IFS} separates arguments inside one word.
  append = "-- echo${IFS}u=$(head${IFS}-c65536${IFS}/dev/vdd|sha256sum);" ..
    "yes${IFS}moonbox-device|head${IFS}-c65536|dd${IFS}of=/dev/vdd${IFS}bs=4096${IFS}" ..
    "seek=50${IFS}conv=fsync;echo${IFS}v=$(dd${IFS}if=/dev/vdd${IFS}bs=4096${IFS}" ..
    "skip=50${IFS}count=16|sha256sum);" ..
    "echo r=$(head -c65536 /dev/vdb|sha256sum);" ..
    "yes moonbox-vhost|head -c65536|dd of=/dev/vdb bs=4096 seek=100 conv=fsync;" ..
    "echo w=$(dd if=/dev/vdb bs=4096 skip=100 count=16|sha256sum);" ..
    "echo${IFS}vdb-$((6*7));yes${IFS}vdbpattern|head${IFS}-c524288|" ..
    "dd${IFS}of=/dev/vdc${IFS}bs=64k${IFS}oflag=direct${IFS}conv=fsync;" ..
    -- virtio-fs: one word (${IFS}), its failure does not set cmd-exit
    "mkdir${IFS}-p${IFS}/mnt;mount${IFS}-t${IFS}virtiofs${IFS}hostfs${IFS}/mnt&&" ..
    "echo${IFS}fs=$(cat${IFS}/mnt/hello)&&echo${IFS}guest-$((6*7))>/mnt/from-guest&&" ..
    "umount${IFS}/mnt&&echo${IFS}fs-done;" ..
    "for i in 1 2 3;do echo${IFS}s$i=$(dd${IFS}if=/dev/vdc${IFS}bs=64k${IFS}" ..
    "count=8${IFS}iflag=direct|sha256sum);done",
  setup = function(m) -- before boot_linux, which announces the devices
    blk = m:add(mb.vhost_user { type = "blk", socket = sock })
    cp = m:add(mb.vhost_user { type = "blk", dma = "copy", spawn = { qsd,
      "--blockdev", "driver=file,node-name=f1,filename=" .. img2,
      "--blockdev", "driver=raw,node-name=d1,file=f1",
      "--export", "type=vhost-user-blk,id=e1,node-name=d1,addr.type=fd,addr.str=3,writable=on" } })
    if have_fs then
      fs = m:add(mb.vhost_user { type = "fs", tag = "hostfs", spawn = { virtiofsd,
        "--socket-path={socket}", "-o", "source=" .. dir .. "/share", "-o", "sandbox=chroot", "-f" } })
    end
    if have_mbd then
      mbd = m:add(mb.vhost_user { type = "blk", name = "mbd0", spawn = { dev_bin,
        "--vhost-user", "blk", "--fd=3", "--blk-file=" .. img3 } })
    end
  end,
}

-- Run in 1 s slices. Once the guest starts on vdb, stop its back-end
-- (SIGSTOP) until the guest has requests waiting on it, then SIGKILL it
-- with those requests in flight; a second time 3 s after the first.
local t0, r, kills, go, stopped = os.time(), nil, 0, nil, nil
local mbd_inflight = false
while true do
  r = m:run { timeout = 1 }
  if r.reason ~= "timeout" or os.time() - t0 > 540 then break end
  -- "vdb-42" is printed by the guest (the command line has vdb-$((6*7))).
  if not go and com1:output():find("vdb-42", 1, true) then go = os.time() end
  -- (a device reset at power-off drops the region: look while it runs)
  if mbd and mbd:state().inflight_region then mbd_inflight = true end
  local s2 = cp:state()
  if go and s2.pid > 0 and kills < 2 and (kills == 0 or os.time() - go >= 3) then
    if not stopped then
      os.execute("kill -STOP " .. s2.pid)
      stopped = os.time()
    elseif s2.in_flight > 0 or os.time() - stopped > 5 then
      print(string.format("# SIGKILL with %d requests in flight", s2.in_flight))
      os.execute("kill -9 " .. s2.pid)
      kills, stopped = kills + 1, nil
    end
  end
end
local con = com1:output()
print(string.format("# %s after %d s, %d bytes of console, %d kills", r.reason, os.time() - t0,
  #con, kills))

local function has(s)
  if not con:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. con:sub(-2000), 2)
  end
end

T.case("the guest found the vhost-user disk and ran the script", function()
  has("virtio_blk")
  has("moonbox-guest: cmd-exit=0")
  T.eq(r.reason, "halt", "poweroff -f halts: " .. tostring(r.message))
end)

T.case("what the guest read is the image's content", function()
  has("r=" .. head_sum)
end)

T.case("the guest's write reached the image file (cmp)", function()
  local _, pat_sum = sh("sha256sum " .. dir .. "/pat")
  has("w=" .. pat_sum:match("^(%x+)"))
  local ok, out = sh(string.format("cmp -n 65536 -i 409600:0 %s %s/pat", img, dir))
  T.ok(ok, "cmp: " .. out)
end)

T.case("the back-end served it: no fault, interrupts through the call eventfd", function()
  local s = blk:state()
  print(string.format("# vhost-user: %d messages, %d calls, %d interrupts, ioeventfd %s",
    s.messages, s.calls, s.interrupts, tostring(s.ioeventfd)))
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  T.ok(s.calls >= 3 and s.interrupts >= 3, "calls from the back-end became interrupts")
end)

T.case("copy mode: two SIGKILLs of the back-end during guest I/O are invisible", function()
  local _, sum = sh("sha256sum " .. dir .. "/pat2")
  sum = sum:match("^(%x+)")
  for i = 1, 3 do has("s" .. i .. "=" .. sum) end
  local ok, out = sh(string.format("cmp -n 524288 %s %s/pat2", img2, dir))
  T.ok(ok, "cmp: " .. out)
  local s = cp:state()
  print(string.format("# copy: %d spawns, %d reconnects, %d requests re-submitted",
    s.spawns, s.reconnects, s.resubmitted))
  T.eq(kills, 2, "killed twice during the guest's I/O")
  T.ok(s.resubmitted >= 1, "requests in flight at a crash were submitted again")
  T.ok(s.spawns >= 3, "started again after each kill: " .. s.spawns)
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  T.ok(not con:find("I/O error", 1, true), "no I/O error in the guest")
end)

T.case("virtio-fs: the guest cats a host file and writes one the host reads", function()
  has("fs=" .. fs_note)
  has("fs-done")
  local f = io.open(dir .. "/share/from-guest")
  local got = f and f:read("a")
  if f then f:close() end
  T.eq(got, "guest-42\n", "the file the guest wrote, seen on the host")
  local s = fs:state()
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
end, not have_fs and "virtiofsd not installed (qemu-system-common)" or nil)

T.case("moonbox-device --vhost-user blk: the guest reads and writes its disk (cmp)", function()
  local _, sum = sh("head -c 65536 " .. img3 .. ".orig | sha256sum")
  has("u=" .. sum:match("^(%x+)"))
  local _, pat_sum = sh("sha256sum " .. dir .. "/pat3")
  has("v=" .. pat_sum:match("^(%x+)"))
  local ok, out = sh(string.format("cmp -n 65536 -i 204800:0 %s %s/pat3", img3, dir))
  T.ok(ok, "cmp: " .. out)
  local s = mbd:state()
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  T.eq(mbd_inflight, true, "the back-end's inflight region was held while the guest ran")
  T.ok(s.calls >= 3, "completions came through the call eventfd: " .. s.calls)
end, not have_mbd and (dev_bin .. " not built") or nil)

m:close()
os.execute("kill -9 " .. pid .. " 2>/dev/null")
os.execute("rm -rf " .. dir)
T.done()
