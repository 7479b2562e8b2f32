"""Property-based fuzzing of the HTTP server: every answer is JSON, and bad input is a 4xx, never a 5xx.

The bulk runs through the ASGI app with httpx's ASGI transport (the same ``ApiApp`` uvicorn serves);
a smaller run goes through a real uvicorn server and a real client. The project's handlers are well
behaved (they echo what they get), so any 5xx is the framework's own failure.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motia_py.http import ApiApp, start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from tests.fuzz_strategies import json_bodies

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

STEPS = {
    "items.step.py": """
        from pydantic import BaseModel

        class Item(BaseModel):
            name: str
            count: int = 1

        config = {"type": "api", "name": "CreateItem", "path": "/items", "method": "POST", "bodySchema": Item,
                  "emits": ["item.created"], "flows": ["f"]}

        async def handler(req, ctx):
            await ctx.emit({"topic": "item.created", "data": req.body.model_dump()})
            return {"status": 201, "body": req.body}
    """,
    "consumer.step.py": """
        config = {"type": "event", "name": "StoreItem", "subscribes": ["item.created"], "flows": ["f"]}

        async def handler(input, ctx):
            await ctx.state.set("items", input["name"], input)
    """,
    "tree.step.py": """
        config = {"type": "api", "name": "PutTree", "path": "/tree/:id", "method": "PUT", "flows": ["f"],
                  "bodySchema": {"$defs": {"Node": {"type": "object", "properties": {
                      "label": {"type": "string", "maxLength": 20},
                      "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
                      "$ref": "#/$defs/Node"}}

        async def handler(req, ctx):
            return {"status": 200, "body": {"id": req.pathParams["id"], "tree": req.body}}
    """,
    "search.step.py": """
        config = {"type": "api", "name": "Search", "path": "/search", "method": "GET", "flows": ["f"],
                  "queryParams": [
                      {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100}, "default": 10},
                      {"name": "ratio", "schema": {"type": "number", "exclusiveMinimum": 0}},
                      {"name": "flag", "schema": {"type": "boolean"}},
                      {"name": "tag", "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
                      {"name": "mode", "schema": {"enum": ["a", "b"]}},
                      {"name": "q", "description": "free text"}]}

        async def handler(req, ctx):
            return {"status": 200, "body": req.queryParams}
    """,
    "echo.step.py": """
        config = {"type": "api", "name": "Echo", "path": "/echo/:what", "method": "POST", "flows": ["f"]}

        async def handler(req, ctx):
            return {"status": 200, "body": {"what": req.pathParams["what"], "body": req.body,
                                            "query": req.queryParams}}
    """,
    "get_echo.step.py": """
        config = {"type": "api", "name": "GetEcho", "path": "/echo/:what", "method": "GET", "flows": ["f"]}

        async def handler(req, ctx):
            return {"status": 200, "body": {"what": req.pathParams["what"]}}
    """,
    "delete.step.py": """
        config = {"type": "api", "name": "DeleteJob", "path": "/jobs/{id}/runs/{run}", "method": "DELETE",
                  "flows": ["f"]}

        async def handler(req, ctx):
            return None
    """,
}
ROUTES = ["/items", "/tree/{x}", "/search", "/echo/{x}", "/jobs/{x}/runs/{x}", "/nope", "/items/", "/{x}"]
SERVED = [("POST", "/items"), ("PUT", "/tree/{x}"), ("GET", "/search"), ("POST", "/echo/{x}"), ("GET", "/echo/{x}"),
          ("HEAD", "/echo/{x}"), ("DELETE", "/jobs/{x}/runs/{x}")]
BODY_ROUTES = {("POST", "/items"), ("PUT", "/tree/{x}"), ("POST", "/echo/{x}")}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PURGE"]

safe_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=20).map(lambda v: v.strip(" \t"))  # HTTP trims values; a real client refuses
header_names = st.one_of(st.sampled_from(["content-type", "x-token", "traceparent", "accept", "origin"]),
                         st.from_regex(r"x-[a-z0-9-]{1,10}", fullmatch=True))


@dataclass(frozen=True)
class Req:
    """One generated request."""

    method: str
    route: str
    url: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 80 else self.body[:40] + b"..." + self.body[-20:]
        return (f"Req({self.method} {self.url} query={self.query!r} headers={self.headers!r} "
                f"body={body!r} ({len(self.body)} bytes))")


@st.composite
def requests(draw: st.DrawFn) -> Req:
    """A request: a route (known or not) with hostile path segments, query, headers and body."""
    if draw(st.integers(0, 4)):  # mostly a route with its own method, so most requests reach a handler
        method, route = draw(st.sampled_from(SERVED))
    else:
        method, route = draw(st.sampled_from(METHODS)), draw(st.sampled_from(ROUTES))
    url = route
    while "{x}" in url:
        url = url.replace("{x}", quote(draw(safe_text) or "x", safe=""), 1)
    query = draw(st.lists(st.tuples(st.sampled_from(["limit", "ratio", "flag", "tag", "mode", "q", "x"]),
                                    st.one_of(safe_text, st.sampled_from(["1", "0", "-5", "101", "1e3", "nan",
                                                                          "inf", "true", "a", "9" * 5000]))),
                          max_size=5))
    headers = draw(st.dictionaries(header_names, header_text, max_size=3))
    body = draw(st.one_of(st.just(b""), json_bodies())) if method not in ("GET", "HEAD") else b""
    return Req(method, route, url, query, headers, body)


def strict_json(raw: bytes) -> Any:
    """Parse as standard JSON (no NaN/Infinity) from UTF-8, or fail."""

    def reject(name: str) -> Any:
        raise AssertionError(f"{name} in a response")

    return json.loads(raw.decode("utf-8"), parse_constant=reject)


def check(req: Req, r: httpx.Response) -> None:
    """What every answer must be: JSON, never a 5xx; a 400 for a hostile body on a route that reads it."""
    assert r.status_code < 500, (req, r.status_code, r.text)
    if req.method == "HEAD" or r.status_code in (204, 304):
        return
    assert r.headers["content-type"] == "application/json", (req, r.headers)
    body = strict_json(r.content)
    if r.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), (req, body)
    routed = r.status_code not in (404, 405)  # a segment such as %2F or .. can leave the route
    if routed and (req.method, req.route) in BODY_ROUTES and req.body in HOSTILE_BODIES:
        assert r.status_code == 400 and body["error"] == "invalid_json", (req, r.status_code, body)


HOSTILE_BODIES = {b"[" * 5_000 + b"]" * 5_000, b'{"a":' * 120 + b"1" + b"}" * 120, b"[NaN]", b'{"x": Infinity}',
                  b"[-1e999]", b'{"n": ' + b"9" * 5_000 + b"}", b'"\\ud800"', b'{"\\udc00": 1}', b'"\xed\xa0\x80"',
                  b"{", b"\x00", b'{"name": "a", "count": 1e400}'}


@pytest.fixture(scope="module")
def project_root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "motia_py.toml").write_text('[backend]\nurl = "memory://"\n[server]\nbody_limit_bytes = 65536\n')
        (root / "flows").mkdir()
        (root / "flows" / "f.toml").write_text('exit_topics = []\n')
        for name, source in STEPS.items():
            (root / "steps").mkdir(exist_ok=True)
            (root / "steps" / name).write_text(textwrap.dedent(source))
        yield root


class Served:
    """A runtime on its own event loop, its ASGI app, and (``real=True``) a uvicorn server."""

    def __init__(self, root: Path, *, real: bool) -> None:
        self.loop = asyncio.new_event_loop()
        settings = load_settings(root, flags={"port": 0}, env={})
        project, findings = load_project(settings)
        assert not [f for f in findings if f.severity.value == "error"], findings
        self.runtime = Runtime(project, backend_for(settings), cron=False, poll_s=0.01)
        self.loop.run_until_complete(self.runtime.start())
        self.server = None
        if real:
            self.server = self.run(start_server(self.runtime.router, settings, dev=True, port=0))
            self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.server.port}", timeout=10)
        else:
            app = ApiApp(self.runtime.router, body_limit_bytes=settings.body_limit_bytes, dev=True)
            self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def send(self, req: Req) -> httpx.Response:
        headers = {k: v.encode("latin-1") for k, v in req.headers.items()}  # httpx encodes str as ASCII
        return self.run(self.client.request(req.method, req.url, params=req.query, headers=headers,
                                            content=req.body))

    def close(self) -> None:
        self.run(self.client.aclose())
        if self.server is not None:
            self.run(self.server.stop())
        self.run(self.runtime.stop(grace_s=1.0))
        self.loop.close()


def test_the_asgi_app_answers_every_request_with_json_and_never_a_5xx(project_root: Path) -> None:
    served = Served(project_root, real=False)
    try:
        @settings(FUZZ, max_examples=220)
        @given(req=requests())
        def fuzz(req: Req) -> None:
            check(req, served.send(req))

        fuzz()
        served.run(served.runtime.wait_idle(timeout_s=10))  # the emitted events were stored: no poison data
    finally:
        served.close()


def test_a_real_server_answers_every_request_with_json_and_never_a_5xx(project_root: Path) -> None:
    served = Served(project_root, real=True)
    try:
        @settings(FUZZ, max_examples=30)
        @given(req=requests())
        def fuzz(req: Req) -> None:
            check(req, served.send(req))

        fuzz()
        for raw in sorted(HOSTILE_BODIES):
            req = Req("POST", "/items", "/items", [], {"content-type": "application/json"}, raw)
            check(req, served.send(req))
    finally:
        served.close()
