"""ProcessMonitor: every 30 s, fails the jobs whose processing the queue gave up on, and publishes a
health report.

A job's record says ``running`` from the moment its attempt starts. If that attempt then never ends in
the handler (it ran past its timeout on every retry, or its worker died each time), the queue
dead-letters the delivery and the record would say ``running`` for ever. The monitor asks the job
handle of the attempt (``ctx.status``) instead of guessing from the time: a dead or cancelled attempt
fails its job, with the handle's error.
"""

from motia_py.errors import UnknownEventError
from services.jobs import FAILED, JOBS, RUNNING, count_by_status, iso, with_status

config = {
    "type": "cron",
    "name": "ProcessMonitor",
    "description": "Fails running jobs whose attempt the queue gave up on and reports job counts per status",
    "cron": "*/30 * * * * *",
    "emits": [{"topic": "job.failed", "conditional": True}, "monitor.health"],
    "flows": ["job-monitoring"],
}


async def handler(ctx):
    now = ctx.scheduled_at
    jobs = await ctx.state.get_group(JOBS)
    given_up = 0
    for i, job in enumerate(jobs):
        if job.get("status") != RUNNING or not job.get("eventId"):
            continue
        try:
            attempt = (await ctx.status(job["eventId"])).steps.get("JobProcessor")
        except UnknownEventError:
            continue  # its handle is past retention: nothing to learn
        if attempt is None or attempt.state.value not in ("dead", "cancelled"):
            continue
        error = attempt.error or f"its attempt was {attempt.state.value}"
        jobs[i] = with_status(job, FAILED, at=now, error=error)
        await ctx.state.set(JOBS, job["jobId"], jobs[i])
        given_up += 1
        ctx.logger.warn("Job failed outside its handler", jobId=job["jobId"], error=error)
        await ctx.emit("job.failed", {"jobId": job["jobId"], "type": job["type"],
                                      "attempts": job.get("attempts", 0), "error": error, "retryable": False})
    counts = count_by_status(jobs)
    ctx.logger.info("Job health", counts=counts, timedOut=given_up)
    await ctx.emit("monitor.health", {"checkedAt": iso(now), "total": len(jobs), "timedOut": given_up,
                                      "counts": counts})
