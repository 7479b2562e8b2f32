"""Delivery: fan-out to subscribers, input validation, handler calls with timeouts, retries with backoff,
dead letters, and the outbox of emits published when a handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import random
import threading
import time
import traceback as tb
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .backends.base import Backend, Delivery, Envelope, Outgoing, Target, new_id
from .config import BackoffSpec, BackoffType, CronOverlap, StepSpec, StepType
from .context import Context, encode_payload
from .discovery import Project
from .errors import (
    BackendError,
    EmitSchemaError,
    HandlerTimeoutError,
    InputValidationError,
    InvalidEmitError,
    NonRetryableError,
    PayloadTooLargeError,
    UndeclaredEmitError,
    UnknownTopicError,
)
from .logs import LogSink, framework_logger
from .otel import Otel
from .state import State, SyncState
from .suggest import did_you_mean
from .types import Clock

CRON_TOPIC_PREFIX = "cron:"
_NON_RETRYABLE = (NonRetryableError, InputValidationError, UndeclaredEmitError, EmitSchemaError,
                  PayloadTooLargeError, InvalidEmitError)


def cron_topic(step: str) -> str:
    """The internal topic that carries a cron step's ticks."""
    return CRON_TOPIC_PREFIX + step


SYNC_THREAD = "motia-sync-handler"
SYNC_HANDLER_THREADS = 64


def sync_handlers_running() -> int:
    """Threads still running a plain ``def`` handler (after shutdown: past their timeout or grace)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith(SYNC_THREAD) and t.is_alive())


def cron_last_key(step: str) -> str:
    """Metadata key of a cron step's last run (written when a run ends)."""
    return f"cron-last:{step}"


