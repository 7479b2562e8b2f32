"""The Workbench's Streams tab: the stream list from its API, and a group followed live in real Chromium
over the stream WebSocket (the example application's ``jobStatus`` stream)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from motia_py.http import HttpServer, start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.stream_ws import install_streams
from motia_py.workbench import install_workbench

from .test_workbench import Browser, browser, chromium  # noqa: F401 - the fixtures are used by name

REPO = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Runtime, HttpServer]]:
    settings = load_settings(REPO, flags={"backend_url": "memory://"}, env={})
    project, _ = load_project(settings)
    async with Runtime(project, backend_for(settings), poll_s=0.05, cron=False) as rt:
        server = await start_server(rt.router, settings, dev=True, port=0)
        try:
            install_workbench(server.app, rt, settings, dev=True)
            await install_streams(server.app, rt, settings)
            yield rt, server
        finally:
            await server.stop()


async def test_the_streams_api_lists_each_stream_with_its_groups(served: tuple[Runtime, HttpServer]) -> None:
    rt, server = served
    await rt.router.streams.jobStatus.set("jobs", "j1", {"type": "data", "status": "queued", "progress": 0,
                                                         "attempt": 1, "updatedAt": "now"})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}/__workbench", timeout=10) as http:
        streams = (await http.get("/api/streams")).json()
        graph = (await http.get("/api/graph")).json()
    assert [(s["name"], s["groups"]) for s in streams] == [("jobStatus", ["jobs"])]
    assert streams[0]["schema"]["properties"]["progress"]["type"] == "number"
    assert [s["name"] for s in graph["streams"]] == ["jobStatus"]


@pytest.mark.timeout(300)  # a first run may apt-get install chromium
async def test_the_streams_tab_follows_a_group_live_in_chromium(browser: Browser,  # noqa: F811
                                                                served: tuple[Runtime, HttpServer],
                                                                tmp_path: Path) -> None:
    rt, server = served
    b = browser

    async def js(expr: str) -> Any:
        return await asyncio.to_thread(b.js, expr)

    async def until(expr: str, what: str, timeout: float = 8.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := await js(expr)):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({expr}); page errors: {b.page_errors()}")
            await asyncio.sleep(0.05)
        return value

    await asyncio.to_thread(b.call, "Page.navigate", session=b.session,
                            url=f"http://127.0.0.1:{server.port}/__workbench")
    await until("!!document.querySelector('#tab-streams')", "the page")
    await js("document.querySelector('#tab-streams').click()")
    await until("[...document.querySelectorAll('#stream-select option')].some(o => o.value === 'jobStatus')",
                "the stream list")
    await js("document.querySelector('#stream-group').value = 'jobs'; document.querySelector('#stream-watch').click()")
    await until("document.querySelector('#stream-status').textContent.startsWith('live')", "the live group")
    assert await js("document.querySelector('#stream-items').textContent.includes('No items')")

    await rt.router.emit("data.requested", {"numbers": [2, 3], "operation": "sum"})
    card = "document.querySelector('#stream-items [data-item]')"
    await until(f"{card} && {card}.textContent.includes('\"completed\"')", "the job's item, completed", timeout=15)
    item = json.loads(await js(f"{card}.querySelector('pre').textContent"))
    assert item["status"] == "completed" and item["progress"] == 1 and item["type"] == "data"
    assert b.page_errors() == []
    shot = await asyncio.to_thread(b.call, "Page.captureScreenshot", session=b.session, format="png")
    (tmp_path / "streams.png").write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("MOTIA_PY_STREAMS_SCREENSHOT"):
        (Path(os.environ["MOTIA_PY_STREAMS_SCREENSHOT"])).write_bytes(base64.b64decode(shot["data"]))
