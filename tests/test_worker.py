"""The worker: per-step concurrency, reloads, graceful stop, lease heartbeats and backend outages.

Handlers wait on events the test hands them (``tests.probes``), so every test waits on a signal; the only
real time spent is where time is the behaviour itself (a grace period, a handler outliving its lease).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from motia_py.backends.base import Delivery
from motia_py.backends.memory import MemoryBackend
from motia_py.errors import BackendError
from motia_py.runtime import Runtime, backend_for
from motia_py.testing import Harness
from motia_py.worker import Worker

from .conftest import ProjectFactory
from .probes import emit, inject, load, until, wait

FLOW = {"flows/f.toml": 'entry_topics = ["work", "other"]\n'}


def work_step(name: str = "Work", topic: str = "work", queue: str = "{}", body: str = "await gate.wait()") -> str:
    """An event step that records each start in ``starts`` and then runs ``body``."""
    return f"""
        import asyncio
        config = {{"type": "event", "name": "{name}", "subscribes": ["{topic}"], "emits": [], "flows": ["f"],
                  "infrastructure": {{"queue": {queue}}}}}
        async def handler(input, ctx):
            starts.append((input["i"], ctx.attempt))
            if len(starts) == expected_starts:
                all_started.set()
            {body}
            done.append(input["i"])
    """


def probes(project: Any, step: str = "Work", expected_starts: int = 1) -> dict[str, Any]:
    """Hand a step's handler its gate and records; return them."""
    values: dict[str, Any] = {"gate": asyncio.Event(), "all_started": asyncio.Event(), "starts": [], "done": [],
                              "expected_starts": expected_starts}
    inject(project, step, **values)
    return values


# -- concurrency ---------------------------------------------------------------------------------------


