"""Helpers for tests that run real ``motia-py`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def start_process(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m motia_py start ARGS --project ROOT`` with JSON logs on stderr (captured to a file)."""
    log = (root / f"worker-{time.monotonic_ns()}.log").open("w")
    full_env = {**os.environ, "MOTIA_PY_LOG_FORMAT": "json", **(env or {})}
    full_env.pop("MOTIA_PY_BACKEND_URL", None) if env is None or "MOTIA_PY_BACKEND_URL" not in env else None
    proc = subprocess.Popen([sys.executable, "-m", "motia_py", "start", *args, "--project", str(root)],
                            stdout=subprocess.DEVNULL, stderr=log, text=True, env=full_env, cwd=str(root))
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    return proc


def logs_of(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    """The JSON log records a process wrote so far."""
    out = []
    for line in Path(proc.log_path).read_text().splitlines():  # type: ignore[attr-defined]
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"msg": line})
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[str] | None = None
               ) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (and the process log) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n"
                                 + Path(proc.log_path).read_text()[-4000:])  # type: ignore[attr-defined]
        time.sleep(0.02)
    detail = Path(proc.log_path).read_text()[-4000:] if proc is not None else ""  # type: ignore[attr-defined]
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail}")


def wait_started(proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Wait for the 'motia-py started' log line."""
    wait_until(lambda: any("motia-py started" in str(r.get("msg")) for r in logs_of(proc)), timeout,
               "the worker to start", proc)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig`` and wait for the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def lines(path: Path) -> list[str]:
    """The lines of a file (empty when it does not exist yet)."""
    return path.read_text().splitlines() if path.exists() else []


def in_flight(starts: Path, dones: Path, at_least: int = 3) -> bool:
    """A process has recorded ``at_least`` handler starts (one event id first on each line of ``starts``)
    and some of them have no line in ``dones`` yet: killed now, it dies with handlers in flight."""
    started = lines(starts)
    return len(started) >= at_least and bool({x.split()[0] for x in started} - set(lines(dones)))
