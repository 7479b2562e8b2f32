"""Traces: every run recorded against its trace id, the tree, retention, and ``motia-py trace``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from motia_py.backends.base import Backend, TraceRun
from motia_py.cli import main
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.testing import Harness
from motia_py.tracing import TraceSettings, build_tree, render_tree, summarize

from .conftest import ProjectFactory

CHAIN = {
    "flows/f.toml": 'entry_topics = ["start"]\n',
    "steps/a.step.py": """
        config = {"type": "event", "name": "A", "subscribes": ["start"], "emits": ["mid"], "flows": ["f"]}
        async def handler(input, ctx):
            ctx.logger.info("a ran", n=input["n"])
            await ctx.emit("mid", input)
    """,
    "steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 1, "backoff": {"delay": 1, "jitter": False}}}}
        async def handler(input, ctx):
            if input["n"] == 13 or ctx.attempt == 1:
                raise ValueError(f"unlucky {input['n']} attempt {ctx.attempt}")
    """,
}


async def runs_of(backend: Backend, trace_id: str) -> list[dict[str, object]]:
    return [json.loads(r) for r in await backend.traces_get(trace_id)]


async def test_every_run_is_recorded_with_its_outcome_logs_and_emits(make_project: ProjectFactory) -> None:
    async with Harness(make_project(CHAIN)) as h:
        trace = await h.emit("start", {"n": 1})
        await h.run_until_idle()
        assert h.runtime.recorder is not None
        await h.runtime.recorder.flush()
        runs = await runs_of(h.backend, trace)
    by = {(r["step"], r["attempt"]): r for r in runs}
    assert set(by) == {("A", 1), ("B", 1), ("B", 2)}
    a = by[("A", 1)]
    assert a["outcome"] == "ok" and a["topic"] == "start" and a["source"] is None
    assert [e["topic"] for e in a["emitted"]] == ["mid"]  # type: ignore[index]
    assert [line["msg"] for line in a["logs"]] == ["a ran"]  # type: ignore[union-attr]
    assert by[("B", 1)]["outcome"] == "retried" and by[("B", 1)]["error"] == "ValueError: unlucky 1 attempt 1"
    assert by[("B", 2)]["outcome"] == "ok"
    assert by[("B", 1)]["event_id"] == a["emitted"][0]["event_id"]  # type: ignore[index]
    assert summarize(trace, runs)["status"] == "retried"  # type: ignore[arg-type]
    [root] = build_tree(runs)  # type: ignore[arg-type]
    assert root["step"] == "A" and [c["step"] for c in root["children"]] == ["B", "B"]
    text = render_tree(runs)  # type: ignore[arg-type]
    assert text.splitlines()[0].startswith("A <- start") and "ValueError: unlucky 1" in text


async def test_a_dead_lettered_trace_is_failed(make_project: ProjectFactory) -> None:
    async with Harness(make_project(CHAIN)) as h:
        trace = await h.emit("start", {"n": 13})
        await h.run_until_idle()
        assert h.runtime.recorder is not None
        await h.runtime.recorder.flush()
        summary = summarize(trace, await runs_of(h.backend, trace))  # type: ignore[arg-type]
    assert summary["status"] == "failed" and summary["steps"] == ["A", "B"] and summary["runs"] == 3


