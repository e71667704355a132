-- virtio-console and virtio-net at the Lua level: placement, feature bits,
-- MAC addresses, backends (netpair, Unix socket listen/connect, tap when
-- permitted), option errors that name the key and value.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"

local function machine(irqchip)
  return mb.machine { memory = "16M", irqchip = irqchip or "user" }
end

local function bit(v, n) return v >> n & 1 == 1 end

T.case("automatic placement next to other virtio devices", function()
  local m = machine()
  local a, b = mb.netpair()
  local con = m:add(mb.virtio_console { console = "buffer" })
  local rng = m:add(mb.virtio_rng {})
  local net = m:add(mb.virtio_net { backend = a })
  T.eq(con:state().base, 0xd0000000, "console base")
  T.eq(rng:state().base, 0xd0001000, "rng base")
  T.eq(net:state().base, 0xd0002000, "net base")
  T.ok(con:state().irq ~= net:state().irq, "distinct lines")
  T.eq(tostring(con), "console0 (virtio_console: mmio 0xd0000000-0xd0000fff, irq 5)",
    "tostring")
  T.eq(con.name, "console0", "default name")
  T.eq(net.name, "net0", "default name")
  T.eq(m:device("console0"), con, "m:device finds console0")
  T.eq(m:device("net0"), net, "m:device finds net0")
  T.eq(tostring(a), "moonbox.netend (in use)", "the device took the pair end")
  T.raises(function() m:add(mb.virtio_net { backend = a }) end, "already in use")
  m:close()
  b = nil
  collectgarbage() -- frees the unused end
end)

T.case("given placement is honoured", function()
  local m = machine()
  local con = m:add(mb.virtio_console { mmio = { base = 0xd0100000, size = "4K" }, irq = 11 })
  T.eq(con:state().base, 0xd0100000, "base")
  T.eq(con:state().irq, 11, "irq")
  T.raises(function() m:add(mb.virtio_console { mmio = { base = 0xd0100000, size = 0x1000 } }) end,
    "virtio_console: mmio: console1 at 0xd0100000-0xd0100fff overlaps console0")
  m:close()
end)

