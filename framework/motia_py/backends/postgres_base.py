"""The PostgreSQL backend's connections: the URL, the pool, the listening connection, error translation
and group commit.

:class:`PostgresConnection` is the base of :class:`.postgres.PostgresBackend`. It owns a bounded asyncpg
pool (``?pool_size=``, 10 by default) and, once something waits for work, one more connection per process
that ``LISTEN``\\ s on the schema's channel and wakes the waiting steps. Every driver exception becomes a
:class:`~motia_py.errors.BackendError` (a :class:`~motia_py.errors.BackendUnavailableError` when the server
cannot be reached); the pool replaces broken connections on its own, so work resumes when the server
comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import BackendError, BackendUnavailableError
from ..types import Clock
from .postgres_schema import DEFAULT_SCHEMA, migrate, schema_name
from .postgres_sql import Sql, channel
from .records import worker_identity

A = TypeVar("A")
R = TypeVar("R")

DEFAULT_POOL_SIZE: Final = 10
_MAX_BATCH: Final = 256  # calls per group-committed statement
_CONNECT_TIMEOUT_S: Final = 5.0
_COMMAND_TIMEOUT_S: Final = 60.0
_UNREACHABLE: Final = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                       asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.InterfaceError,
                       asyncpg.InternalClientError)  # the last: a connection the server dropped mid-call


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_url(url: str, default_schema: str = DEFAULT_SCHEMA) -> tuple[str, str, int]:
    """(the DSN for asyncpg, the schema, the pool size) of a ``postgres://`` URL.

    motia-py's own query parameters are taken out: ``schema`` (else ``default_schema``) and ``pool_size``;
    the others (``sslmode``, ...) stay for asyncpg.

    Raises:
        BackendUnavailableError: a bad schema name or pool size.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("schema", "pool_size")}
    rest = [(k, v) for k, v in query if k not in ours]
    schema = schema_name(ours.get("schema") or default_schema)
    try:
        size = int(ours.get("pool_size", DEFAULT_POOL_SIZE))
        if size < 1:
            raise ValueError(size)
    except ValueError as exc:
        raise BackendUnavailableError(f"bad pool_size in {redact(url)!r}: a whole number, 1 or more") from exc
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest))), schema, size


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
    except ValueError:
        return redact(url)


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """A pool connection needs no reset when it goes back to the pool: motia-py's statements leave no
    session state (settings are transaction-local, advisory locks transaction-level, no cursors, no
    LISTEN), and asyncpg still rolls back an unfinished transaction. asyncpg's default reset would cost
    a round trip on every call."""


