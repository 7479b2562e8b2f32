"""Job handles for callers: an event's status per subscribing step (decoded), finding an event by a unique
id prefix, waiting for it, cancelling it. The encoding of results and progress and the retention janitor
are in :mod:`motia_py.handle_codec` (re-exported here).

Used by :class:`motia_py.Client`, the Harness, the CLI and the Workbench over any backend's
:class:`~motia_py.backends.stores.HandleStore`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from .backends.base import EventHandle, HandleState, HandleStore, StepHandle
from .errors import UnknownEventError, WaitTimeoutError
from .handle_codec import (
    DEFAULT_DEDUP_WINDOW_S,
    MAX_CANDIDATES,
    MIN_PREFIX,
    HandleJanitor,
    check_prefix,
    delay_until,
    encode_progress,
    encode_result,
    unique,
)

__all__ = ["DEFAULT_DEDUP_WINDOW_S", "MIN_PREFIX", "Cancellation", "EventStatus", "HandleJanitor", "ProgressCallback",
           "StepStatus", "cancel_event", "check_prefix", "delay_until", "encode_progress", "encode_result",
           "event_status", "find_handle", "unique", "wait_event"]


# -- what callers get back ------------------------------------------------------------------------------
def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class StepStatus:
    """One subscriber's delivery of an event, decoded: ``result`` and ``progress`` are Python values."""

    step: str
    state: HandleState
    attempts: int
    error: str | None
    result: Any
    progress: dict[str, Any] | None
    due_at: float | None
    started_at: float | None
    finished_at: float | None
    delivery_id: str | None
    cancel_requested: bool

    @classmethod
    def of(cls, s: StepHandle) -> StepStatus:
        """Decode a backend's :class:`StepHandle`."""
        return cls(step=s.step, state=s.state, attempts=s.attempts, error=s.error, result=_loads(s.result_json),
                   progress=_loads(s.progress_json), due_at=s.due_at, started_at=s.started_at,
                   finished_at=s.finished_at, delivery_id=s.delivery_id, cancel_requested=s.cancel_requested)

    def to_json(self) -> dict[str, Any]:
        """As ``motia-py status --json`` prints it."""
        return {"state": self.state.value, "attempts": self.attempts, "error": self.error, "result": self.result,
                "progress": self.progress, "due_at": self.due_at, "started_at": self.started_at,
                "finished_at": self.finished_at, "delivery_id": self.delivery_id,
                "cancel_requested": self.cancel_requested}


_ORDER: Final = (HandleState.RUNNING, HandleState.RETRYING, HandleState.QUEUED, HandleState.SCHEDULED)


@dataclass(frozen=True, slots=True)
class EventStatus:
    """An event and its delivery to each subscribing step (``steps``, by step name)."""

    event_id: str
    topic: str
    trace_id: str
    emitted_at: float
    steps: dict[str, StepStatus]

    @classmethod
    def of(cls, h: EventHandle) -> EventStatus:
        """Decode a backend's :class:`EventHandle`."""
        return cls(event_id=h.event_id, topic=h.topic, trace_id=h.trace_id, emitted_at=h.emitted_at,
                   steps={s.step: StepStatus.of(s) for s in h.steps})

    @property
    def done(self) -> bool:
        """Every subscriber finished (succeeded, dead or cancelled)."""
        return all(s.state.finished for s in self.steps.values())

    @property
    def state(self) -> HandleState:
        """One state for the event: while not done, the most advanced live one (running, retrying,
        queued, scheduled); once done, ``dead`` if any subscriber died, else ``cancelled`` if any was
        cancelled, else ``succeeded``."""
        states = {s.state for s in self.steps.values()}
        order = _ORDER if not self.done else (HandleState.DEAD, HandleState.CANCELLED, HandleState.SUCCEEDED)
        return next(s for s in order if s in states)

    @property
    def result(self) -> Any:
        """The only subscriber's result; with several subscribers, a dict of step name to result."""
        if len(self.steps) == 1:
            return next(iter(self.steps.values())).result
        return {name: s.result for name, s in self.steps.items()}

    @property
    def progress(self) -> dict[str, Any] | None:
        """The latest progress report of any subscriber (None: none reported)."""
        reports = [s.progress for s in self.steps.values() if s.progress]
        return max(reports, key=lambda p: p.get("at") or 0.0, default=None)

    def to_json(self) -> dict[str, Any]:
        """As ``motia-py status --json`` (and the Workbench) show it."""
        return {"event_id": self.event_id, "topic": self.topic, "trace_id": self.trace_id,
                "emitted_at": self.emitted_at, "state": self.state.value, "done": self.done,
                "steps": {name: s.to_json() for name, s in sorted(self.steps.items())}}


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What :func:`cancel_event` did: the steps cancelled before they ran, the running ones asked to
    stop, and the event's status afterwards. Neither: the event had already finished."""

    status: EventStatus
    cancelled: tuple[str, ...]
    requested: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """Something was cancelled or asked to stop."""
        return bool(self.cancelled or self.requested)


