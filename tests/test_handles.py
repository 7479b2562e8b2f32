"""Job handles through the runtime (the harness: memory backend, virtual clock): event ids from every emit,
status per subscriber, results, progress, idempotency keys, scheduling at a time, cancellation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.base import HandleState
from motia_py.backends.records import new_id
from motia_py.errors import AmbiguousIdError, InvalidEmitError, StepConfigError, UnknownEventError, WaitTimeoutError
from motia_py.handles import StepStatus
from motia_py.runs import Outcome
from motia_py.testing import Harness

from .conftest import ProjectFactory
from .probes import inject, wait

FLOW = 'entry_topics = ["job", "slow", "sync", "fan"]\n'

STEPS = {
    "flows/f.toml": FLOW,
    "steps/job.step.py": """
        from pydantic import BaseModel
        class Out(BaseModel):
            total: int
            when: str = "now"
        config = {"type": "event", "name": "Job", "subscribes": ["job"], "emits": ["done", "later"], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.progress(0.5, "half way", items=input.get("n", 0))
            done_id = await ctx.emit("done", {"n": input.get("n", 0)})
            await ctx.state.set("ids", "done", done_id)
            if input.get("key"):
                await ctx.state.set("ids", "keyed", await ctx.emit("later", {}, key=input["key"]))
            kind = input.get("kind")
            if kind == "model":
                return Out(total=input.get("n", 0))
            if kind == "bad":
                return {1, 2}  # not JSON
            if kind == "huge":
                return "x" * 2_000_000
            return {"total": input.get("n", 0)}
    """,
    "steps/done.step.py": """
        config = {"type": "event", "name": "Done", "subscribes": ["done", "later"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.state.update("counts", ctx.topic, lambda n: (n or 0) + 1)
    """,
    "steps/slow.step.py": """
        import asyncio
        config = {"type": "event", "name": "Slow", "subscribes": ["slow"], "emits": ["done"], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 3}}}
        async def handler(input, ctx):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped.set()
                raise
            await ctx.emit("done", {})
    """,
    "steps/sync.step.py": """
        import time
        config = {"type": "event", "name": "Sync", "subscribes": ["sync"], "emits": ["done"], "flows": ["f"]}
        def handler(input, ctx):
            ctx.progress(fraction=0.1)
            sync_started.set()
            while not ctx.cancelled and not release.is_set():
                time.sleep(0.005)
            ctx.emit("done", {})
            return "finished"
    """,
    "steps/fan_a.step.py": """
        config = {"type": "event", "name": "FanA", "subscribes": ["fan"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"dedupWindow": 60}}}
        async def handler(input, ctx):
            return "a"
    """,
    "steps/fan_b.step.py": """
        config = {"type": "event", "name": "FanB", "subscribes": ["fan"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"dedupWindow": 120}}}
        async def handler(input, ctx):
            raise ValueError("b fails")
    """,
}


@pytest.fixture
def root(make_project: ProjectFactory) -> Path:
    return make_project(STEPS)


def signals(h: Harness) -> dict[str, Any]:
    """Hand the slow and sync steps their events, and make the harness look for cancels often."""
    found = {"started": asyncio.Event(), "stopped": asyncio.Event()}
    inject(h.project, "Slow", **found)
    import threading

    found["sync_started"], found["release"] = threading.Event(), threading.Event()
    inject(h.project, "Sync", sync_started=found["sync_started"], release=found["release"])
    assert h.runtime.worker is not None
    h.runtime.worker.cancel_poll_s = 0.01
    return found


# -- ids, status and results ---------------------------------------------------------------------------
def test_ids_differ_in_their_first_eight_characters() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len({i[:8] for i in ids}) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


async def test_an_emit_from_outside_returns_the_event_id_that_is_its_trace_id(root: Path) -> None:
    async with Harness(root) as h:
        event_id = await h.emit("job", {"n": 3})
        queued = await h.status(event_id)
        assert (queued.state, queued.done, queued.topic) == (HandleState.QUEUED, False, "job")
        assert queued.trace_id == event_id
        await h.run_until_idle()

        status = await h.status(event_id)
        assert (status.state, status.done, status.result) == (HandleState.SUCCEEDED, True, {"total": 3})
        job = status.steps["Job"]
        assert (job.attempts, job.error, job.progress["fraction"], job.progress["items"]) == (1, None, 0.5, 3)
        assert [r.trace_id for r in h.runs] == [event_id, event_id]  # Job, then Done downstream


async def test_ctx_emit_returns_the_new_events_id_which_has_its_own_status(root: Path) -> None:
    async with Harness(root) as h:
        await h.emit("job", {"n": 1})
        await h.run_until_idle()
        done_id = await h.state("f").get("ids", "done")
        status = await h.status(done_id)
        assert (status.topic, status.state, list(status.steps)) == ("done", HandleState.SUCCEEDED, ["Done"])
        assert h.runs_of("Done")[0].event_id == done_id


async def test_a_pydantic_result_is_stored_as_its_json_dump(root: Path) -> None:
    async with Harness(root) as h:
        status = await h.wait(await h.emit("job", {"n": 4, "kind": "model"}))
        assert status.result == {"total": 4, "when": "now"}


async def test_a_transactional_step_commits_its_result_and_its_keyed_emits(make_project: ProjectFactory) -> None:
    root = make_project({**STEPS, "flows/f.toml": FLOW.replace(']', ', "tx"]'), "steps/tx.step.py": """
        config = {"type": "event", "name": "Tx", "subscribes": ["tx"], "emits": ["done"], "flows": ["f"],
                  "transactional": True}
        async def handler(input, ctx):
            await ctx.state.update("counts", "tx", lambda n: (n or 0) + 1)
            await ctx.emit("done", {}, key="once")
            return {"n": input["n"]}
    """})
    async with Harness(root) as h:
        first, second = await h.emit("tx", {"n": 1}), await h.emit("tx", {"n": 2})
        await h.run_until_idle()
        assert [(await h.status(e)).result for e in (first, second)] == [{"n": 1}, {"n": 2}]
        assert await h.state("f").get("counts", "tx") == 2
        assert len(h.runs_of("Done")) == 1  # the second run's keyed emit found the key taken


@pytest.mark.parametrize(("kind", "why"), [("bad", "not JSON"), ("huge", "the limit is 1048576")])
async def test_a_result_that_cannot_be_stored_is_dropped_with_a_warning_and_the_run_succeeds(
        root: Path, kind: str, why: str) -> None:
    async with Harness(root) as h:
        status = await h.wait(await h.emit("job", {"kind": kind}))
        assert (status.state, status.result) == (HandleState.SUCCEEDED, None)
        assert h.runs_of("Job")[0].outcome is Outcome.OK
        [warning] = [r for r in h.logs if r.get("level") == "warning" and "result" in str(r.get("msg"))]
        assert "'Job'" in warning["msg"] and why in warning["msg"] and warning["step"] == "Job"


async def test_each_subscriber_has_its_own_state_attempts_error_and_result(root: Path) -> None:
    async with Harness(root) as h:
        event_id = await h.emit("fan", {})
        status = await h.wait(event_id)
        a, b = status.steps["FanA"], status.steps["FanB"]
        assert (a.state, a.result, a.attempts) == (HandleState.SUCCEEDED, "a", 1)
        assert (b.state, b.attempts, b.error) == (HandleState.DEAD, 4, "ValueError: b fails")
        assert status.state is HandleState.DEAD and status.result == {"FanA": "a", "FanB": None}


async def test_an_unknown_short_or_ambiguous_id_is_a_clear_error(root: Path) -> None:
    async with Harness(root) as h:
        with pytest.raises(UnknownEventError, match="no event '0000000000'"):
            await h.status("0000000000")
        with pytest.raises(UnknownEventError, match="at least 6"):
            await h.status("abc")
        ids = [await h.emit("job", {}) for _ in range(20)]
        assert (await h.status(ids[3][:8])).event_id == ids[3]
        common = ids[0][:6]
        if sum(i.startswith(common) for i in ids) > 1:  # consecutive ids share their first 6 characters
            with pytest.raises(AmbiguousIdError) as err:
                await h.status(common)
            assert ids[0] in err.value.candidates and ids[0] in str(err.value)


# -- progress -----------------------------------------------------------------------------------------
async def test_wait_hands_progress_reports_to_the_callback(root: Path) -> None:
    seen: list[StepStatus] = []
    async with Harness(root) as h:
        status = await h.wait(await h.emit("job", {"n": 7}), on_progress=seen.append)
    assert [(s.step, s.progress["message"], s.progress["items"]) for s in seen] == [("Job", "half way", 7)]
    assert status.progress is not None and status.progress["fraction"] == 0.5


async def test_a_progress_fraction_out_of_range_fails_the_attempt(make_project: ProjectFactory) -> None:
    root = make_project({"flows/f.toml": FLOW, "steps/p.step.py": """
        config = {"type": "event", "name": "P", "subscribes": ["job"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.progress(1.5)
    """})
    async with Harness(root) as h:
        status = await h.wait(await h.emit("job", {}))
        assert status.state is HandleState.DEAD
        assert "fraction must be a number from 0 to 1" in str(status.steps["P"].error)


# -- idempotency keys ---------------------------------------------------------------------------------
async def test_a_second_emit_with_the_same_key_returns_the_first_id_and_enqueues_nothing(root: Path) -> None:
    async with Harness(root) as h:
        first = await h.emit("job", {"n": 1}, key="order-42")
        again = await h.emit("job", {"n": 2}, key="order-42")
        other = await h.emit("job", {"n": 3}, key="order-43")
        await h.run_until_idle()
        assert again == first and other != first
        assert sorted(r.event_id for r in h.runs_of("Job")) == sorted([first, other])
        assert [o["n"] for o in h.emitted("job")] == [1, 3]


async def test_the_dedup_window_comes_from_the_emit_or_the_largest_subscriber_setting(root: Path) -> None:
    async with Harness(root) as h:
        first = await h.emit("fan", {}, key="k")
        h.clock.advance(100)  # FanB holds keys of 'fan' for 120 s
        assert await h.emit("fan", {}, key="k") == first
        h.clock.advance(21)
        assert await h.emit("fan", {}, key="k") != first
        short = await h.emit("job", {}, key="j", dedup_window=5)
        h.clock.advance(6)
        assert await h.emit("job", {}, key="j") != short


async def test_a_key_on_ctx_emit_is_checked_when_the_outbox_is_published(root: Path) -> None:
    async with Harness(root) as h:
        await h.emit("job", {"key": "once"})
        await h.emit("job", {"key": "once"})
        await h.run_until_idle()
        assert await h.state("f").get("counts", "later") == 1
        assert await h.state("f").get("counts", "done") == 2


def test_a_dedup_window_that_is_not_a_positive_number_is_a_config_error(make_project: ProjectFactory) -> None:
    from motia_py.config import build_step

    bad = {"type": "event", "name": "X", "subscribes": ["t"], "infrastructure": {"queue": {"dedupWindow": -1}}}
    with pytest.raises(StepConfigError, match="dedupWindow"):
        build_step(bad, lambda i, c: None, Path("x.step.py"))


# -- scheduling at a time -----------------------------------------------------------------------------
async def test_an_event_scheduled_at_a_time_waits_for_it(root: Path) -> None:
    async with Harness(root) as h:
        at = datetime.fromtimestamp(h.clock.now, UTC) + timedelta(hours=2)
        event_id = await h.emit("job", {"n": 1}, at=at)
        status = await h.status(event_id)
        assert status.state is HandleState.SCHEDULED and status.steps["Job"].due_at == pytest.approx(at.timestamp())
        [listed] = await h.backend.scheduled_list(None, 10)
        assert (listed.event_id, listed.step) == (event_id, "Job")
        await h.run_until_idle()  # the harness moves its clock to the due time
        assert h.runs_of("Job")[0].started_at >= at.timestamp()


async def test_a_naive_datetime_is_refused(root: Path) -> None:
    async with Harness(root) as h:
        with pytest.raises(InvalidEmitError, match="timezone-aware"):
            await h.emit("job", {}, at=datetime(2030, 1, 1, 9, 0))


# -- cancellation ---------------------------------------------------------------------------------------
async def test_a_cancelled_scheduled_event_never_runs(root: Path) -> None:
    async with Harness(root) as h:
        event_id = await h.emit("job", {}, delay=3600)
        done = await h.cancel(event_id)
        assert (done.changed, done.cancelled, done.requested) == (True, ("Job",), ())
        await h.run_until_idle()
        assert h.runs_of("Job") == []
        assert (await h.status(event_id)).state is HandleState.CANCELLED


async def test_a_running_async_handler_is_cancelled_not_retried_nor_dead_lettered(root: Path) -> None:
    async with Harness(root) as h:
        found = signals(h)
        event_id = await h.emit("slow", {})
        runner = asyncio.create_task(h.run_until_idle())
        await wait(found["started"], "the slow handler to start")
        done = await h.cancel(event_id)
        assert (done.cancelled, done.requested) == ((), ("Slow",))
        await wait(found["stopped"], "the slow handler to be cancelled")
        await runner
        assert [r.outcome for r in h.runs_of("Slow")] == [Outcome.CANCELLED]
        assert (await h.status(event_id)).state is HandleState.CANCELLED
        assert await h.dead_letters() == [] and h.emitted("done") == []


async def test_a_plain_def_handler_sees_ctx_cancelled_and_its_emits_are_dropped(root: Path) -> None:
    async with Harness(root) as h:
        found = signals(h)
        event_id = await h.emit("sync", {})
        runner = asyncio.create_task(h.run_until_idle())
        await asyncio.to_thread(found["sync_started"].wait, 10)
        await h.cancel(event_id)
        await runner
        status = await h.status(event_id)
        assert (status.state, status.result) == (HandleState.CANCELLED, None)
        assert status.steps["Sync"].progress["fraction"] == 0.1
        assert h.emitted("done") == []


async def test_cancelling_a_finished_event_changes_nothing(root: Path) -> None:
    async with Harness(root) as h:
        event_id = await h.emit("job", {"n": 2})
        await h.run_until_idle()
        done = await h.cancel(event_id[:10])
        assert not done.changed and done.status.state is HandleState.SUCCEEDED
        assert done.status.result == {"total": 2}


async def test_wait_gives_up_after_its_timeout(root: Path) -> None:
    async with Harness(root) as h:
        found = signals(h)
        event_id = await h.emit("sync", {})
        with pytest.raises(WaitTimeoutError, match="still running"):
            await h.wait(event_id, timeout=0.3)
        found["release"].set()
        assert (await h.wait(event_id)).result == "finished"


async def test_handlers_look_up_and_cancel_other_events_through_ctx(make_project: ProjectFactory) -> None:
    root = make_project({"flows/f.toml": 'entry_topics = ["ask", "ask.sync", "later"]\n', "steps/ask.step.py": """
        config = {"type": "event", "name": "Ask", "subscribes": ["ask"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            status = await ctx.status(input["id"][:8])
            done = await ctx.cancel(input["id"])
            return {"state": status.state.value, "changed": done.changed, "cancelled": list(done.cancelled)}
    """, "steps/ask_sync.step.py": """
        config = {"type": "event", "name": "AskSync", "subscribes": ["ask.sync"], "emits": [], "flows": ["f"]}
        def handler(input, ctx):
            return ctx.status(input["id"]).state.value
    """, "steps/later.step.py": """
        config = {"type": "event", "name": "Later", "subscribes": ["later"], "emits": [], "flows": ["f"]}
        async def handler(input, ctx):
            pass
    """})
    async with Harness(root) as h:
        later = await h.emit("later", {}, delay=3600)
        asked = await h.wait(await h.emit("ask", {"id": later}))
        assert asked.result == {"state": "scheduled", "changed": True, "cancelled": ["Later"]}
        assert (await h.wait(await h.emit("ask.sync", {"id": later}))).result == "cancelled"
        assert h.runs_of("Later") == []
