-- Shared by every wrk run of the load harness: print one machine-readable line that run.sh parses.
-- Latency percentiles are in microseconds. No response() callback on purpose: defining one makes
-- wrk parse every response through Lua, which would slow the load generator, not the target.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d sock_errors=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
