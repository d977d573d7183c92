-- Pause or resume a queue (the caller has made the queue known first).
-- KEYS: 1 paused, 2 wake
-- ARGV: 1 '1' pause / '0' resume, 2 wake cap
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '1')
elseif redis.call('DEL', KEYS[1]) == 1 then
  push_tokens(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[2]))  -- let waiting workers look
end
return 1
