-- Machines with Lua callbacks are collected: a Lua device (read/write
-- functions, a line, an armed timer) and UARTs with a function and a
-- "buffer" console hold nothing in the registry that leads back to their
-- machine. 200 machines made and dropped leave the registry's size as it
-- was and the process RSS about where it was.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function registry_size()
  local n = 0
  for _ in pairs(debug.getregistry()) do n = n + 1 end
  return n
end

local function rss_kb()
  local f = assert(io.open("/proc/self/statm"))
  local _, res = f:read("n", "n"); f:close()
  return res * 4
end

local function full_gc() for _ = 1, 3 do collectgarbage() end end

local alive = setmetatable({}, { __mode = "k" })

local function one()
  local m = mb.machine { memory = "1M" }
  alive[m] = true
  m:add(mb.pic8259 {})
  local d = m:add(mb.device { pio = { base = 0x510, size = 4 }, irq = 5,
    read = function(self) return m and 1 end,           -- closes over the machine
    write = function(self, _, _, v) self:irq(v & 1) end })
  d:after(3600, function(self) self:pulse() end)        -- armed when dropped
  d:every(3600, function() end):cancel()
  local seen = {}
  m:add(mb.uart16550 { com = 1, console = function(s) seen[#seen + 1] = s; return m end })
  m:add(mb.uart16550 { com = 2, console = "buffer" })
end

T.case("200 machines with Lua devices and consoles are collected", function()
  one(); full_gc() -- classes and metatables made on first use
  local reg0, rss0 = registry_size(), rss_kb()
  for i = 1, 200 do
    one()
    if i % 20 == 0 then full_gc() end
  end
  full_gc()
  local reg1, rss1 = registry_size(), rss_kb()
  print(string.format("# registry %d -> %d entries, RSS %d -> %d KiB", reg0, reg1, rss0, rss1))
  local left = 0
  for _ in pairs(alive) do left = left + 1 end
  T.eq(left, 0, "machines not collected")
  T.ok(math.abs(reg1 - reg0) <= 2, string.format("registry: %d entries, was %d", reg1, reg0))
  -- ASan's quarantine keeps freed memory (up to 256 MiB): under a
  -- sanitizer LSan's report at exit checks for leaks instead.
  local bound = os.getenv("MB_SANITIZER") and 256 * 1024 or 2 * 1024
  T.ok(rss1 - rss0 < bound, string.format("RSS grew by %d KiB", rss1 - rss0))
end)

T.case("a closed machine drops its callbacks at once", function()
  local reg0 = registry_size()
  local m = mb.machine { memory = "1M" }
  local d = m:add(mb.device { pio = { base = 0x510, size = 1 }, read = function() return 1 end })
  local t = d:after(3600, function() end)
  m:close()
  t:cancel(); T.ok(tostring(d):match("device"), "the handle survives close")
  m, d, t = nil, nil, nil
  full_gc()
  T.eq(registry_size(), reg0, "registry")
end)

T.done()
