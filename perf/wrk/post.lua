-- POST one fixed body (the file named after "--") and print a JSON summary when done.
-- Usage: wrk -t1 -c32 -d10s -s perf/wrk/post.lua http://127.0.0.1:8000/predict -- body.json

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = file:read("*a")
   file:close()
end

-- No response() callback: it would make wrk parse every body in Lua. Non-2xx/3xx answers are
-- counted by wrk itself (errors.status).
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
