-- rategate: helpers shared by every script (prepended at load time). ARGV[1] is always the
-- clock override: "" to use the server clock (TIME), or ms since the epoch (tests only).
-- KEYS[1] is always the blocks sorted set (client -> until ms) and KEYS[2] the reasons hash.

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

local now0
if ARGV[1] ~= '' then
  now0 = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now0 = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- With a test clock, key TTLs (real time) must outlive the simulated time of a test; they are
-- only a memory bound, decisions never rely on them.
local pad = 0
if ARGV[1] ~= '' then pad = 3600000 end

-- Record a block until `until_ms`; both keys live at least `ttl` more. Expired entries are
-- pruned here (a rare path) so the set stays bounded by the clients blocked recently.
local function block(who, until_ms, reason, ttl)
  local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now0, 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('ZREM', KEYS[1], unpack(old))
    redis.call('HDEL', KEYS[2], unpack(old))
  end
  redis.call('ZADD', KEYS[1], until_ms, who)
  redis.call('HSET', KEYS[2], who, reason)
  for k = 1, 2 do
    if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
end


-- Activity (see "Activity" in src/store/mod.rs; the constants are prepended by the Rust side
-- from that module, so both stores use the same numbers). KEYS[1] is `<base>blocks`.
local base = string.sub(KEYS[1], 1, -7)

local function event(fields)
  fields.at = now0
  local k = base .. 'events'
  redis.call('LPUSH', k, cjson.encode(fields))
  redis.call('LTRIM', k, 0, EVENTS_MAX - 1)
  redis.call('PEXPIRE', k, EVENT_TTL_MS + pad)
end

-- One `limited` event per client and policy per EVENT_REPEAT_MS of store time.
local function limited_event(who, policy)
  local k = base .. 'evrep:' .. who .. '|' .. policy
  local last = tonumber(redis.call('GET', k) or '')
  if last and now0 - last < EVENT_REPEAT_MS then return end
  redis.call('SET', k, now0, 'PX', EVENT_REPEAT_MS + pad)
  event({client = who, kind = 'limited', policy = policy})
end

local function suspect(who)
  local k = base .. 'suspects:' .. fdiv(now0, SUSPECT_BUCKET_MS)
  redis.call('ZINCRBY', k, 1, who)
  -- drops the lowest count, the smallest client on a tie
  redis.call('ZREMRANGEBYRANK', k, 0, -(SUSPECTS_MAX + 1))
  redis.call('PEXPIRE', k, 2 * SUSPECT_BUCKET_MS + pad)
end
