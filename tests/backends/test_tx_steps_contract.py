"""Transactional steps on every backend (see ``conftest.BACKENDS``): a run's state writes and emits commit
with its acknowledgement; a failed, timed-out or cancelled run leaves nothing; a run whose lease was lost
commits nothing; reads see the run's own writes; a conflict runs the attempt again without counting it as
a failure. Deliveries are claimed by the test and run through the router, so each step is in its hands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.base import Backend, Delivery
from motia_py.http import ApiApp
from motia_py.runs import Outcome, RunRecord
from motia_py.runtime import Runtime, load_project
from motia_py.settings import load_settings
from motia_py.testing import VirtualClock

from ..conftest import ProjectFactory
from ..probes import step_globals
from .helpers import LEASE_S, claim_one

FLOW = 'entry_topics = ["go"]\n'
SINK = """
config = {"type": "event", "name": "Sink", "subscribes": ["done"], "emits": [], "flows": ["f"]}
async def handler(input, ctx):
    pass
"""
CONFIG = """config = {"type": "event", "name": "T", "subscribes": ["go"], "emits": ["done"], "flows": ["f"],
          "transactional": True,
          "infrastructure": {"handler": {"timeout": TIMEOUT}, "queue": {"maxRetries": RETRIES}}}
"""


def tx_project(make_project: ProjectFactory, body: str, timeout: float = 30, retries: int = 0) -> Path:
    """A project whose step ``T`` (transactional, no retries by default) runs ``body`` on event ``go``."""
    config = CONFIG.replace("TIMEOUT", repr(timeout)).replace("RETRIES", str(retries))
    step = ("import asyncio\nGATE = asyncio.Event()\nSEEN = []\n" + config
            + "async def handler(input, ctx):\n" + "".join(f"    {line}\n" for line in body.strip().splitlines()))
    return make_project({"flows/f.toml": FLOW, "steps/t.step.py": step, "steps/sink.step.py": SINK})


class Rig:
    """A runtime without workers on the contract's backend: the test claims and the router runs."""

    def __init__(self, runtime: Runtime, backend: Backend) -> None:
        self.runtime = runtime
        self.backend = backend
        self.runs: list[RunRecord] = []
        runtime.router.observers.append(self.runs.append)
        self.handler = step_globals(runtime.project, "T")  # the step module's GATE and SEEN

    async def publish(self, data: Any = None) -> Delivery:
        await self.runtime.router.emit("go", data)
        return await claim_one(self.backend, "T")

    async def run(self, d: Delivery) -> Outcome:
        return await self.runtime.router.run_delivery(d)

    async def state(self, group: str = "g") -> dict[str, Any]:
        return {k: json.loads(v) for k, v in (await self.backend.state_items("f", group)).items()}

    async def emitted(self) -> list[Any]:
        return [d.envelope.data for d in await self.backend.claim("Sink", 100, LEASE_S)]

    def outcomes(self) -> list[tuple[Outcome, int]]:
        return [(r.outcome, r.attempt) for r in self.runs]


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(backend: Backend, make_project: ProjectFactory) -> AsyncIterator[MakeRig]:
    """``await make_rig(body, timeout=..., retries=...)``: :func:`tx_project` on the contract's backend."""
    runtimes: list[Runtime] = []

    async def make(body: str, timeout: float = 30, retries: int = 0) -> Rig:
        project, findings = load_project(load_settings(tx_project(make_project, body, timeout, retries), env={}))
        assert [f for f in findings if f.severity.value == "error"] == []
        runtimes.append(Runtime(project, backend, workers=False, cron=False))
        return Rig(runtimes[-1], backend)

    yield make
    for runtime in runtimes:
        await runtime.router.aclose()


async def test_writes_and_emits_commit_with_the_acknowledgement(make_rig: MakeRig) -> None:
    rig = await make_rig("""
await ctx.state.update("g", "n", lambda n: (n or 0) + 1)
await ctx.state.set("g", "who", input)
await ctx.emit("done", {"from": input})
""")
    d = await rig.publish("a")
    assert await rig.run(d) is Outcome.OK
    assert await rig.state() == {"n": 1, "who": "a"}
    assert await rig.emitted() == [{"from": "a"}]
    assert await rig.backend.claim("T", 10, LEASE_S) == []  # acknowledged
    assert rig.outcomes() == [(Outcome.OK, 1)]


