"""The redis backend's one blocking read per process: it watches the streams of every step waited for
and wakes the waits of the steps whose streams grew (see :mod:`.wakeups`).

A publish to a step appends to its stream (a standard delivery) or bumps its one-entry wake stream (a
delayed, retried or FIFO one), so "something may be due" is "one of the step's two streams has an
entry newer than the last id read". One ``XREAD BLOCK`` over all of them, on one connection of its
own, replaces a blocking read (and a connection) per step: a worker with 200 steps holds two
connections to Redis, this one and the command connection.

A read takes at most two entries per stream: one entry means the stream is quiet again and the next
read starts after it; two mean a burst, and the newest ids are read at once (one script) so that the
burst costs two round trips, not one per entry. Either way no wake-up is lost. Steps added while the read blocks
are taken in by ``CLIENT UNBLOCK`` (or, if that misses, by dropping the read's connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .redis_scripts_inspect import LAST_IDS
from .wakeups import Wakeups

_BLOCK_MS: Final = 30_000  # one read's longest block; it is read again at once
_RETRY_S: Final = (0.05, 0.2, 1.0)  # pauses after a failed read, growing, the last one repeated


Generation = tuple[int, int, int]
"""(epoch, stream growths, wake-stream growths) of a step: equal before and after a read means that
nothing was seen on its streams meanwhile."""


class ActivityHub(Wakeups):
    """The waits of a Redis backend object, counting what is seen on each step's two streams, so that a
    due time read before can be known stale (see :meth:`.redis_queue.RedisQueue.wait_any`)."""

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, int] = {}
        self._wakes: dict[str, int] = {}
        self.epoch = 0  # grows on signal_all: every due time read before is stale

    def generation(self, step: str) -> Generation:
        """The step's :data:`Generation` now."""
        return self.epoch, self._streams.get(step, 0), self._wakes.get(step, 0)

    def grew(self, streams: Iterable[str], wakes: Iterable[str]) -> None:
        """Steps whose stream (standard deliveries) or wake stream (delayed, retried, FIFO) grew."""
        streams, wakes = list(streams), list(wakes)
        for s in streams:
            self._streams[s] = self._streams.get(s, 0) + 1
        for s in wakes:
            self._wakes[s] = self._wakes.get(s, 0) + 1
        super().signal([*streams, *wakes])

    def signal(self, steps: Iterable[str]) -> None:
        """Count activity of either kind on the steps and wake their waits."""
        steps = list(steps)
        self.grew(steps, steps)

    def nudge(self, steps: Iterable[str]) -> None:
        """Wake the waits of ``steps`` without counting activity on their streams (their due times stay
        trusted): for work this process holds already, such as what a completion claimed."""
        super().signal(steps)

    def signal_all(self) -> None:
        """Make every due time read so far stale and wake every wait."""
        self.epoch += 1
        super().signal_all()


