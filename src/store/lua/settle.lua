-- rategate: what happens after the decision, off the request's critical path: the
-- count-by-response charge, lease renewal and release, and the refund of a group that charged
-- for a request another group rejected. Mirrors `algorithm::charge` and the lease and refund
-- rules of the store contract (src/store/mod.rs). All KEYS are counters of one slot.
-- ARGV[2] operation, ARGV[3] cost, ARGV[4] number of counters n, ARGV[5] lease id, ARGV[6] the
-- request's id; ARGV[7 ...] per counter POLICY_WIDTH arguments (policy_args), then (refund only)
-- one mark per counter, as the check returned it.
--   charge  add cost units to every counter                               -> 1
--   renew   move the lease's expiry on each concurrency counter holding it -> counters held
--   release remove the lease from each concurrency counter                -> counters held
--   refund  take back what the check charged                              -> 1
begin_call()
local op = ARGV[2]
local c = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local lease = ARGV[5]
local nonce = ARGV[6]

local function each(f)
  local r = 0
  for i = 1, n do
    r = r + (f(KEYS[i], policy_args(7 + POLICY_WIDTH * (i - 1)), tonumber(ARGV[7 + POLICY_WIDTH * n + i - 1])) or 0)
  end
  return r
end

-- Count by response: add c units whatever the limit (token bucket: clamped at empty), on the
-- window the check would use now.
local function charge(key, p)
  local w = p.window
  if p.alg == 'f' then
    local now, skew, start, count = fixed_state(redis.call('GET', key), w)
    fixed_store(key, start, count + c, start + w - now + skew)
  elseif p.alg == 's' then
    local now, skew, start, prev, cur, weight = sliding_state(redis.call('GET', key), w)
    sliding_store(key, start, prev, cur + c, weight + w + skew)
  elseif p.alg == 'l' then
    local now, skew, nts, count = log_state(key, w)
    log_add(key, now, w, c, count, '')
    redis.call('PEXPIRE', key, w + skew + pad)
  elseif p.alg == 't' then
    local now, skew, units, rate, cap = bucket_state(redis.call('GET', key), p.limit, w, p.burst)
    local left = units - c * w
    if left < 0 then left = 0 end
    bucket_store(key, now, skew, left, rate, cap)
  end
end

-- Refund: the exact units this request's check charged, from the window they went to (a window
-- that has since ended keeps its count: a fixed window is gone, a sliding window's previous
-- window is reduced); log members named by the request's id; tokens given back up to the burst;
-- the lease released. Never below zero.
local function refund(key, p, mark)
  local w = p.window
  if p.alg == 'f' then
    local ss, sc = fields(redis.call('GET', key))
    if ss and ss == mark then
      redis.call('SET', key, string.format('%d:%d', ss, math.max(sc - c, 0)), 'KEEPTTL')
    end
  elseif p.alg == 's' then
    local ss, sp, sc = fields(redis.call('GET', key))
    if ss and sc and ss == mark then
      sc = math.max(sc - c, 0)
    elseif ss and sc and ss == mark + w then
      sp = math.max(sp - c, 0)
    else
      ss = nil
    end
    if ss then
      redis.call('SET', key, string.format('%d:%d:%d', ss, sp, sc), 'KEEPTTL')
    end
  elseif p.alg == 'l' then
    for i = 1, c do redis.call('ZREM', key, nonce .. ':' .. i) end
  elseif p.alg == 't' then
    local su, st = fields(redis.call('GET', key))
    if su and st then
      local back = su + c * w
      if back > p.burst * w then back = p.burst * w end
      redis.call('SET', key, string.format('%d:%d', back, st), 'KEEPTTL')
    end
  elseif p.alg == 'c' then
    redis.call('ZREM', key, lease)
  end
end

if op == 'charge' then
  if c < 1 then return 1 end
  each(charge)
  return 1
end

if op == 'refund' then
  each(refund)
  return 1
end

if op == 'renew' then
  return each(function(key, p)
    local e = tonumber(redis.call('ZSCORE', key, lease) or '')
    -- a lease already expired may have been reclaimed: it is never revived
    if e and e > now0 then
      redis.call('ZADD', key, now0 + p.window, lease)
      if redis.call('PTTL', key) < p.window + pad then redis.call('PEXPIRE', key, p.window + pad) end
      return 1
    end
    return 0
  end)
end

if op == 'release' then
  return each(function(key) return redis.call('ZREM', key, lease) end)
end

return redis.error_reply('unknown operation ' .. tostring(op))
