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
-- then per request, its header (read by `header`):
--   cost
--   its shape, one integer: n * SHAPE_N + v * SHAPE_REVS, plus SHAPE_NONCE when the request id
--     follows, SHAPE_LEASE when the lease id follows, SHAPE_SINGLE when this is the request's
--     only group (it blocks the client itself; otherwise it never blocks, and when it charges
--     it also returns what a refund needs), SHAPE_BLOCK when its first key (after the
--     revocation entries) is the client's block entry; n is its number of policies, v its
--     number of revocation entries (0 to 2: the token's `jti` and `sub` entries this group
--     holds). The constants are in the prelude (src/store/redis/args.rs).
--   the request's lease id (member of concurrency sets), when the shape says so
--   the request's id (members of sliding logs, so a refund can remove them), when it says so
--   the token's iat in seconds, or -1 (none), when v > 0
-- followed by POLICY_WIDTH arguments per policy read by policy_args (layout in args.rs), unless
-- the script was compiled for the batch's policies: then COMPILED (defined before the prelude)
-- holds them as tables with the same fields, and no policy is sent (src/store/redis.rs,
-- `Compiled`).
-- KEYS, per request in the same order: its v revocation entries, its block entry (when it has
-- one), then one counter per policy (string; sorted set for sliding_log and concurrency).
--
-- Before the first request runs, one MGET reads every string key of the call (revocation and
-- block entries, fixed window, sliding window and token bucket counters) into `vals`; a charge
-- writes its counter there, so a request sees the charges of the earlier requests of its call
-- (a block started by one is read again with GET), and each charged counter is written to Redis
-- once, after the last request (`dirty`).
--
-- Returns one reply per request: its outcome, then for 0 (allowed): now; 1 (limited): the
-- policy index (0-based), now, blocked_policy (-1 unless this call started a block),
-- blocked_ms; 2 (blocked): ms left, now; 3 (this request failed; the other requests of the
-- batch are unaffected): the error's text; 4 (the token is revoked, nothing charged): 0, now.
-- After the head of an allowed or limited request, per policy: allowed, limit, remaining,
-- reset_ms, retry_ms. When the request is one of several groups and its group admitted, then per
-- policy: charged (1|0), remaining and reset_ms before the charge, and the charge's mark (the
-- window start it went to; 0 for other algorithms).
-- Every reply but outcome 3's is one string of those integers, each a big-endian signed 8-byte
-- integer (`packed`), so that the gateway reads one frame per request rather than one per
-- integer; outcome 3's (rare: a caught error) is the list {3, text}. The integers are exact:
-- struct.pack converts a double as Redis converts a number it replies (a C cast to a 64-bit
-- integer, fractions dropped), and everything the script computes stays below 2^53, where
-- doubles hold every integer (config bounds limit * window and burst * window by 2^53 ms and
-- blocks by a year: src/config/validate/check.rs; now is about 2^41 ms).

-- The header of the request at ARGV[ab] (see above): cost, n, v, has_block, single, lease,
-- request id, iat, and where its policies' arguments (or the next request) start.
local function header(ab)
  local shape = tonumber(ARGV[ab + 1])
  local n = math.floor(shape / SHAPE_N)
  shape = shape - n * SHAPE_N
  local v = math.floor(shape / SHAPE_REVS)
  shape = shape - v * SHAPE_REVS
  local at, lease, nonce, iat = ab + 2, '', '', -1
  local has_nonce = shape >= SHAPE_NONCE
  if has_nonce then shape = shape - SHAPE_NONCE end
  if shape >= SHAPE_LEASE then
    shape = shape - SHAPE_LEASE
    lease = ARGV[at]
    at = at + 1
  end
  if has_nonce then
    nonce = ARGV[at]
    at = at + 1
  end
  if v > 0 then
    iat = tonumber(ARGV[at])
    at = at + 1
  end
  return tonumber(ARGV[ab]), n, v, shape % SHAPE_SINGLE == SHAPE_BLOCK, shape >= SHAPE_SINGLE,
    lease, nonce, iat, at
end

-- The string values of the call's keys: key -> value, or false when the key holds none (nil:
-- not read yet). Filled by the call's MGET, written through by every SET of a counter. A new
-- table per call (`run`).
local vals

local function read(key)
  local v = vals[key]
  if v == nil then
    v = redis.call('GET', key)
    vals[key] = v
  end
  return v
end

