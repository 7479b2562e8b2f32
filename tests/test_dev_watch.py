"""The dev server's pieces without a subprocess: which saves trigger a reload, the watcher that sees every
save from the moment it starts, and the ``+ / ~ / -`` diff a reload prints."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path

import pytest
from watchfiles import Change

from motia_py.dev import ProjectFilter, ProjectWatcher, diff_projects, step_fingerprints
from motia_py.discovery import discover, find_step_files
from motia_py.settings import load_settings

from .conftest import ProjectFactory


def event_step(name: str, body: str = "pass") -> str:
    return textwrap.dedent(f"""
        config = {{"type": "event", "name": "{name}", "subscribes": ["t"], "emits": [], "flows": ["f"]}}
        async def handler(input, ctx):
            {body}
    """)


@pytest.fixture
def reload_filter(make_project: ProjectFactory) -> tuple[Path, ProjectFilter]:
    root = make_project({"steps/a.step.py": event_step("A")})
    return root, ProjectFilter(load_settings(root))


@pytest.mark.parametrize("rel", [
    "steps/a.step.py",
    "steps/jobs/deep/b_step.py",
    "services/email.py",  # a helper a step imports
    "motia_py.toml",
    "flows/f.toml",
])
@pytest.mark.parametrize("change", [Change.added, Change.modified, Change.deleted])
def test_python_files_settings_and_flows_trigger_a_reload(reload_filter: tuple[Path, ProjectFilter], rel: str,
                                                          change: Change) -> None:
    root, accepts = reload_filter
    assert accepts(change, str(root / rel))


@pytest.mark.parametrize("rel", [
    ".motia/motia.db",
    ".motia/motia.db-wal",
    ".motia/x.py",  # a Python file, but in the state directory
    "dev.log",
    "logs/worker.log",
    "notes.txt",
    "steps/README.md",
    "pyproject.toml",  # only motia_py.toml is a settings file
    "flows/old/f.toml",  # flows are the files directly in flows/
    "steps/a.step.py.swp",
    "__pycache__/a.py",
    "node_modules/pkg/index.py",
    "venv/lib/site.py",
    ".venv/lib/site.py",
    ".git/hooks/pre_commit.py",
    "steps/.scratch/c.step.py",
])
def test_state_logs_other_files_and_ignored_dirs_never_trigger_a_reload(reload_filter: tuple[Path, ProjectFilter],
                                                                        rel: str) -> None:
    root, accepts = reload_filter
    assert not accepts(Change.modified, str(root / rel))


def test_a_python_file_outside_the_project_never_triggers_a_reload(reload_filter: tuple[Path, ProjectFilter]
                                                                   ) -> None:
    root, accepts = reload_filter
    assert not accepts(Change.modified, str(root.parent / "elsewhere.py"))


@pytest.mark.parametrize("parent", ["venv", ".projects"])
def test_a_project_kept_under_an_ignored_looking_directory_still_reloads(make_project: ProjectFactory,
                                                                         tmp_path: Path, parent: str) -> None:
    root = make_project({"steps/a.step.py": event_step("A")}, tmp_path / parent / "app")
    assert ProjectFilter(load_settings(root))(Change.modified, str(root / "steps/a.step.py"))


@pytest.mark.parametrize("ignored", [".motia", ".venv", "venv", "__pycache__", "node_modules", ".git",
                                     ".mypy_cache"])
def test_discovery_and_the_watcher_skip_the_same_directories(make_project: ProjectFactory, ignored: str) -> None:
    root = make_project({f"steps/{ignored}/x.step.py": event_step("X"), "steps/sub/y.step.py": event_step("Y")})
    settings = load_settings(root)
    accepts = ProjectFilter(settings)
    assert find_step_files(settings.steps_dir) == [root / "steps/sub/y.step.py"]
    assert accepts(Change.modified, str(root / "steps/sub/y.step.py"))
    assert not accepts(Change.modified, str(root / f"steps/{ignored}/x.step.py"))


async def test_a_save_made_as_soon_as_watching_starts_is_in_the_first_batch(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": event_step("A")})
    async with ProjectWatcher(load_settings(root), asyncio.Event()) as watcher:
        (root / ".motia").mkdir(exist_ok=True)
        (root / ".motia/x.py").write_text("x = 1\n")
        (root / "steps/a.step.py").write_text(event_step("A", "return None"))
        async with contextlib.aclosing(watcher.batches()) as batches:
            batch = await asyncio.wait_for(anext(batches), 5)
    assert {Path(p).relative_to(root).as_posix() for _, p in batch} == {"steps/a.step.py"}


def test_the_diff_names_added_changed_and_removed_steps(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": event_step("A"), "steps/b.step.py": event_step("B"),
                         "steps/c.step.py": event_step("C")})
    settings = load_settings(root)
    before = step_fingerprints(discover(settings).steps)
    (root / "steps/b.step.py").write_text(event_step("B", "return None"))
    (root / "steps/c.step.py").unlink()
    (root / "steps/d.step.py").write_text(event_step("D"))
    diff = diff_projects(before, step_fingerprints(discover(settings).steps))
    assert diff.render() == "+ D, ~ B, - C"


def test_a_file_saved_unchanged_is_no_change(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": event_step("A")})
    settings = load_settings(root)
    before = step_fingerprints(discover(settings).steps)
    (root / "steps/a.step.py").write_text((root / "steps/a.step.py").read_text())
    assert diff_projects(before, step_fingerprints(discover(settings).steps)).render() == "no step changed"


def test_a_renamed_step_is_one_added_and_one_removed(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a.step.py": event_step("Old")})
    settings = load_settings(root)
    before = step_fingerprints(discover(settings).steps)
    (root / "steps/a.step.py").write_text(event_step("New"))
    assert diff_projects(before, step_fingerprints(discover(settings).steps)).render() == "+ New, - Old"
