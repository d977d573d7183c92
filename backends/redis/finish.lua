-- End runs of one queue, each fenced by its token.
-- KEYS: 1 ready, 2 running, 3 retrying, 4 completed, 5 dead, 6 cancelled, 7 wake, 8 changes,
--       9 throughput (HASH epoch minute -> "completed:failed:dead"), then the id index of
--       each state: 10 ids:queued, 11 ids:running, 12 ids:retrying, 13 ids:completed,
--       14 ids:dead, 15 ids:cancelled (KEYS[i + 9] is the id index of the state in KEYS[i]),
--       then per item: job hash, attempt list
-- ARGV: 1 now_ms, 2 wake cap, 3 one MessagePack array holding per item 10 strings: token,
--       outcome, result (''), error, error type, error message, traceback (each '' for none,
--       else the text after a leading '=', so that an empty text is kept as one),
--       retry_at_ms (''), attempt outcome, unused;
--       4 the epoch minute of now, 5 the oldest minute to keep, 6 how many minutes the
--       throughput hash may hold before minutes older than ARGV 5 are deleted
-- Answers 1 (applied) or 0 (stale token) per item.
local now = ARGV[1]
local cap = tonumber(ARGV[2])
local F = cmsgpack.unpack(ARGV[3])
local K = 15  -- the per-item keys follow this many queue keys
local IDS = 9  -- KEYS[i + IDS] is the id index of the state whose ZSET is KEYS[i]
local n = (#KEYS - K) / 2
local out = {}
local woken = 0
local changed = false
local done, failed, dead = 0, 0, 0
local ended = {}  -- the ids that left running
local moved = {{}, {}, {}, {}, {}, {}}  -- by the KEYS index of their new state's ZSET
local scored = {{}, {}, {}, {}, {}, {}}  -- the same, as (score, id) pairs for its ZADD
for i = 1, n do
  local jk = KEYS[K + 2 * i - 1]
  local ak = KEYS[K + 2 * i]
  local a = (i - 1) * 10
  local v = redis.call('HMGET', jk, 'st', 'tk', 'cr', 'id', 'pr', 'ra', 'a')
  if v[1] ~= 'running' or v[2] ~= F[a + 1] then
    out[i] = 0
  else
    local id = v[4]
    local outcome = F[a + 2]
    -- monoq.core.rules.finish_outcome, copied here because a script cannot call Python; the
    -- conformance suite's cancel tests pin both to the same answers.
    if v[3] == '1' and (outcome == 'retry' or outcome == 'dead' or outcome == 'released') then
      outcome = 'cancelled'
    end
    local to = 0  -- the KEYS index of the new state's ZSET
    local score = now
    local set = {}  -- one HSET and one HDEL per item
    local unset = {'tk', 'le', 'w', 'sr'}
    -- A failed or cancelled run stores its error when it has one (else the last one stays);
    -- a completed or released run leaves the job's error alone.
    if F[a + 4] ~= '' and (outcome == 'retry' or outcome == 'dead' or outcome == 'cancelled')
    then
      set[#set + 1] = 'e'
      set[#set + 1] = string.sub(F[a + 4], 2)
    end
    if outcome == 'completed' then
      set[#set + 1] = 'st'
      set[#set + 1] = 'completed'
      set[#set + 1] = 'fa'
      set[#set + 1] = now
      if F[a + 3] ~= '' then
        set[#set + 1] = 'r'
        set[#set + 1] = F[a + 3]
      else
        unset[#unset + 1] = 'r'
      end
      to = 4
    elseif outcome == 'retry' then  -- the next run starts over: no progress yet
      unset[#unset + 1] = 'pg'
      unset[#unset + 1] = 'pm'
      set[#set + 1] = 'st'
      set[#set + 1] = 'retrying'
      set[#set + 1] = 'ra'
      set[#set + 1] = F[a + 8]
      score = F[a + 8]
      to = 3
      changed = true
    elseif outcome == 'dead' then
      set[#set + 1] = 'st'
      set[#set + 1] = 'dead'
      set[#set + 1] = 'fa'
      set[#set + 1] = now
      to = 5
    elseif outcome == 'cancelled' then
      set[#set + 1] = 'st'
      set[#set + 1] = 'cancelled'
      set[#set + 1] = 'fa'
      set[#set + 1] = now
      to = 6
    else -- released: back to the queue, the attempt refunded, run_at kept, no progress
      unset[#unset + 1] = 'pg'
      unset[#unset + 1] = 'pm'
      set[#set + 1] = 'st'
      set[#set + 1] = 'queued'
      set[#set + 1] = 'a'
      set[#set + 1] = tonumber(v[7]) - 1
      score = ready_score(v[5], v[6])
      to = 1
      woken = woken + 1
    end
    redis.call('HDEL', jk, unpack(unset))
    redis.call('HSET', jk, unpack(set))
    local pairs_to = scored[to]
    pairs_to[#pairs_to + 1] = score
    pairs_to[#pairs_to + 1] = id
    ended[#ended + 1] = id
    moved[to][#moved[to] + 1] = id
    -- finish_counts of monoq.core.counters: the run by how it ended (the attempt outcome the
    -- worker reported), dead by what the job became
    if outcome == 'completed' then done = done + 1 end
    if F[a + 9] == 'failed' then failed = failed + 1 end
    if outcome == 'dead' then dead = dead + 1 end
    local last = redis.call('LINDEX', ak, -1)
    if last then
      local rec = cjson.decode(last)
      rec.f = tonumber(now)
      rec.o = F[a + 9]
      if F[a + 5] ~= '' then rec.et = string.sub(F[a + 5], 2) end
      if F[a + 6] ~= '' then rec.em = string.sub(F[a + 6], 2) end
      if F[a + 7] ~= '' then rec.tb = string.sub(F[a + 7], 2) end
      redis.call('LSET', ak, -1, cjson.encode(rec))
    end
    out[i] = 1
  end
end
if done + failed + dead > 0 then
  local minute = ARGV[4]
  local prev = redis.call('HGET', KEYS[9], minute)
  if prev then
    local c, f, d = string.match(prev, '^(%d+):(%d+):(%d+)$')
    done, failed, dead = done + tonumber(c), failed + tonumber(f), dead + tonumber(d)
  end
  redis.call('HSET', KEYS[9], minute, done .. ':' .. failed .. ':' .. dead)
  -- A new minute: once the hash holds more minutes than retention needs, drop the old ones
  -- (HKEYS of a bounded hash, about once an hour per busy queue).
  if not prev and redis.call('HLEN', KEYS[9]) > tonumber(ARGV[6]) then
    local horizon = tonumber(ARGV[5])
    local drop = {}
    for _, field in ipairs(redis.call('HKEYS', KEYS[9])) do
      if tonumber(field) < horizon then drop[#drop + 1] = field end
      if #drop >= 500 then
        redis.call('HDEL', KEYS[9], unpack(drop))
        drop = {}
      end
    end
    if #drop > 0 then redis.call('HDEL', KEYS[9], unpack(drop)) end
  end
end
-- the state sets and the id indexes, one call per set for the whole batch
zrem_all(KEYS[2], ended)
for to = 1, 6 do
  local members = scored[to]
  for i = 1, #members, 1000 do
    redis.call('ZADD', KEYS[to], unpack(members, i, math.min(i + 999, #members)))
  end
end
zrem_all(KEYS[2 + IDS], ended)
for to = 1, 6 do zadd0_all(KEYS[to + IDS], moved[to]) end
push_tokens(KEYS[7], woken, cap)
if changed then poke(KEYS[8]) end
return out
