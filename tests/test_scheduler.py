"""The cron scheduler with an injected clock: one fire per tick, late wake-ups, missed ticks, overlap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from motia_py import meta_keys
from motia_py.backends.base import Backend
from motia_py.backends.memory import MemoryBackend
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.errors import BackendError
from motia_py.router import Router
from motia_py.runs import RunRecord
from motia_py.runtime import load_project
from motia_py.scheduler import Scheduler
from motia_py.settings import load_settings
from motia_py.testing import VirtualClock
from motia_py.worker import Worker

from .conftest import ProjectFactory

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


def setup(root: Path, clock: VirtualClock, backend: Backend | None = None,
          log: list[dict[str, Any]] | None = None) -> tuple[Router, Scheduler]:
    project, findings = load_project(load_settings(root, env={}))
    assert project.problems == (), findings
    router = Router(project, backend or MemoryBackend(clock=clock), clock=clock,
                    log_sink=log.append if log is not None else None)
    return router, Scheduler(router, clock=clock)


class Runs:
    """An observer that keeps the run records and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.records: list[RunRecord] = []
        self._changed = asyncio.Event()

    def __call__(self, rec: RunRecord) -> None:
        self.records.append(rec)
        self._changed.set()

    async def wait_for(self, n: int, timeout_s: float = 10.0) -> list[RunRecord]:
        """The records once there are ``n``."""
        async with asyncio.timeout(timeout_s):
            while len(self.records) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.records


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Return once ``condition()`` holds (checked every few milliseconds)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.002)


RELEASE = "while not await ctx.state.get('ctl', 'release'): await asyncio.sleep(0.002)"
"""A handler body that runs until the test sets state ctl/release (an explicit signal, not a duration)."""


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


async def test_overlap_skip_skips_a_tick_while_the_previous_run_is_running(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project, cron="* * * * * *", body=RELEASE)
    router, _ = setup(root, clock)
    runs = Runs()
    router.observers.append(runs)
    worker = Worker(router, poll_s=0.01)
    await worker.start()

    async def first_tick_running() -> bool:
        return await router.backend.meta_get(meta_keys.cron_running_since("Tick")) is not None

    await router.fire_cron("Tick", datetime.fromtimestamp(T0 + 1, UTC))
    await until(first_tick_running)
    await router.fire_cron("Tick", datetime.fromtimestamp(T0 + 2, UTC))
    assert [r.outcome for r in await runs.wait_for(1)] == ["skipped"]  # the first run still holds the lock
    await router.backend.state_set("f", "ctl", "release", "true")
    await runs.wait_for(2)
    await worker.stop()
    assert [r.outcome for r in runs.records] == ["skipped", "ok"]
    assert await router.backend.state_items("f", "ticks") == {"2026-05-01T12:00:01+00:00": "1"}


async def test_overlap_allow_runs_ticks_side_by_side(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project, cron="* * * * * *", body=RELEASE, infra='{"cron": {"overlap": "allow"}}')
    router, _ = setup(root, clock)
    runs = Runs()
    router.observers.append(runs)
    worker = Worker(router, poll_s=0.01)
    await worker.start()

    async def both_running() -> bool:  # each run records its tick on start, then waits for the release
        return len(await router.backend.state_items("f", "ticks")) == 2

    for s in (1, 2):
        await router.fire_cron("Tick", datetime.fromtimestamp(T0 + s, UTC))
    await until(both_running)
    assert runs.records == []  # neither has finished: they run side by side
    await router.backend.state_set("f", "ctl", "release", "true")
    await runs.wait_for(2)
    await worker.stop()
    assert [r.outcome for r in runs.records] == ["ok", "ok"]


