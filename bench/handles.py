"""What job handles cost: events/s through one worker with plain events, with idempotency keys on every emit,
and with a result stored for every run, per backend, in one run.

Every event is emitted through the public path (``Router.emit``, as ``Client.emit`` does), concurrently in
chunks, then drained by one worker; ``enqueue_per_s`` times the emits, ``events_per_s`` the drain. The
cases take turns, ``ROUNDS`` times, each on a fresh database, and the best round of each is reported
(the machine is shared and noisy).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings

from .common import save, table
from .delivery import _delete_prefix, backend_url

PROJECT = {
    "flows/b.toml": 'entry_topics = ["plain", "result"]\n',
    "steps/plain.step.py": """
        config = {"type": "event", "name": "Plain", "subscribes": ["plain"], "emits": [], "flows": ["b"],
                  "infrastructure": {"queue": {"concurrency": 256}}}
        async def handler(input, ctx):
            pass
    """,
    "steps/result.step.py": """
        config = {"type": "event", "name": "Result", "subscribes": ["result"], "emits": [], "flows": ["b"],
                  "infrastructure": {"queue": {"concurrency": 256}}}
        async def handler(input, ctx):
            return {"n": input["n"], "ok": True}
    """,
}
CASES = {"plain": ("plain", False), "keys": ("plain", True), "results": ("result", False)}
CHUNK = 500
ROUNDS = 3


async def run_case(url: str, events: int, case: str) -> dict[str, Any]:
    """Emit ``events`` events (with keys, or to the step that returns a result), then drain them."""
    topic, keyed = CASES[case]
    root = Path(tempfile.mkdtemp(prefix="motia-bench-handles-"))
    prefix = f"motia-bench-{uuid.uuid4().hex[:8]}"
    try:
        (root / "motia_py.toml").write_text(f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n')
        for rel, text in PROJECT.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(textwrap.dedent(text))
        settings = load_settings(root, env={})
        project, findings = load_project(settings)
        require_valid(project, findings)
        backend = backend_for(settings)
        runtime = Runtime(project, backend, cron=False, poll_s=0.05, traces=None)
        await backend.open()
        router = runtime.router
        t0 = time.perf_counter()
        for start in range(0, events, CHUNK):
            await asyncio.gather(*(router.emit(topic, {"n": i}, key=f"k{i}" if keyed else None, check=False)
                                   for i in range(start, min(events, start + CHUNK))))
        enqueue_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        assert runtime.worker is not None
        await runtime.worker.start()
        await runtime.wait_idle(timeout_s=600)
        drain_s = time.perf_counter() - t1
        await runtime.stop(5)
        return {"backend": url.split(":")[0], "case": case, "events": events, "enqueue_per_s": events / enqueue_s,
                "events_per_s": events / drain_s}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if url.startswith("redis"):
            await _delete_prefix(url, prefix)


async def amain(backends: list[str], events: int) -> list[dict[str, Any]]:
    """Every case on every backend that has a URL."""
    rows = []
    for name in backends:
        url = backend_url(name, "")
        if url is None:
            print(f"skipping {name}: no URL (set MOTIA_PY_BENCH_REDIS_URL)")
            continue
        best: dict[str, dict[str, Any]] = {}
        for _ in range(ROUNDS):
            for case in CASES:
                row = await run_case(url, events, case)
                if case not in best or row["events_per_s"] > best[case]["events_per_s"]:
                    best[case] = {**row, "enqueue_per_s": max(row["enqueue_per_s"],
                                                              best.get(case, row)["enqueue_per_s"])}
        rows += best.values()
    return rows


def main(backends: list[str], events: int) -> None:
    """Run and report."""
    rows = asyncio.run(amain(backends, events))
    path = save("handles", rows)
    print(table("handles: events emitted through Router.emit, then drained by one worker; with an idempotency "
                "key per emit (keys) and a result stored per run (results)", rows,
                ["backend", "case", "events", "enqueue_per_s", "events_per_s"]))
    print(f"\nresults: {path}")
