"""GET /jobs/:jobId: a job's record (status, attempts, result or error) from the ``jobs`` state."""

from services.jobs import JOBS

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


async def handler(req, ctx):
    job = await ctx.state.get(JOBS, req.pathParams["jobId"])
    if job is None:
        return {"status": 404, "body": {"error": "no such job"}}
    return {"status": 200, "body": job}
