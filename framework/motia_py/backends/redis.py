"""The Redis backend (``redis://host:port/db``): every store on one Redis server, for many hosts.

The queue store (streams, leases, delays, FIFO groups, dead letters) is :class:`.redis_queue.RedisQueue`,
pub/sub and state changes are :class:`.redis_realtime.RedisRealtime`, transactional commits
:class:`.redis_tx.RedisTx` and the job-handle store :class:`.redis_handles.RedisHandles`, on the
connection of :class:`.redis_base.RedisConnection`; the state, lease/metadata and trace stores are here.
Every key is built in :mod:`.redis_keys`, every atomic change is a Lua script of its store
(:mod:`.redis_scripts`); payloads are JSON text, never pickle.

Leases (``p:lock:<key>``) carry a real TTL as well as their expiry, so locks nobody releases vanish on
their own; this is also how the per-tick cron markers of earlier versions (``p:lock:cron-tick%3A...``,
seven days) disappear: the scheduler now keeps one record per step in ``p:meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from .records import TraceRun
from .redis_base import MIN_VERSION, redact
from .redis_handles import RedisHandles
from .redis_tx import RedisTx
from .registry import BackendOptions

__all__ = ["MIN_VERSION", "RedisBackend", "create_backend", "redact"]


class RedisBackend(RedisTx, RedisHandles):
    """Backend on one Redis server (6.2 or newer), shared by any number of workers on any hosts.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (redis-py's URL syntax and query options).
        prefix: every key starts with ``prefix:`` (``{name}`` makes them one Redis Cluster hash slot).
        clock: epoch seconds for leases and delays; Redis's own clock when None.
    """

    # -- state ----------------------------------------------------------------------------------
    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """The JSON text stored at (namespace, group, key), or None."""
        with self._translate():
            return cast(str | None, await self._c.hget(self.keys.state(namespace, group), key))

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text."""
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.state(namespace, group), key, value_json)
                pipe.sadd(self.keys.state_groups(namespace), group)
                await pipe.execute()

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key; False when absent."""
        with self._translate():
            return bool(await self._s.state.delete(
                keys=[self.keys.state(namespace, group), self.keys.state_groups(namespace)], args=[key, group]))

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text."""
        with self._translate():
            return cast(dict[str, str], await self._c.hgetall(self.keys.state(namespace, group)))

    async def state_groups(self, namespace: str) -> list[str]:
        """The groups of a namespace that hold at least one key, sorted."""
        with self._translate():
            return sorted(cast(set[str], await self._c.smembers(self.keys.state_groups(namespace))))

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete every key of a group."""
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.state(namespace, group))
                pipe.srem(self.keys.state_groups(namespace), group)
                await pipe.execute()

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Store ``new_json`` (delete when None) only if the value is ``expected_json`` (None = absent)."""
        args = [key, group, "0" if expected_json is None else "1", expected_json or "",
                "0" if new_json is None else "1", new_json or ""]
        with self._translate():
            return bool(await self._s.state.cas(
                keys=[self.keys.state(namespace, group), self.keys.state_groups(namespace)], args=args))

    # -- leases and metadata ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease on ``key``; False when another owner holds it."""
        with self._translate():
            return bool(await self._s.lease.acquire(keys=[self.keys.lock(key)],
                                              args=[self._now(), owner, repr(float(ttl_s))]))

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner``."""
        with self._translate():
            await self._s.lease.release(keys=[self.keys.lock(key)], args=[owner])

    async def meta_get(self, key: str) -> str | None:
        """Framework metadata text, or None."""
        with self._translate():
            return cast(str | None, await self._c.hget(self.keys.meta, key))

    async def meta_set(self, key: str, value: str) -> None:
        """Store framework metadata text."""
        with self._translate():
            await self._c.hset(self.keys.meta, key, value)

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Store ``new`` only if the value is ``expected`` (None: absent), in one script."""
        with self._translate():
            return bool(await self._s.lease.meta_cas(
                keys=[self.keys.meta], args=[key, "0" if expected is None else "1", expected or "", new]))

    # -- traces ---------------------------------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records atomically (one script call)."""
        if not runs:
            return
        records: dict[str, list[str]] = {}
        last: dict[str, float] = {}
        for trace_id, started_at, raw in runs:  # grouped by trace, in order: one RPUSH and one ZADD per trace
            records.setdefault(trace_id, []).append(raw)
            last[trace_id] = max(last.get(trace_id, started_at), started_at)
        ks, args = [self.keys.traces], list[str]()
        for trace_id, raws in records.items():
            ks.append(self.keys.trace(trace_id))
            args += (str(len(raws)), repr(float(last[trace_id])), trace_id, *raws)
        with self._translate():
            await self._s.traces_add(keys=ks, args=args)

    async def traces_get(self, trace_id: str) -> list[str]:
        """Every run record of one trace, in the order they were added."""
        with self._translate():
            return cast(list[str], await self._c.lrange(self.keys.trace(trace_id), 0, -1))

    async def traces_recent(self, limit: int) -> list[str]:
        """Trace ids, the most recently active first."""
        if limit <= 0:
            return []
        with self._translate():
            return cast(list[str], await self._c.zrevrange(self.keys.traces, 0, limit - 1))

    async def traces_prune(self, before: float, keep: int) -> int:
        """Drop traces last active before ``before`` and all but the ``keep`` most recent; return how many.

        Not atomic with concurrent ``traces_add`` calls: a run added to a trace while it is being pruned
        may go with it (traces are diagnostics, kept by retention, not a record of delivery).
        """
        c = self._c
        with self._translate():
            async with c.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(self.keys.traces, "-inf", f"({float(before)!r}")
                pipe.zrevrange(self.keys.traces, max(0, keep), -1)
                old, extra = await pipe.execute()
            drop = sorted(set(old) | set(extra))
            for i in range(0, len(drop), 500):
                chunk = drop[i:i + 500]
                async with c.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.keys.traces, *chunk)
                    pipe.unlink(*(self.keys.trace(t) for t in chunk))
                    await pipe.execute()
        return len(drop)


def create_backend(url: str, options: BackendOptions) -> RedisBackend:
    """Entry point for ``redis://``: keys under ``options.prefix``, time from ``options.clock``."""
    return RedisBackend(url, prefix=options.prefix, clock=options.clock)
