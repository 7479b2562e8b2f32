"""``motia_py.asgi.create_app`` mounted in real FastAPI and Starlette apps, served by uvicorn on a free port
and called with httpx; the project's runtime follows the host application's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from motia_py.asgi import MotiaApp, create_app, route_path
from motia_py.errors import GraphError, MotiaError

from .conftest import ProjectFactory
from .processes import start_process, stop

PLACE_ORDER = """
from pydantic import BaseModel, Field

class Order(BaseModel):
    item: str
    qty: int = Field(gt=0)

config = {"type": "api", "name": "PlaceOrder", "path": "/orders", "method": "POST", "bodySchema": Order,
          "emits": ["order.placed"], "flows": ["orders"]}

async def handler(req, ctx):
    order_id = "o-" + req.body.item
    await ctx.state.set("orders", order_id, {"status": "placed", "qty": req.body.qty})
    await ctx.emit({"topic": "order.placed", "data": {"id": order_id}})
    return {"status": 200, "body": {"id": order_id}}
"""

FULFIL = """
config = {"type": "event", "name": "Fulfil", "subscribes": ["order.placed"], "emits": [], "flows": ["orders"]}

async def handler(input, ctx):
    await ctx.state.update("orders", input["id"], lambda order: {**order, "status": "fulfilled"})
"""

GET_ORDER = """
config = {"type": "api", "name": "GetOrder", "path": "/orders/{id}", "method": "GET", "emits": [], "flows": ["orders"]}

async def handler(req, ctx):
    order = await ctx.state.get("orders", req.pathParams["id"])
    return {"status": 200, "body": order} if order else {"status": 404, "body": {"error": "no such order"}}
