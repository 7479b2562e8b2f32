"""JobScheduler: every 10 s, re-queues the jobs whose user-land retry time has come.

A delayed job needs no cron: its producer emits ``job.enqueued`` with a ``delay`` and the queue holds it
back. This cron stays for the application's own retry policy (see ``services.jobs.compute_backoff``):
each failed attempt is a ``job.failed`` event the monitoring flow counts and notifies about, which the
queue's built-in retries (``maxRetries``, ``backoff``) would not give.
"""

from services.jobs import JOBS, QUEUED, enqueued_event, is_due, with_status

config = {
    "type": "cron",
    "name": "JobScheduler",
    "description": "Re-queues retry_scheduled jobs past their retryAt",
    "cron": "*/10 * * * * *",  # six fields, seconds first: every 10 seconds
    "emits": [{"topic": "job.enqueued", "conditional": True}],
    "flows": ["job-scheduling"],
}


async def handler(ctx):
    now = ctx.scheduled_at  # the tick's time: deterministic in tests
    for job in await ctx.state.get_group(JOBS):
        if not is_due(job, now):
            continue
        event = enqueued_event(job)
        event_id = await ctx.emit("job.enqueued", event)
        await ctx.state.set(JOBS, job["jobId"], with_status(job, QUEUED, at=now, eventId=event_id))
        ctx.logger.info("Re-queuing job", jobId=job["jobId"], was=job["status"], jobAttempt=event["attempt"])
