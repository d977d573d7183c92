-- Move a schedule's last fire time forward (compare-and-set max).
-- KEYS: 1 the schedule hash
-- ARGV: 1 fire_at in epoch microseconds
-- Answers 1 if it moved, 0 if the stored time is as late or later, or there is no schedule.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], 'lf')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'lf', ARGV[1])
return 1
