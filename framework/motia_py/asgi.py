"""A project's API steps as an ASGI app to mount in a FastAPI or Starlette application.

```python
from fastapi import FastAPI
from motia_py.asgi import create_app

motia = create_app("path/to/project")
app = FastAPI(lifespan=motia.lifespan)  # starts and stops the project's workers and cron with the app
app.mount("/motia", motia)              # POST /motia/orders runs the API step of path /orders
```

Requests run through the same pipeline as ``motia-py start`` (:class:`motia_py.http.ApiApp`): body
validation and its 422s, middleware, handlers, emits published when the handler succeeds. Paths are
relative to the mount point.

Starlette (and so FastAPI) never sends lifespan events to mounted apps, so the host must start the
project's runtime: ``lifespan=motia.lifespan``, or ``async with motia.running():`` inside a lifespan of
its own. Until then the mounted app answers 503 with that hint. Served on its own
(``uvicorn module:motia``) it runs its lifespan itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from msgspec import structs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .discovery import Project
from .errors import MotiaError
from .http import ApiApp
from .logs import framework_logger
from .metrics import Metrics, install_metrics
from .otel import detect
from .runtime import Runtime, backend_for, load_project, require_valid, trace_settings
from .settings import Settings, load_settings
from .workbench import install_workbench

_NOT_STARTED = ("the motia-py app is not started: Starlette and FastAPI do not run the lifespan of mounted apps; "
                "pass lifespan=motia_app.lifespan to FastAPI()/Starlette(), or enter 'async with motia_app.running()' "
                "in your own lifespan")


def create_app(project_dir: str | os.PathLike[str] = ".", *, workers: bool = True, cron: bool | None = None,
               workbench: bool = False, metrics: bool | None = None, dev: bool = False,
               backend_url: str | None = None) -> MotiaApp:
    """An ASGI app serving the API steps of the project at ``project_dir``.

    The project is discovered and validated now, so a broken step fails the host application's start-up
    (:class:`~motia_py.errors.GraphError` lists every error). Settings (backend, limits, tokens) come from
    the project's ``motia_py.toml``, the environment and its ``.env``, as for ``motia-py start``.

    Args:
        project_dir: the project directory.
        workers: consume every step's queue in this process. With False the app only serves requests
            (emits are enqueued) and workers run elsewhere: ``motia-py start --no-http``.
        cron: fire cron steps in this process (default: the same as ``workers``).
        workbench: serve the Workbench at ``<mount>/__workbench``: open with ``dev``, otherwise only
            with ``[server] workbench_token`` (every request carries it).
        metrics: serve Prometheus metrics at ``<mount>/metrics`` (default: ``[server] metrics``; see
            :mod:`motia_py.metrics` for who may read them).
        dev: check responses against ``responseSchema`` and show exception messages in 500s.
        backend_url: overrides the project's backend.

    Raises:
        ProjectError, SettingsError: the project or its settings cannot be read.
        GraphError: the project has validation errors.
        MotiaError: ``workers=False`` on the memory backend (nothing else could run its events), or
            ``workbench=True`` outside dev without a workbench token.
    """
    settings = load_settings(project_dir, flags={"backend_url": backend_url})
    project, findings = load_project(settings)
    require_valid(project, findings)
    if not workers and settings.backend_url.startswith("memory:"):
        raise MotiaError("create_app(workers=False) needs a shared backend (sqlite or redis): events enqueued "
                         "on memory:// could only run in this process")
    if workbench and not dev and not settings.workbench_token:
        raise MotiaError("create_app(workbench=True) outside dev needs [server] workbench_token "
                         "(MOTIA_PY_WORKBENCH_TOKEN): the Workbench can emit events and replay dead letters")
    return MotiaApp(settings, project, workers=workers, cron=workers if cron is None else cron,
                    workbench=workbench, metrics=settings.metrics if metrics is None else metrics, dev=dev)


class MotiaApp:
    """The ASGI app :func:`create_app` returns; each start builds a fresh runtime, so a host application
    may be started and stopped more than once (as test clients do)."""

    def __init__(self, settings: Settings, project: Project, *, workers: bool, cron: bool, workbench: bool,
                 metrics: bool, dev: bool) -> None:
        self.settings = settings
        self.project = project
        self.workers = workers
        self.cron = cron
        self.workbench = workbench
        self.dev = dev
        self.metrics = Metrics() if metrics else None
        self.runtime: Runtime | None = None
        self._api: ApiApp | None = None
        self._log = framework_logger()
        self._warned = False

    @property
    def started(self) -> bool:
        """True between :meth:`startup` and :meth:`shutdown`."""
        return self._api is not None

    async def startup(self) -> None:
        """Open the backend and start workers and cron (as configured); a second call does nothing."""
        if self.runtime is not None:
            return
        settings = self.settings
        runtime = Runtime(self.project, backend_for(settings), workers=self.workers, cron=self.cron,
                          traces=trace_settings(settings), otel=detect(settings.traces_otel))
        self.runtime = runtime
        try:
            await runtime.start()
        except BaseException:
            self.runtime = None
            with contextlib.suppress(Exception):  # the start-up error is the one to report
                await runtime.stop(0)
            raise
        api = ApiApp(runtime.router, body_limit_bytes=settings.body_limit_bytes, dev=self.dev)
        api.extra_routes[("GET", "/openapi.json")] = self._openapi
        if self.workbench:
            install_workbench(api, runtime, settings, dev=self.dev)
        if self.metrics is not None:
            install_metrics(api, runtime, structs.replace(settings, metrics=True), dev=self.dev,
                            metrics=self.metrics)
        self._api = api
        self._log.info(f"motia-py app started: {len(self.project.steps)} step(s), backend {settings.backend_url}"
                       + ("" if self.workers else ", no workers") + ("" if self.cron else ", cron off"))

    async def shutdown(self) -> None:
        """Stop taking requests, stop cron, let running handlers finish (the grace period), close."""
        runtime, api = self.runtime, self._api
        self.runtime, self._api = None, None
        if api is not None:
            api.stopping = True  # the Workbench's event streams end
        if runtime is not None:
            await runtime.stop(self.settings.grace_period_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """``async with motia_app.running():`` runs the project for the duration of the block."""
        await self.startup()
        try:
            yield  # nothing: Starlette would take a value yielded by a lifespan as its request state
        finally:
            await self.shutdown()

    def lifespan(self, app: Any) -> contextlib.AbstractAsyncContextManager[None]:
        """A lifespan for the host: ``FastAPI(lifespan=motia_app.lifespan)`` (``app`` is the host app)."""
        return self.running()

    async def _openapi(self, _: Request) -> Response:
        from .openapi import openapi_document

        return JSONResponse(openapi_document(self.project))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point: lifespan events when served on its own, HTTP requests relative to the mount."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        api = self._api
        if api is None:
            if scope["type"] == "http":
                if not self._warned:  # once: every request answers 503 with the same message anyway
                    self._warned = True
                    self._log.error(_NOT_STARTED)
                await JSONResponse({"error": "not_started", "message": _NOT_STARTED}, status_code=503)(
                    scope, receive, send)
            return
        await api({**scope, "path": route_path(scope)}, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def route_path(scope: Scope) -> str:
    """The request path relative to the mount point (``scope["root_path"]``), as Starlette routes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path
