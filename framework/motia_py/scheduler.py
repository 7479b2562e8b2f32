"""The cron scheduler: turns each tick of each cron step into one queued delivery, exactly once across
every worker sharing the backend, with an injected clock.

Each cron step has one metadata record, :func:`motia_py.meta_keys.cron_tick`: the last tick that some
scheduler fired (epoch seconds, JSON). A scheduler fires a tick only after moving that record forward to
it with ``meta_cas``; a scheduler that finds the record at or past its tick does not fire. So of any
number of schedulers racing for one tick, one fires it, and the storage is one record per step however
long the schedule runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final

from . import meta_keys
from .config import CronMissed, StepSpec, StepType
from .cron import fires_between, next_fire
from .errors import BackendError
from .router import Router
from .types import Clock

_MAX_RACES: Final = 1000  # lost compare-and-set rounds in a row before giving up on a tick


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _seconds(raw: str | None) -> float | None:
    """The epoch seconds of a record (a tick, a check); None when absent or unreadable (then overwritten)."""
    if raw is None:
        return None
    try:
        return float(json.loads(raw))
    except (ValueError, TypeError):
        return None


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
            raw = await self.router.backend.meta_get(meta_keys.CRON_ALIVE)
        except BackendError as exc:
            self.router.log.warning(f"cron scheduler could not read when a scheduler last checked ({exc}); "
                                    "ticks missed while no worker ran will not be caught up")
            return
        last_alive = _seconds(raw)
        if last_alive is None:
            return
        for spec in self.cron_steps():
            if spec.cron_policy.missed is not CronMissed.RUN_ONCE or spec.cron is None:
                continue
            missed = fires_between(spec.cron, _dt(last_alive), _dt(now), limit=10_000)
            if not missed:
                continue
            try:
                await self._fire(spec, missed[-1])
            except BackendError as exc:
                self.router.log.warning(f"cron scheduler could not fire the missed tick {missed[-1].isoformat()} of "
                                        f"'{spec.name}' ({exc}); it will not be caught up", step=spec.name)

    async def tick(self, now: float | None = None) -> int:
        """Fire every tick due since the last check up to ``now``; return how many were fired here.

        Raises:
            BackendError: a tick could not be fired; the next call fires the ticks since the same last
                check again (those fired already are not fired twice).
        """
        now = self.clock() if now is None else now
        last = self._last_check if self._last_check is not None else now
        fired = 0
        for spec in self.cron_steps():
            if spec.cron is not None:
                for when in fires_between(spec.cron, _dt(last), _dt(now)):
                    fired += await self._fire(spec, when)
        self._last_check = now
        try:
            await self.router.backend.meta_set(meta_keys.CRON_ALIVE, json.dumps(now))
        except BackendError as exc:
            self.router.log.warning(f"cron scheduler could not record its check ({exc}); if every worker stops "
                                    "before a later check is recorded, the next start-up counts the ticks since the "
                                    "previous record as missed (a tick already fired still never fires twice)")
        return fired

    async def _fire(self, spec: StepSpec, when: datetime) -> int:
        """Fire ``when`` if this scheduler moves the step's tick record to it first; 1 if fired, else 0."""
        key, tick = meta_keys.cron_tick(spec.name), when.timestamp()
        backend = self.router.backend
        for _ in range(_MAX_RACES):
            raw = await backend.meta_get(key)
            last = _seconds(raw)
            if last is not None and last >= tick:
                return 0  # fired by another scheduler (or skipped by a catch-up past it)
            if await backend.meta_cas(key, raw, json.dumps(tick)):
                await self.router.fire_cron(spec.name, when)
                return 1
        raise BackendError(f"cron tick {when.isoformat()} of '{spec.name}': lost {_MAX_RACES} races in a row")

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
                self.router.log.warning(f"cron scheduler could not fire due ticks ({exc}); it tries again within "
                                        "a second, firing every tick since its last check")
