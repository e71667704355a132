-- Process start to the guest's first command output (issue 15's boot
-- goal): the default boot (PVH vmlinux placed by the VMM, root on a
-- virtio-blk disk) against the old one (bzImage, which decompresses
-- itself, and the initramfs, which the kernel unpacks), each a fresh
-- `moonbox machines/linux.lua` process, runs alternating so host noise
-- hits both. Wall time is taken on the /proc/uptime clock from just before
-- the process is started to the line the guest's command prints; CPU time
-- is the process's user+sys (bash's `times`), which on hosts that emulate
-- guest kernel code is what the guest's kernel costs.
-- Usage: ./moonbox bench/boot_modes.lua [RUNS] (default 2 of each)
-- Prints one line: new_s=... old_s=... ratio=... new_cpu_s=... old_cpu_s=... cpu_ratio=...
local root = arg[0]:match("^(.*)/bench/") or "."
local runs = tonumber(arg[1]) or 2
local marker = "bench-first-output"

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end

local function boot(args)
  local cmd = string.format("bash -c '%s/moonbox %s/machines/linux.lua %s --seccomp=off " ..
    "--append \"-- echo %s\" </dev/null 2>&1; times'", root, root, args, marker)
  local t0 = uptime()
  local p = assert(io.popen(cmd, "r"))
  local first, last
  for line in p:lines() do
    line = line:gsub("\r", "")
    if not first and line == marker then first = uptime() - t0 end
    last = line
  end
  p:close()
  -- times' second line: the children's user and system time, "XmY.YYYs"
  local um, us, sm, ss = tostring(last):match("(%d+)m([%d.]+)s (%d+)m([%d.]+)s")
  local cpu = um and (um * 60 + us + sm * 60 + ss) or nil
  return first, cpu
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

local new_w, old_w, new_c, old_c = {}, {}, {}, {}
for _ = 1, runs do
  local w, c = boot("--boot pvh --rootfs disk")
  if not w then print("boot_modes: the default boot printed no " .. marker); os.exit(1) end
  new_w[#new_w + 1], new_c[#new_c + 1] = w, c or 0
  w, c = boot("--boot bzimage --rootfs initrd")
  if not w then print("boot_modes: the bzImage + initramfs boot printed no " .. marker); os.exit(1) end
  old_w[#old_w + 1], old_c[#old_c + 1] = w, c or 0
end
local nw, ow, nc, oc = median(new_w), median(old_w), median(new_c), median(old_c)
print(string.format("new_s=%.1f old_s=%.1f ratio=%.2f new_cpu_s=%.1f old_cpu_s=%.1f cpu_ratio=%.2f",
  nw, ow, nw / ow, nc, oc, oc > 0 and nc / oc or 0))
