-- Where the default guest's boot spends its time: boots machines/linux.lua
-- in slices of wall time (m:run with a short timeout), reads vCPU 0's rip
-- at the end of each slice and names the function it is in from the
-- kernel build's System.map. On hosts that emulate guest kernel mode a
-- slice's end falls where the emulated kernel spends its time, so the
-- counts are a profile of the boot; host load scales them all alike,
-- unlike timestamps (guest/README.md "Where the boot's time goes").
--   ./moonbox bench/boot_profile.lua [slice_ms=30] [top=25] [max_s=S] [callers=N] [OPT=VALUE...]
-- OPT=VALUE go to machines/linux.lua (memory=128M, irqchip=kernel,
-- boot=bzimage, append=...). Prints the top functions before `Run /init`
-- (kernel) and from it to the first command output (user: the CPL 3 part
-- shows as "(user)"), each with its share of that phase's samples;
-- max_s=S stops after S seconds of wall time with what it has. callers=N
-- also names, for the N first kernel functions, where they were called
-- from: the first kernel text address in the 8 words at the sampled rsp
-- (for a leaf function, its return address; otherwise a guess, since the
-- guest kernel has no frame pointers). from=TEXT to=TEXT profile one stretch
-- of the boot: samples are taken only once the console has shown TEXT of
-- from=, and the run ends when it shows to= (text the kernel's own command
-- line echo does not contain, or it matches at once).
local root = arg[0]:match("^(.*)/bench/") or "."
local opts = { root = root, console = "buffer", seccomp = false }
local slice, top, append, max_s, ncallers = 0.03, 25, "", math.huge, 0
local from, to -- the stretch to profile (console text), or the whole boot
for i = 1, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k then error("boot_profile: expected OPT=VALUE, got " .. arg[i], 0) end
  if k == "slice_ms" then slice = assert(tonumber(v), "slice_ms: a number") / 1000
  elseif k == "top" then top = assert(tonumber(v), "top: a number")
  elseif k == "max_s" then max_s = assert(tonumber(v), "max_s: a number")
  elseif k == "callers" then ncallers = assert(tonumber(v), "callers: a number")
  elseif k == "append" then append = v .. " "
  elseif k == "from" then from = v
  elseif k == "to" then to = v
  else opts[k] = v end
end
local marker = "profile-first-output"
opts.append = append .. "-- echo " .. marker

local map = os.getenv("MB_SYSTEM_MAP") or (root .. "/.cache/build/linux-6.1/System.map")
local syms = {}
local f = io.open(map)
if not f then print("boot_profile: no " .. map .. " (run make deps)"); os.exit(1) end
for l in f:lines() do
  local a, t, n = l:match("^(%x+) (%a) (%S+)")
  if a and (t == "t" or t == "T" or t == "W" or t == "w") then syms[#syms + 1] = { tonumber(a, 16), n } end
end
f:close()
table.sort(syms, function(x, y) return x[1] < y[1] end)
local function name(rip, phase)
  -- Lua integers wrap: kernel addresses (0xffffffff8...) are negative
  if rip >= 0 then return phase == "user" and "(user)" or "(low address: the PVH entry, before paging)" end
  local lo, hi = 1, #syms
  if rip < syms[1][1] then return "(before _text)" end
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if syms[mid][1] <= rip then lo = mid else hi = mid - 1 end
  end
  return syms[lo][2]
end

local m, com1 = loadfile(root .. "/machines/linux.lua")(opts)
local count = { kernel = {}, user = {} }
local callers = { kernel = {}, user = {} }
local text_lo, text_hi = syms[1][1], syms[#syms][1]
-- The caller of the function at the sampled rip: the first word on the
-- stack that points into kernel text (signed compare: see name()).
local function caller(cpu, regs, phase)
  if regs.rip >= 0 then return nil end
  local ok, bytes = pcall(cpu.read, cpu, regs.rsp, 64)
  if not ok or type(bytes) ~= "string" or #bytes < 64 then return nil end
  for i = 0, 7 do
    local w = string.unpack("<i8", bytes, 1 + 8 * i)
    if w < 0 and w >= text_lo and w <= text_hi then return name(w - 1, phase) end
  end
end
local total = { kernel = 0, user = 0 }
local phase, done, t0 = "kernel", false, os.time()
while not done do
  local r = m:run { timeout = slice }
  if r.reason ~= "timeout" then
    print("boot_profile: the guest stopped (" .. r.reason .. ") before " .. marker); os.exit(1)
  end
  local out = com1:output()
  if phase == "kernel" and out:find("Run /init", 1, true) then phase = "user" end
  if out:find("\n" .. marker, 1, true) or (to and out:find(to, 1, true))
      or os.time() - t0 >= max_s then done = true
  elseif not from or out:find(from, 1, true) then -- (before from=: not sampled)
    local cpu = m:cpu(0)
    local regs = cpu:regs()
    local n = name(regs.rip, phase)
    count[phase][n] = (count[phase][n] or 0) + 1
    if ncallers > 0 then
      local c = caller(cpu, regs, phase)
      if c then
        local t = callers[phase][n] or {}
        callers[phase][n] = t
        t[c] = (t[c] or 0) + 1
      end
    end
    total[phase] = total[phase] + 1
  end
end
print(string.format("boot_profile: %d kernel + %d user samples of %.0f ms, %d s wall",
  total.kernel, total.user, slice * 1000, os.time() - t0))
for _, p in ipairs { "kernel", "user" } do
  local list = {}
  for n, c in pairs(count[p]) do list[#list + 1] = { n, c } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  print(p .. ":")
  for i = 1, math.min(top, #list) do
    print(string.format("  %5d %5.1f%%  %s", list[i][2], 100 * list[i][2] / total[p], list[i][1]))
    if i <= ncallers and callers[p][list[i][1]] then
      local cl = {}
      for c, k in pairs(callers[p][list[i][1]]) do cl[#cl + 1] = { c, k } end
      table.sort(cl, function(a, b) return a[2] > b[2] end)
      for j = 1, math.min(3, #cl) do print(string.format("          <- %4d  %s", cl[j][2], cl[j][1])) end
    end
  end
end
m:close()
