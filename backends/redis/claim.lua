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
local expires_text = string.format('%d', expires)
local out = {}
for qi = 1, nq do
  if #out >= limit then break end
  local K = (qi - 1) * 10
  if redis.call('EXISTS', KEYS[K + 3]) == 0 then
    local ids = redis.call('ZRANGE', KEYS[K + 1], 0, limit - #out - 1)
    if #ids > 0 then
      local waits = {}
      local running = {}
      local claimed = {}
      for _, id in ipairs(ids) do
        local jk = KEYS[K + 6] .. id
        -- One read of the job serves the attempt count, the wait and the reply: the reply
        -- is the job as this script leaves it (job_reply's shape).
        local flat = redis.call('HGETALL', jk)
        if #flat > 0 then  -- a ready entry without its job is only dropped (below)
          local meta, payload, result = job_parts(flat)
          local attempt = (tonumber(meta.a) or 0) + 1
          if attempt == 1 then
            -- first_wait_ms of monoq.core.counters: due time to claim, never negative
            local wait = tonumber(now) - tonumber(meta.ra)
            if wait < 0 then wait = 0 end
            waits[#waits + 1] = wait
          end
          local token = ARGV[6 + #out]
          meta.a = tostring(attempt)
          meta.st = 'running'
          meta.sa = now
          meta.w = ARGV[3]
          meta.le = expires_text
          meta.tk = token
          redis.call('HSET', jk, 'a', meta.a, 'st', 'running', 'sa', now, 'w', ARGV[3],
                     'le', expires_text, 'tk', token)
          redis.call('RPUSH', KEYS[K + 7] .. id,
                     cjson.encode({n = attempt, w = ARGV[3], s = tonumber(now)}))
          running[#running + 1] = expires_text
          running[#running + 1] = id
          out[#out + 1] = {cjson.encode(meta), payload, result}
          claimed[#claimed + 1] = id
        end
      end
      zrem_all(KEYS[K + 1], ids)
      for i = 1, #running, 1000 do  -- pairs of (lease expiry, id)
        redis.call('ZADD', KEYS[K + 2], unpack(running, i, math.min(i + 999, #running)))
      end
      if #waits > 0 then
        for i = 1, #waits, 500 do
          redis.call('LPUSH', KEYS[K + 8], unpack(waits, i, math.min(i + 499, #waits)))
        end
        redis.call('LTRIM', KEYS[K + 8], 0, tonumber(ARGV[4]) - 1)
      end
      zrem_all(KEYS[K + 9], ids)
      zadd0_all(KEYS[K + 10], claimed)
      poke(KEYS[K + 4])  -- a new lease expiry may be the scheduler's next wakeup
      if redis.call('ZCARD', KEYS[K + 1]) == 0 then
        redis.call('DEL', KEYS[K + 5])  -- nothing left to wake anyone for
      end
    end
  end
end
return out
