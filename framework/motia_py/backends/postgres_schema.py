"""The PostgreSQL backend's schema: its name, its tables and functions, and creating or migrating it.

Everything lives in one schema (``motia`` by default; see :func:`schema_name`), so that one database can
hold several projects and the application's own tables. The version is kept in ``<schema>.schema_version``;
:func:`migrate` brings a schema to :data:`SCHEMA_VERSION` under a transaction-level advisory lock, so
several workers starting at once on a new database create it once. Versions: 1 the queue (deliveries,
dead letters), state, leases, metadata, traces, the ``clock`` function (the backend's time) and the
``claim`` function; 2 priorities and flow control (:mod:`.postgres_flow_schema`); 3 job handles (see
:mod:`.postgres_handle_sql`): deliveries' ``event_id`` compared in byte order and indexed, the ``handles``
(finished records with an index of finish times, last errors, progress), ``cancels`` and ``keys``
(idempotency keys) tables. Before version 3 the handles were kept in the state store's reserved namespace;
the migration leaves those records where they are, and nothing reads them any more.

Times are epoch seconds as ``double precision``, the same IEEE doubles as Python's floats, so a delay
added here and one added in Python agree to the last bit. Keys are ``COLLATE "C"``: byte order, as
Python sorts them.
"""

from __future__ import annotations

import re
from typing import Final

import asyncpg

from ..errors import BackendUnavailableError
from .postgres_flow_schema import flow_ddl

SCHEMA_VERSION: Final = 3
DEFAULT_SCHEMA: Final = "motia"
LOCK_CLASS: Final = 0x6D6F7469  # "moti": the first key of every advisory lock motia-py takes

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, or one lent by a pool."""
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,47}")


def schema_name(name: str) -> str:
    """``name`` checked as a schema name: a letter or ``_``, then letters, digits, ``_`` or ``-``, at most
    48 characters (so that the notification channel built on it stays under PostgreSQL's 63).

    Raises:
        BackendUnavailableError: the name is not one.
    """
    if not _NAME.fullmatch(name) or name.lower().startswith("pg_"):
        raise BackendUnavailableError(
            f"bad PostgreSQL schema name {name!r}: use up to 48 letters, digits, '_' or '-', starting with a "
            "letter or '_' (and not 'pg_')")
    return name


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _ddl_v1(s: str, schema: str) -> str:
    """Version 1; ``s`` is the quoted schema."""
    env = ("event_id text NOT NULL, topic text NOT NULL, data text NOT NULL, trace_id text NOT NULL, "
           "emitted_at float8 NOT NULL, group_id text, source text, traceparent text")
    return f"""
CREATE TABLE {s}.deliveries (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- publish order
    id text COLLATE "C" NOT NULL UNIQUE,
    step text COLLATE "C" NOT NULL,
    {env},
    fifo_group text COLLATE "C",  -- NULL on standard queues; the message group ('' if none) on FIFO ones
    available_at float8 NOT NULL, -- when it is due; while leased, when the lease expires
    attempts integer NOT NULL DEFAULT 0,
    lease_until float8,           -- NULL unless leased
    first_delivered_at float8,
    owner text                    -- the worker (host:pid) that holds the lease, or held it last
);
CREATE INDEX deliveries_due ON {s}.deliveries (step, available_at, seq)
    WHERE fifo_group IS NULL AND lease_until IS NULL;
CREATE INDEX deliveries_leased ON {s}.deliveries (step, available_at) WHERE lease_until IS NOT NULL;
CREATE INDEX deliveries_fifo ON {s}.deliveries (step, fifo_group, seq) WHERE fifo_group IS NOT NULL;
CREATE TABLE {s}.dead_letters (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text COLLATE "C" NOT NULL UNIQUE,
    step text COLLATE "C" NOT NULL,
    {env},
    attempts integer NOT NULL, error text NOT NULL, traceback text NOT NULL,
    failed_at float8 NOT NULL, first_attempt_at float8
);
CREATE INDEX dead_letters_failed ON {s}.dead_letters (failed_at);
CREATE TABLE {s}.state (
    namespace text COLLATE "C" NOT NULL, grp text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (namespace, grp, key)
);
CREATE TABLE {s}.leases (key text COLLATE "C" PRIMARY KEY, owner text NOT NULL, expires_at float8 NOT NULL);
CREATE TABLE {s}.meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE {s}.trace_runs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, trace_id text COLLATE "C" NOT NULL, run text NOT NULL);
CREATE INDEX trace_runs_trace ON {s}.trace_runs (trace_id, seq);
CREATE TABLE {s}.traces (trace_id text COLLATE "C" PRIMARY KEY, last float8 NOT NULL);
CREATE INDEX traces_last ON {s}.traces (last);
-- the backend's time: the one given (an injected clock), else the server's, so hosts agree
CREATE FUNCTION {s}.clock(given float8) RETURNS float8 LANGUAGE sql STABLE PARALLEL SAFE
    AS 'SELECT COALESCE(given, extract(epoch FROM statement_timestamp())::float8)';
{_claim_function(s, schema)}
"""


def _claim_function(s: str, schema: str) -> str:
    """The claim of :meth:`QueueStore.claim` as one call: an expired lease alone, else due standard
    deliveries, then the free heads of FIFO groups. Each part locks its rows with ``FOR UPDATE SKIP
    LOCKED``; the FIFO part runs under an advisory lock per step, so two claimers never lease two
    events of one group (each statement of this VOLATILE function sees what was committed before it)."""
    leased = ("attempts = d.attempts + 1, lease_until = t + p_lease, available_at = t + p_lease, "
              "first_delivered_at = COALESCE(d.first_delivered_at, t), owner = p_owner")
    out = ("u.id, u.attempts, u.first_delivered_at, u.event_id, u.topic, u.data, u.trace_id, u.emitted_at, "
           "u.group_id, u.source, u.traceparent")
    ret = ("d.seq, d.id, d.attempts, d.first_delivered_at, d.event_id, d.topic, d.data, d.trace_id, "
           "d.emitted_at, d.group_id, d.source, d.traceparent")
    lock_key = f"hashtext({_literal(schema + ':')} || p_step)"
    return f"""
