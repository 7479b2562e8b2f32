"""The cron scheduler: turns each tick of each cron step into one queued delivery, exactly once across
every worker sharing the backend (a lease keyed by step and scheduled time), with an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from .backends.base import new_id
from .config import CronMissed, StepSpec, StepType
from .cron import fires_between, next_fire
from .errors import BackendError
from .router import Router
from .types import Clock

_TICK_LEASE_S = 7 * 24 * 3600.0  # a claimed tick's key outlives any clock skew between workers
_ALIVE_KEY = "cron-alive"


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Scheduler:
    """Fires cron steps on schedule.

    A tick counts as *missed* only when no scheduler was running at its time: a scheduler that wakes
    late (a busy machine, a paused laptop) fires every tick since its last check, each with its own
    ``scheduled_at``. Ticks from before the scheduler started are run once (``missed = run_once``) or
    skipped (default).

    Args:
        router: publishes the ticks.
        clock: seconds since the epoch (injected in tests).
        sleep: how to wait (injected in tests).
    """

    def __init__(self, router: Router, *, clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.router = router
        self.clock: Clock = clock or router.clock
        self._sleep = sleep or asyncio.sleep
        self.owner = new_id()
        self._last_check: float | None = None
        self._task: asyncio.Task[None] | None = None

    def cron_steps(self) -> list[StepSpec]:
        """The project's cron steps."""
        return [s for s in self.router.steps.values() if s.type is StepType.CRON and s.cron is not None]

    async def start(self) -> None:
        """Start firing in the background."""
        now = self.clock()
        await self._catch_up(now)
        self._last_check = now
        self._task = asyncio.create_task(self._loop(), name="motia-cron")

    async def stop(self) -> None:
        """Stop firing (ticks already queued stay queued)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _catch_up(self, now: float) -> None:
        """At start-up: the ticks since the last scheduler ran were missed; apply each step's policy."""
        try:
            raw = await self.router.backend.meta_get(_ALIVE_KEY)
        except BackendError:
            return
        if raw is None:
            return
        last_alive = float(json.loads(raw))
        for spec in self.cron_steps():
            if spec.cron_policy.missed is not CronMissed.RUN_ONCE or spec.cron is None:
                continue
            missed = fires_between(spec.cron, _dt(last_alive), _dt(now), limit=10_000)
            if missed:
                await self._fire(spec, missed[-1])

    async def tick(self, now: float | None = None) -> int:
        """Fire every tick due since the last check up to ``now``; return how many were fired here."""
        now = self.clock() if now is None else now
        last = self._last_check if self._last_check is not None else now
        fired = 0
        for spec in self.cron_steps():
            assert spec.cron is not None  # cron_steps() filters
            for when in fires_between(spec.cron, _dt(last), _dt(now)):
                fired += await self._fire(spec, when)
        self._last_check = now
        with contextlib.suppress(BackendError):
            await self.router.backend.meta_set(_ALIVE_KEY, json.dumps(now))
        return fired

    async def _fire(self, spec: StepSpec, when: datetime) -> int:
        key = f"cron-tick:{spec.name}:{when.timestamp():.3f}"
        if not await self.router.backend.acquire(key, self.owner, _TICK_LEASE_S):
            return 0  # another worker fired this tick
        await self.router.fire_cron(spec.name, when)
        return 1

    def next_due(self, now: float) -> float | None:
        """Epoch seconds of the next tick of any cron step after ``now``."""
        times = [next_fire(s.cron, _dt(now)).timestamp() for s in self.cron_steps() if s.cron is not None]
        return min(times) if times else None

    async def _loop(self) -> None:
        while True:
            now = self.clock()
            due = self.next_due(now)
            wait = 1.0 if due is None else max(0.0, due - now)
            await self._sleep(min(wait, 1.0) + (0.001 if due is not None and wait <= 1.0 else 0.0))
            try:
                await self.tick()
            except BackendError as exc:
                self.router.log.error(f"cron scheduler: backend error: {exc}")

