"""The sample project in Motia 1.0's format (``tests/motia1_app``): it validates with ``--strict``, and its
API, queue, cron, condition and streamed steps behave as Motia 1.0's docs describe, in the Harness and
behind a real ``motia-py dev`` server."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from motia_py.cli import main
from motia_py.runs import Outcome
from motia_py.streams_client import StreamClient
from motia_py.testing import Harness

from .test_dev import Dev

APP = Path(__file__).parent / "motia1_app"
KEY = {"x-api-key": "secret"}


def test_the_sample_project_validates_strictly(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTIA_PY_DOTENV", "0")  # the project's .env stays out of this test process
    with pytest.raises(SystemExit) as info:
        main(["validate", "--strict", "--project", str(APP)])
    out = capsys.readouterr().out
    assert info.value.code == 0, out
    assert "0 error(s), 0 warning(s)" in out


async def test_greetings_are_streamed_audited_and_summarised() -> None:
    async with Harness(APP, env={}) as h:
        subscription = await h.subscribe("greetings", "default")
        assert await h.request("GET", "/greet", query={"name": "Ann"}) == (
            200, {"name": "Ann", "message": "Hello, Ann!"})  # env={}: no .env variables here
        await h.request("GET", "/greet", query={"name": "Ann"})
        await h.run_until_idle()
        assert await h.state("greetings").get("audit", "Ann") == {"count": 2, "topic": "greeting.created"}
        await h.run_cron("GreetingsSummary")
        status, body = await h.request("GET", "/greetings/summary")
        events = await h.state("greetings").get("stream-events", "Ann")
        await subscription.wait_for(lambda m: m["event"]["type"] == "update")
    assert (status, body) == (200, {"count": 1, "trigger": "http", "streamed": 1,
                                    "latest": {"count": 1, "expression": "*/2 * * * * *"}})
    assert [r.step for r in h.runs_of("GreetingsSummary")] == ["GreetingsSummary#cron", "GreetingsSummary#http"]
    assert [m["event"]["type"] for m in subscription.messages] == ["sync", "create", "update"]
    # the stream trigger ran for the create; the second write stored the same item, so nothing changed
    assert events == [{"type": "create", "stream": "greetings", "message": "Hello, Ann!"}]


async def test_orders_flow_through_middleware_fifo_retries_and_conditions() -> None:
    async with Harness(APP, env={}) as h:
        assert (await h.request("POST", "/orders", json={"id": "o0", "customer": "c1", "amount": 1}))[0] == 401
        for order in ({"id": "o1", "customer": "c1", "amount": 5000}, {"id": "o2", "customer": "c1", "amount": 5,
                                                                      "note": "flaky"},
                      {"id": "o3", "customer": "c1", "amount": 7}):
            status, body = await h.request("POST", "/orders", json=order, headers=KEY)
            assert status == 201 and body["id"] == order["id"]
            assert h.last_response is not None and h.last_response.headers["x-caller"] == "key-holder"
        await h.run_until_idle()
        assert await h.request("GET", "/orders/c1/fulfilled") == (
            200, {"ids": ["o1", "o2", "o3"], "notice": {"orders": 3, "before": 2}})
        log = await h.state("orders").items("log")
        assert await h.request("POST", "/orders/premium", json={"id": "p", "user": {"verified": False}}) == (
            422, {"error": "Request condition not met", "skipped": True})
    assert [r.outcome for r in h.runs_of("FulfilOrder")] == [Outcome.OK, Outcome.RETRIED, Outcome.OK, Outcome.OK]
    # the state trigger ran once per change of 'fulfilled'; its own writes to 'notices' were skipped
    assert [r.outcome for r in h.runs_of("OnFulfilment")].count(Outcome.OK) == 3
    assert h.emitted("customer.notified") == [{"customer": "c1"}] * 3
    premium = [r.outcome for r in h.runs_of("PremiumOrder#queue")]
    assert sorted(premium) == sorted([Outcome.OK, Outcome.SKIPPED, Outcome.SKIPPED])
    assert sorted(log) == ["order.premium:o1", "order.shipped:o1", "order.shipped:o2", "order.shipped:o3"]
    assert log["order.premium:o1"] == {"id": "o1", "via": "queue", "index": 0}
    assert h.emitted("order.premium") == [{"id": "o1", "via": "queue"}]


async def test_step_helpers_builders_and_a_streamed_answer() -> None:
    async with Harness(APP, env={}) as h:
        assert await h.request("POST", "/ping", json={"from": "me"}) == (202, {"queued": True})
        assert await h.request("GET", "/builder", query={"n": "4"}) == (200, {"ok": True})
        await h.run_until_idle()
        assert await h.state("misc").get("pings", "last") == {"from": "me"}
        assert await h.state("misc").get("builder", "last") == {"n": 4}
        await h.run_cron("Ping")
        assert await h.state("misc").get("pings", "last") is None  # the nightly cron cleared it
        status, text = await h.request("POST", "/events", raw_body=b"count=2&word=hi",
                                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 200 and h.last_response is not None
    assert h.last_response.headers["content-type"] == "text/event-stream"
    assert text == ('event: item\ndata: {"i": 0, "word": "hi"}\n\n'
                    'event: item\ndata: {"i": 1, "word": "hi"}\n\nevent: done\ndata: {}\n\n')


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    root = tmp_path / "app"
    shutil.copytree(APP, root, ignore=shutil.ignore_patterns("__pycache__", ".motia"))
    d = Dev(root, backend="sqlite:///.motia/motia.db")
    try:
        yield d
    finally:
        assert d.close() == 0, d.log()


async def greet_while_subscribed(dev: Dev, name: str) -> list[str]:
    """Join the greetings stream over the dev server's WebSocket, greet ``name``, return the event types."""
    async with StreamClient(f"ws://127.0.0.1:{dev.port}") as client:
        group = await client.subscribe_group("greetings", "default")
        await group.next()  # sync
        status = await asyncio.to_thread(lambda: dev.client.get(f"/greet?name={name}").status_code)
        created = await group.wait_for(lambda m: m["event"]["type"] == "create")
        assert status == 200 and created["event"]["data"]["message"] == f"Howdy, {name}!"
        return [m["event"]["type"] for m in group.messages]


