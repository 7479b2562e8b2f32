"""The redis backend's completion script: acknowledge deliveries, publish their outboxes and, for the
steps this process is waiting on, claim what was just published (a *prefetch*), in one script run.

A chain of steps A -> B run by one worker then costs one round trip per hop: the script that ends A's
attempt enqueues B's event and leases it to the worker waiting for B, which runs it without asking the
queue again (see :class:`.redis_prefetch.Prefetch`). A prefetch takes only entries of the step's
stream never delivered to its group, with the claim's own rules (:func:`take_new` in the queue prelude);
expired leases, delayed and FIFO deliveries and steps on the flow path are left to the step's next claim.
"""

from __future__ import annotations

from typing import Final

from .redis_scripts_queue import PRELUDE

# KEYS: seq, handles, then per delivery: stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake
# owners handle + its publish block; then, when prefetching: cancels, and per step: stream inflight lease
# owners flow_flag.
# ARGV: now, count, then per delivery: group uid attempt fifo_group event_id finished record (without its
# closing brace) + its publish block; then, when prefetching: the number of steps, consumer, owner, and per
# step: group limit lease_s.
# Returns 1 (completed) or 0 (lease lost) per delivery. Standard deliveries are acknowledged with one
# XACK/XDEL/ZREM/HDEL per stream at the end (a Lua-to-Redis call costs more than the command itself).
# When prefetching, one more element follows: per step {id of the last entry taken when every new entry
# was taken, else '', the deliveries taken (flat, 4 fields each, then the cancelled ones' ids as a list)}.
COMPLETE: Final = PRELUDE + r"""
local now, now_s = clock(ARGV[1])
local k, a, out, taken, acks, fins = 3, 3, {}, {}, {}, {}
for i = 1, tonumber(ARGV[2]) do
  local grp, uid, attempt, fgroup = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local kind, eid = nil, nil
  if not taken[uid] then kind, eid = leased(KEYS[k + 1], KEYS[k + 6], KEYS[k + 3], uid, attempt, fgroup) end
  if kind == 's' then
    local ack = acks[KEYS[k]]
    if ack == nil then
      ack = {grp = grp, inflight = KEYS[k + 1], lease = KEYS[k + 2], owners = KEYS[k + 8], eids = {}, uids = {}}
      acks[KEYS[k]] = ack
    end
    ack.eids[#ack.eids + 1] = eid
    ack.uids[#ack.uids + 1] = uid
  elseif kind == 'f' then
    drop_fifo_head(KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7], fgroup, now)
    redis.call('HDEL', KEYS[k + 8], uid)
  end
  if kind then
    taken[uid] = true
    redis.call('HSET', KEYS[k + 9], 's:' .. grp, ARGV[a + 5] .. ',"f":' .. now_s .. '}')
    fins[#fins + 1] = now
    fins[#fins + 1] = ARGV[a + 4]
  end
  out[i] = kind and 1 or 0
  k, a = publish(k + 10, a + 6, now, KEYS[1], kind ~= nil)
end
for i = 1, #fins, 1000 do redis.call('ZADD', KEYS[2], unpack(fins, i, math.min(i + 999, #fins))) end
for stream, ack in pairs(acks) do
  redis.call('XACK', stream, ack.grp, unpack(ack.eids))
  redis.call('XDEL', stream, unpack(ack.eids))
  redis.call('ZREM', ack.lease, unpack(ack.uids))
  redis.call('HDEL', ack.inflight, unpack(ack.uids))
  redis.call('HDEL', ack.owners, unpack(ack.uids))
end
if ARGV[a] then  -- the prefetches
  local cancels, consumer, me, pre = KEYS[k], ARGV[a + 1], ARGV[a + 2], {}
  k = k + 1
  for j = 1, tonumber(ARGV[a]) do
    local grp, n, lease_until = ARGV[a + 3 * j], tonumber(ARGV[a + 3 * j + 1]), now + tonumber(ARGV[a + 3 * j + 2])
    local got, last = {}, ''
    if redis.call('EXISTS', KEYS[k + 4]) == 0 then
      local err
      got, err, last = take_new(KEYS[k], grp, consumer, n, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], lease_until, me,
                                now_s)
      if err then got, last = {}, '' end
      if #got >= 4 * n then last = '' end  -- more may be left: the step's next claim takes them
    end
    pre[j] = {last, screen(got, 4, cancels)}
    k = k + 5
  end
  out[#out + 1] = pre
end
return out
"""
