-- Write jobs' entries in the global id index (job id -> queue), before their queue's enqueue
-- script stores them, so that get(id) finds a job from the moment it exists.
-- KEYS: 1 jobq (HASH id -> queue); the only key.
-- ARGV: per job 3 strings: id, queue, and a queue the entry may be moved away from ('' for
--       none: the caller found no job of that id in it).
-- Answers per job the entry as it was: '' when there was none (it now names the queue), the
-- queue it names otherwise (it was moved to the job's queue when it named the third string).
local out = {}
for i = 1, #ARGV, 3 do
  local id, queue, stale = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HGET', KEYS[1], id)
  if not cur then
    redis.call('HSET', KEYS[1], id, queue)
    out[#out + 1] = ''
  else
    if stale ~= '' and cur == stale then redis.call('HSET', KEYS[1], id, queue) end
    out[#out + 1] = cur
  end
end
return out
