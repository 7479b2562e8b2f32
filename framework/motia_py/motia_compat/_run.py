"""The run that Motia 1.0's module-level helpers act on (``enqueue``, ``logger``, ``stateManager``,
``Stream(...)``): the handler adapter of a 1.0 step sets it in a context variable for the duration of
one handler call, so the helpers find it from ``async def`` code on the event loop and from plain
``def`` code in a handler thread alike (threads get a copy of the context).

How a helper runs its backend operation depends on where it is called from:

- in a handler thread (plain ``def`` code): it blocks until the operation is done and returns the
  result, as Motia's own SDK does;
- on the event loop (``async def`` code): it starts the operation at once and returns an awaitable of
  its result, so ``await stream.get(...)`` works as Motia's docs write it. Operations started this way
  run in the order they were called; one that the handler never awaits is awaited before the run ends,
  and its failure fails the run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any

from ..errors import MotiaError

RunSync = Callable[..., Awaitable[Any]]
"""``run_sync(fn, *args)``: call a plain function in a handler thread, awaitable from the event loop."""


class Pending:
    """An operation a helper started on the event loop: awaitable once or more for its result."""

    __slots__ = ("awaited", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.awaited = False

    def __await__(self) -> Generator[Any, None, Any]:
        self.awaited = True
        return self.task.__await__()


class Ready:
    """An awaitable of a value already computed (what ``ctx.match`` returns in plain ``def`` code)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # pragma: no cover - makes this a generator


class Invocation:
    """One handler call of a Motia 1.0 step, as the helpers see it.

    Attributes:
        ctx: motia-py's own ``ctx`` of the run (outbox, ``state``, ``logger``, ``streams``).
        flow: the handler's 1.0 ``FlowContext``.
        loop: the event loop the run belongs to.
        run_sync: runs plain functions in a handler thread.
        step: the step's name, for messages.
        enqueues: the topics the step declares in ``enqueues``.
    """

    __slots__ = ("_last", "_thread", "ctx", "enqueues", "flow", "loop", "pending", "run_sync", "step")

    def __init__(self, ctx: Any, flow: Any, loop: asyncio.AbstractEventLoop, run_sync: RunSync, *, step: str,
                 enqueues: frozenset[str]) -> None:
        self.ctx = ctx
        self.flow = flow
        self.loop = loop
        self.run_sync = run_sync
        self.step = step
        self.enqueues = enqueues
        self.pending: list[Pending] = []
        self._last: asyncio.Task[Any] | None = None
        self._thread = threading.get_ident()

    def on_loop(self) -> bool:
        """Whether the caller runs on the run's event loop (``async def`` code)."""
        return threading.get_ident() == self._thread

    def call(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run the operation ``make()`` for user code (see the module docstring)."""
        if self.on_loop():
            previous = self._last

            async def in_order() -> Any:
                if previous is not None and not previous.done():
                    await asyncio.wait([previous])  # its own failure is reported by its own awaiter
                return await make()

            task = self.loop.create_task(in_order())
            self._last = task
            op = Pending(task)
            self.pending.append(op)
            return op
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return future.result()  # a handler thread: block, as Motia's SDK does
        return asyncio.wrap_future(future)  # a loop of the user's own in a thread: stay awaitable

    async def settle(self) -> None:
        """Wait for the operations the handler started and never awaited; raise the first failure."""
        while self.pending:
            ops, self.pending = self.pending, []
            await asyncio.wait([op.task for op in ops])
            for op in ops:
                exc = op.task.exception()
                if exc is not None and not op.awaited:
                    raise exc


CURRENT: ContextVar[Invocation | None] = ContextVar("motia_py_motia1_run", default=None)
"""The handler call in progress (None outside any handler)."""


def current(what: str) -> Invocation:
    """The run in progress, for the helper ``what``.

    Raises:
        MotiaError: called outside a step's handler (at import time, or from a thread the handler
            started without copying its context).
    """
    inv = CURRENT.get()
    if inv is None:
        raise MotiaError(f"{what} was called outside a step's handler; call it from a handler (a thread the "
                           "handler starts must run in a copy of its context: contextvars.copy_context().run)")
    return inv
