"""The Lua scripts of the redis backend's job-handle store (see :mod:`.redis_handles` for the layout of an
event's handle hash, and :mod:`.redis_scripts` for the conventions every script keeps).

Scripts that find a step's queue keys from a handle build them from the key prefix and the escaped step
name, exactly as :class:`.redis_keys.Keys` does.
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .redis_scripts_queue import PRELUDE

_ESC: Final = r"""
local function esc(s)
  return (string.gsub(s, '[%%:{}]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
local function live(v) return string.sub(v, 1, 2) == 'q|' end
"""

# KEYS: handle. ARGV: now, key prefix. Returns false (unknown) or {HGETALL of the handle, per live step: step,
# running (1/0), attempt ('' unknown), first delivered at ('' unknown), now}.
_STATUS: Final = PRELUDE + _ESC + r"""
local _, now_s = clock(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then return false end
local extra = {}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  if string.sub(f, 1, 2) == 's:' and live(v) then
    local step = string.sub(f, 3)
    local uid, kind = string.match(v, '^q|([^|]*)|[^|]*|(.*)$')
    local s = esc(step)
    local running = redis.call('HEXISTS', ARGV[2] .. ':owner:' .. s, uid)
    local att, first = '', ''
    if string.sub(kind, 1, 1) == 'f' then
      local head = redis.call('LINDEX', ARGV[2] .. ':fifo:' .. s .. ':' .. string.sub(kind, 2), 0)
      if head then
        local _s, _d, a2, f2, huid = string.match(head, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|')
        if huid == uid then att, first = a2, f2 end
      end
    else
      local rec = redis.call('HGET', ARGV[2] .. ':inflight:' .. s, uid)
      if rec then
        local _e, a3, f3 = string.match(rec, '^([^|]*)|([^|]*)|(.*)$')
        att, first = a3, f3
      end
    end
    extra[#extra + 1] = step
    extra[#extra + 1] = running
    extra[#extra + 1] = att
    extra[#extra + 1] = first
  end
end
return {all, extra, now_s}
"""

# KEYS: handle cancels handles. ARGV: now, key prefix, event id. Returns false (unknown) or {steps cancelled
# before they ran, steps running (their workers are told)}. A delivery cancelled before it ran stays in its
# queue until a claim hands it out flagged (its worker settles it with CANCEL_SETTLE); 'x' counts those.
_CANCEL: Final = PRELUDE + _ESC + r"""
local now, now_s = clock(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local all = redis.call('HGETALL', KEYS[1])
local h = {}
for i = 1, #all, 2 do h[all[i]] = all[i + 1] end
local cancelled, requested = {}, {}
for f, v in pairs(h) do
  if string.sub(f, 1, 2) == 's:' and live(v) then
    local step = string.sub(f, 3)
    local uid = string.match(v, '^q|([^|]*)|')
    if redis.call('HEXISTS', ARGV[2] .. ':owner:' .. esc(step), uid) == 1 then
      requested[#requested + 1] = step
    else
      local note = h['e:' .. step]
      local att = note and string.match(note, '"a":(%d+)') or '0'
      redis.call('HSET', KEYS[1], f, '{"s":"cancelled","a":' .. att .. ',"d":"' .. uid .. '","st":null,"f":'
                 .. now_s .. '}')
      redis.call('HINCRBY', KEYS[1], 'x', 1)
      cancelled[#cancelled + 1] = step
    end
  end
end
if #cancelled + #requested > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[3])
  if #requested > 0 then redis.call('HSET', KEYS[1], 'c', now_s) end
  if #cancelled > 0 then redis.call('ZADD', KEYS[3], now, ARGV[3]) end
end
return {cancelled, requested}
"""

# KEYS: stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake owners handle handles
# ARGV: now group uid attempt fifo_group event_id finished_record (without its closing brace)
# Ends a leased delivery as cancelled (1), or does nothing when the lease was lost (0).
_CANCEL_SETTLE: Final = PRELUDE + r"""
local now, now_s = clock(ARGV[1])
local uid, fgroup = ARGV[3], ARGV[5]
local kind, eid = leased(KEYS[2], KEYS[7], KEYS[4], uid, tonumber(ARGV[4]), fgroup)
if kind == 's' then
  drop_standard(KEYS[1], ARGV[2], KEYS[2], KEYS[3], uid, eid)
elseif kind == 'f' then
  drop_fifo_head(KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], fgroup, now)
else
  return 0
end
redis.call('HDEL', KEYS[9], uid)
local f = 's:' .. ARGV[2]
local cur = redis.call('HGET', KEYS[10], f)
if cur and string.sub(cur, 1, 1) == '{' then
  redis.call('HINCRBY', KEYS[10], 'x', -1)  -- cancelled before it ran: its record stands
else
  redis.call('HSET', KEYS[10], f, ARGV[7] .. ',"f":' .. now_s .. '}')
  redis.call('ZADD', KEYS[11], now, ARGV[6])
end
return 1
"""

# KEYS: delayed fifo_ready fifo_wait fifo_lease cancels. ARGV: now fifo_prefix limit topic_needle ('' = any).
# Returns flat (due, delivery id, envelope) of up to limit scheduled deliveries of one step.
_SCHEDULED: Final = PRELUDE + r"""
local now = clock(ARGV[1])
local limit, needle, out = tonumber(ARGV[3]), ARGV[4], {}
local function want(env)
  if needle ~= '' and not string.find(env, needle, 1, true) then return false end
  local eid = string.match(env, '{"id":"([^"]*)"')  -- after a flow tag, if any
  return not (eid and redis.call('ZSCORE', KEYS[5], eid))
end
local offset = 0
while #out < 3 * limit do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now), '+inf', 'WITHSCORES', 'LIMIT', offset, 500)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local uid, att, p = string.match(page[i], '^([^|]*)|([^|]*)|[^|]*|()')
    local env = string.sub(page[i], p)
    if att == '0' and #out < 3 * limit and want(env) then
      out[#out + 1] = page[i + 1]
      out[#out + 1] = uid
      out[#out + 1] = env
    end
  end
  offset = offset + 500
end
local seen = {}
for _, key in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do
  for _, g in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if not seen[g] then
      seen[g] = true
      for _, item in ipairs(redis.call('LRANGE', ARGV[2] .. g, 0, -1)) do
        local _seq, at, att, _first, uid, env = fifo_parse(item)
        if att == 0 and tonumber(at) > now and #out < 3 * limit and want(env) then
          out[#out + 1] = at
          out[#out + 1] = uid
          out[#out + 1] = env
        end
      end
    end
  end
end
return out
"""

# KEYS: handles, then one handle per event id of ARGV. Drops the handles with no live delivery and no
# cancelled delivery left in a queue; returns how many.
_PRUNE: Final = _ESC + r"""
local dropped = 0
for i = 1, #ARGV do
  local h = KEYS[i + 1]
  local busy = tonumber(redis.call('HGET', h, 'x') or '0') > 0
  if not busy then
    for _, v in ipairs(redis.call('HVALS', h)) do
      if live(v) then busy = true break end
    end
  end
  if not busy then
    if redis.call('DEL', h) == 1 then dropped = dropped + 1 end
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return dropped
"""

# KEYS: cancels. ARGV: key prefix. Forgets the cancellations of events with nothing left in a queue.
_PRUNE_CANCELS: Final = _ESC + r"""
for _, eid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = ARGV[1] .. ':h:' .. esc(eid)
  local busy = tonumber(redis.call('HGET', h, 'x') or '0') > 0
  if not busy then
    for _, v in ipairs(redis.call('HVALS', h)) do
      if live(v) then busy = true break end
    end
  end
  if not busy then redis.call('ZREM', KEYS[1], eid) end
end
return 1
"""


class HandleScripts:
    """The handle store's scripts, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.status: AsyncScript = client.register_script(_STATUS)
        self.cancel: AsyncScript = client.register_script(_CANCEL)
        self.cancel_settle: AsyncScript = client.register_script(_CANCEL_SETTLE)
        self.scheduled: AsyncScript = client.register_script(_SCHEDULED)
        self.prune: AsyncScript = client.register_script(_PRUNE)
        self.prune_cancels: AsyncScript = client.register_script(_PRUNE_CANCELS)
