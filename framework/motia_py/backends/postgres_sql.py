"""Every statement of the PostgreSQL backend (the tables and functions are in :mod:`.postgres_schema`).

:class:`Sql` holds them for one schema, written with asyncpg's ``$n`` placeholders. The statement that
publishes (:attr:`Sql.publish`) is also the one :mod:`motia_py.transactional` runs on an application's own
connection, inside the application's transaction: :func:`publish_args` builds its arguments and
:func:`format_style` rewrites it for DB-API drivers (``%s``). Publishing sends ``NOTIFY`` on the schema's
channel (:func:`channel`), one per step that got work, which PostgreSQL delivers when the transaction
commits (and never when it rolls back).

Rows go in as arrays (``unnest``), so a publish or a batch of acknowledgements is one statement however
many rows it carries.

**Durability.** A publish (and a replay, and every state, lease and metadata write) commits as PostgreSQL
is configured, by default once it is on disk. What a worker writes about the deliveries it holds (claims,
acknowledgements with their outboxes, retries, dead letters, hand-backs, heartbeats) commits
asynchronously (``synchronous_commit = off`` for that transaction): a crash of the server may forget the
last fraction of a second of them, which puts those deliveries back as they were before (due again, or
leased until their lease runs out) and so delivers them again. At-least-once delivery holds and nothing
published is lost; in exchange a worker never waits for the disk. (PostgreSQL writes its log in order:
an asynchronous commit is durable once any later commit is.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
from msgspec import Struct

from .postgres_handle_sql import KeyRow, finish, take_keys, unless_held
from .postgres_schema import quote
from .records import DeadLetter, Delivery, Envelope, HandleState, Outgoing, new_id

_ENV: Final = "event_id, topic, data, trace_id, emitted_at, group_id, source, traceparent"  # Envelope's order
_FLOW: Final = "priority, rate_key, conc_key"  # a Target's flow attributes (schema version 2)
_PUBLISH_COLS: Final = f"id, step, {_ENV}, fifo_group, {_FLOW}"
_ARRAYS: Final = ("text", "text", "text", "text", "text", "text", "float8", "text", "text", "text", "text", "integer",
                  "text", "text", "float8")
"""The element types of the publish arrays: the columns of :data:`_PUBLISH_COLS`, then the delay."""
DEAD_COLS: Final = f"id, step, {_ENV}, attempts, error, traceback, failed_at, first_attempt_at, {_FLOW}"
_OF_DONE: Final = "WHERE r.parent IN (SELECT k FROM done) "  # the outbox rows of acknowledged deliveries
_LEASED: Final = "d.id = x.id AND d.attempts = x.attempt AND d.lease_until IS NOT NULL"  # this attempt's lease


def channel(schema: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel of a schema's queue wake-ups: notifications carry a step name."""
    return f"motia_py.{schema}"


