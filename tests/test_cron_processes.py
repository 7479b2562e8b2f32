"""Two real ``motia-py start`` processes on one SQLite file fire each cron tick exactly once."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime

import pytest

from .conftest import ProjectFactory
from .processes import lines, start_process, stop, wait_started, wait_until

pytestmark = pytest.mark.slow


def test_two_workers_fire_each_tick_once(make_project: ProjectFactory) -> None:
    root = make_project({
        "motia_py.toml": '[backend]\nurl = "sqlite:///.motia/motia.db"\n',
        "steps/tick.step.py": """
            import os
            from pathlib import Path
            LOG = Path(__file__).resolve().parents[1] / "ticks.log"
            config = {"type": "cron", "name": "Tick", "cron": "*/2 * * * * *", "emits": [], "flows": ["f"]}
            async def handler(ctx):
                with LOG.open("a") as f:
                    f.write(f"{ctx.scheduled_at.isoformat()} {os.getpid()}\\n")
        """,
    })
    log = root / "ticks.log"
    workers = [start_process(root, "--no-http") for _ in range(2)]
    try:
        for w in workers:
            wait_started(w)
        wait_until(lambda: len(lines(log)) >= 5, 30, "five ticks")
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    ticks = [line.split()[0] for line in lines(log)]
    counts = Counter(ticks)
    assert counts and max(counts.values()) == 1, counts  # never twice
    times = sorted(datetime.fromisoformat(t) for t in ticks)
    assert all(t.second % 2 == 0 and t.microsecond == 0 for t in times)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(times)}
    assert gaps == {2.0}, gaps  # none missed while the workers ran
    assert len({line.split()[1] for line in lines(log)}) >= 1
