-- Delete terminal jobs of one queue finished before a horizon.
-- KEYS: 1 idem, 2 job prefix, 3 attempt prefix, 4 schedule-runs key prefix (global),
--       then per terminal state to walk two keys: its ZSET (by finished_at ms), its id index
-- ARGV: 1 finished_before_ms (exclusive), 2 limit
-- Answers the deleted ids (the caller drops them from the global id index).
local limit = tonumber(ARGV[2])
local out = {}
for z = 5, #KEYS, 2 do
  local left = limit - #out
  if left <= 0 then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', '(' .. ARGV[1], 'LIMIT', 0, left)
  for _, id in ipairs(ids) do
    local jk = KEYS[2] .. id
    local v = redis.call('HMGET', jk, 'ik', 'si')
    if v[1] and redis.call('HGET', KEYS[1], v[1]) == id then
      redis.call('HDEL', KEYS[1], v[1])
    end
    if v[2] then
      redis.call('ZREM', KEYS[4] .. v[2], id)
    end
    redis.call('DEL', jk, KEYS[3] .. id)
    redis.call('ZREM', KEYS[z], id)
    redis.call('ZREM', KEYS[z + 1], id)
    out[#out + 1] = id
  end
end
return out
