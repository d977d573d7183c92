-- Move due SCHEDULED and RETRYING jobs of one queue to the ready ZSET.
-- KEYS: 1 scheduled, 2 retrying, 3 ready, 4 wake, 5 job prefix, then the id indexes
--       6 ids:scheduled, 7 ids:retrying, 8 ids:queued
-- ARGV: 1 now_ms, 2 limit, 3 wake cap
-- Answers how many moved.
local limit = tonumber(ARGV[2])
local moved = 0
for z = 1, 2 do
  if moved >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', ARGV[1], 'LIMIT', 0, limit - moved)
  for _, id in ipairs(ids) do
    local jk = KEYS[5] .. id
    local v = redis.call('HMGET', jk, 'pr', 'ra')
    redis.call('ZREM', KEYS[z], id)
    redis.call('ZREM', KEYS[z + 5], id)
    redis.call('HSET', jk, 'st', 'queued')
    redis.call('ZADD', KEYS[3], ready_score(v[1], v[2]), id)
    redis.call('ZADD', KEYS[8], 0, id)
    moved = moved + 1
  end
end
push_tokens(KEYS[4], moved, tonumber(ARGV[3]))
return moved
