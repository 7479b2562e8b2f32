"""The PostgreSQL backend's flow control outside the claim: when a claim under a
:class:`~.records.FlowControl` may next hand something out (for ``wait``), and the counts of deliveries
held back (``step_stats``).

The claim itself is the schema's ``claim_flow`` function (:mod:`.postgres_flow_schema`); these look-aheads
read the same rows (running deliveries, the starts of the rate windows, the ready candidates in claim
order) and run them through :class:`~.flow.Admission`, as the memory and SQLite backends do. They claim
nothing and need not be atomic: a wait may return early, and the counts are a snapshot.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from msgspec import Struct

from .flow import Admission, earliest, look_ahead
from .postgres_schema import Conn, quote
from .postgres_sql import heads
from .records import FlowControl


class FlowSql(Struct, frozen=True):
    """The look-ahead statements of one schema ($1 the step, $2 the time now)."""

    running: str
    starts: str
    candidates: str
    pairs: str
    later: str

    @classmethod
    def build(cls, schema: str) -> FlowSql:
        """The statements on the tables of ``schema``."""
        s = quote(schema)
        d = f"{s}.deliveries"
        ready = (  # the ready candidates of a claim: due standard rows, then free FIFO heads
            f"{heads(d)}SELECT 0 AS part, priority, available_at, seq, rate_key, conc_key FROM {d} "
            "WHERE step = $1 AND fifo_group IS NULL AND lease_until IS NULL AND available_at <= $2 "
            f"UNION ALL SELECT 1, d.priority, 0, d.seq, d.rate_key, d.conc_key FROM head JOIN {d} d "
            "ON d.seq = head.seq WHERE d.lease_until IS NULL AND d.available_at <= $2 AND NOT EXISTS ("
            f"SELECT 1 FROM {d} x WHERE x.step = $1 AND x.fifo_group = d.fifo_group AND x.lease_until IS NOT NULL)")
        return cls(
            running=(f"SELECT COALESCE(conc_key, ''), count(*) FROM {d} WHERE step = $1 "
                     "AND lease_until IS NOT NULL AND available_at > $2 GROUP BY 1"),
            starts=(f"SELECT bucket, at FROM {s}.flow_starts WHERE step = $1 AND at > $2 - $3::float8 "
                    "AND (bucket IS NOT NULL) = $4::boolean"),
            candidates=f"SELECT rate_key, conc_key FROM ({ready}) c ORDER BY part, priority DESC, available_at, seq",
            pairs=f"SELECT DISTINCT rate_key, conc_key FROM ({ready}) c",
            later=("SELECT LEAST("
                   f"(SELECT min(available_at) FROM {d} WHERE step = $1 AND fifo_group IS NULL "
                   "AND lease_until IS NULL AND available_at > $2), "
                   f"(SELECT min(available_at) FROM {d} WHERE step = $1 AND lease_until IS NOT NULL), "
                   f"({heads(d)}SELECT min(d.available_at) FROM head JOIN {d} d ON d.seq = head.seq "
                   "WHERE d.available_at > $2 AND d.lease_until IS NULL))"))


async def admission(conn: Conn, sql: FlowSql, step: str, control: FlowControl, now: float) -> Admission:
    """The checks a claim of ``step`` at ``now`` would make (running deliveries, open rate windows)."""
    running = {str(k): int(n) for k, n in await conn.fetch(sql.running, step, now)}
    starts: dict[str | None, list[float]] = {}
    if control.rate_limit:
        for bucket, at in await conn.fetch(sql.starts, step, now, control.rate_period_s, control.rate_keyed):
            starts.setdefault(bucket, []).append(at)
    return Admission(control, now, running, starts)


async def next_due(conn: Conn, sql: FlowSql, step: str, control: FlowControl, now: float) -> float | None:
    """When a claim with ``control`` may hand out a delivery of ``step``: ``now`` when it would now, else
    the next rate window opening for a held-back one, delayed delivery, FIFO head or lease expiry (one
    held back by a concurrency limit waits for a slot: a lease expiry, or the end of a limited delivery,
    which notifies the waiters)."""
    checks = await admission(conn, sql, step, control, now)
    pairs: list[Any] = await conn.fetch(sql.pairs, step, now)  # the checks of a key pair do not depend on
    startable, opens, _ = look_ahead(checks, ((r[0], r[1]) for r in pairs))  # the order, until one starts
    if startable:
        return now
    later: float | None = await conn.fetchval(sql.later, step, now)
    return earliest(opens, later)


async def throttled(conn: Conn, sql: FlowSql, step: str, control: FlowControl, now: float) -> Counter[str]:
    """How many ready deliveries of ``step`` an unlimited claim with ``control`` would hold back now, per
    limit (see ``QueueStore.step_stats``)."""
    checks = await admission(conn, sql, step, control, now)
    rows = await conn.fetch(sql.candidates, step, now)
    return look_ahead(checks, ((r[0], r[1]) for r in rows))[2]
