-- Enqueue a batch atomically: the jobs of one queue, or on one server of several queues (on a
-- cluster the caller sends one call per slot, so every key is in one slot).
-- KEYS: per queue 8 keys: ready, scheduled, ids:queued, idem, wake, changes, job prefix,
--       ids:scheduled (the per-state id indexes), then one job hash key per job.
-- ARGV: 1 now_ms, 2 queue count, 3 job count, 4 wake cap, then the queue names,
--       then one MessagePack array holding per job 10 strings: id, queue index (1-based),
--       handler, payload, priority, run_at_ms ('' = now), max_retries, timeout,
--       idempotency key (''), schedule id (''), trace context (''). One packed argument
--       instead of eleven per job keeps the client's command encoding cheap.
-- Answers per job: 1 when created, else the existing job (job_reply): the same id already
-- stored in its queue, or else the same idempotency key in its queue. The caller has already
-- written the jobs' entries in the global id index (jobq), and adds each job to its
-- schedule's run index afterwards (see _keys.py: neither is in a queue's slot).
local now = ARGV[1]
local nq = tonumber(ARGV[2])
local nj = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local QN = 8              -- keys per queue
local JK = nq * QN        -- offset of the job keys in KEYS
local QA = 4              -- offset of the queue names in ARGV
local F = cmsgpack.unpack(ARGV[5 + nq])  -- the job fields, NF per job
local NF = 11

local ready_ids, sched_ids = {}, {}  -- per queue, for its id indexes
local ready_at, sched_at = {}, {}  -- per queue, (score, id) pairs for its ready and scheduled sets
for qi = 1, nq do
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
  local k = (qi - 1) * QN
  local jobkey = KEYS[JK + j]
  local existing = nil
  if redis.call('EXISTS', jobkey) == 1 then
    existing = jobkey  -- the same id again (a replayed call): answer what is stored
  elseif key ~= '' then
    local prev = redis.call('HGET', KEYS[k + 4], key)
    if prev and redis.call('EXISTS', KEYS[k + 7] .. prev) == 1 then
      existing = KEYS[k + 7] .. prev
    else
      redis.call('HSET', KEYS[k + 4], key, id)
    end
  end
  if existing then
    out[j] = job_reply(existing)
  else
    local fields, state, run_at = new_job_fields(F, a, ARGV[QA + qi], now)
    redis.call('HSET', jobkey, unpack(fields))
    if state == 'scheduled' then
      local n = #sched_ids[qi] + 1
      sched_ids[qi][n] = id
      sched_at[qi][2 * n - 1] = run_at
      sched_at[qi][2 * n] = id
    else
      local n = #ready_ids[qi] + 1
      ready_ids[qi][n] = id
      ready_at[qi][2 * n - 1] = ready_score(F[a + 5], run_at)
      ready_at[qi][2 * n] = id
    end
    out[j] = 1
  end
end

for qi = 1, nq do
  local k = (qi - 1) * QN
  zadd_pairs(KEYS[k + 1], ready_at[qi])
  zadd_pairs(KEYS[k + 2], sched_at[qi])
  zadd0_all(KEYS[k + 3], ready_ids[qi])
  zadd0_all(KEYS[k + 8], sched_ids[qi])
  push_tokens(KEYS[k + 5], #ready_ids[qi], cap)
  if #sched_ids[qi] > 0 then poke(KEYS[k + 6]) end
end
return out