async def test_a_step_never_runs_more_handlers_at_once_than_its_concurrency(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"concurrency": 3}}}
        running = 0
        async def handler(input, ctx):
            global running
            running += 1
            peaks.append(running)
            if running == 3:
                full.set()
            await gate.wait()
            running -= 1
    """})
    async with Harness(root) as h:
        gate, full, peaks = asyncio.Event(), asyncio.Event(), []
        inject(h.project, "Work", gate=gate, full=full, peaks=peaks)
        for i in range(10):
            await h.emit("work", {"i": i})
        await wait(full, "three handlers running")
        worker = h.runtime.worker
        assert worker is not None
        stats = await h.backend.stats()
        # the worker holds exactly its limit; the rest wait in the backend, where other workers can take them
        assert (worker.in_flight, stats.leased, stats.ready) == (3, 3, 7)
        gate.set()
        await h.run_until_idle()
    assert len(peaks) == 10 and max(peaks) == 3


async def test_the_concurrency_limit_is_per_step(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW,
                         "steps/slow.step.py": work_step("Slow", queue='{"concurrency": 2}'),
                         "steps/fast.step.py": work_step("Fast", queue='{"concurrency": 20}', body="pass")})
    async with Harness(root) as h:
        slow = probes(h.project, "Slow", expected_starts=2)
        fast = probes(h.project, "Fast", expected_starts=6)
        for i in range(6):
            await h.emit("work", {"i": i})
        await wait(slow["all_started"], "two slow handlers")
        await wait(fast["all_started"], "all six fast handlers, while the slow step is at its limit")
        assert len(slow["starts"]) == 2
        slow["gate"].set()
        await h.run_until_idle()
    assert sorted(slow["done"]) == sorted(fast["done"]) == list(range(6))


async def test_a_worker_limited_to_some_steps_leaves_the_others_queued(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/a.step.py": work_step("A", body="pass"),
                         "steps/b.step.py": work_step("B", body="pass")})
    project = load(root)
    async with Runtime(project, MemoryBackend(), workers=False, cron=False) as rt:
        a, b = probes(project, "A"), probes(project, "B")
        await emit(rt, "work", {"i": 1})  # one delivery for A, one for B, both due now
        worker = Worker(rt.router, poll_s=0.01, steps={"A"})
        await worker.start()
        try:
            await wait(a["all_started"], "A's handler")
            await until(lambda: worker.in_flight == 0, "A's delivery to be acknowledged")
        finally:
            await worker.stop(grace_s=5)
        stats = await rt.backend.stats()
    assert a["done"] == [1] and b["starts"] == []
    assert (stats.ready, stats.leased) == (1, 0)  # B's delivery, untouched


# -- reload --------------------------------------------------------------------------------------------


async def test_removing_a_step_lets_its_running_handler_finish_and_keeps_its_queue(
    make_project: ProjectFactory,
) -> None:
    body = 'await gate.wait()\n            await ctx.state.set("done", str(input["i"]), "v1")'
    root = make_project({**FLOW, "steps/work.step.py": work_step(queue='{"concurrency": 1}', body=body),
                         "steps/other.step.py": work_step("Other", topic="other", body="pass")})
    async with Harness(root) as h:
        old = probes(h.project)
        for i in range(3):
            await h.emit("work", {"i": i})
        await wait(old["all_started"], "the first handler")
        (root / "steps/work.step.py").unlink()
        await h.runtime.reload(load(root))
        old["gate"].set()  # the running handler ends on the code it started with
        worker = h.runtime.worker
        assert worker is not None
        await until(lambda: worker.in_flight == 0, "the running handler to finish")
        assert await h.state("f").items("done") == {"0": "v1"}
        stats = await h.backend.stats()
        assert (stats.ready, stats.leased, stats.dead) == (2, 0, 0)  # queued: neither lost nor dead-lettered
        assert [r.outcome for r in h.runs_of("Work")] == ["ok"]

        make_project({"steps/work.step.py": work_step(
            body='await ctx.state.set("done", str(input["i"]), "v2")')}, root)
        await h.runtime.reload(load(root))
        inject(h.project, "Work", starts=[], done=[], all_started=asyncio.Event(), expected_starts=2)
        await h.run_until_idle()
        assert await h.state("f").items("done") == {"0": "v1", "1": "v2", "2": "v2"}


# -- graceful stop -------------------------------------------------------------------------------------


async def test_stop_lets_running_handlers_finish_and_leaves_the_rest_queued(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": work_step(queue='{"concurrency": 2}')})
    async with Harness(root) as h:
        p = probes(h.project, expected_starts=2)
        for i in range(5):
            await h.emit("work", {"i": i})
        await wait(p["all_started"], "two handlers")
        worker = h.runtime.worker
        assert worker is not None
        started = time.monotonic()
        stopping = asyncio.create_task(worker.stop(grace_s=30))
        await asyncio.sleep(0)  # one turn of the loop: stop() is under way, no new claims from here on
        p["gate"].set()
        await stopping
        assert time.monotonic() - started < 10  # returned when the handlers finished, not after the grace
        stats = await h.backend.stats()
    assert sorted(p["done"]) == sorted(i for i, _ in p["starts"])  # every handler that started, finished
    assert (stats.ready, stats.leased) == (5 - len(p["done"]), 0)


async def test_handlers_still_running_after_the_grace_are_cancelled_and_queued_again(
    make_project: ProjectFactory,
) -> None:
    body = """try:
                await asyncio.Event().wait()  # never returns
            except asyncio.CancelledError:
                cancelled.append(input["i"])
                raise"""
    root = make_project({**FLOW, "steps/work.step.py": work_step(
        queue='{"concurrency": 2, "visibilityTimeout": 300}', body=body)})
    async with Harness(root) as h:
        p = probes(h.project, expected_starts=2)
        cancelled: list[int] = []
        inject(h.project, "Work", cancelled=cancelled)
        for i in range(3):
            await h.emit("work", {"i": i})
        await wait(p["all_started"], "two handlers")
        worker = h.runtime.worker
        assert worker is not None
        await worker.stop(grace_s=0.2)  # the grace period is the behaviour under test
        stats = await h.backend.stats()
    assert sorted(cancelled) == [0, 1] and p["done"] == []
    # handed back at once: ready again now, not leased until the 300 s visibility timeout ends
    assert (stats.ready, stats.leased, stats.dead) == (3, 0, 0)


class HeldClaims(MemoryBackend):
    """A memory backend whose claims can be held in flight, as on a slow network."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()

    async def claim(self, step: str, limit: int, lease_s: float) -> list[Delivery]:
        """Wait for ``hold`` (when set up), then claim."""
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        return await super().claim(step, limit, lease_s)


