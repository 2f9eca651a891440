-- Every request carries X-Forwarded-For with a client address from a pool of CLIENTS distinct
-- IPv4 addresses (10.0.0.0/8, walked in order). The gateway trusts 127.0.0.1, so each address is a
-- distinct client with its own counters; nginx forwards the header the same way.
-- CLIENTS  size of the address pool (default 10000)
-- STOP_AT  stop after this many requests in total (0: run for wrk's -d), for the 1M-clients run
dofile(os.getenv("LOAD_DIR") .. "/report.lua")

local clients = tonumber(os.getenv("CLIENTS") or "10000")
local stop_at = tonumber(os.getenv("STOP_AT") or "0")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  nthreads = tonumber(os.getenv("THREADS") or "2")
  i = 0
  path = wrk.path
  -- Small pools are pre-built so the Lua cost per request is a table lookup.
  if clients <= 100000 then
    cache = {}
  end
end

local function addr(n)
  return string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

function request()
  local n = i * nthreads + id
  i = i + 1
  if stop_at > 0 and n >= stop_at and wrk.thread then
    wrk.thread:stop()
  end
  n = n % clients
  if cache then
    local r = cache[n]
    if r == nil then
      r = wrk.format(nil, path, { ["X-Forwarded-For"] = addr(n) })
      cache[n] = r
    end
    return r
  end
  return wrk.format(nil, path, { ["X-Forwarded-For"] = addr(n) })
end
