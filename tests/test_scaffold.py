"""``motia-py create``: the project's pyproject.toml, the two commands it prints, a test run without warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from motia_py import rules
from motia_py.cli import main
from motia_py.scaffold import TEST_REQUIREMENTS, next_commands, pyproject, requirement_from


def create(target: Path, capsys: pytest.CaptureFixture[str]) -> str:
    try:
        main(["create", str(target)])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().err


def test_create_writes_a_pyproject_with_motia_py_and_the_test_tools(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "My Shop"
    create(target, capsys)
    doc = tomllib.loads((target / "pyproject.toml").read_text())
    assert doc["project"]["name"] == "my-shop"
    [motia] = doc["project"]["dependencies"]
    assert motia.startswith("motia-py")
    assert doc["project"]["optional-dependencies"]["test"] == list(TEST_REQUIREMENTS)
    assert doc["tool"]["setuptools"]["packages"] == []  # an application: `pip install -e .` packages nothing


def test_create_writes_the_assistant_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = create(tmp_path / "app", capsys)
    for rel, text in rules.render_all().items():
        assert (tmp_path / "app" / rel).read_text() == text
        assert f"created {tmp_path / 'app' / rel}" in err


def test_create_ends_with_the_two_commands_that_set_up_and_test_the_project(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "app"
    err = create(target, capsys)
    assert err.rstrip("\n").splitlines()[-2:] == [f"  {c}" for c in next_commands(target)]
    first, second = next_commands(target)
    assert first == f"cd {target} && python3 -m venv .venv && .venv/bin/python -m pip install -e '.[test]'"
    assert second == ".venv/bin/python -m pytest"
    assert next_commands(tmp_path / "my app")[0].startswith(f"cd '{tmp_path / 'my app'}' && ")


def test_the_scaffolded_test_passes_without_a_single_warning(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "app"
    create(target, capsys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=target, env=env,
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "1 passed" in out and "warning" not in out.lower()


@pytest.mark.parametrize(("direct_url", "requirement"), [
    (None, "motia-py>=0.1.0"),
    ({"url": "file:///wheels/motia_py-0.1.0-py3-none-any.whl", "archive_info": {}},
     "motia-py @ file:///wheels/motia_py-0.1.0-py3-none-any.whl"),
    ({"url": "file:///src/motia-py", "dir_info": {"editable": True}}, "motia-py @ file:///src/motia-py"),
    ({"url": "https://example.com/org/motia-py.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}},
     "motia-py @ git+https://example.com/org/motia-py.git@abc123"),
    ({"url": "https://example.com/mono.git", "subdirectory": "py", "vcs_info": {"vcs": "git", "commit_id": "f00"}},
     "motia-py @ git+https://example.com/mono.git@f00#subdirectory=py"),
    ({"no": "url"}, "motia-py>=0.1.0"),
])
def test_the_requirement_names_where_motia_py_was_installed_from(direct_url: object, requirement: str) -> None:
    assert requirement_from(direct_url, "0.1.0") == requirement


def test_a_direct_reference_is_explained_in_the_pyproject(tmp_path: Path) -> None:
    text = pyproject(tmp_path / "app", "motia-py @ file:///wheels/motia_py-0.1.0-py3-none-any.whl")
    assert "once motia-py comes from\n    # your package index" in text
    assert tomllib.loads(text)["project"]["dependencies"] == ["motia-py @ file:///wheels/motia_py-0.1.0-py3-none-any.whl"]
    assert "# motia-py from" not in pyproject(tmp_path / "app", "motia-py>=0.1.0")
