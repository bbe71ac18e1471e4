-- wrk: one transaction per request, unique ids, sources spread over the
-- active USD accounts, so every request runs all nine rules.
-- Accounts: ACCOUNTS_FILE lists the ids of active USD accounts, one per line.
local ids = {}
for line in io.lines(os.getenv("ACCOUNTS_FILE")) do ids[#ids + 1] = line end
local counter = 0
local thread_id = 0
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local src = (counter * 7919 + thread_id * 31) % #ids + 1
  local dst = (src + 17) % #ids + 1
  local body = string.format(
    '{"id":"w%d-%d-%d","timestamp":"2026-01-05T10:%02d:%02dZ","kind":"payment","source":"%s","destination":"%s","amount":"%d.%02d","currency":"USD","country":"US"}',
    os.time(), thread_id, counter, math.floor(counter / 60) % 60, counter % 60, ids[src], ids[dst], counter % 400 + 1, counter % 100)
  return wrk.format("POST", "/v1/transactions", {["Content-Type"] = "application/json"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors_status=%d rps=%.0f p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.errors.status, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
