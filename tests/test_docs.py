"""Every code block of the README and docs/ is checked: Python compiles, and a block that is a whole step
file (it sets ``config`` with a ``type`` or Motia 1.0's ``triggers`` and defines its ``handler``) loads as a
step without a config or import error; TOML and JSON parse; every ``motia-py`` command line names a real
command and options."""

from __future__ import annotations

import ast
import json
import re
import shlex
import textwrap
import tomllib
from pathlib import Path

import click
import pytest

from motia_py.cli import cli
from motia_py.findings import Severity
from motia_py.runtime import load_project
from motia_py.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
# findings about one step file itself; the graph findings need the rest of a project the snippet is part of
_FILE_CODES = {"import-error", "syntax-error", "invalid-config", "missing-export", "duplicate-step"}


def blocks(lang: str) -> list[tuple[str, str]]:
    """(``page:line``, code) of every fenced block in ``lang`` across the pages."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in _FENCE.finditer(text):
            if m.group(1) == lang:
                line = text.count("\n", 0, m.start()) + 1
                out.append((f"{page.relative_to(REPO)}:{line}", textwrap.dedent(m.group(2))))
    return out


def is_step_file(code: str) -> bool:
    """A whole step file: a top-level ``config`` holding a ``type`` (or ``triggers``), and a ``handler`` unless
    it is a noop."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    funcs = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    has_type = bool(re.search(r"""["'](type|triggers)["']\s*:""", code))
    return "config" in names and has_type and ("handler" in funcs or re.search(r"""["']noop["']""", code) is not None)


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_blocks_compile(where: str, code: str) -> None:
    """Snippets may ``await`` at top level (they show handler or test bodies), and a snippet of config
    keys (``"emits": [...]``) must compile as the body of a dict."""
    try:
        compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        if not re.match(r"""\s*["']\w+["']\s*:""", code):
            pytest.fail(f"{where}: {exc}")
        try:
            compile("{\n" + code + "\n}", where, "eval")
        except SyntaxError as exc2:
            pytest.fail(f"{where}: a config fragment that is not valid as dict entries: {exc2}")


STEP_BLOCKS = [(w, c) for w, c in blocks("python") if is_step_file(c)]


@pytest.mark.parametrize(("where", "code"), STEP_BLOCKS, ids=[w for w, _ in STEP_BLOCKS])
def test_step_file_blocks_load_as_steps(where: str, code: str, tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "motia_py.toml").write_text('[backend]\nurl = "memory://"\n')
    (tmp_path / "steps" / "snippet.step.py").write_text(code)
    project, findings = load_project(load_settings(tmp_path, env={}))
    problems = [f.render(tmp_path) for f in findings if f.severity is Severity.ERROR and f.code in _FILE_CODES]
    assert problems == [], f"{where}: the step does not load:\n" + "\n".join(problems)
    assert len({s.display_name for s in project.steps}) == 1  # a Motia 1.0 step: one spec per trigger


def test_some_step_blocks_are_checked() -> None:
    assert len(STEP_BLOCKS) >= 8  # the check above must keep seeing the docs' step examples


@pytest.mark.parametrize(("where", "code"), blocks("toml"), ids=[w for w, _ in blocks("toml")])
def test_toml_blocks_parse(where: str, code: str) -> None:
    try:
        tomllib.loads(code)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{where}: {exc}")


@pytest.mark.parametrize(("where", "code"), blocks("json"), ids=[w for w, _ in blocks("json")])
def test_json_blocks_parse(where: str, code: str) -> None:
    try:
        json.loads(code)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{where}: {exc}")


def command_lines() -> list[tuple[str, str]]:
    """Every ``motia-py ...`` command line of bash/console/shell blocks (``$`` prompts stripped)."""
    out = []
    for lang in ("bash", "console", "shell", "sh"):
        for where, code in blocks(lang):
            for raw in code.splitlines():
                line = raw.strip()
                if lang == "console":
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                line = line.split(" #", 1)[0].strip()
                if line.startswith("motia-py ") and "$(" not in line and "|" not in line and "<" not in line:
                    out.append((where, line))
    return out


@pytest.mark.parametrize(("where", "line"), command_lines(), ids=[f"{w} {x[:40]}" for w, x in command_lines()])
def test_command_lines_name_real_commands_and_options(where: str, line: str) -> None:
    args = [a for a in shlex.split(line.split("&&")[0])[1:]]
    command: click.Command = cli
    rest = list(args)
    while isinstance(command, click.Group):
        rest = _drop_options(command, rest)
        if not rest:
            return  # `motia-py --help` and the like
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"{where}: '{line}' names no command '{rest[0]}'"
        command, rest = sub, rest[1:]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    used = [a.split("=", 1)[0] for a in rest if a.startswith("-") and a != "-" and not a[1:2].isdigit()]
    unknown = [a for a in used if a not in known]
    assert unknown == [], f"{where}: '{line}' uses unknown option(s) {unknown}"


def _drop_options(group: click.Group, args: list[str]) -> list[str]:
    """``args`` without the group's own leading options (``--project DIR`` before the subcommand)."""
    takes_value = {opt for p in group.params if isinstance(p, click.Option) and not p.is_flag for opt in p.opts}
    out = list(args)
    while out and out[0].startswith("-"):
        out = out[2:] if out[0] in takes_value else out[1:]
    return out
