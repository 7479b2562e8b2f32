"""Newcomer papercuts of the command line: options before the subcommand, a directory that is not a
project, an unknown backend scheme, times in ``dlq show``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import ProjectFactory
from .test_cli_operators import PROJECT, run


@pytest.fixture
def root(make_project: ProjectFactory) -> Path:
    return make_project(PROJECT)


def test_project_and_backend_are_accepted_before_the_subcommand(root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--project", str(root), "validate", "--json"], capsys)
    assert code == 0 and json.loads(out)["steps"] == 2
    db = tmp_path / "other.db"
    code, out, _ = run(["--backend", f"sqlite:///{db}", "--project", str(root), "emit", "work", "--data", "{}"],
                       capsys)
    assert code == 0 and re.fullmatch(r"[0-9a-f]{32}\n", out)
    assert db.exists()  # the root-level --backend reached the subcommand
    # the subcommand's own option wins over the one given before it
    code, out, _ = run(["--project", "/no/such/dir", "validate", "--project", str(root)], capsys)
    assert code == 0


@pytest.mark.parametrize("command", [["validate"], ["start", "--no-http"], ["dev"]])
def test_a_directory_that_is_not_a_project_is_refused_with_a_hint(tmp_path: Path, command: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run([*command, "--project", str(empty)], capsys)
    assert code == 2 and out == ""
    assert "is not a motia-py project" in err and "--project DIR" in err


def test_an_unknown_backend_scheme_is_a_settings_error(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["state", "get", "ns", "g", "k", "--backend", "mongo://x", "--project", str(root)], capsys)
    assert code == 2 and out == ""
    assert "mongo" in err


def test_dlq_show_prints_times_as_dlq_list_does(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from motia_py.runtime import backend_for
    from motia_py.settings import load_settings

    assert run(["emit", "work", "--data", "{}", "--project", str(root)], capsys)[0] == 0

    async def kill() -> str:
        backend = backend_for(load_settings(root))
        await backend.open()
        try:
            [d] = await backend.claim("Work", 1, 60.0)
            await backend.dead_letter(d, "Boom: no", "trace")
            return d.id
        finally:
            await backend.close()

    dead_id = asyncio.run(kill())
    code, out, _ = run(["dlq", "list", "--project", str(root)], capsys)
    listed_time = out.split()[1]
    code, out, _ = run(["dlq", "show", dead_id, "--project", str(root)], capsys)
    shown = json.loads(out)
    assert code == 0 and shown["failed_at"] == listed_time
    assert shown["failed_at"].endswith("+00:00") and shown["emitted_at"].endswith("+00:00")


def test_a_port_in_use_suggests_how_to_pick_another(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = run(["start", "--port", str(port), "--project", str(root)], capsys)
    assert code == 1
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in err
    assert "--port" in err and "MOTIA_PY_SERVER_PORT" in err


def test_emit_refuses_data_a_subscriber_would_reject_unless_no_check(make_project: ProjectFactory,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({
        "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
        "flows/f.toml": 'entry_topics = ["order"]\n',
        "steps/order.step.py": """
            from pydantic import BaseModel
            class Order(BaseModel):
                id: str
                quantity: int
            config = {"type": "event", "name": "TakeOrder", "subscribes": ["order"], "emits": [], "flows": ["f"],
                      "input": Order}
            async def handler(input, ctx): pass
        """})
    code, out, err = run(["emit", "order", "--data", '{"id": "o1", "quantity": "many"}', "--project", str(root)],
                         capsys)
    assert code == 1 and out == ""
    assert "fails the input of step 'TakeOrder'" in err and "quantity" in err and "--no-check" in err
    (root / "orders.jsonl").write_text('{"id": "a", "quantity": 1}\n{"id": "b"}\n')
    code, out, err = run(["emit", "order", "--file", str(root / "orders.jsonl"), "--project", str(root)], capsys)
    assert code == 1 and "event 2 fails the input of step 'TakeOrder'" in err and out == ""
    code, out, _ = run(["emit", "order", "--data", '{"id": "o1", "quantity": "many"}', "--no-check",
                        "--project", str(root)], capsys)
    assert code == 0 and len(out.split()) == 1
    code, out, _ = run(["emit", "order", "--data", '{"id": "o2", "quantity": 3}', "--project", str(root)], capsys)
    assert code == 0 and len(out.split()) == 1
