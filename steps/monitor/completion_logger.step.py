"""JobCompletionLogger: counts finished jobs in state (group ``stats``: completed, failed, retried).

Transactional: each event is counted exactly once, even when a worker dies after counting and before
acknowledging the event (the count commits with the acknowledgement).
"""

from services.jobs import STATS

config = {
    "type": "event",
    "name": "JobCompletionLogger",
    "description": "Counts completed jobs, failed jobs and scheduled retries",
    "subscribes": ["job.completed", "job.failed"],
    "emits": [],
    "flows": ["job-monitoring"],
    "transactional": True,
}


async def handler(event, ctx):
    counter = "completed" if ctx.topic == "job.completed" else "failed"
    if event.get("retryable"):  # not final: the scheduler will run the job again
        counter = "retried"
    total = await ctx.state.update(STATS, counter, lambda n: (n or 0) + 1)
    ctx.logger.info(f"Job {counter}", jobId=event["jobId"], total=total)
