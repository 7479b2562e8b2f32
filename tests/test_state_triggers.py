"""State-triggered steps on memory, SQLite and Redis: once per change, old and new values, groups, conditions,
retries and dead letters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from motia_py.config import StepType
from motia_py.errors import StepConfigError
from motia_py.runs import RunRecord
from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings
from motia_py.state import State

from .backends.postgres_support import check_reachable as check_postgres
from .backends.postgres_support import drop_schema, new_schema, postgres_url
from .backends.redis_support import check_reachable, delete_prefix, new_prefix, redis_url
from .conftest import ProjectFactory

WATCHER = """
config = {"type": "state", "name": "OnJob", "flows": ["log"], "watch": {"namespace": "jobs", "group": "jobs"},
          "infrastructure": {"queue": {"maxRetries": 1, "backoff": {"delay": 0.01, "jitter": False}}}}

async def handler(input, ctx):
    await ctx.state.update("seen", "log", lambda cur: (cur or []) + [input])
    if isinstance(input["new_value"], dict) and input["new_value"].get("explode"):
        raise RuntimeError("boom")
"""

FAILED_ONLY = """
async def is_failure(input, ctx):
    return (input["new_value"] or {}).get("status") == "failed"

config = {"type": "state", "name": "OnFailure", "flows": ["log"], "watch": {"namespace": "jobs"},
          "condition": is_failure}

async def handler(input, ctx):
    await ctx.state.update("seen", "failures", lambda cur: (cur or []) + [input["item_id"]])
"""

WRITER = """
config = {"type": "event", "name": "Writer", "flows": ["jobs"], "subscribes": ["write"], "emits": []}

async def handler(input, ctx):
    for group, key, value in input["writes"]:
        if value is None:
            await ctx.state.delete(group, key)
        else:
            await ctx.state.set(group, key, value)
