-- Enqueue a batch atomically on one server (not a cluster): the jobs, their entries in the
-- global id index, the set of queues and the schedules' run indexes in one step, one round
-- trip. A cluster enqueues in single-slot steps instead (enqueue.lua, see _keys.py).
-- KEYS: 1 queues (SET), 2 jobq (HASH), 3 global changes (LIST), 4 schedule-runs key prefix
--       (the runs of schedule s are the ZSET <prefix><s>),
--       then per distinct queue 8 keys: ready, scheduled, ids:queued, idem, wake, changes,
--       job prefix, ids:scheduled (the per-state id indexes),
--       then one job hash key per job.
-- ARGV: 1 now_ms, 2 queue count, 3 job count, 4 wake cap, then the queue names,
--       then one MessagePack array holding per job 11 strings: id, queue index (1-based),
--       handler, payload, priority, run_at_ms ('' = now), max_retries, timeout,
--       idempotency key (''), schedule id (''), trace context (''). One packed argument
--       instead of eleven per job keeps the client's command encoding cheap. Last, the key
--       prefix.
-- Answers per job: 1 when created, else the existing job (job_reply) (same id, in whatever
-- queue it is stored, or else the same idempotency key in the same queue).
local now = ARGV[1]
local nq = tonumber(ARGV[2])
local nj = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local QK = 4              -- offset of the queue key blocks in KEYS
local QN = 8              -- keys per queue
local JK = 4 + nq * QN    -- offset of the job keys in KEYS
local QA = 4              -- offset of the queue names in ARGV
local F = cmsgpack.unpack(ARGV[5 + nq])  -- the job fields, NF per job
local P = ARGV[6 + nq]  -- the key prefix, for the hash of a job stored in another queue
local NF = 11

local ready_n, sched_n = {}, {}
local ready_ids, sched_ids = {}, {}  -- per queue, for its id indexes
local ready_at, sched_at = {}, {}  -- per queue, (score, id) pairs for its ready and scheduled sets
for qi = 1, nq do
  ready_n[qi] = 0
  sched_n[qi] = 0
  ready_ids[qi] = {}
  sched_ids[qi] = {}
  ready_at[qi] = {}
  sched_at[qi] = {}
end

local out = {}
for j = 1, nj do
  local a = (j - 1) * NF
  local id = F[a + 1]
  local qi = tonumber(F[a + 2])
  local key = F[a + 9]
  local k = QK + (qi - 1) * QN
  local jobkey = KEYS[JK + j]
  local existing = nil
  -- A new id (the common case) has no entry in the id index yet: one HSETNX both finds that
  -- out and writes the entry. An id with an entry is checked as before.
  local indexed = redis.call('HSETNX', KEYS[2], id, ARGV[QA + qi]) == 0
  local stored_in = indexed and redis.call('HGET', KEYS[2], id)
  if indexed and redis.call('EXISTS', jobkey) == 1 then
    existing = jobkey  -- the same id again (a replayed call): answer what is stored
  elseif stored_in and redis.call('EXISTS', P .. ':{' .. stored_in .. '}:job:' .. id) == 1 then
    existing = P .. ':{' .. stored_in .. '}:job:' .. id  -- the id, stored in another queue
  elseif key ~= '' then
    local prev = redis.call('HGET', KEYS[k + 4], key)
    if prev and redis.call('EXISTS', KEYS[k + 7] .. prev) == 1 then
      existing = KEYS[k + 7] .. prev
    else
      redis.call('HSET', KEYS[k + 4], key, id)
    end
  end
  if existing then
    if not indexed then  -- answered by its idempotency key: take back the entry just written
      redis.call('HDEL', KEYS[2], id)
    end
    out[j] = job_reply(existing)
  else
    local fields, state, run_at = new_job_fields(F, a, ARGV[QA + qi], now)
    if F[a + 10] ~= '' then
      redis.call('ZADD', KEYS[4] .. F[a + 10], 0, id)  -- the schedule's run index
    end
    redis.call('HSET', jobkey, unpack(fields))
    if indexed then  -- an entry left by a job that is gone: it names this one now
      redis.call('HSET', KEYS[2], id, ARGV[QA + qi])
    end
    if state == 'scheduled' then
      local n = sched_n[qi] + 1
      sched_n[qi] = n
      sched_ids[qi][n] = id
      sched_at[qi][2 * n - 1] = run_at
      sched_at[qi][2 * n] = id
    else
      local n = ready_n[qi] + 1
      ready_n[qi] = n
      ready_ids[qi][n] = id
      ready_at[qi][2 * n - 1] = ready_score(F[a + 5], run_at)
      ready_at[qi][2 * n] = id
    end
    out[j] = 1
  end
end

for qi = 1, nq do
  local k = QK + (qi - 1) * QN
  -- A queue is known once a job is stored in it (not when every job of the batch naming it
  -- answered a stored one).
  if ready_n[qi] + sched_n[qi] > 0 and redis.call('SADD', KEYS[1], ARGV[QA + qi]) == 1 then
    poke(KEYS[3])  -- a scheduler does not watch this queue's changes list yet
  end
  zadd_pairs(KEYS[k + 1], ready_at[qi])
  zadd_pairs(KEYS[k + 2], sched_at[qi])
  zadd0_all(KEYS[k + 3], ready_ids[qi])
  zadd0_all(KEYS[k + 8], sched_ids[qi])
  push_tokens(KEYS[k + 5], ready_n[qi], cap)
  if sched_n[qi] > 0 then poke(KEYS[k + 6]) end
end
return out
