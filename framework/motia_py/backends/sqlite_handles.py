"""The SQLite backend's job-handle store: its SQL, and the operations that run on the connection's thread.

A live delivery is its ``deliveries`` row (found through the ``deliveries_event`` index); the ``handles``
table holds one row per (event, step) for what the row does not: the finished record (``state`` set, in
the transaction that deleted the delivery), the last error of a failed attempt and the latest progress
(``state`` NULL while the delivery lives). ``cancels`` marks cancelled events whose deliveries may still
be leased, and ``keys`` holds idempotency keys with their expiry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from msgspec.structs import replace

from ._sqlite_thread import Row, each
from .handle_records import event_handle, finished_step, live_step
from .records import CancelResult, Delivery, EventHandle, HandleState, ScheduledDelivery, StepHandle

KeyRow = tuple[str, str, str, float]
"""(topic, key, event id, expires at) of one keyed event to publish."""

_MAX_ID: Final = "\U0010ffff"  # sorts after every character: [prefix, prefix + _MAX_ID) is a prefix range
_LEASED: Final = "id = ? AND attempts = ? AND lease_until IS NOT NULL"  # still leased by this attempt
_FINISH: Final = """
INSERT INTO handles (event_id, step, topic, trace_id, emitted_at, state, delivery_id, attempts, started_at,
                     finished_at, error, result)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id, step) DO UPDATE SET state = excluded.state, delivery_id = excluded.delivery_id,
    attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at,
    error = CASE WHEN excluded.state = 'cancelled' THEN handles.error ELSE excluded.error END,
    result = excluded.result
