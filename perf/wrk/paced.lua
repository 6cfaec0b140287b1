-- POST one fixed body at a fixed offered rate (requests per second, over all connections of the
-- thread): each request is booked the next free slot of a schedule one interval apart, and wrk's
-- delay() waits until that slot. The rate does not fall when the server slows down (as it would
-- with a fixed pause per connection) as long as some connection is free; a schedule more than one
-- second behind is restarted from now rather than sent in one burst. Prints a JSON summary when
-- done (as post.lua). Run it with one thread (-t1): the schedule is per thread.
-- Usage: wrk -t1 -c64 -d60s -s perf/wrk/paced.lua http://127.0.0.1:8000/predict -- body.json 3000

local ffi = require("ffi")  -- wrk is built with LuaJIT; its Lua has no clock finer than seconds
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock_id, paced_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("paced_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
   return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local interval_ms = 0
local next_ms = nil

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.body = file:read("*a")
   file:close()
   interval_ms = 1000 / assert(tonumber(args[2]), "the second argument is the rate, req/s")
end

function delay()
   local now = now_ms()
   if next_ms == nil or next_ms < now - 1000 then
      next_ms = now
   end
   local slot = next_ms
   next_ms = next_ms + interval_ms
   return math.max(0, math.floor(slot - now + 0.5))
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
