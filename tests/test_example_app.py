"""The example application at the repository root (the background-job system), driven end to end."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.memory import MemoryBackend
from motia_py.cli import main
from motia_py.runs import Outcome
from motia_py.runtime import Runtime, load_project, require_valid
from motia_py.settings import load_settings
from motia_py.testing import Harness, VirtualClock

ROOT = Path(__file__).resolve().parent.parent
LATER = timedelta(hours=1)  # well past any retryAt (the backoff is capped at 60 s)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _job(h: Harness, job_id: str) -> dict[str, Any]:
    job = await h.state("jobs").get("jobs", job_id)
    assert job is not None, f"no job {job_id} in state"
    return job


async def _only_job_id(h: Harness) -> str:
    jobs = await h.state("jobs").items("jobs")
    assert len(jobs) == 1, jobs
    return next(iter(jobs))


async def _stats(h: Harness) -> dict[str, Any]:
    return await h.state("jobs").items("stats")


async def test_compute_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    async with Harness(ROOT):  # discovery makes the project's own `services` package the importable one
        from services.jobs import compute_backoff

    assert [compute_backoff(a, 2.0, 60.0, lambda: 1.0) for a in (1, 2, 3, 4, 5, 6, 7)] == [
        2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert compute_backoff(3, 2.0, 60.0, lambda: 0.5) == 4.0
    assert compute_backoff(3, 2.0, 60.0, lambda: 0.0) == 0.0


def test_validate_strict_passes_on_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--strict", "--json", "--project", str(ROOT)])
    report = json.loads(capsys.readouterr().out)
    assert exc.value.code == 0, report
    assert (report["errors"], report["warnings"]) == (0, 0), report["findings"]
    assert report["steps"] == 10


async def test_every_step_shares_the_jobs_namespace() -> None:
    async with Harness(ROOT) as h:
        names = {s.name for s in h.project.steps}
        assert names == {"JobProcessor", "EmailJobProducer", "DataJobProducer", "JobScheduler",
                         "ProcessMonitor", "JobCompletionLogger", "JobFailureNotifier", "EnqueueJobApi",
                         "JobStatusApi", "FailedJobsApi"}
        assert {h.project.namespace_of(s) for s in h.project.steps} == {"jobs"}
        assert {f for s in h.project.steps for f in s.flows} == {"job-processing", "job-scheduling",
                                                                  "job-monitoring"}


async def test_email_job_completes_and_is_counted() -> None:
    async with Harness(ROOT) as h:
        await h.emit("email.requested", {"to": "ada@example.com", "subject": "Hi", "body": "Hello"})
        await h.run_until_idle()

        [done] = h.emitted("job.completed")
        job = await _job(h, done["jobId"])
        assert job["status"] == "completed"
        assert job["attempts"] == 1
        assert job["result"] == {"to": "ada@example.com", "subject": "Hi", "status": "sent"}
        assert h.emitted("job.failed") == []
        assert await _stats(h) == {"completed": 1}
        assert await h.dead_letters() == []
        assert any(r.get("jobId") == done["jobId"] and r.get("step") == "JobProcessor" for r in h.logs)


async def test_failing_email_is_retried_by_the_scheduler_until_exhausted() -> None:
    async with Harness(ROOT) as h:
        await h.emit("email.requested", {"to": "fail@example.com", "subject": "Hi", "maxAttempts": 3})
        await h.run_until_idle()
        job_id = await _only_job_id(h)

        for attempt in (1, 2):
            job = await _job(h, job_id)
            assert job["status"] == "retry_scheduled"
            assert job["attempts"] == attempt
            assert "refused" in job["error"]
            # user-land backoff: full jitter below min(60, 2 * 2**(attempt-1)) seconds
            wait_s = (_time(job["retryAt"]) - _time(job["updatedAt"])).total_seconds()
            assert 0 <= wait_s <= 2.0 * 2 ** (attempt - 1) + 1
            assert h.emitted("job.failed")[-1] == {"jobId": job_id, "type": "email", "attempts": attempt,
                                                   "error": job["error"], "retryable": True}
            assert h.emitted("notification.sent") == []

            # a tick before retryAt leaves the job alone
            await h.run_cron("JobScheduler", scheduled_at=_time(job["retryAt"]) - timedelta(seconds=1))
            assert (await _job(h, job_id))["attempts"] == attempt
            await h.run_cron("JobScheduler", scheduled_at=datetime.now(UTC) + LATER)
            assert h.emitted("job.enqueued")[-1]["attempt"] == attempt + 1

        job = await _job(h, job_id)
        assert job["status"] == "failed"
        assert job["attempts"] == 3
        assert "gave up after 3 attempts" in job["error"]
        assert [f["retryable"] for f in h.emitted("job.failed")] == [True, True, False]
        [notice] = h.emitted("notification.sent")
        assert notice["jobId"] == job_id
        assert notice["failedJobs"] == 1
        assert await _stats(h) == {"retried": 2, "failed": 1}
        assert [r.attempt for r in h.runs_of("JobProcessor")] == [1, 1, 1]  # queue retries: none
        assert await h.dead_letters() == []

        # a failed job is never picked up again
        await h.run_cron("JobScheduler", scheduled_at=datetime.now(UTC) + 2 * LATER)
        assert len(h.runs_of("JobProcessor")) == 3


async def test_invalid_address_fails_at_once_without_retry() -> None:
    async with Harness(ROOT) as h:
        await h.emit("email.requested", {"to": "not-an-address"})
        await h.run_until_idle()
        job_id = await _only_job_id(h)

        job = await _job(h, job_id)
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert "invalid email address" in job["error"]
        [failed] = h.emitted("job.failed")
        assert failed["retryable"] is False
        [notice] = h.emitted("notification.sent")
        assert notice["jobId"] == job_id
        assert "invalid email address" in notice["message"]
        assert await _stats(h) == {"failed": 1}
        assert await h.dead_letters() == []  # handled in user land, not by the queue

        await h.run_cron("JobScheduler", scheduled_at=datetime.now(UTC) + LATER)
        assert len(h.runs_of("JobProcessor")) == 1


@pytest.mark.parametrize(("operation", "value"), [("sum", 10), ("mean", 2.5), ("square", [1, 4, 9, 16])])
async def test_data_job_stores_its_result(operation: str, value: Any) -> None:
    async with Harness(ROOT) as h:
        await h.emit("data.requested", {"numbers": [1, 2, 3, 4], "operation": operation})
        await h.run_until_idle()

        [done] = h.emitted("job.completed")
        job = await _job(h, done["jobId"])
        assert job["status"] == "completed"
        assert job["type"] == "data"
        assert job["result"] == {"operation": operation, "value": value}
        assert done["result"] == job["result"]
        assert await _stats(h) == {"completed": 1}


async def test_bad_data_request_is_rejected_by_input_validation() -> None:
    async with Harness(ROOT) as h:
        await h.emit("data.requested", {"numbers": [1, "two"], "operation": "sum"})
        await h.run_until_idle()

        assert await h.state("jobs").items("jobs") == {}
        [dead] = await h.dead_letters()
        assert dead.step == "DataJobProducer"


async def test_a_delayed_job_waits_in_the_queue_until_its_run_at() -> None:
    async with Harness(ROOT) as h:
        request_id = await h.emit("email.requested", {"to": "later@example.com", "delaySeconds": 120})
        await h.run_until_idle()  # the harness's clock jumps to the due time: no cron involved

        job = await _job(h, request_id)  # the request's event id is the job's id
        run_at = _time(job["runAt"])
        assert timedelta(seconds=110) < run_at - _time(job["createdAt"]) <= timedelta(seconds=121)
        assert (job["status"], job["attempts"], job["result"]["status"]) == ("completed", 1, "sent")
        [produced], [run] = h.runs_of("EmailJobProducer"), h.runs_of("JobProcessor")
        assert run.started_at - produced.started_at >= 120 and run.event_id == job["eventId"]
        assert h.runs_of("JobScheduler") == []
        attempt = await h.status(job["eventId"])
        assert (attempt.state.value, attempt.result) == ("succeeded", job["result"])
        assert attempt.progress is not None and attempt.progress["message"] == "attempt 1 of 3"


async def test_a_request_handled_twice_enqueues_its_job_once() -> None:
    async with Harness(ROOT) as h:
        request_id = await h.emit("data.requested", {"numbers": [1, 2]})
        await h.run_until_idle()
        # as if the producer ran again for the same request (at least once: a lost lease, a crash)
        job = await _job(h, request_id)
        assert await h.emit("job.enqueued", {}, key=request_id) == job["eventId"]
        await h.run_until_idle()
        assert len(h.runs_of("JobProcessor")) == 1


async def test_monitor_fails_a_running_job_whose_attempt_the_queue_gave_up_on() -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    async with Harness(ROOT) as h:
        # an attempt the queue dead-lettered (here: input that fails validation) while its record said running
        dead = await h.emit("job.enqueued", {"jobId": "stuck", "type": "fax"})
        await h.run_until_idle()
        jobs = h.state("jobs")
        await jobs.set("jobs", "stuck", {"jobId": "stuck", "type": "email", "payload": {"to": "x@example.com"},
                                         "status": "running", "attempts": 1, "maxAttempts": 3, "eventId": dead,
                                         "updatedAt": (now - timedelta(minutes=6)).isoformat(), "error": None})
        busy = await h.emit("email.requested", {"to": "busy@example.com", "delaySeconds": 600})
        await h.emit("data.requested", {"numbers": [1, 2]})
        await h.run_until_idle()
        await jobs.set("jobs", busy, {**await _job(h, busy), "status": "running"})  # started, running now

        await h.run_cron("ProcessMonitor", scheduled_at=now)

        stuck = await _job(h, "stuck")
        assert stuck["status"] == "failed" and stuck["error"].startswith("InputValidationError")
        assert (await _job(h, busy))["status"] == "running"  # its attempt succeeded: nothing to fix here
        [failed] = h.emitted("job.failed")
        assert (failed["jobId"], failed["retryable"]) == ("stuck", False)
        assert [n["jobId"] for n in h.emitted("notification.sent")] == ["stuck"]
        [health] = h.emitted("monitor.health")
        assert (health["checkedAt"], health["total"], health["timedOut"]) == (now.isoformat(), 3, 1)
        assert health["counts"] == {"queued": 0, "delayed": 0, "running": 1, "retry_scheduled": 0,
                                    "completed": 1, "failed": 1}


async def test_flows_share_state_written_by_the_processor() -> None:
    async with Harness(ROOT) as h:
        await h.emit("email.requested", {"to": "ada@example.com"})
        await h.emit("email.requested", {"to": "fail@example.com", "maxAttempts": 2})
        await h.emit("email.requested", {"to": "soon@example.com", "delaySeconds": 30})
        await h.run_until_idle()

        # job-processing wrote these; job-monitoring's ProcessMonitor reads them
        await h.run_cron("ProcessMonitor", scheduled_at=datetime.now(UTC))
        [health] = h.emitted("monitor.health")
        assert health["total"] == 3
        assert {k: v for k, v in health["counts"].items() if v} == {"completed": 2, "retry_scheduled": 1}

        # job-scheduling's JobScheduler reads and updates the same records
        await h.run_cron("JobScheduler", scheduled_at=datetime.now(UTC) + LATER)
        await h.run_cron("ProcessMonitor", scheduled_at=datetime.now(UTC) + LATER)
        assert {k: v for k, v in h.emitted("monitor.health")[-1]["counts"].items() if v} == {"completed": 2,
                                                                                           "failed": 1}
        # the Motia-style notifier counted failed jobs from the same namespace
        assert [n["failedJobs"] for n in h.emitted("notification.sent")] == [1]


async def test_job_enqueued_from_outside_runs_without_a_producer() -> None:
    async with Harness(ROOT) as h:
        await h.emit("job.enqueued", {"jobId": "ext-1", "type": "data", "payload": {"numbers": [5, 5]}})
        await h.run_until_idle()

        job = await _job(h, "ext-1")
        assert job["status"] == "completed"
        assert job["result"] == {"operation": "sum", "value": 10}


async def test_duplicate_delivery_of_a_completed_job_is_skipped() -> None:
    async with Harness(ROOT) as h:
        event = {"jobId": "dup-1", "type": "data", "payload": {"numbers": [1]}}
        await h.emit("job.enqueued", event)
        await h.run_until_idle()
        await h.emit("job.enqueued", event)
        await h.run_until_idle()

        assert len(h.emitted("job.completed")) == 1
        assert await _stats(h) == {"completed": 1}


async def test_jobs_enter_over_http_and_their_status_and_failures_are_served() -> None:
    async with Harness(ROOT) as h:
        status, body = await h.request("POST", "/jobs", json={"type": "email", "email": {"to": "ada@example.com"}})
        assert status == 202 and len(body["traceId"]) == 32 and len(body["jobId"]) == 32
        ada = body["jobId"]
        status, body = await h.request("GET", f"/jobs/{ada}")  # accepted; its producer has not run yet
        assert (status, body["status"], body["handle"]["topic"]) == (200, "queued", "email.requested")
        status, body = await h.request("POST", "/jobs", json={"type": "email", "email": {"to": "nobody"}})
        assert status == 202
        status, body = await h.request("POST", "/jobs", json={"type": "data"})
        assert status == 422 and body["fields"][0]["loc"] == ["data", "data"]  # a data job needs its 'data'
        status, body = await h.request("POST", "/jobs", json={"type": "fax"})
        assert status == 422 and body["fields"][0]["msg"].startswith("Input tag 'fax' found")
        await h.run_until_idle()
        status, body = await h.request("GET", f"/jobs/{ada}")
        assert (status, body["jobId"], body["status"]) == (200, ada, "completed")
        handle = body["handle"]  # the job handle of its attempt
        assert (handle["state"], handle["steps"]["JobProcessor"]["result"]["status"]) == ("succeeded", "sent")
        assert (await h.request("GET", "/jobs/nope"))[0] == 404
        status, body = await h.request("GET", "/jobs/failed", query={"limit": "10"})
        assert status == 200 and body["count"] == 1 and body["jobs"][0]["payload"]["to"] == "nobody"


@pytest.mark.parametrize("limit", ["abc", "0", "1001", "2.5"])
async def test_failed_jobs_limit_must_be_an_integer_from_1_to_1000(limit: str) -> None:
    async with Harness(ROOT) as h:
        status, body = await h.request("GET", "/jobs/failed", query={"limit": limit})
        assert status == 422, body
        assert body["error"] == "validation" and [f["loc"] for f in body["fields"]] == [["query", "limit"]]
        status, body = await h.request("GET", "/jobs/failed")  # the default, 50
        assert status == 200 and body == {"jobs": [], "count": 0}


async def test_a_data_job_whose_result_overflows_fails_at_once_with_a_clear_error() -> None:
    async with Harness(ROOT) as h:
        status, _ = await h.request("POST", "/jobs", json={"type": "data",
                                                           "data": {"numbers": [1e200], "operation": "square"}})
        assert status == 202
        await h.run_until_idle()
        job = await _job(h, await _only_job_id(h))
        assert job["status"] == "failed" and job["attempts"] == 1 and "overflows a float" in job["error"]


async def test_a_stalled_workers_late_result_cannot_touch_a_job_another_worker_completed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """JobProcessor and JobCompletionLogger are transactional: a run whose lease went to another worker
    commits nothing, so its late outcome neither overwrites the job's record nor is counted."""
    clock = VirtualClock()
    project, findings = load_project(load_settings(ROOT, flags={"backend_url": "memory://"}, env={}))
    require_valid(project, findings)
    from services.jobs import RetryableJobError

    backend = MemoryBackend(clock=clock)
    runtime = Runtime(project, backend, clock=clock, workers=False, cron=False)  # the test plays the workers
    router = runtime.router
    stall = asyncio.Event()
    calls: list[int] = []

    async def run_job(job_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:  # the first worker stalls inside the job, then its mail server refuses
            await stall.wait()
            raise RetryableJobError("mail server refused")
        return {"operation": "sum", "value": 3}

    monkeypatch.setattr(sys.modules["steps.jobs.process_job_step"], "run_job", run_job)
    await router.emit("job.enqueued", {"jobId": "j1", "type": "data", "payload": {"numbers": [1, 2]}})
    [first] = await backend.claim("JobProcessor", 1, 1.0)
    stalled = asyncio.ensure_future(router.run_delivery(first))
    while not calls:
        await asyncio.sleep(0.001)
    clock.advance(2.0)  # its lease ran out: another worker takes the job and completes it
    [second] = await backend.claim("JobProcessor", 1, 60.0)
    assert await router.run_delivery(second) is Outcome.OK
    stall.set()
    assert await stalled is Outcome.LOST  # the late "retry scheduled" is not committed

    for step in ("JobCompletionLogger", "JobFailureNotifier"):
        for d in await backend.claim(step, 10, 60.0):
            assert await router.run_delivery(d) is Outcome.OK
    job = json.loads(await backend.state_get("jobs", "jobs", "j1") or "null")
    assert job["status"] == "completed"  # not the stalled run's "retry_scheduled"
    assert job["result"] == {"operation": "sum", "value": 3}
    assert await backend.state_items("jobs", "stats") == {"completed": "1"}
    assert (await backend.stats()).idle
    await router.aclose()
