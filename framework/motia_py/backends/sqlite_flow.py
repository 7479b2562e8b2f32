"""The SQLite backend's flow control: claims under a :class:`~.records.FlowControl`, the next time such a
claim may hand something out (for ``wait``), and the counts of deliveries held back (``step_stats``).

A controlled claim runs in one ``BEGIN IMMEDIATE`` transaction like every claim, so the limits hold for
every process sharing the file; its *now* is read inside that transaction. Running deliveries are the
leased rows with an unexpired lease (``deliveries_expiry``); the starts of the rate windows are rows of
``flow_starts``, pruned by the claims. Candidates come priority by priority (``deliveries_prio``); a key
found at its limit is excluded from the next page (``NOT IN json_each(...)``), so a busy key costs an index
scan, never a blocked claim. The rules are :class:`~.stores.QueueStore`'s.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from typing import Final

from ..types import Clock
from . import sqlite_queue as q
from ._sqlite_thread import Row, each
from .flow import KEY, RATE, Admission, earliest, look_ahead
from .records import Delivery, FlowControl, StepQueueStats

_RK, _CK = 14, 15  # a candidate row's rate key and concurrency key (sqlite_queue._SELECT's columns)
_EXCLUDE: Final = ("AND coalesce(conc_key, '') NOT IN (SELECT value FROM json_each(:cb)) "
                   "AND coalesce(rate_key, '') NOT IN (SELECT value FROM json_each(:rb)) "
                   "AND seq NOT IN (SELECT value FROM json_each(:taken))")
_RUNNING: Final = ("SELECT coalesce(conc_key, ''), COUNT(*) FROM deliveries WHERE step = ? "
                   "AND lease_until IS NOT NULL AND available_at > ? GROUP BY 1")


def admission(conn: sqlite3.Connection, step: str, control: FlowControl, now: float, *, prune: bool = False
              ) -> Admission:
    """The checks of a claim at ``now``; with ``prune``, starts out of the window are deleted first."""
    running = {str(k): int(n) for k, n in conn.execute(_RUNNING, (step, now))}
    starts: dict[str | None, list[float]] = defaultdict(list)
    if control.rate_limit:
        window = now - control.rate_period_s
        if prune:
            conn.execute("DELETE FROM flow_starts WHERE step = ? AND at <= ?", (step, window))
        for bucket, at in conn.execute("SELECT bucket, at FROM flow_starts WHERE step = ? AND at > ?",
                                       (step, window)):
            starts[bucket].append(at)
    return Admission(control, now, running, starts)


def _standard(conn: sqlite3.Connection, step: str, now: float, checks: Admission, limit: int,
              held: set[str | None]) -> list[Row]:
    """Up to ``limit`` due standard rows that ``checks`` admits (admitting them), in claim order; the rate
    windows that held one back are added to ``held``."""
    chosen: list[Row] = []
    taken: list[int] = []
    busy: dict[str, set[str]] = {"cb": set(), "rb": set()}
    for p in q.levels(conn, step):
        while len(chosen) < limit and not checks.closed:
            want = limit - len(chosen)
            page = conn.execute((q.LEVEL if p else q.LEVEL_0).format(where=_EXCLUDE), {
                "step": step, "now": now, "p": p, "limit": want, "taken": json.dumps(taken),
                **{k: json.dumps(sorted(v)) for k, v in busy.items()}}).fetchall()
            more = False  # a key found busy: look again without it
            for row in page:
                reason = checks.check(row[_RK], row[_CK])
                if reason is None:
                    checks.admit(row[_RK], row[_CK])
                    chosen.append(row)
                    taken.append(row[0])
                elif reason == KEY:
                    busy["cb"].add(row[_CK] or "")
                    more = True
                elif reason == RATE and checks.control.rate_keyed:
                    busy["rb"].add(row[_RK] or "")
                    held.add(row[_RK] or "")
                    more = True
                else:  # the step's concurrency or its one rate window is full
                    if reason == RATE:
                        held.add(None)
                    break
            if not more and len(page) < want:
                break
    return chosen


def _heads(conn: sqlite3.Connection, step: str, now: float, checks: Admission, limit: int,
           held: set[str | None]) -> list[Row]:
    """The free FIFO heads that ``checks`` admits (admitting them), highest priority then oldest first."""
    chosen: list[Row] = []
    for row in conn.execute(q._CLAIM_FIFO, {"step": step, "now": now, "limit": -1}):
        if len(chosen) >= limit or checks.closed:
            break
        reason = checks.check(row[_RK], row[_CK])
        if reason is None:
            checks.admit(row[_RK], row[_CK])
            chosen.append(row)
        elif reason == RATE:
            held.add((row[_RK] or "") if checks.control.rate_keyed else None)
    return chosen


def select(conn: sqlite3.Connection, step: str, now: float, checks: Admission, limit: int
           ) -> tuple[list[Row], set[str | None]]:
    """What a claim of ``limit`` hands out under ``checks``: standard rows, then FIFO heads; and the rate
    windows (keys, or None for the step's one window) that held a candidate back."""
    held: set[str | None] = set()
    rows = _standard(conn, step, now, checks, limit, held)
    if len(rows) < limit and not checks.closed:
        rows += _heads(conn, step, now, checks, limit - len(rows), held)
    if checks.closed and checks.control.rate_limit and not checks.control.rate_keyed:
        held.add(None)
    return rows, held


@each
def claim(conn: sqlite3.Connection, arg: tuple[str, int, float, Clock, str, FlowControl]) -> list[Delivery]:
    """One transaction: an expired lease alone (past the limits, its start counted), else the due rows
    within the limits (see :class:`~.stores.QueueStore`)."""
    step, limit, lease_s, clock, owner, control = arg
    now = clock()  # inside the transaction: the rate windows of every process line up
    limited = control.limits_concurrency
    expired = conn.execute(q._CLAIM_EXPIRED, {"step": step, "now": now}).fetchall()
    checks = admission(conn, step, control, now, prune=True)
    if expired:
        checks.admit(expired[0][_RK], expired[0][_CK], slot=False)
        rows = expired
    else:
        rows = select(conn, step, now, checks, limit)[0]
    if control.rate_limit and rows:
        conn.executemany("INSERT INTO flow_starts VALUES (?, ?, ?)",
                         [(step, (r[_RK] or "") if control.rate_keyed else None, now) for r in rows])
    return q.lease(conn, rows, step, now, lease_s, owner, expired=bool(expired), limited=limited)


def _later(conn: sqlite3.Connection, step: str, now: float) -> float | None:
    """The earliest future due time among a step's delayed rows and free FIFO heads, or lease expiry."""
    delayed = conn.execute("SELECT MIN(available_at) FROM deliveries WHERE step = ? AND fifo_group IS NULL "
                           "AND lease_until IS NULL AND available_at > ?", (step, now)).fetchone()[0]
    leases = conn.execute("SELECT MIN(available_at) FROM deliveries WHERE step = ? AND lease_until IS NOT NULL",
                          (step,)).fetchone()[0]
    heads = conn.execute(q._FIFO_HEADS + "SELECT MIN(d.available_at) FROM head JOIN deliveries d ON d.seq = "
                         "head.seq WHERE d.available_at > :now AND d.lease_until IS NULL",
                         {"step": step, "now": now}).fetchone()[0]
    return earliest(delayed, leases, heads)


def next_due(conn: sqlite3.Connection, step: str, control: FlowControl, now: float) -> float | None:
    """When a claim with ``control`` may hand out a delivery of ``step``: ``now`` when it would now, else
    the next rate window opening for a held-back one, delayed delivery, FIFO head or lease expiry (a
    delivery held back by a concurrency limit waits for a slot: an expiry, or the end of a run, which
    commits and so wakes the waiters)."""
    checks = admission(conn, step, control, now)
    rows, held = select(conn, step, now, checks, 1)
    if rows:
        return now
    return earliest(_later(conn, step, now), *(checks.opens_at(b) for b in held))


def _candidates(conn: sqlite3.Connection, step: str, now: float) -> Iterator[tuple[str | None, str | None]]:
    """(rate key, concurrency key) of every delivery a claim could hand out now, in claim order."""
    for p in q.levels(conn, step):
        sql = (q.LEVEL if p else q.LEVEL_0).format(where="")
        for row in conn.execute(sql, {"step": step, "now": now, "p": p, "limit": -1}):
            yield row[_RK], row[_CK]
    for row in conn.execute(q._CLAIM_FIFO, {"step": step, "now": now, "limit": -1}):
        yield row[_RK], row[_CK]


Controls = tuple[FlowControl | None, ...]


@each
def due_times(conn: sqlite3.Connection, arg: tuple[int | None, tuple[str, ...], Controls, float]
              ) -> tuple[int, dict[str, float | None] | None]:
    """:func:`.sqlite_queue.due_times`, with the flow control each step's claims use (None: none) and the
    time now."""
    seen, steps, controls, now = arg
    version, dues = q.due_times(conn, [(seen, steps)])[0]
    if dues is not None:
        for step, control in zip(steps, controls, strict=True):
            if control is not None:
                dues[step] = next_due(conn, step, control, now)
    return version, dues


@each
def step_stats(conn: sqlite3.Connection, arg: tuple[float, dict[str, FlowControl]]) -> dict[str, StepQueueStats]:
    """:func:`.sqlite_queue.step_stats`, with the deliveries held back per limit of the steps in ``arg[1]``."""
    now, controls = arg
    out = q.step_stats(conn, [now])[0]
    for step, control in controls.items():
        if step in out:
            _, _, held = look_ahead(admission(conn, step, control, now), _candidates(conn, step, now))
            out[step].throttled.update(held)
    return out
