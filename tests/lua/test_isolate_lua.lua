-- Isolated Lua devices (mb.device { isolate = true, source = | module = },
-- docs/devproc.md "Lua devices"): the tiny-guest checks of test_guests.lua's
-- Lua devices with the device in its own process, its module in a Lua
-- state of its own (no io/os/package/debug, text-only load), its interrupt
-- line, DMA in its grant and timers, its log, and its bounds: a module past
-- its instruction budget or memory ceiling, or one that never answers, is
-- a dead device the on_crash policy handles, never the VMM's problem.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local function log_of(d) return d:state().isolated.log end
local function joined(d) return table.concat(log_of(d), "\n") end

-- A module that logs every write as "w OFF SIZE VALUE" and answers reads
-- from args.answer[size] (logging "r OFF SIZE").
local RECORDER = [[
  local args = ...
  return {
    read = function(self, off, size)
      log("r", off, size)
      return args and args["a" .. size] or 0
    end,
    write = function(self, off, size, v) log("w", off, size, v) end,
  }
]]

local function machine(opts)
  local m = mb.machine(opts or { memory = "16M" })
  m:add(mb.debug_exit { port = 0xf4 })
  local mark = m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 },
    isolate = true, source = RECORDER })
  return m, mark
end

-- The values a recorder logged as "w" lines: { off, size, value } each.
local function writes(d)
  local out = {}
  for _, l in ipairs(log_of(d)) do
    local off, size, v = l:match("^w\t(%-?%d+)\t(%d+)\t(%-?%d+)$")
    if off then out[#out + 1] = { tonumber(off), tonumber(size), math.tointeger(tonumber(v)) } end
  end
  return out
end

local function marks(d)
  local s = {}
  for _, w in ipairs(writes(d)) do s[#s + 1] = string.char(w[3]) end
  return table.concat(s)
end

T.case("option errors name the key", function()
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    read = function() end, source = "return {}" } end, "read: an isolated device's functions are its module's")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true } end,
    "exactly one of module")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return {}", module = "x.lua" } end, "exactly one of module")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, source = "return {}" } end,
    "source: a module runs in a device process (give isolate = true)")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return {" } end, "source: source:1:")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    module = "/nonexistent/dev.lua" } end, "module: /nonexistent/dev.lua: No such file")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return {}", limits = { instructions = 10 } } end, "limits.instructions: 10")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return {}", limits = { cpu = 1 } } end, "unknown option \"cpu\"")
  T.raises(function() mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = string.rep(" ", 40000) .. "return {}" } end, "at most 32768")
  local m = mb.machine { memory = "16M" }
  T.raises(function() m:add(mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return 42" }) end, "module source: returned number, expected a table")
  T.raises(function() m:add(mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return { read = 1 }" }) end, "module source: read: expected a function, got number")
  T.raises(function() m:add(mb.device { pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return { init = function() error('no init') end }" }) end, "no init")
  local d = m:add(mb.device { pio = { base = 0x510, size = 1 }, isolate = true, source = "return {}" })
  T.raises(function() d:irq(true) end, "irq: device device is isolated: its module does that")
  T.raises(function() d:after(1, function() end) end, "after: device device is isolated")
  m:close()
end)

T.case("real, protected and long mode markers reach the isolated module", function()
  for _, g in ipairs { { "real", 0x7c00, 0x1016, "R" }, { "protected", 0x100000, 0x20, "P" },
                       { "long", 0x100000, 0x40, "L" } } do
    local m, mark = machine()
    m:boot_flat { file = T.guest(g[1]), at = g[2], mode = g[1] }
    T.run(m, "exit", g[3])
    T.eq(marks(mark), g[4], g[1] .. " marker")
    T.ok(mark:state().isolated.pid > 0, "in its own process")
    m:close()
  end
end)

T.case("PIO at 1, 2 and 4 bytes, in and out, isolated", function()
  local m = machine()
  local regs = m:add(mb.device { name = "regs", pio = { base = 0x520, size = 4 }, isolate = true,
    source = RECORDER, args = { a1 = 0xa1, a2 = 0xb2c3, a4 = 0xd4e5f607 } })
  local echo = m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 }, isolate = true,
    source = RECORDER })
  m:boot_flat { file = T.guest("pio"), mode = "protected" }
  T.run(m, "exit", 0)
  local w = writes(regs)
  T.eq(#w, 3, "writes")
  T.eq(w[1][2], 1); T.eq(w[1][3], 0x11)
  T.eq(w[2][2], 2); T.eq(w[2][3], 0x2233)
  T.eq(w[3][2], 4); T.eq(w[3][3], 0x44556677)
  local reads = 0
  for _, l in ipairs(log_of(regs)) do
    if l:match("^r\t") then reads = reads + 1; T.eq(l:match("^r\t(%d+)"), "0", "read offset") end
  end
  T.eq(reads, 3, "reads")
  local e = writes(echo)
  T.eq(#e, 3, "echoes")
  local answer = { [1] = 0xa1, [2] = 0xb2c3, [4] = 0xd4e5f607 }
  for i, size in ipairs { 1, 2, 4 } do
    T.eq(e[i][2], size, "echo size")
    T.eq(e[i][3], answer[size], "value the guest read at size " .. size)
  end
  m:close()
end)

T.case("string PIO (rep outsb, rep outsw, rep insb), isolated", function()
  local m = machine()
  local str = m:add(mb.device { name = "str", pio = { base = 0x530, size = 2 }, isolate = true,
    source = [[
      local n, out, words = 0, {}, {}
      return {
        read = function() n = n + 1; return 0x40 + n end,
        write = function(self, _, size, v)
          if size == 1 then out[#out + 1] = string.char(v) else words[#words + 1] = v end
          if #out == 16 and size == 1 then log("out", table.concat(out)) end
          if #words == 4 and size == 2 then log("words", words[1], words[4]) end
        end }
    ]] })
  local echo = m:add(mb.device { name = "echo", pio = { base = 0x534, size = 1 }, isolate = true,
    source = RECORDER })
  m:boot_flat { file = T.guest("strio"), mode = "protected" }
  T.run(m, "exit", 0)
  local l = joined(str)
  T.ok(l:find("out\t0123456789abcdef", 1, true), "rep outsb: " .. l)
  T.ok(l:find("words\t" .. 0x1111 .. "\t" .. 0x4444, 1, true), "rep outsw: " .. l)
  T.eq(marks(echo), "ABCDEFGH", "rep insb then outsb")
  m:close()
end)

T.case("MMIO at 1, 2, 4 and 8 bytes, isolated", function()
  local m = machine()
  local d = m:add(mb.device { name = "mmio", mmio = { base = 0xd0000000, size = 0x1000 }, isolate = true,
    source = [[
      local a = { [1] = 0x5a, [2] = 0x1234, [4] = 0x89abcdef, [8] = 0x0123456789abcdef }
      return {
        read = function(self, off, size) log("r", off, size); return a[size] end,
        write = function(self, off, size, v) log("w", off, size, v) end }
    ]] })
  m:boot_flat { file = T.guest("mmio"), mode = "long" }
  T.run(m, "exit", 0)
  local w, echoes = {}, {}
  for _, x in ipairs(writes(d)) do
    if x[1] == 0x20 then echoes[#echoes + 1] = x else w[#w + 1] = x end
  end
  T.eq(#w, 4, "writes")
  local want = { { 0, 1, 0x11 }, { 2, 2, 0x2233 }, { 4, 4, 0x44556677 }, { 8, 8, -0x7766554433221101 } }
  for i, x in ipairs(want) do
    T.eq(w[i][1], x[1], "offset " .. i); T.eq(w[i][2], x[2], "size " .. i); T.eq(w[i][3], x[3], "value " .. i)
  end
  local answer = { [1] = 0x5a, [2] = 0x1234, [4] = 0x89abcdef, [8] = 0x0123456789abcdef }
  for i, size in ipairs { 1, 2, 4, 8 } do
    T.eq(echoes[i][2], size); T.eq(echoes[i][3], answer[size], "echo at size " .. size)
  end
  for _, l in ipairs(log_of(d)) do
    if l:match("^r") then T.eq(l, "r\t16\t" .. l:match("(%d+)$"), "read offset 0x10") end
  end
  m:close()
end)

T.case("an error in the module stops the run with reason error", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit {})
  m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 }, isolate = true,
    source = "return { write = function() error('boom') end }" })
  m:boot_flat { file = T.guest("protected"), mode = "protected" }
  local r = T.run(m, "error")
  T.ok(r.message:find("boom", 1, true) and r.message:find("device mark: write", 1, true), r.message)
  m:close()
end)

T.case("a module from a file, with args; its own state: the script's upvalues are not its", function()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write([[
    local args = ...
    secret = "module's"                -- its own global, not the script's
    return { write = function(self, off, size, v)
      log(args.tag, type(script_local), type(io), type(os), type(package), type(debug),
          type(require), type(dofile), type(loadfile), type(string.dump), v)
    end }
  ]])
  f:close()
  local script_local = "the script's" -- a local and a global the module must not see
  script_global = "the script's"
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit {})
  local d = m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 }, isolate = true,
    module = path, args = { tag = "file" } })
  os.remove(path) -- read by the VMM at m:add; the process never had the path
  m:boot_flat { file = T.guest("protected"), mode = "protected" }
  T.run(m, "exit", 0x20)
  T.eq(joined(d), "file\tnil\tnil\tnil\tnil\tnil\tnil\tnil\tnil\tnil\t" .. ("P"):byte())
  T.eq(secret, nil, "the module's global stays in its state")
  T.eq(script_local .. script_global, "the script'sthe script's")
  m:close()
end)

