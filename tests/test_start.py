"""``motia-py start`` as a real process on the SQLite default: crashes, shared files, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from motia_py.client import Client

from .conftest import ProjectFactory
from .processes import lines, logs_of, start_process, stop, wait_started, wait_until

pytestmark = pytest.mark.slow

SQLITE = '[backend]\nurl = "sqlite:///.motia/motia.db"\n[worker]\ngrace_period = 10\n'


def sqlite_project(make_project: ProjectFactory, step: str, flow: str = 'entry_topics = ["work"]\n') -> Path:
    return make_project({"motia_py.toml": SQLITE, "flows/f.toml": flow, "steps/work.step.py": step})


def ready_count(root: Path) -> int:
    """Deliveries waiting in the project's backend (read while no worker runs)."""

    async def count() -> int:
        client = Client.from_project(root)
        await client.backend.open()
        try:
            return (await client.backend.stats()).ready
        finally:
            await client.aclose()

    return asyncio.run(count())


def emit(root: Path, topic: str, items: list[dict[str, object]]) -> list[str]:
    client = Client.from_project(root)
    try:
        return [client.emit_sync(topic, item) for item in items]
    finally:
        client.close()


CRASHY = """
    import asyncio, os
    from pathlib import Path
    LOG = Path(__file__).resolve().parents[1] / "runs.log"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"visibilityTimeout": 1}, "handler": {"timeout": 120}}}
    async def handler(input, ctx):
        with LOG.open("a") as f:
            f.write(f"start {input['id']} attempt={ctx.attempt} pid={os.getpid()}\\n")
        if ctx.attempt == 1:
            await asyncio.sleep(60)
        with LOG.open("a") as f:
            f.write(f"done {input['id']}\\n")
"""


def test_a_worker_killed_mid_handler_loses_nothing(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, CRASHY)
    log = root / "runs.log"
    emit(root, "work", [{"id": "e1"}])  # queued before any worker runs
    first = start_process(root, "--no-http")
    wait_until(lambda: any(line.startswith("start e1") for line in lines(log)), 30, "the handler to start", first)
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    second = start_process(root, "--no-http")
    try:
        wait_until(lambda: "done e1" in lines(log), 30, "the event to be redelivered", second)
    finally:
        assert stop(second) == 0
    starts = [line for line in lines(log) if line.startswith("start")]
    assert [s.split()[2] for s in starts] == ["attempt=1", "attempt=2"]  # exactly once more
    assert lines(log).count("done e1") == 1


COUNTING = """
    import os
    import time
    from pathlib import Path
    OUT = Path(__file__).resolve().parents[1] / "handled"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"concurrency": 16}}}
    def handler(input, ctx):
        time.sleep(0.02)  # slow enough that both workers get a share
        OUT.mkdir(exist_ok=True)
        with (OUT / str(os.getpid())).open("a") as f:
            f.write(f"{input['i']}\\n")
"""


def test_two_workers_sharing_one_file_handle_each_of_1000_events_once(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, COUNTING)
    workers = [start_process(root, "--no-http", "--no-cron") for _ in range(2)]
    try:
        for w in workers:
            wait_started(w)
        (root / "events.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
        result = subprocess.run([sys.executable, "-m", "motia_py", "emit", "work", "--file", "events.jsonl",
                                 "--project", str(root)], capture_output=True, text=True, timeout=120, cwd=root)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) == 1000  # one trace id per event, nothing else on stdout

        def handled() -> list[str]:
            out = root / "handled"
            return [x for p in out.iterdir() for x in lines(p)] if out.exists() else []

        wait_until(lambda: len(handled()) >= 1000, 120, "1000 events to be handled")
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    seen = handled()
    assert len(seen) == 1000 and set(seen) == {str(i) for i in range(1000)}
    assert len(list((root / "handled").iterdir())) == 2  # both processes took a share


SLOW = """
    import asyncio
    from pathlib import Path
    LOG = Path(__file__).resolve().parents[1] / "runs.log"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"concurrency": 3}}}
    async def handler(input, ctx):
        with LOG.open("a") as f:
            f.write(f"start {input['i']}\\n")
        await asyncio.sleep(1.0)
        with LOG.open("a") as f:
            f.write(f"done {input['i']}\\n")
"""


def test_sigterm_finishes_in_flight_handlers_and_leaves_the_rest_queued(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, SLOW)
    log = root / "runs.log"
    emit(root, "work", [{"i": i} for i in range(20)])
    worker = start_process(root, "--no-http")
    wait_until(lambda: len([x for x in lines(log) if x.startswith("start")]) >= 3, 30, "3 handlers", worker)
    assert stop(worker, signal.SIGTERM) == 0
    started = [x for x in lines(log) if x.startswith("start")]
    done = [x for x in lines(log) if x.startswith("done")]
    assert len(started) == len(done) >= 3  # every handler that started, finished
    assert any("stopping" in str(r.get("msg")) for r in logs_of(worker))
    assert ready_count(root) == 20 - len(done)


POISON = """
    from pydantic import BaseModel
    class In(BaseModel):
        n: int
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"], "input": In,
              "infrastructure": {"queue": {"maxRetries": 0}}}
    async def handler(input, ctx):
        await ctx.state.set("done", str(input.n), True)
"""


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "motia_py", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=60, cwd=root)


