-- moonbox-device --vhost-user (cli/vhostserve.c): moonbox's own virtio-blk
-- and virtio-rng served as vhost-user back-ends, driven by moonbox's own
-- front-end (mb.vhost_user) and the fake driver of the front-end's tests
-- (tests/lua/vhost_driver.lua), no guest. Reads and writes are checked
-- against the image file; the back-end is killed with SIGKILL and started
-- again, on a socket path and spawned on a bound socket (--fd=3).
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
package.path = T.root .. "/tests/lua/?.lua;" .. package.path
local D = require "vhost_driver"

local dev_bin = T.bin .. "/moonbox-device"
-- Under a sanitizer the runtime reads /proc (its maps; LeakSanitizer the
-- task list at exit), which the spawned back-end's Landlock domain denies:
-- the ASan build of moonbox-device died at its first request in 8 cases.
-- Allow /proc read-only there; the normal run keeps the default sandbox.
local SB = os.getenv("MB_SANITIZER") and { ro = { "/proc" } } or nil
if not io.open(dev_bin) then T.skip_all(dev_bin .. " not built") end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)\n$"))
  return rc, out:gsub("rc=%d+\n$", "")
end

T.case("--print-capabilities: the conventions' JSON, exit 0", function()
  local rc, out = sh(dev_bin .. " --vhost-user blk --print-capabilities")
  T.eq(rc, 0, "exit status")
  T.ok(out:find('"type": "block"', 1, true), "type block: " .. out)
  T.ok(out:find('"read-only"', 1, true) and out:find('"blk-file"', 1, true),
    "the schema's block features")
  rc, out = sh(dev_bin .. " --vhost-user rng --print-capabilities --socket-path=/x")
  T.eq(rc, 0, "other options ignored")
  T.ok(out:find('"type": "rng"', 1, true), "type rng: " .. out)
  rc, out = sh(dev_bin .. " --vhost-user gpu --socket-path=/tmp/x")
  T.eq(rc, 2, "an unknown type fails early")
  T.ok(out:find('"gpu" is not blk, rng, console or net', 1, true), out)
  rc, out = sh(dev_bin .. " --vhost-user blk --blk-file=/nonexistent --socket-path=/tmp/x")
  T.eq(rc, 1, "a missing image fails early")
  local tmp = os.tmpname()
  assert(os.execute("head -c 4096 /dev/zero > " .. tmp))
  rc, out = sh(dev_bin .. " --vhost-user blk --blk-file=" .. tmp .. " --fd=0 </dev/null")
  os.remove(tmp)
  T.ok(rc ~= 0 and out:find("not a Unix stream socket", 1, true), "--fd must be a socket: " .. out)
end)

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local img, sock = dir .. "/disk.img", dir .. "/blk.sock"
assert(os.execute("head -c 4194304 /dev/urandom > " .. img))

local function file_at(off, len)
  local f = assert(io.open(img, "rb"))
  f:seek("set", off)
  local s = f:read(len)
  f:close()
  return s
end

local function alive(p)
  local f = io.open("/proc/" .. p .. "/stat")
  if not f then return false end
  local st = f:read("a"):match("^%d+ %b() (%a)")
  f:close()
  return st ~= nil and st ~= "Z"
end

local function start_backend(extra)
  os.remove(sock)
  local p = assert(io.popen(string.format(
    "%s --vhost-user blk --socket-path=%s --blk-file=%s %s >>%s/dev.log 2>&1 & echo $!",
    dev_bin, sock, img, extra or "", dir)))
  local pid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 500 do
    if os.execute("test -S " .. sock) then return pid end
    D.sleep(0.01)
  end
  error("moonbox-device did not create " .. sock)
end

local pid = start_backend()
local m = mb.machine { memory = "16M" }
local blk, drv