def _newer(a: str, b: str) -> bool:
    """Whether stream id ``a`` is after ``b``."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


class StreamWatch:
    """One task reading every watched stream with one blocking ``XREAD`` (see the module docstring).

    Args:
        connect: makes the client of the blocking connection (one connection, no socket timeout).
        commands: the command client, for ``CLIENT UNBLOCK``.
        hub: the waits to wake.
    """

    def __init__(self, connect: Callable[[], Redis], commands: Callable[[], Redis], hub: ActivityHub) -> None:
        self._connect = connect
        self._commands = commands
        self._hub = hub
        self._ids: dict[str, str] = {}  # stream key -> the newest id seen
        self._step_of: dict[str, str] = {}  # stream key -> its step
        self._wake_keys: set[str] = set()  # the keys that are wake streams
        self._task: asyncio.Task[None] | None = None
        self._reader: Redis | None = None
        self._last_ids: AsyncScript | None = None  # the burst read's script, on the reading connection
        self._reader_id: int | None = None  # CLIENT ID of the reading connection, when known
        self._blocked = False
        self._restart = False  # the read was cancelled to take in new streams, not to stop

    def watch(self, streams: dict[str, tuple[str, str, bool]]) -> None:
        """Watch ``{stream key: (step, newest id seen, is a wake stream)}`` too (streams already watched
        keep their place)."""
        new = {k: v for k, v in streams.items() if k not in self._ids}
        if not new:
            return
        for key, (step, last, wake) in new.items():
            self._ids[key] = last
            self._step_of[key] = step
            if wake:
                self._wake_keys.add(key)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="motia-redis-watch")
        elif self._blocked:
            interrupt = asyncio.ensure_future(self._interrupt())
            interrupt.add_done_callback(_retrieve)

    def seen(self, key: str, last: str) -> None:
        """Entries of stream ``key`` up to id ``last`` are taken care of already (a completion of this
        process claimed them): reading them wakes nothing."""
        if key in self._ids and _newer(last, self._ids[key]):
            self._ids[key] = last

    async def close(self) -> None:
        """Stop reading and close the blocking connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(RedisError, OSError):
                await reader.aclose()

    async def _interrupt(self) -> None:
        """End the blocking read now, so that the next one includes the streams just added."""
        reader_id, task = self._reader_id, self._task
        with contextlib.suppress(RedisError, OSError):
            if reader_id is not None and await self._commands().client_unblock(reader_id):
                return
        if self._blocked and task is not None and self._task is task:  # unknown id, or it missed
            self._restart = True
            task.cancel()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._read_once()
                failures = 0
            except asyncio.CancelledError:
                if not self._restart:
                    raise
                self._restart = False  # cancelled by _interrupt: the connection was dropped
                self._reader_id = None
            except (RedisError, OSError):
                self._reader_id = None
                self._hub.signal_all()  # the waits look at the queue again (and report the outage)
                await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
                failures += 1

    async def _read_once(self) -> None:
        if self._reader is None:
            self._reader = self._connect()
            self._last_ids = None
        reader = self._reader
        if self._reader_id is None:
            self._reader_id = int(await reader.client_id())
        ids = dict(self._ids)
        conn = reader.connection  # the client's one connection (made by CLIENT ID above)
        if conn is None:
            raise RedisConnectionError("the blocking read's connection is gone")
        command = conn.pack_command("XREAD", "COUNT", 2, "BLOCK", _BLOCK_MS, "STREAMS", *ids, *ids.values())
        self._blocked = True
        try:  # two entries per stream at most: a second one says a burst is under way; written and read on
            # the connection directly, undecoded (only the ids are wanted, not the envelopes)
            await conn.send_packed_command(command)
            got = await conn.read_response(disable_decoding=True)
        finally:
            self._blocked = False
        if not got:
            return
        read = {key.decode(): [e[0].decode() for e in entries] for key, entries in _pairs(got)}
        read = {key: seen for key, seen in read.items() if _newer(seen[-1], self._ids[key])}  # see seen()
        self._grew(read)
        for key, seen in read.items():
            if _newer(seen[-1], self._ids[key]):
                self._ids[key] = seen[-1]
        burst = [key for key, seen in read.items() if len(seen) > 1]
        if not burst:  # the next read starts after the entry read: a later one wakes it at once
            return
        if self._last_ids is None:  # EVALSHA on the reading connection (loaded again after NOSCRIPT)
            self._last_ids = reader.register_script(LAST_IDS)
        newest = await self._last_ids(keys=burst)  # skip the rest of the burst: one round trip
        again: dict[str, list[str]] = {}
        for key, last in zip(burst, cast(list[str], newest), strict=True):
            if _newer(last, self._ids[key]):  # more entries came after those read: they may be unclaimed
                again[key] = [last]
                self._ids[key] = last
        self._grew(again)

    def _grew(self, read: dict[str, list[str]]) -> None:
        self._hub.grew((self._step_of[k] for k in read if k not in self._wake_keys),
                       (self._step_of[k] for k in read if k in self._wake_keys))


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """XREAD's reply as (stream, entries) pairs (a list of pairs in RESP2, a dict in RESP3)."""
    return list(reply.items()) if isinstance(reply, dict) else [(k, v) for k, v in reply]


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
