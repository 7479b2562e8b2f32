"""The Lua scripts of the redis backend's flow path: priorities and flow control (the rules are
:class:`~.stores.QueueStore`'s; the Python twin for memory and SQLite is :mod:`.flow`).

A step takes the flow path when its claims pass a :class:`~.records.FlowControl`, or while its flow flag
is set (a prioritised or keyed delivery was published for it, see :mod:`.redis_tags`; the plain claim
script answers ``{'~flow'}`` then). On that path a claim first moves every ready delivery of the step
into the *flow queue*: delayed ones that fell due, and the stream's undelivered entries (new publishes,
retries, hand backs, replays). The flow queue is partitioned by the pair of keys of a delivery's tag
("rate key|concurrency key"), so a claim skips a whole busy key at once: partitions are ranked by their
best delivery (``-priority * 1e12 + seq``), each holds its deliveries in that order. A chosen delivery
goes back into the stream and is read at once by the step's consumer group (nothing else is undelivered
there any more), so from then on it is an ordinary standard lease: complete, retry, dead letter, hand
back and extend work on it unchanged. FIFO heads stay in their groups and are checked where they are.

Running deliveries are the unexpired leases (``lease`` and ``fifo-lease`` sorted sets); per concurrency
key they are the entries of the step's ``held`` hash whose lease is still unexpired (entries of ended
leases are dropped on the way). A rate window is a sorted set of starts, pruned by the claims; a
partition whose keyed window is full waits in ``fw`` (a FIFO group in fifo-wait) until it opens.
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .redis_scripts_queue import _PRELUDE as PRELUDE  # the queue scripts' helpers

SWEEP_MAX: Final = 1000  # stream entries moved into the flow queue per claim (bounds the script's run time)

_LIMITS: Final = PRELUDE + r"""
-- priority, rate key field, concurrency key field of a (tagged) envelope; '' for no key
local function untag(env)
  local pr, rk, ck = string.match(env, '^#(%-?%d+)|([^|]*)|([^|]*)|')
  if pr then return tonumber(pr), rk, ck end
  return 0, '', ''
end
local function norm(k) if k == '' then return '=' end return k end  -- no key counts as the key ""
-- o: rate period keyed global klimit rate_prefix now write (write: prune windows and record starts)
local function limits(o)
  local L = {total = 0, running = {}, rate_n = {}, keyed = o.keyed, klimit = o.klimit}
  local function bucket(rk) if o.keyed then return norm(rk) end return '' end
  local function count(b)
    local n = L.rate_n[b]
    if n == nil then
      local key = o.rate_prefix .. b
      if o.write then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(o.now - o.period))
        n = redis.call('ZCARD', key)
      else
        n = redis.call('ZCOUNT', key, '(' .. fmt(o.now - o.period), '+inf')
      end
      L.rate_n[b] = n
    end
    return n
  end
  function L.opens_at(rk)  -- when the window of rk admits one more start
    local b = bucket(rk)
    local n = count(b)
    if n < o.rate then return o.now end
    local r = redis.call('ZRANGEBYSCORE', o.rate_prefix .. b, '(' .. fmt(o.now - o.period), '+inf',
                         'WITHSCORES', 'LIMIT', n - o.rate, 1)
    if r[2] then return tonumber(r[2]) + o.period end
    return o.now + o.period
  end
  function L.check(rk, ck)  -- nil when it may start, else 'global', 'key' or 'rate'
    if o.global > 0 and L.total >= o.global then return 'global' end
    if o.klimit > 0 and (L.running[norm(ck)] or 0) >= o.klimit then return 'key' end
    if o.rate > 0 and count(bucket(rk)) >= o.rate then return 'rate' end
    return nil
  end
  function L.closed()  -- nothing more may start
    if o.global > 0 and L.total >= o.global then return true end
    return o.rate > 0 and not o.keyed and count('') >= o.rate
  end
  function L.admit(rk, ck, member, slot)
    if slot then
      L.total = L.total + 1
      L.running[norm(ck)] = (L.running[norm(ck)] or 0) + 1
    end
    if o.rate > 0 then
      local b = bucket(rk)
      L.rate_n[b] = count(b) + 1
      if o.write then
        redis.call('ZADD', o.rate_prefix .. b, fmt(o.now), member)
        redis.call('PEXPIRE', o.rate_prefix .. b, math.ceil(o.period * 1000) + 1000)
      end
    end
  end
  -- running deliveries: unexpired leases; per key, the held entries whose lease is unexpired
  function L.count_running(leases, fleases, held, fifo_prefix)
    local after = '(' .. fmt(o.now)
    L.total = redis.call('ZCOUNT', leases, after, '+inf') + redis.call('ZCOUNT', fleases, after, '+inf')
    if o.klimit <= 0 then return end
    local h = redis.call('HGETALL', held)
    for i = 1, #h, 2 do
      local uid, ck, g = h[i], string.match(h[i + 1], '^([^|]*)|(.*)$')
      local score
      if g == '' then
        score = redis.call('ZSCORE', leases, uid)
      else
        score = redis.call('ZSCORE', fleases, g)
        local head = score and redis.call('LINDEX', fifo_prefix .. g, 0)
        if not head or select(5, fifo_parse(head)) ~= uid then score = false end
      end
      if score and tonumber(score) > o.now then
        L.running[ck] = (L.running[ck] or 0) + 1
      elseif not score and o.write then
        redis.call('HDEL', held, uid)  -- its lease ended
      end
    end
  end
  return L