T.case("socket: handshake, protocol features, config", function()
  blk = m:add(mb.vhost_user { type = "blk", socket = sock })
  local s = blk:state()
  T.eq(s.connected, true, "connected")
  T.eq(blk:mmio_read(0x8), 2, "DeviceID block")
  T.ok(s.backend_features >> 32 & 1 == 1, "VERSION_1 offered")
  T.ok(s.backend_features >> 30 & 1 == 1, "PROTOCOL_FEATURES offered")
  -- MQ, REPLY_ACK, CONFIG, INFLIGHT_SHMFD, RESET_DEVICE, CONFIGURE_MEM_SLOTS, STATUS
  T.eq(s.protocol_features, 0x1b209, string.format("protocol features 0x%x", s.protocol_features))
  T.eq(s.max_mem_slots, 32, "GET_MAX_MEM_SLOTS")
  T.eq(#s.queues, 1, "one queue (GET_QUEUE_NUM 1)")
  T.eq(blk:mmio_read(0x100), 4194304 // 512, "capacity through GET_CONFIG")
  T.eq(blk:mmio_read(0x100 + 20), 512, "blk_size")
end)

T.case("socket: reads and writes match the image file", function()
  local why
  drv, why = D.new(m, blk)
  T.ok(drv, "driver up: " .. tostring(why))
  local s = blk:state()
  T.eq(drv.status, 15, "DRIVER_OK, no NEEDS_RESET")
  T.eq(s.running, true, "rings handed over")
  T.eq(s.mem_slots, 1, "RAM by ADD_MEM_REG")
  T.eq(s.inflight_region, true, "GET_INFLIGHT_FD: the back-end's region held")
  local st, data = drv:blk(0, 8, 4096)
  T.eq(st, 0, "read status")
  T.eq(data, file_at(8 * 512, 4096), "read equals the file")
  local pat = string.rep("moonbox-backend-", 256)
  T.eq(drv:blk(1, 100, pat), 0, "write status")
  T.eq(file_at(100 * 512, 4096), pat, "the file holds it")
  st, data = drv:blk(0, 100, 4096)
  T.eq(data, pat, "read back")
  for _ = 1, 100 do
    if blk:mmio_read(0x60) & 1 == 1 then break end
    D.sleep(0.01)
  end
  T.eq(blk:mmio_read(0x60) & 1, 1, "the call eventfd raised InterruptStatus")
  blk:mmio_write(0x64, 1)
  -- a reset on the same connection: GET_VRING_BASE, RESET_DEVICE, rings again
  drv = assert(D.new(m, blk))
  st, data = drv:blk(0, 100, 4096)
  T.eq(st, 0, "read after a device reset")
  T.eq(data, pat, "same data")
  T.eq(blk:state().mem_slots, 1, "no region added twice")
end)

T.case("socket: kill -9 and a restart on the same path, I/O goes on", function()
  os.execute("kill -9 " .. pid)
  for _ = 1, 200 do
    if not blk:state().connected then break end
    D.sleep(0.01)
  end
  pid = start_backend()
  -- with the inflight region held the front-end reconnects by itself
  local pat = string.rep("after-restart!", 293):sub(1, 4096)
  local st = drv:blk(1, 300, pat, 20)
  T.eq(st, 0, "write after the restart")
  T.eq(file_at(300 * 512, 4096), pat, "in the file")
  local s = blk:state()
  T.eq(s.needs_reset, false, "the driver saw nothing: " .. tostring(s.fault))
  T.ok(s.reconnects >= 1, "reconnected: " .. s.reconnects)
  local data
  st, data = drv:blk(0, 8, 4096, 20)
  T.eq(data, file_at(8 * 512, 4096), "read after the restart")
end)

m:close()
os.execute("kill -9 " .. pid .. " 2>/dev/null")

T.case("spawn: --fd=3 (a bound socket), kill -9, started again by the front-end", function()
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "blk", name = "mbd0", spawn = {
    dev_bin, "--vhost-user", "blk", "--fd=3", "--blk-file=" .. img } })
  local s = dev:state()
  T.ok(s.pid > 0 and alive(s.pid), "back-end running, pid " .. s.pid)
  local f = assert(io.open("/proc/" .. s.pid .. "/status"))
  local status = f:read("a")
  f:close()
  T.ok(status:find("\nSeccomp:%s+2\n"), "it runs under a seccomp filter")
  T.ok(status:find("\nNoNewPrivs:%s+1\n"), "with no_new_privs")
  T.ok(status:find("\nCapEff:%s+0+\n"), "and no capabilities")
  local d = assert(D.new(m2, dev))
  local st, data = d:blk(0, 300, 4096)
  T.eq(st, 0, "read")
  T.eq(data, file_at(300 * 512, 4096), "what the other back-end wrote")
  local old = s.pid
  os.execute("kill -9 " .. old)
  D.sleep(0.05)
  local pat = string.rep("S", 2048)
  st = d:blk(1, 400, pat, 20)
  T.eq(st, 0, "write through the new back-end")
  T.eq(file_at(400 * 512, 2048), pat, "in the file")
  s = dev:state()
  T.eq(s.spawns, 2, "started again")
  T.ok(s.pid ~= old and alive(s.pid), "a new pid")
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  m2:close()
  local gone = false
  for _ = 1, 500 do
    if not alive(s.pid) then gone = true break end
    D.sleep(0.01)
  end
  T.ok(gone, "the back-end dies with its machine")
end)

