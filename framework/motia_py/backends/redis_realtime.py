"""The redis backend's pub/sub and state changes (the base of :class:`.redis.RedisBackend`).

**Pub/sub.** One extra connection per process, opened at the first subscription, PSUBSCRIBEs to every
channel of the backend's prefix (``p:pubsub:*``); a reader task hands each message to the process's
:class:`~.pubsub.Fanout`. Publishing is one ``PUBLISH`` on the command connection. When the pub/sub
connection drops, redis-py reconnects and subscribes again; messages published meanwhile are lost (the
store is best effort).

**State changes** are one Lua script: read the old value, write the new one, and, when it changed, build
the change event's envelope and publish it with the queue store's own publish code (the queue script
prelude), so the event is queued in the same atomic step as the write.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final, cast

from msgspec.structs import replace
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..errors import BackendError
from .pubsub import Fanout, Subscription
from .records import Outgoing
from .redis_queue import RedisQueue

# The queue scripts' prelude defines publish(), which reads envelopes from ARGV; it is reused as it is
# (one place knows how a delivery is queued) on a copy of ARGV that this script may change.
from .redis_scripts_queue import _PRELUDE as QUEUE_PRELUDE
from .redis_scripts_queue import encode_outgoing
from .state_change import ANY, Expected, StateChange, change_head
from .state_change import Unset as _Unset

_MARKER: Final = "__motia_py_state_change__"
_CONFIRM_S: Final = 5.0

# KEYS: hash groups seq, then one publish block (or none).
# ARGV: now key group mode(any|absent|value) expected has_new new head marker env_index, then the block.
_STATE_CHANGE: Final = r"""
local argv = {}
for i = 1, #ARGV do argv[i] = ARGV[i] end
local ARGV = argv
""" + QUEUE_PRELUDE + r"""
local now = clock(ARGV[1])
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then cur = nil end
local mode = ARGV[4]
if (mode == 'absent' and cur) or (mode == 'value' and cur ~= ARGV[5]) then
  return {0, cur and 1 or 0, cur or ''}
end
local new = nil
if ARGV[6] == '1' then new = ARGV[7] end
if new then
  if new ~= cur then
    redis.call('HSET', KEYS[1], ARGV[2], new)
    redis.call('SADD', KEYS[2], ARGV[3])
  end
elseif cur then
  redis.call('HDEL', KEYS[1], ARGV[2])
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
end
if cur ~= new and ARGV[10] ~= '0' then
  local change = ARGV[8] .. (cur or 'null') .. ',"new_value":' .. (new or 'null') .. '}'
  local at = tonumber(ARGV[10])
  local tmpl = ARGV[at]
  local i, j = string.find(tmpl, ARGV[9], 1, true)
  ARGV[at] = string.sub(tmpl, 1, i - 1) .. cjson.encode(change) .. string.sub(tmpl, j + 1)
  publish(4, 11, now, KEYS[3], true)
end
return {1, cur and 1 or 0, cur or ''}
"""


class RedisRealtime(RedisQueue):
    """:class:`~.stores.PubSubStore` and :class:`~.stores.StateChangeStore` on Redis (see the module)."""

    _fanout: Fanout | None = None
    _pubsub: PubSub | None = None
    _pubsub_client: Redis | None = None
    _reader: asyncio.Task[None] | None = None
    _script: Any = None
    _pubsub_lock: asyncio.Lock | None = None

    # -- state changes ------------------------------------------------------------------------------
    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Write (or delete) and queue the change event in one script (see the protocol)."""
        if self._script is None:
            self._script = self._c.register_script(_STATE_CHANGE)
        mode = "any" if isinstance(expected, _Unset) else ("absent" if expected is None else "value")
        ks = [self.keys.state(namespace, group), self.keys.state_groups(namespace), self.keys.seq]
        args = [self._now(), key, group, mode, expected if isinstance(expected, str) else "",
                "0" if new_json is None else "1", new_json or "", change_head(group, key), f'"{_MARKER}"']
        if notify is not None and notify.targets:
            await self._ensure_steps(t.step for t in notify.targets)
            args.append("12")
            template = Outgoing(envelope=replace(notify.envelope, data_json=_MARKER), targets=notify.targets)
            encode_outgoing(self.keys, [template], ks, args)
        else:
            args += ["0", "0", "0"]
        with self._translate():
            applied, has_old, old = await self._script(keys=ks, args=args)
        return StateChange(bool(applied), str(old) if has_old else None)

    # -- pub/sub ------------------------------------------------------------------------------------
    @property
    def fanout(self) -> Fanout:
        """This process's subscriptions."""
        if self._fanout is None:
            self._fanout = Fanout()
        return self._fanout

    async def pubsub_publish(self, channel: str, message: str) -> None:
        """``PUBLISH`` on the channel's Redis channel."""
        with self._translate():
            await self._c.publish(self.keys.pubsub(channel), message)

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (the process's pub/sub connection is subscribed first)."""
        await self._ensure_pubsub()
        return self.fanout.subscribe(channel)

    async def _ensure_pubsub(self) -> None:
        if self._pubsub_lock is None:
            self._pubsub_lock = asyncio.Lock()
        async with self._pubsub_lock:
            if self._pubsub is not None:
                return
            self._require_open()
            client = self._connect(None)
            pubsub = client.pubsub()
            try:
                with self._translate():
                    await pubsub.psubscribe(self.keys.pubsub_pattern())
                    async with asyncio.timeout(_CONFIRM_S):
                        while (msg := await pubsub.get_message(timeout=_CONFIRM_S)) is None or \
                                msg.get("type") != "psubscribe":
                            pass
            except (BackendError, TimeoutError) as exc:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
                raise BackendError(f"redis {self._where}: cannot subscribe: {exc}") from exc
            self._pubsub, self._pubsub_client = pubsub, client
            self._reader = asyncio.create_task(self._read(pubsub), name="motia-redis-pubsub")

    async def _read(self, pubsub: PubSub) -> None:
        """Hand every message to the fan-out; reconnect (redis-py resubscribes) after a failure."""
        delay = 0.05
        while True:
            try:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.05
            if msg is None or msg.get("type") != "pmessage":
                continue
            channel = self.keys.pubsub_channel(cast(str, msg["channel"]))
            if channel is not None:
                self.fanout.deliver(channel, cast(str, msg["data"]))

    async def close(self) -> None:
        """Stop the pub/sub reader and its connection, then close the backend."""
        reader, pubsub, client = self._reader, self._pubsub, self._pubsub_client
        self._reader = self._pubsub = self._pubsub_client = None
        self._script = None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        if self._fanout is not None:
            await self._fanout.close()
            self._fanout = None
        await super().close()
