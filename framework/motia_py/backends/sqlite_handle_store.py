"""The SQLite backend's job-handle store (a mixin of :class:`.sqlite.SqliteBackend`): the methods of
:class:`~.stores.HandleStore` over the operations of :mod:`.sqlite_handles`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..types import Clock
from . import sqlite_handles as sh
from . import sqlite_queue as q
from . import sqlite_tx
from ._sqlite_thread import Op, Row, each
from .records import (
    CancelResult,
    Delivery,
    EventHandle,
    HandleState,
    Outgoing,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    TxResult,
)

A = TypeVar("A")
R = TypeVar("R")

TxArg = tuple[Delivery | None, list[Row], list[sh.KeyRow], Sequence[StateWrite], Sequence[StateRead], str | None,
              float]
"""(delivery or None, its outbox's rows, the outbox's keys, writes, reads, result, now)."""


@each
def _complete_tx(conn: sqlite3.Connection, arg: TxArg) -> tuple[TxResult, bool, list[str]]:
    """:func:`.sqlite_tx.complete_tx` with job handles, in its transaction: the outbox's keys taken (an
    event whose key is held is not published) and the delivery's finished record written."""
    delivery, rows, keys, writes, reads, result_json, now = arg
    result, fifo, notified = sqlite_tx.complete_tx(conn, [(delivery, [], writes, reads, now)])[0]
    if result == "ok":
        q.publish_run(conn, [sh.without(rows, sh.take_keys(conn, keys, now)) if keys else rows])
        if delivery is not None:
            sh.finish(conn, delivery, HandleState.SUCCEEDED, now, result_json=result_json)
    return result, fifo, notified


class SqliteHandles:
    """Job handles on the SQLite file (see :mod:`.sqlite_handles` for where each part lives)."""

    clock: Clock

    if TYPE_CHECKING:  # provided by SqliteBackend
        async def _run(self, op: Op[A, R], arg: A, *, write: bool = True, urgent: bool = False) -> R: ...
        def _wake(self, steps: Iterable[str], later: Iterable[str] = ()) -> None: ...
        def _wake_rows(self, rows: Iterable[Row], now: float, steps: Iterable[str] = ()) -> None: ...

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """Publish (one transaction); per item the id of the event that holds its key (its own when new)."""
        now = self.clock()
        rows = q.delivery_rows(items, now)
        held = await self._run(q.publish_keyed, (rows, q.key_rows(items, now), now)) if rows else {}
        self._wake_rows(sh.without(rows, held), now)
        return [held.get(o.envelope.id, o.envelope.id) for o in items]

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """Retry after ``delay_s`` keeping ``error``; a cancelled event's delivery ends as cancelled."""
        now = self.clock()
        _, wake = await self._run(sh.retry_with_error, (delivery, now + delay_s, error, now), urgent=True)
        if wake:
            self._wake([delivery.step] if delay_s <= 0 or delivery.limited else [], [delivery.step])

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """End a leased delivery as cancelled; False when the lease was lost."""
        ended, fifo = await self._run(sh.cancel_settle, (delivery, self.clock()), urgent=True)
        if fifo:
            self._wake([delivery.step])
        return ended

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The event's live deliveries and finished records, read in one transaction."""
        return await self._run(sh.handle_get, (event_id, self.clock()), write=False)

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Known event ids starting with ``prefix``, sorted."""
        return await self._run(sh.handle_find, (prefix, max(0, limit)), write=False)

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress of a delivery."""
        await self._run(sh.progress, (delivery, progress_json))

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Cancel the event's deliveries that are not running; mark the running ones."""
        result, fifo = await self._run(sh.handle_cancel, (event_id, self.clock()))
        self._wake(fifo)
        return result

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The deliveries whose event was cancelled."""
        if not deliveries:
            return set()
        return await self._run(sh.cancel_requests, list(deliveries), write=False)

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Deliveries not due yet and never attempted, the earliest first."""
        return await self._run(sh.scheduled_list, (topic, max(0, limit), self.clock()), write=False)

    async def handles_prune(self, before: float, keep: int) -> int:
        """Retention of finished handles (read first, then one short write transaction)."""
        events = await self._run(sh.prune_candidates, (before, max(0, keep)), write=False)
        return await self._run(sh.prune, (events, self.clock()))

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """Check the lease and the reads, apply the writes, acknowledge, publish (but for the events whose
        key is held) and record the result, in one transaction committed ahead of queued claims and
        publishes (see :mod:`.sqlite_tx`)."""
        now = self.clock()
        rows = q.delivery_rows(outgoing, now) if outgoing else []
        keys = q.key_rows(outgoing, now) if outgoing else []
        result, fifo, notified = await self._run(
            _complete_tx, (delivery, rows, keys, list(writes), list(reads), result_json, now), urgent=True)
        if result == "ok":
            ended = delivery is not None and (fifo or delivery.limited)  # its FIFO group or a slot is free
            self._wake_rows(rows, now, notified + ([delivery.step] if ended and delivery else []))
        return result
