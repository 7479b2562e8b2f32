"""``motia-py dev``: run everything on the project's backend and hot-reload on every save.

On a change the whole project is rediscovered and revalidated first. A valid project replaces the
running one at once (new steps start consuming, changed handlers run new code, removed steps stop,
API routes and cron schedules follow); an invalid one is reported with file and line while the last
good version keeps serving. Queued and in-flight events are untouched by a reload: consumers of
steps that still exist keep running, and handlers already running finish on the code they started with.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType

import click
import watchfiles
from msgspec import Struct

from . import task_dump
from .config import StepSpec
from .discovery import Project, is_ignored_dir
from .findings import Finding, Severity
from .http import ApiApp, start_server
from .logs import framework_logger
from .metrics import install_metrics
from .otel import detect
from .runtime import Runtime, backend_for, load_project, trace_settings
from .settings import SETTINGS_FILE, Settings
from .stream_ws import install_streams
from .workbench import install_workbench

FileChanges = set[tuple[watchfiles.Change, str]]


class ProjectFilter(watchfiles.DefaultFilter):
    """Only ``*.py`` files, ``motia_py.toml`` and ``flows/*.toml`` trigger a reload; ``.motia/``, logs and
    everything else never do (so a reload can never trigger itself)."""

    def __init__(self, settings: Settings) -> None:
        # directories are judged below by their path inside the project (discovery's rule), not by every
        # part of the absolute path: a project kept under ~/venv/ or ~/.projects/ still reloads
        super().__init__(ignore_dirs=())
        self.root = settings.root
        self.flows_dir = settings.flows_dir

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        """True when ``path`` should trigger a reload."""
        if not super().__call__(change, path):
            return False
        p = Path(path)
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            return False
        if any(is_ignored_dir(part) for part in rel.parts[:-1]):
            return False
        if p.suffix == ".py":
            return True
        if rel.as_posix() == SETTINGS_FILE:
            return True
        return p.suffix == ".toml" and p.parent == self.flows_dir


class ProjectWatcher:
    """The project's saves, in batches (changes arriving together are grouped, for up to 400 ms), filtered
    by :class:`ProjectFilter`; use as ``async with ProjectWatcher(settings, stop) as watcher``.

    Watching starts on entering the ``async with`` block, not on the first iteration, so a save made while
    the project is still loading is not lost: it arrives in the first batch.
    """

    def __init__(self, settings: Settings, stop: asyncio.Event) -> None:
        self._stream = watchfiles.awatch(settings.root, watch_filter=ProjectFilter(settings), debounce=400,
                                         step=20, stop_event=stop, recursive=True)
        self._first: asyncio.Task[FileChanges | None] | None = None

    async def __aenter__(self) -> ProjectWatcher:
        self._first = asyncio.create_task(self._next_batch())
        # awatch registers its file-system watches synchronously when first iterated, before its first
        # await; one turn of the loop runs the task created above that far
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._first is not None:
            self._first.cancel()
            await asyncio.gather(self._first, return_exceptions=True)
        await self._stream.aclose()

    async def _next_batch(self) -> FileChanges | None:
        try:
            return await anext(self._stream)
        except StopAsyncIteration:
            return None

    async def batches(self) -> AsyncIterator[FileChanges]:
        """Each batch of changes, until the ``stop`` event is set."""
        first = await self._first if self._first is not None else await self._next_batch()
        if first is None:
            return
        yield first
        async for changes in self._stream:
            yield changes


class Diff(Struct, frozen=True):
    """Which steps a reload added, changed and removed."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    def render(self) -> str:
        """``+ A, ~ B, - C`` (or ``no step changed``)."""
        parts = [f"+ {n}" for n in self.added] + [f"~ {n}" for n in self.changed] + [f"- {n}" for n in self.removed]
        return ", ".join(parts) if parts else "no step changed"


def step_fingerprints(steps: Iterable[StepSpec]) -> dict[str, str]:
    """Each step's name -> what identifies its version: its file's content now and its config."""
    out = {}
    for s in steps:
        try:
            digest = hashlib.sha1(s.file.read_bytes()).hexdigest()
        except OSError:
            digest = ""
        # the source and the config, not repr(spec): that holds the handler's address, new on every import
        out[s.name] = f"{s.file}:{digest}:{s.type.value}:{s.subscribes}:{s.emit_topics}:{s.flows}"
    return out


def diff_projects(before: dict[str, str], after: dict[str, str]) -> Diff:
    """Compare two loads of a project step by step, from their :func:`step_fingerprints`."""
    return Diff(added=tuple(sorted(set(after) - set(before))),
                changed=tuple(sorted(n for n in set(after) & set(before) if after[n] != before[n])),
                removed=tuple(sorted(set(before) - set(after))))


class DevServer:
    """The dev loop: runtime + HTTP + watcher."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self.settings = settings
        self.port = port
        self.log = framework_logger()
        self.reloads = 0

    def _report(self, findings: list[Finding]) -> None:
        for f in findings:
            if f.severity is Severity.INFO:
                continue
            colour = "red" if f.severity is Severity.ERROR else "yellow"
            click.echo(click.style(f.render(self.settings.root), fg=colour), err=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set."""
        # watch before the first load, and so before the server answers: no save is ever missed
        async with ProjectWatcher(self.settings, stop) as watcher:
            project, findings = load_project(self.settings, cycles=True)
            errors = [f for f in findings if f.severity is Severity.ERROR]
            self._report(findings)
            if errors:
                click.echo(click.style(f"{len(errors)} error(s): fix them and save; serving no steps until then",
                                       fg="red", bold=True), err=True)
                project = Project(settings=self.settings, steps=(), flows={}, problems=())
            serving = step_fingerprints(project.steps)
            runtime = Runtime(project, backend_for(self.settings), poll_s=0.2,
                              traces=trace_settings(self.settings), otel=detect(self.settings.traces_otel))
            await runtime.start()
            app = ApiApp(runtime.router, body_limit_bytes=self.settings.body_limit_bytes, dev=True)
            install_workbench(app, runtime, self.settings, dev=True)
            install_metrics(app, runtime, self.settings, dev=True)
            try:  # every route, streams' too, is in place before the port is bound
                await install_streams(app, runtime, self.settings)
                http = await start_server(runtime.router, self.settings, dev=True, port=self.port, app=app)
            except BaseException:  # start_server ran the app's stop hooks (the streams') itself
                await runtime.stop(self.settings.grace_period_s)
                raise
            click.echo(click.style(f"motia-py dev: {len(project.steps)} step(s), backend "
                                   f"{self.settings.backend_url}, http://{self.settings.host}:{http.port}  "
                                   f"(watching {self.settings.root})\n"
                                   f"  workbench: http://{self.settings.host}:{http.port}/__workbench",
                                   fg="green", bold=True), err=True)
            reloading = asyncio.create_task(self._reload_on_changes(watcher, runtime, http.app, serving))
            try:
                await stop.wait()
            finally:
                reloading.cancel()
                await asyncio.gather(reloading, return_exceptions=True)
                await http.stop()
                await runtime.stop(self.settings.grace_period_s)

    async def _reload_on_changes(self, watcher: ProjectWatcher, runtime: Runtime, app: ApiApp,
                                 serving: dict[str, str]) -> None:
        """Reload on each batch of saves; ``serving`` is the fingerprint of the version now serving."""
        async for changes in watcher.batches():
            started = time.perf_counter()
            names = sorted({Path(p).relative_to(self.settings.root).as_posix() for _, p in changes})
            if SETTINGS_FILE in names:
                click.echo(click.style("motia_py.toml changed: step and flow changes reload now; backend and "
                                       "server settings take effect on restart", fg="yellow"), err=True)
            project, findings = load_project(self.settings, cycles=True)
            errors = [f for f in findings if f.severity is Severity.ERROR]
            if errors:
                self._report(errors)
                click.echo(click.style(f"reload rejected ({len(errors)} error(s) in {', '.join(names)}); "
                                       "the last good version keeps serving", fg="red", bold=True), err=True)
                continue
            now_serving = step_fingerprints(project.steps)
            diff = diff_projects(serving, now_serving)
            await runtime.reload(project)
            app.set_router(runtime.router)
            serving = now_serving
            self.reloads += 1
            ms = (time.perf_counter() - started) * 1000
            warnings = [f for f in findings if f.severity is Severity.WARNING]
            click.echo(click.style(f"reloaded in {ms:.0f} ms: {diff.render()}", fg="green")
                       + (click.style(f"  ({len(warnings)} warning(s))", fg="yellow") if warnings else ""),
                       err=True)
            self._report(warnings)


async def run_dev(settings: Settings, port: int | None = None) -> int:
    """Run ``motia-py dev`` until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task_dump.install(framework_logger())  # kill -USR1: log where every task waits
    # helper modules are imported by the normal import system; a .pyc keyed on whole-second mtimes
    # could serve the previous version of a helper saved twice within a second
    sys.dont_write_bytecode = True
    await DevServer(settings, port=port).run(stop)
    return 0
