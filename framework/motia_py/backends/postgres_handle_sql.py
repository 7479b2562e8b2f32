"""The statements of the PostgreSQL backend's job-handle store (the tables are version 3 of
:mod:`.postgres_schema`), and the pieces the queue's own statements (:mod:`.postgres_sql`) use to keep
the handles in the same statement as the queue change.

As in the SQLite backend (:mod:`.sqlite_handles`), a live delivery is its ``deliveries`` row (found
through the ``deliveries_event`` index): publishing, claiming and handing back write nothing more. The
``handles`` table holds one row per (event, step) for what the row does not: the finished record
(``state`` set, written by the statement that deletes the delivery), the last error of a failed attempt
and the latest progress (``state`` NULL while the delivery lives). ``cancels`` marks cancelled events
whose deliveries may still be leased, and ``keys`` holds idempotency keys with their expiry, taken by
``INSERT ... ON CONFLICT`` in the statement that publishes (so of concurrent publishers of one key,
exactly one publishes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from msgspec import Struct

from .postgres_schema import quote
from .records import HandleState, Outgoing

KeyRow = tuple[str, str, str, float]
"""(topic, key, event id, time to live in seconds) of one keyed event to publish."""
_LEASED: Final = "d.id = x.id AND d.attempts = x.attempt AND d.lease_until IS NOT NULL"  # this attempt's lease
_PRUNE_BATCH: Final = 5000  # events looked at per prune (bounds one prune's statements)


def key_rows(items: Sequence[Outgoing]) -> list[KeyRow]:
    """The idempotency keys of the keyed ``items``."""
    return [(o.envelope.topic, o.key, o.envelope.id, float(o.key_ttl_s)) for o in items if o.key is not None]


def finish(s: str, source: str, state: HandleState, now: str, *, attempts: str = "attempts",
           error: str = "NULL::text", result: str = "NULL::text") -> str:
    """INSERT of the finished records (``state``, finished at ``now``) of the deleted delivery rows of
    ``source`` (a CTE returning the ``deliveries`` columns); a ``cancelled`` record keeps the step's last
    error. ``s`` is the quoted schema."""
    return (f"INSERT INTO {s}.handles AS h (event_id, step, topic, trace_id, emitted_at, state, delivery_id, "
            "attempts, started_at, finished_at, error, result) "
            f"SELECT event_id, step, topic, trace_id, emitted_at, '{state.value}', id, {attempts}, "
            f"first_delivered_at, {now}, {error}, {result} FROM {source} "
            "ON CONFLICT (event_id, step) DO UPDATE SET state = excluded.state, delivery_id = excluded.delivery_id, "
            "attempts = excluded.attempts, started_at = excluded.started_at, finished_at = excluded.finished_at, "
            "error = CASE WHEN excluded.state = 'cancelled' THEN h.error ELSE excluded.error END, "
            "result = excluded.result")


def take_keys(s: str, source: str, now: str) -> str:
    """INSERT that takes each (topic, key) of ``source`` (columns topic, key, event_id, ttl, ord; the first
    of a pair in ``ord`` order) unless an unexpired one holds it; RETURNING the event ids that took theirs.
    The conflicting row is locked and read as committed, so concurrent publishers of a key queue up and
    exactly one takes it."""
    return (f"INSERT INTO {s}.keys AS kx (topic, key, event_id, expires_at) "
            f"SELECT DISTINCT ON (topic, key) topic, key, event_id, {now} + ttl FROM {source} ORDER BY topic, key, ord "
            "ON CONFLICT (topic, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at "
            f"WHERE kx.expires_at <= {now} RETURNING event_id")


def unless_held(keyed: str) -> str:
    """The condition on an outbox row ``r`` that its event has no key (none in ``keyed``) or took it
    (``taken``)."""
    return f"(r.event_id NOT IN (SELECT event_id FROM {keyed}) OR r.event_id IN (SELECT event_id FROM taken))"


def successor(prefix: str) -> str | None:
    """The least string after every string that starts with ``prefix`` (byte order, as ``COLLATE "C"``
    compares UTF-8); None when there is none (``prefix`` empty or only U+10FFFF)."""
    head = prefix.rstrip("\U0010ffff")
    if not head:
        return None
    code = ord(head[-1]) + 1
    return head[:-1] + chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)


class HandleSql(Struct, frozen=True):
    """The handle store's statements on one schema (see the module docstring)."""

    progress: str
    get: str
    find: str
    find_all: str
    cancel_queued: str
    cancel_mark: str
    cancel_requests: str
    cancel_settle: str
    retry_with_error: str
    scheduled: str
    prune_candidates: str
    prune: str

    @classmethod
    def build(cls, schema: str) -> HandleSql:
        """The statements on the tables of ``schema``."""
        s = quote(schema)
        d, h = f"{s}.deliveries", f"{s}.handles"
        one = "WITH x AS (SELECT $1::text AS id, $2::integer AS attempt), "
        return cls(
            # $1..$5 the event id, step, topic, trace id and emission time, $6 the progress
            progress=(f"INSERT INTO {h} (event_id, step, topic, trace_id, emitted_at, progress) "
                      "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, step) DO UPDATE "
                      "SET progress = excluded.progress"),
            # one statement, so one snapshot: a step is either live or finished, never neither
            get=(f"SELECT 0, step, state, delivery_id, attempts, started_at, finished_at, error, result, progress, "
                 f"topic, trace_id, emitted_at, NULL::boolean, NULL::float8 FROM {h} WHERE event_id = $1 "
                 f"UNION ALL SELECT 1, step, NULL, id, attempts, first_delivered_at, NULL, NULL, NULL, NULL, topic, "
                 f"trace_id, emitted_at, lease_until IS NOT NULL, available_at FROM {d} WHERE event_id = $1 "
                 f"UNION ALL SELECT 2, NULL, NULL, NULL, NULL, {s}.clock($2), NULL, NULL, NULL, NULL, NULL, NULL, "
                 f"NULL, EXISTS (SELECT 1 FROM {s}.cancels WHERE event_id = $1), NULL"),
            # $1 the prefix, $2 the limit, $3 its successor (find only): two index ranges
            find=(f"SELECT event_id FROM {h} WHERE event_id >= $1 AND event_id < $3 UNION "
                  f"SELECT event_id FROM {d} WHERE event_id >= $1 AND event_id < $3 ORDER BY 1 LIMIT $2"),
            find_all=(f"SELECT event_id FROM {h} WHERE event_id >= $1 UNION "
                      f"SELECT event_id FROM {d} WHERE event_id >= $1 ORDER BY 1 LIMIT $2"),
            # $1 the event, $2 the time, $3 the channel: the deliveries not leased end as cancelled
            cancel_queued=(f"WITH gone AS (DELETE FROM {d} d WHERE event_id = $1 AND lease_until IS NULL "
                           f"RETURNING d.*), fin AS ({finish(s, 'gone', HandleState.CANCELLED, f'{s}.clock($2)')}) "
                           "SELECT step, (SELECT count(pg_notify($3, w.step)) FROM (SELECT DISTINCT step FROM gone "
                           "WHERE fifo_group IS NOT NULL) w) FROM gone"),
            # $1 the event, $2 the time, $3 whether some were cancelled: the running ones are asked to stop
            cancel_mark=(f"WITH live AS (SELECT step FROM {d} WHERE event_id = $1 AND lease_until IS NOT NULL), "
                         f"mark AS (INSERT INTO {s}.cancels SELECT $1, {s}.clock($2) WHERE $3::boolean "
                         "OR EXISTS (SELECT 1 FROM live) ON CONFLICT (event_id) DO UPDATE SET at = excluded.at) "
                         "SELECT step FROM live"),
            cancel_requests=f"SELECT event_id FROM {s}.cancels WHERE event_id = ANY($1::text[])",
            # $1/$2 the delivery's id and attempt, $3 the time, $4 the channel
            cancel_settle=(one + f"gone AS (DELETE FROM {d} d USING x WHERE {_LEASED} RETURNING d.*), "
                           f"fin AS ({finish(s, 'gone', HandleState.CANCELLED, f'{s}.clock($3)')}) "
                           "SELECT count(pg_notify($4, step)), set_config('synchronous_commit', 'off', true) "
                           "FROM gone"),
            retry_with_error=_retry_with_error(s, one),
            # $1 the time, $2 the topic or NULL, $3 the limit
            scheduled=(f"SELECT event_id, step, topic, trace_id, available_at, emitted_at, id FROM {d} "
                       f"WHERE lease_until IS NULL AND attempts = 0 AND available_at > {s}.clock($1) "
                       "AND ($2::text IS NULL OR topic = $2) ORDER BY available_at, event_id, step LIMIT $3"),
            prune_candidates=_prune_candidates(h),
            # $1 the events, $2 the time
            prune=(f"WITH gone AS (DELETE FROM {h} h WHERE event_id = ANY($1::text[]) AND NOT EXISTS "
                   f"(SELECT 1 FROM {d} d WHERE d.event_id = h.event_id) RETURNING event_id), "
                   f"c AS (DELETE FROM {s}.cancels c WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE d.event_id = "
                   f"c.event_id)), k AS (DELETE FROM {s}.keys WHERE expires_at <= {s}.clock($2)) "
                   "SELECT count(DISTINCT event_id) FROM gone"))


