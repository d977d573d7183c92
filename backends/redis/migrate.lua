-- One step of moving a queue's old single id index (P:{q}:ids, every id, score 0) into the
-- per-state id indexes (P:{q}:ids:<state>): each id goes to the index of its job's state; an
-- id whose job is gone is dropped.
-- KEYS: 1 the old id index, 2 job prefix, 3 prefix of the per-state id indexes
-- ARGV: 1 ids per step
-- Answers {ids moved, ids dropped, ids left in the old index}.
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local moved, dropped = 0, 0
for _, id in ipairs(ids) do
  local state = redis.call('HGET', KEYS[2] .. id, 'st')
  if state then
    redis.call('ZADD', KEYS[3] .. state, 0, id)
    moved = moved + 1
  else
    dropped = dropped + 1
  end
end
for i = 1, #ids, 500 do
  redis.call('ZREM', KEYS[1], unpack(ids, i, math.min(i + 499, #ids)))
end
return {moved, dropped, redis.call('ZCARD', KEYS[1])}