async def find_handle(backend: HandleStore, ref: str) -> EventHandle:
    """The handle of the event ``ref`` names: its id, or a unique prefix of at least 6 characters.

    Raises:
        UnknownEventError: no such event (never published, or pruned by retention).
        AmbiguousIdError: the prefix matches several events.
    """
    ref = check_prefix(ref)
    handle = await backend.handle_get(ref)
    if handle is None:
        candidates = await backend.handle_find(ref, MAX_CANDIDATES + 1)
        if candidates:
            handle = await backend.handle_get(unique(ref, candidates, "event"))
    if handle is None:
        raise UnknownEventError(f"no event '{ref}' (unknown, or finished longer ago than the handles are kept)")
    return handle


async def event_status(backend: HandleStore, ref: str) -> EventStatus:
    """The status of the event ``ref`` names (see :func:`find_handle`)."""
    return EventStatus.of(await find_handle(backend, ref))


async def cancel_event(backend: HandleStore, ref: str) -> Cancellation:
    """Cancel the event ``ref`` names: its deliveries not running yet never run; running ones are told
    to stop (an async handler gets CancelledError, a plain def one sees ``ctx.cancelled``).

    Raises:
        UnknownEventError, AmbiguousIdError: see :func:`find_handle`.
    """
    handle = await find_handle(backend, ref)
    result = await backend.handle_cancel(handle.event_id)
    if result is None:
        raise UnknownEventError(f"no event '{ref}' (it was pruned meanwhile)")
    return Cancellation(EventStatus.of(result.handle), result.cancelled, result.requested)


ProgressCallback = Callable[[StepStatus], Awaitable[None] | None]
"""Called by :func:`wait_event` with a step's status each time its progress changes (sync or async)."""


async def wait_event(backend: HandleStore, ref: str, *, timeout_s: float | None, on_progress: ProgressCallback | None,
                     poll_s: float = 0.2, between: Callable[[], Awaitable[None]] | None = None) -> EventStatus:
    """Poll the event's status until every subscriber finished; return that status.

    Args:
        timeout_s: give up after this many seconds (None: never).
        on_progress: called with a step's status when its progress changes.
        poll_s: seconds between two reads of the status.
        between: awaited instead of sleeping ``poll_s`` (the Harness drives its runtime there).

    Raises:
        WaitTimeoutError: not finished within ``timeout_s`` (the event keeps running).
        UnknownEventError, AmbiguousIdError: see :func:`find_handle`.
    """
    event_id = (await find_handle(backend, ref)).event_id
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: dict[str, Any] = {}
    while True:
        handle = await backend.handle_get(event_id)
        if handle is None:
            raise UnknownEventError(f"event '{event_id}' was pruned while waiting for it")
        status = EventStatus.of(handle)
        if on_progress is not None:
            for step in status.steps.values():
                if step.progress is not None and seen.get(step.step) != step.progress:
                    seen[step.step] = step.progress
                    called = on_progress(step)
                    if inspect.isawaitable(called):
                        await called
        if status.done:
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(f"event {event_id} is still {status.state.value} after {timeout_s:g} s")
        if between is not None:
            await between()
        else:
            left = poll_s if deadline is None else min(poll_s, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(left)