def _retry_with_error(s: str, one: str) -> str:
    """$1/$2 the delivery's id and attempt, $3 its event, $4 the time, $5 the delay, $6 the error, $7 the
    channel: the retry keeping the error, or (the event was cancelled) the end of the delivery as
    cancelled; (rows changed, ended) and one notification for the step."""
    d = f"{s}.deliveries"
    return (one + f"c AS (SELECT EXISTS (SELECT 1 FROM {s}.cancels WHERE event_id = $3) AS yes), "
            f"u AS (UPDATE {d} d SET lease_until = NULL, available_at = {s}.clock($4) + $5::float8 FROM x, c "
            f"WHERE {_LEASED} AND NOT c.yes RETURNING d.*), "
            f"gone AS (DELETE FROM {d} d USING x, c WHERE {_LEASED} AND c.yes RETURNING d.*), "
            f"note AS (INSERT INTO {s}.handles (event_id, step, topic, trace_id, emitted_at, error) "
            "SELECT event_id, step, topic, trace_id, emitted_at, $6 FROM u "
            "ON CONFLICT (event_id, step) DO UPDATE SET error = excluded.error), "
            f"fin AS ({finish(s, 'gone', HandleState.CANCELLED, f'{s}.clock($4)')}), "
            "w AS (SELECT step FROM u UNION ALL SELECT step FROM gone) "
            "SELECT count(*), (SELECT count(*) FROM gone), count(pg_notify($7, w.step)), "
            "set_config('synchronous_commit', 'off', true) FROM w")


