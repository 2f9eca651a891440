-- rategate: blocks and the admin API's reads (the common prelude is prepended at load time).
-- ARGV[2] operation; the keys depend on it (each call's keys are in one slot):
--   block    KEYS[1] the client's block entry; ARGV[3] ms (0 = remove), ARGV[4] reason
--                                                       -> {until (0 when removed), now}
--   unblock  KEYS[1] the client's block entry           -> {1 if an active block was removed, now}
--   penalize KEYS[1] the client's block entry; ARGV[3] number of candidates, then per candidate
--            its index in the request and POLICY_WIDTH arguments (policy_args): the rejecting
--            enforce policies of other groups, in route order
--                                          -> {index of the policy whose block applied or -1, ms}
--   get      KEYS[..] block entries                      -> {ttl_ms or -1, reason, ...}
--   revoke   KEYS[1] a revocation entry; ARGV[3] ms, ARGV[4] before ("" for a jti)
--                                                       -> {until, now}
--   unrevoke KEYS[1] a revocation entry                  -> {1 if an active one was removed, now}
--   rget     KEYS[..] revocation entries                 -> {ttl_ms or -1, before, ...}
--   rindex   KEYS[1] as list; ARGV[3] member (`jti:<id>` / `sub:<id>`), ARGV[4] until (0 =
--            remove), ARGV[5] most members          -> {1, or 0 when the index is full}
--   rlist    KEYS[1] as list                             -> {member, until, ...} still active
--   list     KEYS[1] <prefix>{rg}:events (the index is <prefix>{rg}:blocks)
--                                                       -> {client, until, ...} still active
--   events   KEYS[1] as list; ARGV[3] limit              -> {json, ...} newest first
--   suspects KEYS[1] as list; ARGV[3] limit              -> {client, count, ...}
begin_call()
local op = ARGV[2]

if op == 'block' then
  local ms = tonumber(ARGV[3])
  if ms <= 0 then
    redis.call('DEL', KEYS[1])
    return {0, now0}
  end
  set_block(KEYS[1], now0 + ms, ARGV[4])
  return {now0 + ms, now0}
end

if op == 'unblock' then
  local u = get_block(KEYS[1])
  redis.call('DEL', KEYS[1])
  if u > now0 then return {1, now0} end
  return {0, now0}
end

if op == 'penalize' then
  local n, cands, index = tonumber(ARGV[3]), {}, {}
  for j = 1, n do
    local b = 4 + (POLICY_WIDTH + 1) * (j - 1)
    index[j] = tonumber(ARGV[b])
    cands[j] = policy_args(b + 1)
  end
  local best, ms = penalize(KEYS[1], cands)
  if best == 0 then return {-1, 0} end
  return {index[best], ms}
end

if op == 'get' then
  local out = {}
  for i = 1, #KEYS do
    local u, reason = get_block(KEYS[i])
    if u > now0 then
      out[#out + 1] = u - now0
    else
      out[#out + 1] = -1
    end
    out[#out + 1] = reason
  end
  return out
end

if op == 'revoke' then
  local until_ms = now0 + tonumber(ARGV[3])
  redis.call('SET', KEYS[1], until_ms .. ':' .. ARGV[4], 'PX', until_ms - now0 + pad)
  return {until_ms, now0}
end

if op == 'unrevoke' then
  local active = revokes(redis.call('GET', KEYS[1]), -1)
  redis.call('DEL', KEYS[1])
  if active then return {1, now0} end
  return {0, now0}
end

if op == 'rget' then
  local out = {}
  for i = 1, #KEYS do
    local v = redis.call('GET', KEYS[i])
    local u, before = string.match(v or '', '^(%d+):(%d*)$')
    if u and tonumber(u) > now0 then
      out[#out + 1] = tonumber(u) - now0
    else
      out[#out + 1] = -1
    end
    out[#out + 1] = before or ''
  end
  return out
end

-- The shared keys: KEYS[1] is <prefix>{rg}:events.
local base = string.sub(KEYS[1], 1, -7)

if op == 'list' then
  local index = base .. 'blocks'
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now0)
  return redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
end

if op == 'rindex' or op == 'rlist' then
  local index = base .. 'revocations'
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now0)
  if op == 'rlist' then return redis.call('ZRANGE', index, 0, -1, 'WITHSCORES') end
  local member, until_ms = ARGV[3], tonumber(ARGV[4])
  if until_ms <= now0 then
    redis.call('ZREM', index, member)
    return {1}
  end
  if not redis.call('ZSCORE', index, member) and
      redis.call('ZCARD', index) >= tonumber(ARGV[5]) then
    return {0}
  end
  redis.call('ZADD', index, until_ms, member)
  if redis.call('PTTL', index) < until_ms - now0 + pad then
    redis.call('PEXPIRE', index, until_ms - now0 + pad)
  end
  return {1}
end

if op == 'events' then
  local limit = math.min(tonumber(ARGV[3]), EVENTS_MAX)
  local out = {}
  if limit < 1 then return out end
  for _, raw in ipairs(redis.call('LRANGE', base .. 'events', 0, limit - 1)) do
    local ok, e = pcall(cjson.decode, raw)
    if ok and type(e) == 'table' and tonumber(e.at) then
      -- newest first: the first one too old ends the list
      if now0 - tonumber(e.at) >= EVENT_TTL_MS then break end
      out[#out + 1] = raw
    end
  end
  return out
end

if op == 'suspects' then
  local limit = tonumber(ARGV[3])
  local b = fdiv(now0, SUSPECT_BUCKET_MS)
  local sums, clients = {}, {}
  for _, bucket in ipairs({b, b - 1}) do
    local rows = redis.call('ZRANGE', base .. 'suspects:' .. bucket, 0, -1, 'WITHSCORES')
    for i = 1, #rows, 2 do
      local who, n = rows[i], tonumber(rows[i + 1])
      if not sums[who] then clients[#clients + 1] = who; sums[who] = 0 end
      sums[who] = sums[who] + n
    end
  end
  table.sort(clients, function(x, y)
    if sums[x] ~= sums[y] then return sums[x] > sums[y] end
    return x < y
  end)
  local out = {}
  for i = 1, math.min(limit, #clients) do
    if sums[clients[i]] > 0 then
      out[#out + 1] = clients[i]
      out[#out + 1] = sums[clients[i]]
    end
  end
  return out
end

return redis.error_reply('unknown operation ' .. tostring(op))
