-- Delete terminal jobs of one queue finished before a horizon.
-- KEYS: 1 ids, 2 idem, 3 job prefix, 4 attempt prefix, 5 schedule-runs key prefix (global),
--       6.. the terminal-state ZSETs to walk
-- ARGV: 1 finished_before_ms (exclusive), 2 limit
-- Answers the deleted ids (the caller drops them from the global id index).
local limit = tonumber(ARGV[2])
local out = {}
for z = 6, #KEYS do
  local left = limit - #out
  if left <= 0 then break end
  local ids = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', '(' .. ARGV[1], 'LIMIT', 0, left)
  for _, id in ipairs(ids) do
    local jk = KEYS[3] .. id
    local v = redis.call('HMGET', jk, 'ik', 'si')
    if v[1] and redis.call('HGET', KEYS[2], v[1]) == id then
      redis.call('HDEL', KEYS[2], v[1])
    end
    if v[2] then
      redis.call('ZREM', KEYS[5] .. v[2], id)
    end
    redis.call('DEL', jk, KEYS[4] .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[z], id)
    out[#out + 1] = id
  end
end
return out
