"""API steps over HTTP: routing, body limits, validation, middleware, handler calls and emits.

The request pipeline (:class:`ApiApp.handle`) is independent of the server, so the test harness runs
exactly what the server runs. The ASGI side is a small Starlette-based adapter served by uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from typing import Any

import uvicorn
from msgspec import Struct, field, structs
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .backends.base import new_id
from .config import StepSpec, StepType
from .errors import ConditionSkipped, InputValidationError, InvalidJsonError, InvalidResponseError, MotiaError
from .http_extras import CorsPolicy, load_middleware
from .query import parse_query
from .request_run import RequestRun
from .router import Router
from .settings import Settings
from .streaming import StreamReply
from .wire import check_headers, check_status, encode_json, parse_json

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ApiRequest(dict[str, Any]):
    """What an API handler gets as ``req``: a dict (``req["body"]``, ``req.get("body", {})``) whose
    keys are also attributes (``req.body``, ``req.pathParams``, ``req.path_params``)."""

    _ALIASES = {"path_params": "pathParams", "query_params": "queryParams", "raw_body": "rawBody"}
    raw_bytes: bytes = b""  # the body as received (Motia 1.0 handlers read it as request.request_body)

    def __getattr__(self, name: str) -> Any:
        key = self._ALIASES.get(name, name)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(name) from None


class ApiResponse(Struct, frozen=True):
    """A response ready to send (``content``: the body already encoded, when it was checked)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    stream: AsyncIterator[bytes] | None = None  # a body sent while the handler writes it (Motia 1.0)


class _Route(Struct, frozen=True):
    spec: StepSpec
    pattern: re.Pattern[str]


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_from(headers: Mapping[str, str]) -> str | None:
    """The trace id of a W3C ``traceparent`` header, so a caller's trace continues through our steps."""
    value = next((v for k, v in headers.items() if k.lower() == "traceparent"), None)
    m = _TRACEPARENT.match(value.strip().lower()) if value else None
    return m.group(1) if m and m.group(1) != "0" * 32 else None