def retry_delay(backoff: BackoffSpec, attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential: ``min(max_delay, delay * 2**(attempt-1))``; fixed: ``delay``. With jitter the result is
    drawn uniformly from [0, that] ("full jitter").
    """
    if backoff.type is BackoffType.FIXED:
        base = min(backoff.max_delay_s, backoff.delay_s)
    else:
        base = min(backoff.max_delay_s, backoff.delay_s * (2 ** min(attempt - 1, 62)))
    return base * rand() if backoff.jitter else base


@dataclass(slots=True)  # not frozen: created for every run, and frozen dataclasses build slowly
class RunRecord:
    """One handler run, as observers (traces, the harness) see it."""

    step: str
    trace_id: str
    topic: str
    attempt: int
    started_at: float
    duration_s: float
    outcome: str  # ok | retried | dead | timeout-retried | timeout-dead | skipped | lost
    error: str | None
    emitted: tuple[str, ...]
    delivery_id: str
    event_id: str = ""  # the event that triggered the run
    emitted_ids: tuple[str, ...] = ()  # ids of the events it published, in the order of ``emitted``
    kind: str = "event"  # event | cron | api
    source: str | None = None  # the step that emitted the triggering event (None from outside)


Observer = Callable[[RunRecord], None]


class Router:
    """Routes events to steps and runs one delivery at a time through its handler."""

    def __init__(
        self,
        project: Project,
        backend: Backend,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        log_sink: LogSink | None = None,
        observers: Iterable[Observer] = (),
        otel: Otel | None = None,
    ) -> None:
        self.backend = backend
        self.otel = otel
        self.clock: Clock = clock or time.time
        self.rand = rand
        self.log_sink = log_sink
        self.log = framework_logger(log_sink)
        self.observers = list(observers)
        self.unrouted: Counter[str] = Counter()
        self.max_payload_bytes = project.settings.max_payload_bytes
        self._deadlines: dict[asyncio.Task[Any], list[Any]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._threads: ThreadPoolExecutor | None = None  # plain def handlers run here
        self._watch_interval = 0.25
        self.set_project(project)

    def set_project(self, project: Project) -> None:
        """Switch to a newly discovered project (hot reload); later deliveries use its steps."""
        self.project = project
        self.steps: dict[str, StepSpec] = {s.name: s for s in project.steps}
        self._targets: dict[str, tuple[Target, ...]] = {}
        for s in project.steps:
            topics = s.subscribes if s.type is StepType.EVENT else ()
            if s.type is StepType.CRON:
                topics = (cron_topic(s.name),)
            for t in topics:
                self._targets[t] = (*self._targets.get(t, ()),
                                    Target(step=s.name, delay_s=s.queue.delay_s, fifo=s.queue.fifo))
        self._namespaces = {s.name: project.namespace_of(s) for s in project.steps}
        self._entry_topics = project.entry_topics()
        self._exit_topics = {t for f in project.flows.values() for t in f.exit_topics}

    # -- publishing -------------------------------------------------------------------------------
    def outgoing(self, topic: str, data_json: str, trace_id: str, group_id: str | None, delay_s: float,
                 source: str | None, traceparent: str | None = None) -> Outgoing:
        """Build the fan-out of one event: one target per subscribing step."""
        targets = self._targets.get(topic, ())
        if delay_s:
            targets = tuple(Target(t.step, t.delay_s + delay_s, t.fifo) for t in targets)
        if not targets and topic not in self._exit_topics:
            self.unrouted[topic] += 1
            if self.unrouted[topic] == 1:
                self.log.warning(f"no step subscribes to '{topic}'; the event is not delivered",
                                 topic=topic, trace_id=trace_id, emitter=source)
        env = Envelope(id=new_id(), topic=topic, data_json=data_json, trace_id=trace_id,
                       emitted_at=self.clock(), group_id=group_id, source=source, traceparent=traceparent)
        return Outgoing(envelope=env, targets=targets)

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

    async def emit(self, topic: str, data: Any, *, trace_id: str | None = None, message_group_id: str | None = None,
                   delay_s: float = 0.0, check: bool = True) -> str:
        """Publish an event from outside any step; return its trace id.

        Raises:
            UnknownTopicError: (with ``check``) nothing would ever handle the topic.
        """
        if check:
            self.check_external_topic(topic)
        text = encode_payload(data, self.max_payload_bytes)
        if self.otel is not None:  # a caller's active span becomes the parent of everything that follows
            with self.otel.span(f"publish {topic}", "producer", trace_id=trace_id,
                                attributes={"messaging.destination.name": topic}) as (tid, tp, _):
                trace_id = trace_id or tid
                await self.backend.publish([self.outgoing(topic, text, trace_id, message_group_id, delay_s, None,
                                                          tp)])
            return trace_id
        trace_id = trace_id or new_id()
        await self.backend.publish([self.outgoing(topic, text, trace_id, message_group_id, delay_s, None)])
        return trace_id

    async def fire_cron(self, step: str, scheduled_at: datetime) -> str:
        """Enqueue one tick of a cron step; return its trace id."""
        data = json.dumps({"scheduled_at": scheduled_at.isoformat()})
        if self.otel is not None:
            with self.otel.span(f"cron {step}", "producer", attributes={"motia.scheduled_at": scheduled_at.isoformat()}
                                ) as (trace_id, tp, _):
                await self.backend.publish([self.outgoing(cron_topic(step), data, trace_id, None, 0.0, None, tp)])
            return trace_id
        trace_id = new_id()
        await self.backend.publish([self.outgoing(cron_topic(step), data, trace_id, None, 0.0, None)])
        return trace_id

    # -- running --------------------------------------------------------------------------------
    def _ensure_watchdog(self, timeout_s: float) -> None:
        """One watchdog task enforces every handler timeout: far cheaper than a timer per call."""
        if timeout_s >= 2.0 and self._watchdog is not None and not self._watchdog.done():
            return  # the common case: already watching at the coarsest interval needed
        interval = min(0.25, max(0.005, timeout_s / 8))
        if self._watchdog is None or self._watchdog.done() or interval < self._watch_interval:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watch_interval = interval
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="motia-timeouts")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            now = time.monotonic()
            for task, entry in list(self._deadlines.items()):
                if not entry[1] and entry[0] <= now:
                    entry[1] = True
                    task.cancel()

    async def aclose(self) -> None:
        """Stop the timeout watchdog and the handler threads (a thread cannot be killed: one still
        running a plain ``def`` handler is left to finish, see :func:`sync_handlers_running`)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    def context(self, spec: StepSpec, *, trace_id: str, topic: str | None, attempt: int,
                scheduled_at: datetime | None = None, traceparent: str | None = None) -> Context:
        """A fresh ``ctx`` for one handler call of ``spec``."""
        ns = self._namespaces.get(spec.name) or self.project.namespace_of(spec)
        async_state = State(self.backend, ns)
        state: State | SyncState = async_state
        if not spec.is_async:
            state = SyncState(async_state, asyncio.get_running_loop())
        return Context(spec, trace_id=trace_id, topic=topic, attempt=attempt, state=state, log_sink=self.log_sink,
                       factory=self.outgoing, max_payload_bytes=self.max_payload_bytes, scheduled_at=scheduled_at,
                       traceparent=traceparent)

    async def call(self, spec: StepSpec, *args: Any) -> Any:
        """Call a handler: coroutine functions on the loop, plain functions in a worker thread, with the
        step's timeout.

        Raises:
            HandlerTimeoutError: past ``spec.timeout_s``.
        """
        assert spec.handler is not None  # noop steps are never called
        if spec.is_async:
            aw: Any = spec.handler(*args)
        else:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=SYNC_HANDLER_THREADS, thread_name_prefix=SYNC_THREAD)
            loop = asyncio.get_running_loop()
            ctx_run = functools.partial(contextvars.copy_context().run, spec.handler, *args)
            aw = loop.run_in_executor(self._threads, ctx_run)
        if spec.timeout_s is None:
            result = await aw
        else:
            task = asyncio.current_task()
            assert task is not None  # handlers always run inside a task
            entry = [time.monotonic() + spec.timeout_s, False]
            self._deadlines[task] = entry
            self._ensure_watchdog(spec.timeout_s)
            try:
                result = await aw
            except asyncio.CancelledError as exc:
                if entry[1] and task.uncancel() == 0:  # our watchdog cancelled it: a timeout, not a shutdown
                    raise HandlerTimeoutError(f"timed out after {spec.timeout_s:g} s") from exc
                raise
            finally:
                self._deadlines.pop(task, None)
        if result is not None and inspect.isawaitable(result):  # a plain def that returned a coroutine
            result = await result
        return result

    async def run_delivery(self, d: Delivery) -> str:
        """Run one delivery to the end: ack with its emits, retry with backoff, or dead-letter.

        Returns the outcome (see :class:`RunRecord`).
        """
        if self.otel is None:
            outcome = await self._run_delivery(d)
        else:
            env = d.envelope
            with self.otel.span(f"{d.step} process", "consumer", traceparent=env.traceparent, trace_id=env.trace_id,
                                attributes={"motia.step": d.step, "motia.attempt": d.attempt,
                                            "messaging.destination.name": env.topic}) as (_, tp, span):
                outcome = await self._run_delivery(d, tp)
                span.set_attribute("motia.outcome", outcome)
                if outcome not in ("ok", "skipped", "deferred", "lost"):
                    self.otel.mark_failed(span, outcome)
        spec = self.steps.get(d.step)
        if spec is not None and spec.type is StepType.CRON and outcome not in ("lost", "deferred"):
            record = {"scheduled_at": (d.envelope.data or {}).get("scheduled_at"), "outcome": outcome,
                      "finished_at": self.clock(), "attempt": d.attempt, "trace_id": d.envelope.trace_id}
            with contextlib.suppress(BackendError):
                await self.backend.meta_set(cron_last_key(spec.name), json.dumps(record))
        return outcome

    async def _run_delivery(self, d: Delivery, traceparent: str | None = None) -> str:
        spec = self.steps.get(d.step)
        started = self.clock()
        if spec is None or spec.handler is None:
            return "lost"  # the step was removed by a reload; the lease expires and it stays queued
        env = d.envelope
        ctx: Context | None = None
        try:
            if spec.type is StepType.CRON:
                payload = env.data
                scheduled = datetime.fromisoformat(payload["scheduled_at"]) if payload else datetime.now(UTC)
                ctx = self.context(spec, trace_id=env.trace_id, topic=None, attempt=d.attempt,
                                   scheduled_at=scheduled, traceparent=traceparent)
                if spec.cron_policy.overlap is CronOverlap.SKIP:
                    return await self._run_cron_exclusive(spec, d, ctx, started)
                await self.call(spec, ctx)
            else:
                ctx = self.context(spec, trace_id=env.trace_id, topic=env.topic, attempt=d.attempt,
                                   traceparent=traceparent)
                data = env.data
                value = spec.input.validate(data) if spec.input is not None else data
                await self.call(spec, value, ctx)
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError:
            # shutdown past the grace period: hand the delivery back at once rather than wait for its lease
            await asyncio.shield(self.backend.retry(d, 0.0))
            raise
        except BaseException as exc:
            return await self._failed(spec, d, exc, started, ctx)
        ok = await self.backend.complete(d, ctx.outbox)
        outcome = "ok" if ok else "lost"
        self._observe(spec, d, started, outcome, None, ctx.outbox)
        return outcome

    async def _run_cron_exclusive(self, spec: StepSpec, d: Delivery, ctx: Context, started: float) -> str:
        """``overlap: skip``: a tick that became due while the previous run was running is skipped.

        Ticks fired together by a late scheduler are not skipped: each waits for the one before it, so
        every tick still runs once with its own ``scheduled_at``.
        """
        key = f"cron-running:{spec.name}"
        lease = max(1.0, spec.queue.visibility_timeout_s)
        tick = ctx.scheduled_at.timestamp() if ctx.scheduled_at else started
        if not await self.backend.acquire(key, d.id, lease):
            raw = await self.backend.meta_get(f"{key}:since")
            running_since = float(raw) if raw else 0.0
            if tick < running_since:  # an older tick, fired late: run it after the current run
                await self.backend.retry(d, min(1.0, lease / 4))
                return "deferred"
            await self.backend.complete(d, ())
            self.log.info(f"cron '{spec.name}' tick skipped: the previous run is still running",
                          step=spec.name, trace_id=d.envelope.trace_id)
            self._observe(spec, d, started, "skipped", None, ())
            return "skipped"
        await self.backend.meta_set(f"{key}:since", repr(self.clock()))
        renew = asyncio.create_task(self._renew(key, d.id, lease))  # a run may outlast the lease
        try:
            await self.call(spec, ctx)
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            renew.cancel()
            await asyncio.shield(self.backend.release(key, d.id))
            raise
        except BaseException as exc:
            renew.cancel()
            await self.backend.release(key, d.id)
            return await self._failed(spec, d, exc, started, ctx)
        renew.cancel()
        await self.backend.release(key, d.id)
        ok = await self.backend.complete(d, ctx.outbox)
        self._observe(spec, d, started, "ok" if ok else "lost", None, ctx.outbox)
        return "ok" if ok else "lost"

    async def _renew(self, key: str, owner: str, lease: float) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(BackendError):
                await self.backend.acquire(key, owner, lease)

    async def _failed(self, spec: StepSpec, d: Delivery, exc: BaseException, started: float,
                      ctx: Context | None) -> str:
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(tb.format_exception(exc))
        timeout = isinstance(exc, HandlerTimeoutError)
        fields: dict[str, Any] = {"trace_id": d.envelope.trace_id, "step": spec.name, "topic": d.envelope.topic,
                  "attempt": d.attempt, "error": error}
        if isinstance(exc, _NON_RETRYABLE) or d.attempt > spec.queue.max_retries:
            await self.backend.dead_letter(d, error, trace)
            why = "not retryable" if isinstance(exc, _NON_RETRYABLE) else f"after {d.attempt} attempt(s)"
            self.log.error(f"'{spec.name}' failed {why}; moved to the dead-letter queue", **fields)
            outcome = "timeout-dead" if timeout else "dead"
        else:
            delay = retry_delay(spec.queue.backoff, d.attempt, self.rand)
            await self.backend.retry(d, delay)
            self.log.warning(f"'{spec.name}' failed; retry {d.attempt}/{spec.queue.max_retries} in {delay:.2f} s",
                             **fields)
            outcome = "timeout-retried" if timeout else "retried"
        self._observe(spec, d, started, outcome, error, ())
        return outcome

    def _observe(self, spec: StepSpec, d: Delivery, started: float, outcome: str, error: str | None,
                 outbox: Sequence[Outgoing]) -> None:
        if not self.observers:
            return
        env = d.envelope
        rec = RunRecord(step=spec.name, trace_id=env.trace_id, topic=env.topic, attempt=d.attempt,
                        started_at=started, duration_s=self.clock() - started, outcome=outcome, error=error,
                        emitted=tuple(o.envelope.topic for o in outbox), delivery_id=d.id, event_id=env.id,
                        emitted_ids=tuple(o.envelope.id for o in outbox), kind=spec.type.value, source=env.source)
        self.notify(rec)

    def notify(self, rec: RunRecord) -> None:
        """Hand a run record to every observer (also used by the HTTP side for API runs)."""
        for obs in self.observers:
            obs(rec)
