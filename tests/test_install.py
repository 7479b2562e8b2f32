"""Installing motia-py into a project of one's own, as a newcomer does, in subprocesses.

The wheel is built once per session with ``python -m build`` from a copy of the sources (the work tree
stays clean). The fresh virtualenvs get their packages from pip's configured index, as a user's would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of this test run's Python or pytest settings."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """motia-py's wheel, built by ``python -m build --wheel`` from a copy of pyproject, README and sources."""
    src = tmp_path_factory.mktemp("motia-py-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "framework" / "motia_py", src / "framework" / "motia_py",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)], env=_env())
    [built] = dist.glob("motia_py-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_the_workbench_the_rule_templates_and_the_command(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "motia_py/static/workbench.html" in names and "motia_py/py.typed" in names
    for template in ("AGENTS.header.md", "CLAUDE.md", "overview.md", "steps.md", "testing.md"):
        assert f"motia_py/templates/rules/{template}" in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "motia-py = motia_py.cli:main" in text and "sqlite = motia_py.backends.sqlite:create_backend" in text


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_venv_installs_the_wheel_creates_a_project_and_its_test_passes(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env=_env())
    bin_dir = venv / "bin"
    env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv), NO_COLOR="1")
    _run([str(bin_dir / "python"), "-m", "pip", "install", str(wheel)], env=env, cwd=tmp_path)

    created = _run([str(bin_dir / "motia-py"), "create", "app"], env=env, cwd=tmp_path)
    deps = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps == [f"motia-py @ {wheel.as_uri()}"]  # the new project installs the same motia-py
    for rule_file in ("AGENTS.md", "CLAUDE.md", ".cursor/rules/motia-py-steps.mdc"):
        assert (tmp_path / "app" / rule_file).is_file()

    commands = [line.strip() for line in created.stderr.rstrip("\n").splitlines()[-2:]]
    assert commands[0].startswith("cd app && ")
    # typed one after the other into one shell, as a user does
    result = _run(["bash", "-ec", "\n".join(commands)], env=env, cwd=tmp_path)
    assert (tmp_path / "app" / ".venv" / "bin" / "motia-py").exists()
    assert "1 passed" in result.stdout and "warning" not in result.stdout.lower(), result.stdout
