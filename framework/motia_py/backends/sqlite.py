"""The SQLite backend (``sqlite:///.motia/motia.db``): queue, dead letters, state and leases in one file.

The file is in WAL mode and may be shared by several worker processes on one machine. Every batch that
writes runs in a ``BEGIN IMMEDIATE`` transaction, so two processes never lease the same row; commits
survive a crash of the process (``synchronous=NORMAL``), not a power cut.

One thread owns the connection. The calls made during one event-loop iteration, plus whatever queued up
while the thread was busy, run in one transaction (group commit), and a run of like calls (publishes,
completes) runs as a few multi-row statements: a hundred concurrent ``complete()`` calls cost a handful
of statements and one commit. Few statements matter as much as few commits: each one hands the GIL to
the event loop and back. When a call raises, the batch is rolled back and its calls run again one
transaction each, so a failure reaches only the call that caused it.

While a delivery is leased its ``available_at`` holds the lease expiry, which keeps the rows in flight
out of the due range that every claim scans. Expired leases are claimed first, as the memory backend
does, through a small index of the leased rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

from ..errors import BackendError, BackendUnavailableError
from ..types import Clock
from ._sqlite_thread import Connection, Op
from .base import DeadLetter, Delivery, Envelope, Outgoing, QueueStats, TraceRun, new_id
from .registry import BackendOptions

A = TypeVar("A")
R = TypeVar("R")
Row = tuple[Any, ...]

SCHEMA_VERSION: Final = 3  # 2: traces; 3: traceparent on deliveries and dead letters
_BUSY_TIMEOUT_MS: Final = 5000
_POLL_S: Final = 0.025  # how often waiting steps look for commits made by other connections
_CHUNK: Final = 64  # rows per multi-row statement (64 x 12 columns stays under SQLite's old 999 limit)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,     -- the rowid: a new row always gets max + 1, which keeps the order
    id TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL,
    emitted_at REAL NOT NULL, group_id TEXT, source TEXT, traceparent TEXT,
    fifo_group TEXT,             -- NULL on standard queues; the message group ('' if none) on FIFO ones
    available_at REAL NOT NULL,  -- when it is due; while leased, when the lease expires
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,            -- NULL unless leased
    first_delivered_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (step, available_at) WHERE fifo_group IS NULL;
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (step, available_at)
    WHERE fifo_group IS NULL AND lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_fifo ON deliveries (step, fifo_group, seq) WHERE fifo_group IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL,
    emitted_at REAL NOT NULL, group_id TEXT, source TEXT, traceparent TEXT,
    attempts INTEGER NOT NULL, error TEXT NOT NULL, traceback TEXT NOT NULL,
    failed_at REAL NOT NULL, first_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS dead_letters_failed ON dead_letters (failed_at);
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, grp TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, grp, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_runs (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, run TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trace_runs_trace ON trace_runs (trace_id, seq);
CREATE TABLE IF NOT EXISTS traces (trace_id TEXT PRIMARY KEY, last REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_last ON traces (last);
"""

_ENV: Final = "event_id, topic, data, trace_id, emitted_at, group_id, source, traceparent"  # Envelope's order
_IN: Final = "(" + ", ".join("?" * _CHUNK) + ")"  # padded with NULLs, which match nothing
_SELECT: Final = f"SELECT seq, id, attempts, first_delivered_at, {_ENV} FROM deliveries"
_CLAIM_EXPIRED: Final = (f"{_SELECT} WHERE step = :step AND fifo_group IS NULL AND lease_until IS NOT NULL "
                         "AND available_at <= :now ORDER BY available_at, seq LIMIT :limit")
_CLAIM_DUE: Final = (f"{_SELECT} WHERE step = :step AND fifo_group IS NULL AND available_at <= :now "
                     "AND lease_until IS NULL ORDER BY available_at, seq LIMIT :limit")
