"""The Workbench: a browser page and a JSON admin API at ``/__workbench`` for a running project.

:func:`install_workbench` mounts it on an :class:`~motia_py.http.ApiApp`. In ``dev`` on a loopback address
(127.0.0.1 by default) it is open to requests whose ``Host`` is an IP address, ``localhost`` or a name
listed in ``[server] allowed_hosts`` (so a web page that rebinds its own domain to 127.0.0.1 gets a 403);
``dev`` on any other address needs ``[server] workbench_token`` (:func:`check_dev_exposure`). In
``start`` it exists only when ``[server] workbench_token`` is set. With a token, every request carries
it: ``Authorization: Bearer <token>``, or ``?token=<token>`` on the page URL, which sets an HttpOnly
SameSite=Strict cookie for the page's own requests.

The page (``static/workbench.html``) is one self-contained file, inline CSS and vanilla JS, fetching
nothing from the network. It reads the API below and follows ``api/events`` (server-sent events)::

    GET  graph[?flow=]          the topic graph (graph.to_json) + every flow, emittable topics, routes
    GET  traces?limit=&step=&status=&cron=hide   trace summaries, newest first (cron=hide: no cron ticks)
    GET  traces/{id}            {"trace_id", "summary", "tree"}
    GET  dlq                    dead letters;   POST dlq/{id}/replay
    GET  namespaces             state namespaces; GET state/{namespace} -> {group: {key: value}}
    GET  queue                  per event/cron step: ready, scheduled, running, dead, its flow-control limits
                                and the ready events each limit holds back (``heldBy``)
    GET  streams                [{"name", "schema", "groups"}] (the page then joins a group over the
                                stream WebSocket at ``/``, as any stream client does)
    POST emit {"topic", "data", "key"?, "priority"?} -> {"traceId", "eventId"};  POST call {"method", "path",
                                "body"} -> the response
    GET  status/{id}            an event's status per step (id: the event id or a unique prefix)
    POST cancel/{id}            cancel an event -> {"changed", "cancelled", "requested", "status"}
    GET  events                 SSE: ``trace`` (a summary) when a trace appears or changes, ``ping``
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import workbench_jobs as jobs
from .backends.records import StepQueueStats
from .config import StepType
from .discovery import Project
from .errors import BackendError, ExposedWorkbenchError, GraphError, InvalidJsonError, MotiaError, UnknownTopicError
from .graph import to_json
from .http import ApiApp
from .publisher import CRON_TOPIC_PREFIX
from .runtime import Runtime
from .settings import Settings
from .tracing import summarize
from .wire import parse_json

PREFIX = "/__workbench"
COOKIE = "motia_workbench"
POLL_S = 0.5  # how often an event stream looks for new or changed traces
PING_S = 15.0
_RECENT = 25  # an active trace moves to the front of traces_recent, so the first few show every change
_LOOPBACK_NAMES = {"localhost"}
_PAGE_HEADERS = {
    # nothing but this page's inline code, talking to this server only
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",  # ?token= must not leak through Referer
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}

_Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


def install_workbench(app: ApiApp, runtime: Runtime, settings: Settings, *, dev: bool) -> bool:
    """Serve the Workbench page and its admin API under ``/__workbench`` on ``app``.

    Args:
        app: the running HTTP app; its ``router`` is read on every request, so hot reloads show.
        runtime: the runtime behind ``app`` (its trace recorder is flushed before traces are read).
        settings: the project settings (``workbench_token``, ``host``).
        dev: open routes (``motia-py dev``); otherwise only with a token, and every request needs it.

    Returns:
        Whether the routes were installed (``start`` without ``workbench_token`` installs nothing).
    """
    if not dev and not settings.workbench_token:
        return False
    if dev:
        check_dev_exposure(settings)
    # dev on loopback is open (Host names checked); dev elsewhere and start need the token
    open_dev = dev and is_loopback_host(settings.host)
    workbench = Workbench(app, runtime, settings, token=None if open_dev else settings.workbench_token)
    app.prefix_routes.append((PREFIX, workbench))
    return True


def check_dev_exposure(settings: Settings) -> None:
    """Refuse to serve the open dev Workbench to the network: ``dev`` on a non-loopback address needs a token.

    Call it before starting ``motia-py dev`` (:func:`install_workbench` calls it too).

    Raises:
        ExposedWorkbenchError: ``settings.host`` is not a loopback address and no ``workbench_token`` is set.
    """
    if is_loopback_host(settings.host) or settings.workbench_token:
        return
    raise ExposedWorkbenchError(
        f"motia-py dev would serve the Workbench admin API (state, dead letters, emit, replay) on "
        f"{settings.host!r}, which is not a loopback address, to anyone who can reach it: set a token with "
        "[server] workbench_token in motia_py.toml or MOTIA_PY_WORKBENCH_TOKEN (every request then needs it), "
        "or bind to 127.0.0.1")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.1``, ``::1``, ``[::1]``); names that merely
    start with ``127.`` (``127.evil.example``) are not."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_SECURITY_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # default=str: handlers' bodies and log fields may hold datetimes and the like
    return Response(json.dumps(data, default=str, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers={**_SECURITY_HEADERS, **(headers or {})})


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": error, "message": message}, status, headers)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n".encode()


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(raw))) if raw else default
    except ValueError:
        return default


def _host_name(host_header: str) -> str:
    """``[::1]:3000`` -> ``::1``; ``LocalHost.:3000`` -> ``localhost``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    host = host.rpartition(":")[0] if host.count(":") == 1 else host
    return host.rstrip(".")


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc
    except ValueError:  # "http://[" and the like
        return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def namespaces_of(project: Project) -> list[str]:
    """The state namespaces a project uses: its flows' and those its steps' ``ctx.state`` writes to."""
    return sorted({f.namespace for f in project.flows.values()} | {project.namespace_of(s) for s in project.steps})


