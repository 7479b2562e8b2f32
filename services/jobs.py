"""Job records, status names, event models and the retry backoff, shared by every job step.

A job lives in state (group ``jobs``, key ``jobId``) as a plain dict; the helpers here build and
update those dicts so that every step writes the same shape. Times are ISO-8601 strings in UTC.

What lives where: motia-py's job handle of each event already knows whether a delivery is queued,
scheduled, running, retrying, done, dead or cancelled, with its result and progress (``ctx.status``,
``motia-py status``). The record in state holds what the application itself decides and queries across
jobs: its own statuses and retry policy (``retry_scheduled`` with a ``retryAt``, re-queued by the
JobScheduler cron), the failed jobs list, and ``eventId``, the handle of the job's current attempt.
The job's id is the id of the ``email.requested``/``data.requested`` event that created it, so
``POST /jobs`` can answer it at once.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

JOBS = "jobs"  # the state group holding one record per job
STATS = "stats"  # the state group holding counters

QUEUED = "queued"
DELAYED = "delayed"
RUNNING = "running"
RETRY_SCHEDULED = "retry_scheduled"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = (QUEUED, DELAYED, RUNNING, RETRY_SCHEDULED, COMPLETED, FAILED)

RETRY_BASE_S = 2.0
RETRY_CAP_S = 60.0

JobType = Literal["email", "data"]


class RetryableJobError(Exception):
    """A job failed for a reason that may go away (a mail server down): try again later."""


MAX_DELAY_S = 30 * 86_400.0  # a job may be delayed by up to 30 days
MAX_ATTEMPTS = 20


def _not_a_bool(value: Any) -> Any:
    # pydantic reads true as 1 in a number field; JSON (and the OpenAPI document) does not
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_not_a_bool)]
Count = Annotated[int, BeforeValidator(_not_a_bool)]


class EmailRequest(BaseModel):
    """``email.requested`` (and the ``email`` object of ``POST /jobs``)."""

    model_config = ConfigDict(allow_inf_nan=False)

    to: str
    subject: str = ""
    body: str = ""
    delaySeconds: Number = Field(0, ge=0, le=MAX_DELAY_S)  # > 0: queued once this much time has passed
    maxAttempts: Count = Field(3, ge=1, le=MAX_ATTEMPTS)


class DataRequest(BaseModel):
    """``data.requested`` (and the ``data`` object of ``POST /jobs``)."""

    model_config = ConfigDict(allow_inf_nan=False)

    numbers: list[Number]
    operation: Literal["sum", "mean", "square", "double"] = "sum"
    delaySeconds: Number = Field(0, ge=0, le=MAX_DELAY_S)  # > 0: queued once this much time has passed
    maxAttempts: Count = Field(3, ge=1, le=MAX_ATTEMPTS)


class JobEnqueued(BaseModel):
    """``job.enqueued``: run attempt ``attempt`` of a job."""

    jobId: str
    type: JobType
    payload: dict[str, Any] = {}
    attempt: int = 1
    maxAttempts: int = 3


class JobCompleted(BaseModel):
    """``job.completed``."""

    jobId: str
    type: str
    attempts: int
    result: Any = None


class JobFailed(BaseModel):
    """``job.failed``: ``retryable`` says whether the scheduler will try it again."""

    jobId: str
    type: str
    attempts: int
    error: str
    retryable: bool


def now() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


def iso(when: datetime) -> str:
    """``when`` as an ISO-8601 string in UTC."""
    return when.astimezone(UTC).isoformat()


def parse_time(value: str) -> datetime:
    """The datetime of an ISO-8601 string written by :func:`iso`."""
    return datetime.fromisoformat(value)


def compute_backoff(attempt: int, base_s: float = RETRY_BASE_S, cap_s: float = RETRY_CAP_S,
                    rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): exponential with full jitter.

    The ceiling is ``min(cap_s, base_s * 2**(attempt - 1))``; the wait is drawn uniformly below it,
    so many failing jobs do not all come back at the same moment.
    """
    return rand() * min(cap_s, base_s * 2 ** max(attempt - 1, 0))


def new_job(job_type: JobType, payload: dict[str, Any], max_attempts: int = 3,
            delay_s: float = 0.0, at: datetime | None = None, job_id: str | None = None) -> dict[str, Any]:
    """A fresh job record: ``queued``, or ``delayed`` with a ``runAt`` when ``delay_s`` > 0 (the queue
    holds its ``job.enqueued`` event back until then)."""
    at = at or now()
    job: dict[str, Any] = {
        "jobId": job_id or uuid.uuid4().hex,
        "type": job_type,
        "payload": payload,
        "status": QUEUED,
        "attempts": 0,
        "maxAttempts": max_attempts,
        "createdAt": iso(at),
        "updatedAt": iso(at),
        "error": None,
    }
    if delay_s > 0:
        job.update(status=DELAYED, runAt=iso(at + timedelta(seconds=delay_s)))
    return job


def with_status(job: dict[str, Any], status: str, at: datetime | None = None,
                **changes: Any) -> dict[str, Any]:
    """A copy of ``job`` with a new status, ``updatedAt`` and any other changed fields."""
    return {**job, **changes, "status": status, "updatedAt": iso(at or now())}


def enqueued_event(job: dict[str, Any]) -> dict[str, Any]:
    """The ``job.enqueued`` data that runs the job's next attempt."""
    return {"jobId": job["jobId"], "type": job["type"], "payload": job.get("payload", {}),
            "attempt": job.get("attempts", 0) + 1, "maxAttempts": job.get("maxAttempts", 3)}


def is_due(job: dict[str, Any], at: datetime) -> bool:
    """True when a job waiting for its user-land retry has reached its ``retryAt``."""
    return job.get("status") == RETRY_SCHEDULED and parse_time(job["retryAt"]) <= at


def count_by_status(jobs: list[dict[str, Any]]) -> dict[str, int]:
    """How many jobs are in each status (every status listed, zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for job in jobs:
        status = job.get("status", "unknown")
        counts[status] = counts.get(status, 0) + 1
    return counts