T.case("copy mode (dma = \"copy\") over moonbox-device: kill -9 between requests is invisible", function()
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "blk", dma = "copy", spawn = {
    dev_bin, "--vhost-user", "blk", "--fd=3", "--blk-file=" .. img } })
  T.eq(dev:state().backend_features >> 1 & 1, 1, "SIZE_MAX offered")
  T.eq(dev:mmio_read(0x100 + 8), 4096, "size_max lowered to a bounce slot by the front-end")
  local d = assert(D.new(m2, dev))
  local pat = string.rep("copy-over-mbd", 316):sub(1, 4096)
  T.eq(d:blk(1, 800, pat), 0, "write")
  T.eq(file_at(800 * 512, 4096), pat, "in the file")
  local old = dev:state().pid
  os.execute("kill -9 " .. old)
  D.sleep(0.05)
  local st, data = d:blk(0, 800, 4096, 20)
  T.eq(st, 0, "the next read completes on a restarted back-end")
  T.eq(data, pat, "with the data")
  local s = dev:state()
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  T.eq(s.spawns, 2, "started again")
  m2:close()
end)

T.case("shared + INFLIGHT_SHMFD: kill -9 with a write in flight, the restarted back-end resubmits it", function()
  local m2 = mb.machine { memory = "16M" }
  -- --delay-ms=1000: each request waits 1 s in the back-end, taken from
  -- the avail ring and marked in its inflight region meanwhile.
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "blk", spawn = { dev_bin, "--vhost-user", "blk",
    "--fd=3", "--delay-ms=1000", "--blk-file=" .. img } })
  local d = assert(D.new(m2, dev))
  T.eq(dev:state().inflight_region, true, "GET_INFLIGHT_FD: region held")
  T.eq(d:blk(0, 0, 512, 20), 0, "a first read (1 s)")
  local old = dev:state().pid
  os.execute(string.format("(sleep 0.4; kill -9 %d) &", old))
  local pat = string.rep("inflight", 512)
  local st, why = d:blk(1, 900, pat, 20)
  T.eq(st, 0, "the write in flight completes: " .. tostring(why))
  local s = dev:state()
  T.eq(s.spawns, 2, "back-end started again")
  T.ok(s.pid ~= old, "new pid")
  T.eq(s.needs_reset, false, "the driver saw nothing: " .. tostring(s.fault))
  T.eq(s.resubmitted, 1, "the region marked one request in flight at the crash")
  T.eq(file_at(900 * 512, 4096), pat, "the write reached the file")
  local data
  st, data = d:blk(0, 900, 4096, 20)
  T.eq(data, pat, "reads back")
  m2:close()
