-- rategate: helpers shared by every script (prepended at load time, after the constants and the
-- policy argument reader that the Rust side generates: see src/store/redis/args.rs).
-- ARGV[1] is always the clock override: "" to use the server clock (TIME), or ms since the epoch
-- (tests only). The window and bucket arithmetic below is the one copy check, charge and refund
-- share; it mirrors src/store/algorithm.rs (integer arithmetic on millisecond timestamps; Lua
-- numbers are doubles, exact up to 2^53, which config validation guarantees).

local function fdiv(a, b)
  -- floor division that stays exact near 2^53, where a / b may round up to the next integer
  local q = math.floor(a / b)
  local r = a - q * b
  if r < 0 then q = q - 1 elseif r >= b then q = q + 1 end
  return q
end

local function cdiv(a, b)
  if b < 1 then b = 1 end
  return fdiv(a + b - 1, b)
end

local function shift(v, skew)
  -- zero means "now" and stays zero
  if v > 0 then return v + skew end
  return 0
end

-- The call's clock, set by begin_call, every script's first statement: definitions above and
-- below run once where the check script is a Redis function (loaded once, called many times),
-- so nothing that belongs to one call may run outside begin_call and the script's body.
-- With a test clock, key TTLs (real time) must outlive the simulated time of a test (`pad`);
-- they are only a memory bound, decisions never rely on them.
local now0, pad
local function begin_call()
  if ARGV[1] ~= '' then
    now0 = tonumber(ARGV[1])
    pad = 3600000
  else
    local t = redis.call('TIME')
    now0 = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    pad = 0
  end
end

-- The clock a counter is judged at: the store clock, or the counter's own newest time when that
-- is ahead (another instance's clock, or a test clock moved back), so time never runs backwards
-- for a counter. Returns now and the skew to add to reported durations.
local function counter_now(stored)
  if stored and stored > now0 then return stored, stored - now0 end
  return now0, 0
end

-- Fixed window, sliding window and token bucket counters are strings of integers joined by ':'
-- (fixed "<start>:<count>", sliding "<start>:<prev>:<count>", bucket "<units>:<when>"), so one
-- MGET reads a group's block entry and counters together and one SET ... PX writes a counter
-- and its TTL. `%d` keeps integers exact up to 2^53, where Lua's tostring would round them.
local function fields(raw)
  if not raw then return nil end
  local a, b, c = string.match(raw, '^(%-?%d+):(%-?%d+):?(%-?%d*)$')
  return tonumber(a), tonumber(b), tonumber(c)
end

local function put(key, value, px)
  redis.call('SET', key, value, 'PX', px + pad)
end

-- Fixed window from its stored value `raw` (or false): now, skew, start, count in the current
-- window.
local function fixed_state(raw, w)
  local ss, sc = fields(raw)
  sc = sc or 0
  local now, skew = counter_now(ss)
  local start = fdiv(now, w) * w
  local count = 0
  if ss == start then count = sc end
  return now, skew, start, count
end

-- The value a fixed window counter is written with (the check script keeps it too).
local function fixed_value(start, count)
  return string.format('%d:%d', start, count)
end

local function fixed_store(key, start, count, px)
  put(key, fixed_value(start, count), px)
end

-- Sliding window from `raw` ({s = current window start, p = previous count, c = current
-- count}): now, skew, start, prev, cur, and the weight (ms) of the previous window still in view.
local function sliding_state(raw, w)
  local ss, sp, sc = fields(raw)
  sp, sc = sp or 0, sc or 0
  local now, skew = counter_now(ss)
  local start = fdiv(now, w) * w
  local prev, cur = 0, 0
  if ss == start then
    prev, cur = sp, sc
  elseif ss and ss + w == start then
    prev, cur = sc, 0
  end
  return now, skew, start, prev, cur, w - (now - start)
end

local function sliding_value(start, prev, cur)
  return string.format('%d:%d:%d', start, prev, cur)
end

local function sliding_store(key, start, prev, cur, px)
  put(key, sliding_value(start, prev, cur), px)
end

-- Sliding log (sorted set, one member per unit, score = time): now, skew, the newest time (or
-- nil), and the units live at now (a unit admitted at ts is live while ts + w > now).
local function log_state(key, w)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local nts = tonumber(newest[2])
  local now, skew = counter_now(nts)
  return now, skew, nts, redis.call('ZCOUNT', key, '(' .. (now - w), '+inf')
end

-- The members one charge adds to a log: named by the request when it has an id (so a refund
-- removes exactly them), else unique by the live count (within one millisecond it only grows).
local function log_add(key, now, w, c, count, nonce)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
  for i = 1, c do
    if nonce ~= '' then
      redis.call('ZADD', key, now, nonce .. ':' .. i)
    else
      redis.call('ZADD', key, now, now .. ':' .. (count + i))
    end
  end
end

-- Token bucket from `raw` ({u = units (tokens * w), t = when}): now, skew, units at now, rate,
-- capacity.
local function bucket_state(raw, limit, w, burst)
  local su, st = fields(raw)
  local rate = limit
  if rate < 1 then rate = 1 end
  local cap = burst * w
  local now, skew = counter_now(st)
  local units = cap
  if su and st then
    local have = su
    if have > cap then have = cap end
    local refill = (now - st) * rate
    if refill < cap - have then units = have + refill end
  end
  return now, skew, units, rate, cap
end

-- The value and TTL a bucket with `left` units at `now` is written with: it lives until full.
local function bucket_value(now, skew, left, rate, cap)
  local px = cdiv(cap - left, rate) + skew
  if px < 1 then px = 1 end
  return string.format('%d:%d', left, now), px
end

local function bucket_store(key, now, skew, left, rate, cap)
  put(key, bucket_value(now, skew, left, rate, cap))
end

-- Blocks: one entry per client, `<prefix>{i:<client>}:b` = "<until>:<reason>", TTL = the block.
-- The block from the entry's value `v` (or false): until (0 when none) and reason.
local function block_of(v)
  if not v then return 0, '' end
  local u, reason = string.match(v, '^(%d+):(.*)$')
  return tonumber(u) or 0, reason or ''
end

-- A revocation entry `<until>:<before>` (`before` empty for a jti) refuses a token with issued-at
-- `iat` (seconds, -1 when the token has none) while until > now: a jti entry always, a subject's
-- when the token was issued before `before` (or says nothing of when).
local function revokes(v, iat)
  if not v then return false end
  local u, before = string.match(v, '^(%d+):(%d*)$')
  if not u or tonumber(u) <= now0 then return false end
  return before == '' or iat < 0 or iat < tonumber(before)
end

local function get_block(key)
  return block_of(redis.call('GET', key))
end

local function set_block(key, until_ms, reason)
  redis.call('SET', key, until_ms .. ':' .. reason, 'PX', until_ms - now0 + pad)
end

-- Escalation: the client's offences per policy, `<prefix>{i:<client>}:o:<policy>` = {n, f =
-- forget at}, next to the block entry (same slot).
local function offence_key(block_key, name)
  return string.sub(block_key, 1, -2) .. 'o:' .. name
