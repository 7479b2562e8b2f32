"""Parts of the users'-path benchmark besides the main workload: the raw Streams floor across processes,
idle workers (CPU, memory, Redis connections with 10 and 200 steps), the example app (boot to first
claim, idle memory, ``validate``), and the drain with several worker processes."""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import raw_streams
from .common import percentile
from .procstat import children, cpu_seconds, local_tcp_ports, rss_mb
from .userpath_project import REPO, WorkerProcess, copy_example_app, env, write_harness_project, write_idle_project

if TYPE_CHECKING:
    from .userpath import Marks

IDLE_COLUMNS = ["worker_boot_s", "idle_cpu_pct", "idle_rss_mb", "redis_connections"]
EXAMPLE_COLUMNS = ["worker_boot_s", "idle_cpu_pct", "idle_rss_mb", "validate_s"]
SCALE_COLUMNS = ["drain_per_s", "processes_used", "redis_cpu_us_per_event"]
_SETTLE_S = 1.0


def own(url: str, root: Path) -> str:
    """``url`` for one run whose files live in ``root``: a SQLite database of its own there (SQLite has no
    key prefix: runs sharing a file would share their queues), any other backend's URL as it is (each run
    uses a prefix of its own)."""
    return f"sqlite:///{root / 'motia.db'}" if url.startswith("sqlite") else url


async def forget(url: str, prefix: str) -> None:
    """Delete a run's Redis keys or PostgreSQL schema (a SQLite run's file goes with its directory)."""
    if url.startswith("postgres"):
        from .delivery import _drop_schema

        await _drop_schema(url, prefix)
    if not url.startswith("redis"):
        return
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await r.unlink(*keys[i:i + 1000])
    finally:
        await r.aclose()


def _spread(runs: list[dict[str, float]], name: str) -> dict[str, Any]:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {"name": name, **{k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                             for k in keys for v in [[r[k] for r in runs]]}}