# The head (lowest seq) of every message group of a step: a skip-scan of the FIFO index, one probe per
# group, so a long group costs nothing.
_FIFO_HEADS: Final = """
WITH RECURSIVE grp(g) AS (
    SELECT (SELECT MIN(fifo_group) FROM deliveries WHERE step = :step AND fifo_group IS NOT NULL)
    UNION ALL
    SELECT (SELECT MIN(fifo_group) FROM deliveries WHERE step = :step AND fifo_group > grp.g)
    FROM grp WHERE grp.g IS NOT NULL
), head(seq) AS (
    SELECT (SELECT MIN(seq) FROM deliveries WHERE step = :step AND fifo_group = grp.g)
    FROM grp WHERE grp.g IS NOT NULL
)
"""
_CLAIM_FIFO: Final = (_FIFO_HEADS + f"SELECT d.seq, d.id, d.attempts, d.first_delivered_at, {_ENV} "
                      "FROM head JOIN deliveries d ON d.seq = head.seq "
                      "WHERE d.available_at <= :now ORDER BY d.seq LIMIT :limit")
_LEASE: Final = ("UPDATE deliveries SET attempts = attempts + 1, lease_until = ?, available_at = ?, "
                 f"first_delivered_at = COALESCE(first_delivered_at, ?) WHERE seq IN {_IN}")
_LEASED: Final = "id = ? AND attempts = ? AND lease_until IS NOT NULL"  # still leased by this attempt
_DEAD_COLS: Final = f"id, step, {_ENV}, attempts, error, traceback, failed_at, first_attempt_at"