"""

FLOWS = {"flows/jobs.toml": 'entry_topics = ["write"]\n', "flows/log.toml": ""}


def backends() -> list[Any]:
    return ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis),
            pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def running(root: Path, kind: str, observers: list[Any] | None = None) -> AsyncIterator[Runtime]:
    url = {"memory": "memory://", "sqlite": "sqlite:///.motia/motia.db"}.get(kind)
    prefix = new_prefix()
    if kind == "redis":
        url = redis_url()
        check_reachable(url)
    if kind == "postgres":
        check_postgres(postgres_url())
        prefix = new_schema()  # the schema, on PostgreSQL
        url = postgres_url()
    settings = load_settings(root, flags={"backend_url": url, "redis_prefix": prefix})
    project, findings = load_project(settings)
    require_valid(project, findings)
    runtime = Runtime(project, backend_for(settings), cron=False, poll_s=0.05, observers=observers or [])
    try:
        async with runtime:
            yield runtime
    finally:
        if kind == "redis":
            await delete_prefix(str(url), prefix)
        if kind == "postgres":
            await drop_schema(str(url), prefix)


async def write(rt: Runtime, *writes: tuple[str, str, Any]) -> None:
    await rt.router.emit("write", {"writes": [list(w) for w in writes]})
    await rt.wait_idle(timeout_s=20)


def seen(rt: Runtime, key: str) -> Any:
    return State(rt.backend, "log").get("seen", key)


@pytest.mark.parametrize("kind", backends())
async def test_a_state_step_runs_once_per_change_with_old_and_new_values(make_project: ProjectFactory, kind: str
                                                                          ) -> None:
    root = make_project({"steps/on_job.step.py": WATCHER, "steps/writer.step.py": WRITER, **FLOWS})
    async with running(root, kind) as rt:
        await write(rt, ("jobs", "j1", {"status": "queued"}))
        await write(rt, ("jobs", "j1", {"status": "queued"}))  # the same value: no change
        await write(rt, ("jobs", "j1", {"status": "done"}), ("other", "j1", {"status": "x"}))
        await write(rt, ("jobs", "j1", None), ("jobs", "absent", None))
        log = await seen(rt, "log")
        assert log == [
            {"group_id": "jobs", "item_id": "j1", "old_value": None, "new_value": {"status": "queued"}},
            {"group_id": "jobs", "item_id": "j1", "old_value": {"status": "queued"}, "new_value": {"status": "done"}},
            {"group_id": "jobs", "item_id": "j1", "old_value": {"status": "done"}, "new_value": None},
        ]


@pytest.mark.parametrize("kind", backends())
async def test_a_condition_filters_changes_and_a_failing_step_retries_then_dead_letters(
        make_project: ProjectFactory, kind: str) -> None:
    root = make_project({"steps/on_job.step.py": WATCHER, "steps/on_failure.step.py": FAILED_ONLY,
                         "steps/writer.step.py": WRITER, **FLOWS})
    async with running(root, kind) as rt:
        await write(rt, ("jobs", "a", {"status": "ok"}), ("jobs", "b", {"status": "failed"}),
                    ("elsewhere", "c", {"status": "failed"}))
        await write(rt, ("jobs", "d", {"explode": True}))
        assert sorted(await seen(rt, "failures")) == ["b", "c"]  # OnFailure watches every group of 'jobs'
        exploded = [e for e in await seen(rt, "log") if e["item_id"] == "d"]
        assert len(exploded) == 2  # the first attempt and its one retry
        dead = await rt.backend.dlq_list()
        assert [(d.step, d.attempts, d.envelope.topic, d.envelope.data["item_id"]) for d in dead] == \
            [("OnJob", 2, "state:jobs", "d")]


async def test_update_and_clear_fire_per_key_and_triggers_keep_the_writers_trace(make_project: ProjectFactory
                                                                                 ) -> None:
    root = make_project({"steps/on_job.step.py": WATCHER, "steps/writer.step.py": WRITER, **FLOWS})
    runs: list[RunRecord] = []
    async with running(root, "memory", [runs.append]) as rt:
        state = State(rt.backend, "jobs", rt.router.state_triggers.notifier("jobs", "t" * 32, "Test"))
        await state.update("jobs", "n", lambda cur: (cur or 0) + 1)
        await state.update("jobs", "n", lambda cur: cur)  # unchanged: nothing
        await state.set("jobs", "m", 5)
        await state.clear("jobs")
        await rt.wait_idle(timeout_s=20)
        log = await seen(rt, "log")
        assert sorted((e["item_id"], e["old_value"] or 0, e["new_value"] or 0) for e in log) == \
            [("m", 0, 5), ("m", 5, 0), ("n", 0, 1), ("n", 1, 0)]
        assert {r.trace_id for r in runs if r.step == "OnJob"} == {"t" * 32}
        assert await rt.backend.state_groups("jobs") == []


def test_state_step_config_is_checked(make_project: ProjectFactory) -> None:
    from motia_py.config import build_step

    async def handler(input: Any, ctx: Any) -> None: ...

    spec = build_step({"type": "state", "name": "S", "watch": {"group": "g"}}, handler, Path("s.step.py"))
    assert spec.type is StepType.STATE and spec.watch is not None and spec.watch.namespace is None
    with pytest.raises(StepConfigError) as err:
        build_step({"type": "state", "name": "S", "watch": {"namspace": "x"}}, handler, Path("s.step.py"))
    assert err.value.hint == "did you mean 'namespace'?"
    with pytest.raises(StepConfigError, match="condition"):
        build_step({"type": "state", "name": "S", "condition": lambda x: True}, handler, Path("s.step.py"))
    with pytest.raises(StepConfigError, match="reserved"):
        build_step({"type": "state", "name": "S", "watch": {"namespace": "__motia_py__"}}, handler,
                   Path("s.step.py"))


def test_watching_a_namespace_nobody_uses_is_a_warning(make_project: ProjectFactory) -> None:
    from motia_py.discovery import discover
    from motia_py.graph import validate

    root = make_project({"steps/on.step.py": WATCHER.replace('"namespace": "jobs"', '"namespace": "jbos"'),
                         "steps/writer.step.py": WRITER, **FLOWS})
    found = [f for f in validate(discover(load_settings(root))) if f.code == "unknown-namespace"]
    assert len(found) == 1 and found[0].hint == "did you mean 'jobs'?"