class Workbench:
    """The request handler mounted at :data:`PREFIX` (see the module docstring for the routes).

    Args:
        app: the HTTP app (its current router is read per request).
        runtime: the runtime (for its trace recorder).
        settings: the project settings.
        token: the token every request must carry; ``None`` leaves the routes open.
    """

    def __init__(self, app: ApiApp, runtime: Runtime, settings: Settings, *, token: str | None) -> None:
        self.app = app
        self.runtime = runtime
        self.settings = settings
        self.token = token
        self.page = (resources.files("motia_py") / "static" / "workbench.html").read_bytes()
        self.routes: list[tuple[str, re.Pattern[str], _Handler]] = [
            (method, re.compile(pattern), fn) for method, pattern, fn in (
                ("GET", r"/?", self.index),
                ("GET", r"/api/graph", self.graph),
                ("GET", r"/api/traces", self.traces),
                ("GET", r"/api/traces/(?P<id>[^/]+)", self.trace),
                ("GET", r"/api/dlq", self.dlq),
                ("POST", r"/api/dlq/(?P<id>[^/]+)/replay", self.replay),
                ("GET", r"/api/namespaces", self.namespaces),
                ("GET", r"/api/state/(?P<namespace>[^/]+)", self.state),
                ("GET", r"/api/queue", self.queue),
                ("GET", r"/api/streams", self.streams),
                ("POST", r"/api/emit", self.emit),
                ("POST", r"/api/call", self.call),
                ("GET", r"/api/status/(?P<id>[^/]+)", self.status),
                ("POST", r"/api/cancel/(?P<id>[^/]+)", self.cancel),
                ("GET", r"/api/events", self.events),
            )
        ]

    @property
    def stopping(self) -> bool:
        """True once the server is shutting down (event streams end then)."""
        return self.app.stopping

    async def __call__(self, request: Request) -> Response:
        """Check access, route ``request`` and run its handler."""
        denied, via_query = self._check_access(request)
        if denied is not None:
            return denied
        sub = request.url.path[len(PREFIX):]
        allowed: list[str] = []
        for method, pattern, fn in self.routes:
            match = pattern.fullmatch(sub)
            if match is None:
                continue
            allowed.append(method)
            if request.method == method or (method == "GET" and request.method == "HEAD"):
                try:
                    response = await fn(request, match.groupdict())
                except BackendError as exc:
                    response = _error(503, "backend_unavailable", str(exc))
                if via_query and self.token is not None:
                    response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict", path=PREFIX)
                return response
        if allowed:
            methods = sorted({*allowed, *(["HEAD"] if "GET" in allowed else [])})
            return _error(405, "method_not_allowed", f"{request.method} {request.url.path}: use {allowed[0]}",
                          {"allow": ", ".join(methods)})
        return _error(404, "not_found", f"no workbench route {request.url.path}")

    def _check_access(self, request: Request) -> tuple[Response | None, bool]:
        """(a 401/403 response or None, whether the token came in the query string)."""
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin and _netloc(origin) != request.headers.get("host"):
            return _error(403, "forbidden", "cross-origin requests are not allowed"), False
        if self.token is None:
            # open in dev (on loopback only, see install_workbench): refuse host names other than
            # localhost, IP addresses and the configured ones, or a DNS-rebinding page (a domain of its
            # own, such as 127.0.0.1.nip.io, pointed at 127.0.0.1) could read and drive the dev server
            host = _host_name(request.headers.get("host", ""))
            if not (host in _LOOPBACK_NAMES or _is_ip(host) or host in self.settings.allowed_hosts):
                return _error(403, "forbidden", f"the dev workbench answers on localhost only, not {host!r}; "
                                                "list other names in [server] allowed_hosts"), False
            return None, False
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if self._same(bearer) or self._same(request.cookies.get(COOKIE, "")):
            return None, False
        if self._same(request.query_params.get("token", "")):
            return None, True
        return _error(401, "unauthorized", "the workbench needs its token: 'Authorization: Bearer <token>' "
                                           "or ?token=<token> on the page URL"), False

    def _same(self, given: str) -> bool:
        return bool(given) and self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    async def _body(self, request: Request) -> tuple[dict[str, Any] | None, Response | None]:
        raw = await request.body()
        if len(raw) > self.app.body_limit_bytes:
            return None, _error(413, "payload_too_large", f"the body is larger than {self.app.body_limit_bytes} bytes")
        try:
            body = parse_json(raw) if raw.strip() else {}
        except InvalidJsonError as exc:
            return None, _error(400, "invalid_json", f"the request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return None, _error(400, "invalid_request", "the request body must be a JSON object")
        return body, None

    # -- the page -----------------------------------------------------------------------------------
    async def index(self, request: Request, _: dict[str, str]) -> Response:
        """The single-page Workbench."""
        return Response(self.page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    # -- graph ------------------------------------------------------------------------------------
    async def graph(self, request: Request, _: dict[str, str]) -> Response:
        """``graph.to_json`` (of one flow with ``?flow=``) plus what the page needs around it."""
        project = self.app.router.project
        flow = request.query_params.get("flow") or None
        try:
            doc = to_json(project, flow)
        except GraphError as exc:
            return _error(404, "unknown_flow", str(exc))
        descriptions = {s.name: s.description for s in project.steps}
        for step in doc["steps"]:
            step["description"] = descriptions.get(step["name"], "")
        flows = sorted({f for s in project.steps for f in s.flows} | set(project.flows))
        entry = project.entry_topics()
        topics: dict[str, dict[str, Any]] = {t: {"topic": t, "steps": [], "schema": None} for t in sorted(entry)}
        for s in project.steps:
            for t in s.subscribes if s.type is StepType.EVENT else ():
                item = topics.setdefault(t, {"topic": t, "steps": [], "schema": None})
                item["steps"].append(s.name)
                if item["schema"] is None and s.input is not None:
                    item["schema"] = s.input.json
        return _json({
            **doc, "project": self.settings.root.name, "flow": flow, "flows": flows,
            "flowInfo": {f.name: {"description": f.description, "namespace": f.namespace,
                                  "steps": sum(1 for s in project.steps if f.name in s.flows)}
                         for f in map(project.flow, flows)},
            "emitTopics": [topics[t] for t in sorted(topics)],
            "routes": [{"method": s.api.method, "path": s.api.path, "step": s.name}
                       for s in project.steps if s.api is not None],
            "stepCount": len(project.steps),
        })

    # -- traces -----------------------------------------------------------------------------------
    async def _runs(self, trace_id: str) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self.app.router.backend.traces_get(trace_id)]

    async def _flush(self) -> None:
        if self.runtime.recorder is not None:
            await self.runtime.recorder.flush()

    async def _recent(self, limit: int) -> dict[str, dict[str, Any]]:
        out = {}
        for trace_id in await self.app.router.backend.traces_recent(limit):
            runs = await self._runs(trace_id)
            if runs:
                out[trace_id] = summarize(trace_id, runs)
        return out

    async def traces(self, request: Request, _: dict[str, str]) -> Response:
        """Trace summaries, newest first, optionally only those that ran ``step`` or have ``status``, and
        without the traces of cron ticks with ``cron=hide``."""
        q = request.query_params
        limit = _int(q.get("limit"), 50, 1, 1000)
        step, status = q.get("step") or None, q.get("status") or None
        hide_cron = q.get("cron") == "hide"
        await self._flush()
        out: list[dict[str, Any]] = []
        for trace_id in await self.app.router.backend.traces_recent(max(limit * 10, 200)):
            runs = await self._runs(trace_id)
            summary = summarize(trace_id, runs)
            if hide_cron and str(summary["entry"] or "").startswith(CRON_TOPIC_PREFIX):
                continue
            if runs and (step is None or step in summary["steps"]) and (status is None or summary["status"] == status):
                out.append(summary)
                if len(out) >= limit:
                    break
        return _json(sorted(out, key=lambda s: s["started_at"], reverse=True))

    async def trace(self, request: Request, params: dict[str, str]) -> Response:
        """One trace (by its id or a unique prefix): its summary and the tree of runs (which run's emit
        caused which)."""
        await self._flush()
        code, body = await jobs.trace(self.app.router.backend, params["id"], self.settings.traces_max_count)
        return _json(body, code)

    async def events(self, request: Request, _: dict[str, str]) -> Response:
        """Server-sent events: ``ready`` once, then ``trace`` per new or changed trace, ``ping`` now and then."""
        return StreamingResponse(self._stream(request), media_type="text/event-stream",
                                 headers={**_SECURITY_HEADERS, "x-accel-buffering": "no"})

    async def _stream(self, request: Request) -> AsyncIterator[bytes]:
        seen = await self._recent(_RECENT)
        # the page loads the list after ``ready``, so nothing falls between the list and the stream
        yield b"retry: 1000\n" + _sse("ready", {"traces": len(seen)})
        last_ping = time.monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            if self.stopping or await request.is_disconnected():
                return
            try:
                await self._flush()
                current = await self._recent(_RECENT)
            except BackendError:
                continue  # the backend may come back; the stream stays
            for trace_id, summary in sorted(current.items(), key=lambda kv: kv[1]["started_at"]):
                if seen.get(trace_id) != summary:
                    yield _sse("trace", summary)
            seen = current
            if time.monotonic() - last_ping >= PING_S:
                last_ping = time.monotonic()
                yield _sse("ping", {"t": time.time()})

    # -- dead letters -------------------------------------------------------------------------------
    async def dlq(self, request: Request, _: dict[str, str]) -> Response:
        """Dead letters, newest first."""
        limit = _int(request.query_params.get("limit"), 200, 1, 10_000)
        return _json([d.to_json() for d in await self.app.router.backend.dlq_list(limit)])

    async def replay(self, request: Request, params: dict[str, str]) -> Response:
        """Put a dead letter back on its step's queue with fresh attempts."""
        if not await self.app.router.backend.dlq_replay(params["id"]):
            return _error(404, "unknown_dead_letter", f"no dead letter '{params['id']}'")
        return _json({"replayed": True, "id": params["id"]})

    async def queue(self, request: Request, _: dict[str, str]) -> Response:
        """Each event and cron step's queue, its flow-control limits and what they hold back now."""
        steps = [s for s in self.app.router.steps.values() if s.type in (StepType.EVENT, StepType.CRON)]
        controls = {s.name: c for s in steps if (c := s.queue.flow.control) is not None}
        stats = await self.app.router.backend.step_stats(controls)
        now = time.time()
        return _json([{"step": s.name, "limits": s.queue.flow.describe(), "ready": st.ready, "scheduled": st.delayed,
                       "running": st.leased, "dead": st.dead, "heldBy": st.throttled,
                       "oldestReadyAgeS": None if st.oldest_ready_at is None else max(0.0, now - st.oldest_ready_at)}
                      for s in sorted(steps, key=lambda s: s.name)
                      for st in (stats.get(s.name) or StepQueueStats(),)])

    # -- state ------------------------------------------------------------------------------------
    async def namespaces(self, request: Request, _: dict[str, str]) -> Response:
        """The project's state namespaces."""
        return _json(namespaces_of(self.app.router.project))

    async def state(self, request: Request, params: dict[str, str]) -> Response:
        """``{group: {key: value}}`` of one namespace."""
        backend, ns = self.app.router.backend, params["namespace"]
        return _json({g: {k: json.loads(v) for k, v in sorted((await backend.state_items(ns, g)).items())}
                      for g in sorted(await backend.state_groups(ns))})

    async def streams(self, request: Request, _: dict[str, str]) -> Response:
        """The project's streams, each with its groups that hold items (the page follows one live over the
        stream WebSocket itself)."""
        backend = self.app.router.backend
        return _json([{"name": s.name, "schema": s.schema.json if s.schema is not None else None,
                       "groups": await backend.state_groups(s.namespace)} for s in self.app.router.project.streams])

    # -- actions ----------------------------------------------------------------------------------
    async def emit(self, request: Request, _: dict[str, str]) -> Response:
        """Publish ``data`` on ``topic`` as if from outside; answer its trace id."""
        body, bad = await self._body(request)
        if body is None:
            return bad or _error(400, "invalid_request", "no body")
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic.strip():
            return _error(400, "invalid_request", "'topic' must be a non-empty string")
        key = body.get("key") or None
        if key is not None and not isinstance(key, str):
            return _error(400, "invalid_request", "'key' must be a string")
        priority = body.get("priority")
        try:
            event_id = await self.app.router.emit(topic.strip(), body.get("data", {}), key=key, priority=priority)
        except BackendError:
            raise  # a 503, not the caller's fault
        except UnknownTopicError as exc:
            return _error(400, "unknown_topic", str(exc))
        except MotiaError as exc:
            return _error(400, "invalid_event", str(exc))
        return _json({"traceId": event_id, "eventId": event_id})

    # -- job handles --------------------------------------------------------------------------------
    async def status(self, request: Request, params: dict[str, str]) -> Response:
        """An event's status per subscribing step (see :mod:`.workbench_jobs`)."""
        code, body = await jobs.status(self.app.router.backend, params["id"])
        return _json(body, code)

    async def cancel(self, request: Request, params: dict[str, str]) -> Response:
        """Cancel an event (see :mod:`.workbench_jobs`)."""
        code, body = await jobs.cancel(self.app.router.backend, params["id"])
        return _json(body, code)

    async def call(self, request: Request, _: dict[str, str]) -> Response:
        """Call an API step through the app's pipeline (validation, middleware, emits, traces)."""
        body, bad = await self._body(request)
        if body is None:
            return bad or _error(400, "invalid_request", "no body")
        method, target = str(body.get("method") or "GET").upper(), body.get("path")
        extra = body.get("headers") or {}
        if not isinstance(target, str) or not target.startswith("/") or target.startswith(PREFIX) or \
                target.startswith("//"):
            return _error(400, "invalid_request", "'path' must be an API step's path, such as /jobs/1")
        if not isinstance(extra, dict):
            return _error(400, "invalid_request", "'headers' must be an object")
        parts = urlsplit(target)
        payload = body.get("body")
        raw = b"" if payload is None or payload == "" else json.dumps(payload).encode()
        headers = {"content-type": "application/json", **{str(k).lower(): str(v) for k, v in extra.items()}}
        result = await self.app.handle(method, parts.path, headers=headers, query=dict(parse_qsl(parts.query)),
                                       raw_body=raw)
        return _json({"status": result.status, "body": result.body, "headers": dict(result.headers)})
