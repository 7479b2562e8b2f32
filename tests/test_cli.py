"""The CLI: exit codes, output streams, --project after the arguments, and a smoke test of the binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from motia_py.cli import main

from .conftest import ProjectFactory

GOOD = {
    "flows/f.toml": 'entry_topics = ["a"]\nexit_topics = ["b"]\n',
    "steps/a.step.py": """
        config = {"type": "event", "name": "A", "subscribes": ["a"], "emits": ["b"], "flows": ["f"]}
        async def handler(input, ctx): pass
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


def test_validate_passes_a_clean_project(make_project: ProjectFactory, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(GOOD)
    code, out, _ = run(["validate", "--project", str(root)], capsys)
    assert code == 0
    assert "1 step(s): 0 error(s), 0 warning(s)" in out


def test_validate_prints_every_problem_with_file_step_and_hint(make_project: ProjectFactory,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({
        **GOOD,
        "steps/b.step.py": """
            config = {"type": "event", "name": "B", "subscribes": ["bb"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx): pass
        """,
        "steps/c.step.py": """
            config = {"type": "event", "name": "C", "subscribe": ["a"]}
            async def handler(input, ctx): pass
        """,
        "steps/d.step.py": "import definitely_not_installed\n",
        "steps/e.step.py": "config = {\n",
    })
    code, out, _ = run(["validate", "--project", str(root)], capsys)
    assert code == 1
    assert "steps/b.step.py" in out and "(step 'B')" in out and "did you mean 'b'?" in out
    assert "steps/c.step.py" in out and "did you mean 'subscribes'?" in out
    assert "steps/d.step.py:1" in out and "definitely_not_installed" in out
    assert "steps/e.step.py:1" in out and "syntax-error" in out
    assert "4 error(s)" in out


def test_validate_json_is_one_document_on_stdout(make_project: ProjectFactory,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project({**GOOD, "flows/f.toml": 'entry_topics = ["a"]\n'})
    code, out, _ = run(["validate", "--json", "--project", str(root)], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["warnings"] == 1
    [finding] = doc["findings"]
    assert finding["code"] == "unconsumed-topic" and finding["file"] == "steps/a.step.py" and finding["step"] == "A"
    code, out, _ = run(["validate", "--json", "--strict", "--project", str(root)], capsys)
    assert code == 1 and json.loads(out)["ok"] is False


def test_validate_exits_2_only_when_the_project_cannot_be_read(tmp_path: Path, make_project: ProjectFactory,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate", "--project", str(tmp_path / "nope")], capsys)
    assert code == 2 and "no such project directory" in err
    root = make_project({**GOOD, "motia_py.toml": "[backend\nurl = 1\n"})
    code, out, err = run(["validate", "--project", str(root)], capsys)
    assert code == 2 and "motia_py.toml" in err and out == ""


def test_graph_exports_each_format_and_filters_by_flow(make_project: ProjectFactory,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(GOOD)
    code, out, _ = run(["graph", "--project", str(root)], capsys)
    assert code == 0 and out.startswith("flowchart") and "A" in out
    code, out, _ = run(["graph", "--format", "dot", "--project", str(root)], capsys)
    assert code == 0 and out.startswith("digraph")
    code, out, _ = run(["graph", "--format", "json", "--flow", "f", "--project", str(root)], capsys)
    assert code == 0 and [s["name"] for s in json.loads(out)["steps"]] == ["A"]
    code, _, err = run(["graph", "--flow", "g", "--project", str(root)], capsys)
    assert code == 1 and "unknown flow 'g'" in err


def test_steps_lists_names_triggers_and_emits(make_project: ProjectFactory,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = make_project(GOOD)
    code, out, _ = run(["steps", "--json", "--project", str(root)], capsys)
    [row] = json.loads(out)["steps"]
    assert code == 0 and row == {"name": "A", "type": "event", "trigger": "a", "step": "A", "format": "0.x",
                                 "emits": ["b"], "flows": ["f"], "file": "steps/a.step.py"}


def test_inspection_commands_never_open_the_backend(make_project: ProjectFactory,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # an unreachable Redis URL: validate, graph and steps must not care
    root = make_project({**GOOD, "motia_py.toml": '[backend]\nurl = "redis://127.0.0.1:1/0"\n'})
    for argv in (["validate"], ["graph"], ["steps"], ["openapi"]):
        code, _, _ = run([*argv, "--project", str(root)], capsys)
        assert code == 0, argv


def test_create_scaffolds_a_project_that_validates_and_whose_test_passes(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "myapp"
    code, _, err = run(["create", str(target)], capsys)
    assert code == 0 and "created" in err
    code, out, _ = run(["validate", "--strict", "--project", str(target)], capsys)
    assert code == 0, out
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target / "tests")],
                            cwd=target, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    code, _, err = run(["create", str(target)], capsys)
    assert code == 1 and "not empty" in err


def test_the_installed_command_runs_as_a_subprocess(make_project: ProjectFactory) -> None:
    root = make_project(GOOD)
    exe = Path(sys.executable).with_name("motia-py")
    result = subprocess.run([str(exe), "validate", "--json", "--project", str(root)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    result = subprocess.run([sys.executable, "-m", "motia_py", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "motia-py" in result.stdout