CREATE FUNCTION {s}.claim(p_step text, p_limit integer, p_lease float8, p_now float8, p_owner text)
RETURNS TABLE (r_id text, r_attempt integer, r_first_delivered_at float8, r_event_id text, r_topic text,
               r_data text, r_trace_id text, r_emitted_at float8, r_group_id text, r_source text,
               r_traceparent text, r_expired boolean, r_last_owner text)
LANGUAGE plpgsql AS $claim$
DECLARE
    t float8 := COALESCE(p_now, extract(epoch FROM clock_timestamp())::float8);
    n integer;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);  -- a lost claim only delivers again
    RETURN QUERY
    WITH e AS (
        SELECT d.seq, d.owner FROM {s}.deliveries d
        WHERE d.step = p_step AND d.lease_until IS NOT NULL AND d.available_at <= t
        ORDER BY d.available_at, d.seq LIMIT 1 FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {leased} FROM e WHERE d.seq = e.seq RETURNING {ret}, e.owner AS last_owner
    )
    SELECT {out}, true, u.last_owner FROM u;
    IF FOUND THEN
        RETURN;  -- an expired lease comes alone
    END IF;
    RETURN QUERY
    WITH c AS (
        SELECT d.seq, d.available_at FROM {s}.deliveries d
        WHERE d.step = p_step AND d.fifo_group IS NULL AND d.lease_until IS NULL AND d.available_at <= t
        ORDER BY d.available_at, d.seq LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {leased} FROM c WHERE d.seq = c.seq RETURNING {ret}, c.available_at AS due
    )
    SELECT {out}, false, NULL::text FROM u ORDER BY u.due, u.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n >= p_limit OR NOT EXISTS (
            SELECT 1 FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group IS NOT NULL) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {lock_key});
    RETURN QUERY
    WITH RECURSIVE grp(g) AS (
        (SELECT d.fifo_group FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group IS NOT NULL
         ORDER BY d.fifo_group LIMIT 1)
        UNION ALL
        SELECT (SELECT d.fifo_group FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group > grp.g
                ORDER BY d.fifo_group LIMIT 1)
        FROM grp WHERE grp.g IS NOT NULL
    ), head AS (
        SELECT grp.g, (SELECT d.seq FROM {s}.deliveries d WHERE d.step = p_step AND d.fifo_group = grp.g
                       ORDER BY d.seq LIMIT 1) AS seq
        FROM grp WHERE grp.g IS NOT NULL
    ), c AS (
        SELECT d.seq FROM {s}.deliveries d JOIN head ON d.seq = head.seq
        WHERE d.lease_until IS NULL AND d.available_at <= t
          AND NOT EXISTS (SELECT 1 FROM {s}.deliveries x WHERE x.step = p_step AND x.lease_until IS NOT NULL
                          AND x.fifo_group = head.g)
        ORDER BY d.seq LIMIT p_limit - n FOR UPDATE OF d SKIP LOCKED
    ), u AS (
        UPDATE {s}.deliveries d SET {leased} FROM c WHERE d.seq = c.seq RETURNING {ret}
    )
    SELECT {out}, false, NULL::text FROM u ORDER BY u.seq;
