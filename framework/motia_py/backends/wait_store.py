"""The multi-step wait of the backend protocols (see :mod:`.stores`, which re-exports it)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable


@runtime_checkable
class WaitStore(Protocol):
    """Waiting for work on many steps at once, at a constant cost whatever their number.

    A worker's idle consumers share one ``wait_any`` call (see :mod:`motia_py.waker`) instead of one
    :meth:`QueueStore.wait` each: on Redis one blocking read covers every step (one connection), on
    SQLite one watcher per process notices other processes' commits, and a publish through the backend
    object wakes the waits of its steps directly.
    """

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        """Return the steps of ``steps`` that may have a due delivery, waiting up to ``timeout_s`` for one.

        Consumes nothing. Returns at once (with those steps) when a delivery of some of ``steps`` is
        already due; otherwise promptly after a publish for any of them (through any connection, other
        processes included), or when the earliest next delayed delivery, FIFO head or lease expiry among
        them falls due, naming the steps concerned; ``set()`` after ``timeout_s`` with nothing to report.
        It may name a step that has nothing due after all (a spurious wake-up), never one not in
        ``steps``. Cancelling a call is cheap and leaves the backend as it was. The cost of one call (in
        connections, and in work while it waits) does not grow with the number of steps beyond reading
        their due times once.
        """
