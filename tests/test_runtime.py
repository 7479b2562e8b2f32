"""The runtime: start and stop, knowing when it is idle, reloading code without losing events, cron and
traces switched on and off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.base import Backend
from motia_py.backends.memory import MemoryBackend
from motia_py.client import Client
from motia_py.runtime import Runtime, backend_for, trace_settings
from motia_py.state import State
from motia_py.testing import VirtualClock

from .conftest import ProjectFactory
from .probes import emit, inject, load, wait

SQLITE = '[backend]\nurl = "sqlite:///.motia/motia.db"\n'
FLOW = {"flows/f.toml": 'entry_topics = ["work"]\n'}


def recorder(version: str, *, queue: str = "{}", gated: bool = False) -> str:
    """A step that stores which code version handled each event (optionally waiting on ``gate`` first)."""
    wait_gate = "started.set()\n            await gate.wait()" if gated else "pass"
    return f"""
        config = {{"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
                  "infrastructure": {{"queue": {queue}}}}}
        async def handler(input, ctx):
            {wait_gate}
            await ctx.state.set("handled", str(input["i"]), "{version}")
    """


async def handled(backend: Backend) -> dict[str, Any]:
    return await State(backend, "f").items("handled")


async def queued(root: Path) -> int:
    """Deliveries waiting in the project's SQLite file, read through a fresh connection."""
    backend = backend_for(load(root).settings)
    await backend.open()
    try:
        return (await backend.stats()).ready
    finally:
        await backend.close()


# -- start and stop ------------------------------------------------------------------------------------


async def test_events_queued_before_start_run_and_events_after_stop_wait(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "motia_py.toml": SQLITE, "steps/work.step.py": recorder("v1")})
    async with Client.from_project(root) as client:
        await client.emit("work", {"i": 1})  # no runtime yet: the event waits in the file
        project = load(root)
        async with Runtime(project, backend_for(project.settings), cron=False, poll_s=0.01) as rt:
            await rt.wait_idle(timeout_s=10)
            assert await handled(rt.backend) == {"1": "v1"}
        await client.emit("work", {"i": 2})  # the runtime has stopped: this one waits for the next
    assert await queued(root) == 1

    rt = Runtime(project, backend_for(project.settings), cron=False, poll_s=0.01)
    await rt.start()
    try:
        await rt.wait_idle(timeout_s=10)
        assert await handled(rt.backend) == {"1": "v1", "2": "v1"}
    finally:
        await rt.stop()
    assert await queued(root) == 0


# -- idleness ------------------------------------------------------------------------------------------


async def test_is_idle_sees_queued_delayed_and_running_work(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": recorder("v1", gated=True)})
    project = load(root)
    clock = VirtualClock()
    gate, started = asyncio.Event(), asyncio.Event()
    inject(project, "Work", gate=gate, started=started)
    async with Runtime(project, MemoryBackend(clock=clock), clock=clock, cron=False, poll_s=0.01) as rt:
        assert await rt.is_idle()
        await emit(rt, "work", {"i": 1}, delay_s=60)
        assert not await rt.is_idle()  # delayed
        clock.advance(61)
        await wait(started, "the delayed event to be handled once due")
        assert not await rt.is_idle()  # running
        gate.set()
        await rt.wait_idle(timeout_s=10)
        assert await rt.is_idle()
        assert await handled(rt.backend) == {"1": "v1"}


async def test_wait_idle_gives_up_after_its_timeout(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "steps/work.step.py": recorder("v1")})
    async with Runtime(load(root), MemoryBackend(), workers=False, cron=False) as rt:
        await emit(rt, "work", {"i": 1})
        assert not await rt.is_idle()  # queued, and no worker here will ever take it
        with pytest.raises(TimeoutError, match="not idle"):
            await rt.wait_idle(timeout_s=0.05)


# -- reload --------------------------------------------------------------------------------------------


async def test_reload_switches_code_without_losing_an_event(make_project: ProjectFactory) -> None:
    root = make_project({**FLOW, "motia_py.toml": SQLITE,
                         "steps/work.step.py": recorder("v1", queue='{"concurrency": 1}', gated=True)})
    project = load(root)
    gate, started = asyncio.Event(), asyncio.Event()
    inject(project, "Work", gate=gate, started=started)
    async with Runtime(project, backend_for(project.settings), cron=False, poll_s=0.01) as rt:
        for i in range(3):
            await emit(rt, "work", {"i": i})
        await wait(started, "the first event's handler")
        make_project({"steps/work.step.py": recorder("v2", queue='{"concurrency": 1}'),
                      "steps/audit.step.py": """
                          config = {"type": "event", "name": "Audit", "subscribes": ["work"], "emits": [],
                                    "flows": ["f"]}
                          async def handler(input, ctx):
                              await ctx.state.set("audited", str(input["i"]), True)
                      """}, root)
        await rt.reload(load(root))
        gate.set()
        await emit(rt, "work", {"i": 3})  # published after the reload: the new step gets it too
        await rt.wait_idle(timeout_s=10)
        assert await handled(rt.backend) == {"0": "v1", "1": "v2", "2": "v2", "3": "v2"}
        assert await State(rt.backend, "f").items("audited") == {"3": True}
        assert (await rt.backend.stats()).dead == 0


# -- cron and traces -----------------------------------------------------------------------------------

EVERY_SECOND = {"steps/tick.step.py": """
    config = {"type": "cron", "name": "Tick", "cron": "* * * * * *", "emits": [], "flows": ["f"]}
    async def handler(ctx):
        await ctx.state.set("ticks", ctx.scheduled_at.isoformat(), True)
        ticked.set()
"""}


async def test_cron_fires_only_in_runtimes_that_run_it(make_project: ProjectFactory) -> None:
    project = load(make_project(EVERY_SECOND))
    ticked = asyncio.Event()
    inject(project, "Tick", ticked=ticked)
    without, with_cron = MemoryBackend(), MemoryBackend()
    # The runtime without cron starts first: had it a scheduler, that scheduler would fire the same tick
    # as the other one, earlier, and its worker would have handled it once that runtime is idle.
    async with Runtime(project, without, cron=False, poll_s=0.01) as off, \
            Runtime(project, with_cron, poll_s=0.01) as on:
        await wait(ticked, "a tick of the runtime with cron", timeout_s=10)
        await on.wait_idle(timeout_s=10)
        await off.wait_idle(timeout_s=10)
    assert len(await State(with_cron, "f").items("ticks")) >= 1
    assert await State(without, "f").items("ticks") == {}


@pytest.mark.parametrize("enabled", [True, False])
async def test_traces_are_recorded_only_when_enabled(make_project: ProjectFactory, enabled: bool) -> None:
    toml = SQLITE + f"[traces]\nenabled = {str(enabled).lower()}\n"
    root = make_project({**FLOW, "motia_py.toml": toml, "steps/work.step.py": recorder("v1")})
    project = load(root)
    settings = project.settings
    async with Runtime(project, backend_for(settings), cron=False, poll_s=0.01,
                       traces=trace_settings(settings)) as rt:
        trace = await emit(rt, "work", {"i": 1})
        await rt.wait_idle(timeout_s=10)
    backend = backend_for(settings)  # read back after the stop, which writes what was buffered
    await backend.open()
    try:
        runs = [json.loads(r) for r in await backend.traces_get(trace)]
        recent = await backend.traces_recent(10)
    finally:
        await backend.close()
    if enabled:
        assert [(r["step"], r["outcome"]) for r in runs] == [("Work", "ok")] and recent == [trace]
    else:
        assert runs == [] and recent == []
