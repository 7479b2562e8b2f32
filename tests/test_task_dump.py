"""``kill -USR1`` on a running ``motia-py start``: one log record says where every task of the process
waits, and the worker goes on."""

from __future__ import annotations

import signal

import pytest

from .conftest import ProjectFactory
from .processes import lines, logs_of, start_process, stop, wait_started, wait_until
from .test_start import emit, sqlite_project

pytestmark = pytest.mark.slow

STUCK = """
    import asyncio
    from pathlib import Path
    ROOT = Path(__file__).resolve().parents[1]
    config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
    async def handler(input, ctx):
        (ROOT / "started").write_text(input["id"])
        while not (ROOT / "release").exists():
            await asyncio.sleep(0.02)  # the line the dump must name
        with (ROOT / "done").open("a") as f:
            f.write(input["id"] + "\\n")
"""


def test_sigusr1_logs_where_every_task_waits_and_the_worker_goes_on(make_project: ProjectFactory) -> None:
    root = sqlite_project(make_project, STUCK)
    line = next(i for i, text in enumerate((root / "steps/work.step.py").read_text().splitlines(), 1)
                if "the line the dump must name" in text)
    worker = start_process(root, "--no-http", "--no-cron")
    try:
        wait_started(worker)
        emit(root, "work", [{"id": "a"}])
        wait_until(lambda: (root / "started").exists(), 20, "the handler to start", worker)
        worker.send_signal(signal.SIGUSR1)

        def dumps() -> list[dict[str, object]]:
            return [r for r in logs_of(worker) if "SIGUSR1" in str(r.get("msg"))]
        wait_until(lambda: bool(dumps()), 20, "the task dump", worker)
        [dump] = dumps()
        tasks = dump["tasks"]
        assert isinstance(tasks, list) and len(tasks) >= 3, tasks  # the consumer, the runner, the heartbeat...
        where = [frame for t in tasks for frame in t["at"]]
        assert any(f.endswith(f"work.step.py:{line} in handler") for f in where), where  # the handler's own await
        assert any(t["task"] == "motia-consumer-Work" for t in tasks), [t["task"] for t in tasks]
        (root / "release").touch()
        wait_until(lambda: lines(root / "done") == ["a"], 20, "the handler to finish after the dump", worker)
    finally:
        code = stop(worker)
    assert code == 0
