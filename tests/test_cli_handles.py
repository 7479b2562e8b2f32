"""``motia-py status``, ``cancel``, ``scheduled list``, ``emit --key/--at`` and ``trace`` by prefix, in
process, against a real SQLite file (no worker runs here: events stay queued or scheduled). The runs with
workers are in test_handles_processes.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from motia_py.cli import main

from .conftest import ProjectFactory
from .test_cli_operators import run

PROJECT = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
    "flows/f.toml": 'entry_topics = ["work"]\n',
    "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx): pass
    """,
    "steps/audit.step.py": """
        config = {"type": "event", "name": "Audit", "subscribes": ["work"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"delaySeconds": 60}}}
        async def handler(input, ctx): pass
    """,
}


@pytest.fixture
def root(make_project: ProjectFactory) -> Path:
    return make_project(PROJECT)


def emit(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(["emit", "work", "--data", '{"n": 1}', *args, "--project", str(root)], capsys)
    assert code == 0, err
    return out.strip()


def test_status_shows_each_subscriber_by_id_or_prefix(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event_id = emit(root, capsys)
    code, out, err = run(["status", event_id, "--json", "--project", str(root)], capsys)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["event_id"], doc["topic"], doc["trace_id"], doc["done"]) == (event_id, "work", event_id, False)
    assert {s: v["state"] for s, v in doc["steps"].items()} == {"Audit": "scheduled", "Work": "queued"}

    code, out, _ = run(["status", event_id[:8], "--project", str(root)], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"{event_id}  work  queued")
    assert [line.split()[:2] for line in lines[1:]] == [["Audit", "scheduled"], ["Work", "queued"]]


@pytest.mark.parametrize(("ref", "message"), [
    ("0123456789abcdef", "no event '0123456789abcdef' (unknown, or finished longer ago than the handles are kept)"),
    ("abc", "'abc' is too short: give the event id or at least 6 of its characters"),
])
def test_an_unknown_or_short_id_exits_1_without_a_traceback(root: Path, capsys: pytest.CaptureFixture[str],
                                                            ref: str, message: str) -> None:
    code, out, err = run(["status", ref, "--project", str(root)], capsys)
    assert (code, out, err.strip()) == (1, "", f"error: {message}")
    code, out, err = run(["cancel", ref, "--project", str(root)], capsys)
    assert (code, out, err.strip()) == (1, "", f"error: {message}")


def test_an_ambiguous_prefix_lists_the_candidates(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Ids begin with a per-process counter's low bits: three emitted in a row share their first 6
    # characters unless the counter passed a multiple of 256 between them; then the next three do.
    emitted: list[str] = []
    common = None
    while common is None and len(emitted) < 9:
        ids = [emit(root, capsys) for _ in range(3)]
        emitted += ids
        common = next((ids[0][:n] for n in range(32, 5, -1) if all(i.startswith(ids[0][:n]) for i in ids)), None)
    assert common is not None, emitted
    matching = [i for i in emitted if i.startswith(common)]
    code, out, err = run(["status", common, "--project", str(root)], capsys)
    assert (code, out) == (1, "") and f"'{common}' matches {len(matching)} events" in err
    assert all(i in err for i in matching) and "Traceback" not in err


def test_cancel_then_cancel_again(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event_id = emit(root, capsys)
    code, out, err = run(["cancel", event_id[:10], "--project", str(root)], capsys)
    assert (code, out) == (0, "") and f"cancelled {event_id} at Audit, Work (never run)" in err
    code, out, _ = run(["status", event_id, "--json", "--project", str(root)], capsys)
    assert {s: v["state"] for s, v in json.loads(out)["steps"].items()} == {"Audit": "cancelled", "Work": "cancelled"}

    code, out, err = run(["cancel", event_id, "--json", "--project", str(root)], capsys)
    assert code == 1 and json.loads(out)["state"] == "cancelled"
    assert f"error: event {event_id} has already finished (cancelled); nothing was cancelled" in err


def test_a_key_makes_emit_print_the_first_events_id(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = emit(root, capsys, "--key", "order-42")
    assert emit(root, capsys, "--key", "order-42") == first
    assert emit(root, capsys, "--key", "order-43") != first
    assert emit(root, capsys, "--key", "order-42", "--dedup-window", "0.001") == first  # held by the first's window


def test_scheduled_list_shows_due_times_and_at_schedules(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["scheduled", "list", "--project", str(root)], capsys)
    assert (code, err.strip()) == (0, "no scheduled events")
    at = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    later = emit(root, capsys, "--at", at.isoformat())
    soon = emit(root, capsys)

    code, out, _ = run(["scheduled", "list", "--json", "--project", str(root)], capsys)
    rows = [(r["event_id"], r["step"]) for r in json.loads(out)]
    assert rows == [(soon, "Audit"), (later, "Work"), (later, "Audit")]  # Audit adds its delaySeconds (60)
    assert [r["due_at"] for r in json.loads(out)[1:]] == pytest.approx([at.timestamp(), at.timestamp() + 60], abs=0.1)
    code, out, _ = run(["scheduled", "list", "--topic", "other", "--project", str(root)], capsys)
    assert (code, out) == (0, "")
    code, out, _ = run(["scheduled", "list", "--project", str(root)], capsys)
    line = out.splitlines()[1]
    assert line.startswith(at.isoformat()[:19]) and line.split()[1:] == [later, "work", "Work"]


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "2030-01-01T09:00:00"], "has no UTC offset"),
    (["--at", "next tuesday"], "is not an ISO 8601 time"),
    (["--at", "2030-01-01T09:00:00Z", "--delay", "5"], "give --delay or --at, not both"),
    (["--key", "k", "--file", "-"], "--key and --dedup-window go with --data"),
])
def test_bad_schedules_and_keys_are_usage_errors(root: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                                 message: str) -> None:
    argv = ["emit", "work", *args, "--project", str(root)]
    if "--file" not in args:
        argv[2:2] = ["--data", "{}"]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "") and message in err


def test_trace_accepts_the_short_id_of_a_log_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from motia_py.backends.base import TraceRun
    from motia_py.runtime import backend_for
    from motia_py.settings import load_settings

    backend = backend_for(load_settings(root, env={}))

    async def record() -> None:
        await backend.open()
        run_ = {"trace_id": "t", "step": "Work", "kind": "event", "topic": "work", "attempt": 1, "started_at": 1.0,
                "duration_ms": 1.0, "outcome": "ok", "error": None, "event_id": "e", "source": None, "emitted": [],
                "logs": []}
        for tid in ("3f2a0001aa", "3f2a0002bb"):
            await backend.traces_add([TraceRun(tid, 1.0, json.dumps({**run_, "trace_id": tid}))])
        await backend.close()

    asyncio.run(record())
    code, out, _ = run(["trace", "3f2a0002", "--json", "--project", str(root)], capsys)
    assert code == 0 and json.loads(out)["trace_id"] == "3f2a0002bb"
    code, out, err = run(["trace", "3f2a00", "--project", str(root)], capsys)
    assert (code, out) == (1, "") and "matches 2 traces" in err and "3f2a0001aa" in err


def test_the_commands_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("status", "cancel", "scheduled"))
