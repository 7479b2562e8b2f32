"""One wait for every idle consumer of a worker: the consumers whose queues are drained register here,
and one task asks the backend for all of them at once with :meth:`~.backends.stores.WaitStore.wait_any`,
then wakes the consumers of the steps it names.

The cost of waiting is then one backend call at a time per worker, whatever its number of steps: one
blocking read and one connection on Redis, one due-time query per round on SQLite, and no per-step
polling while the worker is idle (a round ends on a publish, a due time, or ``poll_s``; it wakes no
consumer unless one of its steps may have work).

A consumer that goes idle while a call is pending is not covered by it: the call is cancelled (cheap on
every backend) and asked again with that step too, once per event-loop iteration however many
consumers went idle in it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .backends.stores import WaitStore
from .errors import BackendError
from .logs import StepLogger


class Waker:
    """Waits for work on behalf of idle consumers (see the module docstring).

    Args:
        backend: where to wait.
        poll_s: the longest one call waits (a safety net: the calls return on publishes and due times).
        log: where a failing backend is reported (once per outage).
    """

    def __init__(self, backend: WaitStore, poll_s: float, log: StepLogger) -> None:
        self.backend = backend
        self.poll_s = poll_s
        self.log = log
        self._idle: dict[str, asyncio.Future[None]] = {}  # step -> its idle consumer's wake-up
        self._covered: frozenset[str] = frozenset()  # the steps of the pending call
        self._grew = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def idle(self, step: str, stop: asyncio.Future[Any]) -> None:
        """Return when ``step`` may have work (or ``stop`` is done)."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle[step] = woken
        if step not in self._covered:
            self._grew.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="motia-waker")
        try:
            await asyncio.wait({woken, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._idle.get(step) is woken:
                del self._idle[step]

    def wake_all(self) -> None:
        """Wake every idle consumer (they claim again)."""
        idle, self._idle = self._idle, {}
        for woken in idle.values():
            if not woken.done():
                woken.set_result(None)

    async def stop(self) -> None:
        """Stop waiting (the consumers stop on their own ``stop`` future)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            if not self._idle:
                self._grew.clear()
                await self._grew.wait()
                continue
            self._grew.clear()
            self._covered = frozenset(self._idle)
            call = asyncio.ensure_future(self.backend.wait_any(self._covered, self.poll_s))
            grew = asyncio.ensure_future(self._grew.wait())
            try:
                await asyncio.wait({call, grew}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                grew.cancel()
                self._covered = frozenset()
                if not call.done():  # a consumer went idle that the call does not cover: ask again
                    call.cancel()
                    call.add_done_callback(_retrieve)
            if call.done():
                await self._report(call)

    async def _report(self, call: asyncio.Future[set[str]]) -> None:
        """Wake the consumers of the steps a call named; after a backend failure, wake them all (their
        claims report it) and pause before the next call."""
        try:
            ready = call.result()
        except Exception as exc:  # a BackendError is an outage; anything else a bug, reported as one
            if not self._failing:
                bug = "" if isinstance(exc, BackendError) else " (a bug: please report it)"
                self.log.warning(f"waiting for events failed{bug}: {type(exc).__name__}: {exc}; retrying")
            self._failing = True
            self.wake_all()
            await asyncio.sleep(min(1.0, self.poll_s))
            return
        self._failing = False
        for step in ready:
            woken = self._idle.pop(step, None)
            if woken is not None and not woken.done():
                woken.set_result(None)


def _retrieve(call: asyncio.Future[Any]) -> None:
    if not call.cancelled():
        call.exception()  # failed after nobody waited for it any more
