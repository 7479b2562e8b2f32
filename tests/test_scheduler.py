"""The cron scheduler with an injected clock: one fire per tick, late wake-ups, missed ticks, overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from motia_py.backends.memory import MemoryBackend
from motia_py.router import Router
from motia_py.runtime import Runtime, load_project
from motia_py.scheduler import Scheduler
from motia_py.settings import load_settings
from motia_py.testing import Harness, VirtualClock

from .conftest import ProjectFactory
from .probes import inject, load, until, wait

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def cron_project(make_project: ProjectFactory, cron: str = "*/2 * * * * *", infra: str = "{}",
                 body: str = "pass") -> Path:
    return make_project({
        "steps/c.step.py": f"""
            import asyncio
            config = {{"type": "cron", "name": "Tick", "cron": "{cron}", "emits": [], "flows": ["f"],
                      "infrastructure": {infra}}}
            async def handler(ctx):
                await ctx.state.set("ticks", ctx.scheduled_at.isoformat(), ctx.attempt)
                {body}
        """,
    })


def setup(root: Path, clock: VirtualClock, backend: MemoryBackend | None = None) -> tuple[Router, Scheduler]:
    project, findings = load_project(load_settings(root, env={}))
    assert project.problems == (), findings
    router = Router(project, backend or MemoryBackend(clock=clock), clock=clock)
    return router, Scheduler(router, clock=clock)


async def queued_ticks(router: Router) -> list[str]:
    out = []
    while batch := await router.backend.claim("Tick", 100, 60):
        out += [d.envelope.data["scheduled_at"] for d in batch]
    return out


async def test_each_tick_fires_once_with_its_own_scheduled_time(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0 + 0.5)
    router, sched = setup(cron_project(make_project), clock)
    await sched.start()
    await sched.stop()  # drive ticks by hand
    clock.advance(5.0)  # 12:00:05.5 -> ticks at :02 and :04
    assert await sched.tick() == 2
    assert await sched.tick() == 0  # nothing new
    assert await queued_ticks(router) == ["2026-05-01T12:00:02+00:00", "2026-05-01T12:00:04+00:00"]


async def test_a_late_scheduler_fires_every_tick_since_its_last_check(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    router, sched = setup(cron_project(make_project, cron="*/10 * * * * *"), clock)
    await sched.start()
    await sched.stop()
    clock.advance(61)  # a long pause: 6 ticks passed while this scheduler was alive but asleep
    assert await sched.tick() == 6
    ticks = await queued_ticks(router)
    assert ticks[0] == "2026-05-01T12:00:10+00:00" and ticks[-1] == "2026-05-01T12:01:00+00:00"


async def test_two_schedulers_sharing_a_backend_fire_each_tick_once(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project)
    backend = MemoryBackend(clock=clock)
    router_a, a = setup(root, clock, backend)
    _, b = setup(root, clock, backend)
    for s in (a, b):
        await s.start()
        await s.stop()
    clock.advance(10)
    fired = await a.tick() + await b.tick()
    assert fired == 5
    assert len(await queued_ticks(router_a)) == 5


async def test_ticks_missed_while_no_worker_ran_are_skipped_by_default(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project, cron="0 * * * * *")
    backend = MemoryBackend(clock=clock)
    router, first = setup(root, clock, backend)
    await first.start()
    await first.stop()
    await first.tick()  # records that a scheduler was alive at T0
    clock.advance(3600)  # nobody ran for an hour
    _, second = setup(root, clock, backend)
    await second.start()
    await second.stop()
    assert await queued_ticks(router) == []


async def test_missed_run_once_runs_one_catch_up(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project, cron="0 * * * * *", infra='{"cron": {"missed": "run_once"}}')
    backend = MemoryBackend(clock=clock)
    router, first = setup(root, clock, backend)
    await first.start()
    await first.stop()
    await first.tick()
    clock.advance(3600 + 30)
    _, second = setup(root, clock, backend)
    await second.start()
    await second.stop()
    assert await queued_ticks(router) == ["2026-05-01T13:00:00+00:00"]  # only the latest missed tick


def runtime(root: Path, clock: VirtualClock, runs: list[Any]) -> Runtime:
    """A runtime without its own scheduler (ticks are fired by hand), recording every run."""
    return Runtime(load(root), MemoryBackend(clock=clock), clock=clock, cron=False, poll_s=0.01,
                   observers=[runs.append])


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


async def test_overlap_skip_skips_a_tick_while_the_previous_run_is_running(make_project: ProjectFactory) -> None:
    root = cron_project(make_project, cron="* * * * * *", body="started.set()\n                await gate.wait()")
    runs: list[Any] = []
    async with runtime(root, VirtualClock(T0), runs) as rt:
        gate, started = asyncio.Event(), asyncio.Event()
        inject(rt.project, "Tick", gate=gate, started=started)
        await rt.router.fire_cron("Tick", at(1))
        await wait(started, "the first tick's run")
        await rt.router.fire_cron("Tick", at(2))
        await until(lambda: len(runs) == 1, "the second tick to be settled while the first still runs")
        gate.set()
        await rt.wait_idle(timeout_s=10)
        ticks = await rt.backend.state_items("f", "ticks")
    assert [r.outcome for r in runs] == ["skipped", "ok"]
    assert ticks == {"2026-05-01T12:00:01+00:00": "1"}


async def test_overlap_allow_runs_ticks_side_by_side(make_project: ProjectFactory) -> None:
    both_running = ("arrived.append(1)\n                if len(arrived) == 2: both.set()\n"
                    "                await both.wait()")
    root = cron_project(make_project, cron="* * * * * *", body=both_running, infra='{"cron": {"overlap": "allow"}}')
    runs: list[Any] = []
    async with runtime(root, VirtualClock(T0), runs) as rt:
        both = asyncio.Event()
        inject(rt.project, "Tick", arrived=[], both=both)
        for s in (1, 2):
            await rt.router.fire_cron("Tick", at(s))
        await wait(both, "both ticks running at once")  # neither can end before the other has started
        await rt.wait_idle(timeout_s=10)
    assert [r.outcome for r in runs] == ["ok", "ok"]


async def test_a_failed_cron_run_is_retried_with_the_queue_settings(make_project: ProjectFactory) -> None:
    root = cron_project(
        make_project, cron="0 0 * * * *", body="if ctx.attempt == 1: raise RuntimeError('first')",
        infra='{"queue": {"maxRetries": 1, "backoff": {"delay": 0, "jitter": False}}}')
    runs: list[Any] = []
    async with runtime(root, VirtualClock(T0), runs) as rt:
        await rt.router.fire_cron("Tick", at(0))
        await rt.wait_idle(timeout_s=10)
        last = await rt.backend.meta_get("cron-last:Tick")
    assert [(r.attempt, r.outcome) for r in runs] == [(1, "retried"), (2, "ok")]
    assert last is not None


async def test_ticks_fired_together_by_a_late_scheduler_each_run_despite_overlap_skip(
    make_project: ProjectFactory,
) -> None:
    root = cron_project(make_project, cron="* * * * * *", body="started.set()\n                await gate.wait()")
    async with Harness(root) as h:  # its clock jumps over the delay of the ticks handed back to wait
        gate, started = asyncio.Event(), asyncio.Event()
        inject(h.project, "Tick", gate=gate, started=started)
        now = h.clock.now  # the scheduler woke 10 s late: three past ticks arrive at once
        for late in (9, 8, 7):
            await h.runtime.router.fire_cron("Tick", datetime.fromtimestamp(now - late, UTC))
        await wait(started, "the first tick's run")
        worker = h.runtime.worker
        assert worker is not None
        await until(lambda: worker.in_flight == 1, "the later ticks to be handed back until the first ends")
        gate.set()
        await h.run_until_idle()
        runs = h.runs_of("Tick")
        ticks = await h.backend.state_items("f", "ticks")
    assert [r.outcome for r in runs] == ["ok", "ok", "ok"]
    assert sorted(ticks) == [datetime.fromtimestamp(now - late, UTC).isoformat() for late in (9, 8, 7)]
