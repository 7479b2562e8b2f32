"""The Workbench: its admin API against a real server and client, and its page in a real headless Chromium.

The browser is driven over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (fds 3 and 4,
NUL-terminated JSON), so no websocket client is needed. Set ``MOTIA_PY_UPDATE_SCREENSHOT=1`` to refresh
``docs/workbench.png`` from the browser test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from msgspec import structs

from motia_py.errors import ExposedWorkbenchError
from motia_py.http import HttpServer, start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.serve import _start_http
from motia_py.settings import load_settings
from motia_py.tracing import TraceSettings
from motia_py.workbench import COOKIE, check_dev_exposure, install_workbench, is_loopback_host
from tests.conftest import ProjectFactory

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"

API_STEP = """
config = {"type": "api", "name": "CreateJob", "path": "/jobs", "method": "POST", "emits": ["job.created"],
          "bodySchema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
          "flows": ["f"]}

async def handler(req, ctx):
    await ctx.emit({"topic": "job.created", "data": {"name": req.body["name"]}})
    return {"status": 201, "body": {"created": req.body["name"], "q": req.queryParams}}
"""

CONSUMER = """
config = {"type": "event", "name": "Consumer", "subscribes": ["job.created"], "emits": [], "flows": ["f"]}

async def handler(input, ctx):
    ctx.logger.info("stored", name=input["name"])
    await ctx.state.set("jobs", input["name"], input)
"""

FLAKY = """
from motia_py import NonRetryableError

config = {"type": "event", "name": "Flaky", "subscribes": ["flaky.requested"], "emits": [], "flows": ["f"],
          "virtualEmits": ["job.created"]}

async def handler(input, ctx):
    if await ctx.state.get("flaky", "failed") is None:
        await ctx.state.set("flaky", "failed", True)
        raise NonRetryableError("first time fails")
    await ctx.state.set("flaky", "done", True)
"""

FILES = {"steps/create_job.step.py": API_STEP, "steps/consumer.step.py": CONSUMER, "steps/flaky.step.py": FLAKY,
         "flows/f.toml": 'description = "the test flow"\nstate_namespace = "shop"\n'}


@dataclass
class Served:
    server: HttpServer
    rt: Runtime
    base: str
    client: httpx.AsyncClient


Serve = Callable[..., Awaitable[Served]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(root, dev=True, **flags)``: a runtime with traces, a server on a free port, the Workbench."""
    running: list[Served] = []

    async def start(root: Path, *, dev: bool = True, **flags: Any) -> Served:
        settings = load_settings(root, flags={"backend_url": "memory://", **flags}, env={})
        project, _ = load_project(settings)
        rt = Runtime(project, backend_for(settings), cron=False, poll_s=0.05,
                     traces=TraceSettings(flush_interval_s=0.05))
        await rt.start()
        server = await start_server(rt.router, settings, dev=dev, port=0)
        install_workbench(server.app, rt, settings, dev=dev)
        base = f"http://127.0.0.1:{server.port}"
        served = Served(server, rt, base, httpx.AsyncClient(base_url=base, timeout=10))
        running.append(served)
        return served

    yield start
    for s in running:
        await s.client.aclose()
        await s.server.stop()
        await s.rt.stop(grace_s=1.0)


@pytest_asyncio.fixture
async def wb(serve: Serve, make_project: ProjectFactory) -> Served:
    return await serve(make_project(FILES))


async def settled(wb: Served) -> None:
    """Wait until every event is handled and every run is written to the traces."""
    await wb.rt.wait_idle(timeout_s=10)
    assert wb.rt.recorder is not None
    await wb.rt.recorder.flush()


# -- the admin API ----------------------------------------------------------------------------------

async def test_the_page_is_served_at_the_prefix_itself_with_its_markup(wb: Served) -> None:
    r = await wb.client.get("/__workbench")
    assert r.status_code == 200 and not r.history
    assert r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    for marker in ('id="flow-graph"', 'id="traces-list"', 'id="emit-topic"', 'id="emit-data"', 'id="emit-send"',
                   'id="emit-result"', 'id="dlq-list"', 'id="state-namespace"', 'id="call-path"', "EventSource"):
        assert marker in r.text
    assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "")  # nothing from the network
    assert (await wb.client.get("/__workbench/")).status_code == 200


