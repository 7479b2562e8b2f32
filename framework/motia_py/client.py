"""A client for other Python code (a Django or FastAPI app) to enqueue work, as Celery's ``task.delay``,
and to follow it through its job handle: status, wait, cancel.

```python
client = motia_py.Client.from_project("path/to/project")
event_id = client.emit_sync("job.enqueued", {"jobId": "j1"}, key="j1")
status = client.wait_sync(event_id, timeout=30)
ids = client.emit_many_sync([("job.enqueued", {"jobId": "j2"}), ("job.enqueued", {"jobId": "j3"})])
```

Concurrent ``emit`` calls share round trips: the calls made in one event-loop iteration reach the backend
as one batch (one transaction on SQLite, one script on Redis), each still atomic on its own.

On the PostgreSQL backend, ``connection=`` publishes inside the caller's own open transaction (see
:mod:`motia_py.transactional`): the event is enqueued if and only if that transaction commits.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from .backends.base import Backend
from .emits import EmitItem, emit_items
from .errors import InvalidEmitError
from .handles import Cancellation, EventStatus, ProgressCallback, cancel_event, event_status, wait_event
from .otel import detect
from .router import Router
from .runtime import backend_for, load_project, require_valid
from .settings import load_settings

T = TypeVar("T")


class Client:
    """Publishes events into a project's backend with the same checks as ``motia-py emit``.

    The topic must be subscribed by some step or listed in a flow's ``entry_topics``
    (:class:`UnknownTopicError` otherwise), and the data must be JSON within the payload limit.
    """

    def __init__(self, router: Router) -> None:
        self._router = router
        self._opened = False
        self._lock = asyncio.Lock()
        self._loop_thread: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None

    @classmethod
    def from_project(cls, path: str | os.PathLike[str] = ".", *, backend_url: str | None = None) -> Client:
        """A client for the project at ``path`` (its steps decide fan-out; its settings the backend)."""
        settings = load_settings(path, flags={"backend_url": backend_url})
        project, findings = load_project(settings)
        require_valid(project, findings)  # a broken step here would silently miss its events
        return cls(Router(project, backend_for(settings), otel=detect(settings.traces_otel)))

    @classmethod
    def from_url(cls, backend_url: str, project: str | os.PathLike[str] = ".") -> Client:
        """A client for a backend URL, with the steps of the project at ``project``."""
        return cls.from_project(project, backend_url=backend_url)

    @property
    def backend(self) -> Backend:
        """The backend events go to."""
        return self._router.backend

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True

    async def emit(self, topic: str, data: Any = None, *, message_group_id: str | None = None,
                   delay: float | None = None, at: datetime | None = None, key: str | None = None,
                   dedup_window: float | None = None, trace_id: str | None = None, priority: int | None = None,
                   connection: Any = None) -> str:
        """Publish one event; return its event id (which is also its trace's id, unless ``trace_id`` is
        given or an OpenTelemetry span is active). ``priority`` (-1000 to 1000, higher first) replaces the
        subscribing steps' default priority.

        Args:
            delay: seconds before delivery; or ``at``, a timezone-aware datetime.
            key: an idempotency key: within the dedup window (``dedup_window`` seconds; default the
                subscribers' ``dedupWindow`` or 24 h) another emit of the topic with this key publishes
                nothing and returns the first event's id (not with ``connection``).
            connection: (PostgreSQL backend) publish through this connection, inside its open
                transaction: an asyncpg connection, a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``,
                or a psycopg ``AsyncConnection``. Nothing is enqueued unless that transaction commits.

        Raises:
            UnknownTopicError: nothing would handle the topic.
            PayloadTooLargeError: the data is over the payload limit.
            InvalidEmitError: a bad priority, a step's key function failed on the event, a naive ``at``, a
                bad key or dedup window, or a key with ``connection``.
            BackendError: the backend failed (or, with ``connection``, is not PostgreSQL).
            TypeError: ``connection`` is not one of the kinds above.
        """
        await self._ensure_open()
        if connection is not None:
            from . import transactional  # imports the PostgreSQL driver: only when asked for

            _no_key_with(key, at)

            return await transactional.emit_async(
                self._router.publisher, self.backend, connection, topic, data, trace_id=trace_id,
                message_group_id=message_group_id, delay_s=float(delay or 0.0), priority=priority)
        return await self._router.emit(topic, data, trace_id=trace_id, message_group_id=message_group_id,
                                       delay_s=float(delay or 0.0), priority=priority, at=at, key=key,
                                       dedup_window_s=dedup_window)

    async def status(self, event_id: str) -> EventStatus:
        """The event's status per subscribing step: state, attempts, last error, times, progress, result.

        ``event_id`` may be any unique prefix of 6 characters or more.

        Raises:
            UnknownEventError: no such event (or its handle was pruned by retention).
            AmbiguousIdError: the prefix matches several events.
        """
        await self._ensure_open()
        return await event_status(self.backend, event_id)

    async def wait(self, event_id: str, *, timeout: float | None = None, on_progress: ProgressCallback | None = None,
                   poll_interval: float = 0.2) -> EventStatus:
        """Wait until every subscriber of the event finished (succeeded, dead or cancelled); return the
        final status (``.result``, ``.state``). Polls the backend every ``poll_interval`` seconds.

        Args:
            timeout: seconds to wait at most (None: no limit).
            on_progress: called (sync or async) with a step's :class:`~motia_py.handles.StepStatus` each
                time that step reports progress.

        Raises:
            WaitTimeoutError: (a ``TimeoutError``) still running after ``timeout``; the event runs on.
            UnknownEventError, AmbiguousIdError: see :meth:`status`.
        """
        await self._ensure_open()
        return await wait_event(self.backend, event_id, timeout_s=timeout, on_progress=on_progress,
                                poll_s=poll_interval)

    async def cancel(self, event_id: str) -> Cancellation:
        """Cancel the event: deliveries not started never run; running async handlers get
        ``asyncio.CancelledError`` within a second (plain ``def`` handlers see ``ctx.cancelled``). A
        finished event is left as it is (``.changed`` is False).

        Raises:
            UnknownEventError, AmbiguousIdError: see :meth:`status`.
        """
        await self._ensure_open()
        return await cancel_event(self.backend, event_id)

    async def emit_many(self, items: Iterable[EmitItem]) -> list[str]:
        """Publish many events in one round trip (one transaction: all or none); return their trace ids
        in the order given.

        Each item is ``(topic, data)`` or a dict in the shape of ``ctx.emit``: ``{"topic": t, "data": d,
        "messageGroupId"?: g, "delay"?: seconds}``. Events keep the order given (per message group on
        FIFO steps). Every item is checked before anything is published. For a long stream of events,
        call it once per batch (of a few thousand): one call is one transaction.

        Raises:
            InvalidEmitError: an item has a bad shape.
            UnknownTopicError: nothing would handle an item's topic.
            PayloadTooLargeError: an item's data is over the payload limit.
            BackendError: the backend failed (nothing was published).
        """
        await self._ensure_open()
        return await emit_items(self._router.publisher, items)

    def emit_many_sync(self, items: Iterable[EmitItem]) -> list[str]:
        """Blocking :meth:`emit_many` for synchronous code."""
        return self._run(self.emit_many(items))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop_thread is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="motia-client", daemon=True)
            thread.start()
            self._loop_thread = (loop, thread)
            self._lock = asyncio.Lock()
        return asyncio.run_coroutine_threadsafe(coro, self._loop_thread[0]).result()

    def emit_sync(self, topic: str, data: Any = None, *, message_group_id: str | None = None,
                  delay: float | None = None, at: datetime | None = None, key: str | None = None,
                  dedup_window: float | None = None, trace_id: str | None = None, priority: int | None = None,
                  connection: Any = None) -> str:
        """Blocking :meth:`emit` for synchronous code (Django views, scripts).

        Args:
            connection: (PostgreSQL backend) publish through this connection, inside its open
                transaction, in the calling thread: a DB-API connection (Django's
                ``django.db.connection``, psycopg 2 or 3) or a SQLAlchemy ``Connection`` or ``Session``.
                Nothing is enqueued unless that transaction commits.
        """
        if connection is not None:
            from . import transactional

            _no_key_with(key, at)
            self._run(self._ensure_open())  # the schema exists before the caller's statement needs it
            return transactional.emit_sync(
                self._router.publisher, self.backend, connection, topic, data, trace_id=trace_id,
                message_group_id=message_group_id, delay_s=float(delay or 0.0), priority=priority)
        return self._run(self.emit(topic, data, message_group_id=message_group_id, delay=delay, at=at, key=key,
                                   dedup_window=dedup_window, trace_id=trace_id, priority=priority))

    def status_sync(self, event_id: str) -> EventStatus:
        """Blocking :meth:`status`."""
        return self._run(self.status(event_id))

    def wait_sync(self, event_id: str, *, timeout: float | None = None, on_progress: ProgressCallback | None = None,
                  poll_interval: float = 0.2) -> EventStatus:
        """Blocking :meth:`wait` (``on_progress`` is called on the client's own thread)."""
        return self._run(self.wait(event_id, timeout=timeout, on_progress=on_progress, poll_interval=poll_interval))

    def cancel_sync(self, event_id: str) -> Cancellation:
        """Blocking :meth:`cancel`."""
        return self._run(self.cancel(event_id))

    async def aclose(self) -> None:
        """Close the backend connection."""
        if self._opened:
            await self.backend.close()
            self._opened = False

    def close(self) -> None:
        """Close the client (either style)."""
        if self._loop_thread is not None:
            loop, thread = self._loop_thread
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
            self._loop_thread = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _no_key_with(key: str | None, at: datetime | None) -> None:
    """A transactional emit (``connection``) takes no idempotency key nor ``at``.

    Raises:
        InvalidEmitError: one was given.
    """
    if key is not None or at is not None:
        raise InvalidEmitError("an emit through 'connection' takes no 'key' nor 'at' (use delay=)")
