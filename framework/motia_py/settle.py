"""The end of a delivery: acknowledge it with its outbox, retry it after a backoff, or dead-letter it.

Every path records the run once, through the :class:`~motia_py.runs.Recorder`. A backend failure while
settling is not a framework bug: the delivery's lease runs out and it is delivered again, and the log
says so.
"""

from __future__ import annotations

import random
import traceback as tb
from collections.abc import Callable, Sequence
from typing import Any, Final

from .backends.base import Backend, Delivery, Outgoing
from .config import BackoffSpec, BackoffType, StepSpec
from .errors import (
    BackendError,
    EmitSchemaError,
    HandlerTimeoutError,
    InputValidationError,
    InvalidEmitError,
    NonRetryableError,
    PayloadTooLargeError,
    UndeclaredEmitError,
)
from .logs import StepLogger
from .runs import Outcome, Recorder
from .tx_state import Transaction

NON_RETRYABLE = (NonRetryableError, InputValidationError, UndeclaredEmitError, EmitSchemaError,
                 PayloadTooLargeError, InvalidEmitError)
"""Failures that go to the dead-letter queue at once: running the same input again cannot help."""


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


CONFLICT_ERROR: Final = "TransactionConflict: a state value the run read changed before it committed; run again"
"""The error recorded with a run whose transactional commit found a changed read (``Outcome.CONFLICT``)."""
_CONFLICT_WAIT_CAP_S: Final = 0.05
_TX_OUTCOMES: Final = {"ok": Outcome.OK, "lost": Outcome.LOST, "conflict": Outcome.CONFLICT}


