"""The memory backend's job-handle store (a mixin of :class:`.memory.MemoryBackend`).

Live deliveries are found by walking the step queues (the memory backend is for tests and single
processes: lookups may cost a scan); finished records, notes (last error, progress), cancellations and
idempotency keys are dicts. Everything runs on one event loop, so each operation is atomic.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..types import Clock
from .handle_records import event_handle, live_state
from .memory_tx import StateDicts, apply_writes, reads_hold
from .records import (
    CancelResult,
    Delivery,
    EventHandle,
    HandleState,
    Outgoing,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    StepHandle,
    TxResult,
)

_Finished = tuple[str, str, str, int, "float | None", float, "str | None", "str | None", str, str, float]
"""(step, state, delivery id, attempts, started at, finished at, error, result, topic, trace id, emitted at)"""


class MemoryHandles:
    """Job handles kept in dicts beside the memory backend's queues."""

    clock: Clock
    _queues: dict[str, Any]
    _state: StateDicts

    if TYPE_CHECKING:  # provided by MemoryBackend
        def _held(self, delivery: Delivery) -> Any: ...
        def _take(self, delivery: Delivery) -> Any: ...
        def _drop_fifo_head(self, item: Any) -> None: ...
        async def publish(self, items: Sequence[Outgoing]) -> None: ...
        async def retry(self, delivery: Delivery, delay_s: float) -> None: ...

    def _init_handles(self) -> None:
        # event id -> the finished record of its first step to finish (see _Finished), and the records of its
        # other steps in _more: one flat tuple of plain values per event (the garbage collector stops tracking
        # it; thousands are kept), cheap to build on the hot path. StepHandles are built when someone asks.
        self._finished: dict[str, _Finished] = {}
        self._more: dict[str, dict[str, _Finished]] = {}
        self._errors: dict[tuple[str, str], str] = {}  # (event id, step) -> last error
        self._progress: dict[tuple[str, str], str] = {}  # (event id, step) -> latest progress JSON
        self._cancels: dict[str, float] = {}  # cancelled event ids -> when
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}  # (topic, key) -> (event id, expires at)

    # -- hooks of the queue operations ----------------------------------------------------------
    def _key_holder(self, out: Outgoing, now: float) -> str | None:
        """Take ``out``'s key for its event (None), or the id of the event that holds it."""
        assert out.key is not None
        held = self._keys.get((out.envelope.topic, out.key))
        if held is not None and held[1] > now and held[0] != out.envelope.id:
            return held[0]
        self._keys[(out.envelope.topic, out.key)] = (out.envelope.id, now + out.key_ttl_s)
        return None

    def _finish(self, item: Any, state: HandleState, error: str | None = None, result_json: str | None = None,
                attempts: int | None = None) -> None:
        """Record the end of a delivery (``item`` is the memory backend's queue item)."""
        env, eid = item.envelope, item.envelope.id
        if self._errors:
            last = self._errors.pop((eid, item.step), None)
            if error is None and state is not HandleState.SUCCEEDED:
                error = last
        rec = (item.step, state.value, item.id, item.attempts if attempts is None else attempts,
               item.first_delivered_at, self.clock(), error, result_json, env.topic, env.trace_id, env.emitted_at)
        first = self._finished.get(eid)
        if first is None or first[0] == item.step:
            self._finished[eid] = rec
        else:
            self._more.setdefault(eid, {})[item.step] = rec

    def _records(self, event_id: str) -> list[_Finished]:
        first = self._finished.get(event_id)
        return [] if first is None else [first, *self._more.get(event_id, {}).values()]

    def _finished_steps(self, event_id: str) -> dict[str, StepHandle]:
        return {f[0]: StepHandle(step=f[0], state=HandleState(f[1]), delivery_id=f[2], attempts=f[3], started_at=f[4],
                                 finished_at=f[5], error=f[6], result_json=f[7],
                                 progress_json=self._progress.get((event_id, f[0])))
                for f in self._records(event_id)}

    def _last(self, event_id: str) -> float:
        """When the event's latest delivery finished."""
        return max(f[5] for f in self._records(event_id))

    # -- the store --------------------------------------------------------------------------------
    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """Acknowledge (recording ``result_json``) and publish the outbox; False when the lease was lost."""
        item = self._take(delivery)
        if item is None:
            return False
        if item.fifo:
            self._drop_fifo_head(item)
        self._finish(item, HandleState.SUCCEEDED, result_json=result_json)
        if outgoing:
            await self.publish(outgoing)
        return True

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """:meth:`.memory_tx.MemoryTx.complete_tx`, recording ``result_json`` (one event-loop step)."""
        if delivery is not None and self._held(delivery) is None:
            return "lost"
        if not reads_hold(self._state, reads):
            return "conflict"
        events = apply_writes(self._state, writes)
        if events:
            await self.publish(events)
        if delivery is not None:
            await self.complete_with_result(delivery, outgoing, result_json)
        elif outgoing:
            await self.publish(outgoing)
        return "ok"

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """Publish; per item the id of the event that holds its key (its own when published)."""
        now = self.clock()
        ids, go = [], []
        for out in items:  # in order: an item may find its key taken by one before it in the same call
            holder = self._key_holder(out, now) if out.key is not None else None
            ids.append(holder or out.envelope.id)
            if holder is None:
                go.append(out)
        await self.publish(go)  # their keys are theirs now: publish takes them again
        return ids

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """Retry, keeping ``error``; a delivery of a cancelled event ends as cancelled."""
        if delivery.envelope.id in self._cancels:
            await self.cancel_settle(delivery)
            return
        if self._take_peek(delivery):
            self._errors[(delivery.envelope.id, delivery.step)] = error
        await self.retry(delivery, delay_s)

    def _take_peek(self, delivery: Delivery) -> bool:
        q = self._queues.get(delivery.step)
        item = q.leased.get(delivery.id) if q is not None else None
        return item is not None and item.attempts == delivery.attempt

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """End a leased delivery as cancelled."""
        item = self._take(delivery)
        if item is None:
            return False
        if item.fifo:
            self._drop_fifo_head(item)
        self._finish(item, HandleState.CANCELLED)
        return True

    def _items(self) -> Iterator[Any]:
        """Every delivery that still exists (each once)."""
        for q in self._queues.values():
            yield from q.ready
            yield from (entry[2] for entry in q.prio)
            yield from (entry[2] for entry in q.delayed)
            yield from q.leased.values()
            for group in q.fifo_groups.values():
                yield from (i for i in group if i.lease_until is None)

    def _live(self, item: Any, now: float) -> StepHandle:
        key = (item.envelope.id, item.step)
        leased = item.lease_until is not None
        return StepHandle(step=item.step, state=live_state(leased, item.attempts, item.available_at, now),
                          delivery_id=item.id, attempts=item.attempts, due_at=item.available_at,
                          started_at=item.first_delivered_at, error=self._errors.get(key),
                          progress_json=self._progress.get(key),
                          cancel_requested=leased and item.envelope.id in self._cancels)

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The event's live deliveries and finished records (a live delivery supersedes a record)."""
        now = self.clock()
        steps = self._finished_steps(event_id)
        first = self._finished.get(event_id)
        info = None if first is None else (first[8], first[9], first[10])
        for item in self._items():
            if item.envelope.id == event_id:
                steps[item.step] = self._live(item, now)
                env = item.envelope
                info = (env.topic, env.trace_id, env.emitted_at)
        if info is None or not steps:
            return None
        return event_handle(event_id, info, steps.values())

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Known event ids starting with ``prefix``."""
        found = {e for e in self._finished if e.startswith(prefix)}
        found |= {i.envelope.id for i in self._items() if i.envelope.id.startswith(prefix)}
        return sorted(found)[:max(0, limit)]

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress."""
        self._progress[(delivery.envelope.id, delivery.step)] = progress_json

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Drop the event's deliveries that are not running (recorded as cancelled); mark the rest."""
        handle = await self.handle_get(event_id)
        if handle is None:
            return None
        cancelled: list[str] = []
        requested: list[str] = []
        for q in self._queues.values():
            for item in [i for i in q.leased.values() if i.envelope.id == event_id]:
                requested.append(item.step)
            doomed = [i for i in self._waiting(q) if i.envelope.id == event_id]
            for item in doomed:
                self._remove_waiting(q, item)
                self._finish(item, HandleState.CANCELLED)
                cancelled.append(item.step)
        if cancelled or requested:
            self._cancels[event_id] = self.clock()
        after = await self.handle_get(event_id)
        assert after is not None
        return CancelResult(handle=after, cancelled=tuple(sorted(cancelled)), requested=tuple(sorted(requested)))

    @staticmethod
    def _waiting(q: Any) -> list[Any]:
        """The deliveries of one step queue that are not leased."""
        return [*q.ready, *(e[2] for e in q.prio), *(e[2] for e in q.delayed),
                *(i for g in q.fifo_groups.values() for i in g if i.lease_until is None)]

    def _remove_waiting(self, q: Any, item: Any) -> None:
        if item.fifo:
            group = item.envelope.group_id or ""
            items: deque[Any] = q.fifo_groups[group]
            if items[0] is item:
                self._drop_fifo_head(item)  # the next event of the group may run now
            else:
                items.remove(item)
        elif item in q.ready:
            q.ready.remove(item)
        else:  # a ready delivery of another priority, or a delayed one
            for heap in (q.prio, q.delayed):
                heap[:] = [e for e in heap if e[2] is not item]
                heapq.heapify(heap)

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The deliveries whose event was cancelled."""
        return {d.id for d in deliveries if d.envelope.id in self._cancels} if self._cancels else set()

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Deliveries not due yet and never attempted, the earliest first."""
        now = self.clock()
        out = [ScheduledDelivery(event_id=i.envelope.id, step=i.step, topic=i.envelope.topic,
                                 trace_id=i.envelope.trace_id, due_at=i.available_at,
                                 emitted_at=i.envelope.emitted_at, delivery_id=i.id)
               for i in self._items()
               if i.lease_until is None and i.attempts == 0 and i.available_at > now
               and (topic is None or i.envelope.topic == topic)]
        return sorted(out, key=lambda s: (s.due_at, s.event_id, s.step))[:max(0, limit)]

    async def handles_prune(self, before: float, keep: int) -> int:
        """Drop finished handles by age and count (events with a live delivery are kept)."""
        live = {i.envelope.id for i in self._items()}
        ranked = sorted(((self._last(e), e) for e in self._finished if e not in live), reverse=True)
        drop = [e for i, (last, e) in enumerate(ranked) if i >= keep or last < before]
        for e in drop:
            for f in self._records(e):
                self._progress.pop((e, f[0]), None)
                self._errors.pop((e, f[0]), None)
            del self._finished[e]
            self._more.pop(e, None)
        for e in [e for e in self._cancels if e not in live]:  # nothing of it left to stop
            del self._cancels[e]
        now = self.clock()
        for k in [k for k, (_, expires) in self._keys.items() if expires <= now]:
            del self._keys[k]
        return len(drop)
