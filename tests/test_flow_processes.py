"""Flow control across three real ``motia-py start`` processes, on SQLite and on Redis: a rate limit, one
running event per key, a priority event behind a thousand others, and a worker SIGKILLed while it holds
the step's only slot. The handlers record what they did (wall-clock times, shared by every process of
this machine); the tests judge from those records."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .backends.postgres_support import check_reachable as check_postgres
from .backends.postgres_support import drop_schema, new_schema, postgres_url
from .backends.test_redis import check_reachable, delete_prefix, new_prefix, redis_url
from .conftest import ProjectFactory
from .processes import lines, start_process, stop, wait_started, wait_until

pytestmark = [pytest.mark.slow]

STEP = """
    import asyncio, os, time
    from pathlib import Path
    OUT = Path(__file__).resolve().parents[1] / "out"
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"],
              "infrastructure": {"queue": QUEUE}}
    async def handler(input, ctx):
        began = time.time()
        OUT.mkdir(exist_ok=True)
        with (OUT / f"run-{os.getpid()}").open("a") as f:
            f.write(f"start {input['i']} {input.get('k', '-')} {began!r} {ctx.attempt}\\n")
        await asyncio.sleep(DELAY)
        with (OUT / f"run-{os.getpid()}").open("a") as f:
            f.write(f"end {input['i']} {input.get('k', '-')} {time.time()!r} {ctx.attempt}\\n")
"""


@dataclass(frozen=True)
class Run:
    """What a handler recorded: its event, key, pid and when it started and ended (None: never ended)."""

    i: str
    key: str
    pid: int
    start: float
    end: float | None


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment selecting a fresh backend: a SQLite file, a private key prefix on Redis, or a
    fresh schema on PostgreSQL."""
    if request.param == "sqlite":
        yield {"MOTIA_PY_BACKEND_URL": f"sqlite:///{tmp_path / 'motia.db'}"}
        return
    if request.param == "postgres":
        pg = postgres_url()
        check_postgres(pg)
        schema = new_schema()
        yield {"MOTIA_PY_BACKEND_URL": pg, "MOTIA_PY_BACKEND_PREFIX": schema}
        asyncio.run(drop_schema(pg, schema))
        return
    url = redis_url()
    check_reachable(url)
    prefix = new_prefix()
    yield {"MOTIA_PY_BACKEND_URL": url, "MOTIA_PY_BACKEND_PREFIX": prefix}
    asyncio.run(delete_prefix(url, prefix))


def project(make_project: ProjectFactory, queue: dict[str, object], delay: float) -> Path:
    step = STEP.replace("QUEUE", repr(queue)).replace("DELAY", repr(delay))
    return make_project({"motia_py.toml": "", "flows/f.toml": 'entry_topics = ["work"]\n',
                         "steps/work.step.py": step})


def runs(root: Path) -> list[Run]:
    """Every handler run so far, by start time."""
    starts: dict[tuple[int, str, str], tuple[str, float]] = {}
    ends: dict[tuple[int, str, str], float] = {}
    for path in (root / "out").glob("run-*") if (root / "out").exists() else []:
        pid = int(path.name.removeprefix("run-"))
        for line in lines(path):
            kind, i, key, at, attempt = line.split()
            if kind == "start":
                starts[(pid, i, attempt)] = (key, float(at))
            else:
                ends[(pid, i, attempt)] = float(at)
    out = [Run(i, key, pid, at, ends.get((pid, i, attempt))) for (pid, i, attempt), (key, at) in starts.items()]
    return sorted(out, key=lambda r: r.start)


def finished(root: Path) -> set[str]:
    return {r.i for r in runs(root) if r.end is not None}


