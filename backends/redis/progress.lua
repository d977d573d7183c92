-- Store how far running jobs of one queue are, each fenced by its lease token.
-- KEYS: one job hash per item
-- ARGV: per item 3 strings: token, fraction, message ('' = none, else the text after a
--       leading '=', so that an empty message is kept as one)
-- Answers 1 (stored) or 0 (stale token, or the job is not running) per item.
local out = {}
for i = 1, #KEYS do
  local a = (i - 1) * 3
  local v = redis.call('HMGET', KEYS[i], 'st', 'tk')
  if v[1] == 'running' and v[2] == ARGV[a + 1] then
    redis.call('HSET', KEYS[i], 'pg', ARGV[a + 2])
    if ARGV[a + 3] == '' then
      redis.call('HDEL', KEYS[i], 'pm')
    else
      redis.call('HSET', KEYS[i], 'pm', string.sub(ARGV[a + 3], 2))
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
