"""The users'-path benchmark: a producer process enqueues through ``motia_py.Client`` and ``motia-py
start --no-http`` processes handle the events, on the workload of ``../shared/bench-peers``, beside the
raw floors measured in the same run (a bare ``asyncio.Queue``; raw pipelined Redis Streams, producer and
worker in separate processes as well).

Per backend: enqueue/s (``Client.emit`` one at a time; concurrent emits; ``emit_many``), drain events/s
with one worker (boot excluded: (N-1)/(t_N - t_1)), live end-to-end events/s (the worker idle, then N
emits), three-step chain p50/p99 with the first hop across processes (chains back to back, as the peer
harness sends them, and "cold" ones after a pause, whose first hop finds the worker idle: the
cross-process wake-up itself), and worker boot to first claim.
Then idle CPU, memory and Redis connections of workers with 10 and 200 steps, the example app's boot,
memory and ``validate`` time, and the drain rate with 1, 2 and 4 worker processes (with Redis's own
CPU time per event). Every figure is the median of ``--trials`` runs with its min and max.

Adding a backend is one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import asyncio
import compileall
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import marks
from . import userpath_extra as extra
from .common import percentile, save, table
from .delivery import bare_chain_latency, bare_queue_rate
from .userpath_project import FRAMEWORK, WorkerProcess, env, write_harness_project

BACKENDS: dict[str, Callable[[Path], str | None]] = {
    "sqlite": lambda root: f"sqlite:///{root / 'motia.db'}",
    "redis": lambda root: os.environ.get("MOTIA_PY_BENCH_REDIS_URL") or os.environ.get("MOTIA_PY_TEST_REDIS_URL"),
    "postgres": lambda root: os.environ.get("MOTIA_PY_BENCH_POSTGRES_URL") or os.environ.get(
        "MOTIA_PY_TEST_POSTGRES_URL"),
}
"""Backend name -> its URL for a run in ``root`` (None: skipped, e.g. no server configured)."""

EMIT_MANY_BATCH = 1000
CONCURRENCY = 64  # coroutines emitting at once, for the concurrent-emit figure
COLD_GAP_S = (0.03, 0.08)  # the pause before each "cold" chain, random: no phase lock with a polling worker


class Marks:
    """The bench's side of :mod:`bench.marks`: the shared file and the UDP endpoint of chain latencies."""

    def __init__(self, root: Path) -> None:
        self.file = root / "marks.bin"
        marks.create(self.file)
        self.reader = marks.Reader(self.file)
        self.latencies: asyncio.Queue[float] = asyncio.Queue()
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Listen for chain latencies."""
        latencies = self.latencies

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                latencies.put_nowait(float(data))

        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def env(self) -> dict[str, str]:
        """A worker's environment, pointing at these marks."""
        return env(self.file, self.port)

    async def until(self, total: int, timeout_s: float = 600.0) -> None:
        """Wait until ``total`` events were handled across processes."""
        deadline = time.monotonic() + timeout_s
        while self.reader.total() < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.reader.total()} of {total} events handled after {timeout_s} s")
            await asyncio.sleep(0.002)

    def close(self) -> None:
        """Release the file and the socket."""
        if self._transport is not None:
            self._transport.close()
        self.reader.close()


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of one figure over the trials."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _enqueue_rates(url: str, n: int, root: Path) -> dict[str, float]:
    """Producer-only figures on a backend of their own (no worker): one at a time, concurrent, emit_many."""
    from motia_py import Client

    project = root / "producer"
    prefix = f"motia_bench_{uuid.uuid4().hex[:8]}"
    url = extra.own(url, project)
    write_harness_project(project, url, prefix)
    client = Client.from_project(project)
    try:
        await client.emit("noop", {})  # connect and warm up outside the timing
        t0 = time.perf_counter()
        for _ in range(n):
            await client.emit("noop", {})
        one = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, n, CONCURRENCY):
            await asyncio.gather(*(client.emit("noop", {}) for _ in range(min(CONCURRENCY, n - i))))
        concurrent = n / (time.perf_counter() - t0)
        many_n = max(n * 5, 50_000)
        t0 = time.perf_counter()
        for i in range(0, many_n, EMIT_MANY_BATCH):
            await client.emit_many([("noop", {}) for _ in range(min(EMIT_MANY_BATCH, many_n - i))])
        many = many_n / (time.perf_counter() - t0)
    finally:
        await client.aclose()
        await extra.forget(url, prefix)
    return {"enqueue_per_s": one, "enqueue_concurrent_per_s": concurrent, "emit_many_per_s": many}


