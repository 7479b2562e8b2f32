"""ProcessMonitor: every 30 s, fails jobs stuck in ``running`` and publishes a health report."""

from datetime import timedelta

from services.jobs import (
    FAILED,
    JOBS,
    RUNNING,
    RUNNING_TIMEOUT_S,
    count_by_status,
    iso,
    parse_time,
    with_status,
)

config = {
    "type": "cron",
    "name": "ProcessMonitor",
    "description": "Times out jobs running for over 5 minutes and reports job counts per status",
    "cron": "*/30 * * * * *",
    "emits": [{"topic": "job.failed", "conditional": True}, "monitor.health"],
    "flows": ["job-monitoring"],
}


async def handler(ctx):
    now = ctx.scheduled_at
    deadline = now - timedelta(seconds=RUNNING_TIMEOUT_S)
    jobs = await ctx.state.get_group(JOBS)
    timed_out = 0
    for i, job in enumerate(jobs):
        if job.get("status") != RUNNING or parse_time(job["updatedAt"]) > deadline:
            continue
        jobs[i] = with_status(job, FAILED, at=now, error="timed out")
        await ctx.state.set(JOBS, job["jobId"], jobs[i])
        timed_out += 1
        ctx.logger.warn("Job timed out", jobId=job["jobId"], runningSince=job["updatedAt"])
        await ctx.emit("job.failed", {"jobId": job["jobId"], "type": job["type"],
                                      "attempts": job.get("attempts", 0), "error": "timed out",
                                      "retryable": False})
    counts = count_by_status(jobs)
    ctx.logger.info("Job health", counts=counts, timedOut=timed_out)
    await ctx.emit("monitor.health", {"checkedAt": iso(now), "total": len(jobs), "timedOut": timed_out,
                                      "counts": counts})
