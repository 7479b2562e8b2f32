"""EmailJobProducer: turns an ``email.requested`` event into a queued (or delayed) email job."""

from services.jobs import JOBS, EmailRequest, enqueued_event, new_job

config = {
    "type": "event",
    "name": "EmailJobProducer",
    "description": "Creates an email job from a request and queues it (or delays it)",
    "subscribes": ["email.requested"],
    "emits": ["job.enqueued"],
    "input": EmailRequest,
    "flows": ["job-processing"],
}


async def handler(request: EmailRequest, ctx):
    payload = {"to": request.to, "subject": request.subject, "body": request.body}
    # the request's event id is the job's id (POST /jobs answered it already)
    job = new_job("email", payload, request.maxAttempts, delay_s=request.delaySeconds, job_id=ctx.event_id)
    # the queue holds a delayed job back until its runAt; the key enqueues it once even if this runs twice
    job["eventId"] = await ctx.emit("job.enqueued", enqueued_event(job), delay=request.delaySeconds,
                                    key=job["jobId"])
    await ctx.state.set(JOBS, job["jobId"], job)
    ctx.logger.info("Email job created", jobId=job["jobId"], status=job["status"])
