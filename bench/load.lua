-- wrk script for the benchmarks; bench/run.py passes the arguments after `--`.
--
--   webhook <uuid file> <run nonce> <duplicate count>
--     Authenticate webhook deliveries, chosen per request:
--       70% a new status event (unique id) for a seeded UUID,
--       20% a re-delivery of one of the duplicate events run.py seeded before the run,
--        5% an event type the portal does not act on, for a seeded UUID,
--        5% a status event for a UUID the portal never created (an orphan).
--   status <token file> [conditional]
--     GET /status/<token>.json for the tokens in the file, in turn; "conditional" sends
--     If-None-Match with the ETag from the file's second column (the 304 path).
--
-- done() prints "BENCH ..." lines that run.py parses: wrk's totals, then one count per
-- status code and per webhook outcome. bench/pyload.py mirrors this for machines without wrk.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local STATUS_EVENT = "SELF_VERIFICATION_TRY_STATUS"
local OTHER_EVENT = "USER_PROFILE_UPDATED"
local STATUSES = {"started", "verified", "failed", "review"}
local METHODS = {"DOCUMENT", "BIOMETRIC"}
-- 2024-05-01T00:00:00Z; new events fall at random within the following 30 days.
local EPOCH = 1714521600

local mode, nonce, duplicates, conditional
local items = {}
local counter = 0
local path_prefix

function init(args)
  mode = args[1]
  for line in io.lines(args[2]) do
    local first, second = line:match("^(%S+)%s*(%S*)$")
    if first then
      table.insert(items, {first, second})
    end
  end
  nonce = args[3] or "run"
  duplicates = tonumber(args[4] or "0")
  conditional = args[3] == "conditional"
  math.randomseed(id * 7919 + os.time())
  -- A global, so done() can read it from each thread with thread:get.
  counts = {}
  path_prefix = wrk.path:gsub("/+$", "")
  wrk.headers["Content-Type"] = "application/json"
  if mode == "status" then
    wrk.headers["Content-Type"] = nil
    wrk.headers["Accept"] = "application/json"
  end
end

local function envelope(event_id, event_type, uuid, status, method, date)
  return string.format(
    '{"id":"%s","event":"%s","eventDate":"%s",' ..
      '"order":{"userAccessCode":"%s","status":"%s","verificationMethod":"%s"}}',
    event_id, event_type, date, uuid, status, method)
end

local function random_date()
  return os.date("!%Y-%m-%dT%H:%M:%SZ", EPOCH + math.random(0, 30 * 86400))
end

local function random_uuid()
  return string.format("%08x-%04x-4%03x-8%03x-%04x%08x",
    math.random(0, 0x7fffffff), math.random(0, 0xffff), math.random(0, 0xfff),
    math.random(0, 0xfff), math.random(0, 0xffff), math.random(0, 0x7fffffff))
end

local function webhook_body()
  local roll = math.random()
  if roll < 0.20 and duplicates > 0 then
    -- Byte-for-byte the delivery run.py recorded for duplicate k (see seed_duplicates).
    local k = math.random(1, duplicates)
    return envelope("bench-dup-" .. k, STATUS_EVENT, items[k][1], "started", "DOCUMENT",
      "2024-05-01T00:00:00Z")
  end
  counter = counter + 1
  local event_id = string.format("%s-%d-%d", nonce, id, counter)
  local status = STATUSES[math.random(#STATUSES)]
  local method = METHODS[math.random(#METHODS)]
  if roll < 0.25 then
    return envelope(event_id, OTHER_EVENT, items[math.random(#items)][1], status, method,
      random_date())
  elseif roll < 0.30 then
    return envelope(event_id, STATUS_EVENT, random_uuid(), status, method, random_date())
  end
  return envelope(event_id, STATUS_EVENT, items[math.random(#items)][1], status, method,
    random_date())
end

function request()
  if mode == "webhook" then
    return wrk.format("POST", nil, nil, webhook_body())
  end
  counter = counter + 1
  local item = items[(counter % #items) + 1]
  local headers = nil
  if conditional then
    headers = {Accept = "application/json", ["If-None-Match"] = '"' .. item[2] .. '"'}
  end
  return wrk.format("GET", path_prefix .. "/status/" .. item[1] .. ".json", headers)
end

function response(status, headers, body)
  local code = "status_" .. status
  counts[code] = (counts[code] or 0) + 1
  if body then
    local outcome = body:match('"outcome":%s*"(%a+)"')
    if outcome then
      counts["outcome_" .. outcome] = (counts["outcome_" .. outcome] or 0) + 1
    end
  end
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for key, value in pairs(thread:get("counts") or {}) do
      totals[key] = (totals[key] or 0) + value
    end
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
      "p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(99)))
  for key, value in pairs(totals) do
    io.write(string.format("BENCH_COUNT %s=%d\n", key, value))
  end
end
