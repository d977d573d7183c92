-- Remove deleted jobs' entries from the global id index, each only while it still names the
-- queue the job was deleted from (the id may have been stored again elsewhere meanwhile).
-- KEYS: 1 jobq (HASH id -> queue); the only key.
-- ARGV: pairs of id, queue.
-- Answers how many entries were removed.
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
