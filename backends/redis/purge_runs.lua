-- One step of purge_schedule_runs: walk a schedule's runs newest first, keep the first `keep`
-- that still exist, delete older terminal ones (job hash, attempts, idempotency key, the id
-- index of its state, state index, run index, jobq entry).
-- KEYS: 1 the schedule's runs ZSET (score 0, ordered by id), 2 jobq
-- ARGV: 1 key prefix, 2 start ('+' or '(<id>'), 3 runs still to keep, 4 limit,
--       5 max ids to scan
-- Answers {deleted count, runs still to keep, last id scanned, 1 if the index is exhausted}.
-- The job keys are derived from the job's queue (jobq): like enqueue, this script spans slots.
local P = ARGV[1]
local start = ARGV[2]
local keep = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local terminal = {completed = true, dead = true, cancelled = true}
local deleted, scanned, last, exhausted = 0, 0, '', 0
while deleted < limit and scanned < budget do
  local chunk = math.min(256, budget - scanned)
  local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], start, '-', 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    scanned = scanned + 1
    last = id
    local q = redis.call('HGET', KEYS[2], id)
    local base, v = nil, {false, false}
    if q then
      base = P .. ':{' .. q .. '}:'
      v = redis.call('HMGET', base .. 'job:' .. id, 'st', 'ik')
    end
    if not v[1] then
      redis.call('ZREM', KEYS[1], id)  -- the job is gone: drop the stale entry
    elseif keep > 0 then
      keep = keep - 1
    elseif terminal[v[1]] then
      if v[2] and redis.call('HGET', base .. 'idem', v[2]) == id then
        redis.call('HDEL', base .. 'idem', v[2])
      end
      redis.call('DEL', base .. 'job:' .. id, base .. 'att:' .. id)
      redis.call('ZREM', base .. 'ids:' .. v[1], id)
      redis.call('ZREM', base .. v[1], id)  -- terminal state indexes are named after the state
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      deleted = deleted + 1
      if deleted >= limit then break end
    end
  end
  if #ids < chunk then
    exhausted = 1
    break
  end
  start = '(' .. last
end
return {deleted, keep, last, exhausted}