-- The string counters the call charged: key -> TTL of its latest charge, in the order first
-- charged. Each is written once (SET ... PX), after the last request: the requests read them
-- from `vals`, nothing else in the call reads them, and the one SET leaves what a SET per
-- charge would (the value and TTL of the latest), so a counter every request of a call
-- charges (a `global` one, or one client's) costs one write per call, not one per request.
local dirty, dirty_keys

-- Per policy i of the request being evaluated, reused by every request of the call so that a
-- policy costs no table or closure: allowed, limit, remaining, reset and retry before the
-- charge; remaining and reset after it (nil: nothing to charge); what the charge writes (the
-- value and TTL of a string counter; a log's time and live count); the charge's mark; whether
-- it was charged.
local P_ok, P_lim, P_rem, P_rst, P_rty = {}, {}, {}, {}, {}
local P_cr, P_cs, P_wa, P_wb, P_mk, P_did = {}, {}, {}, {}, {}, {}

-- Each evaluator returns those fields in that order (the last six only when it would charge).
local function fixed(raw, limit, w, c)
  local now, skew, start, count = fixed_state(raw, w)
  local end_in = start + w - now
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  local reset = 0
  if count > 0 then reset = end_in end
  if c > limit or count + c > limit then
    local retry = end_in
    if c > limit then retry = w end
    return false, limit, remaining, shift(reset, skew), shift(retry, skew)
  end
  if c == 0 then return true, limit, remaining, shift(reset, skew), 0 end
  return true, limit, remaining, shift(reset, skew), 0, remaining - c, shift(end_in, skew),
    fixed_value(start, count + c), end_in + skew, start
end

local function sliding(raw, limit, w, c)
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
    return false, limit, remaining, shift(reset, skew), shift(retry, skew)
  end
  if c == 0 then return true, limit, remaining, shift(reset, skew), 0 end
  return true, limit, remaining, shift(reset, skew), 0, fdiv(free - c * w, w),
    shift(weight + w, skew), sliding_value(start, prev, cur + c), weight + w + skew, start
end

local function log(key, limit, w, c)
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
    return false, limit, remaining, shift(reset, skew), shift(retry, skew)
  end
  if c == 0 then return true, limit, remaining, shift(reset, skew), 0 end
  return true, limit, remaining, shift(reset, skew), 0, remaining - c, shift(w, skew), now,
    count, 0
end

local function bucket(raw, limit, w, burst, c)
  local now, skew, units, rate, cap = bucket_state(raw, limit, w, burst)
  local remaining = fdiv(units, w)
  local reset = cdiv(cap - units, rate)
  if c > burst or units < c * w then
    local retry
    if c > burst then retry = w else retry = cdiv(c * w - units, rate) end
    return false, burst, remaining, shift(reset, skew), shift(retry, skew)
  end
  if c == 0 then return true, burst, remaining, shift(reset, skew), 0 end
  local left = units - c * w
  local value, px = bucket_value(now, skew, left, rate, cap)
  return true, burst, remaining, shift(reset, skew), 0, fdiv(left, w),
    shift(cdiv(cap - left, rate), skew), value, px, 0
end

-- Concurrency: a sorted set of leases, member = lease id, score = expiry; a lease is live while
-- its expiry > now, so the leases of a crashed instance are reclaimed by expiry alone.
local function conc(key, limit, c)
  local live = redis.call('ZCOUNT', key, '(' .. now0, '+inf')
  local remaining = limit - live
  if remaining < 0 then remaining = 0 end
  if live + 1 > limit then
    local retry = CONCURRENCY_RETRY_MS
    local first = redis.call('ZRANGEBYSCORE', key, '(' .. now0, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] and tonumber(first[2]) - now0 < retry then retry = tonumber(first[2]) - now0 end
    return false, limit, remaining, 0, retry
  end
  if c == 0 then return true, limit, remaining, 0, 0 end
  return true, limit, remaining, 0, 0, remaining - 1, 0, nil, nil, 0
end

-- Write the charge of policy i (algorithm a, window or lease w) to `key`.
local function charge(i, a, key, w, c, lease, nonce)
  if a == 'l' then
    log_add(key, P_wa[i], w, c, P_wb[i], nonce)
    -- P_wa is the log's clock: now0 plus its skew
    redis.call('PEXPIRE', key, w + P_wa[i] - now0 + pad)
  elseif a == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now0)
    redis.call('ZADD', key, now0 + w, lease)
    -- the set lives as long as its latest lease
    if redis.call('PTTL', key) < w + pad then redis.call('PEXPIRE', key, w + pad) end
  else
    -- written once when every request of the call has run (`dirty`)
    vals[key] = P_wa[i]
    if not dirty[key] then dirty_keys[#dirty_keys + 1] = key end
    dirty[key] = P_wb[i]
  end
end

-- Policy i's state as the reply reports it: allowed (1|0), limit, remaining, reset, retry (after
-- the charge when it was charged).
local function state(i)
  local a = 0
  if P_ok[i] then a = 1 end
  if P_did[i] == 1 then return a, P_lim[i], P_cr[i], P_cs[i], P_rty[i] end
  return a, P_lim[i], P_rem[i], P_rst[i], P_rty[i]
end

-- The reply made of the first k integers of `out`: one string (see the top). I8 (in the
-- script's head, src/store/redis.rs `Script::check`) is '>' followed by a slice's worth of
-- 'i8', so its first 1 + 2k characters are the format of k integers (an interned string: no
-- allocation when it exists already). unpack returns at most about 8,000 values (Lua's C
-- stack), so a longer reply (a route of over 110 policies) is packed in slices.
local function packed(out, k)
  local slice = (#I8 - 1) / 2
  if k <= slice then return struct.pack(I8:sub(1, 1 + 2 * k), unpack(out, 1, k)) end
  local slices = {}
  for from = 1, k, slice do
    local to = math.min(from + slice - 1, k)
    slices[#slices + 1] = struct.pack(I8:sub(1, 3 + 2 * (to - from)), unpack(out, from, to))
  end
  return table.concat(slices)
end

-- An admitted request's integers, {0, now, states...}, or a limited one's reply, {1, policy,
-- now, blocked policy, blocked ms, states...}: the head, then every policy's state. The first
-- policy is in the table's constructor, which sizes it once (most routes have one).
local function admitted(n)
  if n == 0 then return {0, now0}, 2 end
  local out = {0, now0, state(1)}
  local k = 7
  for i = 2, n do
    out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5] = state(i)
    k = k + 5
  end
  return out, k
end

local function limited(policy, bp, bms, n)
  local out = {1, policy, now0, bp, bms, state(1)}
  local k = 10
  for i = 2, n do
    out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5] = state(i)
    k = k + 5
  end
  return packed(out, k)
end

-- The request whose keys start at KEYS[kb] and header at ARGV[ab]: its reply.
local function check_request(kb, ab)
  local cost, n, revs, has_block, single, lease, nonce, iat, pb = header(ab)
  local block_key = kb + revs
  local first = block_key
  if has_block then first = block_key + 1 end
  local policies = COMPILED
  if not policies then
    policies = {}
    for i = 1, n do policies[i] = policy_args(pb + POLICY_WIDTH * (i - 1)) end
  elseif #policies ~= n then
    return {3, 'the request does not match the compiled policies'}
  end

  if block_key > kb then
    for j = kb, block_key - 1 do
      if revokes(read(KEYS[j]), iat) then return struct.pack('>i8i8i8', 4, 0, now0) end
    end
  end

  if has_block then
    local until_ms = block_of(read(KEYS[block_key]))
    if until_ms > now0 then return struct.pack('>i8i8i8', 2, until_ms - now0, now0) end
  end

  local rejected = -1
  for i = 1, n do
    local p = policies[i]
    local a, key = p.alg, KEYS[first + i - 1]
    if a == 'f' then
      P_ok[i], P_lim[i], P_rem[i], P_rst[i], P_rty[i], P_cr[i], P_cs[i], P_wa[i], P_wb[i], P_mk[i] =
        fixed(read(key), p.limit, p.window, cost)
    elseif a == 's' then
      P_ok[i], P_lim[i], P_rem[i], P_rst[i], P_rty[i], P_cr[i], P_cs[i], P_wa[i], P_wb[i], P_mk[i] =
        sliding(read(key), p.limit, p.window, cost)
    elseif a == 'l' then
      P_ok[i], P_lim[i], P_rem[i], P_rst[i], P_rty[i], P_cr[i], P_cs[i], P_wa[i], P_wb[i], P_mk[i] =
        log(key, p.limit, p.window, cost)
    elseif a == 'c' then
      if cost > 0 and lease == '' then
        return {3, 'a concurrency policy needs the request lease id'}
      end
      P_ok[i], P_lim[i], P_rem[i], P_rst[i], P_rty[i], P_cr[i], P_cs[i], P_wa[i], P_wb[i], P_mk[i] =
        conc(key, p.limit, cost)
    else
      P_ok[i], P_lim[i], P_rem[i], P_rst[i], P_rty[i], P_cr[i], P_cs[i], P_wa[i], P_wb[i], P_mk[i] =
        bucket(read(key), p.limit, p.window, p.burst, cost)
    end
    P_did[i] = 0
    if not P_ok[i] and rejected < 0 and p.enforce == 1 then rejected = i end
  end

  if rejected >= 0 then
    local bp, bms = -1, 0
    if single and has_block then
      -- block for the longest effective block among rejecting enforce policies
      local cands, index = {}, {}
      for i = 1, n do
        if not P_ok[i] and policies[i].enforce == 1 then
          cands[#cands + 1] = policies[i]
          index[#cands] = i
        end
      end
      local best, ms = penalize(KEYS[block_key], cands)
      if best > 0 then
        bp, bms = index[best] - 1, ms
        -- the block entry changed: a later request of the call reads it again
        vals[KEYS[block_key]] = nil
      end
    end
    return limited(rejected - 1, bp, bms, n)
  end

  for i = 1, n do
    local p = policies[i]
    -- deferred policies are charged after the response (settle.lua)
    if P_ok[i] and P_cr[i] and p.deferred ~= 1 then
      charge(i, p.alg, KEYS[first + i - 1], p.window, cost, lease, nonce)
      P_did[i] = 1
    end
  end
  local out, k = admitted(n)
  if not single then
    for i = 1, n do
      out[k + 1], out[k + 2], out[k + 3], out[k + 4] = P_did[i], P_rem[i], P_rst[i], P_mk[i] or 0
      k = k + 4
    end
  end
  return packed(out, k)
end

-- One call: `keys` and `args` are KEYS and ARGV (`run(KEYS, ARGV)` is the script's last
-- statement when it is sent as a script; as a Redis function, `run` is the function). Every
-- per-call state is set here; the scratch tables above (`P_*`) are reused across calls, as they
-- are across the requests of one call.
local function run(keys, args)
KEYS, ARGV = keys, args
begin_call()
vals, dirty, dirty_keys = {}, {}, {}

-- Where each request's keys and header start, and one MGET of every string key of the call
-- (each key once; in slices, as unpack's stack is bounded).
local nreq = tonumber(ARGV[2])
local kbs, abs, reads = {}, {}, {}
do
  local kb, ab = 1, 3
  for r = 1, nreq do
    kbs[r], abs[r] = kb, ab
    local _, n, revs, has_block, _, _, _, _, pb = header(ab)
    local first = kb + revs
    if has_block then first = first + 1 end
    for j = kb, first + n - 1 do
      local a
      if j >= first then
        local i = j - first + 1
        if COMPILED then
          a = COMPILED[i] and COMPILED[i].alg
        else
          a = ARGV[pb + POLICY_WIDTH * (i - 1)]
        end
      end
      local key = KEYS[j]
      if (j < first or a == 'f' or a == 's' or a == 't') and vals[key] == nil then
        vals[key] = false
        reads[#reads + 1] = key
      end
    end
    kb, ab = first + n, pb
    if not COMPILED then ab = ab + POLICY_WIDTH * n end
  end
  for from = 1, #reads, 1000 do
    local to = math.min(from + 999, #reads)
    local values = redis.pcall('MGET', unpack(reads, from, to))
    for j = from, to do
      -- on an error each request reads its keys itself (and gets the error as its own)
      if values.err then vals[reads[j]] = nil else vals[reads[j]] = values[j - from + 1] end
    end
  end
end

-- The batch: each request on its own, in order. A request that fails (a Redis error raised by
-- one of its commands, or a Lua error) answers outcome 3; the requests after it still run.
local replies = {}
for r = 1, nreq do
  local ok, reply = pcall(check_request, kbs[r], abs[r])
  if not ok then
    if type(reply) == 'table' then reply = reply.err end
    reply = {3, tostring(reply)}
  end
  replies[r] = reply
end
-- A failure here (out of memory, a replica) fails the whole call: every request of it gets
-- `on_error`, as each would have when its own write failed.
for j = 1, #dirty_keys do
  local key = dirty_keys[j]
  put(key, vals[key], dirty[key])
end
return replies
end
