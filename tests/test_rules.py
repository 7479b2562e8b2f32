"""AI-assistant rules: their code examples validate and run, and ``pull`` refreshes without clobbering edits.

Every fenced block of every rule file is checked. Python blocks whose first line names a step or test
file (``# steps/x.step.py``, ``# tests/test_x.py``) are written, with the ``# flows/...`` and
``# motia_py.toml`` TOML blocks, into a project per rule set; the project must validate with no error
or warning, its test functions must pass in the Harness, and every step must have run in them. Other
Python blocks must compile (top-level ``await`` allowed: they are handler excerpts), TOML blocks must
parse, and every ``motia-py ...`` command line in a bash block must be a command the CLI knows.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from motia_py import rules
from motia_py.cli import main
from motia_py.config import StepType
from motia_py.errors import ProjectError
from motia_py.findings import Severity
from motia_py.runs import RunRecord
from motia_py.runtime import load_project
from motia_py.settings import load_settings
from motia_py.testing import Harness

RULE_SETS = {
    "agents": ["AGENTS.md"],
    "claude": ["CLAUDE.md"],
    "cursor": [p for p in rules.render_all() if p.startswith(".cursor/")],
}
_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
_HEADER = re.compile(r"#\s*(?P<path>(steps|tests|flows)/\S+|motia_py\.toml)\s*$")


def blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced code block of a Markdown text: (language, body)."""
    return [(m["lang"], m["body"]) for m in _FENCE.finditer(text)]


def header_path(body: str) -> str | None:
    """The project file a block stands for, from its first line (``# steps/x.step.py``), if any."""
    match = _HEADER.fullmatch(body.splitlines()[0]) if body.strip() else None
    return match["path"] if match else None


def test_the_rule_files_are_the_ones_assistants_read() -> None:
    files = rules.render_all()
    assert {"AGENTS.md", "CLAUDE.md"} <= set(files)
    cursor = [p for p in files if p.startswith(".cursor/rules/")]
    assert len(cursor) == 3 and all(p.endswith(".mdc") for p in cursor)
    for path in cursor:
        front = files[path].split("---\n")[1]  # Cursor's frontmatter comes first
        assert "description: " in front and "alwaysApply: " in front
    assert "@AGENTS.md" in files["CLAUDE.md"]  # Claude Code imports the full guide
    for topic in ("ctx.emit", "ctx.state", "ctx.logger", "Harness", "motia-py validate", "virtualEmits",
                  "state_namespace", "bodySchema", "infrastructure", "NonRetryableError"):
        assert topic in files["AGENTS.md"], topic


@pytest.mark.parametrize("rule_set", sorted(RULE_SETS))
async def test_every_code_block_of_the_rules_validates_and_runs(rule_set: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(rules.render_all()[p] for p in RULE_SETS[rule_set])
    root = tmp_path / rule_set
    project_files: dict[str, str] = {}
    for lang, body in blocks(text):
        path = header_path(body)
        if lang == "python" and path:
            assert path not in project_files, f"two examples claim {path}"
            project_files[path] = body
        elif lang == "python":
            compile(body, f"<{rule_set} snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        elif lang == "toml":
            tomllib.loads(body)
            if path:
                project_files[path] = body
        elif lang == "bash":
            _check_commands(body)
    if not any(p.startswith("steps/") for p in project_files):
        return  # nothing to run (CLAUDE.md points to AGENTS.md)
    for rel, body in project_files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)

    project, findings = load_project(load_settings(root, flags={"backend_url": "memory://"}, env={}))
    bad = [f.render(root) for f in findings if f.severity is not Severity.INFO]
    assert bad == []
    examples = {p for p in project_files if p.startswith("steps/")}
    assert {str(s.file.relative_to(root)) for s in project.steps} == examples

    runs = await _run_example_tests(root, monkeypatch)
    runnable = {s.name for s in project.steps if s.type is not StepType.NOOP}
    assert runnable - {r.step for r in runs} == set(), "every example step runs in the examples' tests"


async def _run_example_tests(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[RunRecord]:
    """Await every ``test_*`` function of the project's tests; return the runs of every Harness they used."""
    runs: list[RunRecord] = []
    original = Harness.__aexit__

    async def keep_runs(self: Harness, *exc: Any) -> None:
        await original(self, *exc)
        runs.extend(self.runs)

    monkeypatch.setattr(Harness, "__aexit__", keep_runs)
    tests = sorted((root / "tests").glob("test_*.py"))
    assert tests, "a rule set with step examples shows how to test them"
    for path in tests:
        spec = importlib.util.spec_from_file_location(f"rules_example_{root.name}_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        functions = [f for name, f in vars(module).items()
                     if name.startswith("test_") and inspect.iscoroutinefunction(f)]
        assert functions
        for fn in functions:
            await fn()
    return runs


def _check_commands(body: str) -> None:
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] != ["motia-py"]:
            continue
        try:
            main([*words[1:], "--help"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        assert code == 0, f"not a motia-py command: {line}"


# -- rules pull ---------------------------------------------------------------------------------------

def test_pull_writes_every_rule_file_then_finds_them_up_to_date(tmp_path: Path) -> None:
    report = rules.pull(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in report.written) == sorted(rules.render_all())
    assert (tmp_path / ".cursor" / "rules" / "motia-py-steps.mdc").read_text().startswith("---\n")
    again = rules.pull(tmp_path)
    assert again.written == () and again.skipped == () and len(again.unchanged) == len(rules.render_all())
    assert "  up to date AGENTS.md" in again.messages(tmp_path)


def test_pull_skips_edited_files_and_says_so_unless_forced(tmp_path: Path) -> None:
    rules.pull(tmp_path)
    agents = tmp_path / "AGENTS.md"
    edited = agents.read_text().replace("## How to work here", "## How to work here\n\nAlways use tabs.")
    agents.write_text(edited)
    (tmp_path / "CLAUDE.md").write_text("# my own notes\n")  # the user's file, no motia-py marker

    report = rules.pull(tmp_path)
    assert {p.name for p in report.skipped} == {"AGENTS.md", "CLAUDE.md"}
    assert agents.read_text() == edited and (tmp_path / "CLAUDE.md").read_text() == "# my own notes\n"
    assert "  skipped AGENTS.md: edited since motia-py wrote it (--force overwrites it)" in report.messages(tmp_path)

    forced = rules.pull(tmp_path, force=True)
    assert {p.name for p in forced.written} == {"AGENTS.md", "CLAUDE.md"} and forced.skipped == ()
    assert agents.read_text() == rules.render_all()["AGENTS.md"]


def test_pull_refreshes_a_file_an_older_motia_py_wrote(tmp_path: Path) -> None:
    body = "# AGENTS.md\n\nOld advice.\n"
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    (tmp_path / "AGENTS.md").write_text(f"{body}\n<!-- motia-py rules 0.0.1 sha256:{digest}: written by motia-py -->\n")
    report = rules.pull(tmp_path)
    assert tmp_path / "AGENTS.md" in report.written
    assert (tmp_path / "AGENTS.md").read_text() == rules.render_all()["AGENTS.md"]


def test_a_checkout_with_windows_line_ends_is_not_an_edit(tmp_path: Path) -> None:
    text = rules.render_all()["CLAUDE.md"]
    assert rules.is_pristine(text)
    assert rules.is_pristine(text.replace("\n", "\r\n"))
    assert not rules.is_pristine(text.replace("validate --strict", "validate"))
    assert not rules.is_pristine("# no marker\n")


def test_pull_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="no such project directory"):
        rules.pull(tmp_path / "missing")
