"""The SQLite backend's queue: its SQL and the operations that run it on the connection's thread.

Each operation takes the calls of one run of like calls (see :mod:`._sqlite_thread`) and answers each;
``publish_run`` and ``complete_run`` turn a run into a few multi-row statements.

While a delivery is leased its ``available_at`` holds the lease expiry, which keeps the rows in flight
out of the due range that every claim scans. An expired lease is claimed first and alone, as the memory
backend does, through a small index of the leased rows; ``owner`` names the worker that took each lease.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

from msgspec.structs import replace

from . import sqlite_handles as sh
from ._sqlite_thread import Row, each
from .records import DeadLetter, Delivery, Envelope, HandleState, Outgoing, QueueStats, StepQueueStats, new_id

CHUNK: Final = 64  # rows per multi-row statement (64 x 15 columns stays under SQLite's old 999 limit)

_ENV: Final = "event_id, topic, data, trace_id, emitted_at, group_id, source, traceparent"  # Envelope's order
_IN_SIZES: Final = (1, 4, 16, CHUNK)  # a list of n values is padded with NULLs (which match nothing)
_IN: Final = {n: "(" + ", ".join("?" * n) + ")" for n in _IN_SIZES}  # to the first size >= n
_FLOW: Final = "priority, rate_key, conc_key"  # Target's flow attributes (rows: after the envelope and owner)
_SELECT: Final = f"SELECT seq, id, attempts, first_delivered_at, {_ENV}, owner, {_FLOW} FROM deliveries"
_CLAIM_EXPIRED: Final = (f"{_SELECT} WHERE step = :step AND lease_until IS NOT NULL AND available_at <= :now "
                         "ORDER BY available_at, seq LIMIT 1")  # standard rows and FIFO heads alike
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
_CLAIM_FIFO: Final = (_FIFO_HEADS + f"SELECT d.seq, d.id, d.attempts, d.first_delivered_at, {_ENV}, d.owner, "
                      f"{_FLOW} FROM head JOIN deliveries d ON d.seq = head.seq "
                      "WHERE d.available_at <= :now AND d.lease_until IS NULL ORDER BY d.priority DESC, d.seq "
                      "LIMIT :limit")
# Priorities: the distinct priorities other than 0 of a step's standard rows, highest first (a skip-scan
# of deliveries_prio, which holds those rows only), and the due rows of one priority, in due order.
PRIORITISED: Final = "SELECT 1 FROM deliveries WHERE step = ? AND fifo_group IS NULL AND priority != 0 LIMIT 1"
_HAS_FIFO: Final = "SELECT 1 FROM deliveries WHERE step = ? AND fifo_group IS NOT NULL LIMIT 1"  # cheaper than heads
_LEVELS: Final = """
WITH RECURSIVE lv(p) AS (
    SELECT (SELECT MAX(priority) FROM deliveries WHERE step = :step AND fifo_group IS NULL AND priority != 0)
    UNION ALL
    SELECT (SELECT MAX(priority) FROM deliveries WHERE step = :step AND fifo_group IS NULL AND priority != 0
            AND priority < lv.p) FROM lv WHERE lv.p IS NOT NULL
) SELECT p FROM lv WHERE p IS NOT NULL"""
LEVEL: Final = (f"{_SELECT} WHERE step = :step AND fifo_group IS NULL AND priority = :p AND priority != 0 "
                "AND available_at <= :now AND lease_until IS NULL {where} ORDER BY available_at, seq LIMIT :limit")
LEVEL_0: Final = (f"{_SELECT} WHERE step = :step AND fifo_group IS NULL AND priority = 0 "
                  "AND available_at <= :now AND lease_until IS NULL {where} ORDER BY available_at, seq LIMIT :limit")
"""The due rows of priority ``:p`` (other than 0) / of priority 0; ``{where}``: more conditions, or ''."""
_LEASE: Final = {n: "UPDATE deliveries SET attempts = attempts + 1, lease_until = ?, available_at = ?, "
                    f"first_delivered_at = COALESCE(first_delivered_at, ?), owner = ? WHERE seq IN {marks}"
                 for n, marks in _IN.items()}
_LEASED: Final = "id = ? AND attempts = ? AND lease_until IS NOT NULL"  # still leased by this attempt
DEAD_COLS: Final = f"id, step, {_ENV}, attempts, error, traceback, failed_at, first_attempt_at, {_FLOW}"


def delivery_rows(items: Sequence[Outgoing], now: float) -> list[Row]:
    """The ``deliveries`` rows (without the columns that start empty) of publishing ``items`` at ``now``; the
    row of a target with a priority or keys has the :data:`_FLOW` columns too."""
    rows: list[Row] = [(new_id(), t.step, e.id, e.topic, e.data_json, e.trace_id, e.emitted_at, e.group_id,
                        e.source, e.traceparent, (e.group_id or "") if t.fifo else None, now + t.delay_s)
                       for out in items for e in (out.envelope,) for t in out.targets]
    if any(t.priority or t.rate_key is not None or t.concurrency_key is not None for o in items for t in o.targets):
        flows = [(t.priority, t.rate_key, t.concurrency_key) for out in items for t in out.targets]
        rows = [row + flow if flow != (0, None, None) else row for row, flow in zip(rows, flows, strict=True)]
    return rows


def key_rows(items: Sequence[Outgoing], now: float) -> list[sh.KeyRow]:
    """The idempotency keys of the keyed ``items`` (topic, key, event id, expiry)."""
    return [(o.envelope.topic, o.key, o.envelope.id, now + o.key_ttl_s) for o in items if o.key is not None]


def _insert_sql(n: int, flow: bool = False) -> str:
    columns, marks = (f", {_FLOW}", ", ?, ?, ?") if flow else ("", "")
    return (f"INSERT INTO deliveries (id, step, {_ENV}, fifo_group, available_at{columns}) VALUES "
            + ", ".join([f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{marks})"] * n))


_INSERTS: Final = {n: _insert_sql(n) for n in (CHUNK, 16, 4, 1)}
_FLOW_INSERTS: Final = {n: _insert_sql(n, flow=True) for n in (CHUNK, 16, 4, 1)}



def _padded(values: list[Any]) -> Iterator[tuple[int, list[Any]]]:
    """``values`` in chunks of at most ``CHUNK``, each padded to a size of ``_IN_SIZES``: (size, chunk).

    A few sizes keep the statements few (SQLite's statement cache holds each), and a small list costs
    little: an ``IN`` of one value is an equality, where 64 placeholders cost 50-60 us a statement.
    """
    for i in range(0, len(values), CHUNK):
        chunk = values[i:i + CHUNK]
        size = next(n for n in _IN_SIZES if n >= len(chunk))
        yield size, chunk + [None] * (size - len(chunk))


def _insert(conn: sqlite3.Connection, rows: list[Row], inserts: dict[int, str] = _INSERTS) -> None:
    if inserts is _INSERTS and any(len(row) != 12 for row in rows):  # with flow columns: runs of one width
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or len(rows[end]) != len(rows[start]):
                _insert(conn, rows[start:end], _INSERTS if len(rows[start]) == 12 else _FLOW_INSERTS)
                start = end
        return
    i = 0
    for n in inserts:  # whole chunks of 64, 16, 4 and 1 rows: a few cached statements, few steps
        while len(rows) - i >= n:
            conn.execute(inserts[n], [v for row in rows[i:i + n] for v in row])
            i += n


def publish_run(conn: sqlite3.Connection, args: Sequence[list[Row]]) -> list[None]:
    _insert(conn, [row for rows in args for row in rows])
    return [None] * len(args)


@each
def publish_keyed(conn: sqlite3.Connection, arg: tuple[list[Row], list[sh.KeyRow], float]) -> dict[str, str]:
    """Publish rows whose events' keys are free (taking them); {event id: holder} of the others."""
    rows, keys, now = arg
    held = sh.take_keys(conn, keys, now)
    _insert(conn, sh.without(rows, held))
    return held


Completion = tuple[Delivery, list[Row], str | None, list[sh.KeyRow], float]
"""One ``complete``: the delivery, its outbox's rows, its result, the outbox's keys, and now."""


def complete_run(conn: sqlite3.Connection, args: Sequence[Completion]) -> list[tuple[bool, bool]]:
    """(acknowledged, was on a FIFO queue) per call; the outboxes of the acknowledged ones are published
    (but for the events whose idempotency key is held) and their finished records written."""
    leased: dict[str, tuple[int, int, bool]] = {}
    for size, chunk in _padded([c[0].id for c in args]):
        for seq, id_, attempts, fifo in conn.execute(
                f"SELECT seq, id, attempts, fifo_group IS NOT NULL FROM deliveries "
                f"WHERE lease_until IS NOT NULL AND id IN {_IN[size]}", chunk):
            leased[id_] = (seq, attempts, bool(fifo))
    results: list[tuple[bool, bool]] = []
    done: list[int] = []
    rows: list[Row] = []
    keys: list[sh.KeyRow] = []
    finished: list[tuple[Delivery, str | None]] = []
    for d, outbox, result, outbox_keys, _ in args:
        hit = leased.get(d.id)
        if hit is None or hit[1] != d.attempt:
            results.append((False, False))
            continue
        del leased[d.id]  # a second complete() of the same attempt loses
        done.append(hit[0])
        rows += outbox
        keys += outbox_keys
        finished.append((d, result))
        results.append((True, hit[2]))
    for size, chunk in _padded(done):
        conn.execute(f"DELETE FROM deliveries WHERE seq IN {_IN[size]}", chunk)
    now = args[-1][4]
    _insert(conn, sh.without(rows, sh.take_keys(conn, keys, now)) if keys else rows)
    sh.finish_many(conn, finished, now)
    return results


def levels(conn: sqlite3.Connection, step: str) -> list[int]:
    """The priorities a step's standard rows may have, highest first (0 always among them)."""
    found = [int(r[0]) for r in conn.execute(_LEVELS, {"step": step})]
    return [p for p in found if p > 0] + [0] + [p for p in found if p < 0]


def _by_priority(conn: sqlite3.Connection, params: dict[str, Any]) -> list[Row]:
    """Up to ``params["limit"]`` due standard rows, highest priority first (then in due order)."""
    rows: list[Row] = []
    for p in levels(conn, params["step"]):
        if len(rows) < params["limit"]:
            sql = (LEVEL if p else LEVEL_0).format(where="")
            rows += conn.execute(sql, {**params, "p": p, "limit": params["limit"] - len(rows)}).fetchall()
    return rows


def lease(conn: sqlite3.Connection, rows: list[Row], step: str, now: float, lease_s: float, owner: str, *,
          expired: bool = False, limited: bool = False) -> list[Delivery]:
    """Lease the claimed ``rows`` (of :data:`_SELECT`'s columns) to ``owner``; their deliveries."""
    until = now + lease_s
    for size, chunk in _padded([row[0] for row in rows]):
        conn.execute(_LEASE[size], [until, until, now, owner, *chunk])
    return sh.flag_cancelled(conn, [
        Delivery(id=row[1], step=step, envelope=Envelope(*row[4:12]), attempt=row[2] + 1,
                 first_delivered_at=now if row[3] is None else row[3], expired=expired,
                 last_owner=row[12] if expired else None, priority=row[13], rate_key=row[14],
                 concurrency_key=row[15], limited=limited) for row in rows])  # cancelled events flagged


def _claim(conn: sqlite3.Connection, arg: tuple[str, int, float, float, str]) -> list[Delivery]:
    """One transaction: an expired lease alone (``expired``, with its ``last_owner``), else the due rows."""
    step, limit, lease_s, now, owner = arg
    params = {"step": step, "now": now, "limit": limit}
    rows: list[Row] = conn.execute(_CLAIM_EXPIRED, params).fetchall()
    expired = bool(rows)
    if not expired:
        prioritised = conn.execute(PRIORITISED, (step,)).fetchone() is not None
        for sql in (_CLAIM_DUE, _CLAIM_FIFO):  # the memory backend's order
            if len(rows) == limit or (sql is _CLAIM_FIFO and not _has_fifo(conn, step)):
                break
            params["limit"] = limit - len(rows)
            rows += _by_priority(conn, params) if prioritised and sql is _CLAIM_DUE else conn.execute(
                sql, params).fetchall()
    return lease(conn, rows, step, now, lease_s, owner, expired=expired)


claim = each(_claim)


@each
def claim_noting_due(conn: sqlite3.Connection, arg: tuple[str, int, float, float, str]
                     ) -> tuple[list[Delivery], float | None]:
    """:func:`claim`, and the step's next due time (or lease expiry) after it, read in the same transaction:
    the wait that follows a claim needs no read of its own."""
    return _claim(conn, arg), _next_due(conn, arg[0])


@each
def hand_back(conn: sqlite3.Connection, arg: tuple[list[Delivery], float]) -> bool:
    """Undo the claims of deliveries that never started; whether any was still leased by its attempt.

    A standard or FIFO delivery is due at ``now`` and not leased, its attempt count back by one and
    ``first_delivered_at`` cleared when that claim was its first. One claimed for an expired lease goes
    back to that expired lease (expiring at ``now``, owned by its ``last_owner``), so the next claim
    takes it alone again.
    """
    deliveries, now = arg
    changed = 0
    for d in deliveries:
        if d.expired:
            changed += conn.execute(
                f"UPDATE deliveries SET attempts = attempts - 1, lease_until = ?, available_at = ?, owner = ? "
                f"WHERE {_LEASED}", (now, now, d.last_owner, d.id, d.attempt)).rowcount
        else:
            changed += conn.execute(
                "UPDATE deliveries SET attempts = attempts - 1, lease_until = NULL, available_at = ?, "
                "first_delivered_at = CASE WHEN attempts = 1 THEN NULL ELSE first_delivered_at END "
                f"WHERE {_LEASED}", (now, d.id, d.attempt)).rowcount
    return changed > 0


@each
def retry(conn: sqlite3.Connection, arg: tuple[Delivery, float]) -> bool:
    d, available_at = arg
    return conn.execute(f"UPDATE deliveries SET lease_until = NULL, available_at = ? WHERE {_LEASED}",
                        (available_at, d.id, d.attempt)).rowcount == 1


@each
def dead_letter(conn: sqlite3.Connection, arg: tuple[Delivery, str, str, float, int | None]) -> bool:
    """Whether the delivery was on a FIFO queue (its group moves on); False too when the lease was lost."""
    d, error, traceback, now, attempts = arg
    row = conn.execute(f"SELECT fifo_group IS NOT NULL FROM deliveries WHERE {_LEASED}", (d.id, d.attempt)).fetchone()
    if row is None:
        return False
    conn.execute(f"INSERT INTO dead_letters ({DEAD_COLS}) SELECT id, step, {_ENV}, COALESCE(?, attempts), ?, ?, ?, "
                 f"first_delivered_at, {_FLOW} FROM deliveries WHERE id = ?", (attempts, error, traceback, now, d.id))
    conn.execute("DELETE FROM deliveries WHERE id = ?", (d.id,))
    sh.finish(conn, d, HandleState.DEAD, now, attempts=attempts, error=error)
    return bool(row[0])


def _has_fifo(conn: sqlite3.Connection, step: str) -> bool:
    """Whether ``step`` has FIFO rows at all (one index lookup; the heads' query costs three times more)."""
    return conn.execute(_HAS_FIFO, (step,)).fetchone() is not None


def _next_due(conn: sqlite3.Connection, step: str) -> float | None:
    """The earliest due time (or lease expiry) among ``step``'s standard rows and FIFO heads."""
    standard = conn.execute("SELECT MIN(available_at) FROM deliveries WHERE step = ? AND fifo_group IS NULL",
                            (step,)).fetchone()[0]
    fifo = conn.execute(_FIFO_HEADS + "SELECT MIN(d.available_at) FROM head JOIN deliveries d ON d.seq = head.seq",
                        {"step": step}).fetchone()[0] if _has_fifo(conn, step) else None
    times = [t for t in (standard, fifo) if t is not None]
    return min(times) if times else None


@each
def due_times(conn: sqlite3.Connection, arg: tuple[int | None, tuple[str, ...], tuple[str, ...]]
               ) -> tuple[int, dict[str, float | None]]:
    """(data_version, next due time per step looked up): every step of ``steps`` when the version differs
    from the one given (another connection committed since), else only those of ``need``."""
    seen, steps, need = arg
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version, {step: _next_due(conn, step) for step in (need if version == seen else steps)}


@each
def stats(conn: sqlite3.Connection, now: float) -> QueueStats:
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


@each
def step_stats(conn: sqlite3.Connection, now: float) -> dict[str, StepQueueStats]:
    """Per step: the counts of :func:`stats`, dead letters, and the due time of the oldest ready row."""
    out = {step: StepQueueStats(ready=ready, delayed=delayed, leased=leased, oldest_ready_at=oldest)
           for step, ready, delayed, leased, oldest in conn.execute(
               "SELECT step, SUM(lease_until IS NULL AND available_at <= :now), "
               "SUM(lease_until IS NULL AND available_at > :now), SUM(lease_until IS NOT NULL), "
               "MIN(CASE WHEN lease_until IS NULL AND available_at <= :now THEN available_at END) "
               "FROM deliveries GROUP BY step", {"now": now})}
    for step, dead in conn.execute("SELECT step, COUNT(*) FROM dead_letters GROUP BY step"):
        out[step] = replace(out.get(step, StepQueueStats()), dead=dead)
    return out


@each
def dlq_replay(conn: sqlite3.Connection, arg: tuple[str, float]) -> str | None:
    """The step the dead letter went back to (as a standard delivery, like memory's), or None."""
    dead_id, now = arg
    row = conn.execute(f"SELECT step, {_ENV}, {_FLOW} FROM dead_letters WHERE id = ?", (dead_id,)).fetchone()
    if row is None:
        return None
    conn.execute(_FLOW_INSERTS[1], (new_id(), *row[:9], None, now, *row[9:]))
    conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
    return str(row[0])


@each
def extend(conn: sqlite3.Connection, arg: tuple[float, list[Delivery]]) -> None:
    until, deliveries = arg
    conn.executemany(f"UPDATE deliveries SET lease_until = ?, available_at = ? WHERE {_LEASED}",
                     [(until, until, d.id, d.attempt) for d in deliveries])


def dead_from_row(row: Row) -> DeadLetter:
    return DeadLetter(id=row[0], step=row[1], envelope=Envelope(*row[2:10]), attempts=row[10], error=row[11],
                      traceback=row[12], failed_at=row[13], first_attempt_at=row[14], priority=row[15],
                      rate_key=row[16], concurrency_key=row[17])

