"""Job handles end to end against real ``motia-py start`` processes, on SQLite and on Redis: idempotency keys
under concurrent emitters, an event scheduled at a time, cancelling a scheduled event and a running handler
from another process, status and wait with result and progress, and an unknown id on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from motia_py.backends.base import HandleState
from motia_py.client import Client
from motia_py.handles import StepStatus

from .conftest import ProjectFactory
from .processes import lines, start_process, stop, wait_started, wait_until
from .test_fault_processes import backend_env as backend_env  # a fixture: SQLite file or Redis prefix
from .test_fault_processes import cli

pytestmark = [pytest.mark.slow]

FILES = {
    "motia_py.toml": "",
    "flows/f.toml": 'entry_topics = ["keyed", "timed", "slow", "job"]\n',
    "steps/keyed_a.step.py": """
        import os
        from pathlib import Path
        OUT = Path(__file__).resolve().parents[1] / "out"
        config = {"type": "event", "name": "KeyedA", "subscribes": ["keyed"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            with (OUT / f"keyed-a-{os.getpid()}").open("a") as f:
                f.write(f"{input['k']} {ctx.event_id}\\n")
    """,
    "steps/keyed_b.step.py": """
        import os
        from pathlib import Path
        OUT = Path(__file__).resolve().parents[1] / "out"
        config = {"type": "event", "name": "KeyedB", "subscribes": ["keyed"], "emits": [], "flows": ["f"]}
        def handler(input, ctx):
            with (OUT / f"keyed-b-{os.getpid()}").open("a") as f:
                f.write(f"{input['k']} {ctx.event_id}\\n")
    """,
    "steps/timed.step.py": """
        import time
        from pathlib import Path
        OUT = Path(__file__).resolve().parents[1] / "out"
        config = {"type": "event", "name": "Timed", "subscribes": ["timed"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            (OUT / f"timed-{ctx.event_id}").write_text(repr(time.time()))
    """,
    "steps/slow.step.py": """
        import asyncio, time
        from pathlib import Path
        OUT = Path(__file__).resolve().parents[1] / "out"
        config = {"type": "event", "name": "Slow", "subscribes": ["slow"], "emits": [], "flows": ["f"],
                  "infrastructure": {"handler": {"timeout": 120}}}
        async def handler(input, ctx):
            (OUT / f"started-{ctx.event_id}").write_text(repr(time.time()))
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                (OUT / f"stopped-{ctx.event_id}").write_text(repr(time.time()))
                raise
    """,
    "steps/job.step.py": """
        config = {"type": "event", "name": "Job", "subscribes": ["job"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.progress(0.5, "half way", done=len(input["numbers"]) // 2)
            return {"sum": sum(input["numbers"])}
    """,
}

EMITTER = textwrap.dedent("""
    import asyncio, json, sys
    from motia_py.client import Client

    async def main(root, out):
        client = Client.from_project(root)
        keys = [f"key-{k}" for k in range(20)]
        ids = await asyncio.gather(*(client.emit("keyed", {"k": key}, key=key) for _ in range(50) for key in keys))
        await client.aclose()
        with open(out, "w") as f:
            json.dump(ids, f)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.fixture
def root(make_project: ProjectFactory, backend_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project, with the test process on the same backend as its workers."""
    for name, value in backend_env.items():
        monkeypatch.setenv(name, value)
    made = make_project(FILES)
    (made / "out").mkdir()
    return made


def outputs(root: Path, prefix: str) -> list[str]:
    return [line for p in sorted((root / "out").glob(f"{prefix}-*")) for line in lines(p)]


def test_five_processes_emitting_the_same_keys_make_one_event_per_key(root: Path, backend_env: dict[str, str]) -> None:
    worker = start_process(root, "--no-http", "--no-cron", env=backend_env)
    try:
        wait_started(worker)
        env = {**os.environ, **backend_env}
        emitters = [subprocess.Popen([sys.executable, "-c", EMITTER, str(root), str(root / f"ids-{n}.json")],
                                     env=env, stderr=subprocess.PIPE, text=True) for n in range(5)]
        for e in emitters:
            _, err = e.communicate(timeout=120)
            assert e.returncode == 0, err
        ids = [i for n in range(5) for i in json.loads((root / f"ids-{n}.json").read_text())]
        assert len(ids) == 5000 and len(set(ids)) == 20  # every emit of a key got the first event's id
        wait_until(lambda: len(outputs(root, "keyed-a")) + len(outputs(root, "keyed-b")) >= 40, 60,
                   "each event at both subscribers", worker)
        with Client.from_project(root) as client:
            for event_id in set(ids):
                assert client.wait_sync(event_id, timeout=30).state is HandleState.SUCCEEDED
    finally:
        assert stop(worker) == 0
    for step in ("keyed-a", "keyed-b"):
        seen = Counter(outputs(root, step))
        assert len(seen) == 20 and set(seen.values()) == {1}, seen  # 20 events, each delivered once
        assert {line.split()[1] for line in seen} == set(ids)


def test_scheduled_at_a_time_runs_on_time_and_a_cancelled_one_never(root: Path, backend_env: dict[str, str]) -> None:
    worker = start_process(root, "--no-http", "--no-cron", env=backend_env)
    try:
        wait_started(worker)
        with Client.from_project(root) as client:
            due = datetime.now(UTC) + timedelta(seconds=3)
            event_id = client.emit_sync("timed", {}, at=due)
            doomed = client.emit_sync("timed", {}, at=due)
            assert client.status_sync(event_id).state is HandleState.SCHEDULED
            result = cli(root, backend_env, "cancel", doomed)
            assert result.returncode == 0 and "never run" in result.stderr, result.stderr
            ran = root / "out" / f"timed-{event_id}"
            wait_until(ran.exists, 15, "the scheduled event to run", worker)
            assert client.wait_sync(event_id, timeout=10).state is HandleState.SUCCEEDED
            # the cancelled one fell due with the one that ran (claimed together, it would have run too)
            assert client.status_sync(doomed).state is HandleState.CANCELLED
    finally:
        assert stop(worker) == 0
    started = float(ran.read_text())
    assert due.timestamp() <= started <= due.timestamp() + 1.0, started - due.timestamp()
    assert not (root / "out" / f"timed-{doomed}").exists()


def test_a_running_handler_cancelled_from_another_process_stops_within_a_second(
        root: Path, backend_env: dict[str, str]) -> None:
    worker = start_process(root, "--no-http", "--no-cron", env=backend_env)
    try:
        wait_started(worker)
        with Client.from_project(root) as client:
            event_id = client.emit_sync("slow", {})
            wait_until((root / "out" / f"started-{event_id}").exists, 15, "the slow handler to start", worker)
            result = cli(root, backend_env, "cancel", event_id[:12])
            cancelled_at = time.time()
            assert result.returncode == 0 and f"asked Slow to stop {event_id}" in result.stderr, result.stderr
            stopped = root / "out" / f"stopped-{event_id}"
            wait_until(stopped.exists, 5, "the handler to be cancelled", worker)
            status = client.wait_sync(event_id, timeout=10)
        assert float(stopped.read_text()) - cancelled_at < 1.0
        slow = status.steps["Slow"]
        assert (status.state, slow.attempts, slow.error) == (HandleState.CANCELLED, 1, None)
        assert json.loads(cli(root, backend_env, "dlq", "list", "--json").stdout) == []
    finally:
        assert stop(worker) == 0


def test_status_and_wait_give_the_result_and_the_last_progress(root: Path, backend_env: dict[str, str]) -> None:
    worker = start_process(root, "--no-http", "--no-cron", env=backend_env)
    reports: list[StepStatus] = []
    try:
        wait_started(worker)
        with Client.from_project(root) as client:
            event_id = client.emit_sync("job", {"numbers": [1, 2, 3, 4]})
            status = client.wait_sync(event_id, timeout=20, on_progress=reports.append, poll_interval=0.05)
    finally:
        assert stop(worker) == 0
    assert (status.state, status.result, status.progress and status.progress["message"]) == (
        HandleState.SUCCEEDED, {"sum": 10}, "half way")
    assert [r.progress["done"] for r in reports if r.progress] in ([2], [])  # seen if a poll fell mid-run
    shown = cli(root, backend_env, "status", event_id, "--json")
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)["steps"]["Job"]
    assert (job["state"], job["result"], job["progress"]["fraction"], job["attempts"]) == ("succeeded", {"sum": 10},
                                                                                          0.5, 1)


def test_an_unknown_id_is_a_clear_error_without_a_traceback(root: Path, backend_env: dict[str, str]) -> None:
    for command in ("status", "cancel"):
        result = cli(root, backend_env, command, "0123456789abcdef0123456789abcdef")
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("error: no event '0123456789abcdef0123456789abcdef'")
        assert "Traceback" not in result.stderr
