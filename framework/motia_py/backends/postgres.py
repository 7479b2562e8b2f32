"""The PostgreSQL backend (``postgres://user@host/db?schema=motia``): every store in one schema.

Any number of ``start`` processes on any number of hosts share one database, as with Redis, with the
same delivery semantics; an application that uses the same database can also publish inside its own
transactions (:mod:`motia_py.transactional`, ``Client.emit(..., connection=...)``). The connections,
listening and group commit are in :mod:`.postgres_base`, the queue store in :mod:`.postgres_queue`, pub/sub
and state changes in :mod:`.postgres_realtime`, transactional commits in :mod:`.postgres_tx`, every
statement of the queue in :mod:`.postgres_sql`, the job handles in :mod:`.postgres_handles` (kept by the
queue's own statements, :mod:`.postgres_handle_sql`) and the schema in :mod:`.postgres_schema`; the state,
lease/metadata and trace stores are here, each call one statement (so one transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from .postgres_base import PostgresConnection
from .postgres_realtime import PostgresRealtime
from .postgres_tx import PostgresTx
from .records import TraceRun
from .registry import BackendOptions

__all__ = ["PostgresBackend", "PostgresConnection", "create_backend"]


class PostgresBackend(PostgresTx, PostgresRealtime):
    """Backend on one PostgreSQL database (PostgreSQL 12 or newer), shared by any number of workers.

    Args:
        url: ``postgres://[user[:password]@]host[:port]/database`` with optional ``schema`` (the schema of
            motia-py's tables; default: ``schema``, below) and ``pool_size`` (connections per process, default 10)
            query parameters; the others (``sslmode``, ...) go to asyncpg.
        schema: the schema when the URL names none (``[backend] prefix``, ``motia`` by default).
        clock: epoch seconds for leases and delays; PostgreSQL's own clock when None.
    """

    # -- state ----------------------------------------------------------------------------------
    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """The JSON text stored at (namespace, group, key), or None."""
        value: str | None = await self._fetchval(
            f"SELECT value FROM {self.sql.table('state')} WHERE namespace = $1 AND grp = $2 AND key = $3",
            namespace, group, key)
        return value

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text."""
        await self._count(f"INSERT INTO {self.sql.table('state')} VALUES ($1, $2, $3, $4) "
                          "ON CONFLICT (namespace, grp, key) DO UPDATE SET value = excluded.value",
                          namespace, group, key, value_json)

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key; False when absent."""
        return await self._count(f"DELETE FROM {self.sql.table('state')} WHERE namespace = $1 AND grp = $2 "
                                 "AND key = $3", namespace, group, key) == 1

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text."""
        rows = await self._fetch(f"SELECT key, value FROM {self.sql.table('state')} WHERE namespace = $1 "
                                 "AND grp = $2", namespace, group)
        return {r[0]: r[1] for r in rows}

    async def state_groups(self, namespace: str) -> list[str]:
        """The groups of a namespace that hold at least one key, sorted."""
        rows = await self._fetch(f"SELECT DISTINCT grp FROM {self.sql.table('state')} WHERE namespace = $1 "
                                 "ORDER BY grp", namespace)
        return [r[0] for r in rows]

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete every key of a group."""
        await self._count(f"DELETE FROM {self.sql.table('state')} WHERE namespace = $1 AND grp = $2",
                          namespace, group)

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Store ``new_json`` (delete when None) only if the value is ``expected_json`` (None = absent).

        One statement: a conditional update or delete (which re-checks the value under the row lock), or
        an insert that does nothing when the key exists, so one of many concurrent callers wins.
        """
        t = self.sql.table("state")
        where = "namespace = $1 AND grp = $2 AND key = $3"
        if expected_json is None and new_json is None:
            return not await self._fetchval(f"SELECT true FROM {t} WHERE {where}", namespace, group, key)
        if expected_json is None:
            sql = f"INSERT INTO {t} VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            return await self._count(sql, namespace, group, key, new_json) == 1
        if new_json is None:
            sql = f"DELETE FROM {t} WHERE {where} AND value = $4"
            return await self._count(sql, namespace, group, key, expected_json) == 1
        sql = f"UPDATE {t} SET value = $5 WHERE {where} AND value = $4"
        return await self._count(sql, namespace, group, key, expected_json, new_json) == 1

    # -- leases and metadata ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take (or refresh, for the same owner) a lease; False while another owner holds it."""
        t = self.sql.table("leases")
        until = f"{self.sql.clock('$4')} + $3::float8"
        got = await self._fetchval(
            f"INSERT INTO {t} AS l VALUES ($1, $2, {until}) ON CONFLICT (key) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at "
            f"WHERE l.owner = excluded.owner OR l.expires_at <= {self.sql.clock('$4')} RETURNING true",
            key, owner, float(ttl_s), self.time_arg())
        return bool(got)

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease held by ``owner``."""
        await self._count(f"DELETE FROM {self.sql.table('leases')} WHERE key = $1 AND owner = $2", key, owner)

    async def meta_get(self, key: str) -> str | None:
        """Metadata text, or None."""
        value: str | None = await self._fetchval(f"SELECT value FROM {self.sql.table('meta')} WHERE key = $1", key)
        return value

    async def meta_set(self, key: str, value: str) -> None:
        """Store metadata text."""
        await self._count(f"INSERT INTO {self.sql.table('meta')} VALUES ($1, $2) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Store ``new`` only if the value is ``expected`` (None: absent), in one statement."""
        t = self.sql.table("meta")
        if expected is None:
            return await self._count(f"INSERT INTO {t} VALUES ($1, $2) ON CONFLICT DO NOTHING", key, new) == 1
        return await self._count(f"UPDATE {t} SET value = $3 WHERE key = $1 AND value = $2", key, expected, new) == 1

    # -- traces ---------------------------------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records (one statement: the runs in order, each trace's latest activity)."""
        if not runs:
            return
        await self._count(
            f"WITH r AS (INSERT INTO {self.sql.table('trace_runs')} (trace_id, run) "
            "SELECT t, j FROM unnest($1::text[], $3::text[]) WITH ORDINALITY AS u(t, j, o) ORDER BY o) "
            f"INSERT INTO {self.sql.table('traces')} AS x SELECT t, max(s) FROM unnest($1::text[], $2::float8[]) "
            "AS u(t, s) GROUP BY t ON CONFLICT (trace_id) DO UPDATE SET last = GREATEST(x.last, excluded.last)",
            [r[0] for r in runs], [float(r[1]) for r in runs], [r[2] for r in runs])

    async def traces_get(self, trace_id: str) -> list[str]:
        """Run records of one trace, in the order they were added."""
        rows = await self._fetch(f"SELECT run FROM {self.sql.table('trace_runs')} WHERE trace_id = $1 ORDER BY seq",
                                 trace_id)
        return [r[0] for r in rows]

    async def traces_recent(self, limit: int) -> list[str]:
        """Trace ids, the most recently active first."""
        if limit <= 0:
            return []
        rows = await self._fetch(f"SELECT trace_id FROM {self.sql.table('traces')} ORDER BY last DESC, trace_id "
                                 "LIMIT $1", limit)
        return [r[0] for r in rows]

    async def traces_prune(self, before: float, keep: int) -> int:
        """Drop traces last active before ``before`` and all but the ``keep`` most recent; return how many."""
        traces, runs = self.sql.table("traces"), self.sql.table("trace_runs")
        dropped: int = await self._fetchval(
            f"WITH gone AS (DELETE FROM {traces} WHERE last < $1 OR trace_id NOT IN "
            f"(SELECT trace_id FROM {traces} ORDER BY last DESC, trace_id LIMIT $2) RETURNING trace_id), "
            f"r AS (DELETE FROM {runs} WHERE trace_id IN (SELECT trace_id FROM gone)) SELECT count(*) FROM gone",
            float(before), max(0, keep))
        return dropped


def create_backend(url: str, options: BackendOptions) -> PostgresBackend:
    """Entry point for ``postgres://`` and ``postgresql://``: the schema from the URL's ``schema`` query
    parameter, else ``options.prefix`` (``[backend] prefix``); time from ``options.clock``."""
    return PostgresBackend(url, schema=options.prefix, clock=options.clock)