def emit(root: Path, env: dict[str, str], events: list[dict[str, object]], *flags: str) -> None:
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    result = subprocess.run([sys.executable, "-m", "motia_py", "emit", "work", "--file", "events.jsonl", *flags,
                             "--project", str(root)], capture_output=True, text=True, timeout=120, cwd=root,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr


def workers(root: Path, env: dict[str, str]) -> list[subprocess.Popen[str]]:
    procs = [start_process(root, "--no-http", "--no-cron", env=env) for _ in range(3)]
    for p in procs:
        wait_started(p)
    return procs


@pytest.mark.serial  # it judges handler start times: a test process beside it can stall a worker past the slack
def test_a_rate_limit_holds_across_three_workers(make_project: ProjectFactory, backend_env: dict[str, str]) -> None:
    # One handler at a time per worker, 0.3 s each: a worker starts at most 4 in 1.1 s, so full windows of 5
    # take two workers at once (with 0.01 s handlers one worker could take every window: once in a CI run).
    root = project(make_project, {"rateLimit": {"limit": 5, "period": 1}, "concurrency": 1}, delay=0.3)
    procs = workers(root, backend_env)
    try:
        emit(root, backend_env, [{"i": i} for i in range(30)])  # 6 s at 5 a second: 6 full windows
        wait_until(lambda: len(finished(root)) == 30, 60, "all 30 events")
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0, 0]
    times = [r.start for r in runs(root)]
    assert len(times) == 30

    def busiest(window_s: float) -> int:
        return max(sum(1 for t in times if s <= t < s + window_s) for s in times)

    # The limit counts claims; a handler starts a little after its claim (more on a busy machine, and on
    # PostgreSQL, whose job-handle records cost round trips in between). Judged on 0.9 s windows, up to
    # 0.1 s of that delay cannot make an honest limiter fail, while a limit of even 6 a second would.
    assert busiest(0.9) <= 5, f"a 0.9-second window held {busiest(0.9)} starts"
    assert busiest(1.1) >= 5  # the limit was the bottleneck: its windows were full, so workers ran at once
    assert len({r.pid for r in runs(root)}) >= 2  # the workers shared the limit


def test_one_running_per_key_and_the_keys_in_parallel(make_project: ProjectFactory,
                                                      backend_env: dict[str, str]) -> None:
    root = project(make_project, {"concurrencyKey": "k", "concurrencyLimit": 1}, delay=0.1)
    procs = workers(root, backend_env)
    try:
        emit(root, backend_env, [{"i": i, "k": "abcd"[i % 4]} for i in range(40)])
        wait_until(lambda: len(finished(root)) == 40, 60, "all 40 events")
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0, 0]
    by_key: dict[str, list[Run]] = defaultdict(list)
    for r in runs(root):
        by_key[r.key].append(r)
    for key, rs in by_key.items():
        for before, after in itertools.pairwise(rs):
            assert before.end is not None and before.end <= after.start, f"two runs of key {key} overlapped"
    peak = max(sum(1 for r in runs(root) if r.start <= t < (r.end or t)) for t in (r.start for r in runs(root)))
    assert peak == 4  # every key ran at once


def test_a_priority_event_starts_before_the_20th_of_a_thousand(make_project: ProjectFactory,
                                                               backend_env: dict[str, str]) -> None:
    root = project(make_project, {"concurrency": 5}, delay=0.002)
    emit(root, backend_env, [{"i": i} for i in range(1000)])
    emit(root, backend_env, [{"i": "urgent"}], "--priority", "10")
    procs = workers(root, backend_env)
    try:
        wait_until(lambda: len(finished(root)) == 1001, 90, "all 1,001 events")
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0, 0, 0]
    order = [r.i for r in runs(root)]
    assert order.index("urgent") < 20, f"the priority event started {order.index('urgent') + 1}th"


def test_a_worker_killed_holding_the_only_slot_frees_it_after_its_lease(make_project: ProjectFactory,
                                                                        backend_env: dict[str, str]) -> None:
    root = project(make_project, {"globalConcurrency": 1, "visibilityTimeout": 2}, delay=0.5)
    procs = workers(root, backend_env)
    try:
        emit(root, backend_env, [{"i": i} for i in range(6)])
        wait_until(lambda: bool(runs(root)), 30, "a first run")
        holder = next(p for p in procs if p.pid == runs(root)[0].pid)
        holder.send_signal(signal.SIGKILL)
        killed = time.time()
        holder.wait(timeout=10)
        wait_until(lambda: len(finished(root)) == 6, 60, "all 6 events")
    finally:
        codes = [stop(p) for p in procs if p is not holder]
    assert codes == [0, 0]
    rs = runs(root)
    after = [r for r in rs if r.start > killed]
    assert after and 1.0 <= after[0].start - killed < 2 + 5  # the slot stayed taken until the 2 s lease ran out
    assert [r.i for r in rs if r.end is None] == [rs[0].i]  # the killed run, started again later
    for before, later in itertools.pairwise(after):
        assert before.end is not None and before.end <= later.start  # still one running at a time