end)

T.case("spawn: --read-only refuses writes, offers VIRTIO_BLK_F_RO", function()
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "blk", spawn = {
    dev_bin, "--vhost-user", "blk", "--fd=3", "--read-only", "--blk-file=" .. img } })
  T.eq(dev:state().backend_features >> 5 & 1, 1, "VIRTIO_BLK_F_RO")
  local d = assert(D.new(m2, dev))
  local before = file_at(500 * 512, 512)
  local st = d:blk(1, 500, string.rep("R", 512))
  T.ok(st ~= 0, "write refused: status " .. tostring(st))
  T.eq(file_at(500 * 512, 512), before, "the file is unchanged")
  m2:close()
end)

T.case("spawn: --num-queues=2: MQ, two queues served", function()
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "blk", spawn = {
    dev_bin, "--vhost-user", "blk", "--fd=3", "--num-queues=2", "--blk-file=" .. img } })
  local s = dev:state()
  T.eq(s.backend_features >> 12 & 1, 1, "VIRTIO_BLK_F_MQ")
  T.eq(#s.queues, 2, "two queues from num_queues")
  local d = assert(D.new(m2, dev, 8, 2))
  for qi = 0, 1 do
    local hdr = string.pack("<I4I4I8", 0, 0, 8)
    local len, out = d:request(qi, { hdr }, 512 + 1)
    T.eq(len, 513, "queue " .. qi .. ": used length")
    T.eq(out:sub(1, 512), file_at(8 * 512, 512), "queue " .. qi .. ": data")
    T.eq(out:byte(513), 0, "queue " .. qi .. ": status OK")
  end
  m2:close()
end)

T.case("rng: bytes from the back-end", function()
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { sandbox = SB, type = "rng", spawn = {
    dev_bin, "--vhost-user", "rng", "--fd=3" } })
  T.eq(dev:mmio_read(0x8), 4, "DeviceID entropy")
  local d = assert(D.new(m2, dev))
  local len, out = d:request(0, {}, 64)
  T.eq(len, 64, "used length")
  T.ok(out ~= string.rep("\0", 64), "not zeros")
  local len2, out2 = d:request(0, {}, 64)
  T.eq(len2, 64, "second request")
  T.ok(out2 ~= out, "different bytes")
  m2:close()
end)


