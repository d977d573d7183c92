-- Record (ARGV[1] = 'report') or forget (ARGV[1] = 'remove') a worker.
-- KEYS: 1 workers (ZSET id -> expiry ms), 2 workerinfo (HASH id -> JSON)
-- ARGV: 1 action, 2 worker id, 3 expiry ms, 4 JSON, 5 last_seen ms
if ARGV[1] == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
-- Drop workers that expired before this heartbeat was taken, so dead ones do not pile up.
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
return 1