def _prune_candidates(h: str) -> str:
    """$1 before, $2 keep: events (about :data:`_PRUNE_BATCH` at most) whose records are all finished, the
    last before ``before``, and the oldest finished past the ``keep`` newest (counted only when there are
    more finished records than ``keep``). The prune keeps those that are live again."""
    return (f"WITH old AS (SELECT DISTINCT event_id FROM (SELECT event_id FROM {h} WHERE finished_at < $1 "
            f"ORDER BY finished_at LIMIT {_PRUNE_BATCH}) o), "
            f"aged AS (SELECT h.event_id FROM {h} h JOIN old USING (event_id) GROUP BY h.event_id "
            "HAVING count(h.finished_at) = count(*) AND max(h.finished_at) < $1), "
            f"surplus AS (SELECT event_id FROM {h} WHERE finished_at IS NOT NULL "
            f"AND (SELECT count(*) FROM {h} WHERE finished_at IS NOT NULL) > $2 GROUP BY event_id "
            f"ORDER BY max(finished_at) DESC, event_id OFFSET $2 LIMIT {_PRUNE_BATCH}) "
            "SELECT event_id FROM aged UNION SELECT event_id FROM surplus")


def key_args(keys: Sequence[KeyRow]) -> list[list[Any]]:
    """The key arrays of a keyed publish (topics, keys, event ids, times to live)."""
    return [[k[i] for k in keys] for i in range(4)]