def _insert_sql(n: int) -> str:
    return (f"INSERT INTO deliveries (id, step, {_ENV}, fifo_group, available_at) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n))


_INSERTS: Final = {n: _insert_sql(n) for n in (_CHUNK, 16, 4, 1)}


def resolve_path(url: str, root: Path) -> Path:
    """The database file of ``sqlite:///relative/path.db`` (against ``root``) or ``sqlite:////abs.db``.

    Raises:
        BackendUnavailableError: the URL names no file.
    """
    rest = url.removeprefix("sqlite://").split("?", 1)[0]
    if rest == url or not rest.startswith("/") or rest == "/":
        raise BackendUnavailableError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = Path(unquote(rest[1:]))
    return path if path.is_absolute() else root / path


def _connect(path: Path) -> sqlite3.Connection:
    """Open (and create or migrate) the file. Processes starting together on a new file race for the
    switch to WAL and the schema; SQLite answers "database is locked" to the loser at once, without
    using the busy timeout, so that case is retried for as long as the busy timeout."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            return _connect_once(path)
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # on the connection's own thread, never the event loop
            delay = min(0.2, delay * 2)


def _connect_once(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendUnavailableError(f"{path}: cannot switch to WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackendUnavailableError(
                f"{path}: schema version {version} is newer than this motia-py supports ({SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")  # new tables and indexes (IF NOT EXISTS)
            conn.execute("BEGIN IMMEDIATE")  # columns added since version 1, checked under the write lock
            for table in ("deliveries", "dead_letters"):  # columns added since version 1
                columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if "traceparent" not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN traceparent TEXT")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


# -- operations (run on the connection's thread) --------------------------------------------------
def _each(fn: Callable[[sqlite3.Connection, A], R]) -> Op[A, R]:
    """An operation whose calls run one after the other."""

    def run(conn: sqlite3.Connection, args: Sequence[A]) -> list[R]:
        return [fn(conn, arg) for arg in args]

    return run


def _padded(values: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(values), _CHUNK):
        chunk = values[i:i + _CHUNK]
        yield chunk + [None] * (_CHUNK - len(chunk))


def _insert(conn: sqlite3.Connection, rows: list[Row]) -> None:
    i = 0
    for n in _INSERTS:  # whole chunks of 64, 16, 4 and 1 rows: a few cached statements, few steps
        while len(rows) - i >= n:
            conn.execute(_INSERTS[n], [v for row in rows[i:i + n] for v in row])
            i += n


def _publish_run(conn: sqlite3.Connection, args: Sequence[list[Row]]) -> list[None]:
    _insert(conn, [row for rows in args for row in rows])
    return [None] * len(args)


def _complete_run(conn: sqlite3.Connection, args: Sequence[tuple[Delivery, list[Row]]]) -> list[tuple[bool, bool]]:
    """(acknowledged, was on a FIFO queue) per call; the outboxes of the acknowledged ones are published."""
    leased: dict[str, tuple[int, int, bool]] = {}
    for chunk in _padded([d.id for d, _ in args]):
        for seq, id_, attempts, fifo in conn.execute(
                f"SELECT seq, id, attempts, fifo_group IS NOT NULL FROM deliveries "
                f"WHERE lease_until IS NOT NULL AND id IN {_IN}", chunk):
            leased[id_] = (seq, attempts, bool(fifo))
    results: list[tuple[bool, bool]] = []
    done: list[int] = []
    rows: list[Row] = []
    for d, outbox in args:
        hit = leased.get(d.id)
        if hit is None or hit[1] != d.attempt:
            results.append((False, False))
            continue
        del leased[d.id]  # a second complete() of the same attempt loses
        done.append(hit[0])
        rows += outbox
        results.append((True, hit[2]))
    for chunk in _padded(done):
        conn.execute(f"DELETE FROM deliveries WHERE seq IN {_IN}", chunk)
    _insert(conn, rows)
    return results


@_each
def _claim(conn: sqlite3.Connection, arg: tuple[str, int, float, float]) -> list[Delivery]:
    step, limit, lease_s, now = arg
    params = {"step": step, "now": now, "limit": limit}
    rows: list[Row] = []
    for sql in (_CLAIM_EXPIRED, _CLAIM_DUE, _CLAIM_FIFO):  # the memory backend's order
        if len(rows) == limit:
            break
        params["limit"] = limit - len(rows)
        rows += conn.execute(sql, params).fetchall()
    until = now + lease_s
    for chunk in _padded([row[0] for row in rows]):
        conn.execute(_LEASE, [until, until, now, *chunk])
    return [Delivery(id=row[1], step=step, envelope=Envelope(*row[4:12]), attempt=row[2] + 1,
                     first_delivered_at=now if row[3] is None else row[3]) for row in rows]


@_each
def _retry(conn: sqlite3.Connection, arg: tuple[Delivery, float]) -> bool:
    d, available_at = arg
    return conn.execute(f"UPDATE deliveries SET lease_until = NULL, available_at = ? WHERE {_LEASED}",
                        (available_at, d.id, d.attempt)).rowcount == 1


@_each
def _dead_letter(conn: sqlite3.Connection, arg: tuple[Delivery, str, str, float]) -> bool:
    """Whether the delivery was on a FIFO queue (its group moves on); False too when the lease was lost."""
    d, error, traceback, now = arg
    row = conn.execute(f"SELECT fifo_group IS NOT NULL FROM deliveries WHERE {_LEASED}", (d.id, d.attempt)).fetchone()
    if row is None:
        return False
    conn.execute(f"INSERT INTO dead_letters ({_DEAD_COLS}) SELECT id, step, {_ENV}, attempts, ?, ?, ?, "
                 "first_delivered_at FROM deliveries WHERE id = ?", (error, traceback, now, d.id))
    conn.execute("DELETE FROM deliveries WHERE id = ?", (d.id,))
    return bool(row[0])


def _next_due(conn: sqlite3.Connection, step: str) -> float | None:
    """The earliest due time (or lease expiry) among ``step``'s standard rows and FIFO heads."""
    standard = conn.execute("SELECT MIN(available_at) FROM deliveries WHERE step = ? AND fifo_group IS NULL",
                            (step,)).fetchone()[0]
    fifo = conn.execute(_FIFO_HEADS + "SELECT MIN(d.available_at) FROM head JOIN deliveries d ON d.seq = head.seq",
                        {"step": step}).fetchone()[0]
    times = [t for t in (standard, fifo) if t is not None]
    return min(times) if times else None


@_each
def _due_times(conn: sqlite3.Connection, arg: tuple[int | None, tuple[str, ...]]
               ) -> tuple[int, dict[str, float | None] | None]:
    """(data_version, next due time per step); the times are looked up only when the version differs
    from the one given, i.e. another connection committed since (None otherwise)."""
    seen, steps = arg
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version, (None if version == seen else {step: _next_due(conn, step) for step in steps})


@_each
def _stats(conn: sqlite3.Connection, now: float) -> QueueStats:
    ready = delayed = leased = 0
    per_step: dict[str, int] = {}
    due: list[float] = []
    for step, n_ready, n_delayed, n_leased, lease_min, delayed_min in conn.execute(
        "SELECT step, SUM(lease_until IS NULL AND available_at <= :now), "
        "SUM(lease_until IS NULL AND available_at > :now), SUM(lease_until IS NOT NULL), MIN(lease_until), "
        "MIN(CASE WHEN fifo_group IS NULL AND lease_until IS NULL AND available_at > :now "
        "THEN available_at END) FROM deliveries GROUP BY step", {"now": now}):
        ready, delayed, leased = ready + n_ready, delayed + n_delayed, leased + n_leased
        per_step[step] = n_ready + n_delayed + n_leased
        due += [t for t in (lease_min, delayed_min) if t is not None]
    # a FIFO group's delayed head is due at its time; the rows behind it wait for the head
    fifo_min = conn.execute(
        "SELECT MIN(d.available_at) FROM deliveries d WHERE d.fifo_group IS NOT NULL AND d.lease_until IS NULL "
        "AND d.available_at > ? AND d.seq = (SELECT MIN(seq) FROM deliveries h "
        "WHERE h.step = d.step AND h.fifo_group = d.fifo_group)", (now,)).fetchone()[0]
    if fifo_min is not None:
        due.append(fifo_min)
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    return QueueStats(ready=ready, delayed=delayed, leased=leased, dead=dead,
                      next_due_at=min(due) if due else None, per_step=per_step)


@_each
def _dlq_replay(conn: sqlite3.Connection, arg: tuple[str, float]) -> str | None:
    """The step the dead letter went back to (as a standard delivery, like memory's), or None."""
    dead_id, now = arg
    row = conn.execute(f"SELECT step, {_ENV} FROM dead_letters WHERE id = ?", (dead_id,)).fetchone()
    if row is None:
        return None
    conn.execute(_INSERTS[1], (new_id(), *row, None, now))
    conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
    return str(row[0])


@_each
def _state_cas(conn: sqlite3.Connection, arg: tuple[str, str, str, str | None, str | None]) -> bool:
    *where, expected, new = arg
    row = conn.execute("SELECT value FROM state WHERE namespace = ? AND grp = ? AND key = ?", where).fetchone()
    if (None if row is None else row[0]) != expected:
        return False
    if new is None:
        conn.execute("DELETE FROM state WHERE namespace = ? AND grp = ? AND key = ?", where)
    else:
        conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (*where, new))
    return True


