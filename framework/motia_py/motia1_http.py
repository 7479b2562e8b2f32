"""HTTP triggers of Motia 1.0 steps: the request as ``MotiaHttpArgs``, the trigger's condition (false:
422 ``{"error": "Request condition not met", "skipped": true}`` as Motia's engine answers), the 1.0
middleware chain, and the answer: ``ApiResponse``/``{"status", "body", "headers"}``, or a body streamed
with ``response.writer.stream.write(...)`` (server-sent events) while the handler runs.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from .errors import ConditionSkipped, MotiaError
from .motia1_run import TriggerPlan, admitted, call_handler, invocation
from .motia_compat import _run
from .motia_compat.types import ApiRequest, FlowContext, MotiaHttpArgs, MotiaHttpRequest, MotiaHttpResponse, RequestBody
from .streaming import StreamReply

SKIPPED_BODY = {"error": "Request condition not met", "skipped": True}


class _Sink:
    """``response.writer.stream``: ``write(data)`` appends to the body."""

    __slots__ = ("_writer",)

    def __init__(self, writer: ResponseWriter) -> None:
        self._writer = writer

    def write(self, data: bytes | bytearray | str) -> None:
        """Send ``data`` (text is sent as UTF-8)."""
        self._writer.write(data)


class ResponseWriter:
    """The body of a streamed answer: status and headers until the first byte, then chunks in order.
    Safe to use from the handler's thread or from the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.status = 200
        self.headers: dict[str, str] = {}
        self.used = False  # status, headers or body were set: the answer is the writer's
        self.started = asyncio.Event()  # the first byte (or the end) was written
        self.stream = _Sink(self)
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False
        self._thread = threading.get_ident()

    def set_status(self, status: int) -> None:
        """The status (ignored once the body started)."""
        self.used = True
        if not self.started.is_set():
            self.status = int(status)

    def set_headers(self, headers: Mapping[str, str]) -> None:
        """More headers (ignored once the body started)."""
        self.used = True
        if not self.started.is_set():
            self.headers.update({str(k).lower(): str(v) for k, v in headers.items()})

    def write(self, data: bytes | bytearray | str) -> None:
        """Append to the body."""
        self._post(data.encode("utf-8") if isinstance(data, str) else bytes(data))

    def close(self) -> None:
        """End the body."""
        self._post(None)

    def _post(self, item: bytes | None) -> None:
        if threading.get_ident() == self._thread:
            self._apply(item)
        else:
            self.loop.call_soon_threadsafe(self._apply, item)

    def _apply(self, item: bytes | None) -> None:
        if self._closed:
            return
        self.used = True
        self._closed = item is None
        self._queue.put_nowait(item)
        self.started.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it is written, until closed."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def reply(self) -> StreamReply:
        """The answer: the status and headers set so far, then the body."""
        return StreamReply(status=self.status, headers=dict(self.headers), chunks=self.chunks())


def to_mapping(result: Any) -> Any:
    """A 1.0 handler's answer as motia-py's ``{"status", "body", "headers"}`` (None stays None: 204).

    Raises:
        MotiaError: the value is not an answer.
    """
    if result is None or isinstance(result, StreamReply):
        return result
    if isinstance(result, Mapping):
        status, body, headers = result.get("status", result.get("status_code", 200)), result.get("body"), \
            result.get("headers")
    elif hasattr(result, "status") and hasattr(result, "body"):
        status, body, headers = result.status, result.body, getattr(result, "headers", None)
    else:
        raise MotiaError("an HTTP handler returns ApiResponse(status=..., body=...) or {'status': ..., 'body': ...}, "
                         f"not {type(result).__name__}")
    if isinstance(body, bytes | bytearray):  # raw bytes, as Motia sends them

        async def once() -> AsyncIterator[bytes]:
            yield bytes(body)

        return StreamReply(status=int(status), headers=dict(headers or {}), chunks=once())
    return {"status": status, "body": body, "headers": dict(headers or {})}


def _bind(mw: Callable[..., Any], args: Any, flow: Any, nxt: Callable[[], Awaitable[Any]]
          ) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        result = mw(args, flow, nxt)
        return await result if inspect.isawaitable(result) else result

    return call


def _args(req: Mapping[str, Any], writer: ResponseWriter) -> MotiaHttpArgs[Any]:
    raw = getattr(req, "raw_bytes", b"") or b""
    request: MotiaHttpRequest[Any] = MotiaHttpRequest(
        path_params=dict(req.get("pathParams") or {}), query_params=dict(req.get("queryParams") or {}),
        body=req.get("body"), headers=dict(req.get("headers") or {}), method=str(req.get("method") or ""),
        request_body=RequestBody(raw))
    return MotiaHttpArgs(request=request, response=MotiaHttpResponse(writer))


async def run_request(plan: TriggerPlan, req: Mapping[str, Any], ctx: Any) -> Any:
    """One request to a 1.0 HTTP trigger (``req`` is motia-py's request dict).

    Raises:
        ConditionSkipped: the trigger's condition is false (the HTTP layer answers 422).
    """
    loop = asyncio.get_running_loop()
    writer = ResponseWriter(loop)
    args = _args(req, writer)
    flow: FlowContext[Any] = FlowContext(ctx.trace_id, plan.info(), args)
    inv = invocation(plan, ctx, flow)
    token = _run.CURRENT.set(inv)
    try:
        if plan.condition is not None:
            seen: ApiRequest[Any] = ApiRequest(path_params=args.path_params, query_params=args.query_params,
                                               body=args.body, headers=args.headers)
            if not await admitted(plan.condition, seen, flow):
                raise ConditionSkipped(f"the condition of http trigger {plan.index} of '{plan.step}' is false")

        async def handle() -> Any:
            return await call_handler(plan, args, flow, check=False)

        chain: Callable[[], Awaitable[Any]] = handle
        for mw in reversed(plan.middleware):
            chain = _bind(mw, args, flow, chain)
        return await _answer(chain, inv, writer)
    finally:
        _run.CURRENT.reset(token)


async def _answer(chain: Callable[[], Awaitable[Any]], inv: _run.Invocation, writer: ResponseWriter) -> Any:
    """Run the handler; answer when it returns, or as soon as it starts streaming a body."""

    async def produce() -> Any:
        result = await chain()
        await inv.settle()
        return result

    task = asyncio.ensure_future(produce())
    started = asyncio.ensure_future(writer.started.wait())
    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # a timeout or shutdown: the handler stops too
        task.cancel()
        started.cancel()
        raise
    if not task.done():  # streaming: the body follows while the handler runs
        task.add_done_callback(lambda t: _ended(t, inv, writer))
        return writer.reply()
    started.cancel()
    result = task.result()
    if writer.used:
        writer.close()
        return writer.reply()
    return to_mapping(result)


def _ended(task: asyncio.Future[Any], inv: _run.Invocation, writer: ResponseWriter) -> None:
    """A streaming handler returned: end the body; a failure is logged (the status is already sent)."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        inv.ctx.logger.error(f"HTTP handler of '{inv.step}' failed while streaming its answer: "
                             f"{type(exc).__name__}: {exc}")
    writer.close()


def adapter(plan: TriggerPlan) -> Callable[..., Any]:
    """The function motia-py's HTTP layer calls for ``plan`` (``__wrapped__`` is the step's own handler)."""

    async def on_request(req: Any, ctx: Any) -> Any:
        return await run_request(plan, req, ctx)

    on_request.__wrapped__ = plan.handler  # type: ignore[attr-defined]
    return on_request
