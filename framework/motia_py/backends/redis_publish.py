"""What the redis backend's publish block carries besides deliveries: each event's handle and its
idempotency key. :func:`encode_outgoing` writes the block's arguments; :data:`HANDLES_LUA` is the Lua
function of the queue scripts' ``publish`` that reads the handle part (see :mod:`.redis_scripts_queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .handle_records import json_text
from .records import Outgoing, new_id
from .redis_keys import Keys, escape, flow_keys
from .redis_tags import tag

HANDLES_LUA: Final = r"""
local dups = {}
local function handles(k, a, now, now_s, apply, skip)
  local nh = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nh do
    local idx, eid, info, ttl, ns = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
    local hkey = KEYS[k]
    k = k + 1
    if ttl ~= '' then
      if apply then
        local cur = redis.call('GET', KEYS[k])
        local holder, til = nil, nil
        if cur then holder, til = string.match(cur, '^([^|]*)|(.*)$') end
        if holder and tonumber(til) > now then
          for ix in string.gmatch(idx, '[^,]+') do skip[ix] = true end
          dups[#dups + 1] = string.match(idx, '^[^,]+')
          dups[#dups + 1] = holder
        else
          redis.call('SET', KEYS[k], eid .. '|' .. fmt(now + tonumber(ttl)), 'PX',
                     math.max(1, math.ceil(tonumber(ttl) * 1000)))
        end
      end
      k = k + 1
    end
    if apply and not skip[string.match(idx, '^[^,]+')] then
      local f = {'@', now_s, 'i', info}
      for j = 0, ns - 1 do
        f[#f + 1] = 's:' .. ARGV[a + 5 + 2 * j]
        f[#f + 1] = 'q|' .. ARGV[a + 6 + 2 * j]
      end
      redis.call('HSET', hkey, unpack(f))
    end
    a = a + 5 + 2 * ns
  end
  return k, a
end
"""
"""Lua: ``handles(k, a, now, now_s, apply, skip)`` writes each envelope's handle and takes its key (or marks
the envelope skipped, recording it in ``dups``); returns the KEYS and ARGV indices after the part."""


def encode_outgoing(keys: Keys, items: Sequence[Outgoing], ks: list[str], args: list[str]) -> None:
    """Append one publish block for ``items`` to ``ks`` (KEYS) and ``args`` (ARGV).

    ARGV: envelope count, the envelopes' JSON (each once, then the tagged text of each target with a
    priority or keys, see :mod:`.redis_tags`); the handle count, then per envelope with a target ``its
    envelope indices (comma-separated: its JSON and its tagged copies), event id, info JSON, key TTL ('' for
    no key), step count`` and per step ``step, "uid|delay|kind"`` (KEYS: its handle, and its key when it has
    one); the target count, then per target ``kind, envelope index, new delivery id, delay_s, escaped FIFO
    group``; kind ``s`` (ready now; KEYS: stream), ``d`` (delayed; KEYS: delayed, wake) or ``f`` (FIFO;
    KEYS: list, ready, wait, wake); upper case: tagged, KEYS first its step's flow flag.
    """
    envs = [out.envelope.to_json() for out in items]
    handle_ks: list[str] = []
    handle_args: list[str] = []
    target_ks: list[str] = []
    targets: list[str] = []
    for i, out in enumerate(items, 1):
        if not out.targets:
            continue
        env = out.envelope
        indices = [str(i)]
        steps: list[str] = []
        for t in out.targets:
            sk, index, uid = keys.step(t.step), str(i), new_id()
            prefix = tag(t.priority, t.rate_key, t.concurrency_key)
            if prefix:
                envs.append(prefix + envs[i - 1])
                index = str(len(envs))
                indices.append(index)
                target_ks.append(flow_keys(keys.prefix, t.step).flag)
            if t.fifo:
                group = escape(env.group_id or "")
                target_ks += (sk.fifo_list(env.group_id or ""), sk.fifo_ready, sk.fifo_wait, sk.wake)
                targets += ("F" if prefix else "f", index, uid, repr(max(0.0, float(t.delay_s))), group)
                kind = "f" + group
            elif t.delay_s > 0:
                target_ks += (sk.delayed, sk.wake)
                targets += ("D" if prefix else "d", index, uid, repr(float(t.delay_s)), "")
                kind = "s"
            else:
                target_ks.append(sk.stream)
                targets += ("S" if prefix else "s", index, uid, "0", "")
                kind = "s"
            steps += (t.step, f"{uid}|{max(0.0, float(t.delay_s))!r}|{kind}")
        handle_ks.append(keys.handle(env.id))
        if out.key is not None:
            handle_ks.append(keys.idempotency(env.topic, out.key))
        handle_args += (",".join(indices), env.id,
                        f"[{json_text(env.topic)},{json_text(env.trace_id)},{env.emitted_at!r}]",
                        "" if out.key is None else repr(float(out.key_ttl_s)), str(len(out.targets)), *steps)
    ks += handle_ks
    ks += target_ks
    args.append(str(len(envs)))
    args += envs
    args.append(str(sum(1 for out in items if out.targets)))
    args += handle_args
    args.append(str(len(targets) // 5))
    args += targets
