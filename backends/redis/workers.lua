-- Record a worker's expiry and forget the workers that expired before this heartbeat was
-- taken, so dead ones do not pile up.
-- KEYS: 1 workers (ZSET id -> expiry ms); the only key (the caller writes the worker's info
--       before, and drops the forgotten ones' info after: workerinfo is in another slot).
-- ARGV: 1 worker id, 2 expiry ms, 3 last_seen ms
-- Answers the ids forgotten.
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
for _, id in ipairs(stale) do
  if id ~= ARGV[1] then redis.call('ZREM', KEYS[1], id) end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local out = {}
for _, id in ipairs(stale) do
  if id ~= ARGV[1] then out[#out + 1] = id end
end
return out
