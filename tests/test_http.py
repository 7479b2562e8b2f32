"""API steps over HTTP: a real uvicorn server on a free port and a real httpx client, plus the harness.

One project (:data:`APP`) holds an API step per behaviour; each test starts its own runtime and server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from motia_py.findings import Severity
from motia_py.http import HttpServer, start_server
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import Settings, load_settings
from motia_py.state import State
from motia_py.testing import Harness
from tests.conftest import ProjectFactory

CREATE_JOB = """
from pydantic import BaseModel

class Body(BaseModel):
    name: str
    count: int = 1

config = {"type": "api", "name": "CreateJob", "path": "/jobs", "method": "POST", "bodySchema": Body,
          "responseSchema": {201: {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}},
          "emits": ["job.created"], "flows": ["f"]}

async def handler(req, ctx):
    await ctx.emit({"topic": "job.created", "data": {"name": req.body.name, "count": req.body.count}})
    return {"status": 201, "body": {"id": "j1"}, "headers": {"x-custom": "1"}}
"""

CONSUMER = """
config = {"type": "event", "name": "Consumer", "subscribes": ["job.created"], "emits": [], "flows": ["f"]}

async def handler(input, ctx):
    await ctx.state.set("jobs", input["name"], input)
"""

DICT_BODY = """
config = {"type": "api", "name": "CreateNote", "path": "/notes", "method": "POST", "flows": ["f"],
          "bodySchema": {"type": "object", "required": ["title"], "additionalProperties": False,
                         "properties": {"title": {"type": "string"},
                                        "tags": {"type": "array", "items": {"type": "string"}}}}}

async def handler(req, ctx):
    same = req.body is req["body"] is req.get("body", {})
    return {"status": 200, "body": {"kind": type(req.body).__name__, "same": same, "echo": req.body,
                                    "raw": req.rawBody}}
"""

GET_JOB = """
config = {"type": "api", "name": "GetJob", "path": "/jobs/:id", "method": "GET", "flows": ["f"]}

async def handler(req, ctx):
    return {"status": 200, "body": {"pathParams": req["pathParams"], "queryParams": req["queryParams"]}}
"""

GET_ITEM = """
config = {"type": "api", "name": "GetItem", "path": "/shops/{shop}/items/{item_id}", "method": "GET",
          "flows": ["f"]}

async def handler(req, ctx):
    return {"status": 200, "body": req.path_params}
"""

SEARCH = """
config = {"type": "api", "name": "Search", "path": "/search", "method": "GET", "flows": ["f"],
          "queryParams": ["tag", {"name": "q", "description": "free text"}]}

async def handler(req, ctx):
    return {"status": 200, "body": req.queryParams}
"""

GUARDED = """
async def outer(req, ctx, next):
    req["trail"] = ["outer"]
    if req["headers"].get("x-token") != "let-me-in":
        return {"status": 401, "body": {"error": "unauthorized", "trail": req["trail"]}}
    res = await next()
    req["trail"].append("outer-after")
    res["headers"] = {**res.get("headers", {}), "x-outer": "seen"}
    return res

async def inner(req, ctx, next):
    req["trail"].append("inner")
    res = await next()
    req["trail"].append("inner-after")
    return res

config = {"type": "api", "name": "Guarded", "path": "/guarded", "method": "GET", "flows": ["f"],
          "middleware": [outer, inner]}

async def handler(req, ctx):
    req["trail"].append("handler")
    await ctx.state.set("calls", "guarded", True)
    return {"status": 200, "body": {"trail": req["trail"]}}
"""

BOOM = """
config = {"type": "api", "name": "Boom", "path": "/boom", "method": "GET", "flows": ["f"]}

async def handler(req, ctx):
    raise ValueError("secret detail 42")
"""

MODEL_RETURN = """
from pydantic import BaseModel

class Out(BaseModel):
    ok: bool
    n: int

