-- Delete given jobs of one queue that are in a terminal state (purge_schedule_runs), with
-- their attempts, idempotency key, and entries in their state's indexes.
-- KEYS: 1 the queue's key prefix (P:{q}:); every key is derived from it, in its slot.
-- ARGV: job ids.
-- Answers the ids deleted (a job that is gone or no longer terminal is left alone).
local base = KEYS[1]
local terminal = {completed = true, dead = true, cancelled = true}
local out = {}
for _, id in ipairs(ARGV) do
  local v = redis.call('HMGET', base .. 'job:' .. id, 'st', 'ik')
  if v[1] and terminal[v[1]] then
    if v[2] and redis.call('HGET', base .. 'idem', v[2]) == id then
      redis.call('HDEL', base .. 'idem', v[2])
    end
    redis.call('DEL', base .. 'job:' .. id, base .. 'att:' .. id)
    redis.call('ZREM', base .. 'ids:' .. v[1], id)
    redis.call('ZREM', base .. v[1], id)  -- terminal state indexes are named after the state
    out[#out + 1] = id
  end
end
return out
