"""The SQLite backend (``sqlite:///.motia/motia.db``): every store in one file.

The file is in WAL mode and may be shared by several worker processes on one machine. Every batch that
writes runs in a ``BEGIN IMMEDIATE`` transaction, so two processes never lease the same row; commits
survive a crash of the process (``synchronous=NORMAL``), not a power cut.

One thread owns the connection (:mod:`._sqlite_thread`). The calls made during one event-loop iteration,
plus whatever queued up while the thread was busy, run in one transaction (group commit), and a run of
like calls (publishes, completes) runs as a few multi-row statements: a hundred concurrent
``complete()`` calls cost a handful of statements and one commit. Few statements matter as much as few
commits: each one hands the GIL to the event loop and back. When a call raises, the batch is rolled
back and its calls run again one transaction each, so a failure reaches only the call that caused it.
The calls that end an attempt (complete, retry, dead letter, hand back) and lease renewals are urgent:
they are committed in a transaction of their own ahead of any claims, publishes and reads queued with
them, and their callers resume only after that commit.

The file's schema and migrations are in :mod:`.sqlite_schema`, the queue's SQL in :mod:`.sqlite_queue`;
the state, lease, metadata and trace operations are here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BackendError, BackendUnavailableError
from ..types import Clock
from . import sqlite_flow as flow
from . import sqlite_handles as sh
from . import sqlite_queue as q
from ._sqlite_thread import Connection, Op, Row, each
from .records import (
    DeadLetter,
    Delivery,
    FlowControl,
    Outgoing,
    QueueStats,
    StateRead,
    StateWrite,
    StepQueueStats,
    TraceRun,
    TxResult,
    worker_identity,
)
from .registry import BackendOptions
from .sqlite_handle_store import SqliteHandles
from .sqlite_realtime import SqliteRealtime
from .sqlite_schema import connect, damage_hint, resolve_path
from .sqlite_waits import SAFETY_POLL_S, SqliteWaits

A = TypeVar("A")
R = TypeVar("R")



# -- state, lease, metadata and trace operations (run on the connection's thread) ------------------
@each
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


@each
def _acquire(conn: sqlite3.Connection, arg: tuple[str, str, float, float]) -> bool:
    key, owner, ttl_s, now = arg
    conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))  # expired leases of every key
    row = conn.execute("SELECT owner FROM leases WHERE key = ?", (key,)).fetchone()
    if row is not None and row[0] != owner:
        return False
    conn.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (key, owner, now + ttl_s))
    return True


@each
def _count(conn: sqlite3.Connection, query: tuple[str, Sequence[Any]]) -> int:
    return conn.execute(*query).rowcount


@each
def _fetch(conn: sqlite3.Connection, query: tuple[str, Sequence[Any]]) -> list[Row]:
    return conn.execute(*query).fetchall()


@each
def _traces_add(conn: sqlite3.Connection, runs: Sequence[TraceRun]) -> None:
    conn.executemany("INSERT INTO trace_runs (trace_id, run) VALUES (?, ?)", [(r[0], r[2]) for r in runs])
    conn.executemany("INSERT INTO traces VALUES (?, ?) ON CONFLICT (trace_id) DO UPDATE SET last = "
                     "MAX(last, excluded.last)", [(r[0], r[1]) for r in runs])


@each
def _traces_prune(conn: sqlite3.Connection, arg: tuple[float, int]) -> int:
    before, keep = arg
    n = conn.execute("DELETE FROM traces WHERE last < ? OR trace_id NOT IN "
                     "(SELECT trace_id FROM traces ORDER BY last DESC LIMIT ?)", (before, keep)).rowcount
    if n:
        conn.execute("DELETE FROM trace_runs WHERE trace_id NOT IN (SELECT trace_id FROM traces)")
    return n


@each
def _meta_cas(conn: sqlite3.Connection, arg: tuple[str, str | None, str]) -> bool:
    key, expected, new = arg
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if (None if row is None else row[0]) != expected:
        return False
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, new))
    return True


class SqliteBackend(SqliteWaits, SqliteRealtime, SqliteHandles):
    """Durable backend on one SQLite file in WAL mode, shared by the worker processes of one machine.
    Its waits are in :class:`.sqlite_waits.SqliteWaits`, its pub/sub and state changes in
    :class:`.sqlite_realtime.SqliteRealtime`.

    Args:
        url: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
        path: the database file (``url`` resolved against the project root).
        clock: epoch seconds; ``time.time`` by default.
        identity: the owner recorded on every claim; by default ``worker_identity()`` (``host:pid``),
            read when the backend opens. The attribute of that name may be changed at any time.
        poll_s: how often the WAL watcher looks for other processes' commits that came with no message
            (the safety net of :mod:`.sqlite_waits`).
    """

    def __init__(self, url: str, path: Path, clock: Clock | None = None, identity: str | None = None, *,
                 poll_s: float = SAFETY_POLL_S) -> None:
        self.url = url
        self.path = path
        self.clock: Clock = clock or time.time
        self._identity = identity
        self._db = Connection(path, connect)
        self._init_waits(poll_s)

    async def _run(self, op: Op[A, R], arg: A, *, write: bool = True, urgent: bool = False,
                   inline: bool = False) -> R:
        """Run ``op`` on the connection's thread. ``urgent`` calls (the end of an attempt, lease renewals)
        are committed ahead of the other calls queued with them; short ``inline`` ones run at once when
        the thread is idle (see :mod:`._sqlite_thread`)."""
        try:
            return await self._db.submit(op, arg, write, urgent, inline)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite backend {self.path}: {exc}{damage_hint(exc, self.path)}") from exc

    async def _fetch(self, sql: str, *params: Any) -> list[Row]:
        return await self._run(_fetch, (sql, params), write=False)

    async def _count(self, sql: str, *params: Any) -> int:
        """Rows changed by one write statement."""
        return await self._run(_count, (sql, params))

    @property
    def identity(self) -> str:
        """The owner this backend records on its claims (``host:pid`` unless set)."""
        return self._identity or worker_identity()

    @identity.setter
    def identity(self, value: str) -> None:
        self._identity = value

    async def open(self) -> None:
        """Create the file, its directory and the schema. Raises BackendUnavailableError."""
        if self._db.open:
            return
        if self._identity is None:
            self._identity = worker_identity()  # once, in the process that uses the file
        self._cross.reopen()
        try:
            await self._db.start()
        except (OSError, sqlite3.Error) as exc:
            hint = damage_hint(exc, self.path) if isinstance(exc, sqlite3.Error) else ""
            raise BackendUnavailableError(f"cannot open SQLite database {self.path}: {exc}{hint}") from exc

    async def close(self) -> None:
        """Finish the queued calls and close the file; deliveries stay queued."""
        await self._close_waits()
        await self._close_realtime()
        await self._db.stop()

    # -- queue ----------------------------------------------------------------------------------
    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item (but of those whose key is held), in one transaction."""
        now = self.clock()
        rows = q.delivery_rows(items, now)
        if rows:
            keys = q.key_rows(items, now)
            if keys:
                rows = sh.without(rows, await self._run(q.publish_keyed, (rows, keys, now)))
            else:
                await self._run(q.publish_run, rows, inline=True)
            self._wake_rows(rows, now)

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step``, highest priority then oldest first (FIFO groups:
        their head only), within ``control`` (see :mod:`.sqlite_flow`)."""
        if limit <= 0:
            return []
        if control is None:
            # At once on this thread when the connection's is idle, unless another process named the step
            # since its last claim: that process is likely writing again (a producer emitting one event
            # after another), and a claim racing it for the lock costs it more than the hop saves here.
            inline = step not in self._told_of
            self._told_of.discard(step)
            got, self._due[step] = await self._run(
                q.claim_noting_due, (step, limit, lease_s, self.clock(), self.identity), inline=inline)
            return got  # its due time is known again: a mark by another change stays, and is read
        got = await self._run(flow.claim, (step, limit, lease_s, self.clock, self.identity, control))
        if got:
            self._dirty.add(step)  # its leases are due times now
        return got

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Undo the claims of deliveries that never started (see :func:`.sqlite_queue.hand_back`)."""
        if not deliveries:
            return
        if await self._run(q.hand_back, (list(deliveries), self.clock()), urgent=True):
            self._wake({d.step for d in deliveries})
        self._wake({d.step for d in deliveries if d.limited})

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Delete the delivery and publish ``outgoing`` in one transaction; False when the lease was lost."""
        return await self.complete_with_result(delivery, outgoing, None)

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """:meth:`complete`, recording ``result_json`` in the delivery's finished record."""
        now = self.clock()
        rows = q.delivery_rows(outgoing, now) if outgoing else []
        keys = q.key_rows(outgoing, now) if outgoing else []
        # With events for other steps it runs at once when the connection's thread is idle: the next
        # step of a chain waits for it. Without, it goes to the thread, with the others queued meanwhile
        # (one transaction for many: a drain's throughput).
        ok, fifo = await self._run(q.complete_run, (delivery, rows, result_json, keys, now), urgent=True,
                                   inline=bool(rows))
        # The step's due time as last read (by its claim, say) is not read again: with the row gone the
        # true one is no earlier, so at worst a wait wakes once, early, and the claim that follows reads
        # it afresh. Work this change makes due for the step (a row for it, the next of a FIFO group, a
        # free slot) marks it below.
        if ok:
            self._wake_rows(rows, now, [delivery.step] if fifo or delivery.limited else [])
        return ok

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Release the lease; the delivery is due again after ``delay_s``."""
        if await self._run(q.retry, (delivery, self.clock() + delay_s), urgent=True):  # due again, or a slot
            self._wake([delivery.step] if delay_s <= 0 or delivery.limited else [], [delivery.step])

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                          ) -> None:
        """Move the delivery to the dead-letter table (nothing happens when the lease was lost)."""
        if await self._run(q.dead_letter, (delivery, error, traceback, self.clock(), attempts), urgent=True
                           ) or delivery.limited:
            self._wake([delivery.step])  # the next event of its FIFO group is free now, or a slot

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future."""
        if deliveries:
            await self._run(q.extend, (self.clock() + lease_s, list(deliveries)), urgent=True)
            self._dirty.update(d.step for d in deliveries)

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries."""
        return await self._run(q.stats, self.clock(), write=False)

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """Per step: ready, delayed, leased and dead counts, the oldest ready delivery's due time, and (with
        its control) the ready ones held back by a limit."""
        return await self._run(flow.step_stats, (self.clock(), dict(controls or {})), write=False)

    # -- dead letters ---------------------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        rows = await self._fetch(f"SELECT {q.DEAD_COLS} FROM dead_letters ORDER BY failed_at DESC, rowid LIMIT ?",
                                 limit)
        return [q.dead_from_row(r) for r in rows]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        rows = await self._fetch(f"SELECT {q.DEAD_COLS} FROM dead_letters WHERE id = ?", dead_id)
        return q.dead_from_row(rows[0]) if rows else None

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's queue with fresh attempts; False when unknown."""
        step = await self._run(q.dlq_replay, (dead_id, self.clock()))
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

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Store ``new`` only if the value is ``expected`` (None: absent), in one transaction."""
        return await self._run(_meta_cas, (key, expected, new))

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


    # -- transactional commits ------------------------------------------------------------------
    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """Check the lease and the reads, apply the writes, acknowledge and publish, in one transaction
        committed ahead of queued claims and publishes (see :mod:`.sqlite_tx`; with job handles:
        :meth:`complete_tx_with_result`)."""
        return await self.complete_tx_with_result(delivery, outgoing, writes, reads, None)


def create_backend(url: str, options: BackendOptions) -> SqliteBackend:
    """Entry point for ``sqlite://``: a relative path resolves against the project root."""
    return SqliteBackend(url, resolve_path(url, options.root), clock=options.clock)
