-- rategate: admin operations on blocks (the common prelude is prepended at load time).
-- KEYS[1] blocks sorted set, KEYS[2] reasons hash, KEYS[3] event list, KEYS[4] suspect bucket
-- prefix (names keys the script builds; same hash tag)
-- ARGV[2] operation:
--   block      ARGV[3] client, ARGV[4] ms (0 = remove), ARGV[5] reason  -> 1
--   unblock    ARGV[3] client                                   -> 1 if an active block was removed
--   list                                                        -> {client, ttl_ms, reason, ...}
--   events     ARGV[3] limit         -> JSON events younger than EVENT_TTL_MS, newest first
--   suspicious                       -> {client, count, ...} of the current and previous bucket
--                                       (a client may appear twice; the caller sums and sorts)
local op = ARGV[2]

if op == 'block' then
  local who, ms = ARGV[3], tonumber(ARGV[4])
  if ms <= 0 then
    redis.call('ZREM', KEYS[1], who)
    redis.call('HDEL', KEYS[2], who)
    return 1
  end
  block(who, now0 + ms, ARGV[5], ms + pad)
  record_event(KEYS[3], 'blocked', who, nil, ARGV[5], ms)
  return 1
end

if op == 'unblock' then
  local who = ARGV[3]
  local u = tonumber(redis.call('ZSCORE', KEYS[1], who) or '0') or 0
  redis.call('ZREM', KEYS[1], who)
  redis.call('HDEL', KEYS[2], who)
  if u > now0 then
    record_event(KEYS[3], 'unblocked', who, nil, nil, nil)
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
  local limit = tonumber(ARGV[3]) or 0
  if limit > EVENTS_MAX then limit = EVENTS_MAX end
  local out = {}
  if limit <= 0 then return out end
  local rows = redis.call('LRANGE', KEYS[3], 0, limit - 1)
  for i = 1, #rows do
    local ok, e = pcall(cjson.decode, rows[i])
    -- Newest first: the first event too old ends the list.
    if not ok or type(e) ~= 'table' or type(e.at) ~= 'number' or now0 - e.at >= EVENT_TTL_MS then
      break
    end
    out[#out + 1] = rows[i]
  end
  return out
end

if op == 'suspicious' then
  local b = fdiv(now0, SUSPECT_BUCKET_MS)
  local out = {}
  for _, idx in ipairs({b, b - 1}) do
    local rows = redis.call('ZRANGE', KEYS[4] .. ms_text(idx), 0, -1, 'WITHSCORES')
    for i = 1, #rows do out[#out + 1] = rows[i] end
  end
  return out
end

return redis.error_reply('unknown operation ' .. tostring(op))
