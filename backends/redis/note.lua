-- Give the latest attempt record numbered ARGV[1] and run by worker ARGV[2] a traceback
-- (ARGV[3]) when it has none.
-- KEYS: 1 the job's attempt list
-- Answers 1 when it did, else 0.
local records = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #records, 1, -1 do
  local rec = cjson.decode(records[i])
  if tostring(rec.n) == ARGV[1] and rec.w == ARGV[2] then
    if rec.tb then return 0 end
    rec.tb = ARGV[3]
    redis.call('LSET', KEYS[1], i - 1, cjson.encode(rec))
    return 1
  end
end
return 0
