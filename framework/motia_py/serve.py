"""``motia-py start``: run workers, cron (and HTTP) until SIGINT/SIGTERM, then shut down gracefully.

With ``--workers N`` (N > 1) this process supervises N worker child processes (each consuming every
step's queue) and keeps cron and HTTP for itself; children exit when the parent dies, SIGKILL included
(Linux parent-death signal, plus a parent check as a fallback elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from msgspec import Struct

from . import task_dump
from .errors import MotiaError
from .logs import framework_logger
from .otel import detect
from .runtime import Runtime, backend_for, load_project, require_valid, trace_settings
from .settings import Settings

if TYPE_CHECKING:
    from .http import HttpServer  # the HTTP server (uvicorn, starlette) is imported only when it is started


class StartOptions(Struct, frozen=True):
    """What ``start`` runs in this process."""

    workers: int = 1
    http: bool = True
    cron: bool = True
    consume: bool = True  # False in a supervisor of child workers


async def run(settings: Settings, opts: StartOptions, ready: asyncio.Event | None = None) -> int:
    """Run until a stop signal; return the process exit code."""
    project, findings = load_project(settings)
    require_valid(project, findings)
    log = framework_logger()
    if opts.workers > 1 and settings.backend_url.startswith("memory:"):
        raise MotiaError("--workers N > 1 needs a shared backend (sqlite or redis), not memory://")
    consume = opts.consume and opts.workers <= 1
    runtime = Runtime(project, backend_for(settings), workers=consume, cron=opts.cron,
                      traces=trace_settings(settings), otel=detect(settings.traces_otel))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second stop signal: exiting now; in-flight events return after their lease")
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    task_dump.install(log)  # kill -USR1: log where every task waits
    await runtime.start()
    children: list[subprocess.Popen[bytes]] = []
    http: HttpServer | None = None
    try:
        if opts.workers > 1:
            children = [_spawn_child(settings, i) for i in range(opts.workers)]
        if opts.http:
            http = await _start_http(runtime, settings)
        n_steps = len(project.steps)
        log.info(f"motia-py started: {n_steps} step(s), backend {settings.backend_url}"
                 + (f", {opts.workers} worker processes" if opts.workers > 1 else "")
                 + ("" if opts.cron else ", cron off"), pid=os.getpid())
        if ready is not None:
            ready.set()
        watch = asyncio.create_task(_watch_parent()) if os.environ.get("MOTIA_PY_PARENT_PID") else None
        waiters = {asyncio.ensure_future(stop.wait())} | ({watch} if watch else set())
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        log.info("stopping: no new events are taken; waiting for running handlers",
                 grace_period_s=settings.grace_period_s)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        if http is not None:
            await http.stop()
        await runtime.stop(settings.grace_period_s)
        for child in children:
            try:
                await asyncio.to_thread(child.wait, settings.grace_period_s + 5)
            except subprocess.TimeoutExpired:
                child.kill()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


async def _start_http(runtime: Runtime, settings: Settings) -> HttpServer:
    """Serve API steps, ``/openapi.json`` and streams; every route is in place before the port is bound."""
    from .http import ApiApp, start_server
    from .stream_ws import install_streams

    app = ApiApp(runtime.router, body_limit_bytes=settings.body_limit_bytes, dev=False)
    if settings.workbench_token:  # off in production unless enabled: then not even imported
        from .workbench import install_workbench

        install_workbench(app, runtime, settings, dev=False)
    if settings.metrics:  # Prometheus' client: about 2 MB of a worker serving HTTP
        from .metrics import install_metrics

        install_metrics(app, runtime, settings, dev=False)
    await install_streams(app, runtime, settings)  # a client that connects once the port answers is served
    server = await start_server(runtime.router, settings, dev=False, app=app)  # failing: streams stop
    framework_logger().info(f"serving HTTP on http://{settings.host}:{server.port}")
    return server


def _spawn_child(settings: Settings, index: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["MOTIA_PY_PARENT_PID"] = str(os.getpid())
    env["MOTIA_PY_BACKEND_URL"] = settings.backend_url
    cmd = [sys.executable, "-m", "motia_py", "start", "--workers", "1", "--no-http", "--no-cron",
           "--project", str(settings.root)]
    return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent, cwd=str(Path(settings.root)))


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL us when the parent dies."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


async def _watch_parent() -> None:
    """Return when the supervising parent has gone (fallback for systems without PDEATHSIG)."""
    parent = int(os.environ["MOTIA_PY_PARENT_PID"])
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            return
