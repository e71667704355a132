-- Boot to init: the make-deps guest on machines/linux.lua, timed from
-- process start to the /init marker, the guest's own /proc/uptime there,
-- moonbox's memory beyond guest RAM, and the emulation fallback's counts.
-- Usage: ./moonbox bench/boot.lua [irqchip]
local root = arg[0]:match("^(.*)/bench/") or "."
package.cpath = root .. "/?.so;" .. package.cpath
local irqchip = arg[1] or "user"

local function uptime()
  local f = assert(io.open("/proc/uptime")); local t = f:read("n"); f:close(); return t
end
-- When this process started, on the /proc/uptime clock.
local function started()
  local f = assert(io.open("/proc/self/stat")); local s = f:read("a"); f:close()
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[20]) / 100 -- starttime, in clock ticks (USER_HZ 100)
end
local function status(key)
  local f = assert(io.open("/proc/self/status")); local s = f:read("a"); f:close()
  return tonumber(s:match(key .. ":%s*(%d+)"))
end

local t_start = started()
local marker_at
local seen = {}
local function console(bytes)
  seen[#seen + 1] = bytes
  if not marker_at and table.concat(seen):find("moonbox-guest: init", 1, true) then
    marker_at = uptime()
  end
end

-- machines/linux.lua takes any console the UART does: a function sees
-- every byte as the guest writes it.
local m = assert(loadfile(root .. "/machines/linux.lua")) {
  root = root, irqchip = irqchip, console = console, append = "-- cat /proc/uptime",
}
local r = m:run { timeout = 600 }
local out = table.concat(seen)
local guest_up = out:match("moonbox%-guest: init.-\n(%d+%.%d+) ")
local hwm = status("VmHWM") * 1024
-- What is this process's alone (shared libraries' pages count in RSS but
-- cost no more memory per VM): private pages now, guest RAM included.
local function private_kib()
  local f = io.open("/proc/self/smaps_rollup")
  if not f then return 0 end
  local s = f:read("a"); f:close()
  return tonumber(s:match("Private_Clean:%s*(%d+)") or 0) + tonumber(s:match("Private_Dirty:%s*(%d+)") or 0)
end
local touched = m:stats().memory_resident
local fb = m:fallback_counts()
local names = {}
for k in pairs(fb) do names[#names + 1] = k end
table.sort(names)
local parts = {}
for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. fb[k] end
print(string.format("boot irqchip=%s reason=%s to_init_s=%.1f guest_uptime_s=%s rss_extra_kib=%d "
  .. "private_extra_kib=%d fallback=%s",
  irqchip, r.reason, marker_at and (marker_at - t_start) or -1, guest_up or "?",
  (hwm - touched) // 1024, private_kib() - touched // 1024, table.concat(parts, ",")))