async def test_unknown_routes_and_methods_answer_json_errors(wb: Served) -> None:
    r = await wb.client.get("/__workbench/api/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await wb.client.get("/__workbench/api/emit")
    assert r.status_code == 405


async def test_graph_has_the_steps_edges_and_flows(wb: Served) -> None:
    g = (await wb.client.get("/__workbench/api/graph")).json()
    assert {s["name"]: s["type"] for s in g["steps"]} == {"CreateJob": "api", "Consumer": "event", "Flaky": "event"}
    assert {(e["from"], e["to"], e["topic"], e["virtual"]) for e in g["edges"]} == {
        ("CreateJob", "Consumer", "job.created", False), ("Flaky", "Consumer", "job.created", True)}
    assert g["flows"] == ["f"]
    assert g["flowInfo"] == {"f": {"description": "the test flow", "namespace": "shop", "steps": 3}}
    assert g["routes"] == [{"method": "POST", "path": "/jobs", "step": "CreateJob"}]
    assert [t["topic"] for t in g["emitTopics"]] == ["flaky.requested", "job.created"]
    one = (await wb.client.get("/__workbench/api/graph", params={"flow": "f"})).json()
    assert one["flow"] == "f" and len(one["steps"]) == 3
    r = await wb.client.get("/__workbench/api/graph", params={"flow": "g"})
    assert r.status_code == 404 and "unknown flow 'g'" in r.json()["message"]


async def test_emit_answers_a_trace_id_and_the_trace_shows_up_with_its_tree(wb: Served) -> None:
    r = await wb.client.post("/__workbench/api/emit", json={"topic": "job.created", "data": {"name": "a"}})
    assert r.status_code == 200
    trace_id = r.json()["traceId"]
    await settled(wb)
    traces = await _get_json(wb, "/__workbench/api/traces")
    [summary] = [t for t in traces if t["trace_id"] == trace_id]
    assert summary["status"] == "ok" and summary["steps"] == ["Consumer"] and summary["entry"] == "job.created"
    detail = (await wb.client.get(f"/__workbench/api/traces/{trace_id}")).json()
    [root] = detail["tree"]
    assert root["step"] == "Consumer" and root["children"] == []
    assert [line["msg"] for line in root["logs"]] == ["stored"]
    assert (await wb.client.get("/__workbench/api/traces/0000")).status_code == 404


async def test_traces_filter_by_step_and_status_newest_first(wb: Served) -> None:
    first = (await wb.client.post("/__workbench/api/emit", json={"topic": "job.created", "data": {"name": "a"}})).json()
    second = (await wb.client.post("/__workbench/api/emit", json={"topic": "flaky.requested", "data": {}})).json()
    await settled(wb)
    both = await _get_json(wb, "/__workbench/api/traces?limit=10")
    assert [t["trace_id"] for t in both] == [second["traceId"], first["traceId"]]
    failed = (await wb.client.get("/__workbench/api/traces", params={"status": "failed"})).json()
    assert [t["trace_id"] for t in failed] == [second["traceId"]]
    by_step = (await wb.client.get("/__workbench/api/traces", params={"step": "Consumer"})).json()
    assert [t["trace_id"] for t in by_step] == [first["traceId"]]


async def test_emit_rejects_unknown_topics_and_bad_json(wb: Served) -> None:
    r = await wb.client.post("/__workbench/api/emit", json={"topic": "job.craeted", "data": {}})
    assert r.status_code == 400 and r.json()["error"] == "unknown_topic"
    assert "job.created" in r.json()["message"]  # the did-you-mean hint
    r = await wb.client.post("/__workbench/api/emit", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    r = await wb.client.post("/__workbench/api/emit", json={"data": {}})
    assert r.status_code == 400 and "topic" in r.json()["message"]


async def test_dead_letters_are_listed_and_replayed(wb: Served) -> None:
    await wb.client.post("/__workbench/api/emit", json={"topic": "flaky.requested", "data": {"n": 1}})
    await settled(wb)
    [dead] = await _get_json(wb, "/__workbench/api/dlq")
    assert dead["step"] == "Flaky" and dead["topic"] == "flaky.requested" and dead["data"] == {"n": 1}
    assert "first time fails" in dead["error"]
    r = await wb.client.post(f"/__workbench/api/dlq/{dead['id']}/replay")
    assert r.status_code == 200 and r.json() == {"replayed": True, "id": dead["id"]}
    await settled(wb)
    assert (await _get_json(wb, "/__workbench/api/state/shop"))["flaky"]["done"] is True
    assert (await wb.client.get("/__workbench/api/dlq")).json() == []
    assert (await wb.client.post(f"/__workbench/api/dlq/{dead['id']}/replay")).status_code == 404


async def test_state_of_a_namespace_and_the_namespaces(wb: Served) -> None:
    assert (await wb.client.get("/__workbench/api/namespaces")).json() == ["shop"]
    assert (await wb.client.get("/__workbench/api/state/shop")).json() == {}
    await wb.client.post("/__workbench/api/emit", json={"topic": "job.created", "data": {"name": "b"}})
    await settled(wb)
    state = await _get_json(wb, "/__workbench/api/state/shop")
    assert state == {"jobs": {"b": {"name": "b"}}}


async def test_call_runs_an_api_step_through_the_pipeline(wb: Served) -> None:
    r = await wb.client.post("/__workbench/api/call",
                             json={"method": "post", "path": "/jobs?x=1", "body": {"name": "c"}})
    assert r.status_code == 200
    out = r.json()
    assert out["status"] == 201 and out["body"] == {"created": "c", "q": {"x": "1"}}
    assert out["headers"]["x-trace-id"]
    await settled(wb)
    assert "c" in (await _get_json(wb, "/__workbench/api/state/shop"))["jobs"]
    r = await wb.client.post("/__workbench/api/call", json={"method": "POST", "path": "/jobs", "body": {}})
    assert r.json()["status"] == 422  # bodySchema still applies
    r = await wb.client.post("/__workbench/api/call", json={"method": "GET", "path": "/__workbench/api/dlq"})
    assert r.status_code == 400


async def test_cross_origin_posts_and_foreign_host_names_are_refused_in_dev(wb: Served) -> None:
    r = await wb.client.post("/__workbench/api/emit", json={"topic": "job.created", "data": {"name": "x"}},
                             headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    r = await wb.client.get("/__workbench/api/namespaces", headers={"host": "evil.example:3000"})
    assert r.status_code == 403
    r = await wb.client.get("/__workbench/api/namespaces", headers={"host": "localhost:3000"})
    assert r.status_code == 200


@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "127.",
                                  "evil.example", "", "0x7f.1"])
async def test_dev_refuses_host_names_a_rebinding_page_could_use(wb: Served, host: str) -> None:
    for path in ("/__workbench/api/state/shop", "/__workbench/api/namespaces", "/__workbench"):
        r = await wb.client.get(path, headers={"host": f"{host}:3000" if host else ""})
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (host, path)


@pytest.mark.parametrize("host", ["127.0.0.1:3000", "127.9.9.9:3000", "[::1]:3000", "localhost:3000", "LocalHost.",
                                  "10.1.2.3:3000"])
async def test_dev_answers_localhost_and_ip_addresses(wb: Served, host: str) -> None:
    assert (await wb.client.get("/__workbench/api/namespaces", headers={"host": host})).status_code == 200


async def test_dev_answers_the_host_names_listed_in_allowed_hosts(serve: Serve, make_project: ProjectFactory) -> None:
    s = await serve(make_project(FILES), allowed_hosts=["dev.box"])
    assert (await s.client.get("/__workbench/api/namespaces", headers={"host": "dev.box:3000"})).status_code == 200
    assert (await s.client.get("/__workbench/api/namespaces", headers={"host": "dev.box.evil:1"})).status_code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "127.evil.example", "devbox"])
