-- Lease up to #tokens ready jobs of one queue.
-- KEYS: 1 ready, 2 running, 3 paused, 4 changes, 5 wake, 6 job prefix, 7 attempt prefix,
--       8 waits (LIST of first-attempt waits in ms, newest first), 9 ids:queued, 10 ids:running
-- ARGV: 1 now_ms, 2 lease_ms, 3 worker id, 4 waits kept, 5.. one fresh token per job wanted
-- Answers each claimed job (job_reply).
if redis.call('EXISTS', KEYS[3]) == 1 then return {} end
local now = ARGV[1]
local limit = #ARGV - 4
local ids = redis.call('ZRANGE', KEYS[1], 0, limit - 1)
local expires = tonumber(now) + tonumber(ARGV[2])
local out = {}
local waited = 0
for i, id in ipairs(ids) do
  local jk = KEYS[6] .. id
  redis.call('ZREM', KEYS[1], id)
  local attempt = redis.call('HINCRBY', jk, 'a', 1)
  if attempt == 1 then
    -- first_wait_ms of monoq.core.counters: due time to claim, never negative
    local wait = tonumber(now) - tonumber(redis.call('HGET', jk, 'ra'))
    if wait < 0 then wait = 0 end
    redis.call('LPUSH', KEYS[8], wait)
    waited = waited + 1
  end
  redis.call('HSET', jk, 'st', 'running', 'sa', now, 'w', ARGV[3], 'le', expires,
             'tk', ARGV[4 + i])
  redis.call('ZADD', KEYS[2], expires, id)
  redis.call('RPUSH', KEYS[7] .. id,
             cjson.encode({n = attempt, w = ARGV[3], s = tonumber(now)}))
  out[i] = job_reply(jk)
end
if waited > 0 then
  redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[4]) - 1)
end
if #out > 0 then
  zrem_all(KEYS[9], ids)
  zadd0_all(KEYS[10], ids)
  poke(KEYS[4])  -- a new lease expiry may be the scheduler's next wakeup
  if redis.call('ZCARD', KEYS[1]) == 0 then
    redis.call('DEL', KEYS[5])  -- nothing left to wake anyone for
  end
end
return out
