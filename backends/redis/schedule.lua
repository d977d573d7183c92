-- Replace a schedule's hash whole (readers never see it half written).
-- KEYS: 1 the schedule hash; the only key.
-- ARGV: field, value pairs.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