T.case("the module cannot open files, run commands or load binary chunks", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit {})
  local d = m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 }, isolate = true,
    source = [[
      local function try(what, f, ...)
        local ok, err = pcall(f, ...)
        log(what, ok and "allowed" or "refused", tostring(err))
      end
      return { write = function()
        try("io.open", function() return io.open("/etc/passwd") end)
        try("os.execute", function() return os.execute("true") end)
        try("require", function() return require("io") end)
        try("binary", function() return assert(load("\27Lua\84\0")) end)
        try("mode b", function() return load("return 1", "x", "b") end)
        try("text", function() return assert(load("return 1 + 1"))() end)
        try("env", function() return load("return io")() end)
        -- what the process's own table of libraries still has: nothing to reach files
        try("loaded", function() return getmetatable("").__index == string end)
      end }
    ]] })
  m:boot_flat { file = T.guest("protected"), mode = "protected" }
  T.run(m, "exit", 0x20)
  local got = {}
  for _, l in ipairs(log_of(d)) do local w, r = l:match("^(.-)\t(%a+)\t"); got[w] = r end
  T.eq(got["io.open"], "refused"); T.eq(got["os.execute"], "refused"); T.eq(got["require"], "refused")
  T.eq(got["binary"], "refused"); T.eq(got["mode b"], "refused"); T.eq(got["text"], "allowed")
  T.ok(joined(d):find("env\tallowed\tnil", 1, true), "load's chunk gets the module's environment: " .. joined(d))
  T.ok(joined(d):find("binary chunk", 1, true), "binary refused as such: " .. joined(d))
  m:close()
