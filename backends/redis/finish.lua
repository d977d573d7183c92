-- End runs of one queue, each fenced by its token.
-- KEYS: 1 ready, 2 running, 3 retrying, 4 completed, 5 dead, 6 cancelled, 7 wake, 8 changes,
--       then per item: job hash, attempt list
-- ARGV: 1 now_ms, 2 wake cap, 3 one MessagePack array holding per item 10 strings: token,
--       outcome, result (''), error (''), error type (''), error message (''), traceback (''),
--       retry_at_ms (''), attempt outcome, unused
-- Answers 1 (applied) or 0 (stale token) per item.
local now = ARGV[1]
local cap = tonumber(ARGV[2])
local F = cmsgpack.unpack(ARGV[3])
local n = (#KEYS - 8) / 2
local out = {}
local woken = 0
local changed = false
for i = 1, n do
  local jk = KEYS[8 + 2 * i - 1]
  local ak = KEYS[8 + 2 * i]
  local a = (i - 1) * 10
  local v = redis.call('HMGET', jk, 'st', 'tk', 'cr', 'id', 'pr', 'ra', 'a')
  if v[1] ~= 'running' or v[2] ~= F[a + 1] then
    out[i] = 0
  else
    local id = v[4]
    local outcome = F[a + 2]
    if v[3] == '1' and (outcome == 'retry' or outcome == 'dead' or outcome == 'released') then
      outcome = 'cancelled'
    end
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', jk, 'tk', 'le', 'w')
    if F[a + 4] ~= '' then redis.call('HSET', jk, 'e', F[a + 4]) end
    if outcome == 'completed' then
      redis.call('HSET', jk, 'st', 'completed', 'fa', now)
      if F[a + 3] ~= '' then
        redis.call('HSET', jk, 'r', F[a + 3])
      else
        redis.call('HDEL', jk, 'r')
      end
      redis.call('ZADD', KEYS[4], now, id)
    elseif outcome == 'retry' then
      redis.call('HSET', jk, 'st', 'retrying', 'ra', F[a + 8])
      redis.call('ZADD', KEYS[3], F[a + 8], id)
      changed = true
    elseif outcome == 'dead' then
      redis.call('HSET', jk, 'st', 'dead', 'fa', now)
      redis.call('ZADD', KEYS[5], now, id)
    elseif outcome == 'cancelled' then
      redis.call('HSET', jk, 'st', 'cancelled', 'fa', now)
      redis.call('ZADD', KEYS[6], now, id)
    else -- released: back to the queue, the attempt refunded, run_at kept
      redis.call('HSET', jk, 'st', 'queued', 'a', tonumber(v[7]) - 1)
      redis.call('ZADD', KEYS[1], ready_score(v[5], v[6]), id)
      woken = woken + 1
    end
    local last = redis.call('LINDEX', ak, -1)
    if last then
      local rec = cjson.decode(last)
      rec.f = tonumber(now)
      rec.o = F[a + 9]
      if F[a + 5] ~= '' then rec.et = F[a + 5] end
      if F[a + 6] ~= '' then rec.em = F[a + 6] end
      if F[a + 7] ~= '' then rec.tb = F[a + 7] end
      redis.call('LSET', ak, -1, cjson.encode(rec))
    end
    out[i] = 1
  end
end
push_tokens(KEYS[7], woken, cap)
if changed then poke(KEYS[8]) end
return out