@_each
def _acquire(conn: sqlite3.Connection, arg: tuple[str, str, float, float]) -> bool:
    key, owner, ttl_s, now = arg
    conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))  # expired leases of every key
    row = conn.execute("SELECT owner FROM leases WHERE key = ?", (key,)).fetchone()
    if row is not None and row[0] != owner:
        return False
    conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (key, owner, now + ttl_s))
    return True


@_each
def _count(conn: sqlite3.Connection, q: tuple[str, Sequence[Any]]) -> int:
    return conn.execute(*q).rowcount


@_each
def _fetch(conn: sqlite3.Connection, q: tuple[str, Sequence[Any]]) -> list[Row]:
    return conn.execute(*q).fetchall()


@_each
def _traces_add(conn: sqlite3.Connection, runs: Sequence[TraceRun]) -> None:
    conn.executemany("INSERT INTO trace_runs (trace_id, run) VALUES (?, ?)", [(r[0], r[2]) for r in runs])
    conn.executemany("INSERT INTO traces VALUES (?, ?) ON CONFLICT (trace_id) DO UPDATE SET last = "
                     "MAX(last, excluded.last)", [(r[0], r[1]) for r in runs])


@_each
def _traces_prune(conn: sqlite3.Connection, arg: tuple[float, int]) -> int:
    before, keep = arg
    n = conn.execute("DELETE FROM traces WHERE last < ? OR trace_id NOT IN "
                     "(SELECT trace_id FROM traces ORDER BY last DESC LIMIT ?)", (before, keep)).rowcount
    if n:
        conn.execute("DELETE FROM trace_runs WHERE trace_id NOT IN (SELECT trace_id FROM traces)")
    return n


@_each
def _extend(conn: sqlite3.Connection, arg: tuple[float, list[Delivery]]) -> None:
    until, deliveries = arg
    conn.executemany(f"UPDATE deliveries SET lease_until = ?, available_at = ? WHERE {_LEASED}",
                     [(until, until, d.id, d.attempt) for d in deliveries])


