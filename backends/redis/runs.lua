-- One page of list_jobs over a schedule's runs, newest first (read only).
-- KEYS: 1 the schedule's runs ZSET (score 0, ordered by id), 2 jobq
-- ARGV: 1 key prefix, 2 start ('+' or '(<id>'), 3 limit (matches on the page), 4 max ids to
--       walk, 5 queue ('' = any), 6 handler (''), 7 error type, prefixed with '=' ('' = any),
--       8 lowest finished_at ms (inclusive, ''), 9 finished_at ms bound (exclusive, ''),
--       10.. states (none = any)
-- Answers {{job_reply of each match}, cursor} as list.lua does: cursor is false when no run
-- below the page is left to walk, else the id the next page starts below.
-- The job keys are derived from each run's queue (jobq): like purge_runs, this spans slots.
local P = ARGV[1]
local from = ARGV[2]
local limit = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local queue = ARGV[5]
local handler = ARGV[6]
local etype = nil
if ARGV[7] ~= '' then etype = string.sub(ARGV[7], 2) end
local lo = tonumber(ARGV[8])  -- nil when ''
local hi = tonumber(ARGV[9])
local windowed = lo ~= nil or hi ~= nil
local any_state = #ARGV < 10
local states = {}
for i = 10, #ARGV do states[ARGV[i]] = true end

-- error_type_of of monoq.core.models: the text before the first ': '
local function error_type(e)
  local pos = string.find(e, ': ', 1, true)
  if pos then return string.sub(e, 1, pos - 1) end
  return e
end

local residual = handler ~= '' or etype ~= nil or windowed

-- The job key of a run that passes every filter, else nil (also when the job is gone). The
-- state is read first, alone: most calls filter by state only.
local function match(id)
  local q = redis.call('HGET', KEYS[2], id)
  if not q or (queue ~= '' and q ~= queue) then return nil end
  local jk = P .. ':{' .. q .. '}:job:' .. id
  local state = redis.call('HGET', jk, 'st')
  if not state or not (any_state or states[state]) then return nil end
  if not residual then return jk end
  local v = redis.call('HMGET', jk, 'h', 'e', 'fa')
  if handler ~= '' and v[1] ~= handler then return nil end
  if etype and not (v[2] and error_type(v[2]) == etype) then return nil end
  if windowed then
    local fa = tonumber(v[3])
    if not fa then return nil end
    if lo and fa < lo then return nil end
    if hi and fa >= hi then return nil end
  end
  return jk
end

local out = {}
local last_match = nil
local walked = 0
local chunk = 32
if limit + 1 < chunk then chunk = limit + 1 end
while true do
  local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], from, '-', 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    if walked >= budget then return {out, string.sub(from, 2)} end
    walked = walked + 1
    from = '(' .. id
    local jk = match(id)
    if jk then
      if #out >= limit then return {out, last_match} end  -- one more match: the page is full
      out[#out + 1] = job_reply(jk)
      last_match = id
    end
  end
  if #ids < chunk then return {out, false} end
  if chunk < 256 then chunk = math.min(chunk * 2, 256) end
end
