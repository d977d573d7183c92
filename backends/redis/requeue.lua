-- Move DEAD or CANCELLED jobs of one queue back to QUEUED with attempt 0.
-- KEYS: 1 ready, 2 dead, 3 cancelled, 4 wake, then the id indexes 5 ids:queued, 6 ids:dead,
--       7 ids:cancelled, then 8.. job hashes
-- ARGV: 1 now_ms, 2 wake cap
-- Answers the ids that moved.
local out = {}
for i = 8, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'st', 'id', 'pr')
  local from = nil
  if v[1] == 'dead' then from = 2 elseif v[1] == 'cancelled' then from = 3 end
  if from then
    redis.call('ZREM', KEYS[from], v[2])
    redis.call('ZREM', KEYS[from + 4], v[2])
    redis.call('HDEL', KEYS[i], 'e', 'r', 'fa', 'cr', 'tk', 'le', 'w', 'pg', 'pm')
    redis.call('HSET', KEYS[i], 'st', 'queued', 'a', 0, 'ra', ARGV[1])
    redis.call('ZADD', KEYS[1], ready_score(v[3], ARGV[1]), v[2])
    redis.call('ZADD', KEYS[5], 0, v[2])
    out[#out + 1] = v[2]
  end
end
push_tokens(KEYS[4], #out, tonumber(ARGV[2]))
return out
