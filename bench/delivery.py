"""Delivery benchmark: events/s with no-op handlers and 3-step chain latency per backend (memory, SQLite,
Redis, PostgreSQL), each beside a bare ``asyncio.Queue`` hand-off measured in the same run (and raw redis-py
for the Redis backend)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

from motia_py.runtime import Runtime, backend_for, load_project, require_valid
from motia_py.settings import load_settings
from motia_py.tracing import TraceSettings

from .common import percentile, save, table

NOOP_PROJECT = {
    "flows/b.toml": 'entry_topics = ["noop", "chain.a"]\n',
    "steps/noop.step.py": """
        config = {"type": "event", "name": "Noop", "subscribes": ["noop"], "emits": [], "flows": ["b"],
                  "infrastructure": {"queue": {"concurrency": 256}}}
        async def handler(input, ctx):
            pass
    """,
    "steps/chain_a.step.py": """
        config = {"type": "event", "name": "ChainA", "subscribes": ["chain.a"], "emits": ["chain.b"], "flows": ["b"]}
        async def handler(input, ctx):
            await ctx.emit("chain.b", input)
    """,
    "steps/chain_b.step.py": """
        config = {"type": "event", "name": "ChainB", "subscribes": ["chain.b"], "emits": ["chain.c"], "flows": ["b"]}
        async def handler(input, ctx):
            await ctx.emit("chain.c", input)
    """,
    "steps/chain_c.step.py": """
        import time
        DONE = {}
        config = {"type": "event", "name": "ChainC", "subscribes": ["chain.c"], "emits": [], "flows": ["b"]}
        async def handler(input, ctx):
            DONE[input["k"]] = time.perf_counter()
    """,
}


def write_project(root: Path, url: str, prefix: str = "motia-bench") -> None:
    """The benchmark project: a no-op step and a three-step chain (Redis keys under ``prefix``)."""
    (root / "motia_py.toml").write_text(f'[backend]\nurl = "{url}"\nprefix = "{prefix}"\n')
    for rel, text in NOOP_PROJECT.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


async def bare_queue_rate(n: int) -> float:
    """Items per second through one asyncio.Queue from a producer task to a consumer task."""
    q: asyncio.Queue[int] = asyncio.Queue()

    async def consume() -> None:
        for _ in range(n):
            await q.get()

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    for i in range(n):
        q.put_nowait(i)
        if i % 256 == 0:
            await asyncio.sleep(0)
    await consumer
    return n / (time.perf_counter() - t0)


async def bare_chain_latency(runs: int) -> list[float]:
    """Seconds for one item to pass three asyncio.Queue hops (consumer tasks forwarding)."""
    qs: list[asyncio.Queue[float]] = [asyncio.Queue() for _ in range(4)]

    async def hop(i: int) -> None:
        while True:
            qs[i + 1].put_nowait(await qs[i].get())

    tasks = [asyncio.create_task(hop(i)) for i in range(3)]
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        qs[0].put_nowait(t0)
        await qs[3].get()
        out.append(time.perf_counter() - t0)
    for t in tasks:
        t.cancel()
    return out


async def run_backend(url: str, events: int, chain_runs: int, traces: bool = False) -> dict[str, Any]:
    """Throughput and chain latency of one backend."""
    root = Path(tempfile.mkdtemp(prefix="motia-bench-"))
    prefix = f"motia-bench-{uuid.uuid4().hex[:8]}"
    try:
        write_project(root, url, prefix)
        settings = load_settings(root, env={})
        project, findings = load_project(settings)
        require_valid(project, findings)
        backend = backend_for(settings)
        runtime = Runtime(project, backend, cron=False, poll_s=0.05, traces=TraceSettings() if traces else None)
        await backend.open()
        # enqueue everything first (as a backlog), then measure the drain with one worker
        router = runtime.router
        t0 = time.perf_counter()
        batch = []
        for i in range(events):
            batch.append(router.outgoing("noop", f'{{"i":{i}}}', f"t{i}", None, 0.0, None))
            if len(batch) == 500:
                await backend.publish(batch)
                batch = []
        if batch:
            await backend.publish(batch)
        enqueue_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        if runtime.worker is not None:
            await runtime.worker.start()
        await runtime.wait_idle(timeout_s=600)
        drain_s = time.perf_counter() - t1
        # three-step chain, one event at a time
        import sys

        done: dict[int, float] = next(m for n, m in sys.modules.items() if n.endswith("chain_c_step")).DONE
        lat = []
        for k in range(chain_runs):
            # one event through an otherwise idle system: let the previous chain's last ack land first
            await asyncio.sleep(0.005)
            start = time.perf_counter()
            await router.emit("chain.a", {"k": k})
            while k not in done:
                await asyncio.sleep(0)
                if time.perf_counter() - start > 10:
                    raise TimeoutError("chain stuck")
            lat.append(done[k] - start)
        await runtime.stop(5)
        name = url.split(":")[0] + (" + traces" if traces else "")
        return {"backend": name, "events": events, "enqueue_per_s": events / enqueue_s,
                "events_per_s": events / drain_s, "chain_p50_ms": percentile(lat, 50) * 1000,
                "chain_p99_ms": percentile(lat, 99) * 1000}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if url.startswith("redis"):
            await _delete_prefix(url, prefix)
        if url.startswith("postgres"):
            await _drop_schema(url, prefix)


async def _delete_prefix(url: str, prefix: str) -> None:
    """Leave the Redis server as we found it."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await r.unlink(*keys[i:i + 1000])
    finally:
        await r.aclose()


