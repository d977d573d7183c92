-- One page of list_jobs, newest first (read only): the per-state id indexes of the states asked
-- for, in every queue listed, merged by id, with the other filters applied here.
-- KEYS: per queue 1 + 2 * n keys (n = ARGV 9): its job prefix, then per state its id index
--       (ids:<state>) and its state ZSET (scored by finished_at for the terminal states; read
--       only with a finish window)
-- ARGV: 1 start ('+' or '(<id>'), 2 limit (matches on the page), 3 max ids to walk in the id
--       indexes, 4 handler (''), 5 error type, prefixed with '=' ('' = any), 6 lowest
--       finished_at ms (inclusive, ''), 7 finished_at ms bound (exclusive, ''), 8 how many ids
--       a finish window may read by score over all the state ZSETs (those are walked on top of
--       ARGV 3), 9 n (states per queue)
-- Answers {{job_reply of each match}, cursor}: cursor is false when no id below the page is
-- left to walk, else the id the next page starts below (the page's last job when one more
-- match exists, or the last id walked when the walk ran out of ids to walk).
local start = ARGV[1]
local limit = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local handler = ARGV[4]
local etype = nil
if ARGV[5] ~= '' then etype = string.sub(ARGV[5], 2) end
local windowed = ARGV[6] ~= '' or ARGV[7] ~= ''
local lo = tonumber(ARGV[6])  -- nil when ''
local hi = tonumber(ARGV[7])
local window_left = tonumber(ARGV[8])
local n = tonumber(ARGV[9])

-- The heap below orders ids as the id indexes do: in byte order (ZRANGEBYLEX compares with
-- memcmp). Lua compares strings with strcoll, and Redis sets LC_COLLATE from its environment:
-- under a locale such as en_US.UTF-8 or cs_CZ.UTF-8 'a' sorts before 'B', punctuation is
-- weighed apart and 'CH' after 'H', so ids could merge out of order. Where the collation is not
-- byte order ('a' sorts after 'B' in the C locale, not in the others), ids are compared through
-- keys of numbers instead: each 6 bytes of an id, as digits base 257 (a byte b is b + 1, a byte
-- past the end 0), exact in a double. key(id) makes an id's key, after(x, y) compares two keys.
local key, after
if 'a' > 'B' and '_' > 'Z' and '.' > '-' and '0' > '.' then
  key = function(id) return id end
  after = function(x, y) return x > y end
