-- Make queues known (the global SET of queue names).
-- KEYS: 1 queues; the only key.
-- ARGV: queue names.
-- Answers the names that were not known before (the caller then wakes the schedulers through
-- the global changes list, which is in another slot).
local added = {}
for _, name in ipairs(ARGV) do
  if redis.call('SADD', KEYS[1], name) == 1 then added[#added + 1] = name end
end
return added