def compile_path(path: str) -> re.Pattern[str]:
    """``/jobs/{id}`` -> a regex with a named group per parameter."""
    out, pos = "", 0
    for m in _PARAM.finditer(path):
        out += re.escape(path[pos:m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        pos = m.end()
    return re.compile("^" + out + re.escape(path[pos:]) + r"/?\Z")  # \Z: "$" would also match before a "\n"


def _error(status: int, error: str, **extra: Any) -> ApiResponse:
    return ApiResponse(status, {"error": error, **extra})


class ApiApp:
    """Serves a project's API steps; :meth:`set_router` swaps in a reloaded project atomically.

    Args:
        router: runs handlers and publishes their emits.
        body_limit_bytes: larger request bodies get 413.
        dev: check responses against ``responseSchema`` and show exception messages in 500s.
    """

    def __init__(self, router: Router, *, body_limit_bytes: int = 1_048_576, dev: bool = False) -> None:
        self.body_limit_bytes = body_limit_bytes
        self.dev = dev
        self.stopping = False  # set when the server shuts down: long-lived responses (event streams) end
        self.extra_routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {}
        self.prefix_routes: list[tuple[str, Callable[[Request], Awaitable[Response]]]] = []
        self.on_response: Callable[[str, str, int], None] | None = None  # (method, path, status): metrics
        self.websocket: ASGIApp | None = None  # WebSocket connections (streams: see stream_ws.py)
        self.on_stop: list[Callable[[], Awaitable[None]]] = []  # run when the server stops
        self.set_router(router)

    async def run_stop_hooks(self) -> None:
        """Run the ``on_stop`` hooks (the server stops, or never started)."""
        for stop in self.on_stop:
            await stop()

    def set_router(self, router: Router) -> None:
        """Use the router's current project (after a reload)."""
        self.router = router
        routes = [_Route(s, compile_path(s.api.path)) for s in router.project.steps
                  if s.type is StepType.API and s.api is not None]
        # literal segments beat parameters: /jobs/stats before /jobs/{id}
        routes.sort(key=lambda r: (r.spec.api.path.count("{") if r.spec.api else 0))
        self.routes = routes
        settings = router.project.settings
        self.cors = CorsPolicy.from_settings(settings)
        self.middleware = load_middleware(settings)  # the project's global middleware, around every step's

    def match(self, method: str, path: str) -> tuple[StepSpec | None, dict[str, str], bool]:
        """The API step for ``method path``, its path parameters, and whether the path exists at all."""
        path_exists = False
        for r in self.routes:
            m = r.pattern.match(path)
            if m is None:
                continue
            path_exists = True
            api = r.spec.api
            if api is not None and (api.method == method or (method == "HEAD" and api.method == "GET")):
                return r.spec, m.groupdict(), True
        return None, {}, path_exists

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some API step serves on ``path`` (``HEAD`` with ``GET``), for ``Allow``."""
        methods = {r.spec.api.method for r in self.routes if r.spec.api is not None and r.pattern.match(path)}
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    async def handle(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                     query: Mapping[str, Any] | None = None, raw_body: bytes = b"") -> ApiResponse:
        """Run the whole pipeline for one request (what the server and the harness both call)."""
        spec, params, exists = self.match(method.upper(), path)
        if spec is None:
            if exists:
                return ApiResponse(405, {"error": "method_not_allowed",
                                         "message": f"no API step for {method.upper()} {path}"},
                                   {"allow": ", ".join(self.allowed_methods(path))})
            return _error(404, "not_found", message=f"no API step for {method.upper()} {path}")
        if len(raw_body) > self.body_limit_bytes:
            return _error(413, "payload_too_large", limit=self.body_limit_bytes)
        assert spec.api is not None  # routes hold API steps only
        body: Any = {}  # Motia's handlers do req.get("body", {}).get(...): an empty body reads as {}
        if spec.api.raw_body:  # Motia 1.0: JSON when the content type says so, None when empty
            body = None
        if raw_body.strip() and (not spec.api.raw_body or _json_content(headers or {})):
            try:
                body = parse_json(raw_body)
            except InvalidJsonError as exc:
                return _error(400, "invalid_json", message=str(exc))
        fields: list[dict[str, object]] = []
        try:
            query = parse_query(spec.api.query_params, query or {})
        except InputValidationError as exc:
            fields.extend(exc.fields)
        if spec.api.body_schema is not None and not (spec.api.raw_body and body is None):
            try:
                body = spec.api.body_schema.validate(body)
            except InputValidationError as exc:
                fields.extend(exc.fields)
        if fields:
            return _error(422, "validation", fields=fields)
        req = ApiRequest(body=body, headers=dict(headers or {}), pathParams=params,
                         queryParams=dict(query or {}), rawBody=raw_body.decode("utf-8", "replace"),
                         method=method.upper(), path=path)
        req.raw_bytes = raw_body
        return await self._run(spec, req)

    async def _run(self, spec: StepSpec, req: ApiRequest) -> ApiResponse:
        headers = req["headers"]
        incoming = next((v for k, v in headers.items() if k.lower() == "traceparent"), None)
        route = f"{req['method']} {req['path']}"
        async with self.router.request(spec, route, trace_id=trace_id_from(headers), traceparent=incoming) as run:
            response = await self._respond(spec, req, run)
            while run.conflicted:  # a transactional request whose reads changed before it committed
                await run.again()
                response = await self._respond(spec, req, run)
            run.status = response.status
        return response

    async def _respond(self, spec: StepSpec, req: ApiRequest, run: RequestRun) -> ApiResponse:
        """Middleware, then the handler, then the response; a failure answers 500 with the trace id."""
        chain: Callable[[], Awaitable[Any]] = lambda: run.call(req)  # noqa: E731
        assert spec.api is not None
        for mw in (*reversed(spec.api.middleware), *reversed(self.middleware)):  # global ones run first
            chain = _bind(mw, req, run.ctx, chain)
        trace_id = run.trace_id
        try:
            result = await chain()
            response = self._to_response(result)
            if self.dev:
                response = self._check_response(spec, response)
            if response.status < 500:  # a response that failed its schema (dev) publishes nothing
                await run.commit()
            if response.stream is not None:  # emits made while the body streams are published at its end
                response = structs.replace(response, stream=_then(response.stream, run.commit))
        except ConditionSkipped:  # a Motia 1.0 trigger's condition said no: 422, as Motia's engine answers
            run.skipped = True
            return ApiResponse(422, {"error": "Request condition not met", "skipped": True}, {"x-trace-id": trace_id})
        except Exception as exc:
            run.fail(exc)
            extra = {"message": run.error} if self.dev else {}
            return ApiResponse(500, {"error": "internal", "traceId": trace_id, **extra}, {"x-trace-id": trace_id})
        headers = {"x-trace-id": trace_id, **response.headers}
        return structs.replace(response, headers=headers)  # keeps the checked, encoded body

    @staticmethod
    def _to_response(result: Any) -> ApiResponse:
        """A handler's return value as a response that can be sent: its status, headers and body are
        checked (and the body encoded) here, inside the handler's error handling, so a response that
        cannot be sent is the handler's 500 with a trace id, never a broken connection.

        Raises:
            InvalidResponseError: the status, a header or the body cannot be sent.
            MotiaError: the value is not a response at all.
        """
        if isinstance(result, StreamReply):
            return ApiResponse(check_status(result.status), None, check_headers(result.headers), stream=result.chunks)
        dump = getattr(result, "model_dump", None)
        if callable(dump):
            body = dump(mode="json")
            return ApiResponse(200, body, {}, encode_json(body))
        if isinstance(result, Mapping) and "status" in result:
            status = check_status(result["status"])
            headers = check_headers(result.get("headers"))
            body = result.get("body")
            bdump = getattr(body, "model_dump", None)
            body = bdump(mode="json") if callable(bdump) else body
            empty = status == 204 or status == 304 or (body is None and status < 200)
            return ApiResponse(status, body, headers, None if empty else encode_json(body))
        if result is None:
            return ApiResponse(204, None)
        raise MotiaError("an API handler must return {'status': ..., 'body': ...} or a pydantic model, "
                         f"not {type(result).__name__}")

    def _check_response(self, spec: StepSpec, response: ApiResponse) -> ApiResponse:
        assert spec.api is not None
        schema = spec.api.response_schema.get(response.status)
        if schema is None or response.stream is not None:
            return response
        try:
            schema.validate(response.body)
        except InputValidationError as exc:
            self.router.log.error(f"API step '{spec.name}' answered {response.status} with a body that fails "
                                  f"its responseSchema: {exc}", step=spec.name)
            return _error(500, "response_validation", fields=exc.fields)
        return response

    # -- ASGI ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            if self.websocket is not None:
                await self.websocket(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1000})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        # the decoded path as the server gave it: request.url re-parses it, and urlsplit drops \t, \r and \n
        path = scope["path"]
        extra = self.extra_routes.get((request.method, path))
        if extra is None:
            extra = next((fn for prefix, fn in self.prefix_routes if path == prefix or path.startswith(prefix + "/")),
                         None)
        if extra is not None:
            try:
                extra_response = await extra(request)
            except Exception as exc:  # a bug in an admin route: still a JSON answer with a trace id
                extra_response = self._render(self._failed(f"{request.method} {path} failed", exc))
            await extra_response(scope, receive, send)
            return
        started = time.perf_counter()
        origin = request.headers.get("origin") if self.cors is not None else None
        if (origin is not None and self.cors is not None and request.method == "OPTIONS"
                and "access-control-request-method" in request.headers):  # a CORS preflight of an API step
            allowed = self.cors.allows(origin) and self.match("OPTIONS", path)[2]
            headers = self.cors.preflight_headers(origin, request.headers.get("access-control-request-headers"))
            await Response(status_code=204 if allowed else 403, headers=headers if allowed else {})(
                scope, receive, send)
            return
        declared = request.headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > self.body_limit_bytes:
            result = _error(413, "payload_too_large", limit=self.body_limit_bytes)
        else:
            try:
                raw = await _read_body(request, self.body_limit_bytes)
            except _TooLarge:
                result = _error(413, "payload_too_large", limit=self.body_limit_bytes)
            except ClientDisconnect:
                return
            else:
                query = {k: (v[0] if len(v) == 1 else v) for k, v in _multi(request).items()}
                try:
                    result = await self.handle(request.method, path, headers=dict(request.headers),
                                               query=query, raw_body=raw)
                except Exception as exc:  # a bug (ours, or in a user's validator): still a JSON answer
                    result = self._failed(f"{request.method} {path} failed", exc)
        if self.on_response is not None:
            self.on_response(request.method, path, result.status)
        if origin is not None and self.cors is not None and self.cors.allows(origin):
            result = structs.replace(result, headers={**result.headers, **self.cors.response_headers(origin)})
        await self._render(result)(scope, receive, send)
        if self.dev:  # the access log of `motia-py dev`
            self.router.log.info(f"{request.method} {path} {result.status} "
                                 f"{(time.perf_counter() - started) * 1000:.1f} ms", access=True)

    def _failed(self, what: str, exc: BaseException, trace_id: str | None = None) -> ApiResponse:
        """Log ``exc`` with its traceback and answer a 500 JSON body with the trace id to look for."""
        trace_id = trace_id or new_id()
        self.router.log.error(f"{what}: {type(exc).__name__}: {exc}", trace_id=trace_id,
                              traceback="".join(traceback.format_exception(exc)))
        message = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode("utf-8")
        body = {"error": "internal", "traceId": trace_id, **({"message": message} if self.dev else {})}
        return ApiResponse(500, body, {"x-trace-id": trace_id}, encode_json(body))

    def _render(self, result: ApiResponse) -> Response:
        """The HTTP response for ``result``; one that cannot be sent becomes a logged 500 JSON answer."""
        try:
            headers = check_headers(result.headers)
            if result.stream is not None:
                return StreamingResponse(result.stream, status_code=result.status, headers=headers)
            if result.status in (204, 304) or (result.body is None and result.status < 200):
                return Response(status_code=result.status, headers=headers)
            content = result.content if result.content is not None else encode_json(result.body)
        except InvalidResponseError as exc:
            trace_id = str(result.headers.get("x-trace-id") or "") or None
            result = self._failed(f"a {result.status} response cannot be sent", exc, trace_id)
            headers, content = dict(result.headers), result.content or b"{}"
        return Response(content, status_code=result.status, headers=headers, media_type="application/json")


def _json_content(headers: Mapping[str, str]) -> bool:
    """No content type, or a JSON one (``application/json``, ``application/problem+json``...)."""
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    return not value or "json" in value.lower()


async def _then(chunks: AsyncIterator[bytes], after: Callable[[], Awaitable[None]]) -> AsyncIterator[bytes]:
    """``chunks``, then ``after()`` once they end."""
    async for chunk in chunks:
        yield chunk
    await after()


def _multi(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _bind(mw: Callable[..., Any], req: ApiRequest, ctx: Any, nxt: Callable[[], Awaitable[Any]]
          ) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return await mw(req, ctx, nxt)

    return call


def _bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (f"; another process is using port {port}: pick another with --port, MOTIA_PY_SERVER_PORT or "
                    "[server] port in motia_py.toml")
        raise MotiaError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}{hint}") from exc
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``motia-py`` owns SIGINT/SIGTERM and stops us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer(Struct):
    """A running HTTP server."""

    app: ApiApp
    server: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        for s in self.server.servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    async def stop(self) -> None:
        """Stop accepting, finish open requests, close."""
        self.app.stopping = True
        await self.app.run_stop_hooks()
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_server(router: Router, settings: Settings, *, dev: bool = False, port: int | None = None,
                       app: ApiApp | None = None) -> HttpServer:
    """Serve API steps (and ``/openapi.json``) on ``settings.host:settings.port``; return once bound.
    An ``app`` given with its routes installed is served from the first connection on; when serving
    fails, its ``on_stop`` hooks run (as :meth:`HttpServer.stop` would).

    Raises:
        MotiaError: the port cannot be bound.
    """
    from .openapi import openapi_document

    app = app or ApiApp(router, body_limit_bytes=settings.body_limit_bytes, dev=dev)

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document(app.router.project))

    app.extra_routes[("GET", "/openapi.json")] = openapi
    config = uvicorn.Config(app, host=settings.host, port=settings.port if port is None else port,
                            log_level="warning", access_log=False, lifespan="off", server_header=False,
                            ws_per_message_deflate=False)  # small stream messages: compressing each costs more
    try:
        sock = _bind_socket(settings.host, config.port)
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="motia-http")
        while not server.started:
            if task.done():
                exc = task.exception()
                raise MotiaError(f"cannot serve HTTP on {settings.host}:{config.port}: {exc or 'server exited'}")
            await asyncio.sleep(0.01)
    except BaseException:
        await app.run_stop_hooks()
        raise
    return HttpServer(app=app, server=server, task=task)
