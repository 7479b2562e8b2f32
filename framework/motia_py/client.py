"""A client for other Python code (a Django or FastAPI app) to enqueue work, as Celery's ``task.delay``.

```python
client = motia_py.Client.from_project("path/to/project")
trace_id = client.emit_sync("job.enqueued", {"jobId": "j1"})
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
from types import TracebackType
from typing import Any, TypeVar

from .backends.base import Backend
from .emits import EmitItem, emit_items
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
                   delay: float | None = None, trace_id: str | None = None, priority: int | None = None,
                   connection: Any = None) -> str:
        """Publish one event; return its trace id. ``priority`` (-1000 to 1000, higher first) replaces the
        subscribing steps' default priority.

        Args:
            connection: (PostgreSQL backend) publish through this connection, inside its open
                transaction: an asyncpg connection, a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``,
                or a psycopg ``AsyncConnection``. Nothing is enqueued unless that transaction commits.

        Raises:
            UnknownTopicError: nothing would handle the topic.
            PayloadTooLargeError: the data is over the payload limit.
            InvalidEmitError: a bad priority, or a step's key function failed on the event.
            BackendError: the backend failed (or, with ``connection``, is not PostgreSQL).
            TypeError: ``connection`` is not one of the kinds above.
        """
        await self._ensure_open()
        if connection is not None:
            from . import transactional  # imports the PostgreSQL driver: only when asked for

            return await transactional.emit_async(
                self._router.publisher, self.backend, connection, topic, data, trace_id=trace_id,
                message_group_id=message_group_id, delay_s=float(delay or 0.0), priority=priority)
        return await self._router.emit(topic, data, trace_id=trace_id, message_group_id=message_group_id,
                                       delay_s=float(delay or 0.0), priority=priority)

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
                  delay: float | None = None, trace_id: str | None = None, priority: int | None = None,
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

            self._run(self._ensure_open())  # the schema exists before the caller's statement needs it
            return transactional.emit_sync(
                self._router.publisher, self.backend, connection, topic, data, trace_id=trace_id,
                message_group_id=message_group_id, delay_s=float(delay or 0.0), priority=priority)
        return self._run(self.emit(topic, data, message_group_id=message_group_id, delay=delay, trace_id=trace_id,
                                   priority=priority))

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

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
