-- The default Linux guest with a disk served by qemu-storage-daemon over
-- vhost-user, ONE boot: the guest checksums the start of /dev/vda, writes
-- a pattern at 400 KiB with O_SYNC-ish dd (conv=fsync), reads it back; the
-- host compares the checksums and `cmp`s the image file with the pattern.
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
-- The pattern the guest writes: busybox `yes` output, 64 KiB.
assert(os.execute("yes moonbox-vhost | head -c 65536 > " .. dir .. "/pat"))
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

local blk
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, console = "buffer",
  append = "-- echo r=$(head -c 65536 /dev/vda|sha256sum);" ..
    "yes moonbox-vhost|head -c 65536|dd of=/dev/vda bs=4096 seek=100 conv=fsync;" ..
    "echo w=$(dd if=/dev/vda bs=4096 skip=100 count=16|sha256sum)",
  setup = function(m) -- before boot_linux, which announces the devices
    blk = m:add(mb.vhost_user { type = "blk", socket = sock })
  end,
}

local t0 = os.time()
local r = m:run { timeout = 400 } -- ~30 s on a quiet host; much more when loaded
local con = com1:output()
print(string.format("# %s after %d s, %d bytes of console", r.reason, os.time() - t0, #con))

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
  T.eq(s.running, true, "running")
  T.ok(s.calls >= 3 and s.interrupts >= 3, "calls from the back-end became interrupts")
end)

m:close()
os.execute("kill -9 " .. pid .. " 2>/dev/null")
os.execute("rm -rf " .. dir)
T.done()
