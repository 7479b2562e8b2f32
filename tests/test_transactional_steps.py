"""Transactional steps as a user writes them: the config key and the project default, the validation of a
backend that cannot commit them, ``ctx.idempotency_key``, plain ``def`` handlers, and the buffered state's
own rules (the backend contracts are in ``tests/backends/test_tx_*_contract.py``)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from motia_py import EventConfig
from motia_py.backends.base import Envelope, Outgoing, Target, new_id
from motia_py.backends.memory import MemoryBackend
from motia_py.config import build_step
from motia_py.errors import StepConfigError
from motia_py.runtime import load_project
from motia_py.settings import load_settings
from motia_py.testing import Harness
from motia_py.transactions import is_transactional
from motia_py.tx_state import Transaction, TxState

from .conftest import ProjectFactory

FLOW = 'entry_topics = ["go"]\n'


def install_backend_without_transactions(site: Path) -> None:
    """A separate distribution registering ``txless://``: the memory backend's stores except ``complete_tx``."""
    (site / "txlessbackend.py").write_text(textwrap.dedent("""
        from motia_py.backends.memory import MemoryBackend
        from motia_py.backends.stores import CoreBackend, LeaseStore, TraceStore
        from motia_py.backends.compose import members

        class TxlessBackend:
            def __init__(self, url, clock):
                self.url = url
                self.inner = MemoryBackend(url, clock=clock)
                for protocol in (CoreBackend, LeaseStore, TraceStore):
                    for name in members(protocol):
                        if name != "url":
                            setattr(self, name, getattr(self.inner, name))

        def create_backend(url, options):
            return TxlessBackend(url, options.clock)
    """))
    dist = site / "motia_py_txless_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: motia-py-txless-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[motia_py.backends]\ntxless = txlessbackend:create_backend\n")


async def _handler(input: Any, ctx: Any) -> None:
    pass


def test_transactional_is_a_checked_key_of_event_cron_and_api_steps(tmp_path: Path) -> None:
    event = {"type": "event", "name": "E", "subscribes": ["go"], "transactional": True}
    assert build_step(event, _handler, tmp_path / "e.step.py").transactional is True
    assert build_step({**event, "transactional": None}, _handler, tmp_path / "e.step.py").transactional is None
    cron = {"type": "cron", "name": "C", "cron": "* * * * *", "transactional": False}
    assert build_step(cron, lambda ctx: None, tmp_path / "c.step.py").transactional is False
    state = {"type": "state", "name": "S", "watch": {"group": "g"}, "transactional": True}
    assert build_step(state, _handler, tmp_path / "s.step.py").transactional is True
    typed = EventConfig(name="T", subscribes=["go"], transactional=True)
    assert build_step(typed, _handler, tmp_path / "t.step.py").transactional is True

    with pytest.raises(StepConfigError, match="'transactional' must be true or false") as exc:
        build_step({**event, "transactional": "yes"}, _handler, tmp_path / "e.step.py")
    assert exc.value.field == "transactional"
    with pytest.raises(StepConfigError, match="unknown key 'transactional'"):
        build_step({"type": "noop", "name": "N", "virtualEmits": ["x"], "transactional": True}, None,
                   tmp_path / "n.step.py")


def test_the_project_default_makes_steps_transactional_unless_they_say_no(make_project: ProjectFactory) -> None:
    step = """
        config = {{"type": "event", "name": "{name}", "subscribes": ["go"], "emits": [], "flows": ["f"]{extra}}}
        async def handler(input, ctx):
            pass
    """
    root = make_project({
        "motia_py.toml": '[backend]\nurl = "memory://"\n[project]\ntransactional = true\n',
        "flows/f.toml": FLOW,
        "steps/a.step.py": step.format(name="A", extra=""),
        "steps/b.step.py": step.format(name="B", extra=', "transactional": False'),
    })
    project, _ = load_project(load_settings(root, env={}))
    assert {s.name: is_transactional(project, s) for s in project.steps} == {"A": True, "B": False}
    project, _ = load_project(load_settings(root, env={"MOTIA_PY_TRANSACTIONAL": "0"}))
    assert {s.name: is_transactional(project, s) for s in project.steps} == {"A": False, "B": False}


def test_validate_reports_transactional_steps_on_a_backend_without_atomic_commits(
        tmp_path: Path, make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install_backend_without_transactions(site)
    monkeypatch.syspath_prepend(str(site))
    files = {
        "flows/f.toml": FLOW,
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": [], "flows": ["f"],
                      "transactional": True}
            async def handler(input, ctx):
                pass
        """,
    }
    root = make_project({**files, "motia_py.toml": '[backend]\nurl = "txless://anything"\n'})
    _, findings = load_project(load_settings(root, env={}))
    [finding] = [f for f in findings if f.code == "transactional-unsupported"]
    assert (finding.severity.value, finding.step, finding.field) == ("error", "A", "transactional")
    assert "txless:// backend cannot commit" in finding.message

    for url in ("memory://", f"sqlite:///{tmp_path / 'm.db'}"):
        _, findings = load_project(load_settings(root, env={"MOTIA_PY_BACKEND_URL": url}))
        assert [f.code for f in findings if f.code == "transactional-unsupported"] == []


KEYS_PROJECT = {
    "flows/f.toml": FLOW,
    "steps/a.step.py": """
        config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 2}}}
        async def handler(input, ctx):
            await ctx.state.set("keys", f"A-{input}-{ctx.attempt}", ctx.idempotency_key)
            if ctx.attempt == 1:
                raise RuntimeError("the payment API timed out")
    """,
    "steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["go"], "emits": [], "flows": ["f"],
                  "transactional": True}
        def handler(input, ctx):
            ctx.state.set("keys", f"B-{input}-{ctx.attempt}", ctx.idempotency_key)
    """,
}


