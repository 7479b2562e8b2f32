"""Consumers: one claim loop per event or cron step, a pool of runner tasks per step (no task per
delivery on the hot path), lease heartbeats, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections import deque

from msgspec import Struct, field
from msgspec.structs import replace

from .backends.base import Delivery
from .config import QUEUED_TYPES
from .errors import BackendError
from .isolation import Isolation
from .router import Router
from .waker import Waker

_HEAD_START_S = 0.005
CANCEL_POLL_S = 0.5
"""How often a worker asks whether the events of the deliveries it holds were cancelled."""


class _Consumer(Struct):
    step: str
    task: asyncio.Task[None] | None = None
    pending: deque[Delivery] = field(default_factory=deque)  # claimed, not started yet
    active: dict[str, Delivery] = field(default_factory=dict)  # running now
    runners: set[asyncio.Task[None]] = field(default_factory=set)
    idle_runners: int = 0
    work: asyncio.Event = field(default_factory=asyncio.Event)
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    @property
    def busy(self) -> int:
        return len(self.pending) + len(self.active)


class Worker:
    """Claims deliveries for every event and cron step and runs them through the router.

    Args:
        router: the router that runs deliveries.
        poll_s: the longest one wait for work lasts before the backend is asked again (every backend
            returns sooner on a publish or a due time; idle consumers share one wait, see :mod:`.waker`).
        steps: only these steps (default: all event and cron steps).
        cancel_poll_s: how often to ask whether the events of held deliveries were cancelled.
    """

    def __init__(self, router: Router, *, poll_s: float = 0.5, steps: set[str] | None = None,
                 cancel_poll_s: float = CANCEL_POLL_S) -> None:
        self.router = router
        self.poll_s = poll_s
        self.only = steps
        self.cancel_poll_s = cancel_poll_s
        self._cancel_watch: asyncio.Task[None] | None = None
        self._claimed = asyncio.Event()  # set by every claim that got something: the cancel watch wakes
        self._consumers: dict[str, _Consumer] = {}
        self._retired: list[_Consumer] = []
        self._stopping = asyncio.Event()
        self._heartbeat: asyncio.Task[None] | None = None
        self._backend_down = False
        self._renewal_failing = False
        self._isolation = Isolation()
        self._chores: set[asyncio.Task[None]] = set()
        self._waker = Waker(router.backend, poll_s, router.log)

    @property
    def in_flight(self) -> int:
        """Deliveries claimed by this worker and not finished yet."""
        return sum(c.busy for c in (*self._consumers.values(), *self._retired))

    def _wanted(self) -> set[str]:
        names = {s.name for s in self.router.steps.values() if s.type in QUEUED_TYPES}
        return names if self.only is None else names & self.only

    async def start(self) -> None:
        """Start a consumer per step and the lease heartbeat."""
        self._stopping.clear()
        self.sync()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="motia-heartbeat")
        if self._cancel_watch is None:
            self._cancel_watch = asyncio.create_task(self._watch_cancels(), name="motia-cancels")

    def sync(self) -> None:
        """Start consumers for new steps and stop those of removed steps (after a reload).

        A removed step's running handlers finish on the code they started with; its deliveries claimed
        but not started are handed back to the queue at once (they wait there for a step of that name).
        """
        wanted = self._wanted()
        for name in wanted - set(self._consumers):
            c = _Consumer(step=name)
            c.task = asyncio.create_task(self._consume(c), name=f"motia-consumer-{name}")
            self._consumers[name] = c
        for name in set(self._consumers) - wanted:
            c = self._consumers.pop(name)
            c.closing = True
            if c.task is not None:
                c.task.cancel()
            unstarted = list(c.pending)
            c.pending.clear()
            if unstarted:
                hand_back = asyncio.create_task(self._hand_back(unstarted, "its step was removed by a reload"))
                self._chores.add(hand_back)
                hand_back.add_done_callback(self._chores.discard)
            c.work.set()
            self._retired.append(c)
        self._retired = [c for c in self._retired if c.busy or any(not r.done() for r in c.runners)]

    async def _consume(self, c: _Consumer) -> None:
        router = self.router
        backend = router.backend
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                spec = router.steps.get(c.step)
                if spec is None:
                    return
                if not self._isolation.open.is_set():  # a suspect delivery runs alone: claim nothing now
                    await asyncio.wait({asyncio.ensure_future(self._isolation.open.wait()), stop_wait},
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                free = spec.queue.concurrency - c.busy
                if free <= 0:
                    c.slot_free.clear()
                    await asyncio.wait({asyncio.ensure_future(c.slot_free.wait()), stop_wait},
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                control = spec.queue.flow.control  # fleet-wide limits, enforced by the backend's claim
                try:
                    batch = await (backend.claim(c.step, free, spec.queue.visibility_timeout_s) if control is None
                                   else backend.claim(c.step, free, spec.queue.visibility_timeout_s, control=control))
                    if self._backend_down:
                        self._backend_down = False
                        router.log.info("backend reachable again", backend=backend.url)
                except BackendError as exc:
                    if not self._backend_down:
                        self._backend_down = True
                        router.log.error(f"backend unavailable, retrying: {exc}", backend=backend.url)
                    await asyncio.wait({stop_wait}, timeout=min(5.0, self.poll_s * 2))
                    continue
                if len(batch) == 1 and batch[0].expired:  # backends hand out a suspect alone
                    self._run_alone(c, batch[0])
                    await asyncio.sleep(0)  # its task closes the gate before this loop claims again
                    continue
                if batch:
                    self._claimed.set()
                    c.pending.extend(batch)
                    self._dispatch(c, spec.queue.concurrency)
                    await asyncio.sleep(0)  # let the runners start before claiming more
                if len(batch) < free:  # the queue is drained: wait (it returns at once if more is due)
                    if batch:
                        # Give the handlers just started a head start (until one finishes, at most
                        # _HEAD_START_S): asking the backend now would race their acknowledgements,
                        # which sit on the latency path of every chain of steps.
                        c.slot_free.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(c.slot_free.wait(), _HEAD_START_S)
                    if control is None:  # one wait for every idle consumer of the worker
                        await self._waker.idle(c.step, stop_wait)
                        continue
                    # a step under flow control waits on its own: "due" depends on its limits
                    waiter = asyncio.ensure_future(backend.wait(c.step, self.poll_s, control=control))
                    await asyncio.wait({waiter, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        waiter.cancel()
                    elif not waiter.cancelled() and isinstance(waiter.exception(), BackendError):
                        await asyncio.wait({stop_wait}, timeout=min(1.0, self.poll_s))  # the claim reports it
        finally:
            stop_wait.cancel()

    def _dispatch(self, c: _Consumer, concurrency: int) -> None:
        """Wake idle runners and start new ones up to the step's concurrency."""
        missing = min(len(c.pending) - c.idle_runners, concurrency - len(c.runners))
        for _ in range(max(0, missing)):
            t = asyncio.create_task(self._runner(c))
            c.runners.add(t)
            t.add_done_callback(c.runners.discard)
        c.work.set()

    async def _run_one(self, c: _Consumer, d: Delivery) -> None:
        """Run one delivery through the router; log what escapes it for what it is."""
        try:
            await self.router.run_delivery(d)
        except asyncio.CancelledError:
            raise
        except BackendError as exc:
            self.router.log.warning(f"backend error while running '{c.step}' ({exc}); the event will be "
                                    "delivered again after its lease", step=c.step, trace_id=d.envelope.trace_id)
        except Exception as exc:
            self.router.log.error(f"delivery crashed inside motia-py (a bug: please report it): "
                                  f"{type(exc).__name__}: {exc}", step=c.step, trace_id=d.envelope.trace_id,
                                  traceback="".join(traceback.format_exception(exc)))

    def _run_alone(self, c: _Consumer, d: Delivery) -> None:
        """Run a suspect delivery (its previous worker died mid-run) with nothing else running here."""
        c.active[d.id] = d  # leased: the heartbeat renews it while it waits for its turn
        self._claimed.set()

        async def before() -> None:
            self.router.log.warning(
                f"running an event of '{d.step}' alone: its previous attempt's worker ({d.last_owner or 'unknown'}) "
                f"stopped during the run (attempt {d.attempt})", step=d.step, trace_id=d.envelope.trace_id,
                attempt=d.attempt)
            for other in (*self._consumers.values(), *self._retired):  # claimed, not started: back, uncounted
                unstarted = list(other.pending)
                other.pending.clear()
                await self._hand_back(unstarted, "an event runs alone")

        async def solo() -> None:
            try:
                await self._isolation.alone(lambda: self._run_one(c, d), before)
            finally:
                c.active.pop(d.id, None)
                c.slot_free.set()

        task = asyncio.create_task(solo(), name=f"motia-alone-{d.step}")
        c.runners.add(task)
        task.add_done_callback(c.runners.discard)

    async def _runner(self, c: _Consumer) -> None:
        gate = self._isolation
        while True:
            while c.pending:
                if not gate.open.is_set():
                    await gate.open.wait()
                    continue  # what was pending may have been handed back meanwhile
                d = c.pending.popleft()
                c.active[d.id] = d
                gate.enter()
                try:
                    await self._run_one(c, d)
                finally:
                    gate.leave()
                    c.active.pop(d.id, None)
                    c.slot_free.set()
            if c.closing or self._stopping.is_set():
                return
            c.work.clear()
            c.idle_runners += 1
            try:
                await c.work.wait()
            finally:
                c.idle_runners -= 1

    async def _beat(self) -> None:
        while True:
            leases = [s.queue.visibility_timeout_s for s in self.router.steps.values()]
            interval = max(0.05, min(leases, default=30.0) / 3)
            await asyncio.sleep(interval)
            for c in (*self._consumers.values(), *self._retired):
                spec = self.router.steps.get(c.step)
                lease = spec.queue.visibility_timeout_s if spec is not None else 60.0
                held = [*c.active.values(), *c.pending]
                if held:
                    await self._renew(c.step, held, lease)

    async def _watch_cancels(self) -> None:
        """Every ``cancel_poll_s``, while this worker holds deliveries: ask the backend which of their events
        were cancelled; stop those runs, and mark those claimed but not started (they are settled unrun).
        An idle worker's watch sleeps until its next claim (no wake-up every ``cancel_poll_s`` for nothing)."""
        while True:
            await asyncio.sleep(self.cancel_poll_s)
            consumers = (*self._consumers.values(), *self._retired)
            held = [d for c in consumers for d in (*c.active.values(), *c.pending)]
            if not held:
                self._claimed.clear()
                await self._claimed.wait()
                continue
            try:
                gone = await self.router.backend.cancel_requests(held)
            except BackendError:
                continue  # the heartbeat reports outages; the next round asks again
            if not gone:
                continue
            for c in consumers:
                for i, d in enumerate(c.pending):
                    if d.id in gone and not d.cancelled:
                        c.pending[i] = replace(d, cancelled=True)
                for delivery_id in [i for i in c.active if i in gone]:
                    self.router.cancel_running(delivery_id)

    async def _renew(self, step: str, held: list[Delivery], lease_s: float) -> None:
        try:
            await self.router.backend.extend(held, lease_s)
        except BackendError as exc:
            if not self._renewal_failing:  # once per outage, not once per beat
                self.router.log.warning(f"lease renewal failed ({exc}); {len(held)} event(s) of '{step}' may be "
                                        "delivered again if their leases run out before it succeeds", step=step)
            self._renewal_failing = True
        else:
            self._renewal_failing = False

    async def _hand_back(self, deliveries: list[Delivery], why: str) -> None:
        """Return claimed deliveries that never started to the queue at once (not after their lease), their
        attempt not counted."""
        if not deliveries:
            return
        try:
            await self.router.backend.hand_back(deliveries)
        except BackendError as exc:
            self.router.log.warning(f"could not hand back {len(deliveries)} unstarted event(s) ({why}): {exc}; "
                                    "they will be delivered again after their lease", step=deliveries[0].step)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop claiming, let running handlers finish within ``grace_s``, then cancel the rest.

        Claimed deliveries that had not started go back to the queue at once; cancelled ones too.
        Nothing that was queued is lost.
        """
        self._stopping.set()
        consumers = [*self._consumers.values(), *self._retired]
        await asyncio.gather(*(c.task for c in consumers if c.task is not None), return_exceptions=True)
        await self._waker.stop()
        for c in consumers:  # claimed but not started: hand back now rather than after the lease
            unstarted = list(c.pending)
            c.pending.clear()
            await self._hand_back(unstarted, "the worker shut down before its handler started")
            c.work.set()
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        runners = [r for c in consumers for r in c.runners]
        if runners:
            _, pending = await asyncio.wait(runners, timeout=grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._cancel_watch is not None:
            self._cancel_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cancel_watch
            self._cancel_watch = None
        self._consumers.clear()
        self._retired.clear()
