-- rategate: one flush of an instance's activity records (events, suspect counts, the block
-- index) into the shared keys, in recording order, by the rules of "Activity" in
-- src/store/mod.rs (the constants are prepended from that module).
-- KEYS[1] <prefix>{rg}:events (the list); the other shared keys are named from it:
--   <prefix>{rg}:evrep:<client>|<policy>  when the last `limited` event was recorded
--   <prefix>{rg}:suspects:<bucket>        client -> rejections in that bucket
--   <prefix>{rg}:blocks                   the block index: client -> until
-- ARGV[2] number of records; ARGV[3 ...] 6 per record: kind, at (store clock), client, policy,
-- reason, ttl_ms (index records: until). Kinds: s suspect, l limited, b blocked, u unblocked,
-- i index add, x index remove, r revoked (client `jti:<id>` / `sub:<id>`, reason which tokens),
-- v unrevoked.
begin_call()
local base = string.sub(KEYS[1], 1, -7)
local list = KEYS[1]
local index = base .. 'blocks'
local listed = false

local function event(fields)
  redis.call('LPUSH', list, cjson.encode(fields))
  listed = true
end

for r = 1, tonumber(ARGV[2]) do
  local b = 3 + 6 * (r - 1)
  local kind, at, who = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2]
  local policy, reason, ttl = ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5])
  if kind == 's' then
    local k = base .. 'suspects:' .. fdiv(at, SUSPECT_BUCKET_MS)
    redis.call('ZINCRBY', k, 1, who)
    -- drops the lowest count, the smallest client on a tie
    redis.call('ZREMRANGEBYRANK', k, 0, -(SUSPECTS_MAX + 1))
    redis.call('PEXPIRE', k, 2 * SUSPECT_BUCKET_MS + pad)
  elseif kind == 'l' then
    -- one `limited` event per client and policy per EVENT_REPEAT_MS of store time
    local k = base .. 'evrep:' .. who .. '|' .. policy
    local last = tonumber(redis.call('GET', k) or '')
    if not (last and at - last < EVENT_REPEAT_MS) then
      redis.call('SET', k, at, 'PX', EVENT_REPEAT_MS + pad)
      event({at = at, client = who, kind = 'limited', policy = policy})
    end
  elseif kind == 'b' then
    local e = {at = at, client = who, kind = 'blocked', reason = reason, ttl_ms = ttl}
    if policy ~= '' then e.policy = policy end
    event(e)
  elseif kind == 'u' then
    event({at = at, client = who, kind = 'unblocked'})
  elseif kind == 'r' then
    local e = {at = at, client = who, kind = 'revoked', ttl_ms = ttl}
    if reason ~= '' then e.reason = reason end
    event(e)
  elseif kind == 'v' then
    event({at = at, client = who, kind = 'unrevoked'})
  elseif kind == 'i' then
    redis.call('ZADD', index, ttl, who)
    if ttl > now0 and redis.call('PTTL', index) < ttl - now0 + pad then
      redis.call('PEXPIRE', index, ttl - now0 + pad)
    end
  elseif kind == 'x' then
    redis.call('ZREM', index, who)
  end
end
if listed then
  redis.call('LTRIM', list, 0, EVENTS_MAX - 1)
  redis.call('PEXPIRE', list, EVENT_TTL_MS + pad)
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now0)
return 1
