"""``ctx.state`` on every backend: the Motia-compatible API, atomic updates under contention, namespaces per
flow (shared through ``state_namespace``), and the blocking twin that plain ``def`` handlers get.

The backends are those of the contract suite (``tests/backends/conftest.BACKENDS``): a backend added there
runs these tests too. Redis runs when a server is reachable (``bash scripts/with-redis.sh``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from motia_py.backends.base import Backend
from motia_py.errors import MotiaError
from motia_py.runtime import Runtime
from motia_py.state import State
from motia_py.testing import VirtualClock

from .backends.conftest import BACKENDS, MARKS
from .conftest import ProjectFactory
from .probes import emit, load

MakeBackend = Callable[[], Backend]


@pytest.fixture(params=[pytest.param(name, marks=MARKS.get(name, [])) for name in BACKENDS])
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBackend:
    """A factory of fresh, unopened backends of one kind (storage under ``tmp_path``)."""
    factory = BACKENDS[request.param]
    return lambda: factory(tmp_path, VirtualClock())


@pytest.fixture
async def state(make_backend: MakeBackend) -> AsyncIterator[State]:
    """The state of namespace ``ns`` on an opened backend."""
    backend = make_backend()
    await backend.open()
    try:
        yield State(backend, "ns")
    finally:
        await backend.close()


class Job(BaseModel):
    name: str
    tries: int = 0


async def test_get_set_delete_return_the_values_themselves(state: State) -> None:
    assert await state.get("jobs", "a") is None
    assert await state.set("jobs", "a", {"v": 1}) == {"v": 1}
    assert await state.get("jobs", "a") == {"v": 1}  # the value, not Motia's {"data": ...} wrapper
    assert await state.set("jobs", "a", [1, "two", None]) == [1, "two", None]  # overwritten
    assert await state.delete("jobs", "a") == [1, "two", None]
    assert await state.get("jobs", "a") is None
    assert await state.delete("jobs", "a") is None


async def test_groups_list_their_values_and_items(state: State) -> None:
    for key, value in (("a", 1), ("b", {"x": True}), ("c", "three")):
        await state.set("g", key, value)
    await state.set("other", "z", 0)
    assert sorted(map(str, await state.get_group("g"))) == sorted(["1", "{'x': True}", "three"])
    assert await state.items("g") == {"a": 1, "b": {"x": True}, "c": "three"}
    assert await state.items("empty") == {} and await state.get_group("empty") == []
    await state.clear("g")
    assert await state.items("g") == {} and await state.items("other") == {"z": 0}


async def test_values_are_json_and_models_are_stored_as_json(state: State) -> None:
    assert await state.set("jobs", "m", Job(name="build")) == {"name": "build", "tries": 0}
    assert await state.get("jobs", "m") == {"name": "build", "tries": 0}
    with pytest.raises(MotiaError, match="JSON"):
        await state.set("jobs", "bad", {1, 2})
    with pytest.raises(MotiaError, match="JSON"):
        await state.set("jobs", "nan", float("nan"))
    assert await state.get("jobs", "bad") is None


async def test_update_stores_what_fn_returns_starting_from_none(state: State) -> None:
    seen: list[Any] = []

    def bump(n: Any) -> Any:
        seen.append(n)
        return (n or 0) + 1

    assert await state.update("c", "n", bump) == 1
    assert await state.update("c", "n", bump) == 2
    assert seen == [None, 1]
    assert await state.update("c", "n", lambda n: None) is None  # None is stored as JSON null
    assert await state.items("c") == {"n": None}


# -- through ctx.state, in a running project -------------------------------------------------------------

COUNTER = """
    import asyncio
    config = {"type": "event", "name": "Inc", "subscribes": ["inc"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"concurrency": 50}}}
    arrived = 0
    all_in = asyncio.Event()
    async def handler(input, ctx):
        global arrived
        arrived += 1
        if arrived == 50:
            all_in.set()
        await all_in.wait()  # every update below starts while the 49 others are running
        await ctx.state.update("c", "n", lambda n: (n or 0) + 1)