end)

T.case("timers, the interrupt line and DMA inside its grant, from the module", function()
  local m = mb.machine { memory = "16M" }
  local pic = m:add(mb.pic8259 {})
  local d = m:add(mb.device { name = "t", pio = { base = 0x510, size = 1 }, irq = 5,
    isolate = { dma = "granted", grants = { { 0x9000, 0x1000 } } },
    source = [[
      local ticks = 0
      return { init = function(self)
        self:irq(true)
        local t
        t = self:every(0.02, function(self)
          ticks = ticks + 1
          if ticks == 5 then t:cancel(); log("ticks", ticks) end
        end)
        self:after(0.05, function(self)
          self:write(0x9000, "T")
          log("dma", self:read(0x9000, 1), (select(2, pcall(self.read, self, 0x20000, 4))))
          self:irq(false); self:pulse()
        end)
      end }
    ]] })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  T.run(m, "timeout", nil, 0.6)
  T.eq(m:read(0x9000, 1), "T", "DMA from a timer, in the grant")
  local l = joined(d)
  T.ok(l:find("ticks\t5", 1, true), "every ran until cancelled: " .. l)
  T.ok(l:find("dma\tT\tread: gpa 0x20000, length 4: not guest RAM", 1, true),
    "outside the grant is an error the module sees: " .. l)
  T.eq(pic:state().master.input & 0x20, 0, "lowered, then pulsed: low")
  T.ok(pic:state().master.irr & 0x20 ~= 0, "the edge was latched")
  m:close()
end)

-- The device's isolated view once its death is news (the pidfd's watch
-- runs a little after the channel closed), within 10 s.
local function settled(d, pat)
  local s
  for _ = 1, 200 do
    s = d:state().isolated
    if s.why:find(pat, 1, true) then return s end
    os.execute("sleep 0.05")
  end
  return s
end

-- A guest that reads the device three times (port 0x520) and writes what
-- it read to 0x524, then exits 0: with the device dead, it reads all ones.
local function reader(src, extra)
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  local o = { name = "bad", pio = { base = 0x520, size = 4 }, isolate = true, source = src }
  for k, v in pairs(extra or {}) do o[k] = v end
  local d = m:add(mb.device(o))
  local echo = m:add(mb.device { name = "echo", pio = { base = 0x524, size = 4 }, isolate = true,
    source = RECORDER })
  m:boot_flat { file = T.guest("pio"), mode = "protected" }
  return m, d, echo
end

