-- One step of list_jobs over one queue, newest first (read only).
-- KEYS: 1 ids, 2 job prefix
-- ARGV: 1 start ('+' or '(<id>'), 2 matches wanted, 3 max ids to scan, 4 handler (''),
--       5.. states (none = any)
-- Answers {last id scanned, 1 if the index is exhausted, {job_reply of each match}}.
local want = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local handler = ARGV[4]
local any_state = #ARGV < 5
local states = {}
for i = 5, #ARGV do states[ARGV[i]] = true end
local out = {}
local scanned = 0
local last = ''
local start = ARGV[1]
local exhausted = 0
while #out < want and scanned < budget do
  local chunk = math.min(256, budget - scanned)
  local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], start, '-', 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    scanned = scanned + 1
    last = id
    local jk = KEYS[2] .. id
    local v = redis.call('HMGET', jk, 'st', 'h')
    if v[1] and (any_state or states[v[1]]) and (handler == '' or v[2] == handler) then
      out[#out + 1] = job_reply(jk)
      if #out >= want then break end
    end
  end
  if #ids < chunk then
    exhausted = 1
    break
  end
  start = '(' .. last
end
return {last, exhausted, out}
