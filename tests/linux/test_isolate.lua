-- Linux with devices isolated (isolate = true, docs/devproc.md), ONE boot:
-- the console UART and a virtio-blk disk each run in a moonbox-device
-- process of their own (set MB_ISOLATE_ALL=1 to isolate the PIT, RTC,
-- i8042 and port80 too: slower, every timer tick crosses). The
-- guest mounts an ext2 image on /dev/vdb, checksums a file the host put
-- there, writes one, syncs, unmounts and powers off; the host compares the
-- checksum, reads the guest's file back with debugfs, and looks at the
-- device processes from outside (/proc/PID/status). A blk.error rule on
-- sectors 32000-32007 of the isolated disk (past what the file system
-- uses) fails the guest's dd of that block: EIO and a kernel I/O error.
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

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/root"))
local img = dir .. "/disk.img"
assert(os.execute("head -c 262144 /dev/urandom > " .. dir .. "/root/data.bin"))
local f = assert(io.open(dir .. "/root/t.sh", "w"))
f:write([[
ip a add 10.0.0.1/24 dev eth0; ip l set eth0 up; echo "net-up-$((6*7))"; sleep 3
echo "guest-sum: $(sha256sum /m/data.bin)"
echo isolated-write-ok-$((6*7)) > /m/newfile
dd if=/dev/vdb of=/dev/null bs=512 skip=32000 count=8 iflag=direct 2>/dev/null; echo "dd-exit=$?"
dmesg | grep 'I/O error' | head -3
sync
umount /m && echo guest-umount-ok
]])
f:close()
local ok, out = sh("mke2fs -q -F -t ext2 -d " .. dir .. "/root " .. img .. " 16M")
assert(ok, "mke2fs: " .. out)
local _, host_sum = sh("sha256sum " .. dir .. "/root/data.bin")
host_sum = host_sum:match("^(%x+)")

local made = {}
local kinds = { "uart16550" }
if os.getenv("MB_ISOLATE_ALL") == "1" then
  kinds = { "uart16550", "pit8254", "rtc", "i8042", "port80" }
