"""The Lua scripts of the redis backend's queue store, and the argument layouts they expect.

See :mod:`.redis_scripts` for the conventions (time, keys) every script keeps.
"""

from __future__ import annotations

from typing import Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from . import redis_scripts_inspect as inspect
from .records import Delivery
from .redis_keys import StepKeys, escape
from .redis_publish import HANDLES_LUA, PLAIN_LUA, encode_outgoing
from .redis_scripts import CLOCK

__all__ = ["MOVE_MAX", "PRELUDE", "QueueScripts", "delivery_keys", "encode_outgoing", "fifo_group", "queue_keys"]

MOVE_MAX: Final = 500  # delayed deliveries moved into a stream per claim (bounds the script's run time)

_PRELUDE: Final = CLOCK + r"""
local function wake(key) redis.call('XADD', key, 'MAXLEN', '1', '*', 'w', '1') end
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
-- in-flight record "entry id|attempt|first"
local function inflight_parse(rec)
  local eid, att, first = string.match(rec, '^([^|]*)|([^|]*)|(.*)$')
  return eid, tonumber(att), first
end
-- FIFO item "seq|due|attempts|first|id|envelope"
local function fifo_item(seq, at, att, first, uid, env)
  return seq .. '|' .. at .. '|' .. att .. '|' .. first .. '|' .. uid .. '|' .. env
end
local function fifo_parse(item)
  local seq, at, att, first, uid, p = string.match(item, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|()')
  return seq, at, tonumber(att), first, uid, string.sub(item, p)
end
local function fifo_rank(head, seq)  -- in fifo-ready: the head's seq, ahead by its priority (see redis_tags)
  local pr = string.match(head, '^[^|]*|[^|]*|[^|]*|[^|]*|[^|]*|#(%-?%d+)|')
  return pr and fmt(tonumber(seq) - tonumber(pr) * 1e12) or seq
end
-- put a group whose head is free into fifo-ready (due) or fifo-wait (not yet); true when it has a head
local function fifo_schedule(list, ready, waiting, group, now)
  local head = redis.call('LINDEX', list, 0)
  if not head then return false end
  local seq, at = string.match(head, '^([^|]*)|([^|]*)|')
  if tonumber(at) <= now then
    redis.call('ZADD', ready, fifo_rank(head, seq), group)
  else
    redis.call('ZADD', waiting, at, group)
  end
  return true
end
local function ensure_group(stream, grp, steps, step)
  if redis.call('EXISTS', stream) == 1 then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      if fields(g).name == grp then redis.call('SADD', steps, step) return end
    end
  end
  redis.call('XGROUP', 'CREATE', stream, grp, '0', 'MKSTREAM')
  redis.call('SADD', steps, step)
end
-- Is delivery uid still leased at this attempt? 's', entry id, first | 'f', seq, first, envelope | nil
local function leased(inflight, fleases, list, uid, attempt, group)
  local rec = redis.call('HGET', inflight, uid)
  if rec then
    local eid, att, first = inflight_parse(rec)
    if att == attempt then return 's', eid, first end
    return nil
  end
  if redis.call('ZSCORE', fleases, group) then
    local head = redis.call('LINDEX', list, 0)
    if head then
      local seq, _, att, first, huid, env = fifo_parse(head)
      if huid == uid and att == attempt then return 'f', seq, first, env end
    end
  end
  return nil
end
local function drop_standard(stream, grp, inflight, leases, uid, eid)
  redis.call('XACK', stream, grp, eid)
  redis.call('XDEL', stream, eid)
  redis.call('ZREM', leases, uid)
  redis.call('HDEL', inflight, uid)
end
local function set_owner(owners, uid, who)
  if who == '' then redis.call('HDEL', owners, uid) else redis.call('HSET', owners, uid, who) end
end
-- Lease up to n entries of a stream never delivered to its group, attempt + 1 (as a claim does).
-- Returns them flat, 4 fields each (id, envelope, attempt, first delivered at), and the id of the last
-- one; or nil and the error (NOGROUP when the group is missing).
local function take_new(stream, grp, consumer, n, inflight, leases, owners, lease_until, me, now_s)
  local r = redis.pcall('XREADGROUP', 'GROUP', grp, consumer, 'COUNT', n, 'STREAMS', stream, '>')
  if type(r) == 'table' and r.err then return nil, r.err end
  local out, zadd, hset, own, last = {}, {}, {}, {}, ''
  for _, e in ipairs(r and r[1][2] or {}) do
    local f = fields(e[2])
    local first = f.first
    if first == nil or first == '' then first = now_s end
    local attempt = tonumber(f.attempts or '0') + 1
    local z, o = #zadd, #out
    zadd[z + 1] = lease_until
    zadd[z + 2] = f.id
    hset[z + 1] = f.id
    hset[z + 2] = e[1] .. '|' .. attempt .. '|' .. first
    own[z + 1] = f.id
    own[z + 2] = me
    out[o + 1] = f.id
    out[o + 2] = f.env
    out[o + 3] = attempt
    out[o + 4] = first
    last = e[1]
  end
  for i = 1, #zadd, 1000 do  -- chunks: unpack() is limited by the Lua stack
    redis.call('ZADD', leases, unpack(zadd, i, math.min(i + 999, #zadd)))
    redis.call('HSET', inflight, unpack(hset, i, math.min(i + 999, #hset)))
    redis.call('HSET', owners, unpack(own, i, math.min(i + 999, #own)))
  end
  return out, nil, last
end
-- Claimed deliveries (flat, stride fields each) of cancelled events: their ids follow as one list.
local function screen(out, stride, cancels)
  if #out == 0 or redis.call('EXISTS', cancels) == 0 then return out end
  local gone = {}
  for i = 1, #out, stride do
    local eid = string.match(out[i + 1], '{"id":"([^"]*)"')
    if eid and redis.call('ZSCORE', cancels, eid) then gone[#gone + 1] = out[i] end
  end
  if #gone > 0 then out[#out + 1] = gone end
  return out
end
local function drop_fifo_head(list, ready, waiting, fleases, wake_key, group, now)
  redis.call('LPOP', list)
  redis.call('ZREM', fleases, group)
  if fifo_schedule(list, ready, waiting, group, now) then wake(wake_key) end
end
-- Publish the block at KEYS[k..], ARGV[a..] (see encode_outgoing); returns the indices after it.
-- With apply false the block is only skipped (a complete whose lease was lost publishes nothing).
-- An envelope whose idempotency key is held publishes nothing: its index and the holder's id go to dups.
""" + HANDLES_LUA + PLAIN_LUA + r"""
local function publish(k, a, now, seq_key, apply)
  local env0, now_s = a, fmt(now)
  local skip = {}
  k, a = handles(k, a + tonumber(ARGV[a]) + 1, now, now_s, apply, skip)
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    local kind, env, uid = ARGV[a], ARGV[env0 + tonumber(ARGV[a + 1])], ARGV[a + 2]
    local delay, group = tonumber(ARGV[a + 3]), ARGV[a + 4]
    local go = apply and not skip[ARGV[a + 1]]
    a = a + 5
    if string.byte(kind) < 97 then  -- a tagged target (upper case): its step's claims take the flow path
      if apply then redis.call('SET', KEYS[k], '1') end
      k, kind = k + 1, string.lower(kind)
    end
    if kind == 's' then
      if go then
        redis.call('XADD', KEYS[k], '*', 'id', uid, 'env', env, 'attempts', '0', 'first', '', 'due', now_s)
      end
      k = k + 1
    elseif kind == 'd' then
      if go then
        redis.call('ZADD', KEYS[k], now + delay, uid .. '|0||' .. env)
        wake(KEYS[k + 1])
      end
      k = k + 2
    else
      if go then
        local seq = redis.call('INCR', seq_key)
        if redis.call('RPUSH', KEYS[k], fifo_item(seq, fmt(now + delay), 0, '', uid, env)) == 1 then
          fifo_schedule(KEYS[k], KEYS[k + 1], KEYS[k + 2], group, now)
          wake(KEYS[k + 3])
        end
      end
      k = k + 4
    end
  end
  return plain_runs(k, a, now_s, env0, apply)
end
"""

