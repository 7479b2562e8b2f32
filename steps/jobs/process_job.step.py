"""JobProcessor: runs one attempt of a job, then records the outcome in state.

Retries happen in user land, as in Motia's background-job example: on a retryable error the
handler stores ``retry_scheduled`` with a ``retryAt`` (exponential backoff with full jitter) and
returns normally; the JobScheduler cron step re-queues the job when that time comes. The job's
result is also the handler's return value, so ``motia-py status`` and ``ctx.status`` show it on the
attempt's job handle, with the progress reported here.

Every change of status is also pushed to the ``jobStatus`` stream (``job_status_stream.py``), so a
browser subscribed to group ``jobs`` sees each job run, progress and finish without polling.

The step is transactional: the job's record and the ``job.completed`` / ``job.failed`` event commit
together with the acknowledgement of ``job.enqueued``, exactly once. A worker that dies mid-job, or stalls
until its lease goes to another worker, leaves the record as it was; only the run that commits writes it,
so a late result never overwrites a newer one. (The ``running`` record in state is therefore never seen
from outside: it goes from ``queued`` to its outcome; the ``jobStatus`` stream, which is not part of the
transaction, still shows each run as it happens.)
"""

from datetime import timedelta

from motia_py import NonRetryableError
from services.jobs import (
    COMPLETED,
    FAILED,
    JOBS,
    RETRY_SCHEDULED,
    RUNNING,
    JobCompleted,
    JobEnqueued,
    JobFailed,
    RetryableJobError,
    compute_backoff,
    iso,
    now,
    with_status,
)

from .handlers import run_job

config = {
    "type": "event",
    "name": "JobProcessor",
    "description": "Runs a queued job; schedules a retry with backoff or marks it completed or failed",
    "subscribes": ["job.enqueued"],
    "emits": [
        {"topic": "job.completed", "schema": JobCompleted},
        {"topic": "job.failed", "schema": JobFailed, "conditional": True},
    ],
    "input": JobEnqueued,
    "flows": ["job-processing"],
    # Errors the handler does not catch (bugs, a lost database) are retried by the queue up to
    # 3 times, then dead-lettered; an attempt running past 30 s is cancelled.
    "infrastructure": {"handler": {"timeout": 30}, "queue": {"maxRetries": 3}},
    "transactional": True,  # the record and the emit commit with the acknowledgement, exactly once
}


async def publish_status(ctx, job: JobEnqueued, status: str, progress: float, error: str | None = None) -> None:
    """Push the job's status to the ``jobStatus`` stream (group ``jobs``)."""
    await ctx.streams.jobStatus.set(JOBS, job.jobId, {"type": job.type, "status": status, "progress": progress,
                                                      "attempt": job.attempt, "error": error, "updatedAt": iso(now())})


async def handler(job: JobEnqueued, ctx):
    record = await ctx.state.get(JOBS, job.jobId) or job.model_dump(exclude={"attempt"})
    if record.get("status") == COMPLETED:  # delivery is at least once: never run a job twice
        ctx.logger.info("Job already completed; skipping", jobId=job.jobId)
        return
    record = with_status(record, RUNNING, attempts=job.attempt, maxAttempts=job.maxAttempts, error=None,
                         eventId=ctx.event_id)
    await ctx.state.set(JOBS, job.jobId, record)
    await publish_status(ctx, job, RUNNING, 0.0)
    ctx.logger.info("Running job", jobId=job.jobId, type=job.type, jobAttempt=job.attempt)
    await ctx.progress(0.0, f"attempt {job.attempt} of {job.maxAttempts}", jobId=job.jobId)

    retry_in_s = None
    try:
        result = await run_job(job.type, job.payload)
    except NonRetryableError as exc:
        error = str(exc)
    except RetryableJobError as exc:
        if job.attempt < job.maxAttempts:
            error, retry_in_s = str(exc), compute_backoff(job.attempt)
        else:
            error = f"{exc} (gave up after {job.attempt} attempts)"
    else:
        await ctx.state.set(JOBS, job.jobId, with_status(record, COMPLETED, result=result))
        await publish_status(ctx, job, COMPLETED, 1.0)
        ctx.logger.info("Job completed", jobId=job.jobId, jobAttempt=job.attempt)
        await ctx.emit("job.completed", {"jobId": job.jobId, "type": job.type, "attempts": job.attempt,
                                         "result": result})
        return result  # the result of this attempt's job handle

    if retry_in_s is None:
        record = with_status(record, FAILED, error=error)
        ctx.logger.error("Job failed", jobId=job.jobId, jobAttempt=job.attempt, error=error)
    else:
        retry_at = iso(now() + timedelta(seconds=retry_in_s))
        record = with_status(record, RETRY_SCHEDULED, error=error, retryAt=retry_at)
        ctx.logger.warn("Job failed; retry scheduled", jobId=job.jobId, jobAttempt=job.attempt, retryAt=retry_at)
    await ctx.state.set(JOBS, job.jobId, record)
    await publish_status(ctx, job, record["status"], 1.0 if retry_in_s is None else 0.0, error)
    await ctx.emit("job.failed", {"jobId": job.jobId, "type": job.type, "attempts": job.attempt,
                                  "error": error, "retryable": retry_in_s is not None})
