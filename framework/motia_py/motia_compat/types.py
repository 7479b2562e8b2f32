"""The types of Motia 1.0's Python SDK, as step files use them: configs (triggers, ``QueueConfig``,
``StepConfig``), handler inputs (``ApiRequest``, ``MotiaHttpArgs``, ``StateTriggerInput``,
``StreamTriggerInput``), ``ApiResponse`` and the context (``FlowContext``, ``TriggerInfo``).

Written for motia-py from the SDK's documented names and forms; config types refuse unknown keys with a
``did you mean`` hint (a :class:`~motia_py.errors.StepConfigError`, reported by ``motia-py validate``).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic.alias_generators import to_camel

from ..errors import MotiaError, StepConfigError
from ..suggest import did_you_mean
from . import _run

T = TypeVar("T")
TInput = TypeVar("TInput")
TOutput = TypeVar("TOutput")
TBody = TypeVar("TBody")
TEnqueueData = TypeVar("TEnqueueData")

TriggerType = Literal["http", "queue", "cron", "state", "stream"]
ApiRouteMethod = Literal["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
TriggerInput = Any
TriggerCondition = Callable[[Any, "FlowContext[Any]"], "bool | Awaitable[bool]"]
Enqueuer = Callable[[Any], Awaitable[None]]
ApiMiddleware = Callable[[Any, "FlowContext[Any]", Callable[[], Awaitable[Any]]], Awaitable[Any]]


class ConfigModel(BaseModel):
    """A config object of a step file: camelCase or snake_case keys, unknown keys refused with a hint."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, arbitrary_types_allowed=True,
                              extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            names = {k for n in cls.model_fields for k in (n, to_camel(n))}
            for key in data:
                if key not in names:
                    fields = sorted(cls.model_fields)
                    hint = did_you_mean(str(key), names) or f"valid keys: {', '.join(fields)}"
                    raise StepConfigError(f"{cls.__name__}: unknown key {key!r}", field=str(key), hint=hint)
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _as_config_error(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or None
            raise StepConfigError(f"{cls.__name__}: '{where}': {err['msg']}", field=where) from None


class QueueConfig(ConfigModel):
    """A queue trigger's delivery settings (Motia 1.0 names; durations in seconds unless named ``_ms``)."""

    type: Literal["fifo", "standard"] = "standard"
    max_retries: int = 3
    visibility_timeout: int = 30
    delay_seconds: int = 0
    concurrency: int | None = None
    backoff_type: str | None = None
    backoff_delay_ms: int | None = None


class Enqueue(ConfigModel):
    """One entry of ``enqueues`` in object form."""

    topic: str
    label: str | None = None
    conditional: bool = False


class QueryParam(ConfigModel):
    """A query parameter an HTTP trigger documents."""

    name: str
    description: str = ""


class QueueTrigger(ConfigModel):
    """``queue(topic, input=..., config=..., condition=...)``."""

    type: Literal["queue"] = "queue"
    topic: str
    condition: Any = None
    input: Any = None
    config: QueueConfig | None = None


class ApiTrigger(ConfigModel):
    """``http(method, path, body_schema=..., response_schema=..., query_params=..., middleware=..., condition=...)``."""

    type: Literal["http"] = "http"
    path: str
    method: str
    condition: Any = None
    middleware: list[Any] | None = None
    body_schema: Any = None
    response_schema: dict[int, Any] | None = None
    query_params: list[Any] | None = None


class CronTrigger(ConfigModel):
    """``cron(expression, condition=...)``: 6 fields with seconds first, or 7 with a year last."""

    type: Literal["cron"] = "cron"
    expression: str
    condition: Any = None


class StateTrigger(ConfigModel):
    """``state(condition=...)``: runs when state changes."""

    type: Literal["state"] = "state"
    condition: Any = None


class StreamTrigger(ConfigModel):
    """``stream(stream_name, group_id=..., item_id=..., condition=...)``: runs when a stream item changes."""

    type: Literal["stream"] = "stream"
    stream_name: str
    group_id: str | None = None
    item_id: str | None = None
    condition: Any = None


TriggerConfig = QueueTrigger | ApiTrigger | CronTrigger | StateTrigger | StreamTrigger


class StepConfig(ConfigModel):
    """A Motia 1.0 step's config (a plain dict with the same keys works the same)."""

    name: str
    triggers: list[Any]
    enqueues: list[Any] = Field(default_factory=list)
    virtual_enqueues: list[Any] | None = None
    virtual_subscribes: list[str] | None = None
    description: str | None = None
    flows: list[str] | None = None
    include_files: list[str] | None = None


class Step(BaseModel):
    """A step file's path with its config (what the SDK's step guards take)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True, alias_generator=to_camel)

    file_path: str
    config: StepConfig


class HandlerConfig(BaseModel):
    """Motia's cloud sizing of a handler (accepted, not used by motia-py)."""

    ram: int = 128
    cpu: int | None = None
    timeout: int = 30


# ---------------------------------------------------------------------------------------------------
# Handler inputs and outputs.


class _Data(BaseModel):
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)


