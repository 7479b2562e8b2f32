"""Running a suspect delivery alone.

A delivery whose previous attempt's lease expired was probably running when its worker died (a crash,
``os._exit``, a segfault, the OOM killer), and it may be what killed it. The backend hands such a
delivery out alone (a batch of one); the worker then runs it in isolation: it stops starting other
handlers, waits for the running ones to finish, hands back what it had claimed but not started, and
runs the suspect with nothing beside it. If it kills the worker again, it takes no other delivery with
it, and the attempt cap dead-letters it after ``maxRetries + 1`` started attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Isolation:
    """A process-wide gate: ordinary runs pass while no suspect waits; a suspect runs alone."""

    def __init__(self) -> None:
        self.open = asyncio.Event()  # set: ordinary runs may start
        self.open.set()
        self._running = 0  # ordinary runs in progress
        self._drained = asyncio.Event()
        self._drained.set()
        self._solo = asyncio.Lock()  # one suspect at a time

    def enter(self) -> None:
        """An ordinary run starts (call only while :attr:`open` is set)."""
        self._running += 1
        self._drained.clear()

    def leave(self) -> None:
        """An ordinary run ended."""
        self._running -= 1
        if self._running == 0:
            self._drained.set()

    async def alone(self, run: Callable[[], Awaitable[T]], before: Callable[[], Awaitable[None]] | None = None) -> T:
        """Close the gate, wait for ordinary runs to finish, call ``before`` (e.g. hand back unstarted
        deliveries), run ``run`` alone, then open the gate again."""
        async with self._solo:
            self.open.clear()
            try:
                if before is not None:
                    await before()
                await self._drained.wait()
                return await run()
            finally:
                self.open.set()
