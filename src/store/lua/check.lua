-- rategate: a batch of checks, one group of each of several requests (all of a group's keys in
-- one cluster slot), evaluated one request after the other in the order sent. Each request is
-- what one call used to be: the client's block entry when its group holds it, then the group's
-- policies, check-all-then-charge-all within the group; Lua runs the whole batch atomically, so
-- each request is atomic too, and sees every earlier request's charges. The cross-group rules
-- are in src/store/mod.rs and src/store/redis/groups.rs; the batching in src/store/redis/batch.rs.
--
-- ARGV[1]  now in ms, or "" to use the server clock (TIME, read once for the batch); only tests
--          pass a value
-- ARGV[2]  number of requests r
-- then per request, its header (HEADER arguments, read by `request_at`):
--   cost
--   1 when the request's first key is the client's block entry, else 0
--   number of policies n
--   the request's lease id (member of concurrency sets; "" when there are none)
--   the request's id (members of sliding logs, so a refund can remove them; may be "")
--   1: the request's only group (it blocks the client itself); 0: one of several (it never
--      blocks, and when it charges it also returns what a refund needs)
--   number of revocation entries v (0 to 2: the token's `jti` and `sub` entries this group holds)
--   the token's iat in seconds, or -1 (none)
-- followed by POLICY_WIDTH arguments per policy read by policy_args (layout in args.rs), unless
-- the script was compiled for the batch's policies: then COMPILED (defined before the prelude)
-- holds them as tables with the same fields, and no policy is sent (src/store/redis.rs,
-- `Compiled`).
-- KEYS, per request in the same order: its v revocation entries, its block entry (when it has
-- one), then one counter per policy (string; sorted set for sliding_log and concurrency).
--
-- Returns one reply per request: {outcome, arg, now, blocked_policy, blocked_ms, then per
-- policy: allowed, limit, remaining, reset_ms, retry_ms}. outcome: 0 allowed, 1 limited (arg =
-- policy index, 0-based), 2 blocked (arg = ms left), 3 this request failed (arg = the error's
-- text; the other requests of the batch are unaffected), 4 the token is revoked (nothing
-- charged). blocked_policy is -1 unless this call
-- started a block. When the request is one of several groups and its group admitted, then per
-- policy: charged (1|0), remaining and reset_ms before the charge, and the charge's mark (the
-- window start it went to; 0 for other algorithms).

local HEADER = 8

-- Where request data starts: its keys at KEYS[kb], its header at ARGV[ab]. Returns the request
-- (named fields; `key(i)` is the KEYS index of its i-th counter) and where the next one starts.
local function request_at(kb, ab)
  local q = {
    cost = tonumber(ARGV[ab]),
    has_block = ARGV[ab + 1] == '1',
    n = tonumber(ARGV[ab + 2]),
    lease = ARGV[ab + 3],
    nonce = ARGV[ab + 4],
    single = ARGV[ab + 5] == '1',
    revs = tonumber(ARGV[ab + 6]),
    iat = tonumber(ARGV[ab + 7]),
  }
  q.block_key = kb + q.revs
  q.first = q.block_key
  if q.has_block then q.first = q.block_key + 1 end
  local next_ab = ab + HEADER
  if COMPILED then
    q.policies = COMPILED
  else
    q.policies = {}
    for i = 1, q.n do q.policies[i] = policy_args(next_ab + POLICY_WIDTH * (i - 1)) end
    next_ab = next_ab + POLICY_WIDTH * q.n
  end
  return q, q.first + q.n, next_ab
end

-- Each evaluator returns: allowed, state {limit, remaining, reset, retry}, charged state (or
-- nil), a function that writes the charge, and the charge's mark.
local function fixed(key, raw, limit, w, c)
  local now, skew, start, count = fixed_state(raw, w)
  local end_in = start + w - now
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
    fixed_store(key, start, count + c, end_in + skew)
  end, start
end

local function sliding(key, raw, limit, w, c)
  local now, skew, start, prev, cur, weight = sliding_state(raw, w)
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
    sliding_store(key, start, prev, cur + c, weight + w + skew)
  end, start
end

local function log(key, limit, w, c, nonce)
  local now, skew, nts, count = log_state(key, w)
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
    log_add(key, now, w, c, count, nonce)
    redis.call('PEXPIRE', key, w + skew + pad)
  end, 0
end

local function bucket(key, raw, limit, w, burst, c)
  local now, skew, units, rate, cap = bucket_state(raw, limit, w, burst)
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
  return true, state, {burst, fdiv(left, w), shift(cdiv(cap - left, rate), skew), 0}, function()
    bucket_store(key, now, skew, left, rate, cap)
  end, 0