-- Conformance against QEMU: its vhost-user-blk front-end (microvm, TCG:
-- KVM-accelerated QEMU stops on the kernel's int3 self-test on this host,
-- docs/kvm-here.md) boots the default guest from the initramfs; the guest
-- reads the disk moonbox-device serves and writes a pattern, the host
-- compares. microvm's own virtio_mmio.device= would land after "--"
-- (in the guest's command), so it is off and the device named by hand:
-- microvm puts the first virtio-mmio device at 0xfeb00e00, IRQ 12.
local qemu = "/usr/bin/qemu-system-x86_64"
local guest = T.root .. "/.cache/guest"
local function qemu_skip()
  if not io.open(qemu) then return "qemu-system-x86_64 not installed (package qemu-system-x86)" end
  if not io.open(guest .. "/bzImage") then return "no guest kernel (make deps)" end
end

-- Boot QEMU on socket qs with the guest command cmd; returns the console
-- text once the guest printed its exit marker (or after limit seconds).
local function qemu_boot(qs, cmd, limit, extra, poll, device)
  local con = dir .. "/qemu-con.log"
  os.remove(con)
  local append = "console=ttyS0 earlyprintk=ttyS0 pci=off reboot=t panic=-1 i8042.noaux " ..
    "noxsave tsc=reliable acpi=off virtio_mmio.device=512@0xfeb00e00:12 -- " .. cmd
  local p = assert(io.popen(string.format(
    "exec %s -M microvm,acpi=off,auto-kernel-cmdline=off,memory-backend=mem -accel tcg " ..
    "-m 256M -object memory-backend-memfd,id=mem,size=256M,share=on " ..
    "-chardev socket,id=c,path=%s%s -device %s,chardev=c " ..
    "-kernel %s/bzImage -initrd %s/initramfs.cpio -append '%s' -display none " ..
    "-serial file:%s -no-reboot >>%s/qemu.log 2>&1 </dev/null & echo $!",
    qemu, qs, extra or "", device or "vhost-user-blk", guest, guest, append, con, dir)))
  local qpid = tonumber(p:read("l"))
  p:close()
  local t0, text = os.time(), ""
  while os.time() - t0 < limit do
    local f = io.open(con)
    text = f and f:read("a") or ""
    if f then f:close() end
    if text:find("cmd-exit=", 1, true) then break end
    if poll and text:find("\ngo", 1, true) then poll() end
    D.sleep(0.1)
  end
  os.execute("kill -9 " .. qpid .. " 2>/dev/null")
  return text, os.time() - t0
end

T.case("QEMU's vhost-user-blk (microvm, TCG) boots the guest on it: reads and writes verified", function()
  local qs = dir .. "/qemu.sock"
  assert(os.execute("yes qemu-conformance | head -c 65536 > " .. dir .. "/qpat"))
  local p = assert(io.popen(string.format(
    "exec %s --vhost-user blk --socket-path=%s --blk-file=%s >>%s/dev.log 2>&1 & echo $!",
    dev_bin, qs, img, dir)))
  local bpid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 500 do
    if os.execute("test -S " .. qs) then break end
    D.sleep(0.01)
  end
  local _, want = sh("head -c 65536 " .. img .. " | sha256sum")
  local con, secs = qemu_boot(qs, "echo r=$(head -c65536 /dev/vda|sha256sum);" ..
    "yes qemu-conformance|head -c65536|dd of=/dev/vda bs=4096 seek=600 conv=fsync;" ..
    "echo w=$(dd if=/dev/vda bs=4096 skip=600 count=16|sha256sum)", 120)
  print(string.format("# QEMU (TCG) boot to the guest's exit: %d s", secs))
  os.execute("kill -9 " .. bpid .. " 2>/dev/null")
  T.ok(con:find("virtio_blk virtio0: [vda] 8192 512-byte logical blocks", 1, true),
    "the guest sees the 4 MiB disk: " .. con:sub(-1500))
  T.ok(con:find("moonbox-guest: cmd-exit=0", 1, true), "the guest's commands succeeded")
  T.ok(con:find("r=" .. want:match("^(%x+)"), 1, true), "what the guest read is the file's start")
  local _, pat = sh("sha256sum " .. dir .. "/qpat")
  T.ok(con:find("w=" .. pat:match("^(%x+)"), 1, true), "the guest read its write back")
  local rc, out = sh(string.format("cmp -n 65536 -i %d:0 %s %s/qpat", 600 * 4096, img, dir))
  T.eq(rc, 0, "cmp: the file holds the guest's write " .. out)
  local qlog = io.open(dir .. "/qemu.log")
  local qtext = qlog and qlog:read("a") or ""
  if qlog then qlog:close() end
  T.ok(not qtext:find("vhost", 1, true), "QEMU reported no vhost error: " .. qtext)
end, qemu_skip())


T.case("QEMU's vhost-user-rng (microvm, TCG): the guest's /dev/hwrng reads come from moonbox-device", function()
  local qs = dir .. "/qrng.sock"
  local p = assert(io.popen(string.format(
    "exec %s --vhost-user rng --socket-path=%s >>%s/dev.log 2>&1 & echo $!", dev_bin, qs, dir)))
  local rpid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 500 do
    if os.execute("test -S " .. qs) then break end
    D.sleep(0.01)
  end
  os.remove(dir .. "/qemu.log")
  local con = qemu_boot(qs, "cat /sys/class/misc/hw_random/rng_current;" ..
    "echo a=$(head -c32 /dev/hwrng|sha256sum);echo b=$(head -c32 /dev/hwrng|sha256sum)", 60,
    nil, nil, "vhost-user-rng")
  os.execute("kill -9 " .. rpid .. " 2>/dev/null")
  T.ok(con:find("\nvirtio_rng.0", 1, true), "the guest's current hwrng is the virtio one")
  T.ok(con:find("moonbox-guest: cmd-exit=0", 1, true), "its reads succeeded: " .. con:sub(-800))
  local a, b = con:match("a=(%x+)"), con:match("b=(%x+)")
  T.ok(a and b and a ~= b, "two reads differ")
  local f = io.open(dir .. "/qemu.log")
  local qtext = f and f:read("a") or ""
  if f then f:close() end
  T.ok(not qtext:find("warning", 1, true), "QEMU had nothing to warn about: " .. qtext)
end, qemu_skip())

T.case("QEMU's vhost-user net (microvm, TCG): the guest's frames reach a moonbox driver and back", function()
  local qs, cable = dir .. "/qnet.sock", dir .. "/qcable.sock"
  -- A: QEMU's back-end, listening on the cable; B: moonbox's, on the other end
  local p = assert(io.popen(string.format(
    "exec %s --vhost-user net --socket-path=%s --net-socket=%s --net-listen >>%s/dev.log 2>&1 & echo $!",
    dev_bin, qs, cable, dir)))
  local apid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 500 do
    if os.execute("test -S " .. qs) then break end
    D.sleep(0.01)
  end
  local m3 = mb.machine { memory = "16M" }
  local b = m3:add(mb.vhost_user { sandbox = SB, type = "net", spawn = { dev_bin, "--vhost-user", "net",
    "--fd=3", "--net-socket=" .. cable } })
  local db = assert(D.new(m3, b, 8, 2))
  os.remove(dir .. "/qemu.log")
  local mac = "\x52\x54\x00\x00\x00\x42"
  local got, sent
  local con = qemu_boot(qs, "ip link set eth0 up;ip addr add 10.0.2.15/24 dev eth0;echo go;" ..
    "ping -c 2 10.0.2.2 >/dev/null 2>&1;sleep 2;" ..
    "echo rx=$(cat /sys/class/net/eth0/statistics/rx_packets)", 60, nil, function()
      if got then return end
      -- the guest's ARP requests for 10.0.2.2 (broadcast) come out at B
      for _ = 1, 3 do
        local n, data = db:request(0, {}, 1526, 10)
        if not n then break end
        if data:sub(13 + 6, 12 + 12) == mac then got = data:sub(13, n) break end
      end
      -- and a broadcast frame from B goes into the guest
      local frame = string.rep("\xff", 6) .. "\x52\x54\x00\x00\x00\x0b\x88\xb5" ..
        string.rep("to-the-guest", 5)
      sent = db:request(1, { string.rep("\0", 12) .. frame }, 1) == 0
      got = got or false
    -- QEMU's virtio-mmio is legacy by default: the 10-byte header (moonbox's
    -- front-end on the other side is modern: 12)
    end, "virtio-net-device,netdev=n0,mac=52:54:00:00:00:42 -netdev vhost-user,id=n0")
  m3:close()
  os.execute("kill -9 " .. apid .. " 2>/dev/null")
  local f = io.open(dir .. "/qemu.log")
  local qtext = f and f:read("a") or ""
  if f then f:close() end
  T.ok(con:find("moonbox-guest: cmd-exit=0", 1, true), "the guest's commands ran: " .. con:sub(-800) ..
    qtext)
  T.ok(got, "a frame from the guest's MAC reached the moonbox driver")
  T.ok(got and got:sub(13, 14) == "\x08\x06", "an ARP request (ethertype 0x0806)")
  T.ok(sent, "a frame sent back")
  local rx = tonumber(con:match("rx=(%d+)"))
  T.ok(rx and rx >= 1, "the guest received it: rx_packets " .. tostring(rx))
end, qemu_skip())

