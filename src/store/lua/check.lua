-- rategate: one request's block check and every policy of its route, check-all-then-charge-all.
-- This mirrors src/store/algorithm.rs line by line (integer arithmetic on millisecond
-- timestamps; Lua numbers are doubles, exact up to 2^53, which config validation guarantees).
--
-- KEYS[1]  blocks: sorted set, client -> until (ms)
-- KEYS[2]  block reasons: hash, client -> reason
-- KEYS[3..] one counter per policy (hash; sorted set for sliding_log and concurrency)
-- ARGV[1]  now in ms, or "" to use the server clock (TIME); only tests pass a value
-- ARGV[2]  cost
-- ARGV[3]  client key (member of the block index)
-- ARGV[4]  number of policies n
-- ARGV[5]  the request's lease id (member of concurrency sets; "" when there are none)
-- ARGV[6 + 10*(i-1) ...] per policy: algorithm (f|s|l|t|c), limit, window ms (concurrency: the
--          lease), burst, enforce (1|0), block_for ms (0 = none), deferred (1|0: checked but
--          charged after the response), block multiplier (0 = no escalation), block max ms,
--          block memory ms
-- ARGV[6 + 10*n + (i-1)] per policy: name (for the block reason and offence records)
--
-- Offences of escalating policies: <base>off:<policy name>|<client>, a hash {n, f = forget at}.
--
-- Returns {outcome, arg, now, blocked_policy, blocked_ms, then per policy: allowed, limit,
-- remaining, reset_ms, retry_ms}. outcome: 0 allowed, 1 limited (arg = policy index, 0-based),
-- 2 blocked (arg = ms left). blocked_policy is -1 unless this request started a block.

local cost = tonumber(ARGV[2])
local client = ARGV[3]
local n = tonumber(ARGV[4])
local lease = ARGV[5]
local P = 10
local names = 6 + P * n

local until_ms = tonumber(redis.call('ZSCORE', KEYS[1], client) or '0') or 0
if until_ms > now0 then
  suspect(client)
  return {2, until_ms - now0, now0, -1, 0}
end

-- Each evaluator returns: allowed, state {limit, remaining, reset, retry}, charged state (or
-- nil), and a function that writes the charge.
local function fixed(key, limit, w, c)
  local h = redis.call('HMGET', key, 's', 'c')
  local ss, sc = tonumber(h[1]), tonumber(h[2]) or 0
  local now = now0
  if ss and ss > now then now = ss end
  local skew = now - now0
  local start = fdiv(now, w) * w
  local end_in = start + w - now
  local count = 0
  if ss == start then count = sc end
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if count > 0 then reset = end_in end
  if c > limit or count + c > limit then
    local retry = end_in
    if c > limit then retry = w end
    return false, {limit, remaining, shift(reset, skew), shift(retry, skew)}
  end
  local state = {limit, remaining, shift(reset, skew), 0}
  if c == 0 then return true, state end
  return true, state, {limit, remaining - c, shift(end_in, skew), 0}, function()
    redis.call('HSET', key, 's', start, 'c', count + c)
    redis.call('PEXPIRE', key, end_in + skew + pad)
  end
end

local function sliding(key, limit, w, c)
  local h = redis.call('HMGET', key, 's', 'p', 'c')
  local ss, sp, sc = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
  local now = now0
  if ss and ss > now then now = ss end
  local skew = now - now0
  local start = fdiv(now, w) * w
  local prev, cur = 0, 0
  if ss == start then
    prev, cur = sp, sc
  elseif ss and ss + w == start then
    prev, cur = sc, 0
  end
  local weight = w - (now - start)
  local est = prev * weight + cur * w
  local free = limit * w - est
  if free < 0 then free = 0 end
  local remaining = fdiv(free, w)
  local reset = 0
  if cur > 0 then reset = weight + w elseif prev > 0 then reset = weight end
  if c > limit or c * w > free then
    local retry
    if c > limit then
      retry = w
    elseif cur + c <= limit then
      local p = prev
      if p < 1 then p = 1 end
      retry = weight - fdiv((limit - cur - c) * w, p)
    else
      local cc = cur
      if cc < 1 then cc = 1 end
      retry = weight + w - fdiv((limit - c) * w, cc)
    end
    return false, {limit, remaining, shift(reset, skew), shift(retry, skew)}
  end
  local state = {limit, remaining, shift(reset, skew), 0}
  if c == 0 then return true, state end
  return true, state, {limit, fdiv(free - c * w, w), shift(weight + w, skew), 0}, function()
    redis.call('HSET', key, 's', start, 'p', prev, 'c', cur + c)
    redis.call('PEXPIRE', key, weight + w + skew + pad)
  end
end

local function log(key, limit, w, c)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local nts = tonumber(newest[2])
  local now = now0
  if nts and nts > now then now = nts end
  local skew = now - now0
  -- a unit admitted at ts is live while ts + w > now
  local count = redis.call('ZCOUNT', key, '(' .. (now - w), '+inf')
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if nts and count > 0 then reset = nts + w - now end
  if c > limit or count + c > limit then
    local retry = w
    if nts and c <= limit then
      local need = count + c - limit
      local kth = redis.call('ZRANGEBYSCORE', key, '(' .. (now - w), '+inf', 'WITHSCORES',
        'LIMIT', need - 1, 1)
      if kth[2] then retry = tonumber(kth[2]) + w - now end
    end
    return false, {limit, remaining, shift(reset, skew), shift(retry, skew)}
  end
  local state = {limit, remaining, shift(reset, skew), 0}
  if c == 0 then return true, state end
  return true, state, {limit, remaining - c, shift(w, skew), 0}, function()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
    -- members are unique: within one millisecond the live count only grows
    for i = 1, c do
      redis.call('ZADD', key, now, now .. ':' .. (count + i))
    end
    redis.call('PEXPIRE', key, w + skew + pad)
  end