async def test_deliveries_claimed_while_stopping_are_not_left_leased(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": work_step(queue='{"visibilityTimeout": 300}', body="pass")})
    project = load(root)
    backend = HeldClaims()
    async with Runtime(project, backend, cron=False, poll_s=0.01) as rt:
        p = probes(project)
        backend.hold = asyncio.Event()
        await emit(rt, "work", {"i": 1})
        await wait(backend.holding, "a claim in flight")
        assert rt.worker is not None
        stopping = asyncio.create_task(rt.worker.stop(grace_s=5))
        await asyncio.sleep(0)  # stop() is under way
        backend.hold.set()  # the claim returns the delivery to a stopping worker
        await stopping
        stats = await backend.stats()
    # either it ran to the end or it went straight back to the queue; never left waiting for its lease
    assert stats.leased == 0
    assert len(p["done"]) + stats.ready == 1


# -- heartbeat -----------------------------------------------------------------------------------------

LEASE_S = 0.5


@pytest.mark.parametrize("url", ["memory://", "sqlite:///.motia/motia.db"])
async def test_the_heartbeat_keeps_a_long_handler_s_lease(make_project: ProjectFactory, url: str) -> None:
    root = make_project({**FLOW, "motia_py.toml": f'[backend]\nurl = "{url}"\n', "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"visibilityTimeout": 0.5, "concurrency": 5}}}
        async def handler(input, ctx):
            starts.append(ctx.attempt)
            (first if len(starts) == 1 else again).set()
            await gate.wait()
    """})
    project = load(root)
    runs: list[Any] = []
    async with Runtime(project, backend_for(project.settings), cron=False, poll_s=0.01,
                       observers=[runs.append]) as rt:
        first, again, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
        inject(project, "Work", first=first, again=again, gate=gate, starts=[])
        await emit(rt, "work", {"i": 1})
        try:
            await wait(first, "the handler")
            # The scenario itself takes time: the handler outlives its lease four times over while the
            # worker, with free slots, keeps claiming. A lapsed lease shows up at once as a second start.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(again.wait(), 4 * LEASE_S)
        finally:
            gate.set()
        await rt.wait_idle(timeout_s=10)
    assert [(r.attempt, r.outcome) for r in runs] == [(1, "ok")]


# -- backend outages -----------------------------------------------------------------------------------


class Outage(MemoryBackend):
    """A memory backend whose claims fail while ``down`` is set (a server that went away)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failed = 0

    async def claim(self, step: str, limit: int, lease_s: float) -> list[Delivery]:
        """Claim, or raise BackendError while down."""
        if self.down:
            self.failed += 1
            raise BackendError("connection refused (the server is down)")
        return await super().claim(step, limit, lease_s)


def messages(logs: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [r for r in logs if text in str(r.get("msg"))]


async def test_a_backend_outage_is_logged_once_and_its_end_too(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": work_step(body="pass")})
    project = load(root)
    backend, logs = Outage(), []
    async with Runtime(project, backend, cron=False, poll_s=0.01, log_sink=logs.append) as rt:
        p = probes(project)
        backend.down = True
        await emit(rt, "work", {"i": 1})  # publishing still works; claiming does not
        await until(lambda: backend.failed >= 3, "three failed claims")
        assert p["starts"] == []
        backend.down = False
        await rt.wait_idle(timeout_s=10)
    assert p["done"] == [1]
    down, up = messages(logs, "backend unavailable"), messages(logs, "reachable again")
    assert len(down) == 1 and len(up) == 1  # one line per outage, not one per failed claim
    assert logs.index(down[0]) < logs.index(up[0])
    assert down[0]["level"] in ("warning", "error") and "connection refused" in str(down[0])  # says why