T.case("QEMU reconnects (chardev reconnect=1) after kill -9 of moonbox-device during guest I/O", function()
  local qs = dir .. "/qemu2.sock"
  assert(os.execute("yes qemu-reconnect | head -c 1048576 > " .. dir .. "/qpat2"))
  local function backend()
    local p = assert(io.popen(string.format(
      "MOONBOX_VHOST_VERBOSE=1 exec %s --vhost-user blk --socket-path=%s --delay-ms=50 --blk-file=%s " ..
      ">>%s/dev2.log 2>&1 & echo $!", dev_bin, qs, img, dir)))
    local bp = tonumber(p:read("l"))
    p:close()
    for _ = 1, 500 do
      if os.execute("test -S " .. qs) then break end
      D.sleep(0.01)
    end
    return bp
  end
  local bpid = backend()
  -- The kill comes from a shell 250 ms after the guest's "go" (the write
  -- of 1 MiB is under way then); a new back-end listens 0.3 s later.
  local con = dir .. "/qemu-con.log"
  os.remove(con)
  local killer = assert(io.popen(string.format(
    "for i in $(seq 1 3000); do grep -q '^go' %s 2>/dev/null && break; sleep 0.01; done; " ..
    "sleep 0.25; grep -c cmd-exit %s; kill -9 %d", con, con, bpid)))
  local text = qemu_boot(qs, "echo go;yes qemu-reconnect|head -c1048576|" ..
    "dd of=/dev/vda bs=64k oflag=direct;for i in 1 2 3 4;do " ..
    "echo s$i=$(dd if=/dev/vda bs=64k count=16 iflag=direct|sha256sum);done", 120,
    ",reconnect=1", function() -- while QEMU runs: restart once the old one is gone
      if killer then
        local before = killer:read("l")
        killer:close()
        killer = nil
        T.eq(tonumber(before), 0, "killed before the guest's commands ended")
        D.sleep(0.3)
        bpid = backend()
      end
    end)
  D.sleep(0.3) -- its stats line at QEMU's hang-up
  os.execute("kill -9 " .. bpid .. " 2>/dev/null")
  T.ok(text:find("moonbox-guest: cmd-exit=0", 1, true), "the guest's commands succeeded: " ..
    text:sub(-1500))
  T.ok(not text:find("I/O error", 1, true), "no I/O error in the guest")
  local _, sum = sh("sha256sum " .. dir .. "/qpat2")
  for i = 1, 4 do
    T.ok(text:find("s" .. i .. "=" .. sum:match("^(%x+)"), 1, true), "read " .. i .. " gives the pattern")
  end
  local rc, out = sh(string.format("cmp -n 1048576 %s %s/qpat2", img, dir))
  T.eq(rc, 0, "cmp: the file holds the guest's write " .. out)
  local f = io.open(dir .. "/dev2.log")
  local log2 = f and f:read("a") or ""
  if f then f:close() end
  -- every request waits 50 ms in the back-end (--delay-ms): the kill lands
  -- on one in flight, which the new back-end finds in QEMU's inflight
  -- region (QEMU keeps it across the reconnect and sends it back)
  local stats = log2:match("[^\n]*connection ended[^\n]*resubmitted") or ""
  print("# " .. stats)
  local resub = tonumber(log2:match("(%d+) resubmitted"))
  T.ok(resub and resub >= 1, "the restarted back-end resubmitted what was in flight: " .. stats)
