-- virtio-console and virtio-net on real Linux guests: ONE run of two VMs
-- in this process (~2 boots in parallel, one core each), cabled together
-- by the unprivileged Unix-socket backend.
--   A: its console is virtio-console (console=hvc0), so /init's marker and
--      the command's output arrive on the virtio console's buffer. It reads
--      a line the host typed before boot (held in the backend until the
--      port is up), sets up eth0 as 10.0.0.1, waits for B to answer, pings
--      it three times, tells B it is done over TCP (busybox nc), powers off.
--      Then it runs the lines the host typed after that one (eval, one by
--      one): net faults, each phase announced on A's ttyS0 ("np-N"), where
--      a console function changes A's fault plan before the guest goes on:
--        1. 30 % rx loss (seed 9) under ping -c20: the lost replies are
--           exactly the rule's drops of 98-byte frames in its trace;
--        2. link down: carrier 0, operstate down; 3. link up: 1, up;
--        4. duplicate rx frames: ping prints DUP!, and m:on("net") saw
--           the 3 echo replies arrive (before the rule copied them).
--      (No m:on("net") in phase 1: each frame's trip to the Lua thread
--      slows the exchange on a loaded host, and late replies would count
--      as lost.)
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
  .. "ping -c3 10.0.0.2;while read -r c;do eval \"$c\";done"
-- The lines A evals after boot; "np-N" is computed (the tty echoes input).
local sysnet = "/sys/class/net/eth0/"
local carrier = "sleep 2;echo c:$(cat " .. sysnet .. "carrier):$(cat " .. sysnet .. "operstate)"
local a_lines = {
  "echo np-$((0+1))>/dev/ttyS0;ping -c20 -i0.2 -W3 10.0.0.2",
  "echo np-$((0+2))>/dev/ttyS0;" .. carrier,
  "echo np-$((0+3))>/dev/ttyS0;" .. carrier,
  "echo np-$((0+4))>/dev/ttyS0;ping -c3 -i0.3 10.0.0.2",
  "echo np-$((0+5))>/dev/ttyS0;echo a-done|nc 10.0.0.2 7777",
  "exit 0",
}
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

local a_input = "typed-before-boot\n" .. table.concat(a_lines, "\n") .. "\n"
A.con:input(a_input)

-- A's net faults, phase by phase (the guest waits in its write to ttyS0).
local F = mb.fault
local trace = os.tmpname()
local plan = ma:faults { seed = 9, trace = trace }
local loss, replies, phases, t_phase = nil, 0, {}, {}
local function echo_reply(f) -- Ethernet, IPv4 (IHL 5), ICMP echo reply
  return #f == 98 and f:byte(13) == 8 and f:byte(14) == 0 and f:byte(24) == 1 and f:byte(35) == 0
end
local watch
ma:on("console", { dev = comA, pattern = "^np%-%d$" }, function(line)
  local n = tonumber(line:match("%d"))
  phases[#phases + 1] = n
  t_phase[n] = os.time()
  if n == 1 then
    loss = plan:add(F.net.drop { dev = A.net, dir = "rx", p = 0.3 })
  elseif n == 2 then
    plan:disable(loss)
    plan:add(F.net.link { dev = A.net, up = false })
  elseif n == 3 then
    plan:add(F.net.link { dev = A.net, up = true })
  elseif n == 4 then
    plan:add(F.net.duplicate { dev = A.net, dir = "rx" })
    watch = ma:on("net", { dev = A.net, dir = "rx" }, function(ev)
      if echo_reply(ev.frame) then replies = replies + 1 end
    end)
  elseif n == 5 then
    watch:remove()
    plan:close()
  end
end)
local t0 = os.time()
ma:start()
mb_:start()
local ra = ma:wait { timeout = 1200 }
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
  if l:find("got:", 1, true) or l:find("packet loss", 1, true) or l:find("^c:")
    or l:find("DUP!", 1, true) then
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
  T.eq(s.stats.rx_bytes, #a_input, "the host's lines went in")
end)

T.case("two VMs ping each other over virtio-net (0% packet loss)", function()
  has(hvc, "3 packets transmitted, 3 packets received, 0% packet loss", "A's ping")
  has(b_serial, "b-up-42", "B's console (its shell ran)")
  has(b_serial, "a-done", "B received A's TCP message")
  T.eq(ra.reason, "halt", "A powered off: " .. tostring(ra.message))
  T.eq(rb.reason, "halt", "B powered off: " .. tostring(rb.message))
end)

-- The rule's drops of echo replies, from the trace (the seed's decisions).
local drops, replies_dropped, records = 0, 0, 0
for l in io.lines(trace) do
  if l:find('"rule":1,', 1, true) then
    records = records + 1
    if l:find('"action":"net.drop"', 1, true) then
      drops = drops + 1
      if l:find('"nsectors":98,', 1, true) then replies_dropped = replies_dropped + 1 end
    end
  end
end
os.remove(trace)

T.case("net faults: the host's phases ran in order", function()
  if t_phase[1] and t_phase[5] then
    print(string.format("# net fault phases 1-5 took %d s", t_phase[5] - t_phase[1]))
  end
  T.eq(table.concat(phases, ","), "1,2,3,4,5", "phases announced on A's ttyS0")
  T.eq(#plan:unfired(), 0, plan:report())
end)

T.case("net.drop p = 0.3 on rx: ping loses exactly the replies the seed dropped", function()
  local sent, got = hvc:match("(%d+) packets transmitted, (%d+) packets received, %d+%% packet loss")
  local s20, g20 = hvc:match("(20) packets transmitted, (%d+) packets received")
  print(string.format("# rule 1: %d records, %d drops, %d of them echo replies; ping %s/%s",
    records, drops, replies_dropped, tostring(g20), tostring(s20)))
  T.ok(sent and s20, "ping -c20 printed its statistics")
  T.eq(20 - tonumber(g20), replies_dropped, "ping's losses are the trace's dropped replies")
  T.ok(replies_dropped >= 1 and replies_dropped <= 12, replies_dropped .. " of 20 for p = 0.3")
end)

T.case("net.link: down shows carrier 0 / operstate down, up restores 1 / up", function()
  has(hvc, "c:0:down", "A after the link went down")
  has(hvc, "c:1:up", "A after the link came up")
  T.ok(hvc:find("c:0:down", 1, true) < hvc:find("c:1:up", 1, true), "down, then up")
end)

T.case("net.duplicate on rx: ping reports DUP!", function()
  has(hvc, "DUP!", "A's ping under duplicate")
  T.ok(hvc:find("3 packets received, %d+ duplicates"), "duplicates counted")
  T.eq(replies, 3, "m:on(\"net\") saw B's 3 echo replies reach A (before the copies)")
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
