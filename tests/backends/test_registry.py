"""Backends are found by URL scheme through the ``motia_py.backends`` entry-point group."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from motia_py.backends.registry import BackendOptions, available_schemes, create_backend
from motia_py.errors import UnknownBackendError
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings

from ..conftest import ProjectFactory


def install_outside_backend(site: Path) -> None:
    """A separate distribution (as pip would install it) that registers ``fake://``."""
    (site / "fakebackend.py").write_text(textwrap.dedent("""
        from motia_py.backends.memory import MemoryBackend

        class FakeBackend(MemoryBackend):
            created = []

        def create_backend(url, options):
            backend = FakeBackend(url, clock=options.clock)
            FakeBackend.created.append(backend)
            return backend
    """))
    dist = site / "motia_py_fake_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: motia-py-fake-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[motia_py.backends]\nfake = fakebackend:create_backend\n")


def test_builtin_backends_are_registered_as_entry_points() -> None:
    assert {"memory", "sqlite", "redis"} <= set(available_schemes())


def test_an_unknown_scheme_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'redis'"):
        create_backend("rediss2://x", BackendOptions(root=tmp_path))
    with pytest.raises(UnknownBackendError, match=r"known: .*memory"):
        create_backend("postgres://x", BackendOptions(root=tmp_path))


async def test_a_backend_registered_from_outside_runs_a_project(tmp_path: Path, make_project: ProjectFactory,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_outside_backend(site)
    monkeypatch.syspath_prepend(str(site))
    assert "fake" in available_schemes()
    root = make_project({
        "motia_py.toml": '[backend]\nurl = "fake://anything"\n',
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                await ctx.state.set("g", "k", input)
        """,
    })
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    backend = backend_for(settings)
    assert type(backend).__name__ == "FakeBackend"
    async with Runtime(project, backend, cron=False, poll_s=0.01) as rt:
        await rt.router.emit("go", {"x": 1})
        for _ in range(200):
            if await backend.state_get("f", "g", "k"):
                break
            import asyncio

            await asyncio.sleep(0.005)
    assert await backend.state_get("f", "g", "k") == '{"x":1}'
