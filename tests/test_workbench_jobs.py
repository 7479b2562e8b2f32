"""The Workbench's job handles: its status and cancel routes, and the Cancel button in headless Chromium.
The server and browser fixtures are those of ``test_workbench.py``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests import test_workbench
from tests.conftest import ProjectFactory
from tests.test_workbench import FILES, Browser, Serve, Served, settled

serve, chromium, browser = test_workbench.serve, test_workbench.chromium, test_workbench.browser

SLOW = """
import asyncio
config = {"type": "event", "name": "Slow", "subscribes": ["slow.requested"], "emits": [], "flows": ["f"]}

async def handler(input, ctx):
    await ctx.progress(0.25, "warming up")
    await asyncio.sleep(60)
"""
JOB_FILES = {**FILES, "steps/slow.step.py": SLOW,
             "flows/f.toml": 'description = "the test flow"\nstate_namespace = "shop"\n'
                             'entry_topics = ["slow.requested"]\n'}


async def emit(wb: Served, topic: str, data: Any, **extra: Any) -> dict[str, Any]:
    r = await wb.client.post("/__workbench/api/emit", json={"topic": topic, "data": data, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_status_and_cancel_routes(serve: Serve, make_project: ProjectFactory) -> None:
    wb = await serve(make_project(JOB_FILES))
    first = await emit(wb, "job.created", {"name": "a"}, key="order-1")
    assert first["eventId"] == first["traceId"]
    assert (await emit(wb, "job.created", {"name": "b"}, key="order-1"))["eventId"] == first["eventId"]
    await settled(wb)

    r = await wb.client.get(f"/__workbench/api/status/{first['eventId'][:8]}")
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["steps"]["Consumer"]["state"]) == ("succeeded", "succeeded")
    r = await wb.client.post(f"/__workbench/api/cancel/{first['eventId']}")
    assert r.status_code == 200 and r.json()["changed"] is False and r.json()["status"]["state"] == "succeeded"
    assert (await wb.client.get(f"/__workbench/api/traces/{first['traceId'][:8]}")).json()["trace_id"] \
        == first["traceId"]
    for bad in ("0123456789", "abc"):
        r = await wb.client.get(f"/__workbench/api/status/{bad}")
        assert r.status_code == 404 and r.json()["error"] == "unknown_event"
    assert (await wb.client.post("/__workbench/api/cancel/0123456789")).status_code == 404


@pytest.mark.timeout(300)  # a first run may apt-get install chromium
async def test_the_cancel_button_stops_a_running_job(browser: Browser, serve: Serve,
                                                     make_project: ProjectFactory) -> None:
    wb = await serve(make_project(JOB_FILES))

    async def js(expr: str) -> Any:
        return await asyncio.to_thread(browser.js, expr)

    async def until(expr: str, what: str, timeout: float = 8.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := await js(expr)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; page errors: {browser.page_errors()}")
            await asyncio.sleep(0.05)
        return value

    async def click(selector: str) -> None:
        box = await until(f"""(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;
            e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return r.width ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null; }})()""", selector)
        for kind in ("mousePressed", "mouseReleased"):
            await asyncio.to_thread(browser.call, "Input.dispatchMouseEvent", session=browser.session, type=kind,
                                    x=box["x"], y=box["y"], button="left", clickCount=1)

    await asyncio.to_thread(browser.call, "Page.navigate", session=browser.session, url=f"{wb.base}/__workbench")
    await until("!!document.querySelector('#flow-graph svg [data-step=\"Slow\"]')", "the flow graph")
    await click("#tab-emit")
    await js("(() => { const t = document.querySelector('#emit-topic'); t.value = 'slow.requested';"
             " t.dispatchEvent(new Event('change')); document.querySelector('#emit-data').value = '{}'; })()")
    await click("#emit-send")
    await until("document.querySelector('#emit-result .job')?.dataset.state === 'running'", "the job running")
    await until("document.querySelector('#emit-result .job').textContent.includes('warming up')", "its progress")
    await click("#emit-result .job button.cancel")
    await until("document.querySelector('#emit-result .job').dataset.state === 'cancelled'", "the job cancelled")
    assert await js("document.querySelector('#emit-result .job button.cancel')") is None
    event_id = await js("document.querySelector('#emit-result .job').dataset.eventId")
    status = (await wb.client.get(f"/__workbench/api/status/{event_id}")).json()
    assert status["steps"]["Slow"]["state"] == "cancelled"
    assert browser.page_errors() == []
