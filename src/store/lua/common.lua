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

-- Activity: recent events and suspicious clients, exactly as src/store/mod.rs defines them. The
-- constants EVENTS_MAX, EVENT_TTL_MS, EVENT_REPEAT_MS, SUSPECT_BUCKET_MS and SUSPECTS_MAX are
-- generated from the Rust ones and prepended. Times are the script's clock (now0); key TTLs are
-- only a memory bound.
local function ms_text(v)
  return string.format('%.0f', v)
end

local function record_event(events_key, kind, who, policy, reason, ttl)
  local parts = {'{"at":', ms_text(now0), ',"client":', cjson.encode(who), ',"kind":"', kind, '"'}
  if policy then parts[#parts + 1] = ',"policy":' .. cjson.encode(policy) end
  if reason then parts[#parts + 1] = ',"reason":' .. cjson.encode(reason) end
  if ttl then parts[#parts + 1] = ',"ttl_ms":' .. ms_text(ttl) end
  parts[#parts + 1] = '}'
  redis.call('LPUSH', events_key, table.concat(parts))
  redis.call('LTRIM', events_key, 0, EVENTS_MAX - 1)
  redis.call('PEXPIRE', events_key, EVENT_TTL_MS + pad)
end

-- One more rejection of `who` in the suspect bucket of now0; a full bucket drops its lowest
-- entry (the smallest client on a tie), which may be the new one.
local function count_rejection(suspects_prefix, who)
  local key = suspects_prefix .. ms_text(fdiv(now0, SUSPECT_BUCKET_MS))
  redis.call('ZINCRBY', key, 1, who)
  redis.call('ZREMRANGEBYRANK', key, 0, -(SUSPECTS_MAX + 1))
  redis.call('PEXPIRE', key, 2 * SUSPECT_BUCKET_MS + pad)
end

-- Whether a `limited` event for this client and policy may be recorded now (remembered if so).
-- The time is stored and compared against now0, so a test clock is honoured too.
local function first_in_a_while(repeat_prefix, who, policy)
  local key = repeat_prefix .. who .. '|' .. policy
  local last = tonumber(redis.call('GET', key) or '')
  if last and now0 - last < EVENT_REPEAT_MS then return false end
  redis.call('SET', key, ms_text(now0), 'PX', EVENT_REPEAT_MS + pad)
  return true
end