end
for _, kind in ipairs(kinds) do
  local make = mb[kind]
  mb[kind] = function(o)
    o.isolate = true
    local d = make(o)
    made[#made + 1] = d
    return d
  end
end

-- An isolated virtio-net too, on an mb.netpair() cable to a NIC of a guestless
-- machine that a Lua driver (tests/lua/vhost_driver.lua) runs: it gives its NIC
-- receive buffers, and once the guest says eth0 is up it sends an ARP request
-- for 10.0.0.1; the guest's ARP reply must come back.
package.path = T.root .. "/tests/lua/?.lua;" .. package.path
local D = require "vhost_driver"
local wire_a, wire_b = mb.netpair()
local peer = mb.machine { memory = "16M" }
local pnic = peer:add(mb.virtio_net { backend = wire_b, mac = "02:00:00:00:00:02" })
local drv = assert(D.new(peer, pnic, 8, 2))
local function put(qi, addr, len, flags)
  local q = drv.q[qi]
  local slot = q.avail_idx % 8
  peer:write(q.desc + 16 * slot, string.pack("<I8I4I2I2", addr, len, flags, 0))
  peer:write(q.avail + 4 + 2 * slot, string.pack("<I2", slot))
  q.avail_idx = (q.avail_idx + 1) & 0xffff
  peer:write(q.avail + 2, string.pack("<I2", q.avail_idx))
  pnic:mmio_write(0x50, qi)
end
for i = 0, 7 do put(0, 0x300000 + i * 0x1000, 2048, 2) end
local arp = "\255\255\255\255\255\255" .. "\2\0\0\0\0\2" .. "\8\6"
  .. string.pack(">I2I2BBI2", 1, 0x0800, 6, 4, 1) .. "\2\0\0\0\0\2" .. "\10\0\0\2"
  .. string.rep("\0", 6) .. "\10\0\0\1"
arp = arp .. string.rep("\0", 60 - #arp)

local blk, net
local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
  root = T.root, console = "buffer",
  append = "-- mkdir /m;mount /dev/vdb /m;cp /m/t.sh /;sh /t.sh",
  setup = function(m)
    blk = m:add(mb.virtio_blk { image = img, isolate = true })
    made[#made + 1] = blk
    net = m:add(mb.virtio_net { backend = wire_a, isolate = true, mac = "02:00:00:00:00:01" })
    made[#made + 1] = net
  end,
}

local plan = m:faults { seed = 1 }
local eio = plan:add(mb.fault.blk.error { dev = blk, op = "read", sectors = { 32000, 32007 } })
local t0 = os.time()
m:start()
for _ = 1, 9000 do -- until the guest's eth0 is up (bounded: 900 s)
  if com1:output():find("net-up-42", 1, true) then break end
  os.execute("sleep 0.1")
end
if com1:output():find("net-up-42", 1, true) then
  peer:write(0x310000, string.rep("\0", 12) .. arp) -- virtio_net_hdr_v1, then the frame
  put(1, 0x310000, 12 + #arp, 0)
end
local r = m:wait { timeout = 1200 }
local con = com1:output()
print(string.format("# %s after %d s, %d bytes of console", r.reason, os.time() - t0, #con))

local function has(s)
  if not con:find(s, 1, true) then
    error("console lacks " .. string.format("%q", s) .. "; last lines:\n" .. con:sub(-2000), 2)
  end
end

T.case("Linux booted on isolated devices and ran the script", function()
  has("moonbox-guest: init")
  has("virtio_blk")
  has("moonbox-guest: cmd-exit=0")
  T.eq(r.reason, "halt", "poweroff -f halts: " .. tostring(r.message))
end)

T.case("a host file read through the isolated virtio-blk has the host's checksum", function()
  has("guest-sum: " .. host_sum)
end)

T.case("the guest's write reached the image (debugfs)", function()
  has("guest-umount-ok")
  local ok2, got = sh("debugfs -R 'cat /newfile' " .. img)
  T.ok(ok2, "debugfs: " .. got)
  T.ok(got:find("isolated-write-ok-42", 1, true), "newfile in the image: " .. got)
end)

local function status(pid)
  local fh = io.open("/proc/" .. pid .. "/status")
  if not fh then return nil end
  local s = fh:read("a")
  fh:close()
  return s
end

T.case("the device processes: alive, each its own pid, confined (seen from /proc)", function()
  local pids = {}
  for _, d in ipairs(made) do
    local s = d:state()
    T.ok(s.isolated, tostring(d) .. " isolated")
    T.eq(s.isolated.alive, true, tostring(d) .. " alive")
    local pid = s.isolated.pid
    T.ok(pid > 0 and not pids[pid], tostring(d) .. " own pid")
    pids[pid] = true
    local st = T.ok(status(pid), "/proc/" .. pid .. "/status")
    T.ok(st:find("NoNewPrivs:%s*1"), "NoNewPrivs 1")
    T.ok(type(s.sandbox) == "string" and #s.sandbox > 0, "sandbox report")
  end
  T.eq(#made, #kinds + 2, "devices")
  local st = status(blk:state().isolated.pid)
  if st:find("Seccomp:%s*2") then
    T.ok(st:find("CapEff:%s*0+\n"), "CapEff 0")
  else
    T.skip("seccomp and capabilities of device processes", "not confined by seccomp in this build: " .. blk:state().sandbox)
  end
  local s = blk:state()
  T.ok(s.stats.bytes >= 262144, "virtio-blk bytes " .. s.stats.bytes)
end)

T.case("blk.error on the isolated disk: the guest's dd gets EIO, the kernel logs an I/O error", function()
  T.ok(con:match("dd%-exit=(%d+)") and con:match("dd%-exit=(%d+)") ~= "0",
    "dd of the faulted sectors failed: " .. tostring(con:match("dd%-exit=%d+")))
  has("I/O error, dev vdb, sector 32000")
  T.ok(plan:fired(eio) >= 1, "fired " .. plan:fired(eio))
end)

T.case("the isolated disk's doorbells were KVM ioeventfds its process waited on", function()
  local s = blk:state()
  T.eq(s.isolated.doorbells, 1, "ioeventfds registered (one queue)")
  T.eq(s.ioeventfd, true, "the process's transport waits on them")
  T.ok(s.notifications > 0, "kicks: " .. s.notifications)
  T.eq(s.mmio_notifications, 0, "kicks that crossed as MMIO writes")
end)

T.case("the isolated NIC: the guest answered the peer's ARP request through it", function()
  local q, got = drv.q[0], {}
  local idx = string.unpack("<I2", peer:read(q.used + 2, 2))
  for i = 0, idx - 1 do
    local id, len = string.unpack("<I4I4", peer:read(q.used + 4 + 8 * (i % 8), 8))
    local fr = peer:read(0x300000 + id * 0x1000 + 12, len - 12)
    got[#got + 1] = fr
  end
  local reply
  for _, fr in ipairs(got) do
    if fr:sub(13, 14) == "\8\6" and fr:byte(22) == 2 then reply = fr end
  end
  local function dump(t)
    local o = {}
    for k, v in pairs(t) do
      o[#o + 1] = type(v) == "table" and (k .. "={" .. dump(v) .. "}") or (k .. "=" .. tostring(v))
    end
    return table.concat(o, " ")
  end
  T.ok(reply, string.format("an ARP reply among the %d frames the peer received (peer tx used %d; "
    .. "peer %s; isolated %s)", #got, string.unpack("<I2", peer:read(drv.q[1].used + 2, 2)),
    dump(pnic:state()), dump(net:state())))
  T.eq(reply:sub(1, 6), "\2\0\0\0\0\2", "to the peer")
  T.eq(reply:sub(23, 28), "\2\0\0\0\0\1", "from the isolated NIC's MAC")
  T.eq(reply:sub(29, 32), "\10\0\0\1", "for 10.0.0.1")
  local s = net:state().isolated
  T.eq(s.alive, true)
  T.eq(s.doorbells, 2, "rx and tx doorbells are KVM ioeventfds")
end)

os.execute("rm -rf " .. dir)
T.done()
