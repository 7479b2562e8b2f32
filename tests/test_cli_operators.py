"""Operator commands (``emit``, ``state``, ``dlq``, ``cron``, ``trace``) in process: their exit codes and
what goes to stdout and stderr, against a real SQLite file. The end-to-end runs with a worker are in
test_start.py and test_tracing.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from motia_py.cli import main

from .conftest import ProjectFactory

PROJECT = {
    "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
    "flows/f.toml": 'entry_topics = ["work"]\n',
    "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx): pass
    """,
    "steps/tick.step.py": """
        config = {"type": "cron", "name": "Tick", "cron": "0 9 * * *", "emits": [], "flows": ["f"]}
        async def handler(ctx): pass
    """,
}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(make_project: ProjectFactory) -> Path:
    return make_project(PROJECT)


@pytest.mark.parametrize("url", ["sqlite:////proc/no-such-dir/motia.db", "redis://127.0.0.1:1/0"])
def test_an_unreachable_backend_exits_3(root: Path, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["state", "get", "ns", "g", "k", "--backend", url, "--project", str(root)], capsys)
    assert code == 3 and out == "" and err.startswith("error: backend unavailable: ")


@pytest.mark.parametrize(("argv", "message"), [
    (["emit", "work"], "give exactly one of --data JSON or --file F"),
    (["emit", "work", "--data", "{}", "--file", "-"], "give exactly one of --data JSON or --file F"),
    (["dlq", "replay"], "give a dead-letter ID or --all"),
    (["dlq", "purge", "some-id", "--all"], "give a dead-letter ID or --all"),
])
def test_a_wrong_combination_of_arguments_exits_2(root: Path, argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*argv, "--project", str(root)], capsys)
    assert (code, out, err.strip()) == (2, "", f"error: {message}")


def test_emit_prints_one_trace_id_per_event_on_stdout(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "events.jsonl").write_text('{"i": 1}\n\n{"i": 2}\n')
    code, out, err = run(["emit", "work", "--file", str(root / "events.jsonl"), "--project", str(root)], capsys)
    ids = out.split()
    assert code == 0 and err == "" and len(ids) == 2 and len(set(ids)) == 2


def test_emit_names_the_line_that_is_not_json_and_emits_nothing(root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (root / "events.jsonl").write_text('{"i": 1}\nnope\n')
    code, out, err = run(["emit", "work", "--file", str(root / "events.jsonl"), "--project", str(root)], capsys)
    assert code == 1 and out == "" and f"{root / 'events.jsonl'}:2: not JSON" in err
    code, out, err = run(["emit", "work", "--file", str(root / "missing.jsonl"), "--project", str(root)], capsys)
    assert code == 1 and out == "" and "cannot read" in err


def test_state_commands_round_trip_json_and_exit_1_when_absent(root: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = ["--project", str(root)]
    assert run(["state", "set", "ns", "g", "k", '{"a": [1, 2]}', *p], capsys)[0] == 0
    assert run(["state", "get", "ns", "g", "k", *p], capsys) == (0, '{\n  "a": [\n    1,\n    2\n  ]\n}\n', "")
    assert run(["state", "delete", "ns", "g", "k", *p], capsys)[0] == 0
    code, out, err = run(["state", "get", "ns", "g", "k", *p], capsys)
    assert (code, out, err.strip()) == (1, "", "error: no value at ns / g / k")
    code, _, err = run(["state", "delete", "ns", "g", "k", *p], capsys)
    assert code == 1 and "no value at ns / g / k" in err


def test_dlq_on_an_empty_queue(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = ["--project", str(root)]
    assert run(["dlq", "list", *p], capsys) == (0, "", "the dead-letter queue is empty\n")
    assert run(["dlq", "list", "--json", *p], capsys) == (0, "[]\n", "")
    code, out, err = run(["dlq", "replay", "nope", *p], capsys)
    assert (code, out) == (1, "") and err.splitlines() == ["replayed 0 dead letter(s)", "error: no dead letter 'nope'"]
    assert run(["dlq", "purge", "--all", *p], capsys) == (0, "", "purged 0 dead letter(s)\n")


def test_cron_list_and_run(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = ["--project", str(root)]
    code, out, _ = run(["cron", "list", *p], capsys)
    assert code == 0 and out.startswith("Tick  '0 9 * * *' (") and out.rstrip().endswith("never ran")
    code, out, _ = run(["cron", "run", "Tick", *p], capsys)
    assert code == 0 and len(out.split()) == 1
    code, out, err = run(["cron", "run", "Tik", *p], capsys)
    assert (code, out) == (1, "") and "no cron step 'Tik'; did you mean 'Tick'?" in err
    code, _, err = run(["cron", "run", "Work", *p], capsys)
    assert code == 1 and "no cron step 'Work' (cron steps: Tick)" in err


def test_trace_of_an_unknown_id_exits_1(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["trace", "nope", "--project", str(root)], capsys)
    assert (code, out) == (1, "") and "no trace 'nope'" in err
    assert run(["trace", "list", "--project", str(root)], capsys) == (0, "", "no traces recorded\n")
