"""HTTP triggers of Motia 1.0 steps: middleware in the 1.0 form, bodies by content type, conditions
(422, recorded as skipped), the answers a handler may return, and bodies streamed while the handler
runs (server-sent events) through a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from motia_py.discovery import Project
from motia_py.findings import Severity
from motia_py.http import start_server
from motia_py.runs import Outcome
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.testing import Harness

from .conftest import ProjectFactory

MIDDLEWARE = """
    from motia import ApiResponse, http

    calls = []

    def outer(request, ctx, next_fn):  # a plain middleware: returns what next_fn gives (awaited for it)
        calls.append("outer")
        return next_fn()

    async def auth(request, ctx, next_fn):
        calls.append("auth")
        if request.headers.get("authorization") != "Bearer ok":
            return {"status": 401, "body": {"error": "Unauthorized"}}
        ctx.user = {"id": "u1"}
        response = await next_fn()
        return ApiResponse(status=response.status, body=response.body, headers={**response.headers, "x-mw": "1"})

    config = {"name": "Guarded", "flows": ["f"], "enqueues": [],
              "triggers": [http("GET", "/guarded", middleware=[outer, auth])]}

    async def handler(request, ctx):
        calls.append("handler")
        return ApiResponse(status=200, body={"user": ctx.user, "calls": list(calls)})
"""

BODIES = """
    from motia import http

    config = {"name": "Echo", "flows": ["f"], "enqueues": [], "triggers": [
        http("POST", "/echo"),
        http("POST", "/checked", body_schema={"type": "object", "required": ["name"]})]}

    def handler(request, ctx):
        raw = b"".join(request.request_body.stream)
        return {"status_code": 200, "body": {"body": request.body, "raw": raw.decode(), "method": request.method,
                                            "get": request.get("body")}}
"""

ANSWERS = """
    from motia import ApiResponse, http

    config = {"name": "Answers", "flows": ["f"], "enqueues": [], "triggers": [
        http("GET", "/model"), http("GET", "/bytes"), http("GET", "/none"), http("GET", "/bad"),
        http("POST", "/vip", condition=lambda request, ctx: request.body.get("vip") is True)]}

    def handler(request, ctx):
        path = ctx.trigger.path
        if path == "/model":
            return ApiResponse(status=201, body={"ok": True}, headers={"x-kind": "model"})
        if path == "/bytes":
            return {"status": 200, "body": b"\\x00raw", "headers": {"content-type": "application/octet-stream"}}
        if path == "/none":
            return None
        if path == "/vip":
            return {"status": 200, "body": {"vip": True}}
        return 42
"""


async def test_middleware_chain_passes_ctx_attributes_and_may_answer_alone(make_project: ProjectFactory) -> None:
    async with Harness(make_project({"steps/g_step.py": MIDDLEWARE}), env={}) as h:
        denied = await h.request("GET", "/guarded")
        allowed = await h.request("GET", "/guarded", headers={"authorization": "Bearer ok"})
        headers = h.last_response.headers if h.last_response else {}
    assert denied == (401, {"error": "Unauthorized"})
    assert allowed == (200, {"user": {"id": "u1"}, "calls": ["outer", "auth", "outer", "auth", "handler"]})
    assert headers["x-mw"] == "1"


async def test_bodies_are_parsed_by_content_type(make_project: ProjectFactory) -> None:
    async with Harness(make_project({"steps/e_step.py": BODIES}), env={}) as h:
        as_json = await h.request("POST", "/echo", json={"a": 1})
        form = await h.request("POST", "/echo", raw_body=b"a=1&b=2",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        empty = await h.request("POST", "/echo")
        bad_json = await h.request("POST", "/echo", raw_body=b"{nope")
        unchecked = await h.request("POST", "/checked")
        checked = await h.request("POST", "/checked", json={"other": 1})
    assert as_json == (200, {"body": {"a": 1}, "raw": '{"a": 1}', "method": "POST", "get": {"a": 1}})
    assert form == (200, {"body": None, "raw": "a=1&b=2", "method": "POST", "get": None})
    assert empty[1]["body"] is None
    assert bad_json[0] == 400
    assert unchecked[0] == 200  # no body: nothing to check, as Motia runs the handler
    assert checked[0] == 422 and checked[1]["fields"][0]["loc"] == ["name"]


async def test_handler_answers_and_conditions(make_project: ProjectFactory) -> None:
    async with Harness(make_project({"steps/a_step.py": ANSWERS}), env={}) as h:
        model = await h.request("GET", "/model")
        model_headers = dict(h.last_response.headers) if h.last_response else {}
        raw = await h.request("GET", "/bytes")
        raw_content = h.last_response.content if h.last_response else None
        none = await h.request("GET", "/none")
        bad = await h.request("GET", "/bad")
        skipped = await h.request("POST", "/vip", json={"vip": False})
        vip = await h.request("POST", "/vip", json={"vip": True})
    assert model == (201, {"ok": True}) and model_headers["x-kind"] == "model"
    assert raw[0] == 200 and raw_content == b"\x00raw"
    assert none == (204, None)
    assert bad[0] == 500 and "not int" in bad[1]["message"]
    assert skipped == (422, {"error": "Request condition not met", "skipped": True})
    assert vip == (200, {"vip": True})
    vip_runs = [r.outcome for r in h.runs if r.step == "Answers#http5"]
    assert vip_runs == [Outcome.SKIPPED, Outcome.OK]


SSE = """
    import asyncio
    from motia import enqueue, http

    config = {"name": "Feed", "flows": ["f"], "enqueues": ["feed.done"], "triggers": [http("GET", "/feed")]}

    async def handler(args, ctx):
        await args.response.status(200)
        await args.response.headers({"content-type": "text/event-stream"})
        args.response.writer.stream.write("data: first\\n\\n")
        await gate.wait()  # the test lets the handler go on once it has read the first event
        args.response.writer.stream.write(b"data: second\\n\\n")
        enqueue({"topic": "feed.done", "data": {"events": 2}})
        args.response.close()