async def raw_streams_trial(url: str, n: int, chains: int, m: Marks) -> dict[str, float]:
    """The peer harness's raw Streams floor: XADD one at a time and pipelined, a worker process draining
    both backlogs, the live run and the chains."""
    import redis.asyncio as aioredis

    prefix = f"motia-bench-raw-{uuid.uuid4().hex[:8]}"
    r = aioredis.from_url(url)
    proc: subprocess.Popen[bytes] | None = None
    res: dict[str, float] = {}
    try:
        await raw_streams.setup(r, prefix)
        t0 = time.perf_counter()
        await raw_streams.produce(r, prefix, n)
        res["enqueue_per_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        await raw_streams.produce_pipelined(r, prefix, n)
        res["enqueue_concurrent_per_s"] = n / (time.perf_counter() - t0)
        spawned = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "bench.raw_streams", url, prefix], cwd=REPO, env=m.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        await m.until(1)
        res["worker_boot_s"] = m.reader.first() - spawned
        await m.until(2 * n)
        res["drain_per_s"] = (2 * n - 1) / (m.reader.latest() - m.reader.first())
        await asyncio.sleep(0.2)
        s0 = time.time()
        await raw_streams.produce(r, prefix, n)
        await m.until(3 * n)
        res["e2e_live_per_s"] = n / (m.reader.latest() - s0)
        await asyncio.sleep(0.2)
        lat = []
        for _ in range(chains):
            await raw_streams.send_chain(r, prefix, time.time())
            lat.append(await asyncio.wait_for(m.latencies.get(), 30))
        res["chain_p50_ms"] = percentile(lat, 50) * 1000
        res["chain_p99_ms"] = percentile(lat, 99) * 1000
        cold = []
        for _ in range(max(20, chains // 5)):
            await asyncio.sleep(random.uniform(0.03, 0.08))
            await raw_streams.send_chain(r, prefix, time.time())
            cold.append(await asyncio.wait_for(m.latencies.get(), 30))
        res["cold_chain_p50_ms"] = percentile(cold, 50) * 1000
        res["cold_chain_p99_ms"] = percentile(cold, 99) * 1000
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        await r.aclose()
        await forget(url, prefix)
    return res


async def _redis_connections(url: str, pid: int) -> int:
    """How many of Redis's clients are sockets of process ``pid``."""
    import redis.asyncio as aioredis

    ports = local_tcp_ports(pid)
    r = aioredis.from_url(url)
    try:
        clients = await r.client_list()
    finally:
        await r.aclose()
    return sum(1 for c in clients if int(str(c["addr"]).rsplit(":", 1)[1]) in ports)


async def _idle_figures(url: str, pid: int, window_s: float) -> dict[str, float]:
    await asyncio.sleep(_SETTLE_S)
    cpu0 = cpu_seconds(pid)
    await asyncio.sleep(window_s)
    res = {"idle_cpu_pct": (cpu_seconds(pid) - cpu0) / window_s * 100, "idle_rss_mb": rss_mb(pid)}
    if url.startswith("redis"):
        res["redis_connections"] = await _redis_connections(url, pid)
    return res


async def idle_part(urls: dict[str, str], trials: int, window_s: float, base: Path) -> list[dict[str, Any]]:
    """Workers with 10 and 200 steps, once they have claimed a first event and gone idle."""
    from motia_py import Client

    from .userpath import Marks

    rows = []
    for b in urls:
        for steps in (10, 200):
            runs = []
            for t in range(trials):
                root = base / f"idle-{b}-{steps}-{t}"
                prefix = f"motia_bench_{uuid.uuid4().hex[:8]}"
                url = own(urls[b], root)
                write_idle_project(root, url, prefix, steps)
                async with Client.from_project(root) as client:
                    await client.emit("t0", {})
                m = Marks(root)
                await m.start()
                worker = WorkerProcess(root, m.env())
                try:
                    await m.until(1)
                    runs.append({"worker_boot_s": m.reader.first() - worker.spawned_at,
                                 **await _idle_figures(url, worker.pid, window_s)})
                finally:
                    worker.stop()
                    m.close()
                    await forget(url, prefix)
            rows.append(_spread(runs, f"{b} {steps} steps"))
    return rows


def _validate_s(project: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "motia_py", "validate", "--project", str(project)], env=env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _first_line(proc: subprocess.Popen[bytes], needle: bytes, seen: threading.Event, at: list[float]) -> None:
    """Read the worker's stderr to its end; note when ``needle`` first appears."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if needle in line and not seen.is_set():
            at.append(time.time())
            seen.set()


async def example_part(urls: dict[str, str], trials: int, window_s: float, base: Path) -> list[dict[str, Any]]:
    """The example app: boot to its first handled event, idle CPU and memory, and ``validate``."""
    from motia_py import Client

    rows = []
    for b in urls:
        runs = []
        for t in range(trials):
            root = base / f"example-{b}-{t}"
            url = own(urls[b], root)
            copy_example_app(root, url)
            prefix = "motia"
            if not url.startswith("sqlite"):
                prefix = f"motia_bench_{uuid.uuid4().hex[:8]}"
                (root / "motia_py.toml").write_text((root / "motia_py.toml").read_text().replace(
                    f'url = "{url}"', f'url = "{url}"\nprefix = "{prefix}"'))
            async with Client.from_project(root) as client:
                await client.emit("email.requested", {"to": "someone@example.com", "subject": "hi"})
            e = env()
            e["MOTIA_PY_LOG_LEVEL"] = "info"
            e["MOTIA_PY_LOG_FORMAT"] = "json"
            worker = WorkerProcess(root, e, stderr=subprocess.PIPE)
            seen, at = threading.Event(), []
            reader = threading.Thread(target=_first_line, args=(worker.proc, b"Email job created", seen, at),
                                      daemon=True)
            reader.start()
            try:
                await asyncio.to_thread(seen.wait, 60)
                run = {"worker_boot_s": at[0] - worker.spawned_at, **await _idle_figures(url, worker.pid, window_s)}
                run.pop("redis_connections", None)
                run["validate_s"] = _validate_s(root)
                runs.append(run)
            finally:
                worker.stop()
                await forget(url, prefix)
        rows.append(_spread(runs, f"example app, {b}"))
    return rows


async def _redis_cpu(url: str) -> float:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url)
    try:
        info = await r.info("cpu")
    finally:
        await r.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _booted(worker: WorkerProcess, processes: int, timeout_s: float = 30.0) -> None:
    """Wait until the worker's consuming processes (itself, or its ``processes`` children) have started
    and gone quiet (their CPU time stops growing): booted and idle, waiting for events."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = children(worker.pid) if processes > 1 else [worker.pid]
        if len(pids) >= processes:
            before = [cpu_seconds(p) for p in pids]
            await asyncio.sleep(0.3)
            if [cpu_seconds(p) for p in pids] == before:
                return
        else:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{processes} worker process(es) not idle after {timeout_s} s")


async def scale_part(urls: dict[str, str], workers: list[int], n: int, trials: int, base: Path
                     ) -> list[dict[str, Any]]:
    """The drain of N events by 1, 2, 4 ... worker processes (``start --workers N``): the workers boot
    and go idle, then the N events arrive in one ``emit_many`` (one transaction), so the drain measures
    the workers together, not the first one to boot."""
    from motia_py import Client

    from .userpath import Marks

    rows = []
    for b in urls:
        for w in workers:
            runs = []
            for t in range(trials):
                root = base / f"scale-{b}-{w}-{t}"
                prefix = f"motia_bench_{uuid.uuid4().hex[:8]}"
                url = own(urls[b], root)
                write_harness_project(root, url, prefix)
                m = Marks(root)
                await m.start()
                worker = WorkerProcess(root, m.env(), workers=w, cron=False)
                try:
                    async with Client.from_project(root) as client:
                        await _booted(worker, w)
                        cpu0 = await _redis_cpu(url) if url.startswith("redis") else 0.0
                        await client.emit_many([("noop", {})] * n)
                    await m.until(n)
                    run = {"drain_per_s": (n - 1) / (m.reader.latest() - m.reader.first()),
                           "processes_used": float(len(m.reader.slots()))}
                    if url.startswith("redis"):
                        run["redis_cpu_us_per_event"] = (await _redis_cpu(url) - cpu0) / n * 1e6
                    runs.append(run)
                finally:
                    worker.stop()
                    m.close()
                    await forget(url, prefix)
            rows.append(_spread(runs, f"{b}, {w} worker process{'es' if w > 1 else ''}"))
    return rows
