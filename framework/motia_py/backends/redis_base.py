"""The redis backend's connection: clients, scripts, error translation, group commit.

:class:`RedisConnection` is the base of :class:`.redis.RedisBackend`: it owns the command client (a
:class:`~.redis_lane.LaneRedis`: one pooled connection and a lane for scripts run one at a time), the
registered scripts and the key builder, and translates every redis-py exception into
:class:`~motia_py.errors.BackendError`. The blocking read has a client of its own (:mod:`.redis_wake`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Generic, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from msgspec import Struct
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..errors import BackendError, BackendUnavailableError
from ..types import Clock
from .records import Outgoing, worker_identity
from .redis_keys import Keys
from .redis_lane import LaneRedis
from .redis_pack import use_hiredis_packing
from .redis_scripts_complete import COMPLETE
from .redis_scripts_flow import FlowScripts
from .redis_scripts_handles import HandleScripts
from .redis_scripts_lease import LeaseScripts
from .redis_scripts_queue import QueueScripts
from .redis_scripts_state import StateScripts
from .redis_scripts_traces import TRACES_ADD
from .redis_scripts_tx import TxScripts

T = TypeVar("T")
R = TypeVar("R")

MIN_VERSION: Final = (6, 2)
_MAX_BATCH: Final = 256  # calls per group-committed script run
_SOCKET_TIMEOUT_S: Final = 10.0
_CONNECT_TIMEOUT_S: Final = 5.0
_POOLED_CONNECTIONS: Final = 1  # per backend object, besides its lane (redis_lane) and its blocking read

def _driver_info() -> dict[str, Any]:
    """What each connection reports with ``CLIENT SETINFO``: redis-py's name and version, as redis-py
    reports them by default; but given here, so that redis-py 7.1+ does not look its own version up in
    the installed distributions' metadata (``importlib.metadata``, a few ms) for every connection."""
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7.1: the version was looked up once, at import
        return {}
    return {"driver_info": DriverInfo(name="redis-py", lib_version=redis.__version__)}


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



class _Translate:
    """A redis-py or socket error leaving the ``with`` block becomes a :class:`BackendError` naming the server
    (a class, not ``contextlib.contextmanager``: no generator on every Redis call)."""

    __slots__ = ("_where",)

    def __init__(self, where: str) -> None:
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        if isinstance(exc, RedisError | OSError):  # redis-py wraps socket errors, but not on every path
            raise BackendError(f"redis {self._where}: {type(exc).__name__}: {exc}") from exc


