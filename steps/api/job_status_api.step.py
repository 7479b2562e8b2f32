"""GET /jobs/:jobId: a job's record (status, attempts, result or error) from the ``jobs`` state, with the
job handle of its current attempt (queue state, attempts, progress, result).

A job accepted a moment ago may have no record yet (its producer has not run): then its request's handle
answers, as ``queued``.
"""

from motia_py.errors import UnknownEventError
from services.jobs import JOBS, QUEUED

config = {
    "type": "api",
    "name": "JobStatusApi",
    "description": "Reads one job's status",
    "path": "/jobs/:jobId",
    "method": "GET",
    "responseSchema": {
        200: {"type": "object", "required": ["jobId", "status"]},
        404: {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    },
    "emits": [],
    "flows": ["job-monitoring"],
}


async def handle_of(ctx, event_id):
    try:
        return (await ctx.status(event_id)).to_json()
    except UnknownEventError:
        return None  # never published, or past the handles' retention


async def handler(req, ctx):
    job_id = req.pathParams["jobId"]
    job = await ctx.state.get(JOBS, job_id)
    if job is not None:
        return {"status": 200, "body": {**job, "handle": await handle_of(ctx, job.get("eventId") or job_id)}}
    request = await handle_of(ctx, job_id) if len(job_id) == 32 else None
    if request is None or request["topic"] not in ("email.requested", "data.requested"):
        return {"status": 404, "body": {"error": "no such job"}}
    return {"status": 200, "body": {"jobId": job_id, "status": QUEUED, "handle": request}}
