-- Fault campaign throughput on the make-deps Linux guest: a 20-trial
-- campaign of blk errors on the nth write from an in-memory snapshot (each
-- trial: restore, fault, type one short command, classify) against
-- rebooting for each trial (boot, prepare, fault, the same command). A
-- reboot costs a whole boot (~1-2 min here), so only 2 reboot trials are
-- timed and the rate is extrapolated from their mean. The first of them is
-- the boot the snapshot is taken from (it goes on to run its trial). Also
-- the in-process restore time of the booted Linux after a trial (median
-- of ten restores after a trial).
-- Usage: ./moonbox bench/campaign.lua [trials]   (prints one line)
--        ./moonbox bench/campaign.lua restore MEM   (one boot with MEM of
--        RAM: only the restore time after a trial, for the RAM-size ratio)
local root = arg[0]:match("^(.*)/bench/") or "."
package.cpath = root .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local restore_only = arg[1] == "restore"
local memory = restore_only and arg[2] or nil
local trials = tonumber(not restore_only and arg[1] or 20)

local function now()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local img = os.tmpname()
assert(io.open(img, "wb")):write(string.rep("\0", 1 << 20)):close()

local function until_seen(m, com1, pat, from, secs)
  local t0 = os.time()
  while os.time() - t0 < secs do
    local r = m:run { timeout = 0.25 }
    if r.reason ~= "timeout" then error("guest stopped: " .. r.reason, 2) end
    local at = com1:output():find(pat, from + 1, true)
    if at then return at end
  end
  error("no " .. pat .. " within " .. secs .. " s", 2)
end

-- As tests/linux/test_snapshot.lua: the disk found by serial, a function t.
local PREP = 'for d in /sys/block/*; do read s < $d/serial; [ "$s" = mbtest ] && D=/dev/${d##*/}; done; ' ..
  'N=0; t() { N=$((N+1)); echo "c=$N"; i=0; while [ $i -lt 6 ]; do echo $i >$D || break; ' ..
  'i=$((i+1)); done; echo "rc=$? end"; }; echo "disk=$D"\n'

local function boot()
  local disk
  local m, com1 = assert(loadfile(root .. "/machines/linux.lua")) {
    root = root, console = "buffer", memory = memory,
    setup = function(mm) disk = mm:add(mb.virtio_blk { image = img, disk = "overlay", serial = "mbtest" }) end,
  }
  until_seen(m, com1, "moonbox-guest: init", 0, 600)
  until_seen(m, com1, "# ", 0, 120)
  local mark = #com1:output()
  com1:input(PREP)
  until_seen(m, com1, "# ", until_seen(m, com1, "disk=/dev/vd", mark, 120), 60)
  m:pause()
  return m, com1, disk
end

local function trial(m, com1)
  local from = #com1:output()
  com1:input("t\n")
  until_seen(m, com1, " end", from, 60)
  m:pause()
  local out = com1:output():sub(from + 1)
  return out:find("rc=0 end", 1, true) and (out:find("I/O error", 1, true) and "logged" or "masked")
    or "detected"
end

local function fault(m, disk, v)
  local plan = m:faults { seed = v }
  plan:add(mb.fault.blk.error { dev = disk, op = "write", nth = v })
  return plan
end

-- Restore time after a trial (process CPU time: the restore runs on this
-- thread alone, and /proc/uptime counts in 10 ms), median of ten.
local function restore_ms(m, com1, s)
  local restores = {}
  for i = 1, 10 do
    trial(m, com1)
    local r0 = os.clock()
    m:restore(s)
    restores[i] = (os.clock() - r0) * 1000
  end
  table.sort(restores)
  return restores[6]
end

if restore_only then
  local m, com1 = boot()
  local s = m:snapshot()
  print(string.format("campaign memory=%s linux_restore_ms=%.2f", memory, restore_ms(m, com1, s)))
  m:close()
  os.remove(img)
  return
end

-- Reboot trial 1 is the snapshot's boot.
local t0 = now()
local m, com1, disk = boot()
local s = m:snapshot()
local plan = fault(m, disk, 1)
trial(m, com1)
local reboot1 = now() - t0
plan:close()

local c0 = now()
local res = mb.campaign {
  name = "bench", machine = m, base = s, space = { nth = { 1, trials } }, progress = false,
  fault = function(v, p) p:add(mb.fault.blk.error { dev = disk, op = "write", nth = v }) end,
  run = function(mm) trial(mm, com1); return { reason = "seen" } end,
  classify = function() return "done" end,
}
local campaign_s = now() - c0
-- Restore time after a trial: the campaign's own restores are not
-- visible, so time ten more around m:restore.
local restore_med = restore_ms(m, com1, s)
m:close()

local t1 = now()
local m2, c2, d2 = boot()
fault(m2, d2, 2)
trial(m2, c2)
local reboot2 = now() - t1
m2:close()
os.remove(img)

local per_reboot = (reboot1 + reboot2) / 2
print(string.format("campaign trials=%d snapshot_s=%.1f snapshot_tpm=%.1f reboot_trials=2 reboot_s=%.1f,%.1f "
  .. "reboot_tpm=%.2f ratio=%.1f linux_restore_ms=%.1f",
  res.total, campaign_s, res.total / campaign_s * 60, reboot1, reboot2, 60 / per_reboot,
  (res.total / campaign_s) / (1 / per_reboot), restore_med))
