-- Lease up to #tokens ready jobs of the queues given, in one atomic step: the queues in the
-- order given (paused ones skipped), each queue's jobs by (priority, run_at, id).
-- KEYS: per queue 10 keys: 1 ready, 2 running, 3 paused, 4 changes, 5 wake, 6 job prefix,
--       7 attempt prefix, 8 waits (LIST of first-attempt waits in ms, newest first),
--       9 ids:queued, 10 ids:running
-- ARGV: 1 now_ms, 2 lease_ms, 3 worker id, 4 waits kept, 5 how many queues, 6.. one fresh
--       token per job wanted
-- Answers each claimed job (job_reply), in the order claimed.
local now = ARGV[1]
local nq = tonumber(ARGV[5])
local limit = #ARGV - 5
local expires = tonumber(now) + tonumber(ARGV[2])
local out = {}
for qi = 1, nq do
  if #out >= limit then break end
  local K = (qi - 1) * 10
  if redis.call('EXISTS', KEYS[K + 3]) == 0 then
    local ids = redis.call('ZRANGE', KEYS[K + 1], 0, limit - #out - 1)
    local waited = 0
    for _, id in ipairs(ids) do
      local jk = KEYS[K + 6] .. id
      redis.call('ZREM', KEYS[K + 1], id)
      local attempt = redis.call('HINCRBY', jk, 'a', 1)
      if attempt == 1 then
        -- first_wait_ms of monoq.core.counters: due time to claim, never negative
        local wait = tonumber(now) - tonumber(redis.call('HGET', jk, 'ra'))
        if wait < 0 then wait = 0 end
        redis.call('LPUSH', KEYS[K + 8], wait)
        waited = waited + 1
      end
      redis.call('HSET', jk, 'st', 'running', 'sa', now, 'w', ARGV[3], 'le', expires,
                 'tk', ARGV[6 + #out])
      redis.call('ZADD', KEYS[K + 2], expires, id)
      redis.call('RPUSH', KEYS[K + 7] .. id,
                 cjson.encode({n = attempt, w = ARGV[3], s = tonumber(now)}))
      out[#out + 1] = job_reply(jk)
    end
    if waited > 0 then
      redis.call('LTRIM', KEYS[K + 8], 0, tonumber(ARGV[4]) - 1)
    end
    if #ids > 0 then
      zrem_all(KEYS[K + 9], ids)
      zadd0_all(KEYS[K + 10], ids)
      poke(KEYS[K + 4])  -- a new lease expiry may be the scheduler's next wakeup
      if redis.call('ZCARD', KEYS[K + 1]) == 0 then
        redis.call('DEL', KEYS[K + 5])  -- nothing left to wake anyone for
      end
    end
  end
end
return out