async def test_idempotency_key_is_stable_across_retries_and_differs_per_step_and_event(
        make_project: ProjectFactory) -> None:
    async with Harness(make_project(KEYS_PROJECT)) as h:
        await h.emit("go", 1)
        await h.emit("go", 2)
        await h.run_until_idle()
        keys = await h.state("f").items("keys")
    assert sorted(keys) == ["A-1-1", "A-1-2", "A-2-1", "A-2-2", "B-1-1", "B-2-1"]
    assert keys["A-1-1"] == keys["A-1-2"] and keys["A-2-1"] == keys["A-2-2"]  # the retry reuses it
    assert len({keys["A-1-1"], keys["A-2-1"], keys["B-1-1"], keys["B-2-1"]}) == 4
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys.values())


async def test_a_plain_def_handler_gets_the_buffered_state_too(make_project: ProjectFactory) -> None:
    root = make_project({"flows/f.toml": FLOW, "steps/s.step.py": """
        config = {"type": "event", "name": "S", "subscribes": ["go"], "emits": [], "flows": ["f"],
                  "transactional": True, "infrastructure": {"queue": {"maxRetries": 0}}}
        def handler(input, ctx):
            ctx.state.update("g", "n", lambda n: (n or 0) + 1)
            ctx.state.set("g", "seen", ctx.state.get("g", "n"))
            if input == "fail":
                raise ValueError("no")
    """})
    async with Harness(root) as h:
        await h.emit("go", "ok")
        await h.run_until_idle()
        await h.emit("go", "fail")
        await h.run_until_idle()
        assert await h.state("f").items("g") == {"n": 1, "seen": 1}
        assert [r.outcome.value for r in h.runs_of("S")] == ["ok", "dead"]


async def test_buffered_state_answers_groups_and_clears_as_the_commit_will_leave_them() -> None:
    backend = MemoryBackend()
    await backend.state_set("ns", "a", "x", "1")
    await backend.state_set("ns", "b", "y", "2")
    tx = Transaction()
    state = TxState(backend, "ns", tx)

    await state.clear("a")
    await state.set("c", "z", 3)
    assert await state.groups() == ["b", "c"]
    assert await state.items("a") == {}
    await state.set("a", "w", 4)
    assert await state.get_group("a") == [4]
    assert await state.delete("b", "y") == 2
    assert await state.get("b", "y") is None

    assert await backend.complete_tx(None, [], tx.writes(), tx.reads()) == "ok"
    assert {g: await backend.state_items("ns", g) for g in ("a", "b", "c")} == {
        "a": {"w": "4"}, "b": {}, "c": {"z": "3"}}


async def test_a_key_read_twice_answers_the_first_value_read() -> None:
    backend = MemoryBackend()
    await backend.state_set("ns", "g", "k", "1")
    state = TxState(backend, "ns", Transaction())
    assert await state.get("g", "k") == 1
    await backend.state_set("ns", "g", "k", "2")  # another writer: the commit will conflict
    assert await state.get("g", "k") == 1
    assert await state.items("g") == {"k": 2}  # a group listing reads the group as it is now
    tx = state.tx
    assert await backend.complete_tx(None, [], tx.writes(), tx.reads()) == "conflict"


async def test_clearing_a_watched_group_commits_one_change_event_per_key_it_held() -> None:
    backend = MemoryBackend()
    await backend.state_set("ns", "g", "a", "1")
    await backend.state_set("ns", "g", "b", "2")

    def notify(group: str, key: str) -> Outgoing:
        env = Envelope(id=new_id(), topic="state:ns", data_json="null", trace_id="t", emitted_at=0.0)
        return Outgoing(env, (Target("Watcher"),))

    tx = Transaction()
    await TxState(backend, "ns", tx, notify).clear("g")
    await backend.state_set("ns", "g", "c", "3")  # another writer adds a key: the clear must not miss it
    assert await backend.complete_tx(None, [], tx.writes(), tx.reads()) == "conflict"

    tx = Transaction()
    await TxState(backend, "ns", tx, notify).clear("g")
    assert await backend.complete_tx(None, [], tx.writes(), tx.reads()) == "ok"
    assert await backend.state_items("ns", "g") == {}
    events = [d.envelope.data for d in await backend.claim("Watcher", 10, 30.0)]
    assert sorted((e["item_id"], e["old_value"], e["new_value"]) for e in events) == [
        ("a", 1, None), ("b", 2, None), ("c", 3, None)]
