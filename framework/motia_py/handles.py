"""Job handles for callers: an event's status per subscribing step (decoded), finding an event by a unique
id prefix, waiting for it, cancelling it; the encoding of results and progress; retention.

Used by :class:`motia_py.Client`, the Harness, the CLI and the Workbench over any backend's
:class:`~motia_py.backends.stores.HandleStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from .backends.base import EventHandle, HandleState, HandleStore, StepHandle
from .errors import AmbiguousIdError, BackendError, InvalidEmitError, UnknownEventError, WaitTimeoutError
from .types import Clock

MIN_PREFIX: Final = 6
"""The shortest id prefix accepted in place of a full id."""
DEFAULT_DEDUP_WINDOW_S: Final = 86_400.0
"""How long an idempotency key is held when neither the emit nor a subscriber says."""
_CANDIDATES: Final = 10


# -- what handlers and emitters hand in ----------------------------------------------------------------
def _dumps(value: Any) -> str:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        value = dump(mode="json")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_result(value: Any, max_bytes: int) -> tuple[str | None, str | None]:
    """A handler's return value as stored JSON text, or (None, why it cannot be stored).

    ``None`` is no result. A pydantic model is stored as its JSON dump; anything else must be JSON
    within ``max_bytes`` (the payload limit).
    """
    if value is None:
        return None, None
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as exc:
        return None, f"it is not JSON ({exc})"
    if len(text) > max_bytes and len(text.encode()) > max_bytes:
        return None, f"it is {len(text.encode())} bytes of JSON; the limit is {max_bytes}"
    return text, None


def encode_progress(fraction: float | None, message: str | None, fields: Mapping[str, Any], now: float,
                    max_bytes: int) -> str:
    """The JSON text of one progress report: ``fraction``, ``message``, the extra fields and ``at``.

    Raises:
        InvalidEmitError: ``fraction`` is not a number between 0 and 1, or the report is not JSON or
            over ``max_bytes``.
    """
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                                 or not 0.0 <= fraction <= 1.0):
        raise InvalidEmitError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
    report = {**fields, "fraction": fraction, "message": None if message is None else str(message), "at": now}
    try:
        text = _dumps(report)
    except (TypeError, ValueError) as exc:
        raise InvalidEmitError(f"progress fields must be JSON: {exc}") from exc
    if len(text.encode()) > max_bytes:
        raise InvalidEmitError(f"a progress report is {len(text.encode())} bytes; the limit is {max_bytes}")
    return text


def delay_until(at: datetime, now: float) -> float:
    """Seconds from ``now`` (epoch seconds) until ``at`` (0 when past).

    Raises:
        InvalidEmitError: ``at`` is not a timezone-aware datetime.
    """
    if not isinstance(at, datetime):
        raise InvalidEmitError(f"'at' must be a datetime, got {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidEmitError(f"'at' must be timezone-aware (e.g. datetime.now(UTC) + timedelta(hours=1)), "
                               f"got the naive datetime {at.isoformat()}")
    return max(0.0, at.timestamp() - now)


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


# -- looking events up ----------------------------------------------------------------------------------
def check_prefix(ref: str) -> str:
    """``ref`` stripped; raise UnknownEventError when it is shorter than :data:`MIN_PREFIX`."""
    ref = ref.strip()
    if len(ref) < MIN_PREFIX:
        raise UnknownEventError(f"'{ref}' is too short: give the event id or at least {MIN_PREFIX} of its characters")
    return ref


def unique(ref: str, candidates: list[str], what: str) -> str:
    """The one candidate ``ref`` names (itself when listed).

    Raises:
        AmbiguousIdError: several candidates (they are listed).
    """
    if ref in candidates or len(candidates) == 1:
        return ref if ref in candidates else candidates[0]
    shown = "\n".join(f"  {c}" for c in candidates[:_CANDIDATES])
    more = " (and more)" if len(candidates) > _CANDIDATES else ""
    raise AmbiguousIdError(f"'{ref}' matches {len(candidates)} {what}s{more}; give more characters:\n{shown}",
                           candidates[:_CANDIDATES])


async def find_handle(backend: HandleStore, ref: str) -> EventHandle:
    """The handle of the event ``ref`` names: its id, or a unique prefix of at least 6 characters.

    Raises:
        UnknownEventError: no such event (never published, or pruned by retention).
        AmbiguousIdError: the prefix matches several events.
    """
    ref = check_prefix(ref)
    handle = await backend.handle_get(ref)
    if handle is None:
        candidates = await backend.handle_find(ref, _CANDIDATES + 1)
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


# -- retention ------------------------------------------------------------------------------------------
class HandleJanitor:
    """Prunes finished handles by age and count every ``interval_s`` (jittered), in the background.

    Args:
        backend: whose handles to prune.
        max_age_s: a finished handle older than this goes.
        max_count: at most this many finished handles are kept (the oldest go first).
        clock: epoch seconds.
    """

    def __init__(self, backend: HandleStore, max_age_s: float, max_count: int, clock: Clock = time.time,
                 interval_s: float = 60.0) -> None:
        self.backend = backend
        self.max_age_s = max_age_s
        self.max_count = max_count
        self.clock = clock
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="motia-handles-retention")

    async def prune(self) -> int:
        """Prune once; how many handles went."""
        return await self.backend.handles_prune(self.clock() - self.max_age_s, self.max_count)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s * (0.5 + random.random()))
            with contextlib.suppress(BackendError):  # the next round tries again; retention is not urgent
                await self.prune()

    async def stop(self) -> None:
        """Stop pruning."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