end

-- Concurrency: a sorted set of leases, member = lease id, score = expiry; a lease is live while
-- its expiry > now, so the leases of a crashed instance are reclaimed by expiry alone.
local function conc(key, limit, w, c, lease)
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
  end, 0
end


-- One request's check (see the header): its reply.
local function check_request(q)
  local cost, n, policies, first = q.cost, q.n, q.policies, q.first
  if COMPILED and #COMPILED ~= n then
    return {3, 'the request does not match the compiled policies'}
  end

  -- One MGET reads the revocation entries, the block entry and every string counter of the
  -- group (one slot).
  local reads, at = {}, {}
  for j = 1, q.revs do reads[j] = KEYS[q.block_key - q.revs + j - 1] end
  if q.has_block then reads[#reads + 1] = KEYS[q.block_key] end
  for i = 1, n do
    local a = policies[i].alg
    if a == 'f' or a == 's' or a == 't' then
      reads[#reads + 1] = KEYS[first + i - 1]
      at[i] = #reads
    end
  end
  local values = {}
  if #reads > 0 then values = redis.call('MGET', unpack(reads)) end

  for j = 1, q.revs do
    if revokes(values[j], q.iat) then return {4, 0, now0, -1, 0} end
  end

  if q.has_block then
    local until_ms = block_of(values[q.revs + 1])
    if until_ms > now0 then return {2, until_ms - now0, now0, -1, 0} end
  end

  local allowed, states, charged, writes, marks = {}, {}, {}, {}, {}
  local rejected = -1
  for i = 1, n do
    local p = policies[i]
    local key = KEYS[first + i - 1]
    local raw = at[i] and values[at[i]]
    local ok, st, ch, wr, mk
    if p.alg == 'f' then
      ok, st, ch, wr, mk = fixed(key, raw, p.limit, p.window, cost)
    elseif p.alg == 's' then
      ok, st, ch, wr, mk = sliding(key, raw, p.limit, p.window, cost)
    elseif p.alg == 'l' then
      ok, st, ch, wr, mk = log(key, p.limit, p.window, cost, q.nonce)
    elseif p.alg == 'c' then
      if cost > 0 and q.lease == '' then
        return {3, 'a concurrency policy needs the request lease id'}
      end
      ok, st, ch, wr, mk = conc(key, p.limit, p.window, cost, q.lease)
    else
      ok, st, ch, wr, mk = bucket(key, raw, p.limit, p.window, p.burst, cost)
    end
    allowed[i], states[i], charged[i], writes[i], marks[i] = ok, st, ch, wr, mk
    if not ok and rejected < 0 and p.enforce == 1 then rejected = i end
  end

  local function push_states(out)
    for i = 1, n do
      local a = 0
      if allowed[i] then a = 1 end
      out[#out + 1] = a
      for j = 1, 4 do out[#out + 1] = states[i][j] end
    end
    return out
  end

  if rejected >= 0 then
    local out = {1, rejected - 1, now0, -1, 0}
    if q.single and q.has_block then
      -- block for the longest effective block among rejecting enforce policies
      local cands, index = {}, {}
      for i = 1, n do
        if not allowed[i] and policies[i].enforce == 1 then
          cands[#cands + 1] = policies[i]
          index[#cands] = i
        end
      end
      local best, ms = penalize(KEYS[q.block_key], cands)
      if best > 0 then out[4], out[5] = index[best] - 1, ms end
    end
    return push_states(out)
  end

  local before, did = {}, {}
  for i = 1, n do
    before[i] = states[i]
    did[i] = 0
    -- deferred policies are charged after the response (settle.lua)
    if allowed[i] and charged[i] and policies[i].deferred ~= 1 then
      writes[i]()
      states[i] = charged[i]
      did[i] = 1
    end
  end
  local out = push_states({0, 0, now0, -1, 0})
  if not q.single then
    for i = 1, n do
      out[#out + 1] = did[i]
      out[#out + 1] = before[i][2]
      out[#out + 1] = before[i][3]
      out[#out + 1] = marks[i] or 0
    end
  end
  return out
end

-- The batch: each request on its own, in order. A request that fails (a Redis error raised by
-- one of its commands, or a Lua error) answers outcome 3; the requests after it still run.
local replies = {}
local kb, ab = 1, 3
for r = 1, tonumber(ARGV[2]) do
  local q
  q, kb, ab = request_at(kb, ab)
  local ok, reply = pcall(check_request, q)
  if not ok then
    if type(reply) == 'table' then reply = reply.err end
    reply = {3, tostring(reply)}
  end
  replies[r] = reply
end
return replies