"""
_NOTE: Final = """
INSERT INTO handles (event_id, step, topic, trace_id, emitted_at, {col}) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id, step) DO UPDATE SET {col} = excluded.{col}
"""
_LIVE: Final = ("SELECT step, id, lease_until IS NOT NULL, attempts, available_at, first_delivered_at, topic, "
                "trace_id, emitted_at FROM deliveries WHERE event_id = ?")
_RECORDS: Final = ("SELECT step, state, delivery_id, attempts, started_at, finished_at, error, result, progress, "
                   "topic, trace_id, emitted_at FROM handles WHERE event_id = ?")


def finish(conn: sqlite3.Connection, d: Delivery, state: HandleState, now: float, *, attempts: int | None = None,
           error: str | None = None, result_json: str | None = None) -> None:
    """Write the finished record of ``d`` (call it in the transaction that ends the delivery)."""
    e = d.envelope
    conn.execute(_FINISH, (e.id, d.step, e.topic, e.trace_id, e.emitted_at, state.value, d.id,
                           d.attempt if attempts is None else attempts, d.first_delivered_at, now, error, result_json))


def _finish_sql(n: int) -> str:
    head, _, tail = _FINISH.partition("VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    return head + "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n) + tail


_FINISHES: Final = {n: _finish_sql(n) for n in (64, 16, 4, 1)}  # multi-row statements, as for deliveries


def finish_many(conn: sqlite3.Connection, done: Iterable[tuple[Delivery, str | None]], now: float) -> None:
    """Finished records (``succeeded``, with their results) of acknowledged deliveries, in a few multi-row
    statements (one acknowledgement batch writes one per delivery). A delivery appears once per batch."""
    rows = [(d.envelope.id, d.step, d.envelope.topic, d.envelope.trace_id, d.envelope.emitted_at, "succeeded", d.id,
             d.attempt, d.first_delivered_at, now, None, result) for d, result in done]
    i = 0
    for n, sql in _FINISHES.items():
        while len(rows) - i >= n:
            conn.execute(sql, [v for row in rows[i:i + n] for v in row])
            i += n


def _note(conn: sqlite3.Connection, d: Delivery, column: str, value: str) -> None:
    e = d.envelope
    conn.execute(_NOTE.format(col=column), (e.id, d.step, e.topic, e.trace_id, e.emitted_at, value))


def take_keys(conn: sqlite3.Connection, keys: Sequence[KeyRow], now: float) -> dict[str, str]:
    """Take each key for its event unless another event holds it unexpired; {event id: holder's id} of
    the events whose key was held (publish nothing of them)."""
    held: dict[str, str] = {}
    for topic, key, event_id, expires_at in keys:
        taken = conn.execute(
            "INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT (topic, key) DO UPDATE SET "
            "event_id = excluded.event_id, expires_at = excluded.expires_at WHERE keys.expires_at <= ?",
            (topic, key, event_id, expires_at, now)).rowcount
        if not taken:
            held[event_id] = conn.execute("SELECT event_id FROM keys WHERE topic = ? AND key = ?",
                                          (topic, key)).fetchone()[0]
    return held


def without(rows: list[Row], held: dict[str, str]) -> list[Row]:
    """Delivery rows minus those of events whose key was held (``row[2]`` is the event id)."""
    return [r for r in rows if r[2] not in held] if held else rows


def flag_cancelled(conn: sqlite3.Connection, deliveries: list[Delivery]) -> list[Delivery]:
    """Mark claimed deliveries of cancelled events (one tiny query when nothing was cancelled)."""
    if not deliveries or conn.execute("SELECT 1 FROM cancels LIMIT 1").fetchone() is None:
        return deliveries
    ids = list({d.envelope.id for d in deliveries})
    marks = ",".join("?" * len(ids))
    gone = {r[0] for r in conn.execute(f"SELECT event_id FROM cancels WHERE event_id IN ({marks})", ids)}
    if not gone:
        return deliveries
    return [replace(d, cancelled=True) if d.envelope.id in gone else d for d in deliveries]


def _settle_cancelled(conn: sqlite3.Connection, d: Delivery, now: float) -> tuple[bool, bool]:
    """(ended, was FIFO): delete a leased delivery and record it as cancelled."""
    row = conn.execute(f"SELECT fifo_group IS NOT NULL FROM deliveries WHERE {_LEASED}", (d.id, d.attempt)).fetchone()
    if row is None:
        return False, False
    conn.execute("DELETE FROM deliveries WHERE id = ?", (d.id,))
    finish(conn, d, HandleState.CANCELLED, now)
    return True, bool(row[0])


@each
def cancel_settle(conn: sqlite3.Connection, arg: tuple[Delivery, float]) -> tuple[bool, bool]:
    return _settle_cancelled(conn, *arg)


@each
def retry_with_error(conn: sqlite3.Connection, arg: tuple[Delivery, float, str, float]) -> tuple[bool, bool]:
    """(changed, the step may have a delivery due now): the retry, or the end of a cancelled event's one."""
    d, available_at, error, now = arg
    if conn.execute("SELECT 1 FROM cancels WHERE event_id = ?", (d.envelope.id,)).fetchone() is not None:
        ended, _ = _settle_cancelled(conn, d, now)
        return ended, ended
    changed = conn.execute(f"UPDATE deliveries SET lease_until = NULL, available_at = ? WHERE {_LEASED}",
                           (available_at, d.id, d.attempt)).rowcount == 1
    if changed:
        _note(conn, d, "error", error)
    return changed, changed


@each
def progress(conn: sqlite3.Connection, arg: tuple[Delivery, str]) -> None:
    d, text = arg
    _note(conn, d, "progress", text)


def _handle(conn: sqlite3.Connection, event_id: str, now: float) -> EventHandle | None:
    steps: dict[str, StepHandle] = {}
    info: tuple[str, str, float] | None = None
    notes: dict[str, tuple[Any, ...]] = {}
    requested = conn.execute("SELECT 1 FROM cancels WHERE event_id = ?", (event_id,)).fetchone() is not None
    for step, state, did, attempts, started, finished, error, result, prog, *env in conn.execute(_RECORDS, (event_id,)):
        info = (env[0], env[1], env[2])
        notes[step] = (error, prog)
        if state is not None:
            steps[step] = finished_step(step, state, did, attempts, started, finished, error, result, prog)
    for step, did, leased, attempts, available_at, started, *env in conn.execute(_LIVE, (event_id,)):
        info = (env[0], env[1], env[2])
        steps[step] = live_step(step, delivery_id=did, leased=bool(leased), attempts=attempts, due_at=available_at,
                                started_at=started, now=now, note=notes.get(step, (None, None)),
                                cancel_requested=requested)
    return None if info is None or not steps else event_handle(event_id, info, steps.values())


@each
def handle_get(conn: sqlite3.Connection, arg: tuple[str, float]) -> EventHandle | None:
    return _handle(conn, *arg)


@each
def handle_find(conn: sqlite3.Connection, arg: tuple[str, int]) -> list[str]:
    prefix, limit = arg
    rows = conn.execute("SELECT event_id FROM handles WHERE event_id >= ?1 AND event_id < ?2 UNION "
                        "SELECT event_id FROM deliveries WHERE event_id >= ?1 AND event_id < ?2 ORDER BY 1 LIMIT ?3",
                        (prefix, prefix + _MAX_ID, limit)).fetchall()
    return [str(r[0]) for r in rows]


@each
def handle_cancel(conn: sqlite3.Connection, arg: tuple[str, float]) -> tuple[CancelResult | None, list[str]]:
    """(the result, steps with a FIFO group that may move on)."""
    event_id, now = arg
    cancelled: list[str] = []
    requested: list[str] = []
    fifo: list[str] = []
    live = conn.execute("SELECT id, step, lease_until IS NOT NULL, attempts, first_delivered_at, fifo_group IS NOT "
                        "NULL, topic, trace_id, emitted_at FROM deliveries WHERE event_id = ?", (event_id,)).fetchall()
    for did, step, leased, attempts, first, is_fifo, topic, trace_id, emitted_at in live:
        if leased:
            requested.append(step)
            continue
        conn.execute("DELETE FROM deliveries WHERE id = ?", (did,))
        conn.execute(_FINISH, (event_id, step, topic, trace_id, emitted_at, "cancelled", did, attempts, first, now,
                               None, None))
        cancelled.append(step)
        if is_fifo:
            fifo.append(step)
    if live:
        conn.execute("INSERT OR REPLACE INTO cancels VALUES (?, ?)", (event_id, now))
    handle = _handle(conn, event_id, now)
    if handle is None:
        return None, []
    return CancelResult(handle=handle, cancelled=tuple(sorted(cancelled)), requested=tuple(sorted(requested))), fifo


@each
def cancel_requests(conn: sqlite3.Connection, arg: list[Delivery]) -> set[str]:
    if conn.execute("SELECT 1 FROM cancels LIMIT 1").fetchone() is None:
        return set()
    ids = list({d.envelope.id for d in arg})
    gone = {r[0] for r in conn.execute(f"SELECT event_id FROM cancels WHERE event_id IN ({','.join('?' * len(ids))})",
                                       ids)}
    return {d.id for d in arg if d.envelope.id in gone}


@each
def scheduled_list(conn: sqlite3.Connection, arg: tuple[str | None, int, float]) -> list[ScheduledDelivery]:
    topic, limit, now = arg
    rows = conn.execute(
        "SELECT event_id, step, topic, trace_id, available_at, emitted_at, id FROM deliveries WHERE lease_until IS "
        "NULL AND attempts = 0 AND available_at > ?1 AND (?2 IS NULL OR topic = ?2) "
        "ORDER BY available_at, event_id, step LIMIT ?3", (now, topic, limit)).fetchall()
    return [ScheduledDelivery(*r) for r in rows]


_PRUNE_BATCH: Final = 5000  # events looked at per prune (bounds the time the connection is busy)


def _finished_before(conn: sqlite3.Connection, events: list[str], before: float) -> list[str]:
    """Those of ``events`` whose every record is finished, the latest before ``before``."""
    out: list[str] = []
    for i in range(0, len(events), 500):
        chunk = events[i:i + 500]
        out += [str(r[0]) for r in conn.execute(
            f"SELECT event_id FROM handles WHERE event_id IN ({','.join('?' * len(chunk))}) GROUP BY event_id "
            "HAVING COUNT(finished_at) = COUNT(*) AND MAX(finished_at) < ?", [*chunk, before])]
    return out


@each
def prune_candidates(conn: sqlite3.Connection, arg: tuple[float, int]) -> list[str]:
    """Events (about :data:`_PRUNE_BATCH` at most) last finished before ``before``, and the oldest finished
    past the ``keep`` newest; :func:`prune` keeps those that are live again. Through the index of finish
    times: cheap while under ``keep``."""
    before, keep = arg
    old = [str(r[0]) for r in conn.execute(
        "SELECT event_id FROM handles WHERE finished_at < ? ORDER BY finished_at LIMIT ?", (before, _PRUNE_BATCH))]
    found = set(_finished_before(conn, list(dict.fromkeys(old)), before))
    rows = conn.execute("SELECT COUNT(*) FROM handles WHERE finished_at IS NOT NULL").fetchone()[0]
    if rows > keep:  # as many events at most: count them exactly only then
        surplus = conn.execute("SELECT COUNT(DISTINCT event_id) FROM handles WHERE finished_at IS NOT NULL"
                               ).fetchone()[0] - keep
        if surplus > 0:
            found |= {str(r[0]) for r in conn.execute(
                "SELECT event_id FROM handles WHERE finished_at IS NOT NULL GROUP BY event_id "
                "ORDER BY MAX(finished_at) LIMIT ?", (min(surplus, _PRUNE_BATCH),))}
    return sorted(found)


@each
def prune(conn: sqlite3.Connection, arg: tuple[list[str], float]) -> int:
    """Delete the handles of ``events`` (unless one became live again), cancellations of events without a
    delivery left, and expired keys; how many handles went."""
    events, now = arg
    dropped = 0
    for i in range(0, len(events), 500):
        chunk = events[i:i + 500]
        where = (f"event_id IN ({','.join('?' * len(chunk))}) AND NOT EXISTS "
                 "(SELECT 1 FROM deliveries d WHERE d.event_id = handles.event_id)")
        dropped += conn.execute(f"SELECT COUNT(DISTINCT event_id) FROM handles WHERE {where}", chunk).fetchone()[0]
        conn.execute(f"DELETE FROM handles WHERE {where}", chunk)
    conn.execute("DELETE FROM cancels WHERE NOT EXISTS "
                 "(SELECT 1 FROM deliveries d WHERE d.event_id = cancels.event_id)")
    conn.execute("DELETE FROM keys WHERE expires_at <= ?", (now,))
    return dropped
