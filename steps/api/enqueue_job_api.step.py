"""POST /jobs: accept an email or data job over HTTP and hand it to its producer.

Body: ``{"type": "email", "email": {...}}`` or ``{"type": "data", "data": {...}}``, the same fields the
``email.requested`` / ``data.requested`` events take (one model for both, in ``services.jobs``). Answers
202 with the job's id (the id of the request event, which becomes the job's id: ``GET /jobs/:jobId``)
and the trace id to follow; any other body is a 422 from the framework, so nothing accepted here fails
later in a producer.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel

from services.jobs import DataRequest, EmailRequest


class EmailJob(BaseModel):
    type: Literal["email"]
    email: EmailRequest


class DataJob(BaseModel):
    type: Literal["data"]
    data: DataRequest


class EnqueueJob(RootModel[Annotated[EmailJob | DataJob, Field(discriminator="type")]]):
    pass


config = {
    "type": "api",
    "name": "EnqueueJobApi",
    "description": "Accepts a job over HTTP",
    "path": "/jobs",
    "method": "POST",
    "bodySchema": EnqueueJob,
    "responseSchema": {
        202: {"type": "object", "properties": {"jobId": {"type": "string"}, "traceId": {"type": "string"}},
              "required": ["jobId", "traceId"]},
    },
    "emits": [{"topic": "email.requested", "conditional": True}, {"topic": "data.requested", "conditional": True}],
    "flows": ["job-processing"],
}


async def handler(req, ctx):
    job = req.body.root
    request = job.email if isinstance(job, EmailJob) else job.data
    job_id = await ctx.emit({"topic": f"{job.type}.requested", "data": request.model_dump(exclude_unset=True)})
    ctx.logger.info("Job accepted over HTTP", type=job.type, jobId=job_id)
    return {"status": 202, "body": {"jobId": job_id, "traceId": ctx.trace_id}}
