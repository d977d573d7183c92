-- One step of list_jobs over one queue, newest first (read only).
-- KEYS: 1 ids, 2 job prefix
-- ARGV: 1 start ('+' or '(<id>'), 2 matches wanted, 3 max ids to scan, 4 handler (''),
--       5 error type, prefixed with '=' ('' = any), 6 lowest finished_at ms (inclusive, ''),
--       7 finished_at ms bound (exclusive, ''), 8.. states (none = any)
-- Answers {last id scanned, 1 if the index is exhausted, {job_reply of each match}}.
local want = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local handler = ARGV[4]
local etype = nil
if ARGV[5] ~= '' then etype = string.sub(ARGV[5], 2) end
local lo = tonumber(ARGV[6])  -- nil when ''
local hi = tonumber(ARGV[7])
local windowed = lo ~= nil or hi ~= nil
local any_state = #ARGV < 8
local states = {}
for i = 8, #ARGV do states[ARGV[i]] = true end

-- error_type_of of monoq.core.models: the text before the first ': '
local function error_type(e)
  local pos = string.find(e, ': ', 1, true)
  if pos then return string.sub(e, 1, pos - 1) end
  return e
end

local function matches(v)
  if not v[1] or not (any_state or states[v[1]]) then return false end
  if handler ~= '' and v[2] ~= handler then return false end
  if etype and not (v[3] and error_type(v[3]) == etype) then return false end
  if windowed then
    local fa = tonumber(v[4])
    if not fa then return false end
    if lo and fa < lo then return false end
    if hi and fa >= hi then return false end
  end
  return true
end

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
    if matches(redis.call('HMGET', jk, 'st', 'h', 'e', 'fa')) then
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
