-- rategate: what happens after the decision, off the request's critical path (the common prelude
-- is prepended at load time). Mirrors `algorithm::charge` and the lease rules of the store
-- contract (src/store/mod.rs).
-- KEYS[1] blocks, KEYS[2] reasons (unused here; the prelude expects them), KEYS[3..] counters
-- ARGV[2] operation, ARGV[3] argument, ARGV[4] number of counters n:
--   charge  ARGV[3] cost; per counter ARGV[5 + 4*(i-1) ...]: algorithm (f|s|l|t|c), limit,
--           window ms, burst                                                   -> 1
--   renew   ARGV[3] lease id; per counter ARGV[4 + i]: lease ms          -> counters still held
--   release ARGV[3] lease id                                               -> counters held
local op = ARGV[2]
local n = tonumber(ARGV[4])

-- Count by response: add c units whatever the limit (token bucket: clamped at empty). Each
-- computes the window/refill exactly as the check script does.
local function charge_fixed(key, w, c)
  local h = redis.call('HMGET', key, 's', 'c')
  local ss, sc = tonumber(h[1]), tonumber(h[2]) or 0
  local now = now0
  if ss and ss > now then now = ss end
  local start = fdiv(now, w) * w
  local count = 0
  if ss == start then count = sc end
  redis.call('HSET', key, 's', start, 'c', count + c)
  redis.call('PEXPIRE', key, start + w - now + (now - now0) + pad)
end

local function charge_sliding(key, w, c)
  local h = redis.call('HMGET', key, 's', 'p', 'c')
  local ss, sp, sc = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  local now = now0
  if ss and ss > now then now = ss end
  local start = fdiv(now, w) * w
  local prev, cur = 0, 0
  if ss == start then
    prev, cur = sp, sc
  elseif ss and ss + w == start then
    prev, cur = sc, 0
  end
  local weight = w - (now - start)
  redis.call('HSET', key, 's', start, 'p', prev, 'c', cur + c)
  redis.call('PEXPIRE', key, weight + w + (now - now0) + pad)
end

local function charge_log(key, w, c)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local nts = tonumber(newest[2])
  local now = now0
  if nts and nts > now then now = nts end
  local count = redis.call('ZCOUNT', key, '(' .. (now - w), '+inf')
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
  -- members are unique: within one millisecond the live count only grows
  for i = 1, c do
    redis.call('ZADD', key, now, now .. ':' .. (count + i))
  end
  redis.call('PEXPIRE', key, w + (now - now0) + pad)
end

local function charge_bucket(key, limit, w, burst, c)
  local h = redis.call('HMGET', key, 'u', 't')
  local su, st = tonumber(h[1]), tonumber(h[2])
  local rate = limit
  if rate < 1 then rate = 1 end
  local cap = burst * w
  local now, units = now0, cap
  if su and st then
    if st > now then now = st end
    local have = su
    if have > cap then have = cap end
    local refill = (now - st) * rate
    if refill >= cap - have then units = cap else units = have + refill end
  end
  local left = units - c * w
  if left < 0 then left = 0 end
  redis.call('HSET', key, 'u', left, 't', now)
  local px = cdiv(cap - left, rate)
  if px < 1 then px = 1 end
  redis.call('PEXPIRE', key, px + (now - now0) + pad)
end

if op == 'charge' then
  local c = tonumber(ARGV[3])
  if c < 1 then return 1 end
  for i = 1, n do
    local b = 5 + 4 * (i - 1)
    local alg = ARGV[b]
    local limit, w, burst = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local key = KEYS[2 + i]
    if alg == 'f' then
      charge_fixed(key, w, c)
    elseif alg == 's' then
      charge_sliding(key, w, c)
    elseif alg == 'l' then
      charge_log(key, w, c)
    elseif alg == 't' then
      charge_bucket(key, limit, w, burst, c)
    end
  end
  return 1
end

if op == 'renew' then
  local lease, held = ARGV[3], 0
  for i = 1, n do
    local key, w = KEYS[2 + i], tonumber(ARGV[4 + i])
    local e = tonumber(redis.call('ZSCORE', key, lease) or '')
    -- a lease already expired may have been reclaimed: it is never revived
    if e and e > now0 then
      redis.call('ZADD', key, now0 + w, lease)
      if redis.call('PTTL', key) < w + pad then redis.call('PEXPIRE', key, w + pad) end
      held = held + 1
    end
  end
  return held
end

if op == 'release' then
  local lease, held = ARGV[3], 0
  for i = 1, n do
    held = held + redis.call('ZREM', KEYS[2 + i], lease)
  end
  return held
end

return redis.error_reply('unknown operation ' .. tostring(op))
