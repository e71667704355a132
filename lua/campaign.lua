-- mb.campaign: fault campaigns from a snapshot (docs/snapshot.md, "Campaigns").
-- Compiled into moonbox (lua/lcampaign.c); called with the module table and
-- two C helpers (isatty(fd), monotonic seconds), returns the campaign function.
--
-- A trial is addressed by its index i (0 .. N-1) alone: its fault value
-- (nth = lo + i, or random trial i), its seed (a hash of the campaign seed and
-- i) and the fresh plan it gets (plan:reset, rule ids from 1) depend on
-- nothing else, so a trial run alone (--trial I, a shard, another host)
-- behaves as it did in the whole campaign.
local mb, isatty, now = ...

local function mix(z) -- splitmix64's finaliser, as core/fault.c's
  z = (z ~ (z >> 30)) * -4658895280553007687 -- 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * -7723592293110705685 -- 0x94d049bb133111eb
  return z ~ (z >> 31)
end

-- Non-negative, fits the JSON double exactly (53 bits).
local function trial_seed(seed, i)
  return mix(mix(seed + 0x1e3779b97f4a7c15) ~ (i + 1)) & 0x1fffffffffffff
end

local function json_str(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function xml(s)
  return (tostring(s):gsub("[<>&\"]", { ["<"] = "&lt;", [">"] = "&gt;",
    ["&"] = "&amp;", ['"'] = "&quot;" }):gsub("[%z\1-\8\11\12\14-\31]", "?"))
end

local KEYS = { name = true, base = true, machine = true, setup = true, space = true,
  fault = true, run = true, classify = true, console = true, results = true,
  junit = true, progress = true, failing = true, trials = true, argv = true,
  shrink = true }

-- Which trials this process runs: opts.trials, then --trial I / --shard K/N
-- in the script's arguments, then JOB_COMPLETION_INDEX / SLURM_ARRAY_TASK_ID
-- (a trial index, or a shard index with MB_SHARDS=N); default all.
local function selection(opts, n)
  local argv = opts.argv or _G.arg or {}
  local trial, shard, shards, results, junit
  local i = 1
  while argv[i] do
    local a, v = argv[i], argv[i + 1]
    if a == "--trial" then trial = math.tointeger(tonumber(v)); i = i + 1
      if not trial then error("--trial: " .. tostring(v) .. " is not a trial index", 3) end
    elseif a == "--shard" then
      local k, m = tostring(v):match("^(%d+)/(%d+)$")
      shard, shards = tonumber(k), tonumber(m); i = i + 1
      if not shard or shards < 1 or shard >= shards then
        error("--shard: " .. tostring(v) .. " is not K/N with 0 <= K < N", 3)
      end
    elseif a == "--results" then results = v; i = i + 1
    elseif a == "--junit" then junit = v; i = i + 1
    end
    i = i + 1
  end
  if not trial and not shard then
    local env = os.getenv("JOB_COMPLETION_INDEX") or os.getenv("SLURM_ARRAY_TASK_ID")
    local k = env and math.tointeger(tonumber(env))
    local ns = math.tointeger(tonumber(os.getenv("MB_SHARDS") or ""))
    if k and ns then shard, shards = k, ns
    elseif k then trial = k end
  end
  local list = {}
  if opts.trials then
    for _, t in ipairs(opts.trials) do list[#list + 1] = t end
  elseif trial then
    if trial < 0 or trial >= n then
      error(string.format("trial %d: the campaign has trials 0-%d", trial, n - 1), 3)
    end
    list[1] = trial
  else
    for t = 0, n - 1 do
      if not shard or t % shards == shard then list[#list + 1] = t end
    end
  end
  return list, results or opts.results, junit or opts.junit
end

local function space_of(sp)
  if type(sp) ~= "table" then error("space: expected { nth = { 1, N } } or { random = N, seed = S }", 3) end
  if sp.nth then
    local lo, hi = sp.nth[1], sp.nth[2]
    if not math.tointeger(lo) or not math.tointeger(hi) or lo < 1 or hi < lo then
      error("space.nth: expected { FIRST, LAST } with 1 <= FIRST <= LAST", 3)
    end
    return hi - lo + 1, function(i) return lo + i end, sp.seed or 0, "nth"
  elseif sp.random then
    local n = math.tointeger(sp.random)
    if not n or n < 1 then error("space.random: expected a number of trials", 3) end
    return n, function(i) return i end, sp.seed or 0, "random"
  end
  error("space: expected nth = { FIRST, LAST } or random = N", 3)
end

-- The plan the fault function sees while shrinking: plan:add passes the
-- k-th rule on only when keep[k] (keep nil: all) and counts them all in
-- seen.n; every other method is the plan's own.
local function proxy(plan, keep, seen)
  return setmetatable({}, { __index = function(_, k)
    if k == "add" then
      return function(_, spec)
        seen.n = seen.n + 1
        if keep and not keep[seen.n] then return nil end
        return plan:add(spec)
      end
    end
    local f = plan[k]
    if type(f) ~= "function" then return f end
    return function(_, ...) return f(plan, ...) end
  end })
end

-- ddmin (Zeller and Hildebrandt, "Simplifying and Isolating
-- Failure-Inducing Input", IEEE TSE 28(2), 2002, fig. 5): from the rules
-- 1..n, which together fail, a subset that fails while removing any one
-- of its rules does not (1-minimal). fails(list) runs one trial; a subset
-- is tried at most once.
local function ddmin(n, fails)
  local c = {}
  for i = 1, n do c[i] = i end
  local parts = 2
  while #c >= 2 do
    local subsets = {}
    for k = 1, parts do
      local d = {}
      for j = (k - 1) * #c // parts + 1, k * #c // parts do d[#d + 1] = c[j] end
      subsets[k] = d
    end
    local next_c
    for _, d in ipairs(subsets) do -- reduce to a subset
      if fails(d) then next_c, parts = d, 2; break end
    end
    if not next_c and parts > 2 then -- reduce to a complement (with 2 parts:
      for k = 1, parts do            -- the other subset, tried already)
        local comp = {}
        for j, d in ipairs(subsets) do
          if j ~= k then for _, x in ipairs(d) do comp[#comp + 1] = x end end
        end
        if fails(comp) then next_c, parts = comp, math.max(parts - 1, 2); break end
      end
    end
    if next_c then
      c = next_c
    elseif parts >= #c then
      break
    else
      parts = math.min(parts * 2, #c)
    end
  end
  return c
end

return function(opts)
  if type(opts) ~= "table" then error("campaign: expected a table of options", 2) end
  for k in pairs(opts) do
    if not KEYS[k] then error("campaign: " .. tostring(k) .. ": unknown option", 2) end
  end
  for _, k in ipairs { "fault", "classify" } do
    if type(opts[k]) ~= "function" then error(k .. ": expected a function", 2) end
  end
  local n, value, seed0, kind = space_of(opts.space)
  local name = opts.name or "campaign"
  local m, s = opts.machine, opts.base
  if opts.setup then m, s = opts.setup() end
  if not m or not s then
    error("campaign: give base = SNAPSHOT and machine = M, or setup = function() return m, s end", 2)
  end
  local run = opts.run or { timeout = 10 }
  if type(run) ~= "table" and type(run) ~= "function" then
    error("run: expected a table of m:run options or a function(m, trial)", 2)
  end
  local console = opts.console
  if console == nil then
    local ok, d = pcall(m.device, m, "com1")
    console = ok and d or false
  elseif type(console) == "string" then
    console = m:device(console)
  end
  local list, results_path, junit_path = selection(opts, n)
  local failing = {}
  for _, c in ipairs(opts.failing or {}) do failing[c] = true end
  local function fails(c)
    if opts.failing then return failing[c] == true end
    return c ~= "masked" and c ~= "detected"
  end
  local out = results_path and (results_path == "-" and io.stdout
    or assert(io.open(results_path, "w")))
  local progress = opts.progress
  if progress == nil then progress = isatty(2) end

  local shrink = opts.shrink
  if shrink ~= nil and type(shrink) ~= "boolean" and type(shrink) ~= "table" then
    error("shrink: expected true or a list of classes to shrink", 2)
  end
  local shrink_class = {}
  if type(shrink) == "table" then
    for _, c in ipairs(shrink) do shrink_class[c] = true end
  end

  local plan
  local res = { name = name, total = 0, classes = {}, trials = {}, all = {} }
  -- One run of trial (restore, fresh plan, fault, run, classify); keep:
  -- the rule ordinals to pass on (nil: all, and the real plan when not
  -- shrinking). Returns the class, m:run's result and the rules added.
  local function once(trial, keep)
    m:restore(s)
    if plan then plan:reset { seed = trial.seed }
    else plan = m:faults { seed = trial.seed } end
    local seen = { n = 0 }
    opts.fault(trial.value, shrink and proxy(plan, keep, seen) or plan, trial)
    local mark = console and #console:output() or 0
    local r
    if type(run) == "function" then r = run(m, trial) else r = m:run(run) end
    if type(r) ~= "table" then r = { reason = tostring(r) } end
    local output = console and console:output():sub(mark + 1) or ""
    local class = opts.classify(r, output, m, trial)
    if type(class) ~= "string" then
      error(string.format("classify: trial %d returned %s, not a class name", trial.index,
        tostring(class)), 3)
    end
    m:pause() -- a run function may leave it running
    return class, r, seen.n
  end
  -- The 1-minimal subset of trial's nrules rules that still gives its
  -- class, re-running the trial from the snapshot with only those.
  local function shrink_trial(trial, nrules)
    local memo, runs, reports = {}, 0, {}
    local function fails(list)
      local key = table.concat(list, ",")
      if memo[key] == nil then
        local keep = {}
        for _, k in ipairs(list) do keep[k] = true end
        runs = runs + 1
        memo[key] = once(trial, keep) == trial.class
        reports[key] = plan:report()
      end
      return memo[key]
    end
    local min
    if fails({}) then min = {} else min = ddmin(nrules, fails) end
    local key = table.concat(min, ",")
    return { rules = min, trials = runs, report = reports[key] or trial.rules }
  end

  local t0 = now()
  for k, i in ipairs(list) do
    local trial = { index = i, value = value(i), seed = trial_seed(seed0, i), kind = kind }
    local class, r, nrules = once(trial)
    trial.class, trial.reason = class, r.reason
    trial.rules = plan:report()
    if shrink and class ~= "masked" and (shrink == true or shrink_class[class]) then
      trial.shrunk = shrink_trial(trial, nrules)
    end
    res.total = res.total + 1
    res.classes[class] = (res.classes[class] or 0) + 1
    res.all[#res.all + 1] = trial
    if class ~= "masked" then res.trials[#res.trials + 1] = trial end
    if out then
      local sh = ""
      if trial.shrunk then
        sh = string.format(',"shrunk":[%s],"shrink_trials":%d,"shrunk_rules":%s',
          table.concat(trial.shrunk.rules, ","), trial.shrunk.trials,
          json_str(trial.shrunk.report))
      end
      out:write(string.format('{"campaign":%s,"trial":%d,"%s":%d,"seed":%d,"class":%s,"reason":%s,"rules":%s%s}\n',
        json_str(name), i, kind, trial.value, trial.seed, json_str(class),
        json_str(r.reason or ""), json_str(trial.rules), sh))
      out:flush()
    end
    if progress then
      local el = now() - t0
      local parts = {}
      for c, v in pairs(res.classes) do parts[#parts + 1] = c .. " " .. v end
      table.sort(parts)
      io.stderr:write(string.format("\r%s: %d/%d trials, %s, %.0f s left   ", name, k, #list,
        table.concat(parts, ", "), el / k * (#list - k)))
      if k == #list then io.stderr:write("\n") end
    end
  end
  if out and out ~= io.stdout then out:close() end
  if plan then plan:reset {} end
  m:restore(s)
  if junit_path then
    local f = assert(io.open(junit_path, "w"))
    local nf = 0
    for _, t in ipairs(res.all) do if fails(t.class) then nf = nf + 1 end end
    f:write('<?xml version="1.0" encoding="UTF-8"?>\n')
    f:write(string.format('<testsuite name="%s" tests="%d" failures="%d">\n', xml(name), #res.all, nf))
    for _, t in ipairs(res.all) do
      f:write(string.format('  <testcase classname="%s" name="trial %d (%s=%d, seed %d)">', xml(name),
        t.index, t.kind, t.value, t.seed))
      local body = t.rules
      if t.shrunk then
        body = string.format("%s\nshrunk to rules {%s} in %d trials:\n%s", t.rules,
          table.concat(t.shrunk.rules, ","), t.shrunk.trials, t.shrunk.report)
      end
      if fails(t.class) then
        f:write(string.format('<failure message="%s">%s</failure>', xml(t.class), xml(body)))
      elseif t.class ~= "masked" then
        f:write(string.format("<system-out>%s: %s</system-out>", xml(t.class), xml(body)))
      end
      f:write("</testcase>\n")
    end
    f:write("</testsuite>\n")
    f:close()
  end
  return res
end
