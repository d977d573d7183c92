-- Ask for a running job's stack, or store the worker's answer.
-- KEYS: 1 job hash
-- ARGV: 1 'ask', or 'put' with 2 token, 3 the stack, 4 now_ms
-- 'ask' answers the job afterwards (job_reply; false when there is no such job); 'put'
-- answers 1 when stored, 0 for a stale token or a job that is not running.
if ARGV[1] == 'ask' then
  if redis.call('HGET', KEYS[1], 'st') == 'running' then
    redis.call('HSET', KEYS[1], 'sr', '1')
  end
  return job_reply(KEYS[1])
end
local v = redis.call('HMGET', KEYS[1], 'st', 'tk')
if v[1] ~= 'running' or v[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'sk', ARGV[3], 'sx', ARGV[4])
redis.call('HDEL', KEYS[1], 'sr')
return 1
