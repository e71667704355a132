-- A write the guest fsynced survives SIGKILL of moonbox: Linux on KVM's
-- irqchip (virtio interrupts through irqfd) writes a file on virtio-blk,
-- fsyncs it, says so, and moonbox is killed with SIGKILL right then. The
-- host finds the file in the image with debugfs.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end
if not os.execute("command -v mke2fs >/dev/null && command -v debugfs >/dev/null") then
  T.skip_all("e2fsprogs not installed")
end

local dir = os.tmpname(); os.remove(dir)
assert(os.execute("mkdir -p " .. dir .. "/root"))
local f = assert(io.open(dir .. "/root/w.sh", "w"))
-- busybox `sync FILE...` fsyncs each: the file, and its directory (on
-- ext2 fsync of a file does not write the directory entry naming it).
f:write([[
echo killed-after-fsync-$((6*7)) > /m/synced
sync /m/synced /m
echo GUEST-FSYNCED
sleep 600
]])
f:close()
local img = dir .. "/disk.img"
assert(os.execute("mke2fs -q -F -t ext2 -d " .. dir .. "/root " .. img .. " 8M >/dev/null 2>&1"))

T.case("an fsynced write is on disk after SIGKILL (kernel irqchip, irqfd)", function()
  local log = dir .. "/console.log"
  -- The machine runs in a child process with COM1 going to a file as the
  -- guest writes it; the parent kills the child once the marker shows.
  local runner = dir .. "/run.lua"
  local r = assert(io.open(runner, "w"))
  r:write(string.format([[
local m = assert(loadfile(%q))({ root = %q, irqchip = "kernel", console = { file = %q },
  disk = %q, append = "-- mkdir /m;mount /dev/vdb /m;sh /m/w.sh" })
m:run { timeout = 1200 }
]], T.root .. "/machines/linux.lua", T.root, log, img))
  r:close()
  local p = io.popen(string.format([[
cd %s && %s/moonbox %s </dev/null >/dev/null 2>&1 &
pid=$!
for i in $(seq 1 5000); do
  grep -q GUEST-FSYNCED %s 2>/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -9 $pid 2>/dev/null; wait $pid; echo "status=$?"
]], T.root, T.bin, runner, log))
  local out = p:read("a"); p:close()
  local con = io.open(log) and io.open(log):read("a") or ""
  T.ok(con:find("GUEST-FSYNCED", 1, true), "guest reached its fsync:\n" .. con:sub(-1500))
  T.eq(out:match("status=(%d+)"), "137", "moonbox died of SIGKILL")
  local d = io.popen("debugfs -R 'cat /synced' " .. img .. " 2>/dev/null"):read("a")
  T.ok(d:find("killed-after-fsync-42", 1, true), "the fsynced file is in the image: " .. d)
end)

os.execute("rm -rf " .. dir)
T.done()
