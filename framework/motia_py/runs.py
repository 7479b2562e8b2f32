"""Runs: the closed vocabulary of how a handler run ended, the record of one run, and the one place that
hands finished runs to observers (traces, the test harness), for event, cron and API runs alike.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from msgspec import Struct

from .backends.base import Delivery, Envelope, Outgoing
from .config import StepSpec, StepType
from .types import Clock


class Outcome(str, enum.Enum):
    """How one run ended (stored in traces as its value)."""

    OK = "ok"
    RETRIED = "retried"  # failed; delivered again after a backoff
    DEAD = "dead"  # failed for good; moved to the dead-letter queue
    TIMEOUT_RETRIED = "timeout-retried"
    TIMEOUT_DEAD = "timeout-dead"
    SKIPPED = "skipped"  # a cron tick skipped (the previous run still ran), or a 1.0 trigger's condition said no
    DEFERRED = "deferred"  # a late cron tick handed back until the run before it ends
    LOST = "lost"  # the lease was lost (another worker owns the delivery) or the step was removed
    ERROR = "error"  # an API run that answered 5xx
    CANCELLED = "cancelled"  # its event was cancelled: stopped while running, or never run (not retried)
    CONFLICT = "conflict"  # a transactional run whose reads changed before it committed: run again at once

    @property
    def failed(self) -> bool:
        """The run failed for good (nothing will run it again)."""
        return self in _FAILED

    @property
    def retried(self) -> bool:
        """The run failed and its delivery will be tried again."""
        return self in _RETRIED

    @property
    def mark(self) -> str:
        """Short label for terminals (``motia-py trace``)."""
        return _MARKS[self]


_FAILED = frozenset({Outcome.DEAD, Outcome.TIMEOUT_DEAD, Outcome.ERROR})
_RETRIED = frozenset({Outcome.RETRIED, Outcome.TIMEOUT_RETRIED})
_MARKS = {Outcome.OK: "ok", Outcome.RETRIED: "RETRY", Outcome.DEAD: "DEAD", Outcome.TIMEOUT_RETRIED: "TIMEOUT/RETRY",
          Outcome.TIMEOUT_DEAD: "TIMEOUT/DEAD", Outcome.SKIPPED: "skipped", Outcome.DEFERRED: "deferred",
          Outcome.LOST: "lost", Outcome.ERROR: "ERROR", Outcome.CANCELLED: "CANCELLED", Outcome.CONFLICT: "conflict"}


class RunKind(str, enum.Enum):
    """What started a run."""

    EVENT = "event"
    CRON = "cron"
    API = "api"


class RunRecord(Struct):  # one per run (a Struct: quick to create)
    """One handler run, as observers (traces, the harness) see it."""

    step: str
    trace_id: str
    topic: str
    attempt: int
    started_at: float
    duration_s: float
    outcome: Outcome
    error: str | None
    emitted: tuple[str, ...]
    delivery_id: str
    event_id: str = ""  # the event that triggered the run
    emitted_ids: tuple[str, ...] = ()  # ids of the events it published, in the order of ``emitted``
    kind: RunKind = RunKind.EVENT
    source: str | None = None  # the step that emitted the triggering event (None from outside)
    scheduled_at: float | None = None  # a cron tick's scheduled time (epoch seconds; cron lag = started_at - this)


Observer = Callable[[RunRecord], None]


def _scheduled_at(env: Envelope) -> float | None:
    """When a cron tick was due (its payload is ``{"scheduled_at": ISO time}``; missing or odd: None)."""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return datetime.fromisoformat(env.data["scheduled_at"]).timestamp()
    return None


class Recorder:
    """Hands every finished run to the observers; the only code that builds a :class:`RunRecord`."""

    __slots__ = ("clock", "observers")

    def __init__(self, clock: Clock, observers: Iterable[Observer] = ()) -> None:
        self.clock = clock
        self.observers = list(observers)

    def delivery(self, spec: StepSpec, d: Delivery, started: float, outcome: Outcome, error: str | None,
                 outbox: Sequence[Outgoing] = ()) -> None:
        """Record the run of one delivery (an event or a cron tick)."""
        if not self.observers:
            return
        env = d.envelope
        kind = RunKind.CRON if spec.type is StepType.CRON else RunKind.EVENT
        self._notify(RunRecord(step=spec.name, trace_id=env.trace_id, topic=env.topic, attempt=d.attempt,
                               started_at=started, duration_s=self.clock() - started, outcome=outcome, error=error,
                               emitted=tuple(o.envelope.topic for o in outbox), delivery_id=d.id, event_id=env.id,
                               emitted_ids=tuple(o.envelope.id for o in outbox), kind=kind, source=env.source,
                               scheduled_at=_scheduled_at(env) if kind is RunKind.CRON else None))

    def request(self, step: str, trace_id: str, route: str, started: float, outcome: Outcome, error: str | None,
                outbox: Sequence[Outgoing] = ()) -> None:
        """Record the run of one API request (``route`` is ``METHOD /path``)."""
        if not self.observers:
            return
        self._notify(RunRecord(step=step, trace_id=trace_id, topic=route, attempt=1, started_at=started,
                               duration_s=self.clock() - started, outcome=outcome, error=error,
                               emitted=tuple(o.envelope.topic for o in outbox), delivery_id=trace_id,
                               emitted_ids=tuple(o.envelope.id for o in outbox), kind=RunKind.API))

    def _notify(self, rec: RunRecord) -> None:
        for obs in self.observers:
            obs(rec)
