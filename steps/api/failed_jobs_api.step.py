"""GET /jobs/failed: the application's dead letters, the jobs that failed for good (newest first).

(Deliveries the framework itself dead-lettered are listed by ``motia-py dlq list`` and the Workbench.)
"""

from services.jobs import FAILED, JOBS

config = {
    "type": "api",
    "name": "FailedJobsApi",
    "description": "Lists jobs that failed for good",
    "path": "/jobs/failed",
    "method": "GET",
    "queryParams": [{"name": "limit", "description": "at most this many (default 50)",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}, "default": 50}],
    "responseSchema": {
        200: {"type": "object", "properties": {"jobs": {"type": "array"}, "count": {"type": "integer"}},
              "required": ["jobs", "count"]},
    },
    "emits": [],
    "flows": ["job-monitoring"],
}


async def handler(req, ctx):
    limit = req.queryParams["limit"]  # an int from 1 to 1000: the framework checked it (422 otherwise)
    jobs = [j for j in await ctx.state.get_group(JOBS) if j.get("status") == FAILED]
    jobs.sort(key=lambda j: j.get("updatedAt", ""), reverse=True)
    return {"status": 200, "body": {"jobs": jobs[:limit], "count": len(jobs)}}
