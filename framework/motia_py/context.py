"""``ctx``: what a handler gets to emit events, use state and log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Coroutine, Generator, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .backends.base import Delivery, HandleStore, Outgoing
from .config import StepSpec
from .errors import EmitSchemaError, InputValidationError, InvalidEmitError, PayloadTooLargeError, UndeclaredEmitError
from .flow_control import check_priority
from .handle_codec import delay_until, encode_progress
from .logs import LogSink, StepLogger
from .state import State, SyncState
from .suggest import did_you_mean
from .types import Clock

T = TypeVar("T")


class OutgoingFactory(Protocol):
    """Builds one event's fan-out: (topic, data_json, trace_id, group_id, delay_s, source_step,
    traceparent, priority, key=, key_ttl_s=) -> Outgoing (see :meth:`motia_py.publisher.Publisher.outgoing`)."""

    def __call__(self, topic: str, data_json: str, trace_id: str, group_id: str | None, delay_s: float,
                 source: str | None, traceparent: str | None = None, priority: int | None = None, *,
                 key: str | None = None, key_ttl_s: float | None = None) -> Outgoing: ...




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


class EventId(str):
    """What ``ctx.emit`` returns: the new event's id, a ``str`` that is also awaitable (``await`` gives the
    plain ``str``), so ``event_id = await ctx.emit(...)`` works in async handlers and ``ctx.emit(...)``
    without ``await`` in plain ``def`` handlers."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, str]:
        return str(self)
        yield  # pragma: no cover - makes this a generator


class _Done:
    """What ``ctx.progress`` returns in a plain ``def`` handler: already done, awaitable all the same."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_DONE = _Done()
_EMIT_KEYS = frozenset({"topic", "data", "messageGroupId", "message_group_id", "delay", "at", "key", "dedupWindow",
                        "dedup_window", "priority"})


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
        event_id: the id of the event being handled (None for API steps).
        cancelled: True once the event was cancelled while this run lasts (a plain ``def`` handler must
            check it and return; an async handler gets ``asyncio.CancelledError`` instead).
        streams: the project's streams (``ctx.streams.<name>``, see :mod:`motia_py.streams`).
        idempotency_key: stable across the retries of one delivery, different per step: pass it to
            outside APIs that take one (Stripe's ``Idempotency-Key``).
    """

    __slots__ = ("_clock", "_delivery", "_factory", "_handles", "_log_sink", "_logger", "_loop", "_max_bytes",
                 "_source_id", "_spec", "attempt", "cancelled", "event_id", "outbox", "scheduled_at", "state",
                 "step", "streams", "topic", "trace_id", "traceparent")

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
        delivery: Delivery | None = None,
        handles: HandleStore | None = None,
        clock: Clock = time.time,
        loop: asyncio.AbstractEventLoop | None = None,
        streams: Any = None,
        source_id: str | None = None,
    ) -> None:
        self._spec = spec
        self._delivery = delivery
        self._handles = handles
        self._clock = clock
        self._loop = loop  # set for plain def handlers: their blocking calls go through the event loop
        self.event_id = delivery.envelope.id if delivery is not None else None
        self.cancelled = False
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
        at: datetime | None = None,
        key: str | None = None,
        dedup_window: float | None = None,
        priority: int | None = None,
    ) -> EventId:
        """Publish an event when the handler returns successfully (outbox); return its event id.

        Both ``await ctx.emit({"topic": t, "data": d, "messageGroupId"?: g, "delay"?: s, "at"?: when,
        "key"?: k, "priority"?: p})`` and ``await ctx.emit(t, d, ...)`` work. ``at`` (a timezone-aware
        datetime) schedules the event instead of ``delay``. With ``key`` (an idempotency key) the event is
        published only if no event of the topic took that key within the dedup window (``dedup_window``
        seconds, default the subscribers' ``dedupWindow`` or 24 h); the id returned is then the id this event
        would have had. ``priority`` (-1000 to 1000, higher first) replaces the subscribing steps' default
        priority.

        Raises:
            UndeclaredEmitError: the topic is not in the step's ``emits``.
            EmitSchemaError: the data fails the emit's declared ``schema`` or is not JSON.
            PayloadTooLargeError: the data is over the payload limit.
            InvalidEmitError: an unknown key, no topic, a bad delay, a naive ``at``.
        """
        if isinstance(event, Mapping):
            unknown = set(event) - _EMIT_KEYS
            if unknown:
                raise InvalidEmitError(f"unknown emit key(s) {sorted(unknown)}; use topic, data, messageGroupId, "
                                       "delay, at, key, dedupWindow, priority")
            topic = event.get("topic")
            data = event.get("data")
            message_group_id = event.get("messageGroupId", event.get("message_group_id", message_group_id))
            delay = event.get("delay", delay)
            at = event.get("at", at)
            key = event.get("key", key)
            dedup_window = event.get("dedupWindow", event.get("dedup_window", dedup_window))
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
        if at is not None:
            delay = delay_until(at, self._clock())
        group = None if message_group_id is None else str(message_group_id)
        level = None if priority is None else check_priority(priority)
        if key is None:
            out = self._factory(topic, text, self.trace_id, group, float(delay or 0.0), self.step, self.traceparent,
                                level)
        else:
            out = self._factory(topic, text, self.trace_id, group, float(delay or 0.0), self.step, self.traceparent,
                                level, key=key, key_ttl_s=dedup_window)
        self.outbox.append(out)
        return EventId(out.envelope.id)

    def progress(self, fraction: float | None = None, message: str | None = None, **fields: Any) -> Awaitable[None]:
        """Record the progress of this run: ``fraction`` done (0 to 1), a ``message`` and any JSON fields.

        ``motia-py status`` and ``Client.status`` show the latest report, ``Client.wait`` callers receive
        each one. Every call is one write to the backend: report at milestones, not for every item.
        ``await ctx.progress(...)`` in async handlers; a plain ``def`` handler calls it without ``await``
        (it returns once stored). API steps have no delivery: there it does nothing.

        Raises:
            InvalidEmitError: ``fraction`` out of range, fields that are not JSON, a report too large.
        """
        text = encode_progress(fraction, message, fields, self._clock(), self._max_bytes)
        if self._delivery is None or self._handles is None:
            return _DONE
        report = self._handles.handle_progress(self._delivery, text)
        if self._loop is None:
            return report
        asyncio.run_coroutine_threadsafe(_awaited(report), self._loop).result()
        return _DONE

    def status(self, event_id: str) -> Any:
        """The :class:`~motia_py.handles.EventStatus` of any event (by id or unique prefix), as
        :meth:`motia_py.Client.status` gives it: ``await ctx.status(job_id)`` in an async handler; a
        plain ``def`` handler gets the status itself from ``ctx.status(job_id)``.

        Raises:
            UnknownEventError, AmbiguousIdError: no such event, or a prefix of several.
        """
        from .handles import event_status  # the status types: only for handlers that ask

        return self._blocking(event_status(self._store(), event_id))

    def cancel(self, event_id: str) -> Any:
        """Cancel any event, as :meth:`motia_py.Client.cancel` does; a
        :class:`~motia_py.handles.Cancellation` (``await ctx.cancel(id)`` in an async handler)."""
        from .handles import cancel_event

        return self._blocking(cancel_event(self._store(), event_id))

    def _store(self) -> HandleStore:
        if self._handles is None:
            raise InvalidEmitError("this context has no backend to look events up in")
        return self._handles

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T] | T:
        """``coro`` for an async handler; for a plain ``def`` one (on a thread), its result."""
        if self._loop is None:
            return coro
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _awaited(aw: Awaitable[None]) -> None:
    await aw

