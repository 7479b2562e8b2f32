"""The memory backend's wait for many steps at once (mixed into :class:`.memory.MemoryBackend`): every
step's due time is known in the process, and a publish wakes the waits of its step through the
step's :class:`~.wakeups.StepEvent`."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from .records import FlowControl
from .wakeups import StepEvent, Wakeups, wait_due

if TYPE_CHECKING:
    from ..types import Clock

__all__ = ["MemoryWait", "StepEvent", "Wakeups"]


class MemoryWait:
    """:class:`~.stores.WaitStore` for the memory backend."""

    _hub: Wakeups
    if TYPE_CHECKING:
        clock: Clock

        def _queue(self, step: str) -> Any: ...
        def _next_due(self, q: Any) -> float | None: ...
        def next_claimable(self, step: str, control: FlowControl | None) -> float | None: ...

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        """The steps that may have a due delivery, waiting up to ``timeout_s`` for one."""
        return await wait_due(self._hub, steps, timeout_s, self._due_in)

    def _due_in(self, step: str) -> float | None:
        q, now = self._queue(step), self.clock()
        q.wakeup = q.wakeup or StepEvent(step, self._hub)
        at = self.next_claimable(step, None) if q.prio else (now if q.ready else self._next_due(q))
        return None if at is None else at - now
