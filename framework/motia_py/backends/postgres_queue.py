"""The PostgreSQL backend's queue store: deliveries and dead letters (the SQL is in :mod:`.postgres_sql`).

A claim is one call of the schema's ``claim`` function (``FOR UPDATE SKIP LOCKED``, so concurrent workers
never wait for each other's rows); publishes and acknowledgements made during one event-loop iteration
go to the server as one statement each (group commit). Every statement that makes work due sends
``NOTIFY`` with the step's name, which the listening connection of every process turns into a wake-up of
that step's ``wait``; a wake-up missed while that connection was down is made up by the worker's poll.
A claim under flow control is one call of ``claim_flow`` (see :mod:`.postgres_flow_schema`); the end of
a delivery claimed under a concurrency limit notifies its step too, since a slot may have freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from . import postgres_flow as flow
from .postgres_base import Batcher, PostgresConnection
from .postgres_handle_sql import key_args, key_rows
from .postgres_sql import DEAD_COLS, Completion, complete_args, dead_from, delivery_from, publish_args, publish_rows
from .records import DeadLetter, Delivery, FlowControl, Outgoing, QueueStats, StepQueueStats, new_id
from .wakeups import StepEvent, Wakeups

Row = tuple[Any, ...]


class PostgresQueue(PostgresConnection):
    """The queue store on PostgreSQL (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._publishes: Batcher[list[Row], None] = Batcher(self._publish_many)
        self._completes: Batcher[Completion, tuple[bool, bool]] = Batcher(self._complete_many)
        self._flow_sql = flow.FlowSql.build(self.schema)
        self._hub = Wakeups()  # the pending wait_any calls, signalled through the steps' wake-up events

    async def close(self) -> None:
        """Finish the batches in flight, then close the connections; deliveries stay queued."""
        await self._publishes.drain()
        await self._completes.drain()
        await super().close()

    # -- publish and acknowledge (group commit) ---------------------------------------------------
    async def _publish_many(self, calls: list[list[Row]]) -> list[None]:
        rows = [row for rows in calls for row in rows]
        await self._fetchval(self.sql.publish, *publish_args(rows, self.time_arg(), self.schema))
        return [None] * len(calls)

    async def _complete_many(self, calls: list[Completion]) -> list[tuple[bool, bool]]:
        """(acknowledged, was on a FIFO queue) per call. A second call for one attempt in the same batch
        loses, as it would one batch later."""
        seen: set[tuple[str, int]] = set()
        unique: list[int] = []  # the index of each call that goes to the server
        for i, (d, *_) in enumerate(calls):
            if (d.id, d.attempt) not in seen:
                seen.add((d.id, d.attempt))
                unique.append(i)
        sent = [calls[i] for i in unique]
        sql = self.sql.complete_keyed if any(c[3] for c in sent) else self.sql.complete
        done = await self._fetch(sql, *complete_args(sent, self.time_arg(), self.schema))
        results = [(False, False)] * len(calls)
        for k, fifo, *_ in done:
            results[unique[k - 1]] = (True, bool(fifo))
        return results

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item, in one transaction (all or none); an item whose
        idempotency key is held is left out (see :meth:`publish_deduped`)."""
        if any(o.key is not None for o in items):
            await self.publish_deduped(items)
            return
        rows = publish_rows(items)
        if rows:
            await self._publishes.submit(rows)
            self._wake({r[1] for r in rows})

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """Publish, taking the items' idempotency keys in the same statement; per item the id of the
        event that holds its key (its own when it was published)."""
        rows = publish_rows(items)
        keys = key_rows(items)
        if not keys or not rows:
            if rows:
                await self._publishes.submit(rows)
                self._wake({r[1] for r in rows})
            return [o.envelope.id for o in items]
        taken = set(await self._fetchval(self.sql.publish_keyed, *publish_args(rows, self.time_arg(), self.schema),
                                         *key_args(keys)))
        keyed = {k[2] for k in keys}
        self._wake({r[1] for r in rows if r[2] in taken or r[2] not in keyed})
        held = {(k[0], k[1]) for k in keys if k[2] not in taken}
        holders: dict[tuple[str, str], str] = {}
        if held:
            found = await self._fetch(f"SELECT k.topic, k.key, k.event_id FROM {self.sql.table('keys')} k JOIN "
                                      "unnest($1::text[], $2::text[]) AS y(topic, key) USING (topic, key)",
                                      [h[0] for h in held], [h[1] for h in held])
            holders = {(r[0], r[1]): r[2] for r in found}
        return [o.envelope.id if o.key is None or o.envelope.id in taken
                else holders.get((o.envelope.topic, o.key), o.envelope.id) for o in items]

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Delete the delivery, publish ``outgoing`` and write the finished record in one statement; False
        when the lease was lost."""
        return await self.complete_with_result(delivery, outgoing, None)

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """:meth:`complete`, keeping ``result_json`` in the finished record (the outbox's keys taken in the
        same statement: an event whose key is held is not published)."""
        rows = publish_rows(outgoing)
        keys = key_rows(outgoing) if outgoing else []
        ok, fifo = await self._completes.submit((delivery, rows, result_json, keys))
        if ok:
            self._wake({r[1] for r in rows} | ({delivery.step} if fifo else set()))
            if delivery.limited:
                await self._slot_freed(delivery)
        return ok

    async def _slot_freed(self, delivery: Delivery) -> None:
        """Wake the waiters of the step of a limited delivery that ended, in every process."""
        await self._fetchval("SELECT pg_notify($1, $2)", self.channel, delivery.step)
        self._wake([delivery.step])

    # -- claims and the end of attempts ---------------------------------------------------------
    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step`` (an expired lease alone), highest priority
        first, within the limits of ``control`` (see the protocol)."""
        if limit <= 0:
            return []
        if control is None or not (control.rate_limit or control.limits_concurrency):
            rows = await self._fetch(self.sql.claim, step, limit, float(lease_s), self.time_arg(), self.identity)
            return [delivery_from(r, step) for r in rows]
        rows = await self._fetch(self.sql.claim_flow, step, limit, float(lease_s), self.time_arg(), self.identity,
                                 control.rate_limit, float(control.rate_period_s), control.rate_keyed,
                                 control.global_concurrency, control.key_concurrency)
        return [delivery_from(r, step, control.limits_concurrency) for r in rows]

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Undo the claims of deliveries that never started: due at once, the attempt not counted; one
        claimed for an expired lease goes back to that expired lease (claimed first and alone again)."""
        if not deliveries:
            return
        await self._fetchval(self.sql.hand_back, [d.id for d in deliveries], [d.attempt for d in deliveries],
                             [d.expired for d in deliveries], [d.last_owner for d in deliveries], self.time_arg(),
                             self.channel)
        self._wake({d.step for d in deliveries})

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Release the lease; the delivery is due again after ``delay_s``."""
        await self._fetchval(self.sql.retry, delivery.id, delivery.attempt, self.time_arg(), float(delay_s),
                             self.channel)
        self._wake([delivery.step])

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                          ) -> None:
        """Move the delivery to the dead-letter table (nothing happens when the lease was lost)."""
        await self._fetchval(self.sql.dead_letter, delivery.id, delivery.attempt, attempts, error, traceback,
                             self.time_arg(), self.channel)
        self._wake([delivery.step])  # the next event of its FIFO group may be free now
        if delivery.limited:
            await self._slot_freed(delivery)

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future."""
        if deliveries:
            await self._count(self.sql.extend, [d.id for d in deliveries], [d.attempt for d in deliveries],
                              self.time_arg(), float(lease_s))

    # -- waiting --------------------------------------------------------------------------------
    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """Return when ``step`` may have a due delivery, or after ``timeout_s``.

        A publish through this object wakes it at once, one through any other connection when its
        ``NOTIFY`` arrives on this process's listening connection; a delayed delivery or an expiring
        lease, when it falls due (looked up when the wait starts). With a ``control``, "due" means that a
        claim with it would hand the delivery out (a rate window opening counts; a freed slot notifies).
        """
        event = self._wakeups.get(step)
        if event is None:
            event = self._wakeups[step] = StepEvent(step, self._hub)
        try:
            await self._listen()
            if event.is_set():
                return
            due_in = await self._due_in(step, control)
            if due_in is not None:
                timeout_s = min(timeout_s, due_in)
            if timeout_s > 0 and not event.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            event.clear()

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        """The steps that may have a due delivery, waiting up to ``timeout_s`` for one: a notification
        (on the process's one listening connection) or a write through this object wakes it; the due
        times of the steps are looked up once when it starts (one statement for all of them)."""
        order = list(dict.fromkeys(steps))
        for s in order:
            if s not in self._wakeups:
                self._wakeups[s] = StepEvent(s, self._hub)
        started = time.monotonic()
        with self._hub.waiting(order) as waiter:
            await self._listen()
            rows = await self._fetch(self.sql.next_due_many, order, self.time_arg())
            later = {s: d for s, d in rows if d is not None}
            due = {s for s, d in later.items() if d <= 0}
            if due or waiter.hits:
                return due | waiter.hits
            hits = await waiter.wait(min([timeout_s, *later.values()]) - (time.monotonic() - started))
        elapsed = time.monotonic() - started
        return hits or {s for s, d in later.items() if d <= elapsed}

    async def _due_in(self, step: str, control: FlowControl | None) -> float | None:
        """Seconds until a claim of ``step`` (with ``control``) may hand something out (None: nothing
        known will be due)."""
        if control is None or not (control.rate_limit or control.limits_concurrency):
            due_in: float | None = await self._fetchval(self.sql.next_due, step, self.time_arg())
            return due_in
        async with self._translate_acquire() as conn:
            now = await conn.fetchval(f"SELECT {self.sql.clock('$1')}", self.time_arg())
            at = await flow.next_due(conn, self._flow_sql, step, control, now)
        return None if at is None else at - now

    # -- counts ---------------------------------------------------------------------------------
    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries, and the next due time."""
        now = self.time_arg()
        async with self._translate_acquire() as conn:
            rows = await conn.fetch(self.sql.stats, now)
            fifo_due = await conn.fetchval(self.sql.stats_fifo_due, now)
            dead = await conn.fetchval(f"SELECT count(*) FROM {self.sql.table('dead_letters')}")
        due = [t for r in rows for t in (r[4], r[5]) if t is not None] + ([fifo_due] if fifo_due is not None else [])
        return QueueStats(ready=sum(r[1] for r in rows), delayed=sum(r[2] for r in rows),
                          leased=sum(r[3] for r in rows), dead=dead, next_due_at=min(due) if due else None,
                          per_step={r[0]: r[1] + r[2] + r[3] for r in rows})

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """Per step: ready, delayed, leased and dead counts, the oldest ready delivery's due time, and
        (for the steps in ``controls``) the ready deliveries held back per limit."""
        async with self._translate_acquire() as conn:
            now = await conn.fetchval(f"SELECT {self.sql.clock('$1')}", self.time_arg())
            rows = await conn.fetch(self.sql.stats, now)
            dead = dict(await conn.fetch(f"SELECT step, count(*) FROM {self.sql.table('dead_letters')} GROUP BY step"))
            out = {r[0]: StepQueueStats(ready=r[1], delayed=r[2], leased=r[3], dead=dead.pop(r[0], 0),
                                        oldest_ready_at=r[6]) for r in rows}
            for step, control in (controls or {}).items():
                if step in out:
                    out[step].throttled.update(await flow.throttled(conn, self._flow_sql, step, control, now))
        out.update((step, StepQueueStats(dead=n)) for step, n in dead.items())
        return out

    @contextlib.asynccontextmanager
    async def _translate_acquire(self) -> Any:
        with self._translate():
            async with self.pool.acquire() as conn:
                yield conn

    # -- dead letters ---------------------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        rows = await self._fetch(f"SELECT {DEAD_COLS} FROM {self.sql.table('dead_letters')} "
                                 "ORDER BY failed_at DESC, seq LIMIT $1", limit)
        return [dead_from(r) for r in rows]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        rows = await self._fetch(f"SELECT {DEAD_COLS} FROM {self.sql.table('dead_letters')} WHERE id = $1",
                                 dead_id)
        return dead_from(rows[0]) if rows else None

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's queue as a new standard delivery; False when unknown."""
        rows = await self._fetch(self.sql.dlq_replay, dead_id, new_id(), self.time_arg(), self.channel)
        self._wake(r[0] for r in rows)
        return bool(rows)

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""
        return await self._count(f"DELETE FROM {self.sql.table('dead_letters')} WHERE id = $1", dead_id) == 1