T.case("console: features, config size option, input waits for the driver", function()
  local m = machine("kernel")
  local con = m:add(mb.virtio_console { console = "buffer" })
  local big = m:add(mb.virtio_console { cols = 132, rows = 43 })
  local s = con:state()
  T.ok(bit(s.device_features, 32), "VERSION_1")
  T.ok(bit(s.device_features, 2), "EMERG_WRITE")
  T.ok(not bit(s.device_features, 0), "no SIZE without cols/rows")
  T.ok(not bit(s.device_features, 1), "no MULTIPORT")
  T.ok(bit(big:state().device_features, 0), "SIZE with cols/rows")
  T.eq(#s.queues, 2, "receiveq and transmitq")
  T.eq(s.irqfd, true, "kernel irqchip: irqfd")
  con:input("ls\n")
  -- No vCPU code: run just lets the event loop try to deliver (on a
  -- loaded host it may take more than one slice).
  for _ = 1, 25 do
    m:run { timeout = 0.2 }
    if con:state().stats.rx_stalls >= 1 then break end
  end
  s = con:state()
  T.eq(s.stats.rx_bytes, 0, "nothing delivered without buffers")
  T.ok(s.stats.rx_stalls >= 1, "input refused and kept: " .. s.stats.rx_stalls)
  T.eq(con:output(), "", "no output yet")
  m:close()
end)

T.case("net: features, MAC addresses, backend in state()", function()
  local m = machine()
  local a, b = mb.netpair()
  local n1 = m:add(mb.virtio_net { backend = a })
  local n2 = m:add(mb.virtio_net { backend = b, mac = "02:00:00:aa:bb:cc" })
  local s1, s2 = n1:state(), n2:state()
  T.ok(bit(s1.device_features, 5), "MAC")
  T.ok(bit(s1.device_features, 16), "STATUS")
  T.ok(not bit(s1.device_features, 15), "no MRG_RXBUF")
  T.ok(s1.mac:match("^52:54:00:%x%x:%x%x:%x%x$"), "default MAC " .. s1.mac)
  T.eq(s2.mac, "02:00:00:aa:bb:cc", "given MAC")
  local n3 = m:add(mb.virtio_net { backend = { socket = os.tmpname() .. ".sock", listen = true } })
  T.ok(n3:state().mac ~= s1.mac, "default MACs differ: " .. n3:state().mac)
  T.eq(s1.backend, "pair", "backend name")
  T.eq(s1.connected, true, "pair connected")
  T.eq(s1.stats.tx_frames, 0, "counters start at 0")
  m:close()
end)

T.case("net: Unix socket backend, listen and connect", function()
  local path = os.tmpname()
  os.remove(path)
  local m1, m2 = machine(), machine()
  local l = m1:add(mb.virtio_net { backend = { socket = path, listen = true } })
  T.eq(l:state().connected, false, "no peer yet")
  T.eq(l:state().backend, "socket:" .. path, "backend name")
  local c = m2:add(mb.virtio_net { backend = { socket = path } })
  T.eq(c:state().connected, true, "connected at once")
  for _ = 1, 25 do -- the event loop accepts the peer (slow on a loaded host)
    m1:run { timeout = 0.2 }
    if l:state().connected then break end
  end
  T.eq(l:state().connected, true, "the listener took the peer")
  m2:close()
  m1:close()
  T.eq(io.open(path), nil, "the listener removed its socket")
  T.raises(function()
    machine():add(mb.virtio_net { backend = { socket = path } })
  end, "connect: No such file or directory")
end)

T.case("net: tap backend (when this host lets us)", function()
  local m = machine()
  local ok, dev = pcall(m.add, m, mb.virtio_net { backend = "tap", ifname = "mbtest0" })
  if not ok then
    print("# tap not available here: " .. tostring(dev))
    T.ok(tostring(dev):find("backend: tap", 1, true), "a tap error names the backend")
  else
    T.eq(dev:state().backend, "tap:mbtest0", "backend name")
    local p = io.popen("ip link show mbtest0 2>&1")
    local out = p:read("a")
    p:close()
    T.ok(out:find("mbtest0", 1, true), "the interface exists: " .. out)
  end
  m:close()
end)

T.case("option errors name the key and value", function()
  local a = mb.netpair()
  T.raises(function() mb.virtio_net {} end, "backend: missing")
  T.raises(function() mb.virtio_net { backend = "vde" } end, "backend: \"vde\" is not \"tap\"")
  T.raises(function() mb.virtio_net { backend = 5 } end, "backend: expected \"tap\"")
  T.raises(function() mb.virtio_net { backend = {} } end, "backend.socket: missing")
  T.raises(function() mb.virtio_net { backend = { socket = "/x", lisen = true } } end,
    "backend: unknown option \"lisen\"")
  T.raises(function() mb.virtio_net { backend = { socket = "/x", listen = "yes" } } end,
    "listen: expected a boolean")
  T.raises(function() mb.virtio_net { backend = { socket = string.rep("x", 120) } } end,
    "too long")
  T.raises(function() mb.virtio_net { backend = a, ifname = "eth0" } end,
    "ifname: only for backend = \"tap\"")
  T.raises(function() mb.virtio_net { backend = "tap", ifname = string.rep("t", 16) } end,
    "ifname: \"" .. string.rep("t", 16) .. "\" is longer than 15")
  T.raises(function() mb.virtio_net { backend = a, mac = "52:54:00:12:34" } end,
    "mac: \"52:54:00:12:34\" is not a MAC address")
  T.raises(function() mb.virtio_net { backend = a, mac = "01:00:5e:00:00:01" } end,
    "is a multicast address")
  T.raises(function() mb.virtio_net { backend = a, irq = 0 } end, "irq: 0")
  T.raises(function() mb.virtio_net { backend = a, speed = 10 } end, "unknown option \"speed\"")
  T.raises(function() mb.virtio_console { console = 5 } end, "console: expected a string")
  T.raises(function() mb.virtio_console { cols = 80 } end, "rows: give cols and rows together")
  T.raises(function() mb.virtio_console { cols = 80, rows = 70000 } end, "rows: 70000 is not 0-65535")
  T.raises(function() mb.virtio_console { mmio = { base = 0xd0000100, size = 0x1000 } } end,
    "not 4K-aligned")
  local m = machine()
  T.raises(function() m:add(mb.virtio_console { console = "tty" }) end,
    "console: \"tty\" is not one of")
  m:close()
end)

-- Deep equality of two state() tables, naming the first difference.
local function same(a, b, path)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b, path
  end
  for k, v in pairs(a) do
    local ok, where = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) end
  end
  return true
end

T.case("set_state(state()) round trips for blk, rng, console, net", function()
  local img = os.tmpname()
  local f = assert(io.open(img, "wb"))
  f:write(string.rep("\0", 1 << 16))
  f:close()
  local m = machine()
  local a, b = mb.netpair()
  local devs = {
    m:add(mb.virtio_blk { image = img }), m:add(mb.virtio_rng {}),
    m:add(mb.virtio_console { console = "buffer" }),
    m:add(mb.virtio_net { backend = a, mac = "02:00:00:aa:bb:cc" }),
  }
  for _, d in ipairs(devs) do
    local s = d:state()
    T.eq(d:set_state(s), d, d.name .. ": set_state returns the device")
    local ok, where = same(s, d:state(), d.name)
    T.ok(ok, d.name .. ": state unchanged by the round trip, first at " ..
      tostring(where))
  end
  local net = devs[4]
  net:set_state { mac = "02:00:00:00:00:01" }
  T.eq(net:state().mac, "02:00:00:00:00:01", "a MAC as text is taken")
  net:set_state { mac = "\2\0\0\0\0\2" }
  T.eq(net:state().mac, "02:00:00:00:00:02", "and as its 6 bytes")
  T.raises(function() net:set_state { mac = "nope" } end, "mac: \"nope\"")
  T.raises(function() net:set_state { mac = "01:00:00:00:00:01" } end,
    "mac: a multicast address")
  T.eq(net:state().mac, "02:00:00:00:00:02", "failed set_state changed nothing")
  T.raises(function() devs[1]:set_state { queues = { { num = 65535 } } } end,
    "queues[1].num")
  os.remove(img)
end)

T.case("state() before m:add is an error", function()
  T.raises(function() mb.virtio_console {}:state() end, "not part of a running machine")
end)

T.done()
