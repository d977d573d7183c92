-- Cancel one job.
-- KEYS: 1 job hash, 2 ready, 3 scheduled, 4 retrying, 5 cancelled, then the id indexes of the
--       same states: 6 ids:queued, 7 ids:scheduled, 8 ids:retrying, 9 ids:cancelled
-- ARGV: 1 now_ms
-- Answers the job afterwards (job_reply; nil when there is no such job).
local v = redis.call('HMGET', KEYS[1], 'st', 'id')
local state = v[1]
if not state then return false end
local index = {queued = 2, scheduled = 3, retrying = 4}
local at = index[state]
if at then
  redis.call('ZREM', KEYS[at], v[2])
  redis.call('ZREM', KEYS[at + 4], v[2])
  redis.call('HSET', KEYS[1], 'st', 'cancelled', 'fa', ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[1], v[2])
  redis.call('ZADD', KEYS[9], 0, v[2])
elseif state == 'running' then
  redis.call('HSET', KEYS[1], 'cr', '1')
end
return job_reply(KEYS[1])
