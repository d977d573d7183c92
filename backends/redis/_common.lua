-- Helpers prepended to every monoq script (Redis has no include).

-- Ready-queue score: priority first, then run_at; equal scores sort by id (time-ordered).
-- priority <= 9 and run_at_ms < 10**13, so the sum stays below 2**53 and is exact.
local function ready_score(priority, run_at_ms)
  return tonumber(priority) * 10000000000000 + tonumber(run_at_ms)
end

-- Push up to `cap` wake tokens (one per ready job) and cap the list: each token can wake one
-- blocked worker; leftovers cost a waiter at most `cap` early returns.
local function push_tokens(key, n, cap)
  if n <= 0 then return end
  if n > cap then n = cap end
  local tokens = {}
  for i = 1, n do tokens[i] = '1' end
  if redis.call('LPUSH', key, unpack(tokens)) > cap then
    redis.call('LTRIM', key, 0, cap - 1)
  end
end

-- One pending token is enough for a scheduler: it re-reads next_wakeup when woken.
local function poke(key)
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, 0)
end

-- A job for Python: {JSON of every field but payload and result, payload, result or nil}.
-- Three reply elements instead of HGETALL's forty: redis-py parses replies in Python.
-- job_parts splits a job's HGETALL into those three parts (meta still a table).
local function job_parts(flat)
  local meta = {}
  local payload, result = '', false
  for i = 1, #flat, 2 do
    local field = flat[i]
    if field == 'p' then
      payload = flat[i + 1]
    elseif field == 'r' then
      result = flat[i + 1]
    else
      meta[field] = flat[i + 1]
    end
  end
  return meta, payload, result
end

local function job_reply(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return false end
  local meta, payload, result = job_parts(flat)
  return {cjson.encode(meta), payload, result}
end


-- ZADD with score 0 (the id indexes) / ZREM of a list of members, in calls of at most 500
-- members (unpack is bounded by Lua's C stack): one call per batch instead of one per job.
local function zadd0_all(key, members)
  for i = 1, #members, 500 do
    local args = {}
    for j = i, math.min(i + 499, #members) do
      args[#args + 1] = 0
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end

-- ZADD the pairs of `flat` (score, member, score, member, ...) to `key`, 500 members a call:
-- a batch's ready or scheduled jobs in one call per queue rather than one each.
local function zadd_pairs(key, flat)
  for i = 1, #flat, 1000 do
    redis.call('ZADD', key, unpack(flat, i, math.min(i + 999, #flat)))
  end
end

local function zrem_all(key, members)
  for i = 1, #members, 500 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 499, #members)))
  end
end

-- A new job's hash fields from its packed enqueue fields (F[a + 1 .. a + 11], see
-- enqueue.lua): answers the HSET arguments, its state ('queued' or 'scheduled') and run_at.
-- The state rule is monoq.core.rules.admitted, copied here because a script cannot call
-- Python; the conformance suite's enqueue tests pin both to the same answers.
local function new_job_fields(F, a, queue, now)
  local run_at = F[a + 6]
  local state = 'scheduled'
  if run_at == '' or tonumber(run_at) <= tonumber(now) then
    state = 'queued'
    run_at = now
  end
  local fields = {
    'id', F[a + 1], 'q', queue, 'h', F[a + 3], 'p', F[a + 4], 'pr', F[a + 5],
    'st', state, 'a', '0', 'mr', F[a + 7], 'to', F[a + 8], 'ra', run_at, 'ca', now,
  }
  local n = 22
  if F[a + 9] ~= '' then fields[n + 1] = 'ik'; fields[n + 2] = F[a + 9]; n = n + 2 end
  if F[a + 10] ~= '' then fields[n + 1] = 'si'; fields[n + 2] = F[a + 10]; n = n + 2 end
  if F[a + 11] ~= '' then fields[n + 1] = 'tc'; fields[n + 2] = F[a + 11] end
  return fields, state, run_at
end
