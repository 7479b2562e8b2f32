"""Backends are found by URL scheme through the ``motia_py.backends`` entry-point group."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from motia_py.backends.derived import RESERVED_NAMESPACE
from motia_py.backends.registry import BackendOptions, available_schemes, create_backend
from motia_py.errors import UnknownBackendError
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings
from motia_py.tracing import TraceSettings

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
    assert {"memory", "sqlite", "redis", "postgres", "postgresql"} <= set(available_schemes())


def test_an_unknown_scheme_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownBackendError, match="did you mean 'redis'"):
        create_backend("rediss2://x", BackendOptions(root=tmp_path))
    with pytest.raises(UnknownBackendError, match=r"known: .*memory"):
        create_backend("mysql://x", BackendOptions(root=tmp_path))


def install_queue_and_state_backend(site: Path) -> None:
    """A separate distribution registering ``qs://``, whose backend has the queue and state stores only."""
    (site / "qsbackend.py").write_text(textwrap.dedent("""
        from motia_py.backends.memory import MemoryBackend

        QUEUE_AND_STATE = ("publish", "claim", "hand_back", "complete", "retry", "dead_letter", "extend", "wait",
                           "stats", "step_stats", "dlq_list", "dlq_get", "dlq_replay", "dlq_purge", "state_get",
                           "state_set", "state_delete", "state_items", "state_groups", "state_clear", "state_cas")

        class QueueAndStateBackend:
            created = []

            def __init__(self, url, clock):
                self.url = url
                self.inner = MemoryBackend(url, clock=clock)
                for name in QUEUE_AND_STATE:
                    setattr(self, name, getattr(self.inner, name))

            async def open(self):
                await self.inner.open()

            async def close(self):
                await self.inner.close()

        def create_backend(url, options):
            backend = QueueAndStateBackend(url, options.clock)
            QueueAndStateBackend.created.append(backend)
            return backend
    """))
    dist = site / "motia_py_qs_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: motia-py-qs-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[motia_py.backends]\nqs = qsbackend:create_backend\n")


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
        await rt.wait_idle(timeout_s=10)
        assert await backend.state_get("f", "g", "k") == '{"x":1}'


async def test_a_backend_with_only_queue_and_state_gets_leases_metadata_traces_and_handles(
    tmp_path: Path, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_queue_and_state_backend(site)
    monkeypatch.syspath_prepend(str(site))
    root = make_project({
        "motia_py.toml": '[backend]\nurl = "qs://anything"\n',
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": ["next"], "flows": ["f"]}
            async def handler(input, ctx):
                ctx.logger.info("a ran")
                await ctx.emit("next", input)
        """,
        "steps/b.step.py": """
            config = {"type": "event", "name": "B", "subscribes": ["next"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                await ctx.state.set("g", "k", input)
        """,
    })
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    backend = backend_for(settings)
    [core] = sys.modules["qsbackend"].QueueAndStateBackend.created
    assert not hasattr(core, "acquire") and not hasattr(core, "traces_add")  # it really lacks them

    async with Runtime(project, backend, cron=False, poll_s=0.01, traces=TraceSettings()) as rt:
        trace_id = await rt.router.emit("go", {"x": 1})
        await rt.wait_idle(timeout_s=10)
        assert rt.recorder is not None
        await rt.recorder.flush()

        runs = [json.loads(r) for r in await backend.traces_get(trace_id)]
        assert [(r["step"], r["outcome"]) for r in runs] == [("A", "ok"), ("B", "ok")]
        assert [line["msg"] for line in runs[0]["logs"]] == ["a ran"]
        assert await backend.traces_recent(10) == [trace_id]
        assert await backend.state_get("f", "g", "k") == '{"x":1}'
        assert await backend.acquire("lock", "me", 60) and not await backend.acquire("lock", "you", 60)
        assert await backend.meta_cas("m", None, "1") and await backend.meta_get("m") == "1"
        handle = await backend.handle_get(trace_id)  # the emit's event id is its trace id
        assert handle is not None and [(s.step, s.state.value) for s in handle.steps] == [("A", "succeeded")]
        # everything the defaults keep lives in the backend's own state store, in the reserved namespace
        assert await core.state_groups(RESERVED_NAMESPACE) == ["handles", "leases", "meta", "trace-runs", "traces"]


def test_a_factory_result_without_the_queue_store_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "halfbackend.py").write_text(textwrap.dedent("""
        class StateOnly:
            url = "half://"
            async def open(self): ...
            async def close(self): ...
            async def state_get(self, namespace, group, key): ...

        def create_backend(url, options):
            return StateOnly()
    """))
    dist = site / "motia_py_half-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: motia-py-half\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[motia_py.backends]\nhalf = halfbackend:create_backend\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UnknownBackendError, match=r"StateOnly is not a backend: it lacks state_set, .*publish"):
        create_backend("half://x", BackendOptions(root=tmp_path))
