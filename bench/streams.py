"""Streams fan-out: N WebSocket clients subscribed to one group of one ``motia-py start`` server receive one
update; how long until each has it, and what the idle server costs with them connected.

    python -m bench streams [--clients 1000] [--rounds 5] [--idle 10]

Latency is from the handler's write (its timestamp is in the item) to each client's receipt, all on this
machine's clock; the bench process itself runs the N clients, so its own receive work is included. The
idle figure is the server process's CPU time (user + system, from /proc) over ``--idle`` seconds with
every client connected and nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import percentile, save, table

STEP = """
import time

config = {"type": "api", "name": "Bump", "path": "/bump/:n", "method": "POST", "emits": [], "flows": ["bench"]}

async def handler(req, ctx):
    n = req.pathParams["n"]
    await ctx.streams.board.set("lobby", "score", {"round": n, "written_at": time.time()})
    return {"status": 200, "body": {}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(root: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "MOTIA_PY_BACKEND_URL": "memory://", "MOTIA_PY_SERVER_PORT": str(port),
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1] / "framework"),
                                                     os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "motia_py", "start", "--project", str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


class _Client:
    """One subscriber: joins the group and notes when each round's update arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, tuple[float, float]] = {}  # round -> (arrived, written)
        self.synced = asyncio.Event()
        self.ws: Any = None

    async def run(self, url: str) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(url, compression=None, open_timeout=60, ping_interval=None)
        await self.ws.send(json.dumps({"type": "join", "data": {"streamName": "board", "groupId": "lobby",
                                                                "subscriptionId": "s"}}))
        with contextlib.suppress(Exception):
            async for text in self.ws:
                now = time.time()
                msg = json.loads(text)
                if msg["event"]["type"] == "sync":
                    self.synced.set()
                else:
                    data = msg["event"]["data"]
                    self.arrivals[data["round"]] = (now, data["written_at"])


async def _bench(clients: int, rounds: int, idle_s: float) -> dict[str, Any]:
    import httpx

    root = Path(tempfile.mkdtemp(prefix="motia-bench-streams-"))
    (root / "steps").mkdir()
    (root / "motia_py.toml").write_text("\n")
    (root / "steps" / "board_stream.py").write_text('config = {"name": "board"}\n')
    (root / "steps" / "bump.step.py").write_text(textwrap.dedent(STEP))
    port = _free_port()
    with _server(root, port) as proc:
        await _wait_up(port)
        subs = [_Client() for _ in range(clients)]
        tasks = []
        for i in range(0, clients, 100):  # connect in batches: the accept backlog is finite
            batch = subs[i:i + 100]
            tasks += [asyncio.create_task(c.run(f"ws://127.0.0.1:{port}")) for c in batch]
            await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in batch)), 60)
        await asyncio.sleep(1.0)  # let connection set-up settle before measuring idle
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(idle_s)
        idle_pct = 100 * (_cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        rows = []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for r in range(rounds):
                await http.post(f"/bump/{r}")
                deadline = time.monotonic() + 30
                while sum(str(r) in c.arrivals for c in subs) < clients and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                lat = [(a - w) * 1000 for c in subs if (hit := c.arrivals.get(str(r))) for a, w in (hit,)]
                rows.append({"round": r, "received": len(lat), "p50_ms": percentile(lat, 50),
                             "p99_ms": percentile(lat, 99), "max_ms": max(lat, default=float("nan"))})
                await asyncio.sleep(0.5)
        for c in subs:
            if c.ws is not None:
                await c.ws.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"clients": clients, "idle_cpu_pct": idle_pct, "idle_s": idle_s, "rounds": rows}


def main(clients: int = 1000, rounds: int = 5, idle_s: float = 10.0) -> dict[str, Any]:
    """Run the benchmark, print a table and save ``bench/results/streams.json``."""
    result = asyncio.run(_bench(clients, rounds, idle_s))
    rows = result["rounds"]
    print(table(f"streams: {clients} WebSocket clients on one group, one update per round", rows,
                ["round", "received", "p50_ms", "p99_ms", "max_ms"]))
    print(f"idle server CPU with {clients} clients connected: {result['idle_cpu_pct']:.2f}% "
          f"(over {idle_s:.0f} s)")
    path = save("streams", rows, {"clients": clients, "idle_cpu_pct": result["idle_cpu_pct"], "idle_s": idle_s})
    print(f"saved {path}")
    return result
