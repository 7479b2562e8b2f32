"""Prometheus metrics: what is counted per run, who may scrape ``/metrics``, and ``curl /metrics`` against real
``motia-py start`` and ``motia-py dev`` processes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from motia_py.http import ApiApp
from motia_py.metrics import Metrics, install_metrics
from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings

from .conftest import ProjectFactory
from .processes import start_process, stop, wait_started, wait_until

DOCS = Path(__file__).resolve().parents[1] / "docs" / "observability.md"

OK_STEP = """
config = {"type": "event", "name": "Ok", "subscribes": ["work"], "emits": [], "flows": ["f"]}

async def handler(input, ctx):
    pass
"""

FLAKY_STEP = """
config = {"type": "event", "name": "Flaky", "subscribes": ["work"], "emits": [], "flows": ["f"],
          "infrastructure": {"queue": {"maxRetries": 1}}}

async def handler(input, ctx):
    raise RuntimeError("always fails")
"""

TICK_STEP = """
config = {"type": "cron", "name": "Tick", "cron": "0 0 1 1 *", "emits": [], "flows": ["f"]}

async def handler(ctx):
    pass
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` of a text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest_asyncio.fixture
async def measured(make_project: ProjectFactory) -> AsyncIterator[tuple[Runtime, Metrics]]:
    """A runtime on memory:// with metrics attached; cron is fired by hand; the clock stands at 1000.0."""
    root = make_project({"flows/f.toml": 'entry_topics = ["work"]\n', "steps/ok.step.py": OK_STEP,
                         "steps/flaky.step.py": FLAKY_STEP, "steps/tick.step.py": TICK_STEP})
    settings = load_settings(root, env={})
    project, findings = load_project(settings)
    require_valid(project, findings)
    runtime = Runtime(project, backend_for(settings), clock=lambda: 1000.0, rand=lambda: 0.0, cron=False,
                      poll_s=0.05)
    metrics = Metrics()
    metrics.attach(runtime)
    async with runtime:
        yield runtime, metrics


async def test_runs_outcomes_retries_and_durations_are_counted_per_step(measured: tuple[Runtime, Metrics]) -> None:
    runtime, metrics = measured
    await runtime.router.emit("work", {"n": 1})
    await runtime.wait_idle()
    s = samples_of((await metrics.render()).decode())
    assert value(s, "motia_runs_total", step="Ok", kind="event", outcome="ok") == 1
    assert value(s, "motia_runs_total", step="Flaky", kind="event", outcome="retried") == 1
    assert value(s, "motia_runs_total", step="Flaky", kind="event", outcome="dead") == 1
    assert value(s, "motia_retries_total", step="Flaky") == 1
    assert value(s, "motia_handler_duration_seconds_count", step="Flaky", kind="event") == 2
    assert value(s, "motia_handler_duration_seconds_count", step="Ok", kind="event") == 1
    assert value(s, "motia_queue_deliveries", state="dead") == 1
    assert value(s, "motia_queue_deliveries", state="ready") == 0
    assert value(s, "motia_queue_depth", step="Ok") == 0
    assert value(s, "motia_backend_up") == 1


async def test_queue_depth_is_read_per_step_at_scrape_time(measured: tuple[Runtime, Metrics]) -> None:
    runtime, metrics = measured
    assert runtime.worker is not None
    await runtime.worker.stop(1.0)  # nothing consumes: what is published stays queued
    await runtime.router.emit("work", {"n": 1})
    await runtime.router.emit("work", {"n": 2}, delay_s=60)
    s = samples_of((await metrics.render()).decode())
    assert value(s, "motia_queue_depth", step="Ok") == 2
    assert value(s, "motia_queue_depth", step="Flaky") == 2
    assert value(s, "motia_queue_depth", step="Tick") == 0
    assert value(s, "motia_queue_deliveries", state="ready") == 2
    assert value(s, "motia_queue_deliveries", state="delayed") == 2


async def test_cron_lag_is_the_time_from_the_scheduled_tick_to_its_run(measured: tuple[Runtime, Metrics]) -> None:
    runtime, metrics = measured
    await runtime.router.fire_cron("Tick", datetime.fromtimestamp(997.5, UTC))  # the clock says 1000.0
    await runtime.wait_idle()
    s = samples_of((await metrics.render()).decode())
    assert value(s, "motia_runs_total", step="Tick", kind="cron", outcome="ok") == 1
    assert value(s, "motia_cron_lag_seconds_count", step="Tick") == 1
    assert value(s, "motia_cron_lag_seconds_sum", step="Tick") == pytest.approx(2.5)
    assert value(s, "motia_cron_lag_seconds_bucket", step="Tick", le="2.5") == 1
    assert value(s, "motia_cron_lag_seconds_bucket", step="Tick", le="1.0") == 0


async def test_unrouted_events_are_counted_per_topic(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": """
        config = {"type": "api", "name": "A", "path": "/a", "method": "POST", "emits": ["nobody.listens"],
                  "flows": ["f"]}
        async def handler(req, ctx):
            await ctx.emit({"topic": "nobody.listens", "data": {}})
            return {"status": 200, "body": {}}
    """})
    async with served_app(root, {}, dev=True) as (client, _):
        assert (await client.post("/a")).status_code == 200
        s = samples_of((await client.get("/metrics")).text)
    assert value(s, "motia_unrouted_events_total", topic="nobody.listens") == 1
    assert value(s, "motia_http_requests_total", method="POST", route="/a", status="200") == 1


# -- who may scrape ----------------------------------------------------------------------------------

API_STEP = """
config = {"type": "api", "name": "Item", "path": "/items/{id}", "method": "GET", "emits": [], "flows": ["f"]}

async def handler(req, ctx):
    return {"status": 200, "body": {"id": req.pathParams["id"]}}
"""


@contextlib.asynccontextmanager
async def served_app(root: Path, env: dict[str, str], *, dev: bool, client: str = "127.0.0.1"
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, Metrics | None]]:
    """An ApiApp with metrics installed, called in-process through httpx from the address ``client``."""
    settings = load_settings(root, env=env)
    project, _ = load_project(settings)
    runtime = Runtime(project, backend_for(settings), cron=False, poll_s=0.05)
    async with runtime:
        app = ApiApp(runtime.router)
        metrics = install_metrics(app, runtime, settings, dev=dev)
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://motia.test") as http:
            yield http, metrics


@pytest.fixture
def items(make_project: ProjectFactory) -> Path:
    return make_project({"steps/item.step.py": API_STEP})


async def test_start_serves_metrics_only_when_enabled(items: Path) -> None:
    async with served_app(items, {}, dev=False) as (client, metrics):
        assert metrics is None
        assert (await client.get("/metrics")).status_code == 404


async def test_start_without_a_token_answers_loopback_clients_only(items: Path) -> None:
    env = {"MOTIA_PY_SERVER_METRICS": "true"}
    async with served_app(items, env, dev=False) as (client, _):
        assert (await client.get("/items/7")).status_code == 200
        local = await client.get("/metrics")
    assert local.status_code == 200
    assert local.headers["content-type"].startswith("text/plain")
    assert value(samples_of(local.text), "motia_http_requests_total", method="GET", route="/items/{id}",
                 status="200") == 1
    async with served_app(items, env, dev=False, client="10.1.2.3") as (client, _):
        remote = await client.get("/metrics")
    assert remote.status_code == 403
    assert "metrics_token" in remote.json()["message"]


async def test_a_metrics_token_is_required_from_every_address(items: Path) -> None:
    env = {"MOTIA_PY_SERVER_METRICS": "1", "MOTIA_PY_METRICS_TOKEN": "s3cret"}
    async with served_app(items, env, dev=False, client="10.1.2.3") as (client, _):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/metrics", headers={"authorization": "Bearer s3cret"})).status_code == 200
    async with served_app(items, env, dev=False) as (client, _):
        assert (await client.get("/metrics")).status_code == 401  # loopback needs it too once it is set


async def test_dev_serves_metrics_to_any_client_that_reaches_it(items: Path) -> None:
    async with served_app(items, {}, dev=True, client="10.1.2.3") as (client, metrics):
        assert metrics is not None
        assert (await client.get("/metrics")).status_code == 200


async def test_an_api_step_answering_get_metrics_keeps_its_route(make_project: ProjectFactory) -> None:
    root = make_project({"steps/m.step.py": """
        config = {"type": "api", "name": "Mine", "path": "/metrics", "method": "GET", "emits": [], "flows": ["f"]}
        async def handler(req, ctx):
            return {"status": 200, "body": {"mine": True}}
    """})
    async with served_app(root, {}, dev=True) as (client, metrics):
        assert metrics is None
        assert (await client.get("/metrics")).json() == {"mine": True}


# -- real processes ----------------------------------------------------------------------------------

START_APP = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n[server]\nmetrics = true\n'
                     '[worker]\ngrace_period = 5\n',
    "steps/enqueue.step.py": """
        config = {"type": "api", "name": "Enqueue", "path": "/work", "method": "POST", "emits": ["work"],
                  "flows": ["f"], "bodySchema": {"type": "object", "required": ["n"],
                                                 "properties": {"n": {"type": "integer"}}}}
        async def handler(req, ctx):
            await ctx.emit({"topic": "work", "data": req.body})
            return {"status": 202, "body": {"queued": True}}
    """,
    "steps/ok.step.py": OK_STEP,
    "steps/every_second.step.py": """
        config = {"type": "cron", "name": "EverySecond", "cron": "* * * * * *", "emits": [], "flows": ["f"]}
        async def handler(ctx):
            pass
    """,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def documented_metric_names() -> set[str]:
    """The metric names the Metrics section of docs/observability.md lists (in its table)."""
    section = DOCS.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(motia_[a-z_]+)`", section, flags=re.MULTILINE))