async def _drop_schema(url: str, schema: str) -> None:
    """Leave the PostgreSQL database as we found it (the project's prefix names the schema)."""
    import asyncpg

    from motia_py.backends.postgres_base import parse_url
    from motia_py.backends.postgres_schema import quote

    conn = await asyncpg.connect(parse_url(url)[0])
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    finally:
        await conn.close()


def backend_url(name: str, root_hint: str) -> str | None:
    """The URL to benchmark for a backend name (None when unavailable)."""
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return "sqlite:///.motia/bench.db"
    if name == "redis":
        return os.environ.get("MOTIA_PY_TEST_REDIS_URL") or os.environ.get("MOTIA_PY_BENCH_REDIS_URL")
    if name == "postgres":
        return os.environ.get("MOTIA_PY_TEST_POSTGRES_URL") or os.environ.get("MOTIA_PY_BENCH_POSTGRES_URL")
    return None


async def amain(backends: list[str], events: int, chain_runs: int) -> list[dict[str, Any]]:
    """Run the bare baselines and each backend."""
    bare_rate = await bare_queue_rate(200_000)
    bare_lat = await bare_chain_latency(chain_runs)
    rows: list[dict[str, Any]] = [{"backend": "asyncio.Queue (bare)", "events": 200_000, "events_per_s": bare_rate,
                                   "chain_p50_ms": percentile(bare_lat, 50) * 1000,
                                   "chain_p99_ms": percentile(bare_lat, 99) * 1000}]
    for name in backends:
        url = backend_url(name, "")
        if url is None:
            print(f"skipping {name}: no URL (set MOTIA_PY_BENCH_{name.upper()}_URL)")
            continue
        if name == "redis":
            from .redis_raw import raw_redis_rates

            rows.append(await raw_redis_rates(url, events))
        for traces in (False, True):  # what recording every run costs on the hot path
            row = await run_backend(url, events, chain_runs, traces)
            row["vs_bare"] = f"1/{bare_rate / row['events_per_s']:.1f}"
            rows.append(row)
    return rows


def main(backends: list[str], events: int, chain_runs: int) -> None:
    """Run and report."""
    rows = asyncio.run(amain(backends, events, chain_runs))
    path = save("delivery", rows)
    print(table("delivery: no-op events through one worker, and a 3-step chain one event at a time", rows,
                ["backend", "events", "enqueue_per_s", "events_per_s", "vs_bare", "chain_p50_ms", "chain_p99_ms"]))
    print(f"\nresults: {path}")
