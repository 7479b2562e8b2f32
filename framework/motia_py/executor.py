"""Calling handlers: coroutine functions on the event loop, plain ``def`` handlers on motia's own thread
pool, each under its step's timeout. Shared by event, cron and API runs.

One watchdog task enforces every timeout (far cheaper than a timer per call): it cancels the task of a
handler past its deadline, and the cancellation is turned into :class:`HandlerTimeoutError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from msgspec import Struct

from .config import StepSpec
from .errors import HandlerTimeoutError, MotiaError

SYNC_THREAD = "motia-sync-handler"
SYNC_HANDLER_THREADS = 64


def sync_handlers_running() -> int:
    """Threads still running a plain ``def`` handler (after shutdown: past their timeout or grace)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith(SYNC_THREAD) and t.is_alive())


class _Deadline(Struct):
    at: float  # time.monotonic() past which the handler is cancelled
    fired: bool = False  # the watchdog cancelled the task


class Executor:
    """Runs handlers with their timeouts; owns the thread pool and the timeout watchdog."""

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], _Deadline] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._watch_interval = 0.25
        self._threads: ThreadPoolExecutor | None = None

    async def call(self, spec: StepSpec, *args: Any) -> Any:
        """Call ``spec``'s handler with ``args`` and return what it returned.

        Raises:
            HandlerTimeoutError: past ``spec.timeout_s``.
            MotiaError: the step has no handler (noop steps are never called).
        """
        if spec.handler is None:
            raise MotiaError(f"step '{spec.name}' has no handler")
        aw = spec.handler(*args) if spec.is_async else self._in_thread(spec, args)
        timeout_s = spec.timeout_s
        if timeout_s is None:
            result = await aw
        else:  # inline rather than a helper coroutine: this is the hot path of every run
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - handlers always run inside a task
                raise MotiaError("handlers must run inside an asyncio task")
            deadline = _Deadline(time.monotonic() + timeout_s)
            self._deadlines[task] = deadline
            self._ensure_watchdog(timeout_s)
            try:
                result = await aw
            except asyncio.CancelledError as exc:
                if deadline.fired and task.uncancel() == 0:  # our watchdog cancelled it: a timeout, not shutdown
                    raise HandlerTimeoutError(f"timed out after {timeout_s:g} s") from exc
                raise
            finally:
                self._deadlines.pop(task, None)
        if result is not None and inspect.isawaitable(result):  # a plain def that returned a coroutine
            result = await result
        return result

    def _in_thread(self, spec: StepSpec, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=SYNC_HANDLER_THREADS, thread_name_prefix=SYNC_THREAD)
        assert spec.handler is not None  # checked by call()
        run = functools.partial(contextvars.copy_context().run, spec.handler, *args)
        return asyncio.get_running_loop().run_in_executor(self._threads, run)

    def _ensure_watchdog(self, timeout_s: float) -> None:
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
            for task, deadline in list(self._deadlines.items()):
                if not deadline.fired and deadline.at <= now:
                    deadline.fired = True
                    task.cancel()

    async def aclose(self) -> None:
        """Stop the watchdog and the handler threads (a thread cannot be killed: one still running a plain
        ``def`` handler is left to finish, see :func:`sync_handlers_running`)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
            self._watchdog = None
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
