"""Idle consumers share one wait (``motia_py.waker``): one ``wait_any`` call however many steps, a Redis
worker with 200 steps holding at most three connections, and a publish from another process waking a
worker on SQLite and on Redis."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from motia_py.backends.memory import MemoryBackend
from motia_py.runtime import Runtime, backend_for

from .backends.redis_support import check_reachable, delete_prefix, new_prefix, private_redis, redis_url
from .conftest import ProjectFactory
from .probes import emit, inject, load, until, wait

STEPS = 200


def many_steps(n: int = STEPS) -> dict[str, str]:
    """``n`` event steps S0..S<n-1> on topics t0..t<n-1>, each recording what it handled in ``seen``."""
    files = {f"steps/s{i}.step.py": f"""
        config = {{"type": "event", "name": "S{i}", "subscribes": ["t{i}"], "emits": [], "flows": ["f"]}}
        async def handler(input, ctx):
            seen.append(ctx.step)
            if len(seen) >= expected:
                all_seen.set()
    """ for i in range(n)}
    topics = ", ".join(f'"t{i}"' for i in range(n))
    return {**files, "flows/f.toml": f"entry_topics = [{topics}]\n"}


def hand_probes(project: object, n: int, expected: int) -> tuple[list[str], asyncio.Event]:
    seen: list[str] = []
    all_seen = asyncio.Event()
    for i in range(n):
        inject(project, f"S{i}", seen=seen, all_seen=all_seen, expected=expected)  # type: ignore[arg-type]
    return seen, all_seen


class CountingBackend(MemoryBackend):
    """A memory backend that counts the waits pending at once."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0
        self.most_pending = 0
        self.per_step_waits = 0

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        self.pending += 1
        self.most_pending = max(self.most_pending, self.pending)
        try:
            return await super().wait_any(steps, timeout_s)
        finally:
            self.pending -= 1

    async def wait(self, step: str, timeout_s: float) -> None:
        self.per_step_waits += 1
        await super().wait(step, timeout_s)


async def test_two_hundred_idle_steps_share_one_wait_and_any_of_them_wakes_it(make_project: ProjectFactory) -> None:
    project = load(make_project(many_steps()))
    seen, all_seen = hand_probes(project, STEPS, expected=1)
    backend = CountingBackend()
    async with Runtime(project, backend, cron=False, poll_s=5.0) as rt:
        await until(lambda: backend.pending == 1, "the consumers to go idle")
        await emit(rt, "t199", {})
        await wait(all_seen, "S199 to run")
        await rt.wait_idle()
    assert seen == ["S199"]
    assert backend.most_pending == 1
    assert backend.per_step_waits == 0


# -- Redis: connections ---------------------------------------------------------------------------
@pytest.fixture
def redis_project(make_project: ProjectFactory, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The project on a Redis server of its own: the test counts the server's connections, which other
    tests running at the same time (``pytest -n``) would add to on the shared one."""
    check_reachable(redis_url())  # as every Redis test: never skipped silently in CI
    data = tmp_path / "redis-data"
    data.mkdir()
    with private_redis(data) as start_redis:
        start_redis()
        url = f"redis://127.0.0.1:{start_redis.port}/0"  # type: ignore[attr-defined]
        yield make_project({**many_steps(), "motia_py.toml": f'[backend]\nurl = "{url}"\n'}), url


async def _connections_named_motia(url: str) -> int:
    admin = Redis.from_url(url, decode_responses=True)
    try:
        return sum(1 for c in await admin.client_list() if c.get("name") == "motia-py")
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_a_redis_worker_with_two_hundred_steps_holds_at_most_three_connections(
        redis_project: tuple[Path, str]) -> None:
    root, url = redis_project
    project = load(root)
    seen, all_seen = hand_probes(project, STEPS, expected=STEPS + 1)
    before = await _connections_named_motia(url)
    async with Runtime(project, backend_for(project.settings), cron=False, poll_s=5.0) as rt:
        for i in range(STEPS):  # every consumer claims, runs and goes idle again
            await emit(rt, f"t{i}", {})
        await until(lambda: len(seen) == STEPS, "every step to run once")
        await rt.wait_idle()
        held = await _connections_named_motia(url) - before
        await emit(rt, "t150", {})  # the one blocking read still covers every step
        await wait(all_seen, "S150 to run again")
    assert sorted(seen) == sorted([f"S{i}" for i in range(STEPS)] + ["S150"])
    assert 1 <= held <= 3


# -- another process publishes ----------------------------------------------------------------------
ONE_STEP = {
    "flows/f.toml": 'entry_topics = ["work"]\n',
    "steps/work.step.py": """
        config = {"type": "event", "name": "Work", "subscribes": ["work"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            ran.set()
    """,
}


def emit_from_another_process(root: Path) -> float:
    """``motia-py emit work`` in a subprocess; the time it finished."""
    out = subprocess.run([sys.executable, "-m", "motia_py", "emit", "work", "--data", "{}", "--project", str(root)],
                         capture_output=True, text=True, timeout=60, cwd=root)
    assert out.returncode == 0, out.stderr
    return time.monotonic()


@pytest.mark.parametrize("backend_name", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_publish_from_another_process_wakes_a_waiting_worker(make_project: ProjectFactory,
                                                                      backend_name: str) -> None:
    prefix = new_prefix()
    if backend_name == "redis":
        url = redis_url()
        check_reachable(url)
        toml = f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n'
    else:
        url, toml = "", '[backend]\nurl = "sqlite:///.motia/motia.db"\n'
    root = make_project({**ONE_STEP, "motia_py.toml": toml})
    project = load(root)
    ran = asyncio.Event()
    inject(project, "Work", ran=ran)
    try:
        async with Runtime(project, backend_for(project.settings), cron=False, poll_s=30.0) as rt:
            await rt.wait_idle()  # the worker waits now; its one wait lasts up to 30 s, so no poll finds the event
            finished = await asyncio.to_thread(emit_from_another_process, root)
            await wait(ran, "the handler to run", timeout_s=5.0)
            assert time.monotonic() - finished < 0.5
    finally:
        if url:
            await delete_prefix(url, prefix)
