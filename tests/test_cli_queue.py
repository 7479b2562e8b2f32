"""``motia-py queue`` and the streaming ``emit --file``, in process against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from motia_py.cli_emit import EMIT_BATCH
from motia_py.discovery import discover
from motia_py.runtime import backend_for
from motia_py.settings import load_settings

from .conftest import ProjectFactory
from .test_cli_operators import PROJECT, run


@pytest.fixture
def root(make_project: ProjectFactory) -> Path:
    return make_project(PROJECT)


def claim_one(root: Path) -> None:
    async def go() -> None:
        backend = backend_for(load_settings(root))
        await backend.open()
        try:
            assert len(await backend.claim("Work", 1, 60.0)) == 1
        finally:
            await backend.close()

    asyncio.run(go())


def test_queue_shows_ready_running_and_every_project_step(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        assert run(["emit", "work", "--data", json.dumps({"i": i}), "--project", str(root)], capsys)[0] == 0
    claim_one(root)
    code, out, err = run(["queue", "--json", "--project", str(root)], capsys)
    assert code == 0, err
    rows = {r["step"]: r for r in json.loads(out)}
    assert rows["Work"]["ready"] == 2 and rows["Work"]["running"] == 1 and rows["Work"]["dead"] == 0
    assert rows["Work"]["oldest_ready_age_s"] is not None and rows["Work"]["oldest_ready_age_s"] >= 0
    assert rows["Tick"] == {"step": "Tick", "ready": 0, "scheduled": 0, "running": 0, "dead": 0,
                            "oldest_ready_age_s": None, "held_by": {}}
    code, out, _ = run(["queue", "--project", str(root)], capsys)
    header, *lines = out.splitlines()
    assert header.split() == ["STEP", "READY", "SCHEDULED", "RUNNING", "DEAD", "OLDEST", "READY", "HELD", "BY"]
    assert ["Work", "2", "0", "1", "0"] in [line.split()[:5] for line in lines]


def test_emit_file_publishes_every_line_in_order_across_batches(root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    n = EMIT_BATCH * 2 + 7
    (root / "events.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    code, out, err = run(["emit", "work", "--file", str(root / "events.jsonl"), "--project", str(root)], capsys)
    assert code == 0, err
    ids = out.split()
    assert len(ids) == n and len(set(ids)) == n

    async def drain() -> list[int]:
        backend = backend_for(load_settings(root))
        await backend.open()
        try:
            got = await backend.claim("Work", n + 10, 60.0)
            return [d.envelope.data["i"] for d in got]
        finally:
            await backend.close()

    assert asyncio.run(drain()) == list(range(n))  # claimed oldest first: the file order


def test_emit_file_with_a_bad_line_names_it_and_publishes_nothing_after_it(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "events.jsonl").write_text('{"i": 1}\n{"i": 2}\nnot json\n{"i": 4}\n')
    code, out, err = run(["emit", "work", "--file", str(root / "events.jsonl"), "--project", str(root)], capsys)
    assert code == 1
    assert "events.jsonl:3: not JSON" in err
    assert out == ""  # the bad line is in the first batch: nothing of it was published


LIMITED = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
    "flows/f.toml": 'entry_topics = ["work"]\n',
    "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"concurrencyKey": "k"}}}
        async def handler(input, ctx): pass
    """,
}


def test_emit_priority_goes_first_and_queue_shows_what_a_limit_holds_back(
        make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(LIMITED)
    for i in range(3):
        assert run(["emit", "work", "--data", json.dumps({"i": i, "k": "a"}), "--project", str(root)], capsys)[0] == 0
    assert run(["emit", "work", "--priority", "7", "--data", '{"i": 9, "k": "a"}', "--project", str(root)],
               capsys)[0] == 0
    assert run(["emit", "work", "--priority", "5000", "--data", "{}", "--project", str(root)], capsys)[0] == 2

    async def claim() -> list[object]:
        backend = backend_for(load_settings(root))
        await backend.open()
        try:
            control = discover(load_settings(root)).step("Work").queue.flow.control  # type: ignore[union-attr]
            return [d.envelope.data["i"] for d in await backend.claim("Work", 10, 60.0, control=control)]
        finally:
            await backend.close()

    assert asyncio.run(claim()) == [9]  # the priority one; the others wait for key "a"
    code, out, err = run(["queue", "--json", "--project", str(root)], capsys)
    assert code == 0, err
    [row] = json.loads(out)
    assert (row["ready"], row["running"], row["held_by"]) == (3, 1, {"concurrencyKey": 3})
    code, out, _ = run(["queue", "--project", str(root)], capsys)
    assert out.splitlines()[1].split()[-2:] == ["3", "concurrencyKey"]
