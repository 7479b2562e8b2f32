"""Consumers: one claim loop per event or cron step, lease heartbeats, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field

from .backends.base import Delivery
from .config import StepType
from .errors import BackendError
from .router import Router


@dataclass(slots=True)
class _Consumer:
    step: str
    task: asyncio.Task[None] | None = None
    running: dict[asyncio.Task[str], Delivery] = field(default_factory=dict)
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    """Claims deliveries for every event and cron step and runs them through the router.

    Args:
        router: the router that runs deliveries.
        poll_s: how long an idle consumer waits before asking the backend again (backends that can
            push a wake-up, like memory, return sooner).
        steps: only these steps (default: all event and cron steps).
    """

    def __init__(self, router: Router, *, poll_s: float = 0.5, steps: set[str] | None = None) -> None:
        self.router = router
        self.poll_s = poll_s
        self.only = steps
        self._consumers: dict[str, _Consumer] = {}
        self._stopping = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._backend_down = False

    @property
    def in_flight(self) -> int:
        """Deliveries being handled right now."""
        return sum(len(c.running) for c in self._consumers.values())

    def _wanted(self) -> set[str]:
        names = {s.name for s in self.router.steps.values() if s.type in (StepType.EVENT, StepType.CRON)}
        return names if self.only is None else names & self.only

    async def start(self) -> None:
        """Start a consumer per step and the lease heartbeat."""
        self._stopping.clear()
        self.sync()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="motia-heartbeat")

    def sync(self) -> None:
        """Start consumers for new steps and stop those of removed steps (after a reload).

        A removed step's running handlers finish on the code they started with.
        """
        wanted = self._wanted()
        for name in wanted - set(self._consumers):
            c = _Consumer(step=name)
            c.task = asyncio.create_task(self._consume(c), name=f"motia-consumer-{name}")
            self._consumers[name] = c
        for name in set(self._consumers) - wanted:
            c = self._consumers[name]
            if c.task is not None:
                c.task.cancel()
            if not c.running:
                del self._consumers[name]

    async def _consume(self, c: _Consumer) -> None:
        router = self.router
        backend = router.backend
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                spec = router.steps.get(c.step)
                if spec is None:
                    return
                free = spec.queue.concurrency - len(c.running)
                if free <= 0:
                    c.slot_free.clear()
                    await asyncio.wait({asyncio.ensure_future(c.slot_free.wait()), stop_wait},
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch = await backend.claim(c.step, free, spec.queue.visibility_timeout_s)
                    if self._backend_down:
                        self._backend_down = False
                        router.log.info("backend reachable again", backend=backend.url)
                except BackendError as exc:
                    if not self._backend_down:
                        self._backend_down = True
                        router.log.error(f"backend unavailable, retrying: {exc}", backend=backend.url)
                    await asyncio.wait({stop_wait}, timeout=min(5.0, self.poll_s * 2))
                    continue
                if not batch:
                    waiter = asyncio.ensure_future(backend.wait(c.step, self.poll_s))
                    await asyncio.wait({waiter, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                    continue
                for d in batch:
                    t = asyncio.create_task(router.run_delivery(d))
                    c.running[t] = d
                    t.add_done_callback(functools.partial(self._done, c))
                if len(batch) >= free:
                    await asyncio.sleep(0)  # let the handlers start before claiming more
        finally:
            stop_wait.cancel()

    def _done(self, c: _Consumer, t: asyncio.Task[str]) -> None:
        c.running.pop(t, None)
        c.slot_free.set()
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            self.router.log.error(f"delivery crashed inside motia-py: {type(exc).__name__}: {exc}",
                                  step=c.step)
        if c.task is not None and c.task.done() and not c.running and self._consumers.get(c.step) is c:
            del self._consumers[c.step]

    async def _beat(self) -> None:
        while True:
            leases = [s.queue.visibility_timeout_s for s in self.router.steps.values()]
            interval = max(0.05, min(leases, default=30.0) / 3)
            await asyncio.sleep(interval)
            for c in list(self._consumers.values()):
                spec = self.router.steps.get(c.step)
                if spec is None or not c.running:
                    continue
                with contextlib.suppress(BackendError):
                    await self.router.backend.extend(list(c.running.values()), spec.queue.visibility_timeout_s)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop claiming, let running handlers finish within ``grace_s``, then cancel the rest.

        Cancelled deliveries are handed back to the queue; nothing that was queued is lost.
        """
        self._stopping.set()
        consumers = [c.task for c in self._consumers.values() if c.task is not None]
        await asyncio.gather(*consumers, return_exceptions=True)
        running = [t for c in self._consumers.values() for t in c.running]
        if running:
            _, pending = await asyncio.wait(running, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        self._consumers.clear()

