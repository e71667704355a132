-- bench/virtio.lua: virtio-blk throughput in a Linux guest (one boot).
-- A raw image on /dev/shm is the guest's /dev/vdc; busybox dd moves it in
-- 1 MiB blocks with O_DIRECT (sequential write, then read) and in 4 KiB
-- blocks (read IOPS at queue depth 1: busybox has no random-offset reader
-- short of one dd process per block). The guest prints a marker line
-- before and after each dd; the host notes the time (/proc/uptime, 10 ms)
-- and m:stats() when the marker reaches the console, so rates include one
-- dd start-up (a few guest system calls) and exits per MiB are exact.
--   ./moonbox bench/virtio.lua [MiB]     (default 64)
local mb = require "moonbox"
local root = arg[0]:match("^(.*)/bench/") or "."
local mib = tonumber(arg[1]) or 64
local n4k = 2048
if not io.open(root .. "/.cache/guest/bzImage") then
  print("bench/virtio.lua: no guest kernel (make deps): skipped")
  os.exit(0)
end

local dir = (io.open("/dev/shm") and "/dev/shm" or "/tmp") .. "/moonbox-bench-virtio-" .. os.time()
assert(os.execute("mkdir -p " .. dir .. "/root"))
local disk = dir .. "/disk.raw"
assert(os.execute(string.format("truncate -s %dM %s", mib + 16, disk)))
local f = assert(io.open(dir .. "/root/b.sh", "w"))
for _, t in ipairs {
  { "write", "if=/dev/zero of=/dev/vdc bs=1M count=" .. mib .. " oflag=direct" },
  { "read", "if=/dev/vdc of=/dev/null bs=1M count=" .. mib .. " iflag=direct" },
  { "read4k", "if=/dev/vdc of=/dev/null bs=4k count=" .. n4k .. " iflag=direct" },
} do
  f:write("echo BENCH-BEGIN ", t[1], "\ndd ", t[2], " 2>/dev/null\necho BENCH-END ", t[1], "\n")
end
f:close()
assert(os.execute("mke2fs -q -F -t ext2 -d " .. dir .. "/root " .. dir .. "/script.img 2M >/dev/null 2>&1"))


local function uptime()
  local u = assert(io.open("/proc/uptime"))
  local t = u:read("n")
  u:close()
  return t
end

local m, blk
local full, pending, marks = {}, "", {}
local function console(bytes)
  full[#full + 1] = bytes
  pending = pending .. bytes
  for line in pending:gmatch("([^\n]*)\n") do
    local kind, name = line:match("^BENCH%-(%u+) (%w+)")
    if kind then
      local s, b = m:stats(), blk:state().stats
      marks[name] = marks[name] or {}
      marks[name][kind] = { t = uptime(), exits = s.exits, mmio = s.mmio_exits, bytes = b.bytes,
        notif = b.notifications, irqs = b.interrupts }
    end
  end
  pending = pending:match("[^\n]*$")
end
m = assert(loadfile(root .. "/machines/linux.lua")) {
  root = root, console = console, append = "-- mkdir /m;mount /dev/vdb /m;sh /m/b.sh",
  setup = function(m)
    m:add(mb.virtio_blk { image = dir .. "/script.img", readonly = true })
    blk = m:add(mb.virtio_blk { image = disk })
  end,
}
local t0 = os.time()
local r = m:run { timeout = 1200 }
local out = table.concat(full)
os.execute("rm -rf " .. dir)

print(string.format("\nvirtio-blk in a Linux guest (%s irqchip, image on %s, %d MiB, run ended: %s after %d s)",
  "user", dir:match("^/[^/]+/[^/]+"), mib, r.reason, os.time() - t0))
print(string.format("%-34s %12s %12s %14s %12s", "metric", "moonbox", "QEMU", "exits/MiB", "doorbells/MiB"))
local failed = false
local function row(label, name, unit)
  local mk = marks[name]
  if not mk or not mk.BEGIN or not mk.END or mk.END.bytes == mk.BEGIN.bytes then
    print(string.format("%-34s %12s", label, "FAILED"))
    failed = true
    return
  end
  local moved = (mk.END.bytes - mk.BEGIN.bytes) / 1048576
  local secs = math.max(mk.END.t - mk.BEGIN.t, 0.01)
  local v = unit == "MB/s" and moved / secs or moved * 256 / secs
  local exits = (mk.END.exits - mk.BEGIN.exits) / math.max(moved, 1e-9)
  local notif = (mk.END.notif - mk.BEGIN.notif) / math.max(moved, 1e-9)
  print(string.format("%-34s %12.1f %12s %14.1f %12.1f", label .. " (" .. unit .. ")", v,
    "n/a", exits, notif))
end
row("sequential write, 1 MiB O_DIRECT", "write", "MB/s")
row("sequential read, 1 MiB O_DIRECT", "read", "MB/s")
row("4 KiB reads, QD1 O_DIRECT", "read4k", "IOPS")
if failed then print("console tail:\n" .. out:sub(-1500)) end
print("QEMU: not installed on this host, no comparison (MB/s here is MiB/s).")
print("exits/MiB: every KVM exit of the vCPU while the transfer ran (timer, console, ISR/ACK")
print("registers); doorbells go through KVM_IOEVENTFD and cause none.")
