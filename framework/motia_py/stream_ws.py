"""The WebSocket endpoint of streams, on the HTTP port (any path: ``new Stream("ws://127.0.0.1:3000")``).

Served by ``motia-py dev`` and ``start``. A connection is authenticated once, at the handshake, by the
project's hook named in ``motia_py.toml``::

    [streams]
    authenticate = "stream_auth:authenticate"   # module:function of the project

``authenticate(request)`` (sync or async) gets ``{"headers": {...}, "url": "/?authToken=...", "query":
{...}}`` (header names lower-case) and returns the connection's auth context (anything; ``None`` for an
anonymous client), which each stream's ``canAccess(subscription, auth_context)`` sees on every join. When
it raises, the handshake is refused with HTTP 401 and the exception's message. Without a hook every
client is anonymous. The subprotocols a client offers (Motia's clients may send ``["Authorization",
token]``) appear in ``headers["sec-websocket-protocol"]``; the first one is accepted, as Motia does.

Each connection has an outgoing queue and one writer task, so a broadcast to many clients never waits on
a slow one; a client that falls more than ``MAX_BACKLOG`` messages behind is disconnected.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from .discovery import Project
from .errors import MotiaError
from .http import ApiApp
from .logs import framework_logger
from .runtime import Runtime
from .settings import Settings
from .stream_hub import StreamHub

MAX_BACKLOG: Final = 10_000
Authenticate = Callable[[dict[str, Any]], Any]


class AuthRefused(Exception):
    """The authenticate hook refused a connection."""


def load_hook(spec: str) -> Authenticate:
    """Import the ``module:function`` named by ``[streams] authenticate`` (the project root is importable).

    Raises:
        MotiaError: it cannot be imported or is not a function.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise MotiaError(f"[streams] authenticate = {spec!r}: write 'module:function', e.g. 'stream_auth:authenticate'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise MotiaError(f"[streams] authenticate = {spec!r}: cannot import {module_name!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise MotiaError(f"[streams] authenticate = {spec!r}: {module_name!r} has no function {attr!r}")
    return fn  # type: ignore[no-any-return]


def auth_request(scope: Scope) -> dict[str, Any]:
    """What the authenticate hook gets: headers (lower-case names), the URL path with its query, the query."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "/")
    return {"headers": headers, "url": f"{path}?{query}" if query else path, "query": dict(parse_qsl(query))}


class WsClient:
    """One WebSocket connection as the hub sees it: ``send`` queues, :meth:`write` drains."""

    __slots__ = ("_queue", "_ready", "auth", "closed")

    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.closed = False
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()

    def send(self, text: str) -> None:
        """Queue a message (never blocks); a client too far behind is closed."""
        if self.closed:
            return
        if len(self._queue) >= MAX_BACKLOG:
            self.closed = True
        else:
            self._queue.append(text)
        self._ready.set()

    async def write(self, send: Send) -> None:
        """Send queued messages until the connection ends."""
        while not self.closed:
            await self._ready.wait()
            self._ready.clear()
            while self._queue and not self.closed:
                await send({"type": "websocket.send", "text": self._queue.popleft()})
        await send({"type": "websocket.close", "code": 1008, "reason": "too slow: messages were piling up"})


class StreamEndpoint:
    """The ASGI WebSocket app (see the module docstring)."""

    def __init__(self, hub: StreamHub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self._hook: tuple[Project, Authenticate | None] | None = None

    def hook(self) -> Authenticate | None:
        """The authenticate hook of the project now serving (imported again after a reload)."""
        project = self.hub.router.project
        if self._hook is None or self._hook[0] is not project:
            spec = self.settings.streams_authenticate
            try:
                fn = load_hook(spec) if spec else None
            except MotiaError as exc:
                if self._hook is None:
                    raise
                framework_logger().error(f"{exc}; the previous hook stays")
                fn = self._hook[1]
            self._hook = (project, fn)
        return self._hook[1]

    async def authenticate(self, scope: Scope) -> Any:
        """The connection's auth context. Raises AuthRefused."""
        fn = self.hook()
        if fn is None:
            return None
        try:
            result = fn(auth_request(scope))
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            raise AuthRefused(str(exc) or type(exc).__name__) from exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            auth = await self.authenticate(scope)
        except AuthRefused as exc:
            await _refuse(scope, send, f"authentication failed: {exc}")
            return
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        client = WsClient(auth)
        self.hub.connect(client)
        writer = asyncio.create_task(_guard(client.write(send)))
        try:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg["type"] == "websocket.receive":
                    text = msg.get("text") or (msg.get("bytes") or b"").decode("utf-8", "replace")
                    await self.hub.receive(client, text)
                if writer.done():
                    break
        finally:
            client.closed = True
            self.hub.disconnect(client)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)


async def _guard(coro: Awaitable[None]) -> None:
    try:
        await coro
    except (OSError, RuntimeError):
        pass  # the connection went away while we wrote to it (uvicorn raises either)
    except Exception as exc:  # the ASGI server's own "disconnected" exception types
        if "Disconnect" not in type(exc).__name__:
            raise


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    """Refuse the handshake: HTTP 401 with a JSON body where the server allows it, else a close."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps({"error": "unauthorized", "message": message}).encode()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})


async def install_streams(app: ApiApp, runtime: Runtime, settings: Settings) -> StreamHub:
    """Serve streams on ``app``'s WebSocket route and forward the backend's stream messages to its clients.

    Raises:
        MotiaError: ``[streams] authenticate`` names nothing importable.
    """
    hub = StreamHub(runtime.router, framework_logger())
    endpoint = StreamEndpoint(hub, settings)
    endpoint.hook()  # a broken hook fails the start, not the first client
    await hub.start()
    app.websocket = endpoint
    app.on_stop.append(hub.stop)
    return hub