def test_poison_input_is_dead_lettered_and_replay_and_purge_work(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, POISON)
    worker = start_process(root, "--no-http")
    try:
        wait_started(worker)
        assert cli(root, "emit", "work", "--data", '{"n": "oops"}', "--no-check").returncode == 0

        def dead() -> list[dict[str, object]]:
            result = cli(root, "dlq", "list", "--json")
            assert result.returncode == 0, result.stderr
            return list(json.loads(result.stdout))

        wait_until(lambda: len(dead()) == 1, 30, "the dead letter", worker)
        [entry] = dead()
        assert entry["step"] == "Work" and entry["topic"] == "work" and entry["data"] == {"n": "oops"}
        assert entry["attempts"] == 1 and str(entry["error"]).startswith("InputValidationError: n:")
        assert set(entry) >= {"id", "traceback", "failed_at"}
        shown = json.loads(cli(root, "dlq", "show", str(entry["id"])).stdout)
        assert shown["id"] == entry["id"]
        # replay puts it back with fresh attempts; it fails again (same data) and comes back
        assert cli(root, "dlq", "replay", str(entry["id"])).returncode == 0
        wait_until(lambda: len(dead()) == 1 and dead()[0]["id"] != entry["id"], 30, "the replayed dead letter",
                   worker)
        assert dead()[0]["attempts"] == 1
        assert cli(root, "dlq", "purge", "--all").returncode == 0
        assert dead() == []
        assert cli(root, "dlq", "show", "nope").returncode == 1
    finally:
        assert stop(worker) == 0


def test_state_commands_read_and_write_the_backend(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, POISON)
    assert cli(root, "state", "set", "ns", "g", "k", '{"a": 1}').returncode == 0
    got = cli(root, "state", "get", "ns", "g", "k")
    assert got.returncode == 0 and json.loads(got.stdout) == {"a": 1}
    assert json.loads(cli(root, "state", "list", "ns", "g").stdout) == {"k": {"a": 1}}
    assert json.loads(cli(root, "state", "list", "ns").stdout) == {"g": {"k": {"a": 1}}}
    assert cli(root, "state", "delete", "ns", "g", "k").returncode == 0
    missing = cli(root, "state", "get", "ns", "g", "k")
    assert missing.returncode == 1 and missing.stdout == ""
    assert cli(root, "state", "set", "ns", "g", "k", "not json").returncode == 1


def test_emit_refuses_a_topic_nothing_handles(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, POISON)
    result = cli(root, "emit", "wrok", "--data", "{}")
    assert result.returncode == 1 and "did you mean 'work'?" in result.stderr and result.stdout == ""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find child processes")
def test_worker_children_exit_when_the_parent_is_killed(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, COUNTING)
    parent = start_process(root, "--workers", "2", "--no-http")
    wait_started(parent)
    wait_until(lambda: len(_children(parent.pid)) == 2, 30, "two worker children", parent)
    children = _children(parent.pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    wait_until(lambda: not any(_alive(c) for c in children), 15, "the children to exit")
    for c in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(c, os.WNOHANG)


CRON = """
    from pathlib import Path
    LOG = Path(__file__).resolve().parents[1] / "cron.log"
    config = {"type": "cron", "name": "Nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris", "emits": [],
              "flows": ["f"]}
    async def handler(ctx):
        with LOG.open("a") as f:
            f.write(ctx.scheduled_at.isoformat() + "\\n")
"""


def test_cron_list_and_run_work_against_the_backend(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": SQLITE, "steps/nightly.step.py": CRON})
    listed = cli(root, "cron", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["name"] == "Nightly" and row["every"] == "every day at 03:00 Europe/Paris"
    assert row["next"].endswith("+00:00") and row["last_run"] is None
    ran = cli(root, "cron", "run", "Nightly")
    assert ran.returncode == 0 and len(ran.stdout.strip()) == 32  # the trace id, queued for a worker
    assert cli(root, "cron", "run", "Nighty").stderr.count("did you mean 'Nightly'?") == 1
    worker = start_process(root, "--no-http")
    try:
        wait_until(lambda: len(lines(root / "cron.log")) == 1, 30, "the queued tick to run", worker)
        wait_until(lambda: json.loads(cli(root, "cron", "list", "--json").stdout)[0]["last_run"] is not None, 10,
                   "the last run to be recorded", worker)
    finally:
        assert stop(worker) == 0
    [row] = json.loads(cli(root, "cron", "list", "--json").stdout)
    assert row["last_run"]["outcome"] == "ok"


STUCK = """
    import time
    from pathlib import Path
    LOG = Path(__file__).resolve().parents[1] / "runs.log"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
    def handler(input, ctx):
        with LOG.open("a") as f:
            f.write("start\\n")
        time.sleep(60)  # a plain def handler that outlives the grace period
"""


def test_a_stuck_plain_def_handler_does_not_keep_the_worker_alive(make_project: ProjectFactory) -> None:
    root = make_project({"motia_py.toml": SQLITE.replace("grace_period = 10", "grace_period = 1"),
                         "flows/f.toml": 'entry_topics = ["work"]\n', "steps/work.step.py": STUCK})
    emit(root, "work", [{"i": 1}])
    worker = start_process(root, "--no-http")
    wait_until(lambda: lines(root / "runs.log") == ["start"], 30, "the handler to start", worker)
    started = time.monotonic()
    assert stop(worker, signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - started < 10  # the grace period, not the handler's 60 s
    assert ready_count(root) == 1  # handed back: another worker runs it again
