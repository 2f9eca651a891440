-- rategate: admin operations on blocks (the common prelude is prepended at load time).
-- KEYS[1] blocks sorted set, KEYS[2] reasons hash
-- ARGV[2] operation:
--   block   ARGV[3] client, ARGV[4] ms (0 = remove), ARGV[5] reason  -> 1
--   unblock ARGV[3] client                                          -> 1 if an active block was removed
--   list                                                            -> {client, ttl_ms, reason, ...}
local op = ARGV[2]

if op == 'block' then
  local who, ms = ARGV[3], tonumber(ARGV[4])
  if ms <= 0 then
    redis.call('ZREM', KEYS[1], who)
    redis.call('HDEL', KEYS[2], who)
    return 1
  end
  block(who, now0 + ms, ARGV[5], ms + pad)
  return 1
end

if op == 'unblock' then
  local who = ARGV[3]
  local u = tonumber(redis.call('ZSCORE', KEYS[1], who) or '0') or 0
  redis.call('ZREM', KEYS[1], who)
  redis.call('HDEL', KEYS[2], who)
  if u > now0 then return 1 end
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

return redis.error_reply('unknown operation ' .. tostring(op))
