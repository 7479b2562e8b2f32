"""Publishing: the fan-out of one event to every subscribing step, the check that an event published from
outside can be handled, and the ticks of cron steps (which travel as events on an internal topic).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .backends.base import Backend, Envelope, Outgoing, Target, new_id
from .config import StepType
from .context import encode_payload
from .discovery import Project
from .errors import InvalidEmitError, UnknownTopicError
from .flow_control import FlowSpec, check_priority
from .handle_codec import DEFAULT_DEDUP_WINDOW_S, delay_until
from .logs import StepLogger
from .otel import Spans
from .suggest import did_you_mean
from .types import Clock

CRON_TOPIC_PREFIX = "cron:"


def cron_topic(step: str) -> str:
    """The internal topic that carries a cron step's ticks."""
    return CRON_TOPIC_PREFIX + step


class Publisher:
    """Turns events into deliveries, one per subscribing step, and hands them to the backend."""

    def __init__(self, project: Project, backend: Backend, *, clock: Clock, log: StepLogger, spans: Spans
                 ) -> None:
        self.backend = backend
        self.clock = clock
        self.log = log
        self.spans = spans
        self.unrouted: Counter[str] = Counter()
        self.max_payload_bytes = project.settings.max_payload_bytes
        self.set_project(project)

    def set_project(self, project: Project) -> None:
        """Route to a newly discovered project's subscribers (hot reload)."""
        targets: dict[str, tuple[Target, ...]] = {}
        windows: dict[str, float] = {}
        keyed: dict[str, FlowSpec] = {}  # steps whose limits need each event's keys
        for s in project.steps:
            topics = s.subscribes if s.type is StepType.EVENT else ()
            if s.type is StepType.CRON:
                topics = (cron_topic(s.name),)
            if s.queue.flow.keyed:
                keyed[s.name] = s.queue.flow
            for t in topics:
                targets[t] = (*targets.get(t, ()), Target(step=s.name, delay_s=s.queue.delay_s, fifo=s.queue.fifo,
                                                          priority=s.queue.flow.priority))
                if s.queue.dedup_window_s is not None:
                    windows[t] = max(windows.get(t, 0.0), s.queue.dedup_window_s)
        self._targets = targets
        self._windows = windows
        self._keyed = keyed
        self._keyed_topics = {t for t, ts in targets.items() if any(x.step in keyed for x in ts)}
        self._entry_topics = project.entry_topics()
        self._exit_topics = {t for f in project.flows.values() for t in f.exit_topics}

    def dedup_window(self, topic: str) -> float:
        """Seconds an idempotency key of ``topic`` is held: the largest ``dedupWindow`` of its subscribers,
        else 24 h."""
        return self._windows.get(topic, DEFAULT_DEDUP_WINDOW_S)

    def outgoing(self, topic: str, data_json: str, trace_id: str, group_id: str | None, delay_s: float,
                 source: str | None, traceparent: str | None = None, priority: int | None = None, *,
                 key: str | None = None, key_ttl_s: float | None = None, event_id: str | None = None) -> Outgoing:
        """Build the fan-out of one event: one target per subscribing step (see ``context.OutgoingFactory``),
        with ``priority`` (None: each step's default) and the keys of the steps' keyed limits. With ``key``,
        an idempotency key held ``key_ttl_s`` seconds (default: :meth:`dedup_window`).

        Raises:
            InvalidEmitError: a step's key function failed on the event, a bad idempotency key or window.
        """
        targets = self._targets.get(topic, ())
        if delay_s or priority is not None or topic in self._keyed_topics:
            targets = self._retarget(targets, data_json, delay_s, priority)
        if not targets and topic not in self._exit_topics:
            self.unrouted[topic] += 1
            if self.unrouted[topic] == 1:
                self.log.warning(f"no step subscribes to '{topic}'; the event is not delivered",
                                 topic=topic, trace_id=trace_id, emitter=source)
        env = Envelope(id=event_id or new_id(), topic=topic, data_json=data_json, trace_id=trace_id,
                       emitted_at=self.clock(), group_id=group_id, source=source, traceparent=traceparent)
        if key is None:
            return Outgoing(envelope=env, targets=targets)
        if not isinstance(key, str) or not key:
            raise InvalidEmitError(f"an idempotency key must be a non-empty string, got {key!r}")
        ttl = self.dedup_window(topic) if key_ttl_s is None else float(key_ttl_s)
        if ttl <= 0:
            raise InvalidEmitError(f"a dedup window must be a number of seconds > 0, got {key_ttl_s!r}")
        return Outgoing(envelope=env, targets=targets, key=key, key_ttl_s=ttl)

    def _retarget(self, targets: tuple[Target, ...], data_json: str, delay_s: float, priority: int | None
                  ) -> tuple[Target, ...]:
        """``targets`` with the event's delay, priority and keys (the data is decoded only for keys)."""
        data = json.loads(data_json) if any(t.step in self._keyed for t in targets) else None
        out = []
        for t in targets:
            spec = self._keyed.get(t.step)
            rate_key, conc_key = spec.keys(data) if spec is not None else (None, None)
            out.append(Target(t.step, t.delay_s + delay_s, t.fifo, t.priority if priority is None else priority,
                              rate_key, conc_key))
        return tuple(out)

    def check_external_topic(self, topic: str) -> None:
        """Raise UnknownTopicError unless some step subscribes to ``topic`` or a flow lists it as entry."""
        if topic in self._targets and not topic.startswith(CRON_TOPIC_PREFIX):
            return
        if topic in self._entry_topics:
            return
        known = sorted({t for t in self._targets if not t.startswith(CRON_TOPIC_PREFIX)} | self._entry_topics)
        hint = did_you_mean(topic, known)
        raise UnknownTopicError(f"no step subscribes to '{topic}' and no flow lists it in entry_topics"
                                + (f"; {hint}" if hint else ""))

    async def publish(self, outbox: Sequence[Outgoing]) -> None:
        """Enqueue already-built events (an API run's emits) in one backend call."""
        await self.backend.publish(outbox)

    async def emit(self, topic: str, data: Any, *, trace_id: str | None = None, message_group_id: str | None = None,
                   delay_s: float = 0.0, check: bool = True, priority: int | None = None,
                   at: datetime | None = None, key: str | None = None, dedup_window_s: float | None = None) -> str:
        """Publish an event from outside any step; return its event id. ``priority`` (-1000 to 1000, higher
        first) replaces the subscribing steps' default priority.

        The event starts a trace, and its event id is that trace's id (unless ``trace_id`` is given or a
        caller's OpenTelemetry span is active: then it joins that trace with an id of its own). ``at`` (a
        timezone-aware datetime) schedules it instead of ``delay_s``. With ``key``, an event of the same
        topic published with that key within the dedup window (``dedup_window_s``, default
        :meth:`dedup_window`) makes this emit publish nothing and return that event's id.

        Raises:
            UnknownTopicError: (with ``check``) nothing would ever handle the topic.
            EmitSchemaError, PayloadTooLargeError: the data is not JSON or too large.
            InvalidEmitError: a bad priority, a step's key function failed on the event, ``at`` is naive, or
                a bad key or dedup window.
        """
        if priority is not None:
            check_priority(priority)
        if check:
            self.check_external_topic(topic)
        text = encode_payload(data, self.max_payload_bytes)
        if at is not None:
            delay_s = delay_until(at, self.clock())
        fresh = trace_id is None and not self.spans.in_span()
        # a caller's active span becomes the parent of everything that follows
        with self.spans.span(f"publish {topic}", "producer", trace_id=trace_id,
                             attributes={"messaging.destination.name": topic}) as (tid, tp, _):
            out = self.outgoing(topic, text, trace_id or tid, message_group_id, delay_s, None, tp, priority, key=key,
                                key_ttl_s=dedup_window_s, event_id=tid if fresh else None)
            if key is None:
                await self.backend.publish([out])
                return out.envelope.id
            [event_id] = await self.backend.publish_deduped([out])
        return event_id

    async def emit_many(self, topic: str, items: Iterable[Any], *, message_group_id: str | None = None,
                        delay_s: float = 0.0, check: bool = True, priority: int | None = None) -> list[str]:
        """Publish many events on one topic in one backend call (one transaction: all or none, in order);
        return their event ids (each also its trace's id) in the same order.

        Raises:
            UnknownTopicError: (with ``check``) nothing would ever handle the topic.
            EmitSchemaError, PayloadTooLargeError: an item is not JSON or too large (nothing is published).
            InvalidEmitError: a bad priority, or a step's key function failed on an item.
        """
        if priority is not None:
            check_priority(priority)
        if check:
            self.check_external_topic(topic)
        limit = self.max_payload_bytes
        batch: list[Outgoing] = []
        ids: list[str] = []
        for data in items:
            text = encode_payload(data, limit)
            fresh = not self.spans.in_span()
            with self.spans.span(f"publish {topic}", "producer",
                                 attributes={"messaging.destination.name": topic}) as (tid, tp, _):
                batch.append(self.outgoing(topic, text, tid, message_group_id, delay_s, None, tp, priority,
                                           event_id=tid if fresh else None))
            ids.append(batch[-1].envelope.id)
        if batch:
            await self.backend.publish(batch)
        return ids

    async def fire_cron(self, step: str, scheduled_at: datetime) -> str:
        """Enqueue one tick of a cron step; return its trace id (also the tick's event id)."""
        data = json.dumps({"scheduled_at": scheduled_at.isoformat()})
        fresh = not self.spans.in_span()
        with self.spans.span(f"cron {step}", "producer",
                             attributes={"motia.scheduled_at": scheduled_at.isoformat()}) as (trace_id, tp, _):
            await self.backend.publish([self.outgoing(cron_topic(step), data, trace_id, None, 0.0, None, tp,
                                                      event_id=trace_id if fresh else None)])
        return trace_id