end

-- The effective block of a rejecting policy p (fields as read by policy_args) for the client of
-- block_key: block_for, multiplied once per remembered offence, capped at max at every step.
-- Returns ms and the offences remembered.
local function effective_block(block_key, p)
  local ms, prev = p.block_for, 0
  if p.mult > 0 then
    local o = redis.call('HMGET', offence_key(block_key, p.name), 'n', 'f')
    local on, of = tonumber(o[1]), tonumber(o[2])
    if on and of and now0 < of then prev = on end
    local k = 0
    while k < prev and ms < p.max do
      ms = ms * p.mult
      if ms > p.max then ms = p.max end
      k = k + 1
    end
  end
  return ms, prev
end

-- Block the client of block_key for the longest effective block among the rejecting enforce
-- policies `cands` (in route order; the first wins a tie), and record the offence of the policy
-- applied. Returns its position in cands and the block (ms), or 0, 0.
local function penalize(block_key, cands)
  local best, best_ms, best_prev = 0, 0, 0
  for j, p in ipairs(cands) do
    if p.block_for > 0 then
      local ms, prev = effective_block(block_key, p)
      if ms > best_ms then best, best_ms, best_prev = j, ms, prev end
    end
  end
  if best == 0 then return 0, 0 end
  local p = cands[best]
  set_block(block_key, now0 + best_ms, 'policy:' .. p.name)
  if p.mult > 0 then
    -- remembered for block_memory after the block ends
    local k = offence_key(block_key, p.name)
    redis.call('HSET', k, 'n', best_prev + 1, 'f', now0 + best_ms + p.memory)
    redis.call('PEXPIRE', k, best_ms + p.memory + pad)
  end
  return best, best_ms
end