async def test_a_failed_run_leaves_no_state_change_and_no_emit(make_rig: MakeRig) -> None:
    rig = await make_rig("""
await ctx.state.set("g", "k", "written")
await ctx.emit("done", {})
raise ValueError("boom")
""")
    assert await rig.run(await rig.publish()) is Outcome.DEAD
    assert await rig.state() == {}
    assert await rig.emitted() == []
    [dead] = await rig.backend.dlq_list()
    assert dead.error == "ValueError: boom"


async def test_a_timed_out_run_leaves_no_state_change_and_no_emit(make_rig: MakeRig) -> None:
    rig = await make_rig("""
await ctx.state.set("g", "k", "written")
await ctx.emit("done", {})
await asyncio.sleep(30)
""", timeout=0.05)
    assert await rig.run(await rig.publish()) is Outcome.TIMEOUT_DEAD
    assert await rig.state() == {}
    assert await rig.emitted() == []


async def test_a_cancelled_run_leaves_no_state_change_and_no_emit(make_rig: MakeRig) -> None:
    rig = await make_rig("""
await ctx.state.set("g", "k", "written")
await ctx.emit("done", {})
SEEN.append("started")
await asyncio.sleep(30)
""")
    task = asyncio.ensure_future(rig.run(await rig.publish("x")))
    while not rig.handler["SEEN"]:
        await asyncio.sleep(0.001)
    task.cancel()  # what a shutdown past its grace period does
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await rig.state() == {}
    assert await rig.emitted() == []
    [again] = await rig.backend.claim("T", 10, LEASE_S)  # handed back, to run again
    assert again.envelope.data == "x"


async def test_a_run_whose_lease_was_lost_commits_nothing(make_rig: MakeRig, clock: VirtualClock) -> None:
    rig = await make_rig("""
await ctx.state.update("g", "n", lambda n: (n or 0) + 1)
await ctx.emit("done", {"attempt": ctx.attempt})
if ctx.attempt == 1:
    await GATE.wait()
""", retries=1)
    await rig.runtime.router.emit("go", None)
    first = await claim_one(rig.backend, "T", lease_s=1.0)
    stalled = asyncio.ensure_future(rig.run(first))
    await asyncio.sleep(0.01)
    clock.advance(2.0)  # its worker stalled past the lease: another worker takes the delivery
    second = await claim_one(rig.backend, "T")
    assert second.attempt == 2

    assert await rig.run(second) is Outcome.OK
    rig.handler["GATE"].set()
    assert await stalled is Outcome.LOST

    assert await rig.state() == {"n": 1}
    assert await rig.emitted() == [{"attempt": 2}]
    assert rig.outcomes() == [(Outcome.OK, 2), (Outcome.LOST, 1)]  # the new attempt committed first


async def test_reads_see_the_runs_own_writes_which_nobody_else_sees_before_the_commit(make_rig: MakeRig) -> None:
    rig = await make_rig("""
before = await ctx.state.get("g", "k")
await ctx.state.set("g", "k", {"v": 1})
await ctx.state.update("g", "n", lambda n: (n or 0) + 5)
SEEN.append((before, await ctx.state.get("g", "k"), await ctx.state.get("g", "n"), await ctx.state.items("g")))
await GATE.wait()
await ctx.state.delete("g", "k")
SEEN.append((await ctx.state.get("g", "k"), await ctx.state.get_group("g")))
""")
    task = asyncio.ensure_future(rig.run(await rig.publish()))
    seen = rig.handler["SEEN"]
    while not seen:
        await asyncio.sleep(0.001)
    assert seen[0] == (None, {"v": 1}, 5, {"k": {"v": 1}, "n": 5})
    assert await rig.state() == {}  # buffered: not in the store yet
    rig.handler["GATE"].set()
    assert await task is Outcome.OK
    assert seen[1] == (None, [5])
    assert await rig.state() == {"n": 5}


