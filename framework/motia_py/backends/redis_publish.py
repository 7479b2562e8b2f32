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

PLAIN_LUA: Final = r"""
local function plain_runs(k, a, now_s, env0, apply)
  local nr = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nr do
    local nt, ne, first, hprefix = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
    local fields, streams = {}, {}
    for j = 1, nt do
      fields[j], streams[j] = 's:' .. ARGV[a + 3 + j], KEYS[k + j - 1]
    end
    a, k = a + 4 + nt, k + nt
    for e = 0, ne - 1 do
      if apply then
        local env, f = ARGV[env0 + first + e], {'@', now_s, 'i', ARGV[a + 1]}
        for j = 1, nt do
          local uid = ARGV[a + 1 + j]
          redis.call('XADD', streams[j], '*', 'id', uid, 'env', env, 'attempts', '0', 'first', '', 'due', now_s)
          f[2 * j + 3], f[2 * j + 4] = fields[j], 'q|' .. uid .. '|0.0|s'
        end
        redis.call('HSET', hprefix .. ARGV[a], unpack(f))
      end
      a = a + 2 + nt
    end
  end
  return k, a
end
"""
"""Lua: ``plain_runs(k, a, now_s, env0, apply)`` publishes the runs of plain events (see
:func:`_encode_plain`); returns the KEYS and ARGV indices after them."""



class _TopicJson(dict[str, str]):
    """Topic -> its JSON text, made once per topic of a publish block."""

    def __missing__(self, topic: str) -> str:
        text = self[topic] = json_text(topic)
        return text


def encode_outgoing(keys: Keys, items: Sequence[Outgoing], ks: list[str], args: list[str]) -> None:
    """Append one publish block for ``items`` to ``ks`` (KEYS) and ``args`` (ARGV).

    ARGV: envelope count, the envelopes' JSON (each once, then the tagged text of each target with a
    priority or keys, see :mod:`.redis_tags`); the handle count, then per envelope with a target ``its
    envelope indices (comma-separated: its JSON and its tagged copies), event id, info JSON, key TTL ('' for
    no key), step count`` and per step ``step, "uid|delay|kind"`` (KEYS: its handle, and its key when it has
    one); the target count, then per target ``kind, envelope index, new delivery id, delay_s, escaped FIFO
    group``; kind ``s`` (ready now; KEYS: stream), ``d`` (delayed; KEYS: delayed, wake) or ``f`` (FIFO;
    KEYS: list, ready, wait, wake); upper case: tagged, KEYS first its step's flow flag. Then the count of
    runs of plain events (0 here; see :func:`_encode_plain`, the compact form of a block whose every item
    is plain).
    """
    envs = [out.envelope.to_json() for out in items]
    if _encode_plain(keys, items, envs, ks, args):
        return
    handle_ks: list[str] = []
    handle_args: list[str] = []
    target_ks: list[str] = []
    targets: list[str] = []
    step_keys, prefix, topics = keys.step, keys.prefix, _TopicJson()
    for i, out in enumerate(items, 1):
        if not out.targets:
            continue
        env = out.envelope
        index = str(i)
        indices = [index]
        steps: list[str] = []
        for t in out.targets:
            sk, uid = step_keys(t.step), new_id()
            if not (t.priority or t.fifo or t.delay_s > 0) and t.rate_key is None and t.concurrency_key is None:
                target_ks.append(sk.stream)  # the common target: untagged, ready now
                targets += ("s", index, uid, "0", "")
                steps += (t.step, f"{uid}|0.0|s")
                continue
            at, tagged = index, tag(t.priority, t.rate_key, t.concurrency_key)
            if tagged:
                envs.append(tagged + envs[i - 1])
                at = str(len(envs))
                indices.append(at)
                target_ks.append(flow_keys(prefix, t.step).flag)
            if t.fifo:
                group = escape(env.group_id or "")
                target_ks += (sk.fifo_list(env.group_id or ""), sk.fifo_ready, sk.fifo_wait, sk.wake)
                targets += ("F" if tagged else "f", at, uid, repr(max(0.0, float(t.delay_s))), group)
                kind = "f" + group
            elif t.delay_s > 0:
                target_ks += (sk.delayed, sk.wake)
                targets += ("D" if tagged else "d", at, uid, repr(float(t.delay_s)), "")
                kind = "s"
            else:
                target_ks.append(sk.stream)
                targets += ("S" if tagged else "s", at, uid, "0", "")
                kind = "s"
            steps += (t.step, f"{uid}|{max(0.0, float(t.delay_s))!r}|{kind}")
        eid = env.id
        handle_ks.append(f"{prefix}:h:{eid}" if eid.isalnum() else keys.handle(eid))
        if out.key is not None:
            handle_ks.append(keys.idempotency(env.topic, out.key))
        handle_args += (index if len(indices) == 1 else ",".join(indices), eid,
                        f"[{topics[env.topic]},{json_text(env.trace_id)},{env.emitted_at!r}]",
                        "" if out.key is None else repr(float(out.key_ttl_s)), str(len(out.targets)), *steps)
    ks += handle_ks
    ks += target_ks
    args.append(str(len(envs)))
    args += envs
    args.append(str(sum(1 for out in items if out.targets)))
    args += handle_args
    args.append(str(len(targets) // 5))
    args += targets
    args.append("0")  # no runs of plain events


def _plain(out: Outgoing) -> bool:
    """Whether ``out`` has no idempotency key, an id that is its own key segment, and only plain targets:
    untagged, not FIFO, ready now."""
    if out.key is not None or not out.envelope.id.isalnum():
        return False
    for t in out.targets:
        if t.priority or t.fifo or t.delay_s > 0 or t.rate_key is not None or t.concurrency_key is not None:
            return False
    return True


def _encode_plain(keys: Keys, items: Sequence[Outgoing], envs: list[str], ks: list[str], args: list[str]) -> bool:
    """The block of ``items`` when every one is :func:`_plain` (a batch of ``emit_many``, most outboxes):
    no handle or target sections, then runs of consecutive events with the same steps, each ``step count,
    event count, index of its first envelope, handle key prefix, the steps`` (KEYS: their streams), then
    per event ``event id, info JSON`` and a new delivery id per step: 4 arguments per event and step
    where the general sections take 15 (a Redis script's arguments cost about as much as its writes).
    False (nothing written) when some item is not plain."""
    for out in items:  # loops, not generators: this runs for every emit
        if not _plain(out):
            return False
    runs: list[tuple[list[str], int, list[Outgoing]]] = []
    last: tuple[list[str], int, list[Outgoing]] | None = None
    for i, out in enumerate(items, 1):
        if not out.targets:
            continue
        steps = [t.step for t in out.targets]
        if last is not None and last[0] == steps and last[1] + len(last[2]) == i:
            last[2].append(out)
        else:
            last = (steps, i, [out])
            runs.append(last)
    args.append(str(len(envs)))
    args += envs
    args += ("0", "0", str(len(runs)))
    hprefix, topics, step_keys = f"{keys.prefix}:h:", _TopicJson(), keys.step
    for steps, first, outs in runs:
        args += (str(len(steps)), str(len(outs)), str(first), hprefix, *steps)
        for step in steps:
            ks.append(step_keys(step).stream)
        for out in outs:
            env = out.envelope
            args += (env.id, f"[{topics[env.topic]},{json_text(env.trace_id)},{env.emitted_at!r}]")
            for _ in steps:
                args.append(new_id())
    return True