class SqliteBackend:
    """Durable backend on one SQLite file in WAL mode, shared by the worker processes of one machine.

    Args:
        url: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
        path: the database file (``url`` resolved against the project root).
        clock: epoch seconds; ``time.time`` by default.
    """

    def __init__(self, url: str, path: Path, clock: Clock | None = None) -> None:
        self.url = url
        self.path = path
        self.clock: Clock = clock or time.time
        self._db = Connection(path, _connect)
        self._wakeups: dict[str, asyncio.Event] = {}  # per step: set by this object's publishes
        self._waiting: dict[str, int] = {}  # steps with a pending wait(), and how many
        self._due: dict[str, float | None] = {}  # the next due time of each waiting step, as last read
        self._poller: asyncio.Task[None] | None = None

    async def _run(self, op: Op[A, R], arg: A, *, write: bool = True) -> R:
        try:
            return await self._db.submit(op, arg, write)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite backend {self.path}: {exc}") from exc

    async def _fetch(self, sql: str, *params: Any) -> list[Row]:
        return await self._run(_fetch, (sql, params), write=False)

    async def _count(self, sql: str, *params: Any) -> int:
        """Rows changed by one write statement."""
        return await self._run(_count, (sql, params))

    def _wake(self, steps: Iterable[str]) -> None:
        for step in steps:
            event = self._wakeups.get(step)
            if event is not None:
                event.set()

    async def open(self) -> None:
        """Create the file, its directory and the schema. Raises BackendUnavailableError."""
        if self._db.open:
            return
        try:
            await self._db.start()
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailableError(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Finish the queued calls and close the file; deliveries stay queued."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self._db.stop()

    # -- queue ----------------------------------------------------------------------------------
    @staticmethod
    def _rows(items: Sequence[Outgoing], now: float) -> list[Row]:
        return [(new_id(), t.step, e.id, e.topic, e.data_json, e.trace_id, e.emitted_at, e.group_id, e.source,
                 e.traceparent, (e.group_id or "") if t.fifo else None, now + t.delay_s)
                for out in items for e in (out.envelope,) for t in out.targets]

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item, in one transaction."""
        rows = self._rows(items, self.clock())
        if rows:
            await self._run(_publish_run, rows)
            self._wake(r[1] for r in rows)

    async def claim(self, step: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step``, oldest first (FIFO groups: their head only)."""
        if limit <= 0:
            return []
        return await self._run(_claim, (step, limit, lease_s, self.clock()))

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Delete the delivery and publish ``outgoing`` in one transaction; False when the lease was lost."""
        rows = self._rows(outgoing, self.clock()) if outgoing else []
        ok, fifo = await self._run(_complete_run, (delivery, rows))
        if ok:
            self._wake([r[1] for r in rows] + ([delivery.step] if fifo else []))
        return ok

    async def retry(self, delivery: Delivery, delay_s: float, error: str = "") -> None:
        """Release the lease; the delivery is due again after ``delay_s``."""
        if await self._run(_retry, (delivery, self.clock() + delay_s)):
            self._wake([delivery.step])

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str) -> None:
        """Move the delivery to the dead-letter table (nothing happens when the lease was lost)."""
        if await self._run(_dead_letter, (delivery, error, traceback, self.clock())):
            self._wake([delivery.step])  # the next event of its FIFO group is free now

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future."""
        if deliveries:
            await self._run(_extend, (self.clock() + lease_s, list(deliveries)))

    async def wait(self, step: str, timeout_s: float) -> None:
        """Return when ``step`` may have a due delivery, or after ``timeout_s``.

        A publish through this object wakes it at once; commits by other connections (other worker
        processes) are noticed by one poller per backend within ``_POLL_S``.
        """
        event = self._wakeups.get(step)
        if event is None:
            event = self._wakeups[step] = asyncio.Event()
        self._waiting[step] = self._waiting.get(step, 0) + 1
        try:
            if not event.is_set():
                _, dues = await self._run(_due_times, (None, (step,)), write=False)
                due = self._due[step] = (dues or {}).get(step)
                if due is not None:
                    timeout_s = min(timeout_s, due - self.clock())
                if timeout_s > 0 and not event.is_set():
                    if self._poller is None:
                        self._poller = asyncio.create_task(self._poll(), name=f"motia-sqlite-poll:{self.path.name}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            self._waiting[step] -= 1
            if not self._waiting[step]:
                del self._waiting[step]
                self._due.pop(step, None)
            event.clear()

    async def _poll(self) -> None:
        """While wait() calls are pending, look for commits by other connections every ``_POLL_S`` and
        wake the waiting steps that have something due."""
        version: int | None = None
        try:
            while self._waiting:
                await asyncio.sleep(_POLL_S)
                steps = tuple(self._waiting)
                seen, dues = await self._run(_due_times, (version, steps), write=False)
                version = seen
                self._due.update((s, dues[s]) for s in steps if dues and s in self._waiting)
                now = self.clock()
                for s in steps:
                    due = self._due.get(s)
                    if due is not None and due <= now:
                        self._wakeups[s].set()
        except BackendError:
            pass  # closed (or failing): the waiters still return at their timeout
        finally:
            self._poller = None

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries."""
        return await self._run(_stats, self.clock(), write=False)

    # -- dead letters ---------------------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        rows = await self._fetch(f"SELECT {_DEAD_COLS} FROM dead_letters ORDER BY failed_at DESC, rowid LIMIT ?", limit)
        return [_dead(r) for r in rows]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        rows = await self._fetch(f"SELECT {_DEAD_COLS} FROM dead_letters WHERE id = ?", dead_id)
        return _dead(rows[0]) if rows else None

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's queue with fresh attempts; False when unknown."""
        step = await self._run(_dlq_replay, (dead_id, self.clock()))
        if step is not None:
            self._wake([step])
        return step is not None

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""
        return await self._count("DELETE FROM dead_letters WHERE id = ?", dead_id) == 1

    # -- state ----------------------------------------------------------------------------------
    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """The JSON text at (namespace, group, key), or None."""
        rows = await self._fetch("SELECT value FROM state WHERE namespace = ? AND grp = ? AND key = ?",
                                 namespace, group, key)
        return str(rows[0][0]) if rows else None

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text."""
        await self._count("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", namespace, group, key, value_json)

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key; False when absent."""
        return await self._count("DELETE FROM state WHERE namespace = ? AND grp = ? AND key = ?",
                                 namespace, group, key) == 1

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text."""
        rows = await self._fetch("SELECT key, value FROM state WHERE namespace = ? AND grp = ?", namespace, group)
        return {str(k): str(v) for k, v in rows}

    async def state_groups(self, namespace: str) -> list[str]:
        """The groups of a namespace that hold at least one key, sorted."""
        rows = await self._fetch("SELECT DISTINCT grp FROM state WHERE namespace = ? ORDER BY grp", namespace)
        return [str(r[0]) for r in rows]

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete every key of a group."""
        await self._count("DELETE FROM state WHERE namespace = ? AND grp = ?", namespace, group)

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Store ``new_json`` (delete when None) only if the value is ``expected_json`` (None = absent)."""
        return await self._run(_state_cas, (namespace, group, key, expected_json, new_json))

    # -- leases and metadata ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease; False when another owner holds it."""
        return await self._run(_acquire, (key, owner, ttl_s, self.clock()))

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner``."""
        await self._count("DELETE FROM leases WHERE key = ? AND owner = ?", key, owner)

    async def meta_get(self, key: str) -> str | None:
        """Metadata text, or None."""
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    async def meta_set(self, key: str, value: str) -> None:
        """Store metadata text."""
        await self._count("INSERT OR REPLACE INTO meta VALUES (?, ?)", key, value)

    # -- traces ---------------------------------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records (one transaction)."""
        if runs:
            await self._run(_traces_add, list(runs))

    async def traces_get(self, trace_id: str) -> list[str]:
        """Run records of one trace, oldest first."""
        rows = await self._fetch("SELECT run FROM trace_runs WHERE trace_id = ? ORDER BY seq", trace_id)
        return [str(r[0]) for r in rows]

    async def traces_recent(self, limit: int) -> list[str]:
        """Trace ids, most recently active first."""
        rows = await self._fetch("SELECT trace_id FROM traces ORDER BY last DESC LIMIT ?", limit)
        return [str(r[0]) for r in rows]

    async def traces_prune(self, before: float, keep: int) -> int:
        """Retention by age and count."""
        return await self._run(_traces_prune, (before, keep))

def _dead(row: Row) -> DeadLetter:
    return DeadLetter(id=row[0], step=row[1], envelope=Envelope(*row[2:10]), attempts=row[10], error=row[11],
                      traceback=row[12], failed_at=row[13], first_attempt_at=row[14])


def create_backend(url: str, options: BackendOptions) -> SqliteBackend:
    """Entry point for ``sqlite://``: a relative path resolves against the project root."""
    return SqliteBackend(url, resolve_path(url, options.root), clock=options.clock)