end
"""

# KEYS: stream inflight lease delayed fifo_ready fifo_wait fifo_lease owners steps flag fq fw fd held seq
# ARGV: now group consumer limit lease_s fifo_prefix step move_max owner part_prefix rate_prefix rate_limit
#       rate_period rate_keyed global_concurrency key_concurrency controlled sweep_max
# Returns what the plain claim script returns: an expired lease alone (6 fields), else 4 fields each.
CLAIM: Final = _LIMITS + r"""
local now, now_s = clock(ARGV[1])
local stream, inflight, leases, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ready, waiting, fleases, owners = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local flag, fq, fw, fd, held, seq_key = KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local grp, consumer, left = ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease_until, prefix, me, parts = fmt(now + tonumber(ARGV[5])), ARGV[6], ARGV[9], ARGV[10]
local L = limits({rate = tonumber(ARGV[12]), period = tonumber(ARGV[13]), keyed = ARGV[14] == '1',
                  global = tonumber(ARGV[15]), klimit = tonumber(ARGV[16]), rate_prefix = ARGV[11], now = now,
                  write = true})
local out = {}
local function emit(uid, env, attempt, first)
  for _, v in ipairs({uid, env, attempt, first}) do out[#out + 1] = v end
end
local function hold(uid, ck, g)
  if L.klimit > 0 then redis.call('HSET', held, uid, norm(ck) .. '|' .. g) end
end
local function fs_add(uid, att, first, due, env)  -- into the flow queue
  local pr, rk, ck = untag(env)
  local part = rk .. '|' .. ck
  local score = fmt(redis.call('INCR', seq_key) - pr * 1e12)
  redis.call('ZADD', parts .. part, score, uid)
  redis.call('HSET', fd, uid, att .. '|' .. first .. '|' .. due .. '|' .. env)
  if not redis.call('ZSCORE', fw, part) then redis.call('ZADD', fq, 'LT', score, part) end
end
-- 1. delayed deliveries that fell due join the flow queue
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[8]))
local moved = {}
for i = 1, #due, 2 do
  local uid, att, first, p = string.match(due[i], '^([^|]*)|([^|]*)|([^|]*)|()')
  fs_add(uid, att, first, due[i + 1], string.sub(due[i], p))
  moved[#moved + 1] = due[i]
end
if #moved > 0 then redis.call('ZREM', delayed, unpack(moved)) end
-- 2. a delivery whose lease expired is claimed alone, past the limits, its start counted
local function oldest(key)
  local r = redis.call('ZRANGEBYSCORE', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if r[1] then return r[1], tonumber(r[2]) end
  return nil, nil
end
while true do
  local uid, at = oldest(leases)
  local g, gat = oldest(fleases)
  if not uid and not g then break end
  if uid and (not g or at <= gat) then
    local rec = redis.call('HGET', inflight, uid)
    if rec then
      local eid, att, first = inflight_parse(rec)
      local c = redis.call('XCLAIM', stream, grp, consumer, 0, eid)
      if c[1] and c[1][2] then
        local env, last = fields(c[1][2]).env, redis.call('HGET', owners, uid) or ''
        local _, rk, ck = untag(env)
        redis.call('ZADD', leases, lease_until, uid)
        redis.call('HSET', inflight, uid, eid .. '|' .. (att + 1) .. '|' .. first)
        redis.call('HSET', owners, uid, me)
        L.admit(rk, ck, uid .. '/' .. (att + 1), false)
        hold(uid, ck, '')
        return {uid, env, att + 1, first, '1', last}
      end
    end
    redis.call('ZREM', leases, uid)
    redis.call('HDEL', inflight, uid)
    redis.call('HDEL', owners, uid)
  else
    local list = prefix .. g
    local head = redis.call('LINDEX', list, 0)
    if head then
      local seq, hat, att, first, huid, env = fifo_parse(head)
      if first == '' then first = now_s end
      local last, _, rk, ck = redis.call('HGET', owners, huid) or '', untag(env)
      redis.call('LSET', list, 0, fifo_item(seq, hat, att + 1, first, huid, env))
      redis.call('ZADD', fleases, lease_until, g)
      redis.call('HSET', owners, huid, me)
      L.admit(rk, ck, huid .. '/' .. (att + 1), false)
      hold(huid, ck, g)
      return {huid, env, att + 1, first, '1', last}
    end
    redis.call('ZREM', fleases, g)
  end
end
-- 3. the stream's undelivered entries join the flow queue
local r = redis.pcall('XREADGROUP', 'GROUP', grp, consumer, 'COUNT', tonumber(ARGV[18]), 'STREAMS', stream, '>')
if type(r) == 'table' and r.err then
  if not string.find(r.err, 'NOGROUP', 1, true) then return redis.error_reply(r.err) end
  ensure_group(stream, grp, KEYS[9], ARGV[7])
  r = redis.call('XREADGROUP', 'GROUP', grp, consumer, 'COUNT', tonumber(ARGV[18]), 'STREAMS', stream, '>')
end
local swept = {}
if r then
  for _, e in ipairs(r[1][2]) do
    local f = fields(e[2])
    fs_add(f.id, f.attempts or '0', f.first or '', f.due or now_s, f.env)
    swept[#swept + 1] = e[1]
  end
end
for i = 1, #swept, 1000 do
  redis.call('XACK', stream, grp, unpack(swept, i, math.min(i + 999, #swept)))
  redis.call('XDEL', stream, unpack(swept, i, math.min(i + 999, #swept)))
end
local more = #swept >= tonumber(ARGV[18])  -- more to sweep: the next claim goes on (wait says: due now)
-- 4. partitions whose rate window opened
local opened = redis.call('ZRANGEBYSCORE', fw, '-inf', now)
for _, part in ipairs(opened) do
  local best = redis.call('ZRANGE', parts .. part, 0, 0, 'WITHSCORES')
  if best[1] then redis.call('ZADD', fq, best[2], part) end
end
if #opened > 0 then redis.call('ZREM', fw, unpack(opened)) end
-- 5. the best deliveries of the partitions the limits let through
L.count_running(leases, fleases, held, prefix)
local function take()
  local offset = 0
  while offset < 5000 do
    local page = redis.call('ZRANGE', fq, offset, offset + 99)
    if #page == 0 then return nil end
    local removed = 0
    for _, part in ipairs(page) do
      local rk, ck = string.match(part, '^([^|]*)|(.*)$')
      local why = L.check(rk, ck)
      if why == nil then
        local plist = parts .. part
        local uid = redis.call('ZRANGE', plist, 0, 0)[1]
        if uid then redis.call('ZREM', plist, uid) end
        local nxt = redis.call('ZRANGE', plist, 0, 0, 'WITHSCORES')
        if nxt[1] then redis.call('ZADD', fq, nxt[2], part) else redis.call('ZREM', fq, part) end
        local rec = uid and redis.call('HGET', fd, uid)
        if rec then
          redis.call('HDEL', fd, uid)
          local att, first, at, p = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|()')
          L.admit(rk, ck, uid .. '/' .. (tonumber(att) + 1), true)
          return {uid = uid, att = tonumber(att), first = first, due = at, env = string.sub(rec, p), ck = ck}
        end
        if not nxt[1] then removed = removed + 1 end
      elseif why == 'rate' and L.keyed then
        redis.call('ZREM', fq, part)
        redis.call('ZADD', fw, fmt(L.opens_at(rk)), part)
        removed = removed + 1
      elseif why ~= 'key' then
        return nil  -- the step's concurrency or its one rate window is full
      end
    end
    offset = offset + #page - removed
  end
  return nil
end
local picked = {}
while not more and left > #picked and not L.closed() do
  local d = take()
  if not d then break end
  picked[#picked + 1] = d
end
left = left - #picked
if #picked > 0 then  -- back into the stream, read at once: ordinary standard leases from here on
  for _, d in ipairs(picked) do
    redis.call('XADD', stream, '*', 'id', d.uid, 'env', d.env, 'attempts', d.att, 'first', d.first, 'due', d.due)
  end
  local got = redis.call('XREADGROUP', 'GROUP', grp, consumer, 'COUNT', #picked, 'STREAMS', stream, '>')
  for i, e in ipairs(got[1][2]) do
    local d = picked[i]
    local first = d.first
    if first == '' then first = now_s end
    redis.call('ZADD', leases, lease_until, d.uid)
    redis.call('HSET', inflight, d.uid, e[1] .. '|' .. (d.att + 1) .. '|' .. first)
    redis.call('HSET', owners, d.uid, me)
    hold(d.uid, d.ck, '')
    emit(d.uid, d.env, d.att + 1, first)
  end
end
-- 6. the heads of free FIFO groups the limits let through, best head first
if not more and left > 0 and not L.closed() and redis.call('EXISTS', ready, waiting) > 0 then
  local w = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, tonumber(ARGV[8]))
  for _, g in ipairs(w) do fifo_schedule(prefix .. g, ready, waiting, g, now) end
  if #w > 0 then redis.call('ZREM', waiting, unpack(w)) end
  local done = {}
  for _, g in ipairs(redis.call('ZRANGE', ready, 0, 999)) do
    if left == 0 or L.closed() then break end
    local list = prefix .. g
    local head = redis.call('LINDEX', list, 0)
    if not head then
      done[#done + 1] = g
    else
      local seq, at, att, first, uid, env = fifo_parse(head)
      local _, rk, ck = untag(env)
      local why = L.check(rk, ck)
      if why == nil then
        if first == '' then first = now_s end
        redis.call('LSET', list, 0, fifo_item(seq, at, att + 1, first, uid, env))
        redis.call('ZADD', fleases, lease_until, g)
        redis.call('HSET', owners, uid, me)
        L.admit(rk, ck, uid .. '/' .. (att + 1), true)
        hold(uid, ck, g)
        emit(uid, env, att + 1, first)
        done[#done + 1] = g
        left = left - 1
      elseif why == 'rate' and L.keyed then
        redis.call('ZADD', waiting, fmt(L.opens_at(rk)), g)
        done[#done + 1] = g
      elseif why ~= 'key' then
        break
      end
    end
  end
  if #done > 0 then redis.call('ZREM', ready, unpack(done)) end
end
-- 7. the flag: kept while anything is in the flow queue; without a control, dropped once the step is empty
if redis.call('HLEN', fd) > 0 then
  redis.call('SET', flag, '1')
elseif ARGV[17] == '' and redis.call('XLEN', stream) == 0
    and redis.call('EXISTS', delayed, ready, waiting, fleases, fq, fw) == 0 then
  redis.call('DEL', flag)
end
return out
"""

# KEYS: stream inflight lease delayed fifo_ready fifo_wait fifo_lease wake fq fw held
# ARGV: now fifo_prefix rate_prefix rate_limit rate_period rate_keyed global_concurrency key_concurrency
# Returns {seconds until a claim with these limits may hand something out ('' = nothing scheduled),
# last stream id, last wake id}: as NEXT_DUE, but a delivery held back by a limit is not due.
NEXT_DUE: Final = _LIMITS + r"""
local now = clock(ARGV[1])
local function last_id(key)
  local r = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if r[1] then return r[1][1] end
  return '0-0'
end
local sid, wid = last_id(KEYS[1]), last_id(KEYS[8])
if redis.call('XLEN', KEYS[1]) > redis.call('HLEN', KEYS[2]) then return {'0', sid, wid} end  -- to sweep
local best = nil
local function consider(t) if t and (best == nil or t < best) then best = t end end
for _, key in ipairs({KEYS[3], KEYS[4], KEYS[6], KEYS[7], KEYS[10]}) do
  consider(tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]))
end
local L = limits({rate = tonumber(ARGV[4]), period = tonumber(ARGV[5]), keyed = ARGV[6] == '1',
                  global = tonumber(ARGV[7]), klimit = tonumber(ARGV[8]), rate_prefix = ARGV[3], now = now,
                  write = false})
L.count_running(KEYS[3], KEYS[7], KEYS[11], ARGV[2])
local function startable(rk, ck)  -- true when a delivery with these keys may start now
  local why = L.check(rk, ck)
  if why == 'rate' then consider(L.opens_at(rk)) end
  return why == nil
end
local candidates = {}
for _, part in ipairs(redis.call('ZRANGE', KEYS[9], 0, 4999)) do
  local rk, ck = string.match(part, '^([^|]*)|(.*)$')
  candidates[#candidates + 1] = {rk, ck}
end
for _, g in ipairs(redis.call('ZRANGE', KEYS[5], 0, 999)) do
  local head = redis.call('LINDEX', ARGV[2] .. g, 0)
  if head then
    local _, rk, ck = untag(select(6, fifo_parse(head)))
    candidates[#candidates + 1] = {rk, ck}
  end
end
for _, c in ipairs(candidates) do
  if startable(c[1], c[2]) then return {'0', sid, wid} end
  if L.closed() then break end
end
if best == nil then return {'', sid, wid} end
return {fmt(math.max(0, best - now)), sid, wid}
"""

# KEYS: fq fw fd held lease fifo_lease fifo_ready. ARGV: now fifo_prefix part_prefix rate_prefix rate_limit
# rate_period rate_keyed global_concurrency key_concurrency controlled ('1' or '')
# Returns {deliveries in the flow queue, the earliest due time among them ('' = none), held back by the
# global concurrency, by a key's concurrency, by a rate limit}.
STATS: Final = _LIMITS + r"""
local now = clock(ARGV[1])
local oldest = nil
for _, rec in ipairs(redis.call('HVALS', KEYS[3])) do
  local at = tonumber(string.match(rec, '^[^|]*|[^|]*|([^|]*)|'))
  if at and (oldest == nil or at < oldest) then oldest = at end
end
local held = {global = 0, key = 0, rate = 0}
if ARGV[10] == '1' then
  local L = limits({rate = tonumber(ARGV[5]), period = tonumber(ARGV[6]), keyed = ARGV[7] == '1',
                    global = tonumber(ARGV[8]), klimit = tonumber(ARGV[9]), rate_prefix = ARGV[4], now = now,
                    write = false})
  L.count_running(KEYS[5], KEYS[6], KEYS[4], ARGV[2])
  local function run(rk, ck, n)
    for _ = 1, n do
      local why = L.check(rk, ck)
      if why == nil then L.admit(rk, ck, '', true) else held[why] = held[why] + 1 end
    end
  end
  for _, part in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local rk, ck = string.match(part, '^([^|]*)|(.*)$')
    run(rk, ck, redis.call('ZCARD', ARGV[3] .. part))
  end
  for _, part in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    held.rate = held.rate + redis.call('ZCARD', ARGV[3] .. part)
  end
  for _, g in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    local head = redis.call('LINDEX', ARGV[2] .. g, 0)
    if head then
      local _, rk, ck = untag(select(6, fifo_parse(head)))
      run(rk, ck, 1)
    end
  end
end
return {redis.call('HLEN', KEYS[3]), oldest and fmt(oldest) or '', held.global, held.key, held.rate}
"""


class FlowScripts:
    """The flow path's scripts, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.claim: AsyncScript = client.register_script(CLAIM)
        self.next_due: AsyncScript = client.register_script(NEXT_DUE)
        self.stats: AsyncScript = client.register_script(STATS)