def conflict_delay(conflicts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before running a transactional attempt again after ``conflicts`` conflicts in a row:
    none after the first; then full jitter below ``min(50 ms, 1 ms * 2**(conflicts-2))``, so that runs
    that keep colliding on a hot key spread out, and a wait never exceeds 50 ms."""
    if conflicts <= 1:
        return 0.0
    return rand() * min(_CONFLICT_WAIT_CAP_S, 0.001 * 2.0 ** min(conflicts - 2, 16))


class Settler:
    """Settles deliveries against the backend and records each run."""

    def __init__(self, backend: Backend, recorder: Recorder, log: StepLogger,
                 rand: Callable[[], float] = random.random) -> None:
        self.backend = backend
        self.recorder = recorder
        self.log = log
        self.rand = rand

    async def ack(self, spec: StepSpec, d: Delivery, started: float, outbox: Sequence[Outgoing],
                  result_json: str | None = None, tx: Transaction | None = None) -> Outcome:
        """Acknowledge a successful run and publish its emits in the same transaction, storing its result
        (with its state writes, for a transactional run: see :meth:`commit`)."""
        if tx is not None:
            return await self.commit(spec, d, started, outbox, tx, result_json)
        try:
            ok = await self.backend.complete_with_result(d, outbox, result_json)
        except BackendError as exc:
            self._unsettled(spec, d, "could not acknowledge the delivery", exc)
            ok = False
        outcome = Outcome.OK if ok else Outcome.LOST
        if self.recorder.observers:  # checked here too: this is the hot path of every run
            self.recorder.delivery(spec, d, started, outcome, None, outbox if ok else ())
        return outcome

    async def commit(self, spec: StepSpec, d: Delivery, started: float, outbox: Sequence[Outgoing],
                     tx: Transaction, result_json: str | None = None) -> Outcome:
        """Commit a transactional run: its state writes, its emits, the acknowledgement and its result
        together, fenced by the lease. ``Outcome.CONFLICT`` when a value it read changed meanwhile: nothing
        is committed and the delivery stays leased, for the caller to run it again."""
        try:
            result = await self.backend.complete_tx_with_result(d, outbox, tx.writes(), tx.reads(), result_json)
        except BackendError as exc:
            self._unsettled(spec, d, "could not commit the run", exc)
            result = "lost"
        outcome = _TX_OUTCOMES[result]
        if self.recorder.observers:
            self.recorder.delivery(spec, d, started, outcome, CONFLICT_ERROR if result == "conflict" else None,
                                   outbox if result == "ok" else ())
        return outcome

    async def skip(self, spec: StepSpec, d: Delivery, started: float) -> Outcome:
        """Acknowledge a delivery that deliberately did not run (a skipped cron tick, a state change that a
        state step's condition declined, a Motia 1.0 trigger whose condition was false)."""
        try:
            await self.backend.complete(d, ())
        except BackendError as exc:
            self._unsettled(spec, d, "could not acknowledge the skipped delivery", exc)
        self.recorder.delivery(spec, d, started, Outcome.SKIPPED, None)
        return Outcome.SKIPPED

    async def defer(self, d: Delivery, delay_s: float) -> Outcome:
        """Hand a delivery back to run later, without counting a failure (nothing is recorded)."""
        await self.backend.retry(d, delay_s)
        return Outcome.DEFERRED

    async def fail(self, spec: StepSpec, d: Delivery, exc: BaseException, started: float) -> Outcome:
        """A failed attempt: retry with backoff while attempts remain, else dead-letter."""
        error = f"{type(exc).__name__}: {exc}"
        timeout = isinstance(exc, HandlerTimeoutError)
        fields: dict[str, Any] = {"trace_id": d.envelope.trace_id, "step": spec.name, "topic": d.envelope.topic,
                  "attempt": d.attempt, "error": error}
        if isinstance(exc, NON_RETRYABLE) or d.attempt > spec.queue.max_retries:
            why = "not retryable" if isinstance(exc, NON_RETRYABLE) else f"after {d.attempt} attempt(s)"
            try:
                await self.backend.dead_letter(d, error, "".join(tb.format_exception(exc)))
            except BackendError as berr:
                self._unsettled(spec, d, f"failed {why} but could not be dead-lettered", berr)
            else:
                self.log.error(f"'{spec.name}' failed {why}; moved to the dead-letter queue", **fields)
            outcome = Outcome.TIMEOUT_DEAD if timeout else Outcome.DEAD
        else:
            delay = retry_delay(spec.queue.backoff, d.attempt, self.rand)
            try:
                await self.backend.retry_with_error(d, delay, error)
            except BackendError as berr:
                self._unsettled(spec, d, "failed and its retry could not be scheduled", berr)
            else:
                self.log.warning(f"'{spec.name}' failed; retry {d.attempt}/{spec.queue.max_retries} in {delay:.2f} s",
                                 **fields)
            outcome = Outcome.TIMEOUT_RETRIED if timeout else Outcome.RETRIED
        self.recorder.delivery(spec, d, started, outcome, error)
        return outcome

    async def exhausted(self, spec: StepSpec, d: Delivery, started: float) -> Outcome:
        """Dead-letter, without running it, a delivery claimed past its last attempt: its earlier attempts
        ended with no verdict (the worker died during each, or the step's ``maxRetries`` was lowered)."""
        started_attempts = d.attempt - 1
        where = f"; last on {d.last_owner}" if d.last_owner else ""
        error = (f"WorkerDiedError: the worker died during {started_attempts} attempt(s){where}" if d.expired else
                 f"AttemptsExhaustedError: {started_attempts} attempt(s) already made; maxRetries is "
                 f"{spec.queue.max_retries}")
        try:
            await self.backend.dead_letter(d, error, "", attempts=started_attempts)
        except BackendError as berr:
            self._unsettled(spec, d, "has no attempt left but could not be dead-lettered", berr)
        else:
            self.log.error(f"'{spec.name}' moved to the dead-letter queue without running: {error}",
                           trace_id=d.envelope.trace_id, step=spec.name, topic=d.envelope.topic, attempt=d.attempt)
        self.recorder.delivery(spec, d, started, Outcome.DEAD, error)
        return Outcome.DEAD

    async def cancelled(self, spec: StepSpec, d: Delivery, started: float, *, ran: bool) -> Outcome:
        """End a delivery of a cancelled event: stopped while it ran (``ran``), or never started. Not
        retried, not dead-lettered; its emits are dropped."""
        try:
            await self.backend.cancel_settle(d)
        except BackendError as berr:
            self._unsettled(spec, d, "was cancelled but could not be settled", berr)
        else:
            self.log.info(f"'{spec.name}' {'stopped' if ran else 'not run'}: its event was cancelled",
                          trace_id=d.envelope.trace_id, step=spec.name, topic=d.envelope.topic, attempt=d.attempt,
                          event_id=d.envelope.id)
        self.recorder.delivery(spec, d, started, Outcome.CANCELLED, "cancelled" if ran else "cancelled before it ran")
        return Outcome.CANCELLED

    def _unsettled(self, spec: StepSpec, d: Delivery, what: str, exc: BackendError) -> None:
        lease = spec.queue.visibility_timeout_s
        self.log.warning(f"'{spec.name}': {what} ({exc}); the event will be delivered again after its lease "
                         f"({lease:g} s)", step=spec.name, trace_id=d.envelope.trace_id, attempt=d.attempt)