class TriggerInfo(_Data):
    """Which trigger fired: ``type`` and ``index`` always, then ``topic`` (queue), ``method`` and ``path``
    (http) or ``expression`` (cron)."""

    type: TriggerType
    index: int | None = None
    path: str | None = None
    method: str | None = None
    topic: str | None = None
    expression: str | None = None


class ApiRequest(_Data, Generic[TBody]):
    """An HTTP request as a trigger's ``condition`` gets it."""

    path_params: dict[str, str] = Field(default_factory=dict, serialization_alias="pathParams")
    query_params: dict[str, Any] = Field(default_factory=dict, serialization_alias="queryParams")
    body: Any = None
    headers: dict[str, Any] = Field(default_factory=dict)


class ApiResponse(_Data, Generic[TOutput]):
    """What an HTTP handler returns (a dict ``{"status", "body", "headers"?}`` works the same)."""

    status: int
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)


class BodyStream:
    """The raw request body, read with ``for chunk in ...`` or ``async for chunk in ...``."""

    __slots__ = ("_chunks",)

    def __init__(self, raw: bytes) -> None:
        self._chunks = [raw] if raw else []

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def read(self) -> bytes:
        """The whole body."""
        return b"".join(self._chunks)


class RequestBody:
    """``request.request_body``: the raw body as ``.stream`` (Motia's channel reader, read at once here)."""

    __slots__ = ("stream",)

    def __init__(self, raw: bytes) -> None:
        self.stream = BodyStream(raw)


class MotiaHttpRequest(_Data, Generic[TBody]):
    """The request half of an HTTP handler's input."""

    path_params: dict[str, str] = Field(default_factory=dict, serialization_alias="pathParams")
    query_params: dict[str, Any] = Field(default_factory=dict, serialization_alias="queryParams")
    body: Any = None
    headers: dict[str, Any] = Field(default_factory=dict)
    method: str = ""
    request_body: Any = None


class MotiaHttpResponse:
    """The response half of an HTTP handler's input, for streamed answers (server-sent events):
    ``await response.status(200)``, ``await response.headers({...})``, ``response.writer.stream.write(b"...")``,
    ``response.close()``."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    @property
    def writer(self) -> Any:
        """The body writer: ``writer.stream.write(data)``."""
        return self._writer

    def status(self, status_code: int) -> _run.Ready:
        """Set the status (before the first byte of the body); awaitable, as in Motia's SDK."""
        if self._writer is not None:
            self._writer.set_status(status_code)
        return _run.Ready(None)

    def headers(self, headers: Mapping[str, str]) -> _run.Ready:
        """Set response headers (before the first byte of the body); awaitable."""
        if self._writer is not None:
            self._writer.set_headers(headers)
        return _run.Ready(None)

    def close(self) -> None:
        """End the response."""
        if self._writer is not None:
            self._writer.close()


class MotiaHttpArgs(_Data, Generic[TBody]):
    """An HTTP handler's input: ``request`` and ``response``, with the request's fields also read directly
    (``args.body``, ``args.path_params``, ``args.get("body")``)."""

    request: MotiaHttpRequest[Any]
    response: Any = None

    @property
    def path_params(self) -> dict[str, str]:
        """The path parameters."""
        return self.request.path_params

    @property
    def query_params(self) -> dict[str, Any]:
        """The query parameters (a list for a repeated one)."""
        return self.request.query_params

    @property
    def body(self) -> Any:
        """The parsed JSON body (None when the content type is not JSON)."""
        return self.request.body

    @property
    def headers(self) -> dict[str, Any]:
        """The request headers (lower-case names)."""
        return self.request.headers

    @property
    def method(self) -> str:
        """The HTTP method."""
        return self.request.method

    @property
    def request_body(self) -> Any:
        """The raw body (``.stream``)."""
        return self.request.request_body

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access to the same fields."""
        names = ("request", "response", "path_params", "query_params", "body", "headers", "method", "request_body")
        return getattr(self, key) if key in names else default


class StateTriggerInput(_Data, Generic[T]):
    """What a state trigger's handler gets: the item that changed, with its old and new value."""

    type: Literal["state"] = "state"
    group_id: str = Field(alias="groupId")
    item_id: str = Field(alias="itemId")
    old_value: Any = Field(default=None, alias="oldValue")
    new_value: Any = Field(default=None, alias="newValue")


class StreamEvent(_Data):
    """A stream change: ``create``, ``update`` or ``delete`` with the item."""

    type: Literal["create", "update", "delete"]
    data: Any = None


