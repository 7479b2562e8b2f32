"""What exactly-once costs: a step that writes two state keys and emits once, transactional and not, per
backend: events/s draining a backlog through one worker (the step and the subscriber of its emit), and
the p50/p99 of one event through both steps on an otherwise idle system."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings

from .common import percentile, save, table
from .delivery import _delete_prefix, backend_url

PROJECT = {
    "flows/b.toml": 'entry_topics = ["write"]\n',
    # concurrency 64: redis-py's connection pool holds 100 connections, and every state call of a running
    # handler may take one
    "steps/write.step.py": """
        config = {"type": "event", "name": "Write", "subscribes": ["write"], "emits": ["written"], "flows": ["b"],
                  "transactional": TX, "infrastructure": {"queue": {"concurrency": 64}}}
        async def handler(input, ctx):
            i = input["i"]
            await ctx.state.set("a", str(i), i)
            await ctx.state.set("b", str(i), i)
            await ctx.emit("written", input)
    """,
    "steps/sink.step.py": """
        import time
        DONE = {}
        config = {"type": "event", "name": "Sink", "subscribes": ["written"], "emits": [], "flows": ["b"],
                  "infrastructure": {"queue": {"concurrency": 64}}}
        async def handler(input, ctx):
            DONE[input["i"]] = time.perf_counter()
    """,
}


def write_project(root: Path, url: str, prefix: str, transactional: bool) -> None:
    """The benchmark project, its ``Write`` step transactional or not (Redis keys under ``prefix``)."""
    (root / "motia_py.toml").write_text(f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n')
    for rel, text in PROJECT.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).replace("TX", repr(transactional)))


async def run_case(url: str, events: int, chain_runs: int, transactional: bool) -> dict[str, Any]:
    """Drain ``events`` queued ``write`` events through one worker, then time ``chain_runs`` single events."""
    root = Path(tempfile.mkdtemp(prefix="motia-bench-tx-"))
    prefix = f"motia-bench-{uuid.uuid4().hex[:8]}"
    try:
        write_project(root, url, prefix, transactional)
        project, findings = load_project(load_settings(root, env={}))
        require_valid(project, findings)
        backend = backend_for(project.settings)
        runtime = Runtime(project, backend, cron=False, poll_s=0.05)
        await backend.open()
        router = runtime.router
        batch = []
        for i in range(events):
            batch.append(router.outgoing("write", f'{{"i":{i}}}', f"t{i}", None, 0.0, None))
            if len(batch) == 500:
                await backend.publish(batch)
                batch = []
        if batch:
            await backend.publish(batch)
        t0 = time.perf_counter()
        assert runtime.worker is not None
        await runtime.worker.start()
        await runtime.wait_idle(timeout_s=600)
        drain_s = time.perf_counter() - t0
        done: dict[int, float] = next(m for n, m in sys.modules.items() if n.endswith("sink_step")).DONE
        lat = []
        for k in range(events, events + chain_runs):
            await asyncio.sleep(0.005)  # one event through an otherwise idle system
            start = time.perf_counter()
            await router.emit("write", {"i": k})
            while k not in done:
                await asyncio.sleep(0)
                if time.perf_counter() - start > 10:
                    raise TimeoutError("chain stuck")
            lat.append(done[k] - start)
        await runtime.stop(5)
        return {"backend": url.split(":")[0], "transactional": transactional, "events": events,
                "events_per_s": events / drain_s, "chain_p50_ms": percentile(lat, 50) * 1000,
                "chain_p99_ms": percentile(lat, 99) * 1000}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if url.startswith("redis"):
            await _delete_prefix(url, prefix)


async def amain(backends: list[str], events: int, chain_runs: int) -> list[dict[str, Any]]:
    """Each backend, not transactional then transactional."""
    rows: list[dict[str, Any]] = []
    for name in backends:
        url = backend_url(name, "")
        if url is None:
            print(f"skipping {name}: no URL (set MOTIA_PY_BENCH_REDIS_URL)")
            continue
        for transactional in (False, True):
            rows.append(await run_case(url, events, chain_runs, transactional))
        plain, tx = rows[-2], rows[-1]
        tx["vs_plain"] = f"{tx['events_per_s'] / plain['events_per_s']:.2f}x"
    return rows


def main(backends: list[str], events: int, chain_runs: int) -> None:
    """Run and report."""
    rows = asyncio.run(amain(backends, events, chain_runs))
    path = save("transactional", rows)
    print(table("transactional: a step writing two state keys and emitting once, and the subscriber of its emit",
                rows, ["backend", "transactional", "events", "events_per_s", "vs_plain", "chain_p50_ms",
                       "chain_p99_ms"]))
    print(f"\nresults: {path}")