T.case("a module past its instruction budget: the process ends, the VMM goes on", function()
  local m, d, echo = reader("return { read = function() while true do end end }",
    { limits = { instructions = 1e6 }, on_crash = "needs_reset", timeout = 5 })
  local t0 = os.time()
  T.run(m, "exit", 0)
  T.ok(os.time() - t0 < 5, "before the access timed out")
  local s = settled(d, "status")
  T.eq(s.alive, false)
  T.ok(s.why:find("exited with status 125 (its Lua module ran past its instruction limit)", 1, true), s.why)
  T.ok(joined(d):find("instruction limit (1000000) in read", 1, true), joined(d))
  local e = writes(echo)
  T.eq(e[1][3], 0xff, "the guest read all ones"); T.eq(e[3][3], 0xffffffff)
  m:close()
end)

T.case("a timer that loops forever ends its process; no access needed", function()
  local m = mb.machine { memory = "16M" }
  local d = m:add(mb.device { name = "spin", pio = { base = 0x510, size = 1 }, isolate = true,
    limits = { instructions = 1e6 }, on_crash = "needs_reset",
    source = "return { init = function(self) self:after(0.01, function() while true do end end) end }" })
  m:boot_flat { file = T.guest("spin"), mode = "protected" }
  local gone
  for _ = 1, 50 do
    T.run(m, "timeout", nil, 0.1)
    if not d:state().isolated.alive then gone = true; break end
  end
  T.ok(gone, "the process ended")
  local s = settled(d, "instruction limit")
  T.ok(s.why:find("instruction limit", 1, true), s.why)
  m:close()
end)

T.case("a module past its memory limit: the process ends, the VMM goes on", function()
  local m, d = reader([[return { read = function()
      local t = {} for i = 1, 1e9 do t[i] = string.rep("x", 64) .. i end end }]],
    { limits = { memory = "1M" }, on_crash = "needs_reset", timeout = 5 })
  T.run(m, "exit", 0)
  local s = settled(d, "status")
  T.eq(s.alive, false)
  T.ok(s.why:find("(its Lua module went past its memory limit)", 1, true), s.why)
  m:close()
end)

T.case("a module that never answers is a hung device: restarted, run returns", function()
  local m, d, echo = reader("return { read = function() while true do end end }",
    { limits = { instructions = 1e15 }, on_crash = "restart", timeout = 0.3 })
  T.run(m, "exit", 0, 60)
  local s = d:state().isolated
  T.ok(s.restarts >= 1, "restarted: " .. s.restarts)
  T.ok(s.why:find("hung", 1, true), s.why)
  T.eq(#writes(echo), 3, "the guest went on: three echoes")
  m:close()
end)

T.case("posted writes through the ring: the doorbell wakes the process with no read after them", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 }) -- in process: its exit flushes nothing of mark
  local mark = m:add(mb.device { name = "mark", pio = { base = 0x510, size = 1 }, isolate = true,
    posted = true, source = RECORDER })
  m:boot_flat { file = T.guest("protected"), mode = "protected" }
  os.execute("sleep 0.3") -- the process's ring thread is asleep on its doorbell by now
  T.run(m, "exit", 0x20)
  local s
  for _ = 1, 100 do
    if marks(mark) == "P" then break end
    os.execute("sleep 0.02")
  end
  s = mark:state().isolated
  T.eq(marks(mark), "P", "the posted write was done")
  T.eq(s.ring, true); T.eq(s.posted, 1); T.eq(s.flushes, 0, "nobody flushed it")
  T.ok(s.doorbells_rung >= 1, "the doorbell rang: " .. s.doorbells_rung)
  m:close()
end)

T.case("posted writes left in the ring by a dead process are done by the restarted one", function()
  local m = mb.machine { memory = "16M" }
  m:add(mb.debug_exit { port = 0xf4 })
  -- The first process hangs on the byte "4" (after marking guest RAM, so
  -- that its successor does not) and ends at its instruction limit; the
  -- rest of what the guest posted is still in the ring.
  local str = m:add(mb.device { name = "str", pio = { base = 0x530, size = 2 }, isolate = true,
    posted = true, on_crash = "restart", timeout = 5, limits = { instructions = 1e7 },
    source = [[
      return {
        read = function() return 0x41 end,
        write = function(self, off, size, v)
          if size == 1 and v == 0x34 and self:read(0x9000, 1) ~= "X" then
            self:write(0x9000, "X")
            while true do end
          end
          if size == 1 then log("w", off, size, v) end
        end }
    ]] })
  m:add(mb.device { name = "echo", pio = { base = 0x534, size = 1 }, isolate = true, source = RECORDER })
  m:boot_flat { file = T.guest("strio"), mode = "protected" }
  T.run(m, "exit", 0, 60)
  local s = settled(str, "instruction limit")
  T.eq(s.restarts, 1, "restarted once")
  T.eq(marks(str), "0123456789abcdef", "every byte done once, by one process or the other")
  T.ok(s.replayed >= 12, "the bytes from 4 on (and the words) were replayed: " .. s.replayed)
  T.eq(m:read(0x9000, 1), "X")
  m:close()
end)

T.done()