"""

SQLITE = '[backend]\nurl = "sqlite:///.motia/motia.db"\n[worker]\ngrace_period = 5\n'


@pytest.fixture
def shop(make_project: ProjectFactory) -> Path:
    return make_project({"steps/place_order.step.py": PLACE_ORDER, "steps/fulfil.step.py": FULFIL,
                         "steps/get_order.step.py": GET_ORDER})


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (pytest owns the process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with uvicorn (lifespan on) on a free port; yield a client for it; shut down after."""
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), f"uvicorn exited: {task.exception() if task.done() else ''}"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def eventually(probe: Callable[[], Awaitable[Any]], timeout_s: float = 20.0) -> Any:
    """Poll ``probe`` until it returns something truthy (a worker delivers asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {timeout_s} s")
        await asyncio.sleep(0.02)
    return value


def fastapi_host(motia: MotiaApp) -> FastAPI:
    app = FastAPI(lifespan=motia.lifespan)

    @app.get("/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    app.mount("/motia", motia)
    return app


async def test_fastapi_app_serves_mounted_steps_with_validation_and_runs_their_emits(shop: Path) -> None:
    motia = create_app(shop)
    async with served(fastapi_host(motia)) as client:
        assert motia.started and motia.runtime is not None
        assert (await client.get("/health")).json() == {"ok": True}
        ok = await client.post("/motia/orders", json={"item": "book", "qty": 2})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"id": "o-book"}
        bad = await client.post("/motia/orders", json={"item": "pen", "qty": 0})
        assert bad.status_code == 422
        assert bad.json()["error"] == "validation"
        assert [f["loc"] for f in bad.json()["fields"]] == [["qty"]]
        assert (await client.post("/motia/orders", content=b"{nope")).status_code == 400
        await motia.runtime.wait_idle()
        order = await client.get("/motia/orders/o-book")
        assert order.json() == {"status": "fulfilled", "qty": 2}
        assert (await client.get("/motia/orders/o-pen")).status_code == 404  # the 422 emitted nothing
        assert "/orders/{id}" in (await client.get("/motia/openapi.json")).json()["paths"]
        assert (await client.get("/orders/o-book")).status_code == 404  # only under the mount point
    assert not motia.started and motia.runtime is None  # the host's shutdown stopped the runtime


async def test_mounted_app_without_the_hosts_lifespan_answers_503_naming_the_fix(shop: Path) -> None:
    motia = create_app(shop)
    async with served(Starlette(routes=[Mount("/motia", motia)])) as client:
        response = await client.post("/motia/orders", json={"item": "book", "qty": 1})
    assert response.status_code == 503
    assert "lifespan=motia_app.lifespan" in response.json()["message"]
    assert not motia.started


async def test_starlette_lifespan_of_its_own_runs_the_project_with_running(shop: Path) -> None:
    motia = create_app(shop)
    seen: list[bool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with motia.running():
            seen.append(motia.started)
            yield

    async with served(Starlette(routes=[Mount("/api/v1", motia)], lifespan=lifespan)) as client:
        assert (await client.post("/api/v1/orders", json={"item": "cup", "qty": 1})).status_code == 200
        assert motia.runtime is not None
        await motia.runtime.wait_idle()
        assert (await client.get("/api/v1/orders/o-cup")).json()["status"] == "fulfilled"
    assert seen == [True] and not motia.started


async def test_app_served_alone_runs_its_own_lifespan_and_can_start_again(shop: Path) -> None:
    motia = create_app(shop)
    for item in ("first", "second"):  # a fresh runtime on every start (test clients start apps repeatedly)
        async with served(motia) as client:
            assert (await client.post("/orders", json={"item": item, "qty": 1})).status_code == 200
            assert motia.runtime is not None
            await motia.runtime.wait_idle()
            assert (await client.get(f"/orders/o-{item}")).json()["status"] == "fulfilled"
        assert not motia.started


async def test_mounted_workbench_and_metrics_answer_under_the_mount_point(shop: Path) -> None:
    motia = create_app(shop, workbench=True, metrics=True, dev=True)
    async with served(fastapi_host(motia)) as client:
        assert (await client.post("/motia/orders", json={"item": "a", "qty": 1})).status_code == 200
        assert (await client.post("/motia/orders", json={"item": "b", "qty": -1})).status_code == 422
        assert motia.runtime is not None
        await motia.runtime.wait_idle()
        graph = await client.get("/motia/__workbench/api/graph")
        assert graph.status_code == 200
        assert {s["name"] for s in graph.json()["steps"]} == {"PlaceOrder", "Fulfil", "GetOrder"}
        text = (await client.get("/motia/metrics")).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("motia_http_requests_total", (("method", "POST"), ("route", "/orders"), ("status", "200")))] == 1
    assert samples[("motia_http_requests_total", (("method", "POST"), ("route", "/orders"), ("status", "422")))] == 1
    assert samples[("motia_runs_total", (("kind", "event"), ("outcome", "ok"), ("step", "Fulfil")))] == 1


@pytest.mark.slow
async def test_app_without_workers_enqueues_for_a_separate_start_no_http_worker(make_project: ProjectFactory
                                                                                ) -> None:
    root = make_project({"motia_py.toml": SQLITE, "steps/place_order.step.py": PLACE_ORDER,
                         "steps/fulfil.step.py": FULFIL, "steps/get_order.step.py": GET_ORDER})
    motia = create_app(root, workers=False)
    async with served(fastapi_host(motia)) as client:
        assert (await client.post("/motia/orders", json={"item": "lamp", "qty": 3})).status_code == 200
        assert motia.runtime is not None
        assert (await motia.runtime.backend.stats()).per_step == {"Fulfil": 1}  # queued, nobody here runs it
        assert (await client.get("/motia/orders/o-lamp")).json()["status"] == "placed"
        worker = start_process(root, "--no-http")
        try:
            async def fulfilled() -> bool:
                return bool((await client.get("/motia/orders/o-lamp")).json()["status"] == "fulfilled")

            await eventually(fulfilled)
        finally:
            assert stop(worker) == 0


def test_create_app_refuses_what_could_not_work(shop: Path, make_project: ProjectFactory) -> None:
    with pytest.raises(MotiaError, match="shared backend"):
        create_app(shop, workers=False)  # memory://: nothing else could run the events
    with pytest.raises(MotiaError, match="workbench_token"):
        create_app(shop, workbench=True)
    broken = make_project({"steps/bad.step.py": 'config = {"type": "event", "name": "Bad"}\n'},
                          root=shop.parent / "broken")
    with pytest.raises(GraphError):
        create_app(broken)


@pytest.mark.parametrize(("path", "root", "expected"), [
    ("/motia/orders", "/motia", "/orders"),
    ("/motia", "/motia", "/"),
    ("/motiax/orders", "/motia", "/motiax/orders"),
    ("/orders", "", "/orders"),
])
def test_route_path_is_relative_to_the_mount_point(path: str, root: str, expected: str) -> None:
    assert route_path({"type": "http", "path": path, "root_path": root}) == expected
