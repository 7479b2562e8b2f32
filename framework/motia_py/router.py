"""Delivery, top to bottom: one delivery is validated, run through its handler by the executor, and
settled (ack with its outbox, retry, or dead letter); API requests run through the same executor and
are recorded by the same recorder.

The router wires the parts, each in its own module: :mod:`.publisher` (fan-out), :mod:`.executor`
(handler calls and timeouts), :mod:`.settle` (the end of a delivery), :mod:`.cron_guard` (overlap locks),
:mod:`.runs` (outcomes and run records) and :mod:`.request_run` (one API request).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from .backends.base import Backend, Delivery, HandleStore, Outgoing
from .backends.compose import complete_backend
from .config import CronOverlap, StepSpec, StepType
from .context import Context
from .cron_guard import CronGuard
from .discovery import Project
from .errors import ConditionSkipped
from .executor import Executor
from .handle_codec import encode_result
from .logs import LogSink, framework_logger
from .otel import NO_OTEL, Otel
from .publisher import Publisher
from .request_run import RequestRun
from .runs import Observer, Outcome, Recorder
from .settle import CONFLICT_ERROR, Settler, conflict_delay
from .state import State, SyncState
from .state_triggers import StateTriggers, admits
from .streams import Streams, project_streams
from .transactions import transactional_steps
from .tx_state import Transaction, TxState
from .types import Clock


class Router:
    """Routes events to steps and runs one delivery at a time through its handler.

    Args:
        project: the discovered project (replaced on hot reload with :meth:`set_project`).
        backend: where events, state and leases live.
        clock: wall-clock seconds (injected in tests).
        rand: the jitter source of retry backoff.
        log_sink: where framework and step log lines go.
        observers: called with every finished run's :class:`~motia_py.runs.RunRecord`.
        otel: OpenTelemetry spans (None: off).
    """

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
        # a backend built by hand without the job-handle store (a plug-in's, not through the registry)
        # gets the one derived from its state store, as the registry would give it
        self.backend = backend if isinstance(backend, HandleStore) else complete_backend(backend, clock)
        self.clock: Clock = clock or time.time
        self.log_sink = log_sink
        self.log = framework_logger(log_sink)
        self.spans = otel or NO_OTEL
        self.recorder = Recorder(self.clock, observers)
        self.executor = Executor()
        self.publisher = Publisher(project, backend, clock=self.clock, log=self.log, spans=self.spans)
        self.settler = Settler(backend, self.recorder, self.log, rand)
        self.cron = CronGuard(backend, self.clock, self.log)
        self.max_payload_bytes = project.settings.max_payload_bytes
        self.running: dict[str, tuple[Context, asyncio.Task[Any] | None, bool]] = {}  # delivery id -> its run
        self.set_project(project)

    @property
    def observers(self) -> list[Observer]:
        """The run observers (append to add one)."""
        return self.recorder.observers

    @property
    def unrouted(self) -> Counter[str]:
        """Events published to topics nothing subscribes to, per topic."""
        return self.publisher.unrouted

    def set_project(self, project: Project) -> None:
        """Switch to a newly discovered project (hot reload); later deliveries use its steps."""
        self.project = project
        self.steps: dict[str, StepSpec] = {s.name: s for s in project.steps}
        self._namespaces = {s.name: project.namespace_of(s) for s in project.steps}
        self._transactional = transactional_steps(project)
        self.publisher.set_project(project)
        self.state_triggers = StateTriggers(project, self.clock)
        self.streams = project_streams(project.streams, self.backend,
                                       lambda ns: self.state_triggers.notifier(ns, None, None))
        self._blocking_streams: tuple[asyncio.AbstractEventLoop, Streams] | None = None

    # -- publishing (see publisher.py) --------------------------------------------------------------
    def check_external_topic(self, topic: str) -> None:
        """Raise UnknownTopicError unless some step subscribes to ``topic`` or a flow lists it as entry."""
        self.publisher.check_external_topic(topic)

    def outgoing(self, topic: str, data_json: str, trace_id: str, group_id: str | None = None, delay_s: float = 0.0,
                 source: str | None = None, traceparent: str | None = None, priority: int | None = None) -> Outgoing:
        """Build the fan-out of one event without publishing it."""
        return self.publisher.outgoing(topic, data_json, trace_id, group_id, delay_s, source, traceparent, priority)

    async def emit(self, topic: str, data: Any, *, trace_id: str | None = None, message_group_id: str | None = None,
                   delay_s: float = 0.0, check: bool = True, priority: int | None = None,
                   at: datetime | None = None, key: str | None = None, dedup_window_s: float | None = None) -> str:
        """Publish an event from outside any step; return its event id (see :meth:`Publisher.emit`)."""
        return await self.publisher.emit(topic, data, trace_id=trace_id, message_group_id=message_group_id,
                                         delay_s=delay_s, check=check, priority=priority, at=at, key=key,
                                         dedup_window_s=dedup_window_s)

    async def emit_many(self, topic: str, items: Iterable[Any], *, message_group_id: str | None = None,
                        delay_s: float = 0.0, check: bool = True, priority: int | None = None) -> list[str]:
        """Publish many events on one topic atomically; return their event ids (see :meth:`Publisher.emit_many`)."""
        return await self.publisher.emit_many(topic, items, message_group_id=message_group_id, delay_s=delay_s,
                                              check=check, priority=priority)

    async def fire_cron(self, step: str, scheduled_at: datetime) -> str:
        """Enqueue one tick of a cron step; return its trace id."""
        return await self.publisher.fire_cron(step, scheduled_at)

    # -- running ------------------------------------------------------------------------------------
    def _context(self, spec: StepSpec, *, trace_id: str, topic: str | None, attempt: int,
                 scheduled_at: datetime | None = None, traceparent: str | None = None,
                 tx: Transaction | None = None, source_id: str | None = None, delivery: Delivery | None = None
                 ) -> Context:
        ns = self._namespaces.get(spec.name) or self.project.namespace_of(spec)
        notify = self.state_triggers.notifier(ns, trace_id, spec.name, traceparent)
        async_state = State(self.backend, ns, notify) if tx is None else TxState(self.backend, ns, tx, notify)
        state: State | SyncState = async_state
        streams = self.streams
        loop = None
        if not spec.is_async:
            loop = asyncio.get_running_loop()
            state = SyncState(async_state, loop)
            streams = self._blocking(streams)
        return Context(spec, trace_id=trace_id, topic=topic, attempt=attempt, state=state, log_sink=self.log_sink,
                       factory=self.publisher.outgoing, max_payload_bytes=self.max_payload_bytes,
                       scheduled_at=scheduled_at, traceparent=traceparent, streams=streams, source_id=source_id,
                       delivery=delivery, handles=self.backend, clock=self.clock, loop=loop)

    def _tx(self, spec: StepSpec) -> Transaction | None:
        """A fresh transaction for a run of a transactional step; None for the others."""
        return Transaction() if spec.name in self._transactional else None

    def _blocking(self, streams: Streams) -> Streams:
        """``ctx.streams`` for plain ``def`` handlers, built once per event loop."""
        loop = asyncio.get_running_loop()
        if self._blocking_streams is None or self._blocking_streams[0] is not loop:
            self._blocking_streams = (loop, streams.blocking(loop))
        return self._blocking_streams[1]

    def cancel_running(self, delivery_id: str) -> bool:
        """Tell the run of a delivery (in this process) that its event was cancelled: ``ctx.cancelled``
        becomes true and an async handler gets ``asyncio.CancelledError``. False when it does not run here
        (or was told already)."""
        entry = self.running.get(delivery_id)
        if entry is None or entry[0].cancelled:
            return False
        ctx, task, is_async = entry
        ctx.cancelled = True
        if is_async and task is not None:
            task.cancel()
        return True

    def _ended(self, d: Delivery, ctx: Context) -> None:
        """Forget the run of ``d`` with ``ctx`` (a stalled attempt may end after the next one started)."""
        entry = self.running.get(d.id)
        if entry is not None and entry[0] is ctx:
            del self.running[d.id]

    def _stopped_for_cancel(self, d: Delivery, ctx: Context) -> bool:
        """After CancelledError: whether only :meth:`cancel_running` cancelled the run (not a shutdown)."""
        self._ended(d, ctx)
        task = asyncio.current_task()
        return ctx.cancelled and (task is None or task.uncancel() == 0)

    def _result(self, spec: StepSpec, ctx: Context, value: Any) -> str | None:
        """A handler's return value as its stored result; a value that cannot be stored is dropped with a
        warning on the run (the attempt still succeeds)."""
        text, problem = encode_result(value, self.max_payload_bytes)
        if problem is not None:
            ctx.logger.warning(f"the result of '{spec.name}' was not stored: {problem}")
        return text

    async def run_delivery(self, d: Delivery) -> Outcome:
        """Run one delivery to the end: ack with its emits, retry with backoff, or dead-letter.

        A transactional run whose reads changed before it committed (``Outcome.CONFLICT``) is run again
        at once, as the same attempt (its lease is still held); when that happens again and again, after
        short jittered waits (:func:`~motia_py.settle.conflict_delay`). Conflicts are not failures.
        """
        conflicts = 0
        while (outcome := await self._deliver(d)) is Outcome.CONFLICT:
            conflicts += 1
            if conflicts % 100 == 0:
                self.log.warning(f"'{d.step}': {conflicts} transactional conflicts in a row; the state it reads "
                                 "is written by many runs at once", step=d.step, trace_id=d.envelope.trace_id)
            await asyncio.sleep(conflict_delay(conflicts, self.settler.rand))
        return outcome

    async def _deliver(self, d: Delivery) -> Outcome:
        """One run of a delivery (see :meth:`run_delivery`)."""
        spec = self.steps.get(d.step)
        if spec is None or spec.handler is None:
            return Outcome.LOST  # the step was removed by a reload; the lease expires and it stays queued
        if d.cancelled:  # its event was cancelled: settle it, never run it
            return await self.settler.cancelled(spec, d, self.clock(), ran=False)
        if d.attempt > spec.queue.max_retries + 1:  # earlier attempts ended without a verdict: the worker died
            return await self.settler.exhausted(spec, d, self.clock())
        env = d.envelope
        with self.spans.delivery(d.step, env.topic, d.attempt, env.traceparent, env.trace_id) as span:
            if spec.type is StepType.CRON:
                outcome = await self._run_tick(spec, d, span.traceparent)
                if outcome not in (Outcome.DEFERRED, Outcome.LOST, Outcome.CONFLICT):
                    await self.cron.record_last(spec, d, outcome)
            else:  # an event, inline: the hot path
                started = self.clock()
                tx = self._tx(spec)
                ctx = self._context(spec, trace_id=env.trace_id, topic=env.topic, attempt=d.attempt,
                                    traceparent=span.traceparent, tx=tx, source_id=env.id, delivery=d)
                self.running[d.id] = (ctx, asyncio.current_task(), spec.is_async)
                skip = False
                result = None
                try:
                    data = env.data
                    skip = spec.watch is not None and not await admits(spec, data, ctx)  # a state step's condition
                    if not skip:
                        result = await self.executor.call(
                            spec, spec.input.validate(data) if spec.input is not None else data, ctx)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except asyncio.CancelledError:
                    if not self._stopped_for_cancel(d, ctx):
                        await self._hand_back(d)
                        raise
                    outcome = await self.settler.cancelled(spec, d, started, ran=True)
                except ConditionSkipped:  # a Motia 1.0 trigger's condition said no: not run, not failed
                    self._ended(d, ctx)
                    outcome = await self.settler.skip(spec, d, started)
                except BaseException as exc:
                    self._ended(d, ctx)
                    outcome = await (self.settler.cancelled(spec, d, started, ran=True) if ctx.cancelled
                                     else self.settler.fail(spec, d, exc, started))
                else:
                    self._ended(d, ctx)
                    if ctx.cancelled:
                        outcome = await self.settler.cancelled(spec, d, started, ran=True)
                    elif skip:
                        outcome = await self.settler.skip(spec, d, started)
                    else:
                        outcome = await self.settler.ack(spec, d, started, ctx.outbox,
                                                         None if result is None else self._result(spec, ctx, result),
                                                         tx)
            span.finish(outcome, outcome is not Outcome.OK and (outcome.failed or outcome.retried))
        return outcome

    async def _run_tick(self, spec: StepSpec, d: Delivery, traceparent: str | None) -> Outcome:
        started = self.clock()
        payload = d.envelope.data
        scheduled = datetime.fromisoformat(payload["scheduled_at"]) if payload else datetime.now(UTC)
        tx = self._tx(spec)
        ctx = self._context(spec, trace_id=d.envelope.trace_id, topic=None, attempt=d.attempt,
                            scheduled_at=scheduled, traceparent=traceparent, tx=tx, source_id=d.envelope.id,
                            delivery=d)
        exclusive = spec.cron_policy.overlap is CronOverlap.SKIP
        if exclusive:
            refused = await self.cron.admit(spec, d, scheduled, started)
            if refused is Outcome.DEFERRED:  # an older tick, fired late: run it after the current run
                return await self.settler.defer(d, min(1.0, self.cron.lease_s(spec) / 4))
            if refused is Outcome.SKIPPED:
                self.log.info(f"cron '{spec.name}' tick skipped: the previous run is still running",
                              step=spec.name, trace_id=d.envelope.trace_id)
                return await self.settler.skip(spec, d, started)
        self.running[d.id] = (ctx, asyncio.current_task(), spec.is_async)
        try:
            async with self.cron.held(spec, d) if exclusive else contextlib.nullcontext():
                result = await self.executor.call(spec, ctx)
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError:
            if not self._stopped_for_cancel(d, ctx):
                await self._hand_back(d)
                raise
            return await self.settler.cancelled(spec, d, started, ran=True)
        except ConditionSkipped:
            self._ended(d, ctx)
            return await self.settler.skip(spec, d, started)
        except BaseException as exc:
            self._ended(d, ctx)
            if ctx.cancelled:
                return await self.settler.cancelled(spec, d, started, ran=True)
            return await self.settler.fail(spec, d, exc, started)
        self._ended(d, ctx)
        if ctx.cancelled:
            return await self.settler.cancelled(spec, d, started, ran=True)
        return await self.settler.ack(spec, d, started, ctx.outbox,
                                      None if result is None else self._result(spec, ctx, result), tx)

    async def _hand_back(self, d: Delivery) -> None:
        """Shutdown past the grace period: hand the delivery back at once rather than wait for its lease."""
        with contextlib.suppress(Exception):  # the lease expiry redelivers it anyway
            await asyncio.shield(self.backend.retry(d, 0.0))

    def _api_run(self, spec: StepSpec, trace_id: str, traceparent: str | None) -> tuple[Context, Transaction | None]:
        """The ctx of one run of an API request, and its transaction when the step is transactional."""
        tx = self._tx(spec)
        return self._context(spec, trace_id=trace_id, topic=None, attempt=1, traceparent=traceparent, tx=tx), tx

    async def aclose(self) -> None:
        """Stop the executor's timeout watchdog and handler threads."""
        await self.executor.aclose()

    @contextlib.asynccontextmanager
    async def request(self, spec: StepSpec, route: str, *, trace_id: str | None = None,
                      traceparent: str | None = None) -> AsyncIterator[RequestRun]:
        """One API request's run: a span, a ctx, handler calls through the executor, and one run record
        written when the block ends (``route`` is ``METHOD /path``)."""
        started = self.clock()
        method, _, path = route.partition(" ")
        with self.spans.span(route, "server", traceparent=traceparent, trace_id=trace_id,
                             attributes={"http.request.method": method, "url.path": path, "motia.step": spec.name}
                             ) as (tid, tp, span):
            restart = functools.partial(self._api_run, spec, tid, tp)
            ctx, tx = restart()
            run = RequestRun(spec, ctx, self.executor, self.publisher, tx=tx, restart=restart,
                             on_conflict=lambda: self.recorder.request(spec.name, tid, route, started,
                                                                       Outcome.CONFLICT, CONFLICT_ERROR))
            try:
                yield run
            finally:
                span.set_attribute("http.response.status_code", run.status)
                if run.status >= 500:
                    self.spans.mark_failed(span, f"HTTP {run.status}")
                self.recorder.request(spec.name, tid, route, started, run.outcome, run.error, run.published)