def pubsub_channel(schema: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel of a schema's pub/sub messages (see :mod:`.postgres_realtime`)."""
    return f"motia_pubsub.{schema}"


def publish_rows(items: Sequence[Outgoing]) -> list[tuple[Any, ...]]:
    """One row per target of every item: the columns of a new delivery and its delay in seconds."""
    return [(new_id(), t.step, e.id, e.topic, e.data_json, e.trace_id, e.emitted_at, e.group_id, e.source,
             e.traceparent, (e.group_id or "") if t.fifo else None, t.priority, t.rate_key, t.concurrency_key,
             float(t.delay_s))
            for out in items for e in (out.envelope,) for t in out.targets]


def columns(rows: Sequence[tuple[Any, ...]], width: int = len(_ARRAYS)) -> list[list[Any]]:
    """Rows turned into one list per column (the arrays a statement unnests)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def publish_args(rows: Sequence[tuple[Any, ...]], now: float | None, schema: str) -> list[Any]:
    """The arguments of :attr:`Sql.publish`: the arrays, the time (None: the server's) and the channel."""
    return [*columns(rows), now, channel(schema)]


_PLACEHOLDER: Final = re.compile(r"\$(\d+)")


def format_style(sql: str, args: Sequence[Any]) -> tuple[str, list[Any]]:
    """``sql`` with ``$n`` placeholders turned into ``%s`` (the DB-API "format" style of psycopg 2 and 3,
    Django and SQLAlchemy's drivers), and its arguments in the order the placeholders appear."""
    order = [int(m.group(1)) - 1 for m in _PLACEHOLDER.finditer(sql)]
    return _PLACEHOLDER.sub("%s", sql), [args[i] for i in order]


ASYNC_COMMIT: Final = "set_config('synchronous_commit', 'off', true)"
"""Evaluated inside a statement, its transaction commits without waiting for the disk (see the module
docstring for which statements do)."""


def _notify(ch: str, source: str, *, durable: bool = True) -> str:
    """A SELECT that sends one notification on ``ch`` per distinct step of ``source`` (and, unless
    ``durable``, makes the statement's commit asynchronous)."""
    also = "" if durable else f", {ASYNC_COMMIT}"
    return f"SELECT count(pg_notify({ch}, w.step)){also} FROM (SELECT DISTINCT step FROM {source}) w"


def _insert(table: str, now: str, first: int, *, parent: bool = False, where: str = "") -> str:
    """INSERT of the publish arrays from ``$first`` on (after an ``integer[]`` of parents, with ``parent``),
    due at ``now`` plus each row's delay, in the arrays' order; RETURNING the steps."""
    kinds = (("integer",) if parent else ()) + _ARRAYS
    names = ("parent, " if parent else "") + _PUBLISH_COLS + ", delay_s"
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(kinds))
    values = ", ".join("r." + c for c in _PUBLISH_COLS.split(", "))
    return (f"INSERT INTO {table} ({_PUBLISH_COLS}, available_at) SELECT {values}, {now} + r.delay_s "
            f"FROM unnest({arrays}) WITH ORDINALITY AS r({names}, ord) {where}ORDER BY r.ord RETURNING step")


def _completes(s: str) -> tuple[str, str]:
    """The acknowledgement of a batch, without and with the outboxes' idempotency keys.

    $1/$2/$3 the (id, attempt, result) of each delivery to acknowledge; $4 the acknowledgement (1-based)
    each outbox row belongs to, $5..$19 the rows, $20 the time, $21 the channel; with keys, $22 the
    acknowledgement each key belongs to, $23..$26 the keys (see :func:`.postgres_handle_sql.key_args`).
    The finished record of each acknowledged delivery (``succeeded``, with its result) is written by the
    same statement; an outbox event whose key is held is not published.
    """
    d = f"{s}.deliveries"
    head = ("WITH x AS (SELECT * FROM unnest($1::text[], $2::integer[], $3::text[]) WITH ORDINALITY "
            f"AS x(id, attempt, result, k)), done AS (DELETE FROM {d} d USING x WHERE {_LEASED} "
            "RETURNING x.k, x.result, d.*), "
            # one record per (event, step), should a batch end two deliveries of one
            "fin AS (" + finish(s, "(SELECT DISTINCT ON (event_id, step) * FROM done ORDER BY event_id, step, k) f",
                                HandleState.SUCCEEDED, f"{s}.clock($20)", result="f.result") + "), ")
    tail = ("woken AS (SELECT step FROM ins UNION SELECT step FROM done WHERE fifo_group IS NOT NULL), "
            "sent AS (SELECT count(pg_notify($21, step)) AS n FROM woken) "
            f"SELECT k, fifo_group IS NOT NULL, (SELECT n FROM sent), {ASYNC_COMMIT} FROM done")
    plain = head + f"ins AS ({_insert(d, f'{s}.clock($20)', 4, parent=True, where=_OF_DONE)}), " + tail
    keys = ("y AS (SELECT * FROM unnest($22::integer[], $23::text[], $24::text[], $25::text[], $26::float8[]) "
            "WITH ORDINALITY AS y(parent, topic, key, event_id, ttl, ord) WHERE y.parent IN (SELECT k FROM done)), "
            f"taken AS ({take_keys(s, 'y', f'{s}.clock($20)')}), ")
    keyed = (head + keys + "ins AS ("
             + _insert(d, f"{s}.clock($20)", 4, parent=True, where=f"{_OF_DONE}AND {unless_held('y')} ") + "), "
             + tail)
    return plain, keyed


def _publish_keyed(s: str) -> str:
    """The publish of :attr:`Sql.publish` taking the events' idempotency keys first: $1..$15 the rows'
    columns and delays, $16 the time, $17 the channel, $18..$21 the keys; the rows of an event whose key
    is held are not inserted. Returns the ids of the events that took their key."""
    d, where = f"{s}.deliveries", f"WHERE {unless_held('y')} "
    return ("WITH y AS (SELECT * FROM unnest($18::text[], $19::text[], $20::text[], $21::float8[]) "
            "WITH ORDINALITY AS y(topic, key, event_id, ttl, ord)), "
            f"taken AS ({take_keys(s, 'y', f'{s}.clock($16)')}), "
            f"ins AS ({_insert(d, f'{s}.clock($16)', 1, where=where)}) "
            "SELECT ARRAY(SELECT event_id FROM taken), "
            "(SELECT count(pg_notify($17, w.step)) FROM (SELECT DISTINCT step FROM ins) w)")


def heads(d: str, step: str = "$1") -> str:
    """CTEs ``grp`` (the message groups of step ``step``, $1 by default) and ``head`` (the seq of each
    group's head, with the group): a skip-scan of the FIFO index, one probe per group, so a long group
    costs nothing."""
    return ("WITH RECURSIVE grp(g) AS ("
            f"(SELECT fifo_group FROM {d} WHERE step = {step} AND fifo_group IS NOT NULL ORDER BY fifo_group "
            f"LIMIT 1) UNION ALL SELECT (SELECT fifo_group FROM {d} WHERE step = {step} AND fifo_group > grp.g "
            "ORDER BY fifo_group LIMIT 1) FROM grp WHERE grp.g IS NOT NULL), "
            f"head AS (SELECT (SELECT seq FROM {d} WHERE step = {step} AND fifo_group = grp.g ORDER BY seq "
            "LIMIT 1) AS seq FROM grp WHERE grp.g IS NOT NULL) ")


def next_due_of(d: str, clock: str, step: str, now: str) -> str:
    """Seconds from ``now`` until step ``step`` has something due (a due time, a lease expiry, a FIFO
    head); NULL when nothing is scheduled. Each part is an index probe."""
    return ("LEAST("
            f"(SELECT min(available_at) FROM {d} WHERE step = {step} AND fifo_group IS NULL AND lease_until IS NULL), "
            f"(SELECT min(available_at) FROM {d} WHERE step = {step} AND lease_until IS NOT NULL), "
            f"({heads(d, step)}SELECT min(d.available_at) FROM head JOIN {d} d ON d.seq = head.seq)"
            f") - {clock}({now})")


class Sql(Struct, frozen=True):
    """The statements of one schema (see the module docstring)."""

    schema: str
    publish: str
    publish_keyed: str
    complete: str
    complete_keyed: str
    claim: str
    claim_flow: str
    hand_back: str
    retry: str
    dead_letter: str
    extend: str
    next_due: str
    next_due_many: str
    dlq_replay: str
    stats: str
    stats_fifo_due: str

    @classmethod
    def build(cls, schema: str) -> Sql:
        """The statements on the tables of ``schema``."""
        s = quote(schema)
        d = f"{s}.deliveries"
        # $1..$15 the rows' columns and delays, $16 the time, $17 the channel
        publish = f"WITH ins AS ({_insert(d, f'{s}.clock($16)', 1)}) " + _notify("$17", "ins")
        complete, complete_keyed = _completes(s)
        hand_back = (
            "WITH x AS (SELECT * FROM unnest($1::text[], $2::integer[], $3::boolean[], $4::text[]) "
            "AS x(id, attempt, expired, last_owner)), "
            f"u AS (UPDATE {d} d SET attempts = d.attempts - 1, "
            f"lease_until = CASE WHEN x.expired THEN {s}.clock($5) END, available_at = {s}.clock($5), "
            "owner = CASE WHEN x.expired THEN x.last_owner ELSE d.owner END, "
            "first_delivered_at = CASE WHEN NOT x.expired AND d.attempts = 1 THEN NULL "
            f"ELSE d.first_delivered_at END FROM x WHERE {_LEASED} RETURNING d.step) "
            + _notify("$6", "u", durable=False))
        one = "WITH x AS (SELECT $1::text AS id, $2::integer AS attempt), "
        retry = (one + f"u AS (UPDATE {d} d SET lease_until = NULL, available_at = {s}.clock($3) + $4::float8 "
                 f"FROM x WHERE {_LEASED} RETURNING d.step) " + _notify("$5", "u", durable=False))
        dead = finish(s, "gone", HandleState.DEAD, f"{s}.clock($6)", attempts="COALESCE($3::integer, attempts)",
                      error="$4::text")  # the finished record, written with the dead letter
        dead_letter = (
            one + f"gone AS (DELETE FROM {d} d USING x WHERE {_LEASED} RETURNING d.*), "
            f"ins AS (INSERT INTO {s}.dead_letters ({DEAD_COLS}) SELECT id, step, {_ENV}, "
            f"COALESCE($3::integer, attempts), $4::text, $5::text, {s}.clock($6), first_delivered_at, {_FLOW} "
            "FROM gone), "
            f"fin AS ({dead}), "
            "u AS (SELECT step FROM gone WHERE fifo_group IS NOT NULL) " + _notify("$7", "u", durable=False))
        extend = (f"UPDATE {d} d SET lease_until = {s}.clock($3) + $4::float8, "
                  f"available_at = {s}.clock($3) + $4::float8 "
                  f"FROM unnest($1::text[], $2::integer[]) AS x(id, attempt) WHERE {_LEASED} RETURNING {ASYNC_COMMIT}")
        next_due = "SELECT " + next_due_of(d, f"{s}.clock", "$1", "$2")  # seconds until step $1 has work
        # per step of the array $1: the same, in one statement (one round trip for every idle step)
        next_due_many = f"SELECT w.step, {next_due_of(d, f'{s}.clock', 'w.step', '$2')} FROM unnest($1::text[]) w(step)"
        dlq_replay = (
            f"WITH gone AS (DELETE FROM {s}.dead_letters WHERE id = $1 RETURNING step, {_ENV}, {_FLOW}), "
            f"u AS (INSERT INTO {d} (id, step, {_ENV}, {_FLOW}, available_at) "
            f"SELECT $2::text, step, {_ENV}, {_FLOW}, {s}.clock($3) FROM gone RETURNING step) "
            f"SELECT w.step, pg_notify($4, w.step) FROM u w")
        stats = (  # per step: ready, delayed, leased, the earliest lease expiry, the earliest delayed
            # standard delivery, the oldest ready delivery's due time
            "SELECT step, count(*) FILTER (WHERE lease_until IS NULL AND available_at <= t.now), "
            "count(*) FILTER (WHERE lease_until IS NULL AND available_at > t.now), "
            "count(*) FILTER (WHERE lease_until IS NOT NULL), min(lease_until), "
            "min(available_at) FILTER (WHERE fifo_group IS NULL AND lease_until IS NULL AND available_at > t.now), "
            "min(available_at) FILTER (WHERE lease_until IS NULL AND available_at <= t.now) "
            f"FROM {d}, (SELECT {s}.clock($1) AS now) t GROUP BY step")
        # a FIFO group's delayed head is due at its time; the rows behind it wait for the head
        stats_fifo_due = (
            f"SELECT min(d.available_at) FROM {d} d WHERE d.fifo_group IS NOT NULL AND d.lease_until IS NULL "
            f"AND d.available_at > {s}.clock($1) AND d.seq = (SELECT min(h.seq) FROM {d} h "
            "WHERE h.step = d.step AND h.fifo_group = d.fifo_group)")
        flagged = f"SELECT c.*, EXISTS (SELECT 1 FROM {s}.cancels WHERE event_id = c.r_event_id) FROM "
        return cls(schema=schema, publish=publish, publish_keyed=_publish_keyed(s), complete=complete,
                   complete_keyed=complete_keyed, claim=flagged + f"{s}.claim($1, $2, $3, $4, $5) c",
                   claim_flow=flagged + f"{s}.claim_flow($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) c",
                   hand_back=hand_back, retry=retry,
                   dead_letter=dead_letter, extend=extend, next_due=next_due, next_due_many=next_due_many,
                   dlq_replay=dlq_replay, stats=stats, stats_fifo_due=stats_fifo_due)

    def table(self, name: str) -> str:
        """A table of the schema, quoted (for the simple statements written where they are used)."""
        return f"{quote(self.schema)}.{name}"

    def clock(self, placeholder: str) -> str:
        """The backend's time in SQL: ``placeholder`` (an injected clock's reading) or the server's."""
        return f"{quote(self.schema)}.clock({placeholder})"


Completion = tuple[Delivery, list[tuple[Any, ...]], str | None, list[KeyRow]]
"""One acknowledgement: the delivery, its outbox's rows, its result, the outbox's keys."""


def complete_args(calls: Sequence[Completion], now: float | None, schema: str) -> list[Any]:
    """The arguments of :attr:`Sql.complete` for a batch of acknowledgements with their outboxes' rows
    and results, and of :attr:`Sql.complete_keyed` when some outbox has keys."""
    rows = [(k, *row) for k, (_, outbox, _, _) in enumerate(calls, 1) for row in outbox]
    args = [[c[0].id for c in calls], [c[0].attempt for c in calls], [c[2] for c in calls],
            *columns(rows, 1 + len(_ARRAYS)), now, channel(schema)]
    keys = [(k, *key) for k, (_, _, _, outbox_keys) in enumerate(calls, 1) for key in outbox_keys]
    return args + columns(keys, 5) if keys else args


def delivery_from(row: asyncpg.Record, step: str, limited: bool = False) -> Delivery:
    """A :class:`Delivery` from a row of :attr:`Sql.claim` or :attr:`Sql.claim_flow` (``limited``: claimed
    under a concurrency limit); one of a cancelled event is flagged."""
    return Delivery(id=row[0], step=step, envelope=Envelope(*row[3:11]), attempt=row[1],
                    first_delivered_at=row[2], expired=row[11], last_owner=row[12], priority=row[13],
                    rate_key=row[14], concurrency_key=row[15], limited=limited, cancelled=row[16])


def dead_from(row: asyncpg.Record) -> DeadLetter:
    """A :class:`DeadLetter` from the columns :data:`DEAD_COLS`."""
    return DeadLetter(id=row[0], step=row[1], envelope=Envelope(*row[2:10]), attempts=row[10], error=row[11],
                      traceback=row[12], failed_at=row[13], first_attempt_at=row[14], priority=row[15],
                      rate_key=row[16], concurrency_key=row[17])
