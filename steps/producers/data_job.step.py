"""DataJobProducer: turns a ``data.requested`` event into a queued (or delayed) data job."""

from services.jobs import JOBS, QUEUED, DataRequest, enqueued_event, new_job

config = {
    "type": "event",
    "name": "DataJobProducer",
    "description": "Creates a data-processing job from a request and queues it (or delays it)",
    "subscribes": ["data.requested"],
    "emits": [{"topic": "job.enqueued", "conditional": True}],
    "input": DataRequest,
    "flows": ["job-processing"],
}


async def handler(request: DataRequest, ctx):
    payload = {"numbers": request.numbers, "operation": request.operation}
    job = new_job("data", payload, request.maxAttempts, delay_s=request.delaySeconds)
    await ctx.state.set(JOBS, job["jobId"], job)
    ctx.logger.info("Data job created", jobId=job["jobId"], status=job["status"])
    if job["status"] == QUEUED:
        await ctx.emit("job.enqueued", enqueued_event(job))
