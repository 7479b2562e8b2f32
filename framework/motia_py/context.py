"""``ctx``: what a handler gets to emit events, use state and log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import Any

from .backends.base import Outgoing
from .config import StepSpec
from .errors import EmitSchemaError, InputValidationError, InvalidEmitError, PayloadTooLargeError, UndeclaredEmitError
from .flow_control import check_priority
from .logs import LogSink, StepLogger
from .state import State, SyncState
from .suggest import did_you_mean

OutgoingFactory = Callable[[str, str, str, "str | None", float, "str | None", "str | None", "int | None"], Outgoing]
"""(topic, data_json, trace_id, group_id, delay_s, source_step, traceparent, priority) -> Outgoing"""


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode  # built once


def encode_payload(data: Any, max_bytes: int) -> str:
    """Encode event data as JSON and enforce the payload limit.

    Raises:
        EmitSchemaError: the data is not JSON.
        PayloadTooLargeError: the JSON is longer than ``max_bytes``.
    """
    dump = getattr(data, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
    try:
        text = _encode(data)
    except (TypeError, ValueError) as exc:
        raise EmitSchemaError(f"event data must be JSON: {exc}") from exc
    if len(text) > max_bytes and len(text.encode()) > max_bytes:
        raise PayloadTooLargeError(f"event data is {len(text.encode())} bytes; the limit is {max_bytes}")
    return text


class _Done:
    """What ``ctx.emit`` returns: awaitable (``await ctx.emit(...)``) but already done, so plain
    ``def`` handlers may call ``ctx.emit(...)`` without awaiting."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE = _Done()


def idempotency_key(source_id: str, step: str) -> str:
    """``ctx.idempotency_key``: 32 hex characters derived from what started the run (the event's id, or
    the API request's trace id) and the step's name: the same for every attempt of one delivery, different
    for every step."""
    return hashlib.sha256(f"{source_id}\x00{step}".encode()).hexdigest()[:32]


class Context:
    """The ``ctx`` of one handler call.

    Attributes:
        trace_id: follows every event emitted downstream.
        step: the step's name.
        flows: the step's flows.
        topic: the topic being handled (``None`` for cron and API steps).
        attempt: 1 on the first delivery.
        state: the flow namespace's state.
        logger: structured logger.
        scheduled_at: the tick's time (cron steps only).
        streams: the project's streams (``ctx.streams.<name>``, see :mod:`motia_py.streams`).
        idempotency_key: stable across the retries of one delivery, different per step: pass it to
            outside APIs that take one (Stripe's ``Idempotency-Key``).
    """

    __slots__ = ("_factory", "_log_sink", "_logger", "_max_bytes", "_source_id", "_spec", "attempt", "outbox",
                 "scheduled_at", "state", "step", "streams", "topic", "trace_id", "traceparent")

    def __init__(
        self,
        spec: StepSpec,
        *,
        trace_id: str,
        topic: str | None,
        attempt: int,
        state: State | SyncState,
        logger: StepLogger | None = None,
        log_sink: LogSink | None = None,
        factory: OutgoingFactory,
        max_payload_bytes: int,
        scheduled_at: datetime | None = None,
        traceparent: str | None = None,
        streams: Any = None,
        source_id: str | None = None,
    ) -> None:
        self._spec = spec
        self._source_id = source_id  # the event's id (None: an API request, keyed by its trace id)
        self._factory = factory
        self._max_bytes = max_payload_bytes
        self.trace_id = trace_id
        self.step = spec.name
        self.topic = topic
        self.attempt = attempt
        self.state = state
        self._logger = logger
        self._log_sink = log_sink
        self.scheduled_at = scheduled_at
        self.outbox: list[Outgoing] = []
        self.streams = streams
        self.traceparent = traceparent  # W3C context of this run's span (OpenTelemetry), given to emits

    @property
    def flows(self) -> list[str]:
        """The step's flows."""
        return list(self._spec.flows)

    @property
    def idempotency_key(self) -> str:
        """A key for outside effects: the same on every attempt of this delivery, different per step."""
        return idempotency_key(self._source_id or self.trace_id, self.step)

    @property
    def logger(self) -> StepLogger:
        """Structured logger; every line carries trace id, step, flow, topic and attempt."""
        if self._logger is None:  # built on first use: most handlers of a hot path never log
            spec = self._spec
            self._logger = StepLogger({"trace_id": self.trace_id, "step": spec.name,
                                       "flow": spec.flows[0] if spec.flows else None, "topic": self.topic,
                                       "attempt": self.attempt}, self._log_sink)
        return self._logger

    def emit(
        self,
        event: str | Mapping[str, Any],
        data: Any = None,
        *,
        message_group_id: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> _Done:
        """Publish an event when the handler returns successfully (outbox).

        Both ``await ctx.emit({"topic": t, "data": d, "messageGroupId"?: g, "delay"?: s, "priority"?: p})``
        and ``await ctx.emit(t, d)`` work. ``priority`` (-1000 to 1000, higher first) replaces the
        subscribing steps' default priority.

        Raises:
            UndeclaredEmitError: the topic is not in the step's ``emits``.
            EmitSchemaError: the data fails the emit's declared ``schema`` or is not JSON.
            PayloadTooLargeError: the data is over the payload limit.
        """
        if isinstance(event, Mapping):
            unknown = set(event) - {"topic", "data", "messageGroupId", "message_group_id", "delay", "priority"}
            if unknown:
                raise InvalidEmitError(f"unknown emit key(s) {sorted(unknown)}; use topic, data, messageGroupId, "
                                       "delay, priority")
            topic = event.get("topic")
            data = event.get("data")
            message_group_id = event.get("messageGroupId", event.get("message_group_id", message_group_id))
            delay = event.get("delay", delay)
            priority = event.get("priority", priority)
        else:
            topic = event
        if not isinstance(topic, str) or not topic:
            raise InvalidEmitError("ctx.emit needs a topic")
        spec = self._spec.emit_spec(topic)
        if spec is None:
            declared = sorted(self._spec.emit_topics)

            hint = did_you_mean(topic, declared)
            raise UndeclaredEmitError(
                f"step '{self.step}' emitted '{topic}', which is not in its emits ({', '.join(declared) or 'none'})"
                + (f"; {hint}" if hint else "; add it to config['emits']")
            )
        if spec.schema is not None:
            try:
                spec.schema.validate(data)
            except InputValidationError as exc:
                raise EmitSchemaError(f"data emitted on '{topic}' fails its schema: {exc}") from exc
        text = encode_payload(data, self._max_bytes)
        if delay is not None and (not isinstance(delay, int | float) or delay < 0):
            raise InvalidEmitError(f"emit delay must be a number of seconds >= 0, got {delay!r}")
        self.outbox.append(self._factory(topic, text, self.trace_id,
                                         None if message_group_id is None else str(message_group_id),
                                         float(delay or 0.0), self.step, self.traceparent,
                                         None if priority is None else check_priority(priority)))
        return _DONE
