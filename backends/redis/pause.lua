-- Pause or resume a queue.
-- KEYS: 1 queues, 2 paused, 3 wake, 4 global changes
-- ARGV: 1 '1' pause / '0' resume, 2 queue name, 3 wake cap
if redis.call('SADD', KEYS[1], ARGV[2]) == 1 then poke(KEYS[4]) end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[2], '1')
elseif redis.call('DEL', KEYS[2]) == 1 then
  push_tokens(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[3]))  -- let waiting workers look
end
return 1
