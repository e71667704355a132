-- mb.campaign with the tiny counting guest (tests/guests/snap_count.S): each
-- trial restores the snapshot (counter 8), gets a fresh fault plan (a blk rule
-- on an idle overlay disk, so plan:reset and the reports are exercised) and
-- flips a bit chosen from its seed, either in the counter (the output shows
-- it: "sdc") or in a page the guest never reads ("masked"). Checks: every
-- trial classified and started from the same state, --trial I reproduces a
-- trial, JSON lines and JUnit, and 4 shards through GNU parallel merge to
-- the unsharded result.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")
local mb = require "moonbox"
T.need_kvm()

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local img = dir .. "/idle.img"
assert(io.open(img, "wb")):write(string.rep("\0", 65536)):close()

-- The campaign, also written to a script for the moonbox processes below.
local SCRIPT = [[
local mb, guest, img, results, junit, argv = ...
local COUNT, BUF = 0x300000, 0x310000
local m = mb.machine { memory = "16M" }
m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "buffer" })
m:add(mb.debug_exit { port = 0xf4 })
local disk = m:add(mb.virtio_blk { image = img, disk = "overlay" })
m:boot_flat { file = guest, mode = "protected" }
local r = m:run { timeout = 20 }
assert(r.reason == "exit" and r.exit_code == 8, r.reason)
local s = m:snapshot()
local starts = {}
return mb.campaign {
  name = "tiny-bitflip", machine = m, base = s, argv = argv,
  space = { random = 12, seed = 7 },
  results = results, junit = junit, progress = false,
  fault = function(i, plan, t)
    starts[#starts + 1] = string.unpack("<I4", m:read(COUNT, 4))
    plan:add(mb.fault.blk.error { dev = disk, op = "read", nth = 1 + t.seed % 5 })
    local addr = (t.seed % 2 == 0) and COUNT or BUF + 0x100
    local v = string.unpack("<I4", m:read(addr, 4))
    m:write(addr, string.pack("<I4", v ~ (1 << (8 + t.seed % 8))))
  end,
  run = { timeout = 20 },
  classify = function(r, out)
    if r.reason ~= "exit" then return "hang" end
    return out:find("c=00000009", 1, true) and "masked" or "sdc"
  end,
}, starts
]]

local function campaign(results, junit, argv)
  return assert(load(SCRIPT, "=campaign"))(mb, T.guest("snap_count"), img, results, junit, argv or {})
end

local full_path = dir .. "/full.jsonl"
local full, starts
T.case("every trial classified, every trial starts from the same state", function()
  full, starts = campaign(full_path, dir .. "/junit.xml")
  T.eq(full.total, 12, "trials")
  local sum = 0
  for _, n in pairs(full.classes) do sum = sum + n end
  T.eq(sum, 12, "classes add up")
  T.ok((full.classes.masked or 0) > 0 and (full.classes.sdc or 0) > 0,
    "both outcomes: masked " .. tostring(full.classes.masked) .. ", sdc " .. tostring(full.classes.sdc))
  for i, c in ipairs(starts) do T.eq(c, 8, "counter at the start of trial " .. (i - 1)) end
  for _, t in ipairs(full.trials) do
    T.ok(t.class ~= "masked" and t.index and t.seed and t.rules:find("rule 1: ", 1, true),
      "trial " .. t.index .. " carries index, seed and rule")
    T.ok(not t.rules:find("rule 2:", 1, true), "a fresh plan per trial: " .. t.rules)
  end
end)

T.case("JSON lines and JUnit XML", function()
  local n = 0
  for line in io.lines(full_path) do
    n = n + 1
    T.ok(line:match('^{"campaign":"tiny%-bitflip","trial":%d+,"random":%d+,"seed":%d+,"class":"%a+"'), line)
  end
  T.eq(n, 12, "one line per trial")
  local x = assert(io.open(dir .. "/junit.xml")):read("a")
  local _, cases = x:gsub("<testcase ", "")
  T.eq(cases, 12, "testcases")
  T.ok(x:find('failures="' .. (full.classes.sdc or 0) .. '"', 1, true), "sdc trials are failures")
end)

T.case("--trial I runs that trial alone, with the same seed and outcome", function()
  local want = full.trials[1]
  local one = campaign(nil, nil, { "--trial", tostring(want.index) })
  T.eq(one.total, 1, "one trial")
  T.eq(one.all[1].seed, want.seed, "seed")
  T.eq(one.all[1].class, want.class, "class")
  T.eq(one.all[1].rules, want.rules, "rules")
  T.raises(function() campaign(nil, nil, { "--trial", "12" }) end, "trials 0-11")
end)

