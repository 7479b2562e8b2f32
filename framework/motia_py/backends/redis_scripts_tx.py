"""The Lua script of the redis backend's transactional commit (see :class:`.stores.TxStore`), and its
argument layout.

One script checks the lease (the fence: the same test as the complete script), checks every read, and
only then writes the state (queueing the change event of each watched key whose value changed, as the
state-change script does), acknowledges the delivery and publishes the outbox, so a conflict or a lost
lease changes nothing. Redis runs a script alone, so no other writer gets in between. On Redis Cluster
every key of one call must hash to one slot, the state hashes included: use a prefix with a hash tag
(``{motia}``), which puts every key of the backend in one slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from msgspec.structs import replace
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .handle_records import finish_json_open
from .records import Delivery, HandleState, Outgoing, StateRead, StateWrite
from .redis_keys import Keys
from .redis_scripts_queue import (
    _PRELUDE,  # the queue scripts' helpers: leased, drop_*, publish
    delivery_keys,
    encode_outgoing,
    fifo_group,
)
from .state_change import change_head

_MARKER: Final = "__motia_py_state_change__"  # the payload of a change event's template, replaced in the script

# KEYS: seq; with a delivery its 9 keys (stream inflight lease fifo_list fifo_ready fifo_wait fifo_lease wake
# owners); one state hash per read; per write its state hash, its namespace's group set and, with a change
# event, that event's publish block; the outbox's publish block.
# ARGV: now, has delivery ('1' or ''), step, uid, attempt, fifo group; read count, per read 'k' key
# has_value value | 'g' n key1 value1 ... keyn valuen; write count, per write 's' key value group notify |
# 'd' key group notify | 'c' group, where notify is '0', or '1' then the change document's head and the
# event's publish block (its payload the quoted marker); the outbox's publish block.
# With a delivery, KEYS end with the handles index and the event's handle, ARGV with the event id and the
# delivery's finished record without its closing brace (see redis_publish).
# Returns 'ok', 'lost' or 'conflict'.
_COMPLETE_TX: Final = r"""
local argv = {}
for i = 1, #ARGV do argv[i] = ARGV[i] end
local ARGV = argv  -- a copy: a change event's template is filled in place
""" + _PRELUDE + r"""
local now = clock(ARGV[1])
local k, a = 2, 7
local kind, eid = nil, nil
local uid, fgroup = ARGV[4], ARGV[6]
if ARGV[2] == '1' then
  kind, eid = leased(KEYS[3], KEYS[8], KEYS[5], uid, tonumber(ARGV[5]), fgroup)
  if not kind then return 'lost' end
  k = 11
end
local d = k - 9  -- the delivery's first key, when there is one
for _ = 1, tonumber(ARGV[a]) do
  local hash = KEYS[k]
  k = k + 1
  if ARGV[a + 1] == 'k' then
    local cur = redis.call('HGET', hash, ARGV[a + 2])
    if ARGV[a + 3] == '1' then
      if cur ~= ARGV[a + 4] then return 'conflict' end
    elseif cur then
      return 'conflict'
    end
    a = a + 4
  else
    local n = tonumber(ARGV[a + 2])
    local flat = redis.call('HGETALL', hash)
    if #flat ~= 2 * n then return 'conflict' end
    local cur = {}
    for i = 1, #flat, 2 do cur[flat[i]] = flat[i + 1] end
    for i = a + 3, a + 2 + 2 * n, 2 do
      if cur[ARGV[i]] ~= ARGV[i + 1] then return 'conflict' end
    end
    a = a + 2 + 2 * n
  end
