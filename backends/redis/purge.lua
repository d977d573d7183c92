-- Delete terminal jobs of one queue finished before a horizon.
-- KEYS: 1 idem, 2 job prefix, 3 attempt prefix,
--       then per terminal state to walk two keys: its ZSET (by finished_at ms), its id index
-- ARGV: 1 finished_before_ms (exclusive), 2 limit
-- Answers per deleted job its id and its schedule id ('' for none): the caller then drops the
-- id from the global id index and from the schedule's run index (both in other slots).
local limit = tonumber(ARGV[2])
local out = {}
local n = 0
for z = 4, #KEYS, 2 do
  local left = limit - n
  if left <= 0 then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', '(' .. ARGV[1], 'LIMIT', 0, left)
  for _, id in ipairs(ids) do
    local jk = KEYS[2] .. id
    local v = redis.call('HMGET', jk, 'ik', 'si')
    if v[1] and redis.call('HGET', KEYS[1], v[1]) == id then
      redis.call('HDEL', KEYS[1], v[1])
    end
    redis.call('DEL', jk, KEYS[3] .. id)
    redis.call('ZREM', KEYS[z], id)
    redis.call('ZREM', KEYS[z + 1], id)
    out[#out + 1] = id
    out[#out + 1] = v[2] or ''
    n = n + 1
  end
end
return out
