"""The runtime: discovery -> validation -> backend -> router -> workers -> cron (-> HTTP).

:func:`load_project` and :func:`require_valid` (discovery and validation) live in :mod:`.project_load`,
which the commands that never run events import without this module; they are re-exported here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .backends.base import Backend
from .backends.registry import BackendOptions, create_backend
from .discovery import Project
from .handle_codec import HandleJanitor
from .logs import LogSink
from .otel import Otel
from .project_load import load_project, require_valid
from .router import Router
from .runs import Observer
from .scheduler import Scheduler
from .settings import Settings
from .tracing import TraceRecorder, TraceSettings
from .types import Clock
from .worker import Worker

__all__ = ["Runtime", "backend_for", "load_project", "require_valid", "trace_settings"]


def trace_settings(settings: Settings) -> TraceSettings:
    """Trace retention from the project settings."""
    return TraceSettings(enabled=settings.traces_enabled, max_age_s=settings.traces_max_age_s,
                         max_traces=settings.traces_max_count)


def backend_for(settings: Settings, url: str | None = None, clock: Clock | None = None) -> Backend:
    """Build (not open) the backend named by ``url`` or the settings."""
    return create_backend(url or settings.backend_url,
                          BackendOptions(root=settings.root, clock=clock, prefix=settings.redis_prefix))


class Runtime:
    """A running project: workers consuming every step's queue and the cron scheduler.

    Use as ``async with Runtime(project, backend) as rt: ...`` or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        project: Project,
        backend: Backend,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] | None = None,
        log_sink: LogSink | None = None,
        observers: Iterable[Observer] = (),
        workers: bool = True,
        cron: bool = True,
        poll_s: float = 0.5,
        traces: TraceSettings | None = None,
        otel: Otel | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"rand": rand} if rand is not None else {}
        self.recorder: TraceRecorder | None = None
        observers = list(observers)
        if traces is not None and traces.enabled:
            self.recorder = TraceRecorder(backend, traces, downstream=log_sink)
            log_sink = self.recorder.log_sink
            observers.append(self.recorder.observe)
        self.router = Router(project, backend, clock=clock, log_sink=log_sink, observers=observers, otel=otel,
                             **kwargs)
        self.worker = Worker(self.router, poll_s=poll_s) if workers else None
        self.scheduler = Scheduler(self.router, clock=clock) if cron else None
        s = project.settings  # finished job handles are pruned where workers run
        self.janitor = HandleJanitor(self.router.backend, s.handles_max_age_s, s.handles_max_count,
                                     clock=self.router.clock) if workers else None
        self._started = False

    @property
    def project(self) -> Project:
        """The project being served (changes on reload)."""
        return self.router.project

    @property
    def backend(self) -> Backend:
        """The backend in use."""
        return self.router.backend

    async def start(self) -> None:
        """Open the backend and start workers and cron."""
        await self.backend.open()
        if self.recorder is not None:
            self.recorder.start()
        if self.worker is not None:
            await self.worker.start()
        if self.janitor is not None:
            self.janitor.start()
        if self.scheduler is not None:
            await self.scheduler.start()
        self._started = True

    async def is_idle(self) -> bool:
        """True when no event is queued, delayed or leased and this runtime runs no handler."""
        stats = await self.backend.stats()
        return stats.idle and (self.worker is None or self.worker.in_flight == 0)

    async def wait_idle(self, timeout_s: float = 30.0, poll_s: float = 0.005) -> None:
        """Return once :meth:`is_idle`; raise TimeoutError after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while not await self.is_idle():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not idle after {timeout_s} s")
            await asyncio.sleep(poll_s)

    async def reload(self, project: Project) -> None:
        """Switch to a newly discovered (and validated) project without losing an event."""
        self.router.set_project(project)
        if self.worker is not None:
            self.worker.sync()

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop cron, let in-flight handlers finish within ``grace_s``, close the backend."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.worker is not None:
            await self.worker.stop(grace_s)
        if self.janitor is not None:
            await self.janitor.stop()
        await self.router.aclose()
        if self.recorder is not None:
            await self.recorder.stop()
        if self._started:
            await self.backend.close()
            self._started = False

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())
