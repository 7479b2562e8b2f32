"""One wait for every idle consumer of a worker: the consumers whose queues are drained register here,
and one backend call, :meth:`~.backends.stores.WaitStore.wait_any`, waits for all of them at once; the
consumers of the steps it names are woken.

The cost of waiting is then one backend call at a time per worker, whatever its number of steps: one
blocking read and one connection on Redis, one due-time query per round on SQLite, and no per-step
polling while the worker is idle (a round ends on a publish, a due time, or ``poll_s``; it wakes no
consumer unless one of its steps may have work).

A consumer that goes idle while a call is pending is not covered by it: the call is cancelled (cheap on
every backend) and made again with that step too, once per event-loop iteration however many
consumers went idle in it. The waker is driven by callbacks, not a task of its own, so a wake-up
reaches a consumer in one turn of the loop.
"""

from __future__ import annotations

import asyncio
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
        self._call: asyncio.Future[set[str]] | None = None  # the pending wait_any
        self._covered: frozenset[str] = frozenset()  # its steps
        self._again = False  # a restart is scheduled for this loop iteration
        self._paused: asyncio.TimerHandle | None = None  # after a failure: no call until it fires
        self._failing = False
        self._stopped = False

    async def idle(self, step: str, stop: asyncio.Future[Any]) -> None:
        """Return when ``step`` may have work (or ``stop`` is done)."""
        if stop.done():
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle[step] = woken
        self._stopped = False
        if step not in self._covered:
            self._restart_soon()

        def on_stop(_: asyncio.Future[Any]) -> None:
            if not woken.done():
                woken.set_result(None)

        stop.add_done_callback(on_stop)
        try:
            await woken
        finally:
            stop.remove_done_callback(on_stop)
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
        self._stopped = True
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

    def _restart_soon(self) -> None:
        if not self._again:
            self._again = True
            asyncio.get_running_loop().call_soon(self._restart)

    def _restart(self) -> None:
        """(Re)start the call so that it covers every idle consumer."""
        self._again = False
        if self._stopped or self._paused is not None:
            return
        call = self._call
        if call is not None:
            if set(self._idle) <= self._covered:
                return
            self._call = None  # its result no longer matters: the new call covers its steps too
            call.cancel()
            call.add_done_callback(_retrieve)
        if not self._idle:
            self._covered = frozenset()
            return
        self._covered = frozenset(self._idle)
        self._call = asyncio.ensure_future(self._wait(self._covered))

    async def _wait(self, steps: frozenset[str]) -> set[str]:
        """One call, and what follows it in the same task (not in a done callback, which would cost the
        wake-up one more turn of the loop before any consumer runs)."""
        me = asyncio.current_task()
        try:
            due = await self.backend.wait_any(steps, self.poll_s)
        except Exception as exc:
            if me is not self._call:
                raise  # a replaced call: _retrieve takes its failure
            self._ended(None, exc)
            return set()
        if me is self._call:
            self._ended(due, None)
        return due

    def _ended(self, due: set[str] | None, exc: BaseException | None) -> None:
        """The current call returned ``due`` (or failed with ``exc``): wake the consumers of the steps it
        named, then wait again for the others. After a failure, wake them all (their claims report it) and
        pause before the next call. (A call replaced or stopped is cancelled and ends nothing.)"""
        self._call, self._covered = None, frozenset()
        if exc is not None:  # a BackendError is an outage; anything else a bug, reported as one
            if not self._failing:
                bug = "" if isinstance(exc, BackendError) else " (a bug: please report it)"
                self.log.warning(f"waiting for events failed{bug}: {type(exc).__name__}: {exc}; retrying")
            self._failing = True
            self.wake_all()
            self._paused = asyncio.get_running_loop().call_later(min(1.0, self.poll_s), self._resume)
            return
        self._failing = False
        for step in due or ():
            woken = self._idle.pop(step, None)
            if woken is not None and not woken.done():
                woken.set_result(None)
        self._restart()

    def _resume(self) -> None:
        self._paused = None
        self._restart()


def _retrieve(call: asyncio.Future[Any]) -> None:
    if not call.cancelled():
        call.exception()  # failed after nobody waited for it any more
