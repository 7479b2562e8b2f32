"""The Redis backend (``redis://host:port/db``): queues, dead letters, state and leases for many hosts.

Fan-out happens at publish time: every subscribing step has its own Redis Stream with one consumer group
(named after the step), so an event with three subscribers is three stream entries. Per-step streams
rather than one stream per topic, because then an entry has exactly one group to acknowledge it: it is
XDEL'd as soon as that group is done with it, so streams stay bounded without MAXLEN trimming (which can
drop events nobody has consumed yet), and a delay or retry goes back to exactly one step. The group is
created at id 0 the first time a process publishes to or claims from the step, so events published
before any worker ran are delivered.

Leases are not Redis's idle times: a claim records ``delivery id -> expiry`` in a sorted set and the
attempt in a hash (see :mod:`.redis_keys`), and the next claim that finds an expired lease XCLAIMs the
entry with ``attempt + 1``. Expiry is measured on the injected clock when there is one (so tests are
deterministic) and on Redis's ``TIME`` otherwise, so workers on hosts with skewed clocks still agree.
Delayed deliveries wait in a sorted set until a claim moves them into the stream; FIFO queues are one
list per message group whose head alone is ever out. Every multi-key change is one Lua script
(:mod:`.redis_scripts`); payloads are JSON text, never pickle.

``complete`` and ``publish`` calls made in one event-loop iteration go to Redis as one script call
(group commit), so a worker finishing a hundred deliveries pays one round trip, not a hundred.

``wait`` does not consume anything: it blocks in ``XREAD`` on the step's stream (and a one-entry "wake"
stream that FIFO and delayed changes bump) from the last id it saw, so a publish by any process wakes
it at once and a crash while waiting cannot strand an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError

from ..errors import BackendError, BackendUnavailableError
from ..types import Clock
from .base import DeadLetter, Delivery, Envelope, Outgoing, QueueStats, TraceRun, new_id
from .redis_keys import CONSUMER, Keys
from .redis_scripts import MOVE_MAX, Scripts, delivery_keys, encode_outgoing, fifo_group, queue_keys
from .registry import BackendOptions

T = TypeVar("T")
R = TypeVar("R")

MIN_VERSION: Final = (6, 2)
_MAX_BATCH: Final = 256  # calls per group-committed script run
_MAX_CLAIM: Final = 1000  # deliveries per claim script run (bounds its run time and Lua's unpack())
_SOCKET_TIMEOUT_S: Final = 10.0
_CONNECT_TIMEOUT_S: Final = 5.0
_BLOCK_GRACE_S: Final = 5.0  # how long past its BLOCK time a blocking read may take before we give up on it


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        db = parts.path.strip("/") or "0"
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"
    except ValueError:
        return redact(url)


class _Batcher(Generic[T, R]):
    """Group commit: the calls submitted during one event-loop iteration run as one batch."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append((item, future))
        return future

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            task = asyncio.ensure_future(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        self.flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _execute(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:  # every caller of the batch gets the failure
            error = exc if isinstance(exc, Exception) else BackendError("redis backend closed during the call")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller may have been cancelled; the work is done regardless
                future.set_result(result)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a blocking read that failed after nobody waited for it any more


class RedisBackend:
    """Backend on one Redis server (6.2 or newer), shared by any number of workers on any hosts.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (redis-py's URL syntax and query options).
        prefix: every key starts with ``prefix:`` (``{name}`` makes them one Redis Cluster hash slot).
        clock: epoch seconds for leases and delays; Redis's own clock when None.
    """

    def __init__(self, url: str, prefix: str = "motia", clock: Clock | None = None) -> None:
        self.url = redact(url)
        self.keys = Keys(prefix)
        self.clock = clock
        self._url = url
        self._where = _where(url)
        self._client: Redis | None = None
        self._blocking: Redis | None = None  # blocking XREADs only, so they never hold a command connection
        self._scripts: Scripts | None = None
        self._known_steps: set[str] = set()
        self._reads: set[asyncio.Future[Any]] = set()
        self._publishes: _Batcher[Sequence[Outgoing], None] = _Batcher(self._publish_batch)
        self._completes: _Batcher[tuple[Delivery, Sequence[Outgoing]], bool] = _Batcher(self._complete_batch)

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise BackendError(f"redis {self._where}: {type(exc).__name__}: {exc}") from exc

    def _require_open(self) -> None:
        if self._client is None:
            raise BackendError(f"redis backend {self._where} is not open")

    @property
    def _c(self) -> Redis:
        self._require_open()
        return cast(Redis, self._client)

    @property
    def _s(self) -> Scripts:
        if self._scripts is None:
            raise BackendError(f"redis backend {self._where} is not open")
        return self._scripts

    def _now(self) -> str:
        """ARGV "now" of every script: the injected clock, or "" for Redis's own time."""
        return "" if self.clock is None else repr(float(self.clock()))

    def _connect(self, socket_timeout: float | None) -> Redis:
        return Redis.from_url(
            self._url, decode_responses=True, socket_timeout=socket_timeout,
            socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_keepalive=True, health_check_interval=30,
            retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), retries=3), client_name="motia-py")

    async def _ensure_steps(self, steps: Iterable[str]) -> None:
        """Create the consumer group (at id 0) and register the step, once per step and process."""
        for step in set(steps) - self._known_steps:
            with self._translate():
                await self._s.ensure(keys=[self.keys.step(step).stream, self.keys.steps], args=[step, step])
            self._known_steps.add(step)

    async def open(self) -> None:
        """Connect and PING. Raises BackendUnavailableError (bad URL, unreachable or too old a server)."""
        if self._client is not None:
            return
        try:
            db = urlsplit(self._url).path.strip("/")
            if db and not db.isdigit():  # redis-py would quietly use database 0
                raise ValueError(f"the path must be a database number, not {db!r}")
            client, blocking = self._connect(_SOCKET_TIMEOUT_S), self._connect(None)
        except ValueError as exc:
            raise BackendUnavailableError(f"bad Redis URL {self.url!r}: {exc}") from exc
        try:
            await client.ping()
            info = await client.info("server")
        except RedisError as exc:
            await client.aclose()
            await blocking.aclose()
            raise BackendUnavailableError(f"cannot reach Redis at {self._where}: {exc}") from exc
        version = str(info.get("redis_version", "0"))
        if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < MIN_VERSION:
            await client.aclose()
            await blocking.aclose()
            raise BackendUnavailableError(
                f"Redis at {self._where} is version {version}; motia-py needs {'.'.join(map(str, MIN_VERSION))}+")
        self._client, self._blocking = client, blocking
        self._scripts = Scripts(client)
        self._known_steps.clear()

    async def close(self) -> None:
        """Finish the batched calls, stop blocking reads and disconnect; deliveries stay queued."""
        if self._client is None:
            return
        await self._publishes.drain()
        await self._completes.drain()
        for read in list(self._reads):
            read.cancel()
        if self._reads:
            await asyncio.gather(*self._reads, return_exceptions=True)
        client, blocking = self._client, self._blocking
        self._client = self._blocking = self._scripts = None
        await client.aclose()
        if blocking is not None:
            await blocking.aclose()

    # -- queue ----------------------------------------------------------------------------------
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item, atomically."""
        if any(out.targets for out in items):
            self._require_open()
            await self._publishes.submit(items)

    async def _publish_batch(self, calls: list[Sequence[Outgoing]]) -> list[None]:
        items = [out for call in calls for out in call]
        await self._ensure_steps(t.step for out in items for t in out.targets)
        ks, args = [self.keys.seq], [self._now()]
        encode_outgoing(self.keys, items, ks, args)
        with self._translate():
            await self._s.publish(keys=ks, args=args)
        return [None] * len(calls)

    async def claim(self, step: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step``: expired leases first, then the stream in order,
        then the heads of free FIFO groups (oldest first)."""
        if limit <= 0:
            return []
        sk = self.keys.step(step)
        with self._translate():
            flat = await self._s.claim(
                keys=[*queue_keys(sk), self.keys.steps],
                args=[self._now(), step, CONSUMER, str(min(limit, _MAX_CLAIM)), repr(float(lease_s)),
                      sk.fifo_prefix, step, str(MOVE_MAX)])
        return [Delivery(id=flat[i], step=step, envelope=Envelope.from_json(flat[i + 1]), attempt=int(flat[i + 2]),
                         first_delivered_at=float(flat[i + 3])) for i in range(0, len(flat), 4)]

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge and publish ``outgoing`` in one script; False (nothing published) when the lease was
        lost."""
        self._require_open()
        return await self._completes.submit((delivery, outgoing))

    async def _complete_batch(self, calls: list[tuple[Delivery, Sequence[Outgoing]]]) -> list[bool]:
        await self._ensure_steps(t.step for _, outgoing in calls for out in outgoing for t in out.targets)
        ks, args = [self.keys.seq], [self._now(), str(len(calls))]
        for d, outgoing in calls:
            ks += delivery_keys(self.keys.step(d.step), d)
            args += (d.step, d.id, str(d.attempt), fifo_group(d))
            encode_outgoing(self.keys, outgoing, ks, args)
        with self._translate():
            done = await self._s.complete(keys=ks, args=args)
        return [bool(x) for x in done]

    def _single(self, d: Delivery) -> tuple[list[str], list[str]]:
        """KEYS and the leading ARGV (now group uid attempt fifo_group) of the retry and dead-letter scripts."""
        return delivery_keys(self.keys.step(d.step), d), [self._now(), d.step, d.id, str(d.attempt), fifo_group(d)]

    async def retry(self, delivery: Delivery, delay_s: float, error: str = "") -> None:
        """Release a failed delivery so it is delivered again after ``delay_s`` (a no-op if the lease was lost)."""
        ks, args = self._single(delivery)
        with self._translate():
            await self._s.retry(keys=[*ks, self.keys.step(delivery.step).delayed],
                                args=[*args, repr(max(0.0, float(delay_s)))])

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str) -> None:
        """Move a delivery to the dead-letter queue (a no-op if the lease was lost)."""
        ks, args = self._single(delivery)
        record = json.dumps({"step": delivery.step, "env": delivery.envelope.to_json(), "attempts": delivery.attempt,
                             "error": error, "traceback": traceback, "first": delivery.first_delivered_at})
        with self._translate():
            await self._s.dead(keys=[*ks, self.keys.dlq, self.keys.dlq_index], args=[*args, record])

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future (lost ones are skipped)."""
        by_step: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_step.setdefault(d.step, []).append(d)
        for step, ds in by_step.items():
            sk = self.keys.step(step)
            args = [self._now(), repr(float(lease_s)), sk.fifo_prefix]
            for d in ds:
                args += (d.id, str(d.attempt), fifo_group(d))
            with self._translate():
                await self._s.extend(keys=[sk.inflight, sk.lease, sk.fifo_lease], args=args)

    async def wait(self, step: str, timeout_s: float) -> None:
        """Return when ``step`` may have a due delivery, or after ``timeout_s``.

        Returns at once when something is due; otherwise blocks in ``XREAD`` until a publish by any
        process, the next delayed delivery or lease expiry, or the timeout.
        """
        sk = self.keys.step(step)
        with self._translate():
            due_in, stream_id, wake_id = await self._s.next_due(keys=[*queue_keys(sk), sk.wake], args=[self._now()])
        if due_in != "":
            timeout_s = min(timeout_s, max(0.0, float(due_in)))
        if timeout_s <= 0 or self._blocking is None:
            return
        block_ms = max(1, math.ceil(timeout_s * 1000))
        read = asyncio.ensure_future(
            self._blocking.xread({sk.stream: stream_id, sk.wake: wake_id}, count=1, block=block_ms))
        read.add_done_callback(_retrieve)
        self._reads.add(read)
        try:
            await asyncio.wait({read}, timeout=timeout_s + _BLOCK_GRACE_S)
        finally:
            self._reads.discard(read)
            if not read.done():
                read.cancel()  # redis-py drops the connection of a read it was interrupted in
        if read.done() and not read.cancelled() and (exc := read.exception()) is not None:
            with self._translate():
                raise exc

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries across every step."""
        c, now = self._c, self._now()
        with self._translate():
            steps = sorted(cast(set[str], await c.smembers(self.keys.steps)))
            rows = await asyncio.gather(*(
                self._s.stats(keys=queue_keys(self.keys.step(s)), args=[now, self.keys.step(s).fifo_prefix])
                for s in steps))
            dead = int(await c.hlen(self.keys.dlq))
        ready = delayed = leased = 0
        per_step: dict[str, int] = {}
        due: list[float] = []
        for step, (n_ready, n_delayed, n_leased, next_due) in zip(steps, rows, strict=True):
            ready, delayed, leased = ready + n_ready, delayed + n_delayed, leased + n_leased
            per_step[step] = n_ready + n_delayed + n_leased
            if next_due != "":
                due.append(float(next_due))
        return QueueStats(ready=ready, delayed=delayed, leased=leased, dead=dead,
                          next_due_at=min(due) if due else None, per_step=per_step)

    # -- dead letters ---------------------------------------------------------------------------
    @staticmethod
    def _dead(dead_id: str, record: str, failed_at: float) -> DeadLetter:
        r = json.loads(record)
        return DeadLetter(id=dead_id, step=r["step"], envelope=Envelope.from_json(r["env"]), attempts=r["attempts"],
                          error=r["error"], traceback=r["traceback"], failed_at=failed_at,
                          first_attempt_at=r["first"])

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        if limit <= 0:
            return []
        c = self._c
        with self._translate():
            index = cast(list[tuple[str, float]],
                         await c.zrevrange(self.keys.dlq_index, 0, limit - 1, withscores=True))
            if not index:
                return []
            records = cast(list[str | None], await c.hmget(self.keys.dlq, [i for i, _ in index]))
        return [self._dead(i, r, at) for (i, at), r in zip(index, records, strict=True) if r is not None]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        c = self._c
        with self._translate():
            record = cast(str | None, await c.hget(self.keys.dlq, dead_id))
            failed_at = await c.zscore(self.keys.dlq_index, dead_id)
        if record is None or failed_at is None:
            return None
        return self._dead(dead_id, record, float(failed_at))

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's stream with fresh attempts; False when unknown."""
        with self._translate():
            record = await self._c.hget(self.keys.dlq, dead_id)
        if record is None:
            return False
        r = json.loads(record)
        await self._ensure_steps([r["step"]])
        with self._translate():
            return bool(await self._s.replay(
                keys=[self.keys.dlq, self.keys.dlq_index, self.keys.step(r["step"]).stream],
                args=[dead_id, new_id(), r["env"]]))

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.dlq, dead_id)
                pipe.zrem(self.keys.dlq_index, dead_id)
                removed, _ = await pipe.execute()
        return bool(removed)

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
            return bool(await self._s.state_delete(
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
            return bool(await self._s.state_cas(
                keys=[self.keys.state(namespace, group), self.keys.state_groups(namespace)], args=args))

    # -- leases and metadata ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease on ``key``; False when another owner holds it."""
        with self._translate():
            return bool(await self._s.acquire(keys=[self.keys.lock(key)],
                                              args=[self._now(), owner, repr(float(ttl_s))]))

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner``."""
        with self._translate():
            await self._s.release(keys=[self.keys.lock(key)], args=[owner])

    async def meta_get(self, key: str) -> str | None:
        """Framework metadata text, or None."""
        with self._translate():
            return cast(str | None, await self._c.hget(self.keys.meta, key))

    async def meta_set(self, key: str, value: str) -> None:
        """Store framework metadata text."""
        with self._translate():
            await self._c.hset(self.keys.meta, key, value)

    # -- traces ---------------------------------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records in one transaction."""
        if not runs:
            return
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                for trace_id, started_at, raw in runs:
                    pipe.rpush(self.keys.trace(trace_id), raw)
                    pipe.zadd(self.keys.traces, {trace_id: float(started_at)}, gt=True)
                await pipe.execute()

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
