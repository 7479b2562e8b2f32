"""Reload benchmark: time from a file's save to the new code answering over HTTP, with a real
``motia-py dev`` process, for a project of 10 steps and one of 200 steps."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from .common import percentile, save, table

EDITS = 25


def api_step(i: int, value: int) -> str:
    return textwrap.dedent(f"""
        config = {{"type": "api", "name": "Api{i}", "path": "/s{i}", "method": "GET", "emits": ["t{i}"],
                  "flows": ["bench"]}}
        async def handler(req, ctx):
            return {{"status": 200, "body": {{"v": {value}}}}}
    """)


def event_step(i: int) -> str:
    return textwrap.dedent(f"""
        config = {{"type": "event", "name": "Ev{i}", "subscribes": ["t{i}"], "emits": [], "flows": ["bench"]}}
        async def handler(input, ctx):
            pass
    """)


def make_project(root: Path, steps: int) -> None:
    """``steps`` steps: half API steps, half event steps subscribed to them."""
    (root / "motia_py.toml").write_text('[backend]\nurl = "memory://"\n')
    (root / "steps").mkdir()
    for i in range(steps // 2):
        (root / "steps" / f"api_{i}.step.py").write_text(api_step(i, 0))
        (root / "steps" / f"ev_{i}.step.py").write_text(event_step(i))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(steps: int) -> dict[str, Any]:
    """Median and p99 of save-to-new-answer over EDITS edits."""
    root = Path(tempfile.mkdtemp(prefix="motia-reload-"))
    port = free_port()
    proc = None
    try:
        make_project(root, steps)
        log = (root / "dev.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "motia_py", "dev", "--port", str(port), "--project",
                                 str(root)], stdout=subprocess.DEVNULL, stderr=log, cwd=root,
                                env={**os.environ, "MOTIA_PY_BACKEND_URL": "memory://"})
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/s0").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError((root / "dev.log").read_text())
            time.sleep(0.05)
        latencies = []
        for edit in range(1, EDITS + 1):
            target = root / "steps" / "api_0.step.py"
            t0 = time.perf_counter()
            target.write_text(api_step(0, edit))
            while client.get("/s0").json()["v"] != edit:
                if time.perf_counter() - t0 > 30:
                    raise TimeoutError(f"edit {edit} never served")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.3)  # let the watcher settle between edits
        client.close()
        return {"steps": steps, "edits": EDITS, "p50_ms": percentile(latencies, 50) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000, "max_ms": max(latencies) * 1000}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Run for 10 and 200 steps and report."""
    rows = [measure(10), measure(200)]
    path = save("reload", rows)
    print(table("reload: save a step file -> the new code answers over HTTP (motia-py dev)", rows,
                ["steps", "edits", "p50_ms", "p99_ms", "max_ms"]))
    print(f"\nresults: {path}")
