"""Shared fixtures: ``make_project`` writes a small project to ``tmp_path``."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ProjectFactory = Callable[[dict[str, str]], Path]


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """``make_project({"steps/a.step.py": "..."})`` writes the files (dedented) and returns the root.

    A ``motia_py.toml`` selecting the memory backend is written unless one is given.
    """

    def make(files: dict[str, str], root: Path | None = None) -> Path:
        base = root or tmp_path / "project"
        base.mkdir(parents=True, exist_ok=True)
        if "motia_py.toml" not in files and not (base / "motia_py.toml").exists():
            (base / "motia_py.toml").write_text('[backend]\nurl = "memory://"\n')
        for rel, text in files.items():
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        return base

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Captured output and logs as text that encodes to UTF-8 (lone surrogates escaped): some tests log
    them on purpose, and ``pytest -n`` must send every report from its worker processes as UTF-8."""
    report: pytest.TestReport = yield
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8"))
                       for title, text in report.sections]
    return report
