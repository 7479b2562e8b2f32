"""POST /jobs: accept an email or data job over HTTP and hand it to its producer.

Body: ``{"type": "email", "email": {...}}`` or ``{"type": "data", "data": {...}}``, the same fields the
``email.requested`` / ``data.requested`` events take. Answers 202 with the trace id to follow.
"""

from typing import Any, Literal

from pydantic import BaseModel


class EnqueueJob(BaseModel):
    type: Literal["email", "data"]
    email: dict[str, Any] | None = None
    data: dict[str, Any] | None = None


config = {
    "type": "api",
    "name": "EnqueueJobApi",
    "description": "Accepts a job over HTTP",
    "path": "/jobs",
    "method": "POST",
    "bodySchema": EnqueueJob,
    "responseSchema": {
        202: {"type": "object", "properties": {"traceId": {"type": "string"}}, "required": ["traceId"]},
        400: {"type": "object", "properties": {"error": {"type": "string"}}},
    },
    "emits": [{"topic": "email.requested", "conditional": True}, {"topic": "data.requested", "conditional": True}],
    "flows": ["job-processing"],
}


async def handler(req, ctx):
    body: EnqueueJob = req.body
    request = body.email if body.type == "email" else body.data
    if request is None:
        return {"status": 400, "body": {"error": f"'{body.type}' job needs a '{body.type}' object"}}
    await ctx.emit({"topic": f"{body.type}.requested", "data": request})
    ctx.logger.info("Job accepted over HTTP", type=body.type)
    return {"status": 202, "body": {"traceId": ctx.trace_id}}