end

local function bucket(key, limit, w, burst, c)
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
  local skew = now - now0
  local remaining = fdiv(units, w)
  local reset = cdiv(cap - units, rate)
  if c > burst or units < c * w then
    local retry
    if c > burst then retry = w else retry = cdiv(c * w - units, rate) end
    return false, {burst, remaining, shift(reset, skew), shift(retry, skew)}
  end
  local state = {burst, remaining, shift(reset, skew), 0}
  if c == 0 then return true, state end
  local left = units - c * w
  local ttl = cdiv(cap - left, rate)
  return true, state, {burst, fdiv(left, w), shift(ttl, skew), 0}, function()
    redis.call('HSET', key, 'u', left, 't', now)
    local px = ttl + skew
    if px < 1 then px = 1 end
    redis.call('PEXPIRE', key, px + pad)
  end
end

-- Concurrency: a sorted set of leases, member = lease id, score = expiry; a lease is live while
-- its expiry > now, so the leases of a crashed instance are reclaimed by expiry alone.
local function conc(key, limit, w, c)
  local live = redis.call('ZCOUNT', key, '(' .. now0, '+inf')
  local remaining = limit - live
  if remaining < 0 then remaining = 0 end
  if live + 1 > limit then
    local retry = CONCURRENCY_RETRY_MS
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. now0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] and tonumber(first[2]) - now0 < retry then retry = tonumber(first[2]) - now0 end
    return false, {limit, remaining, 0, retry}
  end
  local state = {limit, remaining, 0, 0}
  if c == 0 then return true, state end
  return true, state, {limit, remaining - 1, 0, 0}, function()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now0)
    redis.call('ZADD', key, now0 + w, lease)
    -- the set lives as long as its latest lease
    if redis.call('PTTL', key) < w + pad then redis.call('PEXPIRE', key, w + pad) end
  end
end

local allowed, states, charged, writes = {}, {}, {}, {}
local rejected = -1
for i = 1, n do
  local b = 6 + P * (i - 1)
  local alg = ARGV[b]
  local limit, w, burst = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local key = KEYS[2 + i]
  local ok, st, ch, wr
  if alg == 'f' then
    ok, st, ch, wr = fixed(key, limit, w, cost)
  elseif alg == 's' then
    ok, st, ch, wr = sliding(key, limit, w, cost)
  elseif alg == 'l' then
    ok, st, ch, wr = log(key, limit, w, cost)
  elseif alg == 'c' then
    if cost > 0 and lease == '' then
      return redis.error_reply('a concurrency policy needs the request lease id')
    end
    ok, st, ch, wr = conc(key, limit, w, cost)
  else
    ok, st, ch, wr = bucket(key, limit, w, burst, cost)
  end
  allowed[i], states[i], charged[i], writes[i] = ok, st, ch, wr
  if not ok and rejected < 0 and ARGV[b + 4] == '1' then rejected = i end
end

local function offence_key(i)
  return base .. 'off:' .. ARGV[names + i - 1] .. '|' .. client
end

local out = {0, 0, now0, -1, 0}
if rejected >= 0 then
  out[1], out[2] = 1, rejected - 1
  -- block for the longest effective block among rejecting enforce policies (first on a tie);
  -- an escalating policy multiplies its block_for once per remembered offence, up to its max
  local best, best_ms, best_prev = -1, 0, 0
  for i = 1, n do
    local b = 6 + P * (i - 1)
    local ms = tonumber(ARGV[b + 5])
    if not allowed[i] and ARGV[b + 4] == '1' and ms > 0 then
      local mult, max = tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
      local prev = 0
      if mult > 0 then
        local o = redis.call('HMGET', offence_key(i), 'n', 'f')
        local on, of = tonumber(o[1]), tonumber(o[2])
        if on and of and now0 < of then prev = on end
        local k = 0
        while k < prev and ms < max do
          ms = ms * mult
          if ms > max then ms = max end
          k = k + 1
        end
      end
      if ms > best_ms then best, best_ms, best_prev = i, ms, prev end
    end
  end
  suspect(client)
  limited_event(client, ARGV[names + (rejected - 1)])
  if best > 0 then
    local name = ARGV[names + (best - 1)]
    block(client, now0 + best_ms, 'policy:' .. name, best_ms + pad)
    local b = 6 + P * (best - 1)
    if tonumber(ARGV[b + 7]) > 0 then
      -- remembered for block_memory after the block ends
      local memory = tonumber(ARGV[b + 9])
      local k = offence_key(best)
      redis.call('HSET', k, 'n', best_prev + 1, 'f', now0 + best_ms + memory)
      redis.call('PEXPIRE', k, best_ms + memory + pad)
    end
    event({client = client, kind = 'blocked', policy = name, reason = 'policy:' .. name,
      ttl_ms = best_ms})
    out[4], out[5] = best - 1, best_ms
  end
  for i = 1, n do
    local s = states[i]
    local a = 0
    if allowed[i] then a = 1 end
    out[#out + 1] = a
    for j = 1, 4 do out[#out + 1] = s[j] end
  end
  return out
end

for i = 1, n do
  local s = states[i]
  -- deferred policies are charged after the response (settle.lua)
  if allowed[i] and charged[i] and ARGV[6 + P * (i - 1) + 6] ~= '1' then
    writes[i]()
    s = charged[i]
  end
  local a = 0
  if allowed[i] then a = 1 end
  out[#out + 1] = a
  for j = 1, 4 do out[#out + 1] = s[j] end
end
return out
