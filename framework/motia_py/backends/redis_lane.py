"""A lane: one command connection of its own, on which a script runs with no pool in between.

redis-py's way to a server and back (``Redis.execute_command``: take a connection from the pool under its
condition, health and observability hooks, the retry wrapper, response callbacks, release) costs about as
much as the round trip itself: on this project's publish script about 190 us a call against 120 us for
the same EVALSHA written and read on a connection directly. Calls made one at a time (a producer awaiting
each emit, the claim and completion of each hop of a chain) paid it on every call.

A :class:`LaneRedis` client's scripts (:class:`LaneScript`) run on its :class:`Lane` whenever the lane is
free: the command is packed and written on the lane's own connection and its reply read there; a call
made while the lane is busy, a script run in a pipeline, and everything else go through the pool as
before. What a lane gives up is only what the pool did around the call:

- NOSCRIPT (a script's first call, or a server restarted or flushed its scripts): the lane loads the
  script (SCRIPT LOAD) and runs it again, as redis-py does. The script did not run, so nothing runs twice.
- A lost connection or a read timeout: the lane's connection is closed (the next call reconnects) and
  the call goes the pool's way, which retries it as redis-py retries any command (a script that ran
  before the connection dropped may run again: deliveries are at least once).
- An error reply from the script (``ResponseError``) is raised as it is; the connection stays.
- A cancelled call closes the connection, whose reply would otherwise be read by the next call.

The lane's connection is made from the client's pool's settings (URL, credentials, TLS, database, client
name, timeouts, hiredis packing of :mod:`.redis_pack`), connects on first use and counts as one of the
client's connections (the redis backend keeps one pooled connection besides it). Once connected, its
replies are read by a protocol of its own (:mod:`.redis_wire`), not through redis-py's stream reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT, ScriptTextT

from .redis_wire import Wire, take_over


class Lane:
    """One connection for script calls made one at a time (see the module docstring)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._conn: AbstractConnection | None = None
        self._wire: Wire | None = None  # the connection's replies, once taken over (see redis_wire)
        self._busy = False
        self._closed = False

    @property
    def free(self) -> bool:
        """No call is on the lane now (and it is not closed)."""
        return not self._busy and not self._closed

    async def run(self, script: AsyncScript, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        """Run ``script`` on the lane (loading it there after NOSCRIPT); the pool's way instead after a
        lost connection."""
        self._busy = True
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = cast(AbstractConnection, self._pool.make_connection())  # type: ignore[no-untyped-call]
            try:
                if self._wire is not None and self._wire.lost:
                    await self._drop(conn)
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]
                    self._wire = take_over(conn)
                try:
                    return await self._evalsha(conn, script, keys, args)
                except NoScriptError:  # not run (a new server, or its scripts flushed): load it, run it
                    script.sha = await self._call(conn, "SCRIPT", "LOAD", script.script)
                    return await self._evalsha(conn, script, keys, args)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await self._drop(conn)  # reconnects on the next call; the pool's way retries
        finally:
            self._busy = False
        return await AsyncScript.__call__(script, keys, args)

    async def _evalsha(self, conn: AbstractConnection, script: AsyncScript, keys: Sequence[KeyT],
                       args: Sequence[EncodableT]) -> Any:
        return await self._call(conn, "EVALSHA", script.sha, len(keys), *keys, *args)

    async def _call(self, conn: AbstractConnection, *command: Any) -> Any:
        packed = conn.pack_command(*command)
        if self._wire is not None:
            return await self._wire.call(packed)
        await conn.send_packed_command(packed)
        return await conn.read_response()

    async def _drop(self, conn: AbstractConnection) -> None:
        """Disconnect without waiting (a taken-over connection's stream never learns that it closed)."""
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()
        await conn.disconnect(nowait=True)

    async def close(self) -> None:
        """Close the lane's connection; calls from now on go through the pool."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._drop(conn)


class LaneScript(AsyncScript):
    """A registered script that runs on its client's lane when the lane is free (see the module
    docstring); in a pipeline, or on another client, as redis-py runs it."""

    def __init__(self, client: LaneRedis, script: ScriptTextT) -> None:
        super().__init__(client, script)
        self._lane = client.lane

    async def __call__(self, keys: Sequence[KeyT] | None = None, args: Iterable[EncodableT] | None = None,
                       client: Any = None) -> Any:
        """Run the script: on the lane when it is free and no other client is given, else through the pool."""
        if client is not None:
            return await super().__call__(keys, args, client)
        if self._lane.free:
            return await self._lane.run(self, keys or (), tuple(args or ()))
        return await self._pooled(keys or (), tuple(args or ()))

    async def _pooled(self, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        """As redis-py runs a script on its own client, without its check whether that client is a
        pipeline (an ``isinstance`` through a ``typing.Protocol`` metaclass: microseconds a call)."""
        client = cast(Redis, self.registered_client)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # not loaded on this server (new, or its scripts flushed): load it, run it
            self.sha = await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class LaneRedis(Redis):
    """A client whose registered scripts run on its lane (:meth:`with_lane` makes one)."""

    lane: Lane

    @classmethod
    def with_lane(cls, pool: ConnectionPool) -> LaneRedis:
        """A client over ``pool`` (closed with it) with a lane made from the pool's settings."""
        client = cast(LaneRedis, cls.from_pool(pool))
        client.lane = Lane(pool)
        return client

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]  # (as Redis's)
        """A :class:`LaneScript`."""
        return LaneScript(self, script)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the lane, then the client (and its pool, as ``from_pool`` set)."""
        await self.lane.close()
        await super().aclose(close_connection_pool)