# KEYS: seq, then one publish block. ARGV: now, then the block.
# Returns the envelopes whose key was held: flat (index in the block, the holder's event id).
_PUBLISH: Final = _PRELUDE + r"""
local now = clock(ARGV[1])
publish(2, 2, now, KEYS[1], true)
return dups
"""

# KEYS: stream inflight lease delayed fifo_ready fifo_wait fifo_lease owners steps flow_flag cancels
# ARGV: now group consumer limit lease_s fifo_prefix step move_max owner
# Returns a delivery whose lease expired alone, as (id, envelope, attempt, first delivered at, '1', last owner),
# else the due ones, flat, 4 fields each: (id, envelope, attempt, first delivered at); {'~flow'} when the
# step takes the flow path (redis_scripts_flow.CLAIM). When some of them belong to cancelled events, a list
# of their ids follows (the worker settles them without running them).
_CLAIM: Final = _PRELUDE + r"""
local now, now_s = clock(ARGV[1])
if KEYS[10] and redis.call('EXISTS', KEYS[10]) == 1 then return {'~flow'} end
local stream, inflight, leases, delayed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ready, waiting, fleases, owners = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local grp, consumer, left = ARGV[2], ARGV[3], tonumber(ARGV[4])
local lease_until, prefix, me = now + tonumber(ARGV[5]), ARGV[6], ARGV[9]
-- 1. delayed deliveries that fell due join the end of the stream
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[8]))
local moved = {}
for i = 1, #due, 2 do
  local m = due[i]
  local uid, att, first, p = string.match(m, '^([^|]*)|([^|]*)|([^|]*)|()')
  redis.call('XADD', stream, '*', 'id', uid, 'env', string.sub(m, p), 'attempts', att, 'first', first,
             'due', due[i + 1])
  moved[#moved + 1] = m
end
if #moved > 0 then redis.call('ZREM', delayed, unpack(moved)) end
-- 2. a delivery whose lease expired (its worker probably died running it) is claimed alone, attempt + 1
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
        local last = redis.call('HGET', owners, uid) or ''
        redis.call('ZADD', leases, lease_until, uid)
        redis.call('HSET', inflight, uid, eid .. '|' .. (att + 1) .. '|' .. first)
        redis.call('HSET', owners, uid, me)
        return screen({uid, fields(c[1][2]).env, att + 1, first, '1', last}, 6, KEYS[11])
      end
    end
    redis.call('ZREM', leases, uid)  -- its entry is gone: nothing to deliver
    redis.call('HDEL', inflight, uid)
    redis.call('HDEL', owners, uid)
  else
    local list = prefix .. g
    local head = redis.call('LINDEX', list, 0)
    if head then
      local seq, hat, att, first, huid, env = fifo_parse(head)
      if first == '' then first = now_s end
      local last = redis.call('HGET', owners, huid) or ''
      redis.call('LSET', list, 0, fifo_item(seq, hat, att + 1, first, huid, env))
      redis.call('ZADD', fleases, lease_until, g)
      redis.call('HSET', owners, huid, me)
      return screen({huid, env, att + 1, first, '1', last}, 6, KEYS[11])
    end
    redis.call('ZREM', fleases, g)
  end
end
local out = {}
local function emit(uid, env, attempt, first)
  out[#out + 1] = uid
  out[#out + 1] = env
  out[#out + 1] = attempt
  out[#out + 1] = first
  left = left - 1
end
-- 3. entries never delivered to the group
local got, err = take_new(stream, grp, consumer, left, inflight, leases, owners, lease_until, me, now_s)
if err then
  if not string.find(err, 'NOGROUP', 1, true) then return redis.error_reply(err) end
  ensure_group(stream, grp, KEYS[9], ARGV[7])
  got = take_new(stream, grp, consumer, left, inflight, leases, owners, lease_until, me, now_s)
end
for i = 1, #got do out[i] = got[i] end
left = left - #got / 4
-- 4. the heads of FIFO groups that are free and due, oldest head first
if left > 0 and redis.call('EXISTS', ready, waiting) > 0 then
  local w = redis.call('ZRANGEBYSCORE', waiting, '-inf', now, 'LIMIT', 0, tonumber(ARGV[8]))
  for _, g in ipairs(w) do fifo_schedule(prefix .. g, ready, waiting, g, now) end
  if #w > 0 then redis.call('ZREM', waiting, unpack(w)) end
  local groups = redis.call('ZRANGE', ready, 0, left - 1)
  for _, g in ipairs(groups) do
    local list = prefix .. g
    local head = redis.call('LINDEX', list, 0)
    if head then
      local seq, at, att, first, uid, env = fifo_parse(head)
      if first == '' then first = now_s end
      redis.call('LSET', list, 0, fifo_item(seq, at, att + 1, first, uid, env))
      redis.call('ZADD', fleases, lease_until, g)
      redis.call('HSET', owners, uid, me)
      emit(uid, env, att + 1, first)
    end
  end
  if #groups > 0 then redis.call('ZREM', ready, unpack(groups)) end
end
return screen(out, 4, KEYS[11])
"""

