"""``motia-py start`` processes on one Redis: shared work, a SIGKILLed worker, cron, a Redis restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from .backends.test_redis import check_reachable, delete_prefix, new_prefix, private_redis, redis_url
from .conftest import ProjectFactory
from .processes import in_flight, lines, start_process, stop, wait_started, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    url = redis_url()
    check_reachable(url)
    prefix = new_prefix()
    yield {"MOTIA_PY_BACKEND_URL": url, "MOTIA_PY_BACKEND_PREFIX": prefix}
    asyncio.run(delete_prefix(url, prefix))


WORK = """
    import asyncio, os
    from pathlib import Path
    OUT = Path(__file__).resolve().parents[1] / "out"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": {"concurrency": 8, "visibilityTimeout": 1}}}
    async def handler(input, ctx):
        OUT.mkdir(exist_ok=True)
        with (OUT / f"start-{os.getpid()}").open("a") as f:
            f.write(f"{input['i']} {ctx.attempt}\\n")
        await asyncio.sleep(DELAY)
        with (OUT / f"done-{os.getpid()}").open("a") as f:
            f.write(f"{input['i']}\\n")
"""


def project(make_project: ProjectFactory, delay: float) -> Path:
    return make_project({"motia_py.toml": "", "flows/f.toml": 'entry_topics = ["work"]\n',
                         "steps/work.step.py": WORK.replace("DELAY", repr(delay))})


def collected(root: Path, kind: str) -> list[str]:
    out = root / "out"
    return [x for p in out.glob(f"{kind}-*") for x in lines(p)] if out.exists() else []


def emit_all(root: Path, env: dict[str, str], n: int) -> None:
    (root / "events.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    result = subprocess.run([sys.executable, "-m", "motia_py", "emit", "work", "--file", "events.jsonl",
                             "--project", str(root)], capture_output=True, text=True, timeout=120, cwd=root,
                            env={**__import__("os").environ, **env})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == n


def test_three_workers_share_1000_events_each_handled_once(make_project: ProjectFactory,
                                                           redis_env: dict[str, str]) -> None:
    root = project(make_project, 0.002)
    workers = [start_process(root, "--no-http", "--no-cron", env=redis_env) for _ in range(3)]
    try:
        for w in workers:
            wait_started(w)
        emit_all(root, redis_env, 1000)
        wait_until(lambda: len(collected(root, "done")) >= 1000, 120, "1000 events")
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0]
    done = collected(root, "done")
    assert len(done) == 1000 and set(done) == {str(i) for i in range(1000)}
    assert len(list((root / "out").glob("done-*"))) == 3  # every worker took a share


def test_a_sigkilled_workers_events_are_finished_by_the_others(make_project: ProjectFactory,
                                                               redis_env: dict[str, str]) -> None:
    root = project(make_project, 0.2)
    workers = [start_process(root, "--no-http", "--no-cron", env=redis_env) for _ in range(3)]
    try:
        for w in workers:
            wait_started(w)
        emit_all(root, redis_env, 120)
        victim = workers[0]
        victim_starts = root / "out" / f"start-{victim.pid}"
        victim_dones = root / "out" / f"done-{victim.pid}"
        wait_until(lambda: in_flight(victim_starts, victim_dones), 30, "the victim to be mid-handler")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        wait_until(lambda: set(collected(root, "done")) >= {str(i) for i in range(120)}, 60, "every event")
    finally:
        for w in workers[1:]:
            assert stop(w) == 0
    victim_done = set(lines(root / "out" / f"done-{victim.pid}"))
    unfinished = {x.split()[0] for x in lines(victim_starts)} - victim_done
    assert unfinished, "the victim was killed with handlers in flight"
    redelivered = {x.split()[0] for p in (root / "out").glob("start-*") if p != victim_starts
                   for x in lines(p) if x.split()[1] != "1"}
    assert unfinished <= redelivered  # its in-flight events came back to the others, attempt 2+


def test_cron_fires_once_per_tick_with_two_workers(make_project: ProjectFactory,
                                                   redis_env: dict[str, str]) -> None:
    root = make_project({"motia_py.toml": "", "steps/tick.step.py": """
        import os
        from pathlib import Path
        LOG = Path(__file__).resolve().parents[1] / "ticks.log"
        config = {"type": "cron", "name": "Tick", "cron": "* * * * * *", "emits": [], "flows": ["f"]}
        async def handler(ctx):
            with LOG.open("a") as f:
                f.write(f"{ctx.scheduled_at.isoformat()} {os.getpid()}\\n")
    """})
    log = root / "ticks.log"
    workers = [start_process(root, "--no-http", env=redis_env) for _ in range(2)]
    try:
        for w in workers:
            wait_started(w)
        wait_until(lambda: len(lines(log)) >= 6, 20, "six ticks")
    finally:
        assert [stop(w) for w in workers] == [0, 0]
    ticks = [x.split()[0] for x in lines(log)]
    assert len(ticks) >= 4 and max(Counter(ticks).values()) == 1
    times = sorted(datetime.fromisoformat(t) for t in ticks)
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {1.0}


def test_a_redis_restart_mid_run_loses_no_acknowledged_event(make_project: ProjectFactory,
                                                              tmp_path: Path) -> None:
    check_reachable(redis_url())  # same rule as the other Redis tests: never skipped silently in CI
    root = project(make_project, 0.05)
    data = tmp_path / "redis-data"
    data.mkdir()
    with private_redis(data) as start_redis:
        server = start_redis()
        env = {"MOTIA_PY_BACKEND_URL": f"redis://127.0.0.1:{start_redis.port}/0"}  # type: ignore[attr-defined]
        worker = start_process(root, "--no-http", "--no-cron", env=env)
        try:
            wait_started(worker)
            emit_all(root, env, 300)  # every publish acknowledged (fsync-always AOF)
            wait_until(lambda: len(collected(root, "done")) >= 20, 30, "some progress", worker)
            server.send_signal(signal.SIGKILL)
            server.wait()
            # the worker runs on without Redis: past redis-py's own retries, it reports the outage and waits
            wait_until(lambda: "backend unavailable" in Path(worker.log_path).read_text(),  # type: ignore[attr-defined]
                       30, "the outage to be reported", worker)
            assert worker.poll() is None
            start_redis()
            wait_until(lambda: set(collected(root, "done")) >= {str(i) for i in range(300)}, 60,
                       "every event after the restart", worker)
        finally:
            assert stop(worker) == 0
    log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "backend unavailable" in log and "reachable again" in log
