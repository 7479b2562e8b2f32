"""DataJobProducer: turns a ``data.requested`` event into a queued (or delayed) data job."""

from services.jobs import JOBS, DataRequest, enqueued_event, new_job

config = {
    "type": "event",
    "name": "DataJobProducer",
    "description": "Creates a data-processing job from a request and queues it (or delays it)",
    "subscribes": ["data.requested"],
    "emits": ["job.enqueued"],
    "input": DataRequest,
    "flows": ["job-processing"],
}


async def handler(request: DataRequest, ctx):
    payload = {"numbers": request.numbers, "operation": request.operation}
    # the request's event id is the job's id (POST /jobs answered it already)
    job = new_job("data", payload, request.maxAttempts, delay_s=request.delaySeconds, job_id=ctx.event_id)
    # the queue holds a delayed job back until its runAt; the key enqueues it once even if this runs twice
    job["eventId"] = await ctx.emit("job.enqueued", enqueued_event(job), delay=request.delaySeconds,
                                    key=job["jobId"])
    await ctx.state.set(JOBS, job["jobId"], job)
    ctx.logger.info("Data job created", jobId=job["jobId"], status=job["status"])