"""

SYNC_COUNTER = """
    import threading
    config = {"type": "event", "name": "SyncInc", "subscribes": ["inc"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"concurrency": 10}}}
    barrier = threading.Barrier(10, timeout=20)
    def handler(input, ctx):
        if input["i"] < 10:
            barrier.wait()  # the first ten run their updates at the same time, in ten threads
        ctx.state.update("c", "sync", lambda n: (n or 0) + 1)
"""


async def test_concurrent_updates_never_lose_one(make_project: ProjectFactory, make_backend: MakeBackend) -> None:
    root = make_project({"flows/f.toml": 'entry_topics = ["inc"]\n', "steps/inc.step.py": COUNTER,
                         "steps/sync_inc.step.py": SYNC_COUNTER})
    async with Runtime(load(root), make_backend(), cron=False, poll_s=0.01) as rt:
        for i in range(50):
            await emit(rt, "inc", {"i": i})
        await rt.wait_idle(timeout_s=60)
        assert await State(rt.backend, "f").items("c") == {"n": 50, "sync": 50}


NAMESPACES = {
    "flows/f.toml": 'entry_topics = ["go"]\n',
    "flows/g.toml": "",
    "flows/h.toml": 'state_namespace = "shared"\n',
    "flows/k.toml": 'state_namespace = "shared"\n',
}
WRITER = """
    config = {{"type": "event", "name": "{name}", "subscribes": ["go"], "emits": [], "flows": {flows}}}
    async def handler(input, ctx):
        await ctx.state.update("seen", "by", lambda by: sorted((by or []) + ["{name}"]))
"""


async def test_each_flow_has_its_namespace_and_flows_may_share_one(
    make_project: ProjectFactory, make_backend: MakeBackend,
) -> None:
    root = make_project({**NAMESPACES,
                         "steps/f.step.py": WRITER.format(name="F", flows='["f"]'),
                         "steps/g.step.py": WRITER.format(name="G", flows='["g", "h"]'),  # first flow wins
                         "steps/h.step.py": WRITER.format(name="H", flows='["h"]'),
                         "steps/k.step.py": WRITER.format(name="K", flows='["k"]')})
    async with Runtime(load(root), make_backend(), cron=False, poll_s=0.01) as rt:
        await emit(rt, "go", {})
        await rt.wait_idle(timeout_s=30)
        seen = {ns: await State(rt.backend, ns).get("seen", "by") for ns in ("f", "g", "h", "k", "shared")}
    assert seen == {"f": ["F"], "g": ["G"], "h": None, "k": None, "shared": ["H", "K"]}


PLAIN_DEF = """
    config = {"type": "event", "name": "Plain", "subscribes": ["go"], "emits": [], "flows": ["f"]}
    def handler(input, ctx):
        s = ctx.state
        out = {"set": s.set("jobs", "a", {"v": 1})}
        s.set("jobs", "b", {"v": 2})
        out["get"] = s.get("jobs", "a")
        out["missing"] = s.get("jobs", "zz")
        out["group"] = sorted(x["v"] for x in s.get_group("jobs"))
        out["items"] = s.items("jobs")
        out["deleted"] = s.delete("jobs", "a")
        out["update"] = s.update("counts", "n", lambda n: (n or 0) + 5)
        s.set("tmp", "x", 1)
        s.clear("tmp")
        out["cleared"] = s.items("tmp")
        s.set("result", "out", out)
"""


async def test_a_plain_def_handler_gets_the_same_state_api_blocking(
    make_project: ProjectFactory, make_backend: MakeBackend,
) -> None:
    root = make_project({"flows/f.toml": 'entry_topics = ["go"]\n', "steps/plain.step.py": PLAIN_DEF})
    async with Runtime(load(root), make_backend(), cron=False, poll_s=0.01) as rt:
        await emit(rt, "go", {})
        await rt.wait_idle(timeout_s=30)
        state = State(rt.backend, "f")
        out, jobs = await state.get("result", "out"), await state.items("jobs")
    assert out == {"set": {"v": 1}, "get": {"v": 1}, "missing": None, "group": [1, 2],
                   "items": {"a": {"v": 1}, "b": {"v": 2}}, "deleted": {"v": 1}, "update": 5, "cleared": {}}
    assert jobs == {"b": {"v": 2}}
