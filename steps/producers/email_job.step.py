"""EmailJobProducer: turns an ``email.requested`` event into a queued (or delayed) email job."""

from services.jobs import JOBS, QUEUED, EmailRequest, enqueued_event, new_job

config = {
    "type": "event",
    "name": "EmailJobProducer",
    "description": "Creates an email job from a request and queues it (or delays it)",
    "subscribes": ["email.requested"],
    "emits": [{"topic": "job.enqueued", "conditional": True}],
    "input": EmailRequest,
    "flows": ["job-processing"],
}


async def handler(request: EmailRequest, ctx):
    payload = {"to": request.to, "subject": request.subject, "body": request.body}
    job = new_job("email", payload, request.maxAttempts, delay_s=request.delaySeconds)
    await ctx.state.set(JOBS, job["jobId"], job)
    ctx.logger.info("Email job created", jobId=job["jobId"], status=job["status"])
    if job["status"] == QUEUED:
        await ctx.emit("job.enqueued", enqueued_event(job))