async def test_api_runs_are_recorded_and_their_events_join_the_trace(make_project: ProjectFactory) -> None:
    root = make_project({**CHAIN, "steps/api.step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["start"],
                  "flows": ["f"]}
        async def handler(req, ctx):
            await ctx.emit("start", {"n": 2})
            return {"status": 202, "body": {"trace": ctx.trace_id}}
    """})
    async with Harness(root) as h:
        status, body = await h.request("POST", "/start", json={})
        await h.run_until_idle()
        assert h.runtime.recorder is not None
        await h.runtime.recorder.flush()
        runs = await runs_of(h.backend, body["trace"])
    assert status == 202
    [api] = build_tree(runs)  # type: ignore[arg-type]
    assert api["kind"] == "api" and api["topic"] == "POST /start"
    assert [c["step"] for c in api["children"]] == ["A"]


async def test_retention_keeps_the_newest_traces(tmp_path: Path) -> None:
    from motia_py.backends.sqlite import SqliteBackend

    backend = SqliteBackend("sqlite:///t.db", tmp_path / "t.db")
    await backend.open()
    try:
        await backend.traces_add([TraceRun(f"t{i}", 1000.0 + i, json.dumps({"i": i})) for i in range(10)])
        assert (await backend.traces_recent(3)) == ["t9", "t8", "t7"]
        assert await backend.traces_prune(before=1002.0, keep=5) == 5  # t0, t1 too old; t2..t4 over the count
        assert await backend.traces_recent(100) == [f"t{i}" for i in range(9, 4, -1)]
        assert await backend.traces_get("t0") == []
    finally:
        await backend.close()


async def test_trace_cli_prints_the_tree_and_lists_recent_traces(make_project: ProjectFactory,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({**CHAIN, "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/m.db"\n'})
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    runtime = Runtime(project, backend_for(settings), cron=False, poll_s=0.01,
                      traces=TraceSettings(flush_interval_s=0.01))
    async with runtime:
        ok = await runtime.router.emit("start", {"n": 5})
        bad = await runtime.router.emit("start", {"n": 13})
        await runtime.wait_idle(timeout_s=5)

    def run(argv: list[str]) -> tuple[int, str]:
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, ["trace", ok, "--project", str(root)])
    assert code == 0 and out.startswith("A <- start") and "B <- mid" in out
    code, out = await asyncio.to_thread(run, ["trace", "list", "--json", "--project", str(root)])
    assert code == 0 and {r["trace_id"] for r in json.loads(out)} == {ok, bad}
    code, out = await asyncio.to_thread(run, ["trace", "list", "--status", "failed", "--json", "--project",
                                              str(root)])
    assert [r["trace_id"] for r in json.loads(out)] == [bad]
    code, out = await asyncio.to_thread(run, ["trace", "list", "--step", "nope", "--json", "--project", str(root)])
    assert json.loads(out) == []
    code, _ = await asyncio.to_thread(run, ["trace", "nope", "--project", str(root)])
    assert code == 1


async def test_an_incoming_w3c_traceparent_continues_the_callers_trace(make_project: ProjectFactory) -> None:
    root = make_project({**CHAIN, "steps/api.step.py": """
        config = {"type": "api", "name": "Start", "path": "/start", "method": "POST", "emits": ["start"],
                  "flows": ["f"]}
        async def handler(req, ctx):
            await ctx.emit("start", {"n": 3})
            return {"status": 202, "body": {"trace": ctx.trace_id}}
    """})
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with Harness(root) as h:
        status, body = await h.request("POST", "/start", json={},
                                       headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"})
        assert status == 202 and body["trace"] == caller
        assert h.last_response is not None and h.last_response.headers["x-trace-id"] == caller
        _, other = await h.request("POST", "/start", json={}, headers={"traceparent": "garbage"})
        assert other["trace"] != caller and len(other["trace"]) == 32


def test_the_trace_tree_draws_branches_and_shows_log_fields() -> None:
    def run(step: str, event: str, emitted: list[str], **extra: object) -> dict[str, object]:
        return {"trace_id": "t", "step": step, "kind": "event", "topic": "x", "attempt": 1, "started_at": 0.0,
                "duration_ms": 1.0, "outcome": "ok", "error": None, "event_id": event, "source": None,
                "emitted": [{"topic": "x", "event_id": e} for e in emitted], "logs": [], **extra}

    runs = [run("A", "e0", ["e1", "e2"], logs=[{"level": "info", "msg": "split", "parts": 2, "ts": 1.0}]),
            run("B", "e1", ["e3"]), run("C", "e2", [], error="ValueError: no"), run("D", "e3", [])]
    when = time.strftime("%H:%M:%S", time.localtime(0.0))
    assert render_tree(runs).splitlines() == [  # type: ignore[arg-type]
        f"A <- x  attempt 1  1.0 ms  ok  ({when})",
        "│  [info] split  parts=2",
        f"├─ B <- x  attempt 1  1.0 ms  ok  ({when})",
        f"│  └─ D <- x  attempt 1  1.0 ms  ok  ({when})",
        f"└─ C <- x  attempt 1  1.0 ms  ok  ({when})",
        "      ! ValueError: no",
    ]
