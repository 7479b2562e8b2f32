"""JobScheduler: every 10 s, queues the jobs whose retry time or delayed start time has come."""

from services.jobs import JOBS, QUEUED, enqueued_event, is_due, with_status

config = {
    "type": "cron",
    "name": "JobScheduler",
    "description": "Re-queues retry_scheduled jobs past their retryAt and delayed jobs past their runAt",
    "cron": "*/10 * * * * *",  # six fields, seconds first: every 10 seconds
    "emits": [{"topic": "job.enqueued", "conditional": True}],
    "flows": ["job-scheduling"],
}


async def handler(ctx):
    now = ctx.scheduled_at  # the tick's time: deterministic in tests
    for job in await ctx.state.get_group(JOBS):
        if not is_due(job, now):
            continue
        await ctx.state.set(JOBS, job["jobId"], with_status(job, QUEUED, at=now))
        event = enqueued_event(job)
        ctx.logger.info("Re-queuing job", jobId=job["jobId"], was=job["status"], attempt=event["attempt"])
        await ctx.emit("job.enqueued", event)
