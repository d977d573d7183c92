-- Record a component's beat (the later time wins) and forget beats older than a horizon.
-- KEYS: 1 beats (HASH component name -> epoch ms)
-- ARGV: 1 name, 2 now_ms, 3 horizon ms (beats before it are deleted)
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev or tonumber(prev) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local all = redis.call('HGETALL', KEYS[1])
local horizon = tonumber(ARGV[3])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < horizon then redis.call('HDEL', KEYS[1], all[i]) end
end
return 1
