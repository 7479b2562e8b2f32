"""The PostgreSQL backend's job-handle store (a mixin of :class:`.postgres.PostgresBackend`): the methods
of :class:`~.stores.HandleStore` over the statements of :mod:`.postgres_handle_sql`.

The queue's own statements keep the handles (:mod:`.postgres_sql`): an acknowledgement, a dead letter and
the end of a cancelled delivery write the finished record in the statement that deletes the delivery, a
publish takes its idempotency keys in the statement that inserts the deliveries, and a claim flags the
deliveries of cancelled events. What is here reads them, records progress and failed attempts, cancels,
and prunes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from .handle_records import event_handle, finished_step, live_step
from .postgres_handle_sql import HandleSql, successor
from .postgres_queue import PostgresQueue
from .records import CancelResult, Delivery, EventHandle, ScheduledDelivery, StepHandle


def _handle(event_id: str, rows: Sequence[asyncpg.Record]) -> EventHandle | None:
    """The handle from the rows of :attr:`HandleSql.get`: finished records and notes (kind 0), live
    deliveries (1), and the time with whether the event was cancelled (2)."""
    now, requested = next((r[5], bool(r[13])) for r in rows if r[0] == 2)
    steps: dict[str, StepHandle] = {}
    notes: dict[str, tuple[Any, Any]] = {}
    info: tuple[str, str, float] | None = None
    for kind, step, state, did, attempts, started, finished, error, result, prog, *env in (r[:13] for r in rows):
        if kind == 0:
            info = (env[0], env[1], env[2])
            notes[step] = (error, prog)
            if state is not None:
                steps[step] = finished_step(step, state, did, attempts, started, finished, error, result, prog)
    for row in rows:
        if row[0] == 1:
            step, did, attempts, started, leased, due = row[1], row[3], row[4], row[5], row[13], row[14]
            info = (row[10], row[11], row[12])
            steps[step] = live_step(step, delivery_id=did, leased=leased, attempts=attempts, due_at=due,
                                    started_at=started, now=now, note=notes.get(step, (None, None)),
                                    cancel_requested=requested)
    return None if info is None or not steps else event_handle(event_id, info, steps.values())


class PostgresHandles(PostgresQueue):
    """Job handles in the PostgreSQL schema (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handle_sql = HandleSql.build(self.schema)

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """Retry after ``delay_s`` keeping ``error``; a cancelled event's delivery ends as cancelled
        instead (one statement either way)."""
        await self._fetchval(self.handle_sql.retry_with_error, delivery.id, delivery.attempt, delivery.envelope.id,
                             self.time_arg(), float(delay_s), error, self.channel)
        self._wake([delivery.step])

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """End a leased delivery as cancelled (no retry, dead letter or outbox); False when the lease was lost."""
        ended = await self._fetchval(self.handle_sql.cancel_settle, delivery.id, delivery.attempt, self.time_arg(),
                                     self.channel)
        if ended:
            self._wake([delivery.step])  # its FIFO group or concurrency slot may be free
        return bool(ended)

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The event's live deliveries and finished records, read by one statement."""
        return _handle(event_id, await self._fetch(self.handle_sql.get, event_id, self.time_arg()))

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Known event ids (live or finished) starting with ``prefix``, sorted."""
        upper = successor(prefix)
        rows = await (self._fetch(self.handle_sql.find_all, prefix, max(0, limit)) if upper is None
                      else self._fetch(self.handle_sql.find, prefix, max(0, limit), upper))
        return [r[0] for r in rows]

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress of a delivery."""
        e = delivery.envelope
        await self._count(self.handle_sql.progress, e.id, delivery.step, e.topic, e.trace_id, e.emitted_at,
                          progress_json)

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Cancel the event's deliveries that are not leased and mark the leased ones, in one transaction
        (the leased ones are looked up after the others are gone, so one claimed meanwhile is marked)."""
        now = self.time_arg()
        async with self._translate_acquire() as conn, conn.transaction():
            gone = await conn.fetch(self.handle_sql.cancel_queued, event_id, now, self.channel)
            live = await conn.fetch(self.handle_sql.cancel_mark, event_id, now, bool(gone))
            handle = _handle(event_id, await conn.fetch(self.handle_sql.get, event_id, now))
        self._wake({r[0] for r in gone})
        if handle is None:
            return None
        return CancelResult(handle=handle, cancelled=tuple(sorted({r[0] for r in gone})),
                            requested=tuple(sorted({r[0] for r in live})))

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The deliveries whose event was cancelled."""
        if not deliveries:
            return set()
        rows = await self._fetch(self.handle_sql.cancel_requests, list({d.envelope.id for d in deliveries}))
        gone = {r[0] for r in rows}
        return {d.id for d in deliveries if d.envelope.id in gone}

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Deliveries not due yet and never attempted, the earliest first."""
        rows = await self._fetch(self.handle_sql.scheduled, self.time_arg(), topic, max(0, limit))
        return [ScheduledDelivery(*r) for r in rows]

    async def handles_prune(self, before: float, keep: int) -> int:
        """Retention of finished handles: the candidates are read first, then deleted by one statement
        (with the cancellations of events without a delivery left, and expired keys)."""
        events = [r[0] for r in await self._fetch(self.handle_sql.prune_candidates, float(before), max(0, keep))]
        dropped: int = await self._fetchval(self.handle_sql.prune, events, self.time_arg())
        return dropped
