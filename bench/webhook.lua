-- wrk script for the webhook benchmark: POSTs Telegram updates with the bot's secret header.
--
-- Every request is a new update (unique update_id, chat and text), so the app does its full work
-- (dedup locks taken, job enqueued) instead of stopping at the cheaper duplicate answer. Each wrk
-- thread has its own id range; each phase (warm-up, measure, runs) passes its own offset.
-- Mix like production webhook traffic: per 10 requests 5 /start, 3 free text, 2 offer callbacks.
--
-- usage: WRK_REPORT=<report.json> wrk -s webhook.lua URL -- <secret> <id offset> [offer id]
-- (done() runs in wrk's main Lua state, which never sees init()'s arguments: hence the env var)

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  secret = args[1] or ""
  -- 2^40 ids per phase, 2^34 per thread: unique for up to 64 threads, below 2^53 (exact in JSON).
  base = (tonumber(args[2]) or 0) + tid * 17179869184
  offer = args[3] or "1"
  n = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Telegram-Bot-Api-Secret-Token"] = secret
end

local kinds = {"start", "text", "start", "callback", "start", "text", "start", "callback",
               "start", "text"}

function request()
  n = n + 1
  local uid = string.format("%.0f", base + n)
  local now = os.time()
  local kind = kinds[(n % 10) + 1]
  local body
  if kind == "callback" then
    body = '{"update_id":' .. uid .. ',"callback_query":{"id":"' .. uid ..
      '","from":{"id":' .. uid .. ',"is_bot":false,"first_name":"Lead"},' ..
      '"message":{"message_id":1,"chat":{"id":' .. uid .. ',"type":"private"},"date":' ..
      now .. '},"chat_instance":"' .. uid .. '","data":"buy:' .. offer .. '"}}'
  else
    local text
    if kind == "start" then
      text = "/start " .. string.rep("0", 32 - #uid) .. uid  -- 32 chars, like a tracking token
    else
      text = "quanto custa? " .. uid
    end
    body = '{"update_id":' .. uid .. ',"message":{"message_id":' .. n .. ',"date":' .. now ..
      ',"chat":{"id":' .. uid .. ',"type":"private"},"from":{"id":' .. uid ..
      ',"is_bot":false,"first_name":"Lead"},"text":"' .. text .. '"}}'
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local out = string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_ms":{"mean":%.3f,"stdev":%.3f,"max":%.3f,"p50":%.3f,"p75":%.3f,"p90":%.3f,' ..
    '"p99":%.3f,"p999":%.3f}}',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean / 1000, latency.stdev / 1000, latency.max / 1000,
    latency:percentile(50) / 1000, latency:percentile(75) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000)
  local report = os.getenv("WRK_REPORT")
  if report and report ~= "" then
    local f = assert(io.open(report, "w"))
    f:write(out, "\n")
    f:close()
  end
  io.write(out, "\n")
end
