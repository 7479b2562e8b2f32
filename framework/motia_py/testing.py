"""A harness for step authors: run a project in-process on a fresh memory backend.

```python
async with Harness("path/to/project") as h:
    await h.emit("job.enqueued", {"jobId": "j1"})
    await h.run_until_idle()
    assert h.emitted("job.completed")
```

Time is virtual: when nothing is left but delayed deliveries (retry backoff, ``delay``), the harness
moves its clock to the next due time instead of sleeping, so tests of retries run instantly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from msgspec import structs

from .backends.base import DeadLetter, Outgoing
from .backends.memory import MemoryBackend
from .discovery import Project
from .errors import MotiaError
from .handles import Cancellation, EventStatus, ProgressCallback, cancel_event, event_status, wait_event
from .http import ApiApp, ApiResponse
from .logs import framework_logger
from .runs import RunRecord
from .runtime import Runtime, load_project, require_valid
from .settings import load_settings
from .state import State
from .stream_hub import StreamHub
from .streams import Streams
from .streams_client import Subscription, _Subscriber
from .suggest import did_you_mean
from .tracing import TraceSettings


class VirtualClock:
    """A clock that only moves when told to (starts at the real time)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


class _RecordingBackend(MemoryBackend):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("memory://", clock=clock)
        self.published: list[Outgoing] = []

    async def publish(self, items: Sequence[Outgoing]) -> None:
        await super().publish(items)
        # an event whose idempotency key another event holds was not published
        self.published.extend(o for o in items if o.key is None
                              or self._keys[(o.envelope.topic, o.key)][0] == o.envelope.id)


class _LocalStreamClient(_Subscriber):
    """A stream client wired straight to an in-process hub (no socket): what ``Harness.subscribe`` uses."""

    def __init__(self, hub: StreamHub, auth: Any) -> None:
        super().__init__()
        self.hub = hub
        self.auth = auth
        hub.connect(self)

    def send(self, text: str) -> None:
        self.route(text)

    async def _send(self, text: str) -> None:
        await self.hub.receive(self, text)


