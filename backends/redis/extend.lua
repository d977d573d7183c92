-- Heartbeat leases of one queue.
-- KEYS: 1 running, 2.. job hash per lease
-- ARGV: 1 now_ms, 2 lease_ms, 3.. token per lease
-- Answers per lease: 'h' held, 'c' held but cancel requested, 's' held and its stack asked
-- for (monoq job stack), 'l' lost.
local expires = tonumber(ARGV[1]) + tonumber(ARGV[2])
local out = {}
for i = 2, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'st', 'tk', 'cr', 'id', 'sr')
  if v[1] == 'running' and v[2] == ARGV[i + 1] then
    redis.call('HSET', KEYS[i], 'le', expires)
    redis.call('ZADD', KEYS[1], expires, v[4])
    if v[3] == '1' then
      out[i - 1] = 'c'
    elseif v[5] == '1' then
      out[i - 1] = 's'
    else
      out[i - 1] = 'h'
    end
  else
    out[i - 1] = 'l'
  end
end
return out
