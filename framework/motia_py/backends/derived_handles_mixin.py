"""Job handles for a backend class that has queue, state and transactional stores of its own but no
handle store: ``class MyBackend(DerivedHandles, MyStores)`` gives it the handle store of
:class:`.derived_handles.StateHandles` (see that module for what it costs and what it cannot give). The
backend stays one object, so checks for its own type and capabilities still see it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .derived_handles import StateHandles
from .records import (
    CancelResult,
    Delivery,
    EventHandle,
    FlowControl,
    Outgoing,
    ScheduledDelivery,
    StateRead,
    StateWrite,
    TxResult,
)


class _Own:
    """``backend`` with the queue calls :class:`DerivedHandles` overrides taken from the class after it."""

    def __init__(self, backend: DerivedHandles) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        if name in DerivedHandles.__dict__:
            return getattr(super(DerivedHandles, self._backend), name)
        return getattr(self._backend, name)


class DerivedHandles:
    """A mixin that gives a backend class the job-handle store of :class:`StateHandles`, over its own queue
    and state stores: ``class MyBackend(DerivedHandles, MyQueueAndState)``. Its queue calls go through the
    handle records first (see the module docstring for what that costs); the backend stays one object, so
    checks for its own type and capabilities still see it."""

    @property
    def _handles(self) -> StateHandles:
        found: StateHandles | None = self.__dict__.get("_derived_handles")
        if found is None:  # the backend's own methods, past this mixin in its class order
            own = _Own(self)
            found = self.__dict__["_derived_handles"] = StateHandles(
                own, getattr(self, "clock", None), tx=own)
        return found

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """See :meth:`StateHandles.publish`."""
        await self._handles.publish(items)

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """See :meth:`StateHandles.publish_deduped`."""
        return await self._handles.publish_deduped(items)

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """See :meth:`StateHandles.claim`."""
        return await self._handles.claim(step, limit, lease_s, control=control)

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """See :meth:`StateHandles.hand_back`."""
        await self._handles.hand_back(deliveries)

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """See :meth:`StateHandles.complete`."""
        return await self._handles.complete(delivery, outgoing)

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """See :meth:`StateHandles.complete_with_result`."""
        return await self._handles.complete_with_result(delivery, outgoing, result_json)

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """See :meth:`StateHandles.retry`."""
        await self._handles.retry(delivery, delay_s)

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """See :meth:`StateHandles.retry_with_error`."""
        await self._handles.retry_with_error(delivery, delay_s, error)

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None) -> None:
        """See :meth:`StateHandles.dead_letter`."""
        await self._handles.dead_letter(delivery, error, traceback, attempts)

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """See :meth:`StateHandles.cancel_settle`."""
        return await self._handles.cancel_settle(delivery)

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """See :meth:`StateHandles.complete_tx`."""
        return await self._handles.complete_tx(delivery, outgoing, writes, reads)

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """See :meth:`StateHandles.complete_tx_with_result`."""
        return await self._handles.complete_tx_with_result(delivery, outgoing, writes, reads, result_json)

    async def dlq_replay(self, dead_id: str) -> bool:
        """See :meth:`StateHandles.dlq_replay`."""
        return await self._handles.dlq_replay(dead_id)

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """See :meth:`StateHandles.handle_get`."""
        return await self._handles.handle_get(event_id)

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """See :meth:`StateHandles.handle_find`."""
        return await self._handles.handle_find(prefix, limit)

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """See :meth:`StateHandles.handle_progress`."""
        await self._handles.handle_progress(delivery, progress_json)

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """See :meth:`StateHandles.handle_cancel`."""
        return await self._handles.handle_cancel(event_id)

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """See :meth:`StateHandles.cancel_requests`."""
        return await self._handles.cancel_requests(deliveries)

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """See :meth:`StateHandles.scheduled_list`."""
        return await self._handles.scheduled_list(topic, limit)

    async def handles_prune(self, before: float, keep: int) -> int:
        """See :meth:`StateHandles.handles_prune`."""
        return await self._handles.handles_prune(before, keep)
