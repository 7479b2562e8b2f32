"""Which ``motia`` step files import: motia-py's built-in Motia 1.0 SDK, or an installed ``motia`` package,
as ``[project] motia_sdk`` says (``auto`` prefers an installed one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import motia_py
from motia_py import motia_compat
from motia_py.discovery import discover
from motia_py.settings import load_settings

from .conftest import ProjectFactory

WHO = """
    import motia
    from motia import http
    from motia.types import FlowContext

    config = {"name": "Fake" if getattr(motia, "FAKE", False) else "Builtin", "flows": ["f"],
              "triggers": [http("GET", "/who")], "enqueues": []}

    def handler(request, ctx: FlowContext):
        return {"status": 200, "body": motia.__name__}
"""

FAKE_SDK = """
    FAKE = True

    def http(method, path, **kw):
        return {"type": "http", "method": method, "path": path}
"""


def fake_sdk(tmp_path: Path) -> Path:
    """A directory holding an installed-looking ``motia`` package (not motia-py's)."""
    site = tmp_path / "site"
    (site / "motia").mkdir(parents=True)
    (site / "motia" / "__init__.py").write_text(textwrap.dedent(FAKE_SDK))
    (site / "motia" / "types.py").write_text("class FlowContext: ...\n")
    return site


def run_cli(root: Path, *args: str, site: Path | None = None) -> tuple[int, dict[str, object]]:
    framework = str(Path(motia_py.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([framework, *([str(site)] if site else [])])}
    env.pop("MOTIA_PY_MOTIA_SDK", None)
    proc = subprocess.run([sys.executable, "-m", "motia_py", *args, "--json", "--project", str(root)],
                          capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def test_without_an_installed_motia_step_files_get_the_built_in_sdk(make_project: ProjectFactory) -> None:
    project = discover(load_settings(make_project({"steps/who_step.py": WHO}), env={}))
    assert [s.name for s in project.steps] == ["Builtin"]
    assert sys.modules["motia"] is motia_compat


def test_an_installed_motia_is_not_shadowed_and_validate_says_what_that_means(make_project: ProjectFactory,
                                                                              tmp_path: Path) -> None:
    root = make_project({"steps/who_step.py": WHO})
    site = fake_sdk(tmp_path)
    code, report = run_cli(root, "validate", site=site)
    assert code == 0 and report["steps"] == 1
    [finding] = report["findings"]  # type: ignore[misc]
    assert finding["code"] == "motia-sdk" and finding["severity"] == "warning"
    assert "installed motia package" in finding["message"] and 'motia_sdk = "builtin"' in finding["hint"]
    code, steps = run_cli(root, "steps", site=site)
    assert [s["name"] for s in steps["steps"]] == ["Fake"]  # type: ignore[index]


def test_motia_sdk_builtin_stands_in_for_an_installed_one(make_project: ProjectFactory, tmp_path: Path) -> None:
    root = make_project({"steps/who_step.py": WHO,
                         "motia_py.toml": '[project]\nmotia_sdk = "builtin"\n[backend]\nurl = "memory://"\n'})
    site = fake_sdk(tmp_path)
    _, steps = run_cli(root, "steps", site=site)
    assert [s["name"] for s in steps["steps"]] == ["Builtin"]  # type: ignore[index]
    code, report = run_cli(root, "validate", site=site)
    [finding] = report["findings"]  # type: ignore[misc]
    assert code == 0 and (finding["code"], finding["severity"]) == ("motia-sdk", "info")


def test_motia_sdk_installed_without_one_installed_is_an_import_error(make_project: ProjectFactory) -> None:
    root = make_project({"steps/who_step.py": WHO,
                         "motia_py.toml": '[project]\nmotia_sdk = "installed"\n[backend]\nurl = "memory://"\n'})
    code, report = run_cli(root, "validate")
    [finding] = report["findings"]  # type: ignore[misc]
    assert code == 1 and finding["code"] == "import-error" and "No module named 'motia'" in finding["message"]
