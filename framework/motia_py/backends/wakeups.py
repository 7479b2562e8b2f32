"""Who waits for which steps inside one process, and waking them: the hub behind every backend's
:meth:`~.stores.WaitStore.wait_any`.

A waiter registers the steps it waits for *before* it looks at the queue, so that a change signalled
while it looks is not lost; :meth:`Wakeups.signal` then wakes every waiter of the steps named, with the
steps that concern it. The backends signal their own changes (a publish through this object) and the
changes their one cross-process watcher sees (Redis's blocking read, SQLite's poller): one watcher per
process wakes the right waiters, never one loop per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable, Iterator


class Waiter:
    """One pending wait: its steps, and the steps signalled so far."""

    __slots__ = ("_woken", "hits", "steps")

    def __init__(self, steps: frozenset[str]) -> None:
        self.steps = steps
        self.hits: set[str] = set()
        self._woken: asyncio.Future[None] | None = None

    def wake(self, steps: Iterable[str]) -> None:
        """Note ``steps`` as signalled and wake the wait."""
        self.hits.update(steps)
        woken = self._woken
        if woken is not None and not woken.done():
            woken.set_result(None)

    async def wait(self, timeout_s: float) -> set[str]:
        """The steps signalled since registration, waiting up to ``timeout_s`` for the first one
        (``set()`` on timeout). A future and a timer, not a task: a wake-up costs one loop turn."""
        if not self.hits and timeout_s > 0:
            loop = asyncio.get_running_loop()
            woken = self._woken = loop.create_future()
            timer = loop.call_later(timeout_s, _resolve, woken)
            try:
                await woken
            finally:
                timer.cancel()
                self._woken = None
        return set(self.hits)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups:
    """The registry of pending waits of one backend object."""

    def __init__(self) -> None:
        self._by_step: dict[str, set[Waiter]] = {}
        self.count = 0  # pending waits

    @property
    def steps(self) -> set[str]:
        """Every step some pending wait is for."""
        return set(self._by_step)

    def __bool__(self) -> bool:
        return bool(self._by_step)

    def waiters_of(self, step: str) -> set[Waiter]:
        """The pending waits for ``step``."""
        return self._by_step.get(step, set())

    def add(self, steps: Collection[str]) -> Waiter:
        """Register a wait for ``steps``; remove it with :meth:`remove` (or use :meth:`waiting`)."""
        waiter = Waiter(frozenset(steps))
        self.count += 1
        for s in waiter.steps:
            self._by_step.setdefault(s, set()).add(waiter)
        return waiter

    def remove(self, waiter: Waiter) -> None:
        """Forget a wait (its steps stop being watched when no other wait has them)."""
        self.count -= 1
        for s in waiter.steps:
            waiters = self._by_step.get(s)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_step[s]

    @contextlib.contextmanager
    def waiting(self, steps: Collection[str]) -> Iterator[Waiter]:
        """Register a wait for the duration of a ``with`` block."""
        waiter = self.add(steps)
        try:
            yield waiter
        finally:
            self.remove(waiter)

    def signal(self, steps: Iterable[str]) -> None:
        """Wake the waits of ``steps`` (each learns which of its steps were signalled)."""
        by_step = self._by_step
        if not by_step:
            return
        for s in steps:
            for waiter in by_step.get(s, ()):
                waiter.wake((s,))

    def signal_all(self) -> None:
        """Wake every pending wait with all of its steps (after a lost connection, a clock change)."""
        for waiters in list(self._by_step.values()):
            for waiter in waiters:
                waiter.wake(waiter.steps)


class StepEvent(asyncio.Event):
    """A step's own wake-up event whose :meth:`set` also signals the step's waits in ``hub``."""

    def __init__(self, step: str, hub: Wakeups) -> None:
        super().__init__()
        self._step = step
        self._hub = hub

    def set(self) -> None:
        """Set the event and signal the step."""
        super().set()
        self._hub.signal((self._step,))


async def wait_due(hub: Wakeups, steps: Collection[str], timeout_s: float,
                   due_in: Callable[[str], float | None]) -> set[str]:
    """``wait_any`` for a backend that knows its due times in its own process (memory): ``due_in(step)``
    is the seconds until the step has something due (<= 0: now; None: nothing scheduled)."""
    started = time.monotonic()
    with hub.waiting(steps) as waiter:
        later = {s: d for s in steps if (d := due_in(s)) is not None}
        due = {s for s, d in later.items() if d <= 0}
        if due:
            return due
        hits = await waiter.wait(min([timeout_s, *later.values()]))
    elapsed = time.monotonic() - started
    return hits or {s for s, d in later.items() if d <= elapsed}