T.case("4 shards through GNU parallel merge to the unsharded run", function()
  if not os.execute("command -v parallel >/dev/null") then
    return T.skip("shards through GNU parallel", "parallel not installed (make deps)")
  end
  local root = io.popen("cd " .. T.root .. " && pwd"):read("l")
  local script = dir .. "/c.lua"
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. "/?.so;" .. package.cpath
local mb = require "moonbox"
local f = assert(load(%q, "=campaign"))
f(mb, %q, %q, arg[4], nil, arg)
]], root, SCRIPT, root .. "/build/guests/snap_count.bin", img))
  f:close()
  local cmd = string.format("cd %s && parallel -j2 %s/moonbox %s --shard {}/4 --results %s/shard.{}.jsonl ::: 0 1 2 3",
    dir, root, script, dir)
  -- arg[4] is the --results path: "--shard", "K/4", "--results", PATH
  T.ok(os.execute(cmd), cmd)
  local function sorted(lines)
    table.sort(lines)
    return table.concat(lines, "\n")
  end
  local merged, whole = {}, {}
  for k = 0, 3 do
    for line in io.lines(dir .. "/shard." .. k .. ".jsonl") do merged[#merged + 1] = line end
  end
  for line in io.lines(full_path) do whole[#whole + 1] = line end
  T.eq(#merged, 12, "lines from the shards")
  T.eq(sorted(merged), sorted(whole), "merged shards equal the unsharded run")
end)

-- ddmin (shrink = true) on the triple-redundant counter (snap_tmr.S): a
-- flip in one copy is outvoted, the same bit in two copies is not. Trial 0
-- flips six bits no two of which meet (masked); trial 1's six flips hold
-- exactly one such pair (rules 2 and 5: bit 0 of byte 1 in copies A and
-- B), so ddmin must come back with {2, 5}.
T.case("shrink: ddmin finds the 2 rules of 6 that make the outcome", function()
  local A, B, C, FAR = 0x300000, 0x301000, 0x302000, 0xc00000
  local m = mb.machine { memory = "16M" }
  m:add(mb.uart16550 { port = 0x3f8, irq = 4, console = "buffer" })
  m:add(mb.debug_exit { port = 0xf4 })
  m:boot_flat { file = T.guest("snap_tmr"), mode = "protected" }
  T.run(m, "exit", 8)
  local s = m:snapshot()
  local F = mb.fault
  local sets = {
    { { C + 1, 1 }, { A + 1, 0 }, { A + 1, 2 }, { FAR, 0 }, { B + 1, 3 }, { C, 7 } },
    { { C + 1, 1 }, { A + 1, 0 }, { A + 1, 2 }, { FAR, 0 }, { B + 1, 0 }, { B + 1, 3 } },
  }
  local path = dir .. "/shrink.jsonl"
  local res = mb.campaign {
    name = "tmr", machine = m, base = s, space = { nth = { 1, 2 } }, shrink = true,
    results = path, junit = dir .. "/shrink.xml", progress = false,
    fault = function(v, plan)
      for _, f in ipairs(sets[v]) do plan:add(F.mem.flip { gpa = f[1], bit = f[2] }) end
    end,
    run = { timeout = 20 },
    classify = function(r, out)
      if r.reason ~= "exit" then return "hang" end
      return out:find("c=00000009", 1, true) and "masked" or "sdc"
    end,
  }
  T.eq(res.classes.masked, 1, "trial 0 masked (every flip outvoted)")
  T.eq(res.classes.sdc, 1, "trial 1 sdc")
  T.eq(res.all[1].shrunk, nil, "a masked trial is not shrunk")
  local sh = res.all[2].shrunk
  T.ok(sh, "trial 1 shrunk")
  T.eq(table.concat(sh.rules, ","), "2,5", "ddmin keeps exactly rules 2 and 5")
  T.ok(sh.trials >= 3 and sh.trials <= 20, "trials ddmin ran: " .. sh.trials)
  print("# ddmin: 6 rules -> {" .. table.concat(sh.rules, ",") .. "} in " .. sh.trials .. " trials")
  T.ok(sh.report:find("rule 1: mem.flip of bit 0 at 0x300001", 1, true) and
    sh.report:find("rule 2: mem.flip of bit 0 at 0x301001", 1, true) and
    not sh.report:find("rule 3:", 1, true), "the minimal run's report:\n" .. sh.report)
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  T.ok(lines[2]:find('"shrunk":[2,5],"shrink_trials":' .. sh.trials, 1, true), lines[2])
  T.ok(not lines[1]:find("shrunk", 1, true), lines[1])
  local x = assert(io.open(dir .. "/shrink.xml")):read("a")
  T.ok(x:find("shrunk to rules {2,5} in " .. sh.trials .. " trials", 1, true), "JUnit failure:\n" .. x)
  T.eq(string.unpack("<I4", m:read(A, 4)), 8, "the machine is back at the snapshot")
end)

os.execute("rm -rf " .. dir)
T.done()