class Batcher(Generic[T, R]):
    """Group commit: the calls submitted during one event-loop iteration run as one batch.

    The first call of an iteration starts the task that runs the batch; that task takes the calls
    when it first runs, at the next iteration, so every call of this one is in its batch and the
    batch goes out one loop turn after the first call (not two, as through a ``call_soon`` first).

    :meth:`call` goes further when the batcher is idle (nothing queued, nothing running): the call
    runs at once in the caller's own task, a batch of one, with no hand-off at all. One call at a
    time (a chain of steps, a producer awaiting each emit) then pays no batching; concurrent calls
    still share batches.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._direct = 0  # calls running in their callers' tasks
        self._direct_done = asyncio.Event()  # set while none is
        self._direct_done.set()

    async def call(self, item: T) -> R:
        """Run one call: at once in the caller's task when the batcher is idle, else in a batch."""
        if self._pending or self._tasks or self._direct:
            return await self.submit(item)
        self._direct += 1
        self._direct_done.clear()
        try:
            [result] = await self._run([item])
        finally:
            self._direct -= 1
            if not self._direct:
                self._direct_done.set()
        return result

    def submit(self, item: T) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            self._start(None)
        self._pending.append((item, future))
        return future

    def _start(self, batch: list[tuple[T, asyncio.Future[R]]] | None) -> None:
        task = asyncio.ensure_future(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flush(self) -> None:
        """Send what is pending now (in batches of at most ``_MAX_BATCH`` calls)."""
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self._start(batch)

    async def drain(self) -> None:
        """Wait for every call made so far, batched or direct."""
        self.flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._direct_done.wait()

    async def _execute(self, batch: list[tuple[T, asyncio.Future[R]]] | None) -> None:
        if batch is None:  # started by the first call of an iteration: take every call of it
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            if self._pending:
                self.flush()
            if not batch:
                return
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



class Scripts(Struct, frozen=True):
    """Every store's scripts, registered on the command client."""

    queue: QueueScripts
    state: StateScripts
    lease: LeaseScripts
    flow: FlowScripts
    handles: HandleScripts
    tx: TxScripts
    complete: AsyncScript  # acknowledge, publish, prefetch (redis_scripts_complete)
    traces_add: AsyncScript  # a batch of run records (redis_scripts_traces)

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        """Register the scripts on ``client`` (EVALSHA, reloaded by redis-py after NOSCRIPT)."""
        return cls(QueueScripts(client), StateScripts(client), LeaseScripts(client), FlowScripts(client),
                   HandleScripts(client), TxScripts(client), client.register_script(COMPLETE),
                   client.register_script(TRACES_ADD))


class RedisConnection:
    """The connection side of the redis backend (see the module docstring).

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (redis-py's URL syntax and query options).
        prefix: every key starts with ``prefix:`` (``{name}`` makes them one Redis Cluster hash slot).
        clock: epoch seconds for leases and delays; Redis's own clock when None.
        identity: the owner recorded on every claim; by default ``worker_identity()`` (``host:pid``),
            read when the backend opens. The attribute of that name may be changed at any time.
    """

    def __init__(self, url: str, prefix: str = "motia", clock: Clock | None = None,
                 identity: str | None = None) -> None:
        self.url = redact(url)
        self.keys = Keys(prefix)
        self.clock = clock
        self._identity = identity
        self._url = url
        self._where = _where(url)
        self._client: Redis | None = None
        self._scripts: Scripts | None = None
        self._known_steps: set[str] = set()

    @property
    def identity(self) -> str:
        """The owner this backend records on its claims (``host:pid`` unless set)."""
        return self._identity or worker_identity()

    @identity.setter
    def identity(self, value: str) -> None:
        self._identity = value

    # -- plumbing -------------------------------------------------------------------------------
    def _translate(self) -> _Translate:
        """``with self._translate():`` a redis-py or socket error inside leaves as :class:`BackendError`."""
        return _Translate(self._where)

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

    def _pool(self, socket_timeout: float | None) -> BlockingConnectionPool:
        # At most _POOLED_CONNECTIONS connections: concurrent commands queue for one rather than open
        # more (the hot paths batch their calls anyway), so a worker's connections stay few. A command
        # waits for it at most _SOCKET_TIMEOUT_S, as long as for a reply: never forever, whatever keeps it
        # (asyncio.Condition before Python 3.13 can lose a wake-up when a waiter is cancelled, gh-112202);
        # a wait that runs out fails as an outage, and the next call finds the connection free.
        return cast(BlockingConnectionPool, use_hiredis_packing(BlockingConnectionPool.from_url(
            self._url, max_connections=_POOLED_CONNECTIONS, timeout=_SOCKET_TIMEOUT_S, decode_responses=True,
            socket_timeout=socket_timeout, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_keepalive=True,
            health_check_interval=30, retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), retries=3),
            client_name="motia-py", **_driver_info())))

    def _connect(self, socket_timeout: float | None) -> Redis:
        """A client of its own pool (pub/sub)."""
        return Redis.from_pool(self._pool(socket_timeout))

    def _new_steps(self, outboxes: Iterable[Sequence[Outgoing]]) -> list[str]:
        """The steps that ``outboxes`` target and this process has not ensured yet (nearly always none:
        checked without a generator or a set, as it is on every publish and acknowledgement)."""
        known, new = self._known_steps, []
        for outbox in outboxes:
            for out in outbox:
                for t in out.targets:
                    if t.step not in known:
                        new.append(t.step)
        return new

    async def _ensure_steps(self, steps: Iterable[str]) -> None:
        """Create the consumer group (at id 0) and register the step, once per step and process."""
        for step in set(steps) - self._known_steps:
            with self._translate():
                await self._s.queue.ensure(keys=[self.keys.step(step).stream, self.keys.steps], args=[step, step])
            self._known_steps.add(step)

    async def open(self) -> None:
        """Connect and ask for the server's version (INFO).

        Raises BackendUnavailableError (bad URL, unreachable or too old a server)."""
        if self._client is not None:
            return
        if self._identity is None:
            self._identity = worker_identity()  # once, in the process that uses the connection
        try:
            db = urlsplit(self._url).path.strip("/")
            if db and not db.isdigit():  # redis-py would quietly use database 0
                raise ValueError(f"the path must be a database number, not {db!r}")
            client = LaneRedis.with_lane(self._pool(_SOCKET_TIMEOUT_S))  # two connections: lane and pool
        except ValueError as exc:
            raise BackendUnavailableError(f"bad Redis URL {self.url!r}: {exc}") from exc
        try:
            info = await client.info("server")  # one round trip: it reaches the server and gives its version
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise BackendUnavailableError(f"cannot reach Redis at {self._where}: {exc}") from exc
        version = str(info.get("redis_version", "0"))
        if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < MIN_VERSION:
            await client.aclose()
            raise BackendUnavailableError(
                f"Redis at {self._where} is version {version}; motia-py needs {'.'.join(map(str, MIN_VERSION))}+")
        self._client = client
        self._scripts = Scripts.register(client)
        self._known_steps.clear()

    async def close(self) -> None:
        """Disconnect the command client (its lane and its pool)."""
        if self._client is None:
            return
        client = self._client
        self._client = self._scripts = None
        with self._translate():
            await client.aclose()
