-- Read the RUNNING jobs of one queue whose lease expired before now (read only).
-- KEYS: 1 running, 2 job prefix
-- ARGV: 1 now_ms, 2 limit
-- Answers each job (job_reply), oldest expiry first.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local job = job_reply(KEYS[2] .. id)
  if job then out[#out + 1] = job end
end
return out
