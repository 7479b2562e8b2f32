"""The Workbench's view of flow control: the queue API shows each step's limits and the ready events they
hold back; the emit form takes a priority (a real server and client, as in ``test_workbench``)."""

from __future__ import annotations

from typing import Any

from tests.conftest import ProjectFactory

from . import test_workbench
from .test_workbench import Serve, Served

serve = test_workbench.serve  # the fixture: a runtime, a real server and the Workbench

BILL = """
import asyncio
config = {"type": "event", "name": "Bill", "subscribes": ["order.placed"], "emits": [], "flows": ["f"],
          "infrastructure": {"queue": {"concurrencyKey": "customer", "rateLimit": {"limit": 100, "period": 1}}}}

async def handler(input, ctx):
    await ctx.state.set("started", str(input["i"]), True)
    while not await ctx.state.get("gate", "open"):  # held until the test opens the gate
        await asyncio.sleep(0.01)
"""
FILES = {"steps/bill.step.py": BILL, "flows/f.toml": 'entry_topics = ["order.placed"]\n'}


async def until(wb: Served, predicate: Any) -> Any:
    for _ in range(500):
        value = await predicate()
        if value:
            return value
        await wb.rt.router.backend.wait("Bill", 0.01)  # a bounded pause that also returns on a publish
    raise AssertionError("timed out")


async def test_the_queue_shows_the_limits_and_what_they_hold_back(serve: Serve, make_project: ProjectFactory) -> None:
    wb = await serve(make_project(FILES))
    for i in range(3):
        r = await wb.client.post("/__workbench/api/emit", json={"topic": "order.placed",
                                                                "data": {"i": i, "customer": "ada"}})
        assert r.status_code == 200

    async def started() -> Any:
        return await wb.rt.router.backend.state_items("f", "started")

    await until(wb, started)
    [row] = (await wb.client.get("/__workbench/api/queue")).json()
    assert row["step"] == "Bill"
    assert row["limits"] == ["rateLimit: 100 per 1 s", "concurrencyKey: customer (1 each)"]
    assert (row["running"], row["ready"], row["heldBy"]) == (1, 2, {"concurrencyKey": 2})
    await wb.rt.router.backend.state_set("f", "gate", "open", "true")
    await wb.rt.wait_idle(timeout_s=10)
    assert len(await started()) == 3


async def test_the_emit_form_takes_a_priority(serve: Serve, make_project: ProjectFactory) -> None:
    wb = await serve(make_project(FILES))
    ok = await wb.client.post("/__workbench/api/emit", json={"topic": "order.placed", "data": {"i": 1},
                                                             "priority": 7})
    bad = await wb.client.post("/__workbench/api/emit", json={"topic": "order.placed", "data": {"i": 2},
                                                              "priority": "urgent"})
    assert ok.status_code == 200 and "traceId" in ok.json()
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_event"
    assert "-1000 to 1000" in bad.json()["message"]
    page = (await wb.client.get("/__workbench")).text
    assert 'id="emit-priority"' in page and 'id="queues-list"' in page