def scrape(base: str) -> Samples:
    return samples_of(httpx.get(f"{base}/metrics", timeout=5).text)


@pytest.mark.slow
def test_curl_metrics_against_motia_py_start_returns_the_documented_metrics(make_project: ProjectFactory) -> None:
    root = make_project(START_APP)
    port = free_port()
    proc = start_process(root, "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_started(proc)
        assert httpx.post(f"{base}/work", json={"n": 1}, timeout=5).status_code == 202
        assert httpx.post(f"{base}/work", json={"n": "x"}, timeout=5).status_code == 422
        wait_until(lambda: (("motia_runs_total", (("kind", "event"), ("outcome", "ok"), ("step", "Ok")))
                            in scrape(base)), 20, "the event's run to be counted", proc)
        wait_until(lambda: any(name == "motia_cron_lag_seconds_count" for name, _ in scrape(base)), 20,
                   "a cron tick to run", proc)
        curl = subprocess.run(["curl", "-sS", f"{base}/metrics"], capture_output=True, text=True, timeout=10,
                              check=True)
    finally:
        assert stop(proc) == 0
    s = samples_of(curl.stdout)
    names = {name for name, _ in s} | {f.name for f in text_string_to_metric_families(curl.stdout)}
    documented = documented_metric_names()
    assert len(documented) >= 8
    # the parser names counter families without _total (a counter no event touched has no sample yet)
    missing = {d for d in documented if d not in names and d.removesuffix("_total") not in names}
    assert not missing, f"documented but not served: {sorted(missing)}"
    assert value(s, "motia_runs_total", step="Ok", kind="event", outcome="ok") == 1
    assert value(s, "motia_runs_total", step="Enqueue", kind="api", outcome="ok") == 1
    assert value(s, "motia_http_requests_total", method="POST", route="/work", status="202") == 1
    assert value(s, "motia_http_requests_total", method="POST", route="/work", status="422") == 1
    assert value(s, "motia_handler_duration_seconds_count", step="Ok", kind="event") == 1
    assert value(s, "motia_queue_depth", step="Ok") == 0
    assert value(s, "motia_backend_up") == 1


@pytest.mark.slow
def test_motia_py_dev_serves_metrics(make_project: ProjectFactory) -> None:
    root = make_project({"steps/item.step.py": API_STEP})
    port = free_port()
    log = (root / "dev.log").open("w")
    env = {**os.environ, "MOTIA_PY_BACKEND_URL": "memory://"}
    proc = subprocess.Popen([sys.executable, "-m", "motia_py", "dev", "--port", str(port), "--project", str(root)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=root)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/items/1", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 30, "the dev server")
        s = scrape(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert value(s, "motia_http_requests_total", method="GET", route="/items/{id}", status="200") == 1