# KEYS: stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake owners delayed
# ARGV: now group uid attempt fifo_group delay_s
_RETRY: Final = _PRELUDE + r"""
local now, now_s = clock(ARGV[1])
local uid, attempt, fgroup, delay = ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local kind, x, first, env = leased(KEYS[2], KEYS[7], KEYS[4], uid, attempt, fgroup)
if kind then redis.call('HDEL', KEYS[9], uid) end
if kind == 's' then
  local e = redis.call('XRANGE', KEYS[1], x, x)[1]
  drop_standard(KEYS[1], ARGV[2], KEYS[2], KEYS[3], uid, x)
  if e then
    env = fields(e[2]).env
    if delay > 0 then
      redis.call('ZADD', KEYS[10], now + delay, uid .. '|' .. attempt .. '|' .. first .. '|' .. env)
      wake(KEYS[8])
    else
      redis.call('XADD', KEYS[1], '*', 'id', uid, 'env', env, 'attempts', attempt, 'first', first, 'due', now_s)
    end
  end
  return 1
elseif kind == 'f' then
  local at = fmt(now + delay)
  redis.call('LSET', KEYS[4], 0, fifo_item(x, at, attempt, first, uid, env))
  redis.call('ZREM', KEYS[7], fgroup)
  if delay > 0 then redis.call('ZADD', KEYS[6], at, fgroup) else redis.call('ZADD', KEYS[5], x, fgroup) end
  wake(KEYS[8])
  return 1
end
return 0
"""

