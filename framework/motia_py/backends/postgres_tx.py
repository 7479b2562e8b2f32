"""The PostgreSQL backend's transactional commit (see :class:`.stores.TxStore`), mixed into
:class:`.postgres.PostgresBackend`.

A commit is one ``SERIALIZABLE`` transaction on one pool connection:

1. the acknowledgement, fenced as ``complete`` is (``DELETE`` of the delivery row of *that* attempt while it
   is leased; no row: ``"lost"``), with the delivery's finished record (its job handle, with the result)
   written by the same statement. It runs first, so a lost lease wins over a changed read, and it locks the
   row, so no claim or heartbeat of another worker touches it until the end;
2. the reads, each read again ``FOR UPDATE`` and compared as text (a group read: every row of the group);
   one that differs: ``"conflict"``;
3. the writes in order (a group clear deletes the group's rows; the old value of a watched key is read
   first, for its change event);
4. the change events and the outbox, through the queue's own publish statement (so their ``NOTIFY`` go out
   with the commit, and never for a rolled-back one), which takes the outbox's idempotency keys (an event
   whose key is held is not published; a rolled-back commit takes none).

Why ``SERIALIZABLE``: row locks cover the keys and groups that exist, but not a key read as absent nor a
key added to a group read; PostgreSQL's serializable isolation aborts a commit when such a key appears
meanwhile, and (being also repeatable read) when a row it reads or writes changed after its snapshot. Such a
serialization failure (or a deadlock) rolls everything back and the commit runs again on fresh data, so a
read that changed ends as ``"conflict"``, a lost lease as ``"lost"``; after :data:`_TRIES` failures the
answer is ``"conflict"`` (``"lost"`` when the lease is gone by then), and the caller runs the attempt again.
Sequential scans are turned off for the transaction, so its predicate locks stay on index entries (a scan of
a whole small table would make unrelated commits abort each other).

A commit without reads and writes is a plain ``complete`` (or ``publish``), group-committed with the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from .postgres_handle_sql import finish, key_args, key_rows
from .postgres_handles import PostgresHandles
from .postgres_schema import quote
from .postgres_sql import publish_args, publish_rows
from .records import Delivery, HandleState, Outgoing, StateRead, StateWrite, TxResult
from .state_change import change_event

_TRIES: Final = 8
_RETRY: Final = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
_BEGIN: Final = "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL enable_seqscan = off"
_KEY: Final = "namespace = $1 AND grp = $2 AND key = $3"
_GROUP: Final = "namespace = $1 AND grp = $2"
_FENCE: Final = "id = $1 AND attempts = $2 AND lease_until IS NOT NULL"  # complete()'s test of the lease


class _Outbox:
    """What a commit publishes: the outbox's rows and keys, and the result of its delivery."""

    __slots__ = ("keys", "result_json", "rows")

    def __init__(self, outgoing: Sequence[Outgoing], result_json: str | None) -> None:
        self.rows: list[tuple[Any, ...]] = publish_rows(outgoing)
        self.keys = key_rows(outgoing)
        self.result_json = result_json