END
$claim$;
"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ddl_v2(s: str, schema: str) -> str:
    """Version 2: priorities and flow control (see :mod:`.postgres_flow_schema`)."""
    return flow_ddl(s, schema, LOCK_CLASS)


def _ddl_v3(s: str, schema: str) -> str:
    """Version 3: job handles (see :mod:`.postgres_handle_sql`). ``event_id`` becomes ``COLLATE "C"``
    (no rewrite of the table: the type stays text), so that prefix ranges and sorting are byte order."""
    return f"""
ALTER TABLE {s}.deliveries ALTER COLUMN event_id TYPE text COLLATE "C";
CREATE INDEX deliveries_event ON {s}.deliveries (event_id);
CREATE TABLE {s}.handles (
    event_id text COLLATE "C" NOT NULL, step text COLLATE "C" NOT NULL,
    topic text NOT NULL, trace_id text NOT NULL, emitted_at float8 NOT NULL,
    state text,                   -- succeeded | dead | cancelled once finished; NULL: notes of a live delivery
    delivery_id text, attempts integer NOT NULL DEFAULT 0, started_at float8, finished_at float8,
    error text, result text, progress text,
    PRIMARY KEY (event_id, step)
);
CREATE INDEX handles_finished ON {s}.handles (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE {s}.cancels (event_id text COLLATE "C" PRIMARY KEY, at float8 NOT NULL);
CREATE TABLE {s}.keys (
    topic text COLLATE "C" NOT NULL, key text COLLATE "C" NOT NULL, event_id text COLLATE "C" NOT NULL,
    expires_at float8 NOT NULL,
    PRIMARY KEY (topic, key)
);
"""


MIGRATIONS: Final = {1: _ddl_v1, 2: _ddl_v2, 3: _ddl_v3}
"""Version -> the DDL that brings the previous version to it (given the quoted schema and its name)."""


async def migrate(conn: Conn, schema: str) -> None:
    """Create the schema or bring it to :data:`SCHEMA_VERSION` (a no-op when it is there already).

    Several processes may call this at once: the work is done under a transaction-level advisory lock,
    by the first to take it; the others find the schema current once they get the lock.

    Raises:
        BackendUnavailableError: the schema is newer than this motia-py knows.
        asyncpg.PostgresError: the database refused (no privilege to create the schema, ...).
    """
    s = quote(schema)
    if await _version(conn, schema) == SCHEMA_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, schema)
        if not await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)")
        version = await _version(conn, schema) or 0
        for n in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[n](s, schema))
        if version < SCHEMA_VERSION:
            await conn.execute(f"DELETE FROM {s}.schema_version")
            await conn.execute(f"INSERT INTO {s}.schema_version VALUES ($1)", SCHEMA_VERSION)


async def _version(conn: Conn, schema: str) -> int | None:
    """The schema's version; None when it has none yet.

    Raises:
        BackendUnavailableError: it is newer than this motia-py supports.
    """
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote(schema)}.schema_version")
    if not exists:
        return None
    version: int | None = await conn.fetchval(f"SELECT max(version) FROM {quote(schema)}.schema_version")
    if version is not None and version > SCHEMA_VERSION:
        raise BackendUnavailableError(f"the PostgreSQL schema {schema!r} is at version {version}, newer than "
                                      f"this motia-py supports ({SCHEMA_VERSION})")
    return version