async def test_a_conflict_runs_the_attempt_again_at_once_without_counting_a_failure(make_rig: MakeRig) -> None:
    rig = await make_rig("""
n = await ctx.state.update("g", "n", lambda n: (n or 0) + 1)
SEEN.append(n)
if len(SEEN) == 1:
    await GATE.wait()
await ctx.emit("done", {"n": n})
""")
    task = asyncio.ensure_future(rig.run(await rig.publish()))
    seen = rig.handler["SEEN"]
    while not seen:
        await asyncio.sleep(0.001)
    await rig.backend.state_set("f", "g", "n", "10")  # another writer, after the run read the counter
    rig.handler["GATE"].set()

    assert await task is Outcome.OK
    assert seen == [1, 11]  # the second run read the new value
    assert await rig.state() == {"n": 11}
    assert await rig.emitted() == [{"n": 11}]
    assert rig.outcomes() == [(Outcome.CONFLICT, 1), (Outcome.OK, 1)]  # same attempt, no retry
    assert rig.runs[0].error is not None and rig.runs[0].error.startswith("TransactionConflict")
    assert await rig.backend.dlq_list() == []


async def test_concurrent_runs_updating_one_counter_each_count_once(make_rig: MakeRig) -> None:
    rig = await make_rig("""
await ctx.state.update("g", "n", lambda n: (n or 0) + 1)
""")
    for i in range(20):
        await rig.runtime.router.emit("go", i)
    deliveries = await rig.backend.claim("T", 20, LEASE_S)
    assert len(deliveries) == 20

    outcomes = await asyncio.gather(*(rig.run(d) for d in deliveries))

    assert outcomes == [Outcome.OK] * 20
    assert await rig.state() == {"n": 20}
    assert all(r.attempt == 1 for r in rig.runs)


API_STEP = """
config = {"type": "api", "name": "Api", "path": "/items", "method": "POST", "emits": ["done"], "flows": ["f"],
          "transactional": True}
async def handler(req, ctx):
    await ctx.state.set("g", req["body"]["key"], req["body"]["key"])
    await ctx.emit("done", {"key": req["body"]["key"]})
    if req["body"].get("fail") == "raise":
        raise ValueError("boom")
    return {"status": 500 if req["body"].get("fail") == "500" else 201, "body": {}}
"""


async def test_an_api_request_commits_its_writes_and_emits_all_or_nothing(
        backend: Backend, make_project: ProjectFactory) -> None:
    root = make_project({"flows/f.toml": FLOW, "steps/api.step.py": API_STEP, "steps/sink.step.py": SINK})
    project, _ = load_project(load_settings(root, env={}))
    runtime = Runtime(project, backend, workers=False, cron=False)
    app = ApiApp(runtime.router)
    try:
        for key, fail, status in (("ok", None, 201), ("five-hundred", "500", 500), ("raised", "raise", 500)):
            body = json.dumps({"key": key, "fail": fail}).encode()
            assert (await app.handle("POST", "/items", raw_body=body)).status == status
        assert await backend.state_items("f", "g") == {"ok": '"ok"'}
        assert [d.envelope.data for d in await backend.claim("Sink", 10, LEASE_S)] == [{"key": "ok"}]
    finally:
        await runtime.router.aclose()


WATCHER = """
config = {"type": "state", "name": "Watcher", "flows": ["f"], "watch": {"group": "g"}}
async def handler(input, ctx):
    pass
"""


async def test_a_watched_write_starts_its_state_step_at_commit_and_a_failed_run_starts_none(
        backend: Backend, make_project: ProjectFactory) -> None:
    step = tx_project(make_project, """
await ctx.state.set("g", "k", input)
await ctx.state.update("g", "n", lambda n: (n or 0) + 1)
if input == "fail":
    raise ValueError("no")
""")
    (step / "steps" / "watcher.step.py").write_text(WATCHER)
    project, _ = load_project(load_settings(step, env={}))
    runtime = Runtime(project, backend, workers=False, cron=False)
    try:
        for data, outcome in (("a", Outcome.OK), ("fail", Outcome.DEAD), ("a", Outcome.OK)):
            await runtime.router.emit("go", data)
            assert await runtime.router.run_delivery(await claim_one(backend, "T")) is outcome
        changes = [d.envelope.data for d in await backend.claim("Watcher", 10, LEASE_S)]
        assert changes == [{"group_id": "g", "item_id": "k", "old_value": None, "new_value": "a"},
                           {"group_id": "g", "item_id": "n", "old_value": None, "new_value": 1},
                           {"group_id": "g", "item_id": "n", "old_value": 1, "new_value": 2}]  # "k" did not change
    finally:
        await runtime.router.aclose()