config = {"type": "api", "name": "ModelReturn", "path": "/model", "method": "GET", "flows": ["f"]}

async def handler(req, ctx):
    return Out(ok=True, n=3)
"""

BAD_RESPONSE = """
config = {"type": "api", "name": "BadResponse", "path": "/bad-response", "method": "GET", "flows": ["f"],
          "responseSchema": {200: {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}

async def handler(req, ctx):
    return {"status": 200, "body": {"id": 5}}
"""

APP = {
    "steps/create_job.step.py": CREATE_JOB,
    "steps/consumer.step.py": CONSUMER,
    "steps/dict_body.step.py": DICT_BODY,
    "steps/get_job.step.py": GET_JOB,
    "steps/get_item.step.py": GET_ITEM,
    "steps/search.step.py": SEARCH,
    "steps/guarded.step.py": GUARDED,
    "steps/boom.step.py": BOOM,
    "steps/model_return.step.py": MODEL_RETURN,
    "steps/bad_response.step.py": BAD_RESPONSE,
}


@dataclass(slots=True)
class Served:
    """A runtime with its HTTP server and a client pointed at it."""

    settings: Settings
    rt: Runtime
    server: HttpServer
    client: httpx.AsyncClient


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
def app_root(make_project: ProjectFactory) -> Path:
    return make_project(APP)


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(root, dev=False, **flags)`` starts a runtime and a server on a free port; all stop after."""
    started: list[Served] = []

    async def start(root: Path, *, dev: bool = False, **flags: Any) -> Served:
        settings = load_settings(root, flags={"backend_url": "memory://", **flags}, env={})
        project, findings = load_project(settings)
        assert [f for f in findings if f.severity is Severity.ERROR] == []
        rt = Runtime(project, backend_for(settings), cron=False, poll_s=0.05)
        await rt.start()
        try:
            server = await start_server(rt.router, settings, dev=dev, port=0)
        except BaseException:
            await rt.stop(grace_s=1.0)
            raise
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0)
        served = Served(settings, rt, server, client)
        started.append(served)
        return served

    yield start
    for s in reversed(started):
        await s.client.aclose()
        await s.server.stop()
        await s.rt.stop(grace_s=1.0)


@pytest_asyncio.fixture
async def app(serve: Serve, app_root: Path) -> Served:
    return await serve(app_root)


# -- bodies ------------------------------------------------------------------------------------------


async def test_valid_body_answers_handler_status_headers_and_body(app: Served) -> None:
    r = await app.client.post("/jobs", json={"name": "a", "count": 2})
    assert r.status_code == 201
    assert r.json() == {"id": "j1"}
    assert r.headers["x-custom"] == "1"
    assert len(r.headers["x-trace-id"]) > 0
    assert r.headers["content-type"] == "application/json"


async def test_invalid_body_answers_422_naming_every_bad_field(app: Served) -> None:
    r = await app.client.post("/jobs", json={"count": "many"})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation"
    assert sorted(f["loc"] for f in body["fields"]) == [["count"], ["name"]]
    assert all(isinstance(f["msg"], str) and f["msg"] for f in body["fields"])


async def test_empty_body_is_validated_as_an_empty_object(app: Served) -> None:
    r = await app.client.post("/jobs")
    assert r.status_code == 422
    assert [f["loc"] for f in r.json()["fields"]] == [["name"]]


async def test_invalid_json_answers_400(app: Served) -> None:
    r = await app.client.post("/jobs", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_json"


async def test_json_schema_body_gives_the_handler_a_dict(app: Served) -> None:
    r = await app.client.post("/notes", json={"title": "t", "tags": ["x"]})
    assert r.status_code == 200
    body = r.json()
    assert body["kind"] == "dict"
    assert body["same"] is True  # req.body, req["body"] and req.get("body", {}) are one object
    assert body["echo"] == {"title": "t", "tags": ["x"]}
    assert json.loads(body["raw"]) == {"title": "t", "tags": ["x"]}


async def test_json_schema_body_failures_name_each_field(app: Served) -> None:
    r = await app.client.post("/notes", json={"tags": ["ok", 7]})
    assert r.status_code == 422
    assert sorted(f["loc"] for f in r.json()["fields"]) == [["tags", 1], ["title"]]


async def test_body_over_the_limit_answers_413(serve: Serve, app_root: Path) -> None:
    served = await serve(app_root, body_limit_bytes=1000)
    big = {"name": "x" * 2000}
    r = await served.client.post("/jobs", json=big)
    assert r.status_code == 413
    assert r.json() == {"error": "payload_too_large", "limit": 1000}
    assert (await served.client.post("/jobs", json={"name": "small"})).status_code == 201


async def test_chunked_body_over_the_limit_answers_413(serve: Serve, app_root: Path) -> None:
    served = await serve(app_root, body_limit_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the server must count as it reads
        yield b'{"name": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    r = await served.client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


# -- routing and parameters ------------------------------------------------------------------------


async def test_colon_path_params_reach_the_handler(app: Served) -> None:
    r = await app.client.get("/jobs/j-42")
    assert r.status_code == 200
    assert r.json() == {"pathParams": {"id": "j-42"}, "queryParams": {}}


async def test_brace_path_params_reach_the_handler(app: Served) -> None:
    r = await app.client.get("/shops/s1/items/i%202")
    assert r.status_code == 200
    assert r.json() == {"shop": "s1", "item_id": "i 2"}


async def test_query_params_single_and_repeated(app: Served) -> None:
    r = await app.client.get("/search", params=[("q", "hello"), ("tag", "a"), ("tag", "b")])
    assert r.status_code == 200
    assert r.json() == {"q": "hello", "tag": ["a", "b"]}


async def test_unknown_path_answers_404(app: Served) -> None:
    r = await app.client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


async def test_wrong_method_answers_405(app: Served) -> None:
    r = await app.client.delete("/jobs")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


async def test_server_binds_loopback_by_default(app: Served) -> None:
    assert app.settings.host == "127.0.0.1"
    hosts = {sock.getsockname()[0] for s in app.server.server.servers for sock in s.sockets}
    assert hosts == {"127.0.0.1"}


# -- middleware ----------------------------------------------------------------------------------------


async def test_middleware_runs_first_listed_outermost(app: Served) -> None:
    r = await app.client.get("/guarded", headers={"x-token": "let-me-in"})
    assert r.status_code == 200
    assert r.json() == {"trail": ["outer", "inner", "handler", "inner-after", "outer-after"]}
    assert r.headers["x-outer"] == "seen"
    assert await State(app.rt.backend, "f").get("calls", "guarded") is True


async def test_middleware_can_answer_without_calling_the_handler(app: Served) -> None:
    r = await app.client.get("/guarded")
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized", "trail": ["outer"]}
    assert "x-trace-id" in r.headers
    assert await State(app.rt.backend, "f").get("calls", "guarded") is None


# -- emits -------------------------------------------------------------------------------------------


async def test_emitted_event_is_processed_by_its_subscriber(app: Served) -> None:
    r = await app.client.post("/jobs", json={"name": "build", "count": 3})
    assert r.status_code == 201
    await app.rt.wait_idle(timeout_s=10)
    assert await State(app.rt.backend, "f").get("jobs", "build") == {"name": "build", "count": 3}


async def test_rejected_body_emits_nothing(app: Served) -> None:
    assert (await app.client.post("/jobs", json={"name": 1})).status_code == 422
    assert (await app.client.post("/jobs", json={"name": "later"})).status_code == 201
    await app.rt.wait_idle(timeout_s=10)
    assert list(await State(app.rt.backend, "f").items("jobs")) == ["later"]


# -- responses and failures ----------------------------------------------------------------------------


async def test_pydantic_model_return_answers_200(app: Served) -> None:
    r = await app.client.get("/model")
    assert r.status_code == 200
    assert r.json() == {"ok": True, "n": 3}


async def test_handler_failure_in_start_mode_hides_the_exception(app: Served) -> None:
    r = await app.client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    assert body == {"error": "internal", "traceId": body["traceId"]}
    assert body["traceId"] and r.headers["x-trace-id"] == body["traceId"]
    assert "secret" not in r.text and "ValueError" not in r.text


async def test_handler_failure_in_dev_mode_shows_the_message(serve: Serve, app_root: Path) -> None:
    served = await serve(app_root, dev=True)
    r = await served.client.get("/boom")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal"
    assert body["traceId"] == r.headers["x-trace-id"]
    assert body["message"] == "ValueError: secret detail 42"


async def test_response_schema_violation_in_dev_answers_500(serve: Serve, app_root: Path) -> None:
    served = await serve(app_root, dev=True)
    r = await served.client.get("/bad-response")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "response_validation"
    assert [f["loc"] for f in body["fields"]] == [["id"]]
    ok = await served.client.post("/jobs", json={"name": "a"})  # a conforming response passes in dev
    assert ok.status_code == 201


async def test_response_schema_is_not_checked_in_start_mode(app: Served) -> None:
    r = await app.client.get("/bad-response")
    assert r.status_code == 200
    assert r.json() == {"id": 5}


# -- the harness runs the same pipeline without a server -------------------------------------------------


async def test_harness_request_validates_the_body(app_root: Path) -> None:
    async with Harness(app_root, env={}) as h:
        status, body = await h.request("POST", "/jobs", json={"count": "x"})
    assert status == 422
    assert body["error"] == "validation"
    assert sorted(f["loc"] for f in body["fields"]) == [["count"], ["name"]]


async def test_harness_request_runs_middleware(app_root: Path) -> None:
    async with Harness(app_root, env={}) as h:
        denied = await h.request("GET", "/guarded")
        assert await h.state("f").get("calls", "guarded") is None
        allowed = await h.request("GET", "/guarded", headers={"x-token": "let-me-in"})
        assert h.last_response is not None and h.last_response.headers["x-outer"] == "seen"
    assert denied == (401, {"error": "unauthorized", "trail": ["outer"]})
    assert allowed == (200, {"trail": ["outer", "inner", "handler", "inner-after", "outer-after"]})


async def test_harness_request_emits_are_processed_after_run_until_idle(app_root: Path) -> None:
    async with Harness(app_root, env={}) as h:
        status, body = await h.request("POST", "/jobs", json={"name": "n1"})
        assert (status, body) == (201, {"id": "j1"})
        await h.run_until_idle()
        assert h.emitted("job.created") == [{"name": "n1", "count": 1}]
        assert await h.state("f").get("jobs", "n1") == {"name": "n1", "count": 1}
        assert [(r.step, r.kind) for r in h.runs] == [("CreateJob", "api"), ("Consumer", "event")]


async def test_harness_request_params_and_limits(make_project: ProjectFactory) -> None:
    root = make_project({
        **APP,
        "motia_py.toml": '[backend]\nurl = "memory://"\n[server]\nbody_limit_bytes = 1000\n',
    })
    async with Harness(root, env={}) as h:
        assert await h.request("GET", "/jobs/7", query={"x": "1"}) == (
            200, {"pathParams": {"id": "7"}, "queryParams": {"x": "1"}})
        assert (await h.request("POST", "/jobs", json={"name": "x" * 2000}))[0] == 413
        assert (await h.request("POST", "/jobs", raw_body=b"{oops"))[0] == 400
        assert (await h.request("GET", "/missing"))[0] == 404
        assert (await h.request("PUT", "/jobs/7"))[0] == 405


# -- hostile input: every error is a JSON answer (issue 13) -------------------------------------------

ECHO = """
config = {"type": "api", "name": "Echo", "path": "/echo", "method": "POST", "flows": ["f"]}

async def handler(req, ctx):
    return {"status": 200, "body": {"echo": req.body}}
"""

UNSENDABLE = """
import math

BODIES = {"set": {1, 2}, "nan": {"x": math.nan}, "surrogate": {"x": "\\ud800"}}
HEADERS = {"latin": {"x-name": "\u0416"}, "crlf": {"x-split": "a\\r\\nset-cookie: evil=1"}}

config = {"type": "api", "name": "Unsendable", "path": "/unsendable/:kind", "method": "GET", "flows": ["f"]}

async def handler(req, ctx):
    kind = req.pathParams["kind"]
    if kind == "status":
        return {"status": 42, "body": {}}
    return {"status": 200, "body": BODIES.get(kind, {}), "headers": HEADERS.get(kind, {})}
"""

PAGED = """
config = {"type": "api", "name": "Paged", "path": "/paged", "method": "GET", "flows": ["f"],
          "queryParams": [
              {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100}, "default": 10},
              {"name": "ratio", "schema": {"type": "number"}},
              {"name": "verbose", "schema": {"type": "boolean"}, "default": False},
              {"name": "tag", "schema": {"type": "array", "items": {"type": "string"}}},
              {"name": "owner", "required": True, "description": "who asks"},
          ]}

async def handler(req, ctx):
    return {"status": 200, "body": req.queryParams}
"""

BUGGY_VALIDATOR = """
from pydantic import BaseModel, field_validator

class Body(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def check(cls, value):
        raise TypeError("a bug in the validator")  # pydantic passes TypeError through

config = {"type": "api", "name": "Buggy", "path": "/buggy", "method": "POST", "bodySchema": Body, "flows": ["f"]}

async def handler(req, ctx):
    return {"status": 200, "body": {}}
"""

HOSTILE = {"steps/echo.step.py": ECHO, "steps/unsendable.step.py": UNSENDABLE, "steps/paged.step.py": PAGED,
           "steps/buggy.step.py": BUGGY_VALIDATOR}


@pytest_asyncio.fixture
async def hostile(serve: Serve, make_project: ProjectFactory) -> Served:
    return await serve(make_project(HOSTILE))


def assert_json_error(r: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body: dict[str, Any] = r.json()
    assert body["error"] == error
    return body


@pytest.mark.parametrize("raw", [b"[" * 2_000 + b"]" * 2_000, b'{"a":' * 150 + b"1" + b"}" * 150],
                         ids=["2000-deep", "150-deep"])
async def test_deeply_nested_json_answers_400(hostile: Served, raw: bytes) -> None:
    body = assert_json_error(await hostile.client.post("/echo", content=raw), 400, "invalid_json")
    assert "nested deeper than 100 levels" in body["message"]


async def test_an_integer_of_more_than_4300_digits_answers_400(hostile: Served) -> None:
    body = assert_json_error(await hostile.client.post("/echo", content=b'{"n": ' + b"7" * 5_000 + b"}"),
                             400, "invalid_json")
    assert "more than 4300 digits" in body["message"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
async def test_non_standard_json_numbers_answer_400(hostile: Served, number: str) -> None:
    r = await hostile.client.post("/echo", content=f'{{"x": {number}}}'.encode())
    assert_json_error(r, 400, "invalid_json")
    ok = await hostile.client.post("/echo", content=b'{"x": 1e300}')
    assert ok.status_code == 200 and ok.json() == {"echo": {"x": 1e300}}


@pytest.mark.parametrize("raw", [b'{"x": "\\ud800"}', b'{"x": "\xed\xa0\x80"}', b'{"x": "\xff"}'],
                         ids=["escaped-lone-surrogate", "utf8-encoded-surrogate", "not-utf8"])
async def test_lone_surrogates_and_non_utf8_bodies_answer_400(hostile: Served, raw: bytes) -> None:
    assert_json_error(await hostile.client.post("/echo", content=raw), 400, "invalid_json")
    pair = await hostile.client.post("/echo", content=b'{"x": "\\ud83d\\ude00"}')  # a pair is one character
    assert pair.status_code == 200 and pair.json() == {"echo": {"x": "\U0001f600"}}


@pytest.mark.parametrize("kind", ["set", "nan", "surrogate", "latin", "crlf", "status"])
async def test_a_response_that_cannot_be_sent_answers_json_500_with_a_trace_id(
    hostile: Served, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = await hostile.client.get(f"/unsendable/{kind}")
    body = assert_json_error(r, 500, "internal")
    assert body["traceId"] and r.headers["x-trace-id"] == body["traceId"]
    assert "set-cookie" not in r.headers and "x-split" not in r.headers
    logged = [rec.motia for rec in caplog.records if getattr(rec, "motia", {}).get("trace_id") == body["traceId"]]
    assert logged and logged[0]["level"] == "error"
    assert "InvalidResponseError" in logged[0]["msg"]
    if kind == "crlf":
        assert "CR, LF" in logged[0]["msg"]


async def test_declared_query_params_are_converted_defaulted_and_checked(hostile: Served) -> None:
    r = await hostile.client.get("/paged", params=[("owner", "ada"), ("limit", "25"), ("ratio", "0.5"),
                                                   ("verbose", "true"), ("tag", "a"), ("extra", "kept")])
    assert r.status_code == 200
    assert r.json() == {"owner": "ada", "limit": 25, "ratio": 0.5, "verbose": True, "tag": ["a"], "extra": "kept"}
    r = await hostile.client.get("/paged", params={"owner": "ada"})
    assert r.json() == {"owner": "ada", "limit": 10, "verbose": False}


async def test_bad_query_params_answer_422_naming_each_one(hostile: Served) -> None:
    r = await hostile.client.get("/paged", params=[("limit", "abc"), ("ratio", "nan"), ("verbose", "maybe"),
                                                   ("limit", "3")])
    body = assert_json_error(r, 422, "validation")
    assert sorted(f["loc"] for f in body["fields"]) == [["query", "limit"], ["query", "owner"],
                                                        ["query", "ratio"], ["query", "verbose"]]
    r = await hostile.client.get("/paged", params={"owner": "ada", "limit": "1000"})
    body = assert_json_error(r, 422, "validation")
    assert body["fields"][0]["loc"] == ["query", "limit"] and "100" in body["fields"][0]["msg"]


async def test_405_names_the_allowed_methods(hostile: Served) -> None:
    r = await hostile.client.delete("/paged")
    assert_json_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"


async def test_a_failure_outside_the_handler_still_answers_json_with_a_trace_id(
    hostile: Served, caplog: pytest.LogCaptureFixture
) -> None:
    r = await hostile.client.post("/buggy", json={"name": "x"})
    body = assert_json_error(r, 500, "internal")
    assert r.headers["x-trace-id"] == body["traceId"]
    logged = [rec.motia for rec in caplog.records if getattr(rec, "motia", {}).get("trace_id") == body["traceId"]]
    assert logged and "TypeError: a bug in the validator" in logged[0]["msg"]

    async def broken_route(request: Any) -> Any:
        raise RuntimeError("an extra route's bug")

    hostile.server.app.extra_routes[("GET", "/extra")] = broken_route
    r = await hostile.client.get("/extra")
    assert_json_error(r, 500, "internal")


async def test_in_dev_an_exception_message_with_a_lone_surrogate_still_answers_json(
    serve: Serve, make_project: ProjectFactory
) -> None:
    root = make_project({"steps/odd.step.py": """
        config = {"type": "api", "name": "Odd", "path": "/odd", "method": "GET", "flows": ["f"]}

        async def handler(req, ctx):
            raise ValueError("bad \\udcff byte")
    """})
    served = await serve(root, dev=True)
    r = await served.client.get("/odd")
    body = assert_json_error(r, 500, "internal")
    assert body["traceId"] == r.headers["x-trace-id"]