class Harness:
    """Run a project's steps in-process for tests, always on a fresh memory backend.

    Args:
        project: the project directory.
        env: environment for settings resolution (default: the process environment).

    Raises:
        GraphError: on entering, when the project has validation errors (each listed).
    """

    def __init__(self, project: str | os.PathLike[str] = ".", *, env: dict[str, str] | None = None) -> None:
        self._dir = project
        self._env = env
        self.clock = VirtualClock()
        self.backend = _RecordingBackend(self.clock)
        self.runs: list[RunRecord] = []
        self.logs: list[dict[str, Any]] = []
        self._runtime: Runtime | None = None
        self._api: ApiApp | None = None
        self._hub: StreamHub | None = None
        self._stalled = 0  # see _turn
        self.last_response: ApiResponse | None = None

    @property
    def project(self) -> Project:
        """The loaded project."""
        return self.runtime.project

    @property
    def runtime(self) -> Runtime:
        """The running runtime (only inside ``async with``)."""
        if self._runtime is None:
            raise MotiaError("use the harness inside 'async with Harness(...) as h'")
        return self._runtime

    async def __aenter__(self) -> Harness:
        settings = load_settings(self._dir, flags={"backend_url": "memory://"}, env=self._env)
        project, findings = load_project(settings)
        require_valid(project, findings)
        self._runtime = Runtime(project, self.backend, clock=self.clock, log_sink=self.logs.append,
                                observers=[self.runs.append], cron=False, poll_s=0.05,
                                traces=TraceSettings(flush_interval_s=0.01))
        await self._runtime.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._hub is not None:
            await self._hub.stop()
        if self._runtime is not None:
            await self._runtime.stop(grace_s=5.0)

    async def emit(self, topic: str, data: Any = None, *, message_group_id: str | None = None,
                   delay: float | None = None, at: datetime | None = None, key: str | None = None,
                   dedup_window: float | None = None, trace_id: str | None = None, priority: int | None = None) -> str:
        """Send an event from outside (as the CLI or an API would); return its event id (the id of its
        trace too). ``at``, ``key``, ``dedup_window`` and ``priority`` as in :meth:`motia_py.Client.emit`
        (on the harness's virtual clock).

        Raises:
            UnknownTopicError: no step subscribes to the topic and no flow lists it as an entry topic.
        """
        return await self.runtime.router.emit(topic, data, trace_id=trace_id, message_group_id=message_group_id,
                                              delay_s=float(delay or 0.0), priority=priority, at=at,
                                              key=key, dedup_window_s=dedup_window)

    async def status(self, event_id: str) -> EventStatus:
        """An event's status per subscribing step (see :meth:`motia_py.Client.status`)."""
        return await event_status(self.backend, event_id)

    async def wait(self, event_id: str, *, timeout: float = 30.0, on_progress: ProgressCallback | None = None
                   ) -> EventStatus:
        """Run the project until the event finished; return its status (see :meth:`motia_py.Client.wait`).

        Virtual time moves as in :meth:`run_until_idle`; ``timeout`` is in real seconds.
        """
        deadline = time.monotonic() + timeout

        async def turn() -> None:
            with contextlib.suppress(TimeoutError):  # wait_event reports its own timeout
                await self._turn(deadline, timeout)
            await asyncio.sleep(0.001)

        return await wait_event(self.backend, event_id, timeout_s=timeout, on_progress=on_progress, between=turn)

    async def cancel(self, event_id: str) -> Cancellation:
        """Cancel an event (see :meth:`motia_py.Client.cancel`)."""
        return await cancel_event(self.backend, event_id)

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Run until no event is queued, delayed or being handled (jumping the clock over delays).

        Raises:
            TimeoutError: still busy after ``timeout`` real seconds (a handler that never returns, or
                an endless loop of events).
        """
        deadline = time.monotonic() + timeout
        self._stalled = 0
        while not await self._turn(deadline, timeout):
            await asyncio.sleep(0.001)

    async def _turn(self, deadline: float, timeout: float) -> bool:
        """Let the workers run a little; True when idle. With only delayed work left, jump the clock."""
        worker = self.runtime.worker
        assert worker is not None  # the harness always runs workers
        for _ in range(3):
            await asyncio.sleep(0)
        stats = await self.backend.stats()
        if worker.in_flight == 0 and stats.idle:
            return True
        # rounds with nothing running while events count as ready (FIFO groups held by a retry)
        self._stalled = self._stalled + 1 if worker.in_flight == 0 and stats.ready else 0
        if worker.in_flight == 0 and (stats.ready == 0 or self._stalled > 20) and stats.next_due_at is not None:
            if stats.next_due_at > self.clock.now:
                self.clock.now = stats.next_due_at
            self.backend.notify_all()
            self._stalled = 0
        elif worker.in_flight == 0 and stats.ready:  # held back by rate limits: on to the next window
            opens = [t for s in self.runtime.router.steps.values() if s.queue.flow.control is not None
                     and (t := self.backend.next_claimable(s.name, s.queue.flow.control)) is not None]
            if opens and min(opens) > self.clock.now:
                self.clock.now = min(opens)
                self.backend.notify_all()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not idle after {timeout} s: {worker.in_flight} running, {stats}")
        return False

    async def run_cron(self, name: str, scheduled_at: datetime | None = None) -> str:
        """Fire cron step ``name`` once now (through its queue) and run until idle; return the trace id.

        A Motia 1.0 step's own name stands for its cron trigger when it has exactly one.
        """
        spec = self.project.step(name)
        if spec is None:
            triggers = [s for s in self.project.steps if s.cron is not None and s.display_name == name]
            spec = triggers[0] if len(triggers) == 1 else None
            name = spec.name if spec is not None else name
        if spec is None or spec.cron is None:

            crons = [s.name for s in self.project.steps if s.cron is not None]
            raise MotiaError(f"no cron step '{name}'" + (f"; {did_you_mean(name, crons)}" if did_you_mean(name, crons)
                                                         else f" (cron steps: {', '.join(crons) or 'none'})"))
        when = scheduled_at or datetime.fromtimestamp(self.clock.now, UTC)
        trace_id = await self.runtime.router.fire_cron(name, when)
        await self.run_until_idle()
        return trace_id

    async def request(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                      query: dict[str, Any] | None = None, raw_body: bytes | None = None) -> tuple[int, Any]:
        """Call an API step without a server (middleware, validation and emits run as in the server).

        Returns ``(status, body)``; :attr:`last_response` keeps the headers too. A streamed answer (server-sent
        events) is read to its end: its body is the text received.
        """
        if self._api is None or self._api.router is not self.runtime.router:
            self._api = ApiApp(self.runtime.router, body_limit_bytes=self.runtime.project.settings.body_limit_bytes,
                               dev=True)
        raw = raw_body if raw_body is not None else (b"" if json is None else _json.dumps(json).encode())
        hdrs = {"content-type": "application/json", **(headers or {})}
        response = await self._api.handle(method, path, headers=hdrs, query=query, raw_body=raw)
        if response.stream is not None:
            content = b"".join([chunk async for chunk in response.stream])
            response = structs.replace(response, stream=None, content=content,
                                           body=content.decode("utf-8", "replace"))
        self.last_response = response
        return response.status, response.body

    def emitted(self, topic: str) -> list[Any]:
        """The data of every event published on ``topic`` so far (from steps or from outside)."""
        return [o.envelope.data for o in self.backend.published if o.envelope.topic == topic]

    def state(self, namespace: str) -> State:
        """The state of a namespace (``get``, ``items``, ``get_group``, ``set``, ...); its writes start the
        state steps that watch them, as ``ctx.state``'s do."""
        return State(self.backend, namespace, self.runtime.router.state_triggers.notifier(namespace, None, None))

    @property
    def streams(self) -> Streams:
        """The project's streams, as ``ctx.streams`` (``await h.streams.todo.set(...)``)."""
        return self.runtime.router.streams

    async def subscribe(self, stream: str, group_id: str, item_id: str | None = None, *, auth: Any = None
                        ) -> Subscription:
        """Join a stream's item (or, without ``item_id``, its group) as a client would, with ``auth`` as the
        connection's auth context (what ``canAccess`` sees); read what arrives with ``await sub.next()``,
        ``sub.messages`` and ``sub.state`` (see :mod:`motia_py.streams_client`)."""
        if self._hub is None:
            self._hub = StreamHub(self.runtime.router, framework_logger(self.logs.append))
            await self._hub.start()
        client = _LocalStreamClient(self._hub, auth)
        if item_id is None:
            return await client.subscribe_group(stream, group_id)
        return await client.subscribe_item(stream, group_id, item_id)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, newest first."""
        return await self.backend.dlq_list(limit=10_000)

    def runs_of(self, step: str) -> list[RunRecord]:
        """Handler runs of one step, in order (a Motia 1.0 step's name covers all its triggers)."""
        return [r for r in self.runs if r.step == step or r.step.startswith(step + "#")]