async def motia_trial(name: str, url: str, n: int, chains: int, root: Path) -> dict[str, float]:
    """One trial of the harness workload on one backend."""
    from motia_py import Client

    res = await _enqueue_rates(url, n, root)
    project = root / "harness"
    prefix = f"motia_bench_{uuid.uuid4().hex[:8]}"
    url = extra.own(url, project)
    write_harness_project(project, url, prefix)
    m = Marks(root)
    await m.start()
    client = Client.from_project(project)
    worker: WorkerProcess | None = None
    try:
        for _ in range(n):  # the backlog, with no worker running
            await client.emit("noop", {})
        worker = WorkerProcess(project, m.env())
        await m.until(1)
        res["worker_boot_s"] = m.reader.first() - worker.spawned_at
        await m.until(n)
        res["drain_per_s"] = (n - 1) / (m.reader.latest() - m.reader.first())
        await asyncio.sleep(0.2)  # the worker is idle now
        s0 = time.time()
        for _ in range(n):
            await client.emit("noop", {})
        await m.until(2 * n)
        res["e2e_live_s"] = m.reader.latest() - s0
        res["e2e_live_per_s"] = n / res["e2e_live_s"]
        await asyncio.sleep(0.2)
        lat = []
        for _ in range(chains):
            await client.emit("ca", {"t0": time.time()})
            lat.append(await asyncio.wait_for(m.latencies.get(), 30))
        res["chain_p50_ms"] = percentile(lat, 50) * 1000
        res["chain_p99_ms"] = percentile(lat, 99) * 1000
        cold = []  # each chain after a pause: its first hop finds the worker idle, waiting on another process
        for _ in range(max(20, chains // 5)):
            await asyncio.sleep(random.uniform(*COLD_GAP_S))
            await client.emit("ca", {"t0": time.time()})
            cold.append(await asyncio.wait_for(m.latencies.get(), 30))
        res["cold_chain_p50_ms"] = percentile(cold, 50) * 1000
        res["cold_chain_p99_ms"] = percentile(cold, 99) * 1000
    except BaseException:
        if worker is not None:
            print(f"motia-py {name} worker's log:\n{worker.log_tail()}")
        raise
    finally:
        if worker is not None:
            worker.stop()
        await client.aclose()
        m.close()
        await extra.forget(url, prefix)
    return res


async def floor_trial(url: str | None, n: int, chains: int, root: Path) -> dict[str, dict[str, float]]:
    """The floors of one trial: a bare asyncio.Queue, and raw Streams when Redis is there."""
    rows = {"asyncio.Queue (bare, in-process)": {
        "drain_per_s": await bare_queue_rate(max(n, 100_000)),
        **dict(zip(("chain_p50_ms", "chain_p99_ms"),
                   (percentile(lat, p) * 1000 for lat in [await bare_chain_latency(chains)] for p in (50, 99)),
                   strict=True))}}
    if url is not None:
        m = Marks(root)
        await m.start()
        try:
            rows["raw Redis Streams (pipelined)"] = await extra.raw_streams_trial(url, n, chains, m)
        finally:
            m.close()
    return rows


def _fmt(s: dict[str, float]) -> str:
    m = s["median"]
    text = f"{m:,.0f}" if abs(m) >= 100 else f"{m:.2f}"
    half = (s["max"] - s["min"]) / 2 / m * 100 if m else 0.0
    return f"{text} ±{half:.0f}%"


def _summarise(trials: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    rows = []
    for name, runs in trials.items():
        keys = [k for k in runs[0] if all(k in r for r in runs)]
        rows.append({"name": name, **{k: spread([r[k] for r in runs]) for k in keys}})
    return rows


PATH_COLUMNS = ["enqueue_per_s", "enqueue_concurrent_per_s", "emit_many_per_s", "drain_per_s", "e2e_live_per_s",
                "chain_p50_ms", "chain_p99_ms", "cold_chain_p50_ms", "cold_chain_p99_ms", "worker_boot_s"]


def _print(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    shown = [{"name": r["name"], **{c: _fmt(r[c]) if isinstance(r.get(c), dict) else r.get(c, "-")
                                    for c in columns}} for r in rows]
    print(table(title, shown, ["name", *columns]))
    print()


async def amain(backends: list[str], n: int, chains: int, trials: int, idle_window_s: float,
                scale: list[int], parts: set[str]) -> dict[str, Any]:
    """Run every part for every backend; return the summary that is saved."""
    base = Path(tempfile.mkdtemp(prefix="motia-userpath-"))
    urls = {b: BACKENDS[b](base / b) for b in backends}
    for b, u in urls.items():
        if u is None:
            print(f"skipping {b}: no URL (set MOTIA_PY_BENCH_REDIS_URL)")
    urls = {b: u for b, u in urls.items() if u is not None}
    redis_url = urls.get("redis") or BACKENDS["redis"](base)
    out: dict[str, Any] = {"n": n, "chains": chains, "trials": trials}
    try:
        if "path" in parts:
            path: dict[str, list[dict[str, float]]] = {}
            for t in range(trials):
                for b, u in urls.items():
                    root = base / f"{b}-{t}"
                    (root).mkdir(parents=True)
                    path.setdefault(f"motia-py {b}", []).append(await motia_trial(b, u, n, chains, root))
                for name, row in (await floor_trial(redis_url, n, chains, base / f"floor-{t}")).items():
                    path.setdefault(name, []).append(row)
            out["path"] = _summarise(path)
            _print(f"users' path: N={n}, {chains} chains, median ±half-spread of {trials} trial(s)",
                   out["path"], PATH_COLUMNS)
        if "idle" in parts:
            out["idle"] = await extra.idle_part(urls, trials, idle_window_s, base)
            _print("idle workers (after boot)", out["idle"], extra.IDLE_COLUMNS)
        if "example" in parts:
            out["example"] = await extra.example_part(urls, trials, idle_window_s, base)
            _print("the example app", out["example"], extra.EXAMPLE_COLUMNS)
        if "scale" in parts:
            out["scale"] = await extra.scale_part(urls, scale, n * 2, trials, base)
            _print("drain with several worker processes", out["scale"], extra.SCALE_COLUMNS)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def main(backends: list[str], n: int, chains: int, trials: int, idle_window_s: float = 5.0,
         scale: list[int] | None = None, parts: set[str] | None = None) -> None:
    """Run, print the tables and write ``bench/results/userpath.json``."""
    # Workers boot from bytecode, as from an installed package (pip compiles it), even where
    # PYTHONDONTWRITEBYTECODE is set: otherwise every boot would compile motia-py's modules again.
    compileall.compile_dir(str(FRAMEWORK), quiet=1)
    summary = asyncio.run(amain(backends, n, chains, trials, idle_window_s, scale or [1, 2, 4],
                                parts or {"path", "idle", "example", "scale"}))
    path = save("userpath", [], summary)
    print(f"results: {path}")