class PostgresTx(PostgresHandles):
    """:class:`~.stores.TxStore` on PostgreSQL (see the module docstring)."""

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """See :meth:`complete_tx_with_result`."""
        return await self.complete_tx_with_result(delivery, outgoing, writes, reads, None)

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """Check the lease and the reads, apply the writes (queueing their change events), acknowledge,
        record the result and publish (taking the outbox's keys), in one serializable transaction;
        ``"ok"``, ``"lost"`` or ``"conflict"``."""
        if not writes and not reads:
            if delivery is None:
                await self.publish(outgoing)
                return "ok"
            return "ok" if await self.complete_with_result(delivery, outgoing, result_json) else "lost"
        out = _Outbox(outgoing, result_json)
        async with self._translate_acquire() as conn:
            for _ in range(_TRIES):
                try:
                    result, woken = await self._commit_once(conn, delivery, out, writes, reads)
                except _RETRY:
                    continue
                if result == "ok":
                    self._wake(woken)
                return result
            if delivery is not None and not await conn.fetchval(
                    f"SELECT true FROM {self.sql.table('deliveries')} WHERE {_FENCE}", delivery.id, delivery.attempt):
                return "lost"
            return "conflict"

    async def _commit_once(self, conn: asyncpg.Connection, delivery: Delivery | None, out: _Outbox,
                           writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> tuple[TxResult, set[str]]:
        """One try: (the result, the steps to wake); committed when ``"ok"``, else rolled back."""
        await conn.execute(_BEGIN)
        try:
            result, woken = await self._in_tx(conn, delivery, out, writes, reads)
            await conn.execute("COMMIT" if result == "ok" else "ROLLBACK")
        except BaseException:
            if not conn.is_closed():
                with contextlib.suppress(Exception):  # the original error matters, not this one
                    await conn.execute("ROLLBACK")
            raise
        return result, woken

    async def _in_tx(self, conn: asyncpg.Connection, delivery: Delivery | None, out: _Outbox,
                     writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> tuple[TxResult, set[str]]:
        woken: set[str] = set()
        if delivery is not None:
            s = quote(self.schema)
            done = finish(s, "gone", HandleState.SUCCEEDED, f"{s}.clock($4)", result="$5::text")
            held = await conn.fetchrow(
                f"WITH gone AS (DELETE FROM {s}.deliveries WHERE {_FENCE} RETURNING *), fin AS ({done}) "
                "SELECT step, fifo_group IS NOT NULL, (SELECT count(pg_notify($3, step)) FROM gone "
                "WHERE fifo_group IS NOT NULL) FROM gone",
                delivery.id, delivery.attempt, self.channel, self.time_arg(), out.result_json)
            if held is None:
                return "lost", woken
            if held[1]:  # the next event of its FIFO group is free now
                woken.add(held[0])
        if not await self._reads_hold(conn, reads):
            return "conflict", woken
        rows = publish_rows(await self._apply(conn, writes)) + out.rows
        if rows:
            args = publish_args(rows, self.time_arg(), self.schema)
            if out.keys:
                taken = set(await conn.fetchval(self.sql.publish_keyed, *args, *key_args(out.keys)))
                keyed = {k[2] for k in out.keys}
                rows = [r for r in rows if r[2] in taken or r[2] not in keyed]
            else:
                await conn.fetchval(self.sql.publish, *args)
            woken.update(r[1] for r in rows)
        return "ok", woken

    async def _reads_hold(self, conn: asyncpg.Connection, reads: Sequence[StateRead]) -> bool:
        """True when every key read still holds its text and every group read exactly its items (the rows
        read are locked until the end of the transaction)."""
        t = self.sql.table("state")
        for r in reads:
            if r.key is None:
                got = await conn.fetch(f"SELECT key, value FROM {t} WHERE {_GROUP} FOR UPDATE", r.namespace, r.group)
                if {g[0]: g[1] for g in got} != dict(r.items or {}):
                    return False
            elif await conn.fetchval(f"SELECT value FROM {t} WHERE {_KEY} FOR UPDATE",
                                     r.namespace, r.group, r.key) != r.value_json:
                return False
        return True

    async def _apply(self, conn: asyncpg.Connection, writes: Sequence[StateWrite]) -> list[Outgoing]:
        """Apply the writes in order; the change events of those with a ``notify`` that changed a value."""
        t = self.sql.table("state")
        events: list[Outgoing] = []
        for w in writes:
            if w.key is None:
                await conn.execute(f"DELETE FROM {t} WHERE {_GROUP}", w.namespace, w.group)
                continue
            if w.notify is not None and w.notify.targets:
                old = await conn.fetchval(f"SELECT value FROM {t} WHERE {_KEY} FOR UPDATE", w.namespace, w.group, w.key)
                if old != w.value_json:
                    events.append(change_event(w.notify, w.group, w.key, old, w.value_json))
            if w.value_json is None:
                await conn.execute(f"DELETE FROM {t} WHERE {_KEY}", w.namespace, w.group, w.key)
            else:
                await conn.execute(f"INSERT INTO {t} VALUES ($1, $2, $3, $4) ON CONFLICT (namespace, grp, key) "
                                   "DO UPDATE SET value = excluded.value", w.namespace, w.group, w.key, w.value_json)
        return events