class Batcher(Generic[A, R]):
    """Group commit: the calls submitted during one event-loop iteration run as one statement.

    When a batch fails, its calls run again one by one, so a failure reaches only the call that caused it
    (a server that is down fails them all).
    """

    def __init__(self, run: Callable[[list[A]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: A) -> asyncio.Future[R]:
        """Queue one call; its future resolves once its statement committed (or with the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, future))
        return future

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            task = asyncio.ensure_future(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every batch in flight."""
        self._flush()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _execute(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, BackendUnavailableError):
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for one in batch:
                await self._execute([one])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # the caller may have been cancelled; the work is done regardless
                future.set_result(result)


class PostgresConnection:
    """The connection side of the PostgreSQL backend (see the module docstring).

    Args:
        url: ``postgres://user:password@host:port/database?schema=motia&pool_size=10`` (asyncpg's URL
            syntax; ``postgresql://`` too).
        schema: the schema when the URL names none (``[backend] prefix``, ``motia`` by default).
        clock: epoch seconds for leases and delays; PostgreSQL's own clock when None.
        identity: the owner recorded on every claim; by default ``worker_identity()`` (``host:pid``), read
            when the backend opens. The attribute of that name may be changed at any time.
    """

    def __init__(self, url: str, schema: str = DEFAULT_SCHEMA, clock: Clock | None = None,
                 identity: str | None = None) -> None:
        self.url = redact(url)
        self.clock = clock
        self._identity = identity
        self._dsn, self.schema, self.pool_size = parse_url(url, schema)
        self._where = _where(url)
        self.sql = Sql.build(self.schema)
        self.channel = channel(self.schema)
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening = asyncio.Lock()
        self._wakeups: dict[str, asyncio.Event] = {}  # per waiting step: set by a notification or a local write
        self._own_pids: set[int] = set()  # the server processes of the pool's connections

    @property
    def identity(self) -> str:
        """The owner this backend records on its claims (``host:pid`` unless set)."""
        return self._identity or worker_identity()

    @identity.setter
    def identity(self, value: str) -> None:
        self._identity = value

    # -- plumbing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except _UNREACHABLE as exc:
            raise BackendUnavailableError(f"postgres {self._where}: {type(exc).__name__}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise BackendError(f"postgres {self._where}: {type(exc).__name__}: {exc}") from exc

    @property
    def pool(self) -> asyncpg.Pool:
        """The open pool."""
        if self._pool is None:
            raise BackendError(f"postgres backend {self._where} is not open")
        return self._pool

    def time_arg(self) -> float | None:
        """The time argument of every statement: the injected clock, or None for the server's."""
        return None if self.clock is None else float(self.clock())

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with self._translate():
            return await self.pool.fetch(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        with self._translate():
            return await self.pool.fetchval(sql, *args)

    async def _count(self, sql: str, *args: Any) -> int:
        """Rows changed by one write statement."""
        with self._translate():
            status: str = await self.pool.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    def _wake(self, steps: Iterable[str]) -> None:
        for step in steps:
            event = self._wakeups.get(step)
            if event is not None:
                event.set()

    def _on_notify(self, conn: object, pid: int, chan: str, payload: object) -> None:
        if pid not in self._own_pids:  # this process's own writes woke their steps already
            self._wake([str(payload)])

    async def _on_connect(self, conn: asyncpg.Connection) -> None:
        """Each new pool connection: remember its server process, whose notifications are our own."""
        pid = conn.get_server_pid()
        self._own_pids.add(pid)
        conn.add_termination_listener(lambda _: self._own_pids.discard(pid))

    def _channels(self) -> list[tuple[str, Callable[[Any, int, str, Any], None]]]:
        """What the listening connection listens to: the queue's wake-ups (and, in subclasses, more)."""
        return [(self.channel, self._on_notify)]

    def _on_listener_lost(self, conn: object) -> None:
        self._listener = None
        self._wake(list(self._wakeups))  # notifications may be missed until it is back: look again

    async def _listen(self) -> None:
        """Start the listening connection when it is not running (on the first wait, and after a loss)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listening:
            if self._listener is not None and not self._listener.is_closed():
                return
            if self._pool is None:
                raise BackendError(f"postgres backend {self._where} is not open")
            with self._translate():
                conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT_S,
                                             server_settings={"application_name": "motia-py listener"})
                try:
                    for channel, callback in self._channels():
                        await conn.add_listener(channel, callback)
                except BaseException:
                    await conn.close()
                    raise
            if self._pool is None:  # closed while connecting
                await conn.close()
                return
            conn.add_termination_listener(self._on_listener_lost)
            self._listener = conn

    # -- open and close -------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, and create or migrate the schema. Raises BackendUnavailableError."""
        if self._pool is not None:
            return
        if self._identity is None:
            self._identity = worker_identity()  # once, in the process that uses the pool
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=0, max_size=self.pool_size, timeout=_CONNECT_TIMEOUT_S,  # min 0: no retry noise
                command_timeout=_COMMAND_TIMEOUT_S, max_inactive_connection_lifetime=300.0,
                server_settings={"application_name": "motia-py",
                                 "default_transaction_isolation": "read committed"}, init=self._on_connect,
                reset=_nothing_to_reset)
        except (*_UNREACHABLE, asyncpg.PostgresError, ValueError) as exc:
            raise BackendUnavailableError(f"cannot reach PostgreSQL at {self._where}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn, self.schema)
        except _UNREACHABLE as exc:
            await pool.close()
            raise BackendUnavailableError(f"cannot reach PostgreSQL at {self._where}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise BackendUnavailableError(
                f"cannot create the schema {self.schema!r} on PostgreSQL at {self._where}: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the listening connection and the pool (after the calls in flight)."""
        self._wake(list(self._wakeups))  # pending waits return now, not at their timeout
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove_termination_listener(self._on_listener_lost)
            with contextlib.suppress(*_UNREACHABLE, asyncpg.PostgresError):
                await listener.close(timeout=_CONNECT_TIMEOUT_S)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(*_UNREACHABLE, asyncpg.PostgresError):
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT_S)
            pool.terminate()
