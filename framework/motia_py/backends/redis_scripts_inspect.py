"""The read-only Lua scripts of the redis backend's queue store: when the next delivery falls due, the
counts of ``stats`` and ``step_stats``, and the scan for the oldest ready entry of a stream.

They are registered with the other queue scripts (:class:`.redis_scripts_queue.QueueScripts`); see
:mod:`.redis_scripts` for the conventions (time, keys) every script keeps.
"""

from __future__ import annotations

from typing import Final

from .redis_scripts import CLOCK

_PRELUDE: Final = CLOCK + r"""
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
"""

# KEYS: stream inflight lease delayed fifo_ready fifo_wait fifo_lease wake [flow data]. ARGV: now.
# Returns {seconds until something is due ('' = nothing scheduled), last stream id, last wake id}.
NEXT_DUE: Final = _PRELUDE + r"""
local now = clock(ARGV[1])
local function last_id(key)
  local r = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if r[1] then return r[1][1] end
  return '0-0'
end
local sid, wid = last_id(KEYS[1]), last_id(KEYS[8])
if redis.call('XLEN', KEYS[1]) > redis.call('HLEN', KEYS[2]) or redis.call('ZCARD', KEYS[5]) > 0
    or (KEYS[9] and redis.call('HLEN', KEYS[9]) > 0) then  -- the flow queue (no limits: all of it is due)
  return {'0', sid, wid}
end
local best = nil
for _, key in ipairs({KEYS[3], KEYS[4], KEYS[6], KEYS[7]}) do
  local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if r[2] and (best == nil or tonumber(r[2]) < best) then best = tonumber(r[2]) end
end
if best == nil then return {'', sid, wid} end
return {fmt(best - now), sid, wid}
"""

# KEYS: stream inflight lease delayed fifo_ready fifo_wait fifo_lease. ARGV: now fifo_prefix.
# Returns {ready, delayed, leased, next due ('' = none), the earliest due time of the ready deliveries that
# are not in the stream (delayed ones that fell due, FIFO events; '' = none)}.
STATS: Final = _PRELUDE + r"""
local now = clock(ARGV[1])
local after = '(' .. fmt(now)
local leased = redis.call('HLEN', KEYS[2])
local ready = redis.call('XLEN', KEYS[1]) - leased + redis.call('ZCOUNT', KEYS[4], '-inf', now)
local delayed = redis.call('ZCOUNT', KEYS[4], after, '+inf')
local best, oldest = nil, nil
local function consider(t) if t and (best == nil or t < best) then best = t end end
local function older(t) if t and (oldest == nil or t < oldest) then oldest = t end end
older(tonumber(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)[2]))
consider(tonumber(redis.call('ZRANGEBYSCORE', KEYS[4], after, '+inf', 'LIMIT', 0, 1, 'WITHSCORES')[2]))
consider(tonumber(redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2]))
local busy, groups = {}, {}
local fl = redis.call('ZRANGE', KEYS[7], 0, -1, 'WITHSCORES')
for i = 1, #fl, 2 do
  busy[fl[i]] = true
  groups[#groups + 1] = fl[i]
  consider(tonumber(fl[i + 1]))
end
for _, key in ipairs({KEYS[5], KEYS[6]}) do
  for _, g in ipairs(redis.call('ZRANGE', key, 0, -1)) do groups[#groups + 1] = g end
end
for _, g in ipairs(groups) do
  for i, item in ipairs(redis.call('LRANGE', ARGV[2] .. g, 0, -1)) do
    if i == 1 and busy[g] then
      leased = leased + 1
    else
      local at = tonumber(string.match(item, '^[^|]*|([^|]*)|'))
      if at <= now then
        ready = ready + 1
        older(at)
      else
        delayed = delayed + 1
        if i == 1 then consider(at) end
      end
    end
  end
end
return {ready, delayed, leased, best and fmt(best) or '', oldest and fmt(oldest) or ''}
"""

# KEYS: stream inflight. ARGV: start (XRANGE's: '-' or '(' .. an entry id), count.
# Returns {the earliest due time among the ready (not in-flight) entries read ('' = none), the last entry
# id read ('' = none), how many were read}. Entries written before the 'due' field use their id's time.
READY_SCAN: Final = _PRELUDE + r"""
local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local best = nil
for _, e in ipairs(r) do
  local f = fields(e[2])
  if redis.call('HEXISTS', KEYS[2], f.id) == 0 then
    local due = tonumber(f.due or '') or tonumber(string.match(e[1], '^(%d+)')) / 1000
    if best == nil or due < best then best = due end
  end
end
local last = ''
if #r > 0 then last = r[#r][1] end
return {best and fmt(best) or '', last, #r}
"""