def test_dev_on_a_non_loopback_address_needs_a_token(make_project: ProjectFactory, host: str) -> None:
    settings = load_settings(make_project(FILES), flags={"host": host}, env={})
    with pytest.raises(ExposedWorkbenchError, match=r"workbench_token.*MOTIA_PY_WORKBENCH_TOKEN.*127\.0\.0\.1"):
        check_dev_exposure(settings)
    check_dev_exposure(structs.replace(settings, workbench_token=TOKEN))
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        check_dev_exposure(structs.replace(settings, host=loopback))
    assert not is_loopback_host(host)


async def test_dev_bound_to_the_network_installs_nothing_without_a_token_and_wants_it_with_one(
    make_project: ProjectFactory,
) -> None:
    root = make_project(FILES)
    settings = load_settings(root, flags={"backend_url": "memory://", "port": 0}, env={})
    exposed = structs.replace(settings, host="0.0.0.0")  # what the Workbench is told; the test binds loopback
    project, _ = load_project(settings)
    async with Runtime(project, backend_for(settings), cron=False) as rt:
        server = await start_server(rt.router, settings, dev=True, port=0)
        try:
            with pytest.raises(ExposedWorkbenchError):
                install_workbench(server.app, rt, exposed, dev=True)
            assert server.app.prefix_routes == []
            assert install_workbench(server.app, rt, structs.replace(exposed, workbench_token=TOKEN), dev=True)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
                assert (await c.get("/__workbench/api/namespaces")).status_code == 401
                r = await c.get("/__workbench/api/namespaces", headers={"authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200
        finally:
            await server.stop()


async def test_json_answers_are_nosniff_and_405_names_the_allowed_methods(wb: Served) -> None:
    for r in (await wb.client.get("/__workbench/api/graph"), await wb.client.get("/__workbench/api/nope"),
              await wb.client.post("/__workbench/api/emit", content=b"{bad")):
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff"
    r = await wb.client.get("/__workbench/api/emit")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await wb.client.post("/__workbench/api/graph")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("raw", [b"[" * 3_000 + b"]" * 3_000, b'{"topic": "job.created", "data": {"x": NaN}}',
                                 b'{"topic": "job.created", "data": {"n": ' + b"9" * 5_000 + b"}}"],
                         ids=["deep", "nan", "huge-int"])
async def test_hostile_admin_bodies_answer_400(wb: Served, raw: bytes) -> None:
    r = await wb.client.post("/__workbench/api/emit", content=raw)
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"


async def test_events_stream_pushes_a_trace_after_an_emit(wb: Served) -> None:
    async with wb.client.stream("GET", "/__workbench/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()

        async def next_event() -> tuple[str, Any]:
            event = ""
            async for line in lines:
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    return event, json.loads(line[6:])
            raise AssertionError("the stream ended")

        assert (await asyncio.wait_for(next_event(), 5))[0] == "ready"
        trace_id = (await wb.client.post("/__workbench/api/emit", json={"topic": "job.created",
                                                                         "data": {"name": "s"}})).json()["traceId"]
        event, data = await asyncio.wait_for(next_event(), 5)
        assert event == "trace" and data["trace_id"] == trace_id and data["steps"] == ["Consumer"]


async def test_stopping_the_server_ends_open_event_streams(wb: Served) -> None:
    ready = asyncio.Event()

    async def listen() -> list[str]:
        lines = []
        async with httpx.AsyncClient(base_url=wb.base, timeout=10) as c, \
                c.stream("GET", "/__workbench/api/events") as stream:
            async for line in stream.aiter_lines():
                lines.append(line)
                if line == "event: ready":
                    ready.set()
        return lines

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 5)
    started = time.monotonic()
    await asyncio.wait_for(wb.server.stop(), 5)  # uvicorn waits for open responses: the stream must end
    assert time.monotonic() - started < 3
    assert "event: ready" in await asyncio.wait_for(listener, 5)


# -- security in ``start`` ----------------------------------------------------------------------------

async def test_start_without_a_token_installs_nothing(serve: Serve, make_project: ProjectFactory) -> None:
    s = await serve(make_project(FILES), dev=False)
    assert (await s.client.get("/__workbench")).status_code == 404
    assert (await s.client.get("/__workbench/api/graph")).status_code == 404


async def test_start_with_a_token_needs_it_by_header_or_cookie(serve: Serve, make_project: ProjectFactory) -> None:
    s = await serve(make_project(FILES), dev=False, workbench_token=TOKEN)
    for path in ("/__workbench", "/__workbench/api/graph", "/__workbench/api/events"):
        r = await s.client.get(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert (await s.client.get("/__workbench/api/graph", headers={"authorization": "Bearer wrong"})).status_code == 401
    assert (await s.client.get("/__workbench?token=wrong")).status_code == 401
    r = await s.client.get("/__workbench/api/graph", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["steps"]
    assert COOKIE not in r.headers.get("set-cookie", "")
    async with httpx.AsyncClient(base_url=s.base, timeout=5) as browser:
        page = await browser.get(f"/__workbench?token={TOKEN}")
        assert page.status_code == 200 and not page.history
        cookie = page.headers["set-cookie"].lower()
        assert f"{COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert "path=/__workbench" in cookie
        r = await browser.post("/__workbench/api/emit", json={"topic": "job.created", "data": {"name": "t"}})
        assert r.status_code == 200 and r.json()["traceId"]


async def test_start_wires_the_workbench_only_with_a_token(make_project: ProjectFactory) -> None:
    root = make_project(FILES)
    for token, status in ((None, 404), (TOKEN, 200)):
        settings = load_settings(root, flags={"backend_url": "memory://", "port": 0, "workbench_token": token}, env={})
        project, _ = load_project(settings)
        async with Runtime(project, backend_for(settings), cron=False) as rt:
            server = await _start_http(rt, settings)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as c:
                    r = await c.get("/__workbench/api/namespaces", headers={"authorization": f"Bearer {TOKEN}"})
                    assert r.status_code == status
            finally:
                await server.stop()


# -- ``motia-py dev`` with a browser-like client attached --------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_dev_serves_the_workbench_and_stops_promptly_with_a_stream_open(make_project: ProjectFactory) -> None:
    root = make_project(FILES)
    port = _free_port()
    log = (root / "dev.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "motia_py", "dev", "--port", str(port), "--project", str(root)],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "MOTIA_PY_BACKEND_URL": "memory://"},
                            cwd=root)
    try:
        base = f"http://127.0.0.1:{port}/__workbench"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(base, timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (root / "dev.log").read_text()
                time.sleep(0.05)
        assert page.status_code == 200 and 'id="flow-graph"' in page.text
        with httpx.stream("GET", base + "/api/events", timeout=10) as stream:
            lines = stream.iter_lines()  # held: dropping the iterator would close the connection
            assert next(lines).startswith("retry:")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=8) == 0, (root / "dev.log").read_text()
            assert "event: ready" in list(lines)  # the server ended the stream, the client did not
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


# -- the page in a real browser -----------------------------------------------------------------------

def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """A Chromium binary: found, or installed with apt-get when running as root; else skip (fail on CI)."""
    exe = _find_chromium()
    if exe is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode != 0:
                break
        exe = _find_chromium()
    if exe is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("chromium is not installed (apt-get install chromium)")
    assert exe is not None
    return exe


# The pipe protocol reads commands on fd 3 and writes replies on fd 4: move the pipe ends there, then exec.
_TRAMPOLINE = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
os.dup2(r, 3)
os.dup2(w, 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """Headless Chromium driven over CDP on ``--remote-debugging-pipe``: one page, blocking calls."""

    def __init__(self, exe: str, profile: Path) -> None:
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--window-size=1280,800", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self._log = (profile.parent / "chromium.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(to_child), str(from_child), exe, *args],
                                     pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        os.close(to_child)
        os.close(from_child)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stash: list[dict[str, Any]] = []  # events read while waiting for another one
        threading.Thread(target=self._reader, daemon=True).start()
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page.enable", "Runtime.enable"):
                self.call(domain, session=self.session)
            self.call("Emulation.setDeviceMetricsOverride", session=self.session, width=1280, height=800,
                      deviceScaleFactor=1, mobile=False)
        except (AssertionError, OSError) as exc:
            self.close()
            log = (profile.parent / "chromium.log").read_text()
            raise AssertionError(f"cannot drive chromium: {exc}\n{log}") from exc

    def _reader(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._read, 65536)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def call(self, method: str, session: str | None = None, timeout: float = 10.0, **params: Any) -> Any:
        """Send one CDP command and wait for its result."""
        self._next_id += 1
        msg_id = self._next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: msg_id in self._replies, timeout):
                raise AssertionError(f"no reply to {method} within {timeout} s")
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page and return its (JSON) value."""
        result = self.call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_event(self, method: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next CDP event named ``method`` (other events are kept for :meth:`page_errors`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {method} event within {timeout} s") from None
            if ev.get("method") == method:
                return ev
            self._stash.append(ev)

    def page_errors(self) -> list[str]:
        """Uncaught exceptions and console errors seen so far."""
        out = []
        while self._stash or not self.events.empty():
            ev = self._stash.pop(0) if self._stash else self.events.get()
            if ev.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(ev["params"]["exceptionDetails"])[:500])
            elif ev.get("method") == "Runtime.consoleAPICalled" and ev["params"]["type"] == "error":
                out.append(json.dumps(ev["params"]["args"])[:500])
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):  # best effort: the browser may already be gone
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._log.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    b = Browser(chromium, profile)
    try:
        yield b
    finally:
        b.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.mark.timeout(300)  # a first run may apt-get install chromium
async def test_the_page_in_chromium_draws_the_example_and_emits_from_the_form(
        browser: Browser, tmp_path: Path) -> None:
    settings = load_settings(REPO, flags={"backend_url": "memory://"}, env={})
    project, _ = load_project(settings)
    async with Runtime(project, backend_for(settings), poll_s=0.05, traces=TraceSettings(flush_interval_s=0.05)) as rt:
        server = await start_server(rt.router, settings, dev=True, port=0)
        install_workbench(server.app, rt, settings, dev=True)
        try:
            url = f"http://127.0.0.1:{server.port}/__workbench"
            await _drive(browser, url, sorted({s.name for s in project.steps}), tmp_path)
        finally:
            await server.stop()


async def _drive(b: Browser, url: str, step_names: list[str], tmp_path: Path) -> None:
    async def js(expr: str) -> Any:
        return await asyncio.to_thread(b.js, expr)

    async def until(expr: str, what: str, timeout: float = 8.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await js(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({expr}); page errors: {b.page_errors()}")
            await asyncio.sleep(0.05)

    async def click(selector: str) -> None:
        box = await until(f"""(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;
            e.scrollIntoView({{block: "center"}}); const r = e.getBoundingClientRect();
            return r.width ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null; }})()""", selector)
        for kind in ("mousePressed", "mouseReleased"):
            await asyncio.to_thread(b.call, "Input.dispatchMouseEvent", session=b.session, type=kind, x=box["x"],
                                    y=box["y"], button="left", clickCount=1)

    async def type_into(selector: str, text: str) -> None:
        await js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()")
        await asyncio.to_thread(b.call, "Input.insertText", session=b.session, text=text)

    await asyncio.to_thread(b.call, "Page.navigate", session=b.session, url=url)
    await until("!!document.querySelector('#flow-graph svg [data-step=\"JobProcessor\"]')", "the flow graph")
    steps = await js("[...document.querySelectorAll('#flow-graph [data-step]')].map(n => n.dataset.step).sort()")
    assert steps == step_names and {"EmailJobProducer", "JobProcessor", "JobScheduler"} <= set(steps)
    assert await js("document.querySelector('[data-step=\"JobScheduler\"] text.sub').textContent") \
        == "cron */10 * * * * *"
    assert await js("document.querySelectorAll('#flow-graph path.edge.virtual').length") == 0
    await until("document.querySelector('#live').classList.contains('on')", "the live event stream")

    await click("#tab-emit")
    await type_into("#emit-topic", "email.requested")
    await js("document.querySelector('#emit-topic').dispatchEvent(new Event('change'))")
    assert json.loads(await js("document.querySelector('#emit-data').value"))["maxAttempts"] == 3  # from the schema
    await type_into("#emit-data", json.dumps({"to": "ada@example.com", "subject": "Hi", "body": "Hello"}))
    await click("#emit-send")
    trace_id = await until("document.querySelector('#emit-result').dataset.resultTraceId", "the emit's trace id")
    selector = f'#traces-list [data-trace-id="{trace_id}"]'
    await until(f"!!document.querySelector({json.dumps(selector)})", "the trace in the list")

    await click(selector)
    await until("!!document.querySelector('#trace-timeline [data-run-step=\"JobCompletionLogger\"]')", "the timeline")
    runs = await js("[...document.querySelectorAll('#trace-timeline [data-run-step]')].map(r => r.dataset.runStep)")
    assert runs == ["EmailJobProducer", "JobProcessor", "JobCompletionLogger"]  # nested by the tree, in order
    assert await js("document.querySelector('#trace-timeline').textContent.includes('Email job created')")

    await click("#tab-flows")
    await until("document.querySelectorAll('#flow-graph .node.ran').length === 3", "the trace's steps highlighted")
    await click('#flow-graph [data-step="EmailJobProducer"]')
    await until("document.querySelector('#step-info').textContent.includes('email_job.step.py')", "the step's details")
    errors = b.page_errors()
    assert errors == []
    shot = await asyncio.to_thread(b.call, "Page.captureScreenshot", session=b.session, format="png")
    png = base64.b64decode(shot["data"])
    assert _png_size(png) == (1280, 800)
    (tmp_path / "workbench.png").write_bytes(png)
    if os.environ.get("MOTIA_PY_UPDATE_SCREENSHOT"):
        (REPO / "docs" / "workbench.png").write_bytes(png)


async def _get_json(wb: Served, path: str) -> Any:
    r = await wb.client.get(path)
    assert r.status_code == 200, r.text
    return r.json()
