-- rategate: admin operations on blocks (the common prelude is prepended at load time).
-- KEYS[1] blocks sorted set, KEYS[2] reasons hash
-- ARGV[2] operation:
--   block   ARGV[3] client, ARGV[4] ms (0 = remove), ARGV[5] reason  -> 1
--   unblock ARGV[3] client                                          -> 1 if an active block was removed
--   list                                                            -> {client, ttl_ms, reason, ...}
--   events  ARGV[3] limit                                           -> {json, ...} newest first
--   suspects ARGV[3] limit                                          -> {client, count, ...}
local op = ARGV[2]

if op == 'block' then
  local who, ms = ARGV[3], tonumber(ARGV[4])
  if ms <= 0 then
    redis.call('ZREM', KEYS[1], who)
    redis.call('HDEL', KEYS[2], who)
    return 1
  end
  block(who, now0 + ms, ARGV[5], ms + pad)
  event({client = who, kind = 'blocked', reason = ARGV[5], ttl_ms = ms})
  return 1
end

if op == 'unblock' then
  local who = ARGV[3]
  local u = tonumber(redis.call('ZSCORE', KEYS[1], who) or '0') or 0
  redis.call('ZREM', KEYS[1], who)
  redis.call('HDEL', KEYS[2], who)
  if u > now0 then
    event({client = who, kind = 'unblocked'})
    return 1
  end
  return 0
end

if op == 'list' then
  local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now0, '+inf', 'WITHSCORES')
  local out = {}
  for i = 1, #rows, 2 do
    local who = rows[i]
    out[#out + 1] = who
    out[#out + 1] = tonumber(rows[i + 1]) - now0
    out[#out + 1] = redis.call('HGET', KEYS[2], who) or ''
  end
  return out
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