async def test_a_failed_cron_run_is_retried_with_the_queue_settings(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    root = cron_project(
        make_project, cron="0 0 * * * *", body="if ctx.attempt == 1: raise RuntimeError('first')",
        infra='{"queue": {"maxRetries": 1, "backoff": {"delay": 0, "jitter": False}}}')
    router, _ = setup(root, clock)
    runs = Runs()
    router.observers.append(runs)
    worker = Worker(router, poll_s=0.01)
    await worker.start()
    await router.fire_cron("Tick", datetime.fromtimestamp(T0, UTC))
    await runs.wait_for(2)
    await worker.stop()
    assert [(r.attempt, r.outcome) for r in runs.records] == [(1, "retried"), (2, "ok")]
    assert await router.backend.meta_get(meta_keys.cron_last("Tick")) is not None


async def test_ticks_fired_together_by_a_late_scheduler_each_run_despite_overlap_skip(
    make_project: ProjectFactory,
) -> None:
    clock = VirtualClock(T0 + 10)  # the scheduler woke 10 s late: ticks :01, :02, :03 arrive at once
    root = cron_project(make_project, cron="* * * * * *", body="await asyncio.sleep(0.05)")
    router, _ = setup(root, clock)
    runs = []
    router.observers.append(runs.append)
    worker = Worker(router, poll_s=0.01)
    await worker.start()
    for s in (1, 2, 3):
        await router.fire_cron("Tick", datetime.fromtimestamp(T0 + s, UTC))
    for _ in range(500):
        await asyncio.sleep(0.01)
        clock.advance(0.01)
        if len(runs) == 3:
            break
    await worker.stop()
    assert [r.outcome for r in runs] == ["ok", "ok", "ok"]
    assert sorted(await router.backend.state_items("f", "ticks")) == [
        "2026-05-01T12:00:01+00:00", "2026-05-01T12:00:02+00:00", "2026-05-01T12:00:03+00:00"]


# -- one tick record per step, advanced by compare-and-set ---------------------------------------
async def test_an_hour_of_ticks_keeps_one_record_per_step(make_project: ProjectFactory, tmp_path: Path) -> None:
    clock = VirtualClock(T0)
    path = tmp_path / "m.db"
    backend = create_backend(f"sqlite:///{path}", BackendOptions(root=tmp_path, clock=clock))
    _, sched = setup(cron_project(make_project, cron="*/10 * * * * *"), clock, backend)
    await backend.open()
    try:
        await sched.start()
        await sched.stop()
        for _ in range(6):  # an hour of 10-minute catch-ups: 360 ticks (a per-tick marker would leave 360)
            clock.advance(600)
            assert await sched.tick() == 60
    finally:
        await backend.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        leases = conn.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
        queued = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    assert queued == 360
    assert leases == 0
    assert set(meta) == {meta_keys.cron_tick("Tick"), meta_keys.CRON_ALIVE}
    assert json.loads(meta[meta_keys.cron_tick("Tick")]) == T0 + 3600  # the last tick fired


async def test_a_scheduler_never_moves_a_step_record_backwards(make_project: ProjectFactory) -> None:
    clock = VirtualClock(T0)
    router, sched = setup(cron_project(make_project), clock)  # every 2 s
    await sched.start()
    await sched.stop()
    key = meta_keys.cron_tick("Tick")
    await router.backend.meta_set(key, json.dumps(T0 + 4))  # a scheduler with a fast clock fired :02 and :04

    clock.advance(5)
    assert await sched.tick() == 0
    assert await router.backend.meta_get(key) == json.dumps(T0 + 4)
    clock.advance(2)
    assert await sched.tick() == 1  # :06
    assert await queued_ticks(router) == ["2026-05-01T12:00:06+00:00"]
    assert await router.backend.meta_get(key) == json.dumps(T0 + 6)


@contextlib.asynccontextmanager
async def shared_store(kind: str, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Callable[[], Backend]]:
    """``make()`` builds another backend object (its own connection) on one shared store."""
    made: list[Backend] = []
    if kind == "redis":
        from .backends.test_redis import check_reachable, delete_prefix, new_prefix, redis_url

        url, prefix = redis_url(), new_prefix()
        check_reachable(url)
    else:
        url, prefix = f"sqlite:///{tmp_path}/m.db", "motia"

    def make() -> Backend:
        made.append(create_backend(url, BackendOptions(root=tmp_path, clock=clock, prefix=prefix)))
        return made[-1]

    try:
        yield make
    finally:
        for b in made:
            await b.close()
        if kind == "redis":
            await delete_prefix(url, prefix)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_schedulers_on_separate_connections_racing_fire_each_tick_once(
    kind: str, make_project: ProjectFactory, tmp_path: Path
) -> None:
    clock = VirtualClock(T0)
    root = cron_project(make_project, cron="* * * * * *")
    async with shared_store(kind, tmp_path, clock) as make:
        pairs = [setup(root, clock, make()) for _ in range(3)]
        for router, sched in pairs:
            await router.backend.open()
            await sched.start()
            await sched.stop()
        fired = 0
        for _ in range(10):
            clock.advance(5)
            fired += sum(await asyncio.gather(*(sched.tick() for _, sched in pairs)))
        ticks = await queued_ticks(pairs[0][0])
    assert fired == 50
    assert sorted(ticks) == [datetime.fromtimestamp(T0 + s, UTC).isoformat() for s in range(1, 51)]


# -- backend trouble is reported with what happens next ---------------------------------------------
class _MetaDown(MemoryBackend):
    """A memory backend whose framework metadata is unreachable."""

    async def meta_get(self, key: str) -> str | None:
        raise BackendError("metadata unreachable")

    async def meta_set(self, key: str, value: str) -> None:
        raise BackendError("metadata unreachable")


async def test_backend_errors_of_the_scheduler_are_warnings_that_say_what_follows(
    make_project: ProjectFactory,
) -> None:
    clock = VirtualClock(T0)
    log: list[dict[str, Any]] = []
    root = cron_project(make_project, cron="0 * * * * *", infra='{"cron": {"missed": "run_once"}}')
    _, sched = setup(root, clock, _MetaDown(clock=clock), log)
    await sched.start()
    await sched.stop()
    clock.advance(1)
    assert await sched.tick() == 0  # no tick due: only the check is recorded (and fails)
    clock.advance(60)
    with pytest.raises(BackendError):  # a tick is due: firing it needs the step's record
        await sched.tick()

    warnings = [r["msg"] for r in log if r["level"] == "warning"]
    assert len(warnings) == 2, log
    assert "could not read when a scheduler last checked" in warnings[0]
    assert "ticks missed while no worker ran will not be caught up" in warnings[0]
    assert "could not record its check" in warnings[1] and "never fires twice" in warnings[1]