end
local marker = '"' .. '""" + _MARKER + r"""' .. '"'
local writes = tonumber(ARGV[a + 1])
a = a + 2
for _ = 1, writes do
  local hash, groups, op = KEYS[k], KEYS[k + 1], ARGV[a]
  k = k + 2
  if op == 'c' then
    redis.call('DEL', hash)
    redis.call('SREM', groups, ARGV[a + 1])
    a = a + 2
  else
    local key, new, group = ARGV[a + 1], nil, nil
    if op == 's' then new, group, a = ARGV[a + 2], ARGV[a + 3], a + 4 else group, a = ARGV[a + 2], a + 3 end
    local notify = ARGV[a] == '1'
    local cur = nil
    if notify then cur = redis.call('HGET', hash, key) or nil end
    if new then
      redis.call('HSET', hash, key, new)
      redis.call('SADD', groups, group)
    elseif redis.call('HDEL', hash, key) == 1 and redis.call('EXISTS', hash) == 0 then
      redis.call('SREM', groups, group)
    end
    a = a + 1
    if notify then
      local head = ARGV[a]
      a = a + 1
      local changed = cur ~= new
      if changed then
        local change = head .. (cur or 'null') .. ',"new_value":' .. (new or 'null') .. '}'
        local tmpl = ARGV[a + 1]
        local i, j = string.find(tmpl, marker, 1, true)
        ARGV[a + 1] = string.sub(tmpl, 1, i - 1) .. cjson.encode(change) .. string.sub(tmpl, j + 1)
      end
      k, a = publish(k, a, now, KEYS[1], changed)
    end
  end
end
if kind == 's' then
  drop_standard(KEYS[d], ARGV[3], KEYS[d + 1], KEYS[d + 2], uid, eid)
  redis.call('HDEL', KEYS[d + 8], uid)
elseif kind == 'f' then
  drop_fifo_head(KEYS[d + 3], KEYS[d + 4], KEYS[d + 5], KEYS[d + 6], KEYS[d + 7], fgroup, now)
  redis.call('HDEL', KEYS[d + 8], uid)
end
if kind then  -- the delivery's finished record (job handles): KEYS and ARGV end with it
  redis.call('HSET', KEYS[#KEYS], 's:' .. ARGV[3], ARGV[#ARGV] .. ',"f":' .. fmt(now) .. '}')
  redis.call('ZADD', KEYS[#KEYS - 1], now, ARGV[#ARGV - 1])
end
publish(k, a, now, KEYS[1], true)
return 'ok'
"""


class TxScripts:
    """The transactional store's script, registered on one client."""

    def __init__(self, client: Redis) -> None:
        self.complete_tx: AsyncScript = client.register_script(_COMPLETE_TX)


def encode_tx(keys: Keys, now: str, delivery: Delivery | None, outgoing: Sequence[Outgoing],
              writes: Sequence[StateWrite], reads: Sequence[StateRead], result_json: str | None = None
              ) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of the commit script (layout above); ``result_json`` goes to the delivery's
    finished record."""
    ks, args = [keys.seq], [now]
    if delivery is None:
        args += ("", "", "", "", "")
    else:
        ks += delivery_keys(keys.step(delivery.step), delivery)
        args += ("1", delivery.step, delivery.id, str(delivery.attempt), fifo_group(delivery))
    args.append(str(len(reads)))
    for r in reads:
        ks.append(keys.state(r.namespace, r.group))
        if r.key is not None:
            args += ("k", r.key, "" if r.value_json is None else "1", r.value_json or "")
        else:
            items = r.items or {}
            args += ("g", str(len(items)))
            for key, value in items.items():
                args += (key, value)
    args.append(str(len(writes)))
    for w in writes:
        ks += (keys.state(w.namespace, w.group), keys.state_groups(w.namespace))
        if w.key is None:
            args += ("c", w.group)
            continue
        args += ("d", w.key, w.group) if w.value_json is None else ("s", w.key, w.value_json, w.group)
        if w.notify is None or not w.notify.targets:
            args.append("0")
            continue
        args += ("1", change_head(w.group, w.key))
        template = Outgoing(envelope=replace(w.notify.envelope, data_json=_MARKER), targets=w.notify.targets)
        encode_outgoing(keys, [template], ks, args)
    encode_outgoing(keys, outgoing, ks, args)
    if delivery is not None:
        ks += (keys.handles, keys.handle(delivery.envelope.id))
        args += (delivery.envelope.id, finish_json_open(
            HandleState.SUCCEEDED, delivery_id=delivery.id, attempts=delivery.attempt,
            started_at=delivery.first_delivered_at, result_json=result_json))
    return ks, args