class StreamTriggerInput(_Data, Generic[T]):
    """What a stream trigger's handler gets."""

    type: Literal["stream"] = "stream"
    timestamp: int
    stream_name: str = Field(alias="streamName")
    group_id: str = Field(alias="groupId")
    id: str
    event: StreamEvent


# ---------------------------------------------------------------------------------------------------
# The context.


_MATCH_KEYS = {"queue": ("queue",), "http": ("http", "api"), "cron": ("cron",), "state": ("state",),
               "stream": ("stream",)}
_KNOWN_MATCH_KEYS = {"queue", "http", "api", "cron", "state", "stream", "default"}


class FlowContext(Generic[TEnqueueData]):
    """A 1.0 handler's ``ctx``: ``trace_id``, ``trigger``, ``is_queue()``/``is_api()``/..., ``get_data()``,
    ``match({...})``, and ``enqueue``, ``logger``, ``state`` and ``streams`` bound to the run.

    Middleware may set attributes of its own on it (``ctx.user = ...``) for the handler to read.
    """

    def __init__(self, trace_id: str, trigger: TriggerInfo, input_value: Any = None) -> None:
        self.trace_id = trace_id
        self.trigger = trigger
        self.input_value = input_value

    def is_queue(self) -> bool:
        """A queue trigger fired."""
        return self.trigger.type == "queue"

    def is_api(self) -> bool:
        """An HTTP trigger fired."""
        return self.trigger.type == "http"

    is_http = is_api

    def is_cron(self) -> bool:
        """A cron trigger fired."""
        return self.trigger.type == "cron"

    def is_state(self) -> bool:
        """A state trigger fired."""
        return self.trigger.type == "state"

    def is_stream(self) -> bool:
        """A stream trigger fired."""
        return self.trigger.type == "stream"

    def get_data(self) -> Any:
        """The payload whatever the trigger: the body of a request, a queue message, None for cron."""
        if self.is_cron():
            return None
        value = self.input_value
        if isinstance(value, MotiaHttpArgs | ApiRequest):
            return value.body
        return value

    def match(self, handlers: Mapping[str, Callable[..., Any]]) -> Any:
        """Call the handler for the trigger that fired (``{"queue": fn, "http": fn, "cron": fn, ...,
        "default": fn}``) and return an awaitable of its result: ``await ctx.match(...)`` in ``async def``
        code, ``return ctx.match(...)`` from a plain ``def`` handler. A cron handler takes no argument,
        the others take the input.

        Raises:
            MotiaError: no handler for the trigger and no ``default``; an unknown key is named with the
                nearest known one.
        """
        for key in handlers:
            if key not in _KNOWN_MATCH_KEYS:
                hint = did_you_mean(str(key), _KNOWN_MATCH_KEYS) or f"keys: {', '.join(sorted(_KNOWN_MATCH_KEYS))}"
                raise MotiaError(f"ctx.match: unknown trigger type {key!r}; {hint}")
        fn = next((handlers[k] for k in _MATCH_KEYS[self.trigger.type] if k in handlers), None)
        args: tuple[Any, ...] = () if self.is_cron() else (self.input_value,)
        if fn is None:
            fn, args = handlers.get("default"), (self.input_value,)
        if fn is None:
            raise MotiaError(f"ctx.match: no handler for a {self.trigger.type} trigger (handlers: "
                             f"{', '.join(handlers) or 'none'}); add {self.trigger.type!r} or 'default'")
        return _call_matched(fn, args)

    # The run's helpers, as Motia's docs show them on the context too.
    def enqueue(self, event: Mapping[str, Any]) -> Any:
        """See :func:`motia.enqueue`."""
        from .helpers import enqueue

        return enqueue(event)

    @property
    def logger(self) -> Any:
        """The run's logger (``info``/``warn``/``error``/``debug`` with a dict of fields)."""
        from .helpers import logger

        return logger

    @property
    def state(self) -> Any:
        """The state manager (``get``, ``set``, ``update``, ``delete``, ``list``, ``list_groups``, ``clear``)."""
        from .helpers import stateManager

        return stateManager

    @property
    def streams(self) -> Any:
        """The project's streams by name (``ctx.streams.todo.get(...)``)."""
        from .helpers import Streams

        return Streams()


def _call_matched(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    inv = _run.CURRENT.get()
    if inv is None or not inv.on_loop():  # a handler thread (or no run): call it here and now
        result = fn(*args)
        if inspect.isawaitable(result):
            if inv is None:
                return result
            result = inv.call(lambda: _awaited(result))  # an async handler: run it on the loop, wait here
        return _run.Ready(result)
    if inspect.iscoroutinefunction(fn):
        return fn(*args)
    return inv.run_sync(fn, *args)  # plain code on the loop: give it a handler thread of its own


async def _awaited(aw: Awaitable[Any]) -> Any:
    return await aw