else
  local byte = string.byte
  key = function(id)
    local k = {}
    for i = 1, #id, 6 do
      local a, b, c, d, e, f = byte(id, i, i + 5)
      k[#k + 1] = (((((a + 1) * 257 + (b or -1) + 1) * 257 + (c or -1) + 1) * 257
                   + (d or -1) + 1) * 257 + (e or -1) + 1) * 257 + (f or -1) + 1
    end
    return k
  end
  after = function(x, y)
    for i = 1, math.max(#x, #y) do
      local a, b = x[i] or -1, y[i] or -1
      if a ~= b then return a > b end
    end
    return false
  end
end

local below_key = nil  -- ids must sort below the cursor
if start ~= '+' then below_key = key(string.sub(start, 2)) end

-- error_type_of of monoq.core.models is the text before the first ': ', so a job passes an error
-- type filter when its error is the type alone or starts with the type and ': '; a type that
-- holds ': ' itself matches nothing.
local etype_colon = nil
if etype then
  if string.find(etype, ': ', 1, true) then return {{}, false} end
  etype_colon = etype .. ': '
end
local elen = etype and #etype + 2

-- The fields the filters other than the state read (the index a job is in is its state).
local fields = {}
if handler ~= '' then fields[#fields + 1] = 'h' end
if etype then fields[#fields + 1] = 'e' end
if windowed then fields[#fields + 1] = 'fa' end
local residual = #fields > 0

-- Whether the job at `jk` passes the filters. Each filter needs a field, so a job that is gone
-- never passes one.
local function matches(jk)
  if not residual then return redis.call('EXISTS', jk) == 1 end
  local v
  if #fields == 1 then v = {redis.call('HGET', jk, fields[1])} else
    v = redis.call('HMGET', jk, unpack(fields))
  end
  local i = 1
  if handler ~= '' then
    if v[i] ~= handler then return false end
    i = i + 1
  end
  if etype then
    local e = v[i]
    if not e or (e ~= etype and string.sub(e, 1, elen) ~= etype_colon) then return false end
    i = i + 1
  end
  if windowed then
    local fa = tonumber(v[i])
    if not fa then return false end
    if lo and fa < lo then return false end
    if hi and fa >= hi then return false end
  end
  return true
end

local MAX_CHUNK = 256
local first_chunk = 32
if not residual and limit + 1 < first_chunk then first_chunk = limit + 1 end

-- The next id of a source (nil when it has none left), refilling its buffer when needed.
local function head(src)
  if src.pos > #src.buf then
    if not src.more then return nil end
    local ids = redis.call('ZREVRANGEBYLEX', src.ids, src.from, '-', 'LIMIT', 0, src.chunk)
    if #ids < src.chunk then src.more = false end
    if #ids == 0 then return nil end
    src.buf = ids
    src.pos = 1
    src.from = '(' .. ids[#ids]
    if src.chunk < MAX_CHUNK then src.chunk = math.min(src.chunk * 2, MAX_CHUNK) end
  end
  return src.buf[src.pos]
end

-- The sources, in a heap by their next id (the newest on top): each a buffer of ids, newest
-- first, refilled from its id index by ZREVRANGEBYLEX (chunks double up to MAX_CHUNK), or read
-- whole through a finish window by score.
local heap = {}

local function sift_down(i)
  local n = #heap
  local item = heap[i]
  while true do
    local c = 2 * i
    if c > n then break end
    if c < n and after(heap[c + 1].ck, heap[c].ck) then c = c + 1 end
    if not after(heap[c].ck, item.ck) then break end
    heap[i] = heap[c]
    i = c
  end
  heap[i] = item
end

local stride = 1 + 2 * n
for q = 1, #KEYS, stride do
  for s = 1, n do
    local src = {ids = KEYS[q + 2 * s - 1], jp = KEYS[q], buf = {}, pos = 1, from = start,
                 more = true, chunk = first_chunk, scored = false}
    if windowed then
      -- A window that holds few jobs of this state is read by score (the terminal state ZSETs
      -- are scored by finished_at), instead of walking every id of the state.
      local zkey = KEYS[q + 2 * s]
      local min = '-inf'
      if lo then min = ARGV[6] end
      local max = '+inf'
      if hi then max = '(' .. ARGV[7] end
      local count = redis.call('ZCOUNT', zkey, min, max)
      if count == 0 then
        src = nil
      elseif count <= window_left then
        window_left = window_left - count
        local found = {}
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', zkey, min, max)) do
          local k = key(id)
          if not below_key or after(below_key, k) then found[#found + 1] = {id, k} end
        end
        table.sort(found, function(x, y) return after(x[2], y[2]) end)
        local ids = {}
        for i, pair in ipairs(found) do ids[i] = pair[1] end
        src.buf = ids
        src.more = false
        src.scored = true  -- bounded by ARGV 8: its ids do not count against ARGV 3
      end
    end
    if src then
      src.id = head(src)
      if src.id then
        src.ck = key(src.id)
        heap[#heap + 1] = src
      end
    end
  end
end
for i = math.floor(#heap / 2), 1, -1 do sift_down(i) end

local out = {}
local last_match = nil
local walked = 0
local last = nil
while #heap > 0 do
  local src = heap[1]
  local id = src.id
  if not src.scored then
    if walked >= budget then return {out, last} end
    walked = walked + 1
  end
  last = id
  local jk = src.jp .. id
  src.pos = src.pos + 1
  src.id = head(src)
  if src.id then
    src.ck = key(src.id)
  else
    heap[1] = heap[#heap]
    heap[#heap] = nil
  end
  if #heap > 0 then sift_down(1) end
  if matches(jk) then
    if #out >= limit then return {out, last_match} end  -- one more match: the page is full
    local reply = job_reply(jk)
    if reply then
      out[#out + 1] = reply
      last_match = id
    end
  end
end
return {out, false}
