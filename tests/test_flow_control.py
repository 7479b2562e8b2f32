"""Flow control through the in-process runtime (harness: memory backend, virtual clock): priorities from
emits and step defaults, keys computed at publish time, and limits honoured by the workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from motia_py.errors import InvalidEmitError
from motia_py.testing import Harness

from .conftest import ProjectFactory

FLOW = 'entry_topics = ["job", "kick"]\n'


def project(make_project: ProjectFactory, queue: str, *, extra: dict[str, str] | None = None) -> Path:
    """A Work step with ``queue`` settings that records, in state, the order of its starts and, per key
    ``k``, how many of its runs overlapped at most."""
    return make_project({"flows/f.toml": FLOW, **(extra or {}), "steps/work.step.py": f"""
        import asyncio
        config = {{"type": "event", "name": "Work", "subscribes": ["job"], "emits": [], "flows": ["f"],
                  "infrastructure": {{"queue": {queue}}}}}
        async def handler(input, ctx):
            k = str(input.get("k"))
            await ctx.state.update("log", "starts", lambda cur: [*(cur or []), input["i"]])
            now = await ctx.state.update("running", k, lambda cur: (cur or 0) + 1)
            await ctx.state.update("peak", k, lambda cur: max(cur or 0, now))
            total = await ctx.state.update("running", "*", lambda cur: (cur or 0) + 1)
            await ctx.state.update("peak", "*", lambda cur: max(cur or 0, total))
            await asyncio.sleep(0.01)
            await ctx.state.update("running", "*", lambda cur: cur - 1)
            await ctx.state.update("running", k, lambda cur: cur - 1)
    """})


async def starts(h: Harness) -> list[int]:
    return list(await h.state("f").get("log", "starts") or [])


async def test_emit_priority_and_step_default_reach_the_delivery(make_project: ProjectFactory) -> None:
    root = project(make_project, '{"priority": 3, "concurrencyKey": "customer"}')
    async with Harness(root) as h:
        await h.emit("job", {"i": 1, "customer": "c1"})
        await h.emit("job", {"i": 2, "customer": 7}, priority=-5)
        targets = [o.targets[0] for o in h.backend.published]
        assert [(t.priority, t.concurrency_key, t.rate_key) for t in targets] == [(3, "c1", None), (-5, "7", None)]
        await h.run_until_idle()
    assert sorted(r.outcome.value for r in h.runs_of("Work")) == ["ok", "ok"]


async def test_an_emit_with_a_bad_priority_is_refused(make_project: ProjectFactory) -> None:
    async with Harness(project(make_project, "{}")) as h:
        with pytest.raises(InvalidEmitError):
            await h.emit("job", {"i": 1}, priority=5000)
        assert h.backend.published == []


async def test_a_handler_emits_with_a_priority(make_project: ProjectFactory) -> None:
    root = project(make_project, '{"concurrency": 1}', extra={"steps/kick.step.py": """
        config = {"type": "event", "name": "Kick", "subscribes": ["kick"], "emits": ["job"], "flows": ["f"]}
        async def handler(input, ctx):
            for i in range(3):
                await ctx.emit("job", {"i": i})
            await ctx.emit({"topic": "job", "data": {"i": 99}, "priority": 10})
            await ctx.emit("job", {"i": 98}, priority=5)
    """})
    async with Harness(root) as h:
        await h.emit("kick", {})
        await h.run_until_idle()
        assert [o.targets[0].priority for o in h.backend.published if o.envelope.topic == "job"] == [0, 0, 0, 10, 5]
        assert await starts(h) == [99, 98, 0, 1, 2]  # one handler at a time: by priority, then published order


async def test_a_bad_priority_in_a_handler_fails_the_run(make_project: ProjectFactory) -> None:
    root = project(make_project, "{}", extra={"steps/kick.step.py": """
        config = {"type": "event", "name": "Kick", "subscribes": ["kick"], "emits": ["job"], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            await ctx.emit("job", {"i": 1}, priority="urgent")
    """})
    async with Harness(root) as h:
        await h.emit("kick", {})
        await h.run_until_idle()
        [dead] = await h.dead_letters()
    assert "InvalidEmitError" in dead.error and "-1000 to 1000" in dead.error


async def test_a_rate_limited_step_runs_everything_within_its_rate(make_project: ProjectFactory) -> None:
    root = project(make_project, '{"rateLimit": {"limit": 2, "period": 10}}')
    async with Harness(root) as h:
        start = h.clock.now
        for i in range(7):
            await h.emit("job", {"i": i})
        await h.run_until_idle()
    windows = Counter(int((r.started_at - start) // 10) for r in h.runs_of("Work"))
    assert windows == {0: 2, 1: 2, 2: 2, 3: 1}  # the harness jumps its clock to each opening window


async def test_one_running_per_key_while_the_keys_run_in_parallel(make_project: ProjectFactory) -> None:
    root = project(make_project, '{"concurrencyKey": "k", "concurrency": 5}')
    async with Harness(root) as h:
        for i, k in enumerate("aaabbc"):
            await h.emit("job", {"i": i, "k": k})
        await h.run_until_idle()
        peaks = await h.state("f").items("peak")
    assert sorted(await starts(h)) == [0, 1, 2, 3, 4, 5]
    assert {k: int(v) for k, v in peaks.items() if k != "*"} == {"a": 1, "b": 1, "c": 1}
    assert peaks["*"] == 3  # a, b and c at once