end, qemu_skip())


T.case("console: transmitq to the back-end's stdout, its stdin to receiveq", function()
  local cs = dir .. "/con.sock"
  local f = assert(io.open(dir .. "/con.in", "w"))
  f:write("typed-into-stdin\n")
  f:close()
  local p = assert(io.popen(string.format(
    "exec %s --vhost-user console --socket-path=%s <%s/con.in >%s/con.out 2>>%s/dev.log & echo $!",
    dev_bin, cs, dir, dir, dir)))
  local cpid = tonumber(p:read("l"))
  p:close()
  for _ = 1, 500 do
    if os.execute("test -S " .. cs) then break end
    D.sleep(0.01)
  end
  local m2 = mb.machine { memory = "16M" }
  local dev = m2:add(mb.vhost_user { type = "console", socket = cs })
  T.eq(dev:mmio_read(0x8), 3, "DeviceID console")
  T.eq(#dev:state().queues, 2, "receiveq and transmitq")
  local d = assert(D.new(m2, dev, 8, 2))
  local len = d:request(1, { "hello from the driver\n" }, 1)
  T.eq(len, 0, "transmit buffers come back with length 0 (5.3.6.2)")
  local out
  for _ = 1, 100 do
    local g = io.open(dir .. "/con.out")
    out = g and g:read("a")
    if g then g:close() end
    if out and #out > 0 then break end
    D.sleep(0.01)
  end
  T.eq(out, "hello from the driver\n", "the back-end wrote it to stdout")
  local n, data = d:request(0, {}, 64)
  T.eq(n, 17, "receive: used length is the input's")
  T.eq(data:sub(1, 17), "typed-into-stdin\n", "stdin reached the receive buffer")
  m2:close()
  os.execute("kill -9 " .. cpid .. " 2>/dev/null")
end)


T.case("net: two back-ends on a SOCK_SEQPACKET cable, a frame from one driver to the other", function()
  local cable = dir .. "/cable.sock"
  local m2 = mb.machine { memory = "16M" }
  local a = m2:add(mb.vhost_user { sandbox = SB, type = "net", name = "neta", spawn = { dev_bin,
    "--vhost-user", "net", "--fd=3", "--net-socket=" .. cable, "--net-listen",
    "--mac=52:54:00:00:00:0a" } })
  local m3 = mb.machine { memory = "16M" }
  local b = m3:add(mb.vhost_user { sandbox = SB, type = "net", name = "netb", spawn = { dev_bin,
    "--vhost-user", "net", "--fd=3", "--net-socket=" .. cable, "--mac=52:54:00:00:00:0b" } })
  T.eq(a:mmio_read(0x8), 1, "DeviceID network")
  T.eq(a:state().backend_features >> 5 & 1, 1, "VIRTIO_NET_F_MAC")
  T.eq(b:mmio_read(0x100) & 0xff, 0x52, "mac[0] in the config")
  T.eq(b:mmio_read(0x104) >> 8 & 0xff, 0x0b, "mac[5]: the --mac given")
  T.eq(b:mmio_read(0x104) >> 16 & 1, 1, "status: link up (the cable is connected)")
  local da = assert(D.new(m2, a, 8, 2))
  local db = assert(D.new(m3, b, 8, 2))
  local frame = string.rep("\xff", 6) .. "\x52\x54\x00\x00\x00\x0a" .. "\x88\xb5" ..
    string.rep("moonbox-frame!", 8)
  local len = da:request(1, { string.rep("\0", 12) .. frame }, 1)
  T.eq(len, 0, "transmitted")
  local n, data = db:request(0, {}, 1526)
  T.eq(n, 12 + #frame, "received: header and frame")
  T.eq(string.unpack("<I2", data, 11), 1, "num_buffers 1")
  T.eq(data:sub(13, 12 + #frame), frame, "the frame as sent")
  m2:close()
  m3:close()
end)

local log = io.open(dir .. "/dev.log")
if log then
  local text = log:read("a")
  log:close()
  T.ok(not text:find("sandbox:", 1, true), "no sandbox failure in the back-end log: " .. text)
  T.ok(not text:find("connection ended", 1, true), "no connection dropped: " .. text)
end
os.execute("rm -rf " .. dir)
T.done()
