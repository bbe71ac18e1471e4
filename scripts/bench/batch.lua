-- wrk: batches of BATCH transactions per request (default 100), unique ids.
-- Accounts: ACCOUNTS_FILE lists the ids of active USD accounts, one per line.
local ids = {}
for line in io.lines(os.getenv("ACCOUNTS_FILE")) do ids[#ids + 1] = line end
local counter = 0
local thread_id = 0
local batch = tonumber(os.getenv("BATCH") or "100")
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  local items = {}
  for i = 1, batch do
    counter = counter + 1
    local src = (counter * 7919 + thread_id * 31) % #ids + 1
    local dst = (src + 17) % #ids + 1
    items[i] = string.format(
      '{"id":"b%d-%d-%d","timestamp":"2026-01-05T10:%02d:%02dZ","kind":"payment","source":"%s","destination":"%s","amount":"%d.%02d","currency":"USD","country":"US"}',
      os.time(), thread_id, counter, math.floor(counter / 60) % 60, counter % 60, ids[src], ids[dst], counter % 400 + 1, counter % 100)
  end
  return wrk.format("POST", "/v1/transactions:batch", {["Content-Type"] = "application/json"}, "[" .. table.concat(items, ",") .. "]")
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors_status=%d rps=%.0f tx_per_s=%.0f p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.errors.status, summary.requests / (summary.duration / 1e6),
    summary.requests * batch / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