"""

DONE = """
    from motia import queue, stateManager

    config = {"name": "FeedDone", "flows": ["f"], "enqueues": [], "triggers": [queue("feed.done")]}

    def handler(input):
        stateManager.set("feeds", "done", input)
"""

Started = Callable[[Path], Awaitable[tuple[Runtime, httpx.AsyncClient, list[dict[str, Any]]]]]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Started]:
    """``await served(root)``: a runtime and a real server on a free port, a client, and the log records;
    all stop after."""
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(root: Path) -> tuple[Runtime, httpx.AsyncClient, list[dict[str, Any]]]:
        settings = load_settings(root, flags={"backend_url": "memory://"}, env={})
        project, findings = load_project(settings)
        assert [f for f in findings if f.severity is Severity.ERROR] == []
        logs: list[dict[str, Any]] = []
        rt = Runtime(project, backend_for(settings), cron=False, poll_s=0.05, log_sink=logs.append)
        await rt.start()
        server = await start_server(rt.router, settings, dev=True, port=0)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10.0)

        async def stop() -> None:
            await client.aclose()
            await server.stop()
            await rt.stop(grace_s=1.0)

        stops.append(stop)
        return rt, client, logs

    yield start
    for stop in reversed(stops):
        await stop()


def handler_globals(project: Project, step: str) -> dict[str, Any]:
    """The module globals of a 1.0 step's own handler (behind motia-py's adapter)."""
    spec = project.step(step)
    assert spec is not None and spec.handler is not None
    return spec.handler.__wrapped__.__globals__  # type: ignore[attr-defined,no-any-return]


async def test_a_streamed_answer_arrives_while_the_handler_runs(make_project: ProjectFactory, served: Started) -> None:
    rt, client, _ = await served(make_project({"steps/feed_step.py": SSE, "steps/done_step.py": DONE}))
    gate = asyncio.Event()
    handler_globals(rt.project, "Feed")["gate"] = gate
    received: list[str] = []
    async with client.stream("GET", "/feed") as response:
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        async for text in response.aiter_text():
            received.append(text)
            if "first" in text:
                assert not gate.is_set()  # the handler is still waiting: the first event came while it ran
                gate.set()
    assert "".join(received) == "data: first\n\ndata: second\n\n"
    await until_state(rt, "done", {"events": 2})  # enqueued while streaming: published when the body ended


async def until_state(rt: Runtime, key: str, expected: Any) -> None:
    from motia_py.state import State

    from .probes import until

    async def there() -> bool:
        return bool(await State(rt.backend, "f").get("feeds", key) == expected)

    await until(there, f"feeds/{key} == {expected}")


FAILING_FEED = """
    from motia import http

    config = {"name": "Broken", "flows": ["f"], "enqueues": [], "triggers": [http("GET", "/broken")]}

    async def handler(args, ctx):
        args.response.writer.stream.write("data: partial\\n\\n")
        await gate.wait()
        raise RuntimeError("feed source gone")
"""


async def test_a_handler_failing_mid_stream_ends_the_body_and_is_logged(make_project: ProjectFactory,
                                                                         served: Started) -> None:
    rt, client, logs = await served(make_project({"steps/broken_step.py": FAILING_FEED}))
    gate = asyncio.Event()
    handler_globals(rt.project, "Broken")["gate"] = gate
    async with client.stream("GET", "/broken") as response:
        body = []
        async for text in response.aiter_text():
            body.append(text)
            gate.set()
    assert response.status_code == 200 and "".join(body) == "data: partial\n\n"
    [failure] = [r for r in logs if "failed while streaming" in r["msg"]]
    assert failure["level"] == "error" and "RuntimeError: feed source gone" in failure["msg"]