# KEYS: stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake owners dlq dlq_index handle handles
# ARGV: now group uid attempt fifo_group record event_id finished_record (without its closing brace)
_DEAD: Final = _PRELUDE + r"""
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
redis.call('HSET', KEYS[10], uid, ARGV[6])
redis.call('ZADD', KEYS[11], now, uid)
redis.call('HSET', KEYS[12], 's:' .. ARGV[2], ARGV[8] .. ',"f":' .. now_s .. '}')
redis.call('ZADD', KEYS[13], now, ARGV[7])
return 1
"""

# KEYS: per delivery: stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake owners
# ARGV: now count, then per delivery: group uid attempt fifo_group expired ('1' or '') last_owner
# Undoes the claims of deliveries that never started (lost leases are skipped): the attempt is not
# counted; a standard delivery joins the end of its stream, due now, and a FIFO head stays its group's
# head, free and due; one claimed for an expired lease goes back to that expired lease and its last owner.
_HAND_BACK: Final = _PRELUDE + r"""
local now, now_s = clock(ARGV[1])
local k, a = 1, 3
for _ = 1, tonumber(ARGV[2]) do
  local stream, inflight, leases, list = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local fleases, wake_key, owners = KEYS[k + 6], KEYS[k + 7], KEYS[k + 8]
  local uid, attempt, fgroup = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local expired, last, back = ARGV[a + 4] == '1', ARGV[a + 5], tonumber(ARGV[a + 2]) - 1
  local kind, x, first, env = leased(inflight, fleases, list, uid, attempt, fgroup)
  if back == 0 and not expired then first = '' end  -- no attempt started: the next claim is the first
  if kind == 's' and expired then
    redis.call('HSET', inflight, uid, x .. '|' .. back .. '|' .. first)
    redis.call('ZADD', leases, now, uid)
    set_owner(owners, uid, last)
    wake(wake_key)
  elseif kind == 's' then
    local e = redis.call('XRANGE', stream, x, x)[1]
    drop_standard(stream, ARGV[a], inflight, leases, uid, x)
    redis.call('HDEL', owners, uid)
    if e then
      redis.call('XADD', stream, '*', 'id', uid, 'env', fields(e[2]).env, 'attempts', back, 'first', first,
                 'due', now_s)
    end
  elseif kind == 'f' then
    redis.call('LSET', list, 0, fifo_item(x, now_s, back, first, uid, env))
    if expired then
      redis.call('ZADD', fleases, now, fgroup)
      set_owner(owners, uid, last)
    else
      redis.call('ZREM', fleases, fgroup)
      redis.call('ZADD', KEYS[k + 4], x, fgroup)
      redis.call('HDEL', owners, uid)
    end
    wake(wake_key)
  end
  k, a = k + 9, a + 6
end
return 1
"""

