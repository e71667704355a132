-- virtio-console and virtio-net on real Linux guests: ONE run of two VMs
-- in this process (~2 boots in parallel, one core each), cabled together
-- by the unprivileged Unix-socket backend.
--   A: its console is virtio-console (console=hvc0), so /init's marker and
--      the command's output arrive on the virtio console's buffer. It reads
--      a line the host typed before boot (held in the backend until the
--      port is up), sets up eth0 as 10.0.0.1, waits for B to answer, pings
--      it three times, tells B it is done over TCP (busybox nc), powers off.
--   B: 10.0.0.2 on eth0, waits for A's message with nc -l, powers off.
local T = dofile((arg[0]:match("^(.*)/tests/") or ".") .. "/tests/lua/harness.lua")
T.need_kvm()
local mb = require "moonbox"
if not io.open(T.root .. "/.cache/guest/bzImage") then
  T.skip_all("no guest kernel (run make deps)")
end

local sock = os.tmpname()
os.remove(sock)

-- linux.lua's setup hook adds our devices before boot_linux announces
-- them. Words after "--" become init's arguments, at most 32 of them
-- (MAX_INIT_ARGS): keep the commands terse.
local function linux(append, add)
  local devs
  local m, com1 = assert(loadfile(T.root .. "/machines/linux.lua")) {
    root = T.root, console = "buffer", append = append,
    seccomp = true, -- network and console I/O with moonbox's threads confined
    setup = function(m) devs = add(m) end,
  }
  return m, com1, devs
end

local a_cmd = "read -r x;echo got:$x;ip a add 10.0.0.1/24 dev eth0;ip l set eth0 up;"
  .. "for i in $(seq 60);do ping -c1 -W2 10.0.0.2>/dev/null&&break;done;"
  .. "ping -c3 10.0.0.2;echo a-done|nc 10.0.0.2 7777"
-- Markers are computed by the guest's shell: the kernel prints its
-- command line on the console, so a literal marker would be found there.
local b_cmd = "ip a add 10.0.0.2/24 dev eth0;ip l set eth0 up;echo b-up-$((6*7));timeout 400 nc -l -p 7777"
assert(select(2, a_cmd:gsub("%S+", "")) < 30, "A's command has too many words")

local ma, comA, A = linux("console=hvc0 -- " .. a_cmd, function(m)
  return {
    con = m:add(mb.virtio_console { console = "buffer" }),
    net = m:add(mb.virtio_net { backend = { socket = sock, listen = true } }),
  }
end)
local mb_, comB, B = linux("-- " .. b_cmd, function(m)
  return { net = m:add(mb.virtio_net { backend = { socket = sock } }) }
end)

A.con:input("typed-before-boot\n")
local t0 = os.time()
ma:start()
mb_:start()
local ra = ma:wait { timeout = 500 }
local rb = mb_:wait { timeout = math.max(30, 520 - (os.time() - t0)) }
local hvc, a_serial, b_serial = A.con:output(), comA:output(), comB:output()
print(string.format("# A: %s, B: %s after %d s; hvc0 %d bytes, A ttyS0 %d, B ttyS0 %d",
  ra.reason, rb.reason, os.time() - t0, #hvc, #a_serial, #b_serial))
local function tail(name, r, serial) -- the kernel's last words when it did not power off
  if r.reason ~= "halt" then
    print(string.format("# %s: %s; its ttyS0 ends with:\n# %s", name, tostring(r.message),
      (serial:sub(-3000):gsub("\n", "\n# "))))
  end
end
tail("A", ra, a_serial)
tail("B", rb, b_serial)
for l in hvc:gmatch("[^\r\n]+") do
  if l:find("got:", 1, true) or l:find("bytes from", 1, true) or l:find("packet loss", 1, true) then
    print("# A hvc0: " .. l)
  end
end

local function has(text, s, what)
  if not text:find(s, 1, true) then
    error(string.format("%s lacks %q; last lines:\n%s", what, s, text:sub(-1500)), 2)
  end
end

T.case("virtio-console carries a shell: init and the command on hvc0", function()
  has(hvc, "moonbox-guest: init", "A's virtio console")
  has(hvc, "got:typed-before-boot", "A's virtio console (host input)")
  has(hvc, "PING 10.0.0.2", "A's virtio console")
  has(hvc, "moonbox-guest: cmd-exit=0", "A's virtio console")
  T.ok(not a_serial:find("moonbox-guest: init", 1, true), "init's output is not on ttyS0")
  local s = A.con:state()
  T.eq(s.needs_reset, false, "no fault: " .. tostring(s.fault))
  T.ok(s.stats.tx_bytes >= #hvc, "tx_bytes counts the output")
  T.eq(s.stats.rx_bytes, #"typed-before-boot\n", "the host's line went in")
end)

T.case("two VMs ping each other over virtio-net (0% packet loss)", function()
  has(hvc, "3 packets transmitted, 3 packets received, 0% packet loss", "A's ping")
  has(b_serial, "b-up-42", "B's console (its shell ran)")
  has(b_serial, "a-done", "B received A's TCP message")
  T.eq(ra.reason, "halt", "A powered off: " .. tostring(ra.message))
  T.eq(rb.reason, "halt", "B powered off: " .. tostring(rb.message))
end)

T.case("net counters on both sides", function()
  local sa, sb = A.net:state(), B.net:state()
  print(string.format("# A net: tx %d frames/%d bytes, rx %d/%d, dropped rx %d tx %d, stalls %d; "
    .. "%d doorbells (%d MMIO), %d interrupts", sa.stats.tx_frames, sa.stats.tx_bytes,
    sa.stats.rx_frames, sa.stats.rx_bytes, sa.stats.rx_dropped, sa.stats.tx_dropped,
    sa.stats.rx_stalls, sa.stats.notifications, sa.stats.mmio_notifications, sa.stats.interrupts))
  T.ok(sa.stats.tx_frames >= 4, "A sent ARP and pings")
  T.ok(sa.stats.rx_frames >= 4, "A received replies")
  T.ok(sb.stats.rx_frames >= 4 and sb.stats.tx_frames >= 4, "B's side saw them too")
  T.eq(sa.needs_reset or sb.needs_reset, false, "no fault")
  T.eq(sa.mac ~= sb.mac, true, "distinct MACs")
end)

T.case("both boots ran under seccomp: moonbox's threads filtered, the script's not", function()
  local filtered, free = T.thread_filters()
  T.ok(filtered >= 4, filtered .. " filtered threads (two vCPUs, two event loops)")
  T.eq(#free, 0, "threads left free besides the script's: " .. table.concat(free, " "))
end)

ma:close()
mb_:close()
T.done()
