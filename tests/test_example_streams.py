"""The example application pushes each job's status and progress to its ``jobStatus`` stream."""

from __future__ import annotations

from pathlib import Path

from motia_py.testing import Harness

ROOT = Path(__file__).resolve().parent.parent


async def test_a_job_shows_running_then_completed_on_the_job_status_stream() -> None:
    async with Harness(ROOT) as h:
        jobs = await h.subscribe("jobStatus", "jobs")
        assert (await jobs.next())["event"] == {"type": "sync", "data": []}
        await h.emit("data.requested", {"numbers": [1, 2, 3], "operation": "sum"})
        await h.run_until_idle()
        changes = [(m["event"]["type"], m["event"]["data"]["status"], m["event"]["data"]["progress"])
                   for m in jobs.messages[1:]]
        assert changes == [("create", "running", 0.0), ("update", "completed", 1.0)]
        (job,) = jobs.state
        assert job["type"] == "data" and job["attempt"] == 1 and job["error"] is None


async def test_a_failing_job_shows_its_retry_and_its_error() -> None:
    async with Harness(ROOT) as h:
        await h.emit("email.requested", {"to": "fail@example.com", "subject": "Hi", "maxAttempts": 1})
        await h.run_until_idle()
        job_id = next(iter(await h.state("jobs").items("jobs")))
        item = await h.streams.jobStatus.get("jobs", job_id)
        assert item is not None and item["status"] == "failed" and item["progress"] == 1.0 and item["error"]