# KEYS: inflight lease fifo_lease. ARGV: now lease_s fifo_prefix, then (uid, attempt, fifo_group) triples.
_EXTEND: Final = _PRELUDE + r"""
local now = clock(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
for i = 4, #ARGV, 3 do
  local uid, g = ARGV[i], ARGV[i + 2]
  local kind = leased(KEYS[1], KEYS[3], ARGV[3] .. g, uid, tonumber(ARGV[i + 1]), g)
  if kind == 's' then redis.call('ZADD', KEYS[2], 'XX', lease_until, uid)
  elseif kind == 'f' then redis.call('ZADD', KEYS[3], 'XX', lease_until, g) end
end
return 1
"""

# KEYS: stream steps. ARGV: group step.
_ENSURE: Final = _PRELUDE + r"""
ensure_group(KEYS[1], ARGV[1], KEYS[2], ARGV[2])
return 1
"""

# KEYS: dlq dlq_index stream handle. ARGV: now, dead id, new delivery id, envelope, step.
_REPLAY: Final = CLOCK + r"""
local _, now_s = clock(ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[3], 'env', ARGV[4], 'attempts', '0', 'first', '', 'due', now_s)
redis.call('HSET', KEYS[4], 's:' .. ARGV[5], 'q|' .. ARGV[3] .. '|0|s')
redis.call('HDEL', KEYS[4], 'e:' .. ARGV[5])
return 1
"""


PRELUDE: Final = _PRELUDE
"""The queue scripts' shared Lua functions (for the handle scripts of :mod:`.redis_scripts_handles`)."""


class QueueScripts:
    """The queue store's scripts, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.publish: AsyncScript = client.register_script(_PUBLISH)
        self.claim: AsyncScript = client.register_script(_CLAIM)
        self.retry: AsyncScript = client.register_script(_RETRY)
        self.dead: AsyncScript = client.register_script(_DEAD)
        self.hand_back: AsyncScript = client.register_script(_HAND_BACK)
        self.extend: AsyncScript = client.register_script(_EXTEND)
        self.next_due: AsyncScript = client.register_script(inspect.NEXT_DUE)
        self.stats: AsyncScript = client.register_script(inspect.STATS)
        self.ready_scan: AsyncScript = client.register_script(inspect.READY_SCAN)
        self.ensure: AsyncScript = client.register_script(_ENSURE)
        self.replay: AsyncScript = client.register_script(_REPLAY)


# -- argument layouts -------------------------------------------------------------------------------
def fifo_group(delivery: Delivery) -> str:
    """The escaped FIFO group a delivery would belong to (the scripts look at it only for FIFO ones)."""
    return escape(delivery.envelope.group_id or "")


def delivery_keys(sk: StepKeys, delivery: Delivery) -> list[str]:
    """KEYS of one delivery in the complete and hand-back scripts; the retry and dead-letter scripts start
    with them."""
    return [sk.stream, sk.inflight, sk.lease, sk.fifo_list(delivery.envelope.group_id or ""), sk.fifo_ready,
            sk.fifo_wait, sk.fifo_lease, sk.wake, sk.owner]


def queue_keys(sk: StepKeys) -> list[str]:
    """KEYS of the claim (plus owners and the steps set), next-due (plus wake) and stats scripts."""
    return [sk.stream, sk.inflight, sk.lease, sk.delayed, sk.fifo_ready, sk.fifo_wait, sk.fifo_lease]
