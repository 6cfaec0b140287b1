-- POST one fixed body, pausing a fixed number of milliseconds before each request on a
-- connection (wrk's delay()), so connections x pause sets an approximate rate; prints a JSON
-- summary when done (as post.lua).
-- Usage: wrk -t1 -c8 -d60s -s perf/wrk/paced.lua http://127.0.0.1:8000/predict -- body.json 5

local pause = 0

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = file:read("*a")
   file:close()
   pause = tonumber(args[2] or "0")
end

function delay()
   return pause
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write("WRK_JSON ")
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
      '"p50": %d, "p90": %d, "p95": %d, "p99": %d, "p99.9": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency:percentile(99.9)))
end