@pytest.mark.slow
def test_the_sample_project_runs_under_motia_py_dev(dev: Dev) -> None:
    assert dev.get("/env") == (200, {"prefix": "Howdy", "app": "SampleApp"})  # from the project's .env
    assert asyncio.run(greet_while_subscribed(dev, "Ann")) == ["sync", "create"]
    dev.until("/greetings/summary", (200, {"count": 1, "trigger": "http", "streamed": 1,  # the stream trigger ran
                                           "latest": {"count": 1, "expression": "*/2 * * * * *"}}), 15)  # the cron
    assert dev.client.post("/orders", json={"id": "x", "customer": "c", "amount": 1}).status_code == 401
    for order in ({"id": "o1", "customer": "c1", "amount": 5000}, {"id": "o2", "customer": "c1", "amount": 5,
                                                                  "note": "flaky"},
                  {"id": "o3", "customer": "c1", "amount": 7}):
        assert dev.client.post("/orders", json=order, headers=KEY).status_code == 201
    dev.until("/orders/c1/fulfilled", (200, {"ids": ["o1", "o2", "o3"], "notice": {"orders": 3, "before": 2}}))
    skipped = dev.client.post("/orders/premium", json={"id": "p", "user": {"verified": False}})
    assert (skipped.status_code, skipped.json()) == (422, {"error": "Request condition not met", "skipped": True})
    premium = dev.client.post("/orders/premium", json={"id": "p", "user": {"verified": True}})
    assert (premium.status_code, premium.json()) == (200, {"premium": True, "path": "/orders/premium"})
    with dev.client.stream("POST", "/events", content=b"count=3&word=yo",
                           headers={"content-type": "application/x-www-form-urlencoded"}) as response:
        events = "".join(response.iter_text())
    assert response.headers["content-type"] == "text/event-stream"
    assert events.count("event: item") == 3 and events.endswith("event: done\ndata: {}\n\n")
    assert dev.client.get("/builder?n=2").json() == {"ok": True}
    paths = dev.client.get("/openapi.json").json()["paths"]
    assert {"/greet", "/greetings/summary", "/orders", "/orders/premium", "/events", "/ping"} <= set(paths)
    dev.write("steps/misc/env_step.py", (dev.root / "steps/misc/env_step.py").read_text().replace(
        '"app": os.environ', '"edited": True, "app": os.environ'))  # hot reload of a 1.0 step
    dev.until("/env", (200, {"prefix": "Howdy", "edited": True, "app": "SampleApp"}))
