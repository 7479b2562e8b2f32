"""Delivery through the in-process runtime, driven by the harness (memory backend, virtual clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from motia_py.config import BackoffSpec, BackoffType
from motia_py.errors import GraphError, UnknownTopicError
from motia_py.settle import retry_delay
from motia_py.testing import Harness

from .conftest import ProjectFactory

FLOW = 'description = "t"\nentry_topics = ["start"]\n'


def chain_project(make_project: ProjectFactory, extra: dict[str, str] | None = None) -> Path:
    files = {
        "flows/f.toml": FLOW,
        "steps/a.step.py": """
            from pydantic import BaseModel
            class In(BaseModel):
                n: int
            config = {"type": "event", "name": "A", "subscribes": ["start"], "emits": ["mid"], "input": In,
                      "flows": ["f"]}
            async def handler(input, ctx):
                await ctx.emit({"topic": "mid", "data": {"n": input.n + 1}})
        """,
        "steps/b.step.py": """
            config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                await ctx.state.set("seen", "b", {"n": input["n"], "trace": ctx.trace_id})
        """,
        "steps/c.step.py": """
            config = {"type": "event", "name": "C", "subscribes": ["mid"], "emits": [], "flows": ["f"]}
            def handler(input, ctx):
                ctx.state.set("seen", "c", {"n": input["n"], "trace": ctx.trace_id})
        """,
    }
    files.update(extra or {})
    return make_project(files)


async def test_every_subscriber_gets_the_event_and_the_trace_id_follows(make_project: ProjectFactory) -> None:
    root = chain_project(make_project)
    async with Harness(root) as h:
        trace = await h.emit("start", {"n": 1})
        await h.run_until_idle()
        seen = await h.state("f").items("seen")
        assert seen == {"b": {"n": 2, "trace": trace}, "c": {"n": 2, "trace": trace}}
        assert h.emitted("mid") == [{"n": 2}]
        assert {r.step for r in h.runs} == {"A", "B", "C"}
        assert all(r.outcome == "ok" for r in h.runs)


async def test_input_failing_its_model_goes_to_the_dlq_at_once(make_project: ProjectFactory) -> None:
    async with Harness(chain_project(make_project)) as h:
        await h.emit("start", {"n": "not a number"})
        await h.run_until_idle()
        [dead] = await h.dead_letters()
        assert dead.step == "A" and dead.attempts == 1
        assert dead.error.startswith("InputValidationError: n:")
        assert h.emitted("mid") == []


async def test_unknown_topic_from_outside_is_refused_with_a_hint(make_project: ProjectFactory) -> None:
    async with Harness(chain_project(make_project)) as h:
        with pytest.raises(UnknownTopicError, match="did you mean 'start'"):
            await h.emit("strat", {"n": 1})


async def test_an_undeclared_emit_raises_and_the_event_is_dead_lettered(make_project: ProjectFactory) -> None:
    root = chain_project(make_project, {"steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": ["done"], "flows": ["f"]}
        async def handler(input, ctx):
            await ctx.emit("dnoe", {})
    """, "flows/f.toml": FLOW + 'exit_topics = ["done"]\n'})
    async with Harness(root) as h:
        await h.emit("start", {"n": 1})
        await h.run_until_idle()
        [dead] = await h.dead_letters()
        assert dead.step == "B"
        assert "UndeclaredEmitError" in dead.error and "did you mean 'done'?" in dead.error


RETRY_STEP = """
    from motia_py import NonRetryableError
    config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": ["after"], "flows": ["f"],
              "infrastructure": {"queue": {"maxRetries": 3, "backoff": {"delay": 2, "jitter": False}}}}
    async def handler(input, ctx):
        await ctx.emit("after", {"attempt": ctx.attempt})
        if input["n"] == 99:
            raise NonRetryableError("bad job")
        if ctx.attempt < 3:
            raise RuntimeError(f"flaky {ctx.attempt}")
"""


async def test_a_failed_attempt_publishes_nothing_and_retries_follow_the_backoff(make_project: ProjectFactory) -> None:
    root = chain_project(make_project, {"steps/b.step.py": RETRY_STEP,
                                        "flows/f.toml": FLOW + 'exit_topics = ["after"]\n'})
    async with Harness(root) as h:
        t0 = h.clock.now
        await h.emit("start", {"n": 1})
        await h.run_until_idle()
        runs = h.runs_of("B")
        assert [r.attempt for r in runs] == [1, 2, 3]
        assert [r.outcome for r in runs] == ["retried", "retried", "ok"]
        assert [r.error for r in runs[:2]] == ["RuntimeError: flaky 1", "RuntimeError: flaky 2"]
        # outbox: only the successful attempt's emit was published
        assert h.emitted("after") == [{"attempt": 3}]
        # no jitter: 2 s after attempt 1, then 4 s after attempt 2, on the virtual clock
        assert runs[1].started_at - runs[0].started_at == pytest.approx(2.0, abs=0.01)
        assert runs[2].started_at - runs[1].started_at == pytest.approx(4.0, abs=0.01)
        assert h.clock.now - t0 == pytest.approx(6.0, abs=0.05)


async def test_non_retryable_error_goes_straight_to_the_dlq(make_project: ProjectFactory) -> None:
    root = chain_project(make_project, {"steps/b.step.py": RETRY_STEP,
                                        "flows/f.toml": FLOW + 'exit_topics = ["after"]\n'})
    async with Harness(root) as h:
        await h.emit("start", {"n": 98})  # A adds one: B sees 99
        await h.run_until_idle()
        [dead] = await h.dead_letters()
        assert (dead.step, dead.attempts, dead.error) == ("B", 1, "NonRetryableError: bad job")
        assert "Traceback" in dead.traceback and "bad job" in dead.traceback
        assert h.emitted("after") == []


async def test_exhausted_retries_dead_letter_after_max_retries_plus_one_attempts(make_project: ProjectFactory) -> None:
    root = chain_project(make_project, {"steps/b.step.py": """
        config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": [], "flows": ["f"],
                  "infrastructure": {"queue": {"maxRetries": 2}}}
        async def handler(input, ctx):
            raise ValueError("always")
    """})
    async with Harness(root) as h:
        await h.emit("start", {"n": 1})
        await h.run_until_idle()
        assert [r.attempt for r in h.runs_of("B")] == [1, 2, 3]
        [dead] = await h.dead_letters()
        assert dead.attempts == 3 and dead.error == "ValueError: always"


async def test_a_handler_past_its_timeout_is_cancelled_and_counts_as_a_failure(make_project: ProjectFactory) -> None:
    root = chain_project(make_project, {"steps/b.step.py": """
        import asyncio
        config = {"type": "event", "name": "B", "subscribes": ["mid"], "emits": [], "flows": ["f"],
                  "infrastructure": {"handler": {"timeout": 0.05}, "queue": {"maxRetries": 0}}}
        async def handler(input, ctx):
            await asyncio.Event().wait()  # never returns: only the timeout ends it
    """})
    async with Harness(root) as h:
        await h.emit("start", {"n": 1})
        await h.run_until_idle()
        [dead] = await h.dead_letters()
        assert dead.error == "HandlerTimeoutError: timed out after 0.05 s"
        assert h.runs_of("B")[0].outcome == "timeout-dead"


def test_retry_delay_is_exponential_capped_and_fully_jittered() -> None:
    spec = BackoffSpec(type=BackoffType.EXPONENTIAL, delay_s=1.0, max_delay_s=10.0, jitter=False)
    assert [retry_delay(spec, a) for a in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    jittered = BackoffSpec(delay_s=1.0, max_delay_s=300.0, jitter=True)
    assert retry_delay(jittered, 3, rand=lambda: 0.5) == 2.0
    assert retry_delay(jittered, 3, rand=lambda: 0.0) == 0.0
    assert retry_delay(BackoffSpec(type=BackoffType.FIXED, delay_s=3, jitter=False), 7) == 3


async def test_fifo_delivers_one_at_a_time_per_group_in_order(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["op"]\n',
        "steps/f.step.py": """
            import asyncio
            LOG = []
            config = {"type": "event", "name": "Fifo", "subscribes": ["op"], "emits": [], "flows": ["f"],
                      "infrastructure": {"queue": {"type": "fifo", "concurrency": 10}}}
            async def handler(input, ctx):
                LOG.append(("start", input["g"], input["i"]))
                await asyncio.sleep(0)  # let the other group's handler start before this one ends
                LOG.append(("end", input["g"], input["i"]))
                await ctx.state.set("log", str(len(LOG)), [input["g"], input["i"]])
        """,
    })
    async with Harness(root) as h:
        for i in range(5):
            for g in ("a", "b"):
                await h.emit("op", {"g": g, "i": i}, message_group_id=g)
        await h.run_until_idle()
        import sys

        log = next(m for n, m in sys.modules.items() if n.endswith("f_step")).LOG
        for g in ("a", "b"):
            mine = [(kind, i) for kind, gg, i in log if gg == g]
            assert mine == [(k, i) for i in range(5) for k in ("start", "end")]  # in order, never overlapping
        # groups ran in parallel: some 'b' started before every 'a' ended
        first_b = next(n for n, e in enumerate(log) if e[1] == "b")
        last_a_end = max(n for n, e in enumerate(log) if e[1] == "a")
        assert first_b < last_a_end


async def test_delay_on_emit_and_delay_seconds_on_the_step_hold_the_event_back(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/d.step.py": """
            config = {"type": "event", "name": "Delayed", "subscribes": ["go"], "emits": [], "flows": ["f"],
                      "infrastructure": {"queue": {"delaySeconds": 5}}}
            async def handler(input, ctx):
                pass
        """,
    })
    async with Harness(root) as h:
        t0 = h.clock.now
        await h.emit("go", {}, delay=10)
        await h.run_until_idle()
        [run] = h.runs_of("Delayed")
        assert run.started_at - t0 == pytest.approx(15.0, abs=0.01)


async def test_flows_have_their_own_state_unless_they_share_a_namespace(make_project: ProjectFactory) -> None:
    step = """
        config = {{"type": "event", "name": "{name}", "subscribes": ["go"], "emits": [], "flows": ["{flow}"]}}
        async def handler(input, ctx):
            await ctx.state.set("g", "k", "{name}")
    """
    root = make_project({
        "flows/one.toml": 'entry_topics = ["go"]\n',
        "flows/two.toml": 'state_namespace = "shared"\n',
        "steps/one.step.py": step.format(name="One", flow="one"),
        "steps/two.step.py": step.format(name="Two", flow="two"),
    })
    async with Harness(root) as h:
        await h.emit("go", {})
        await h.run_until_idle()
        assert await h.state("one").get("g", "k") == "One"
        assert await h.state("shared").get("g", "k") == "Two"
        assert await h.state("two").get("g", "k") is None


async def test_state_api_matches_motia(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/s.step.py": """
            config = {"type": "event", "name": "S", "subscribes": ["go"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                s = ctx.state
                assert await s.set("jobs", "a", {"v": 1}) == {"v": 1}
                await s.set("jobs", "b", {"v": 2})
                assert await s.get("jobs", "a") == {"v": 1}
                assert await s.get("jobs", "zz") is None
                group = await s.get_group("jobs")
                assert isinstance(group, list) and sorted(x["v"] for x in group) == [1, 2]
                assert await s.items("jobs") == {"a": {"v": 1}, "b": {"v": 2}}
                assert await s.delete("jobs", "a") == {"v": 1}
                assert await s.update("counts", "n", lambda n: (n or 0) + 5) == 5
                await s.set("tmp", "x", 1)
                await s.clear("tmp")
                assert await s.items("tmp") == {}
                await s.set("result", "ok", True)
        """,
    })
    async with Harness(root) as h:
        await h.emit("go", {})
        await h.run_until_idle()
        assert await h.dead_letters() == []
        assert await h.state("f").get("result", "ok") is True


async def test_concurrent_updates_never_lose_an_increment(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["inc"]\n',
        "steps/inc.step.py": """
            import asyncio
            config = {"type": "event", "name": "Inc", "subscribes": ["inc"], "emits": [], "flows": ["f"],
                      "infrastructure": {"queue": {"concurrency": 50}}}
            async def handler(input, ctx):
                def bump(n):
                    return (n or 0) + 1
                await asyncio.sleep(0)
                await ctx.state.update("c", "n", bump)
        """,
        "steps/sync_inc.step.py": """
            config = {"type": "event", "name": "SyncInc", "subscribes": ["inc"], "emits": [], "flows": ["f"],
                      "infrastructure": {"queue": {"concurrency": 8}}}
            def handler(input, ctx):
                ctx.state.update("c", "n", lambda n: (n or 0) + 1)
        """,
    })
    async with Harness(root) as h:
        for _ in range(100):
            await h.emit("inc", {})
        await h.run_until_idle()
        assert await h.state("f").get("c", "n") == 200


async def test_logger_lines_carry_trace_step_flow_topic_and_attempt(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/l.step.py": """
            config = {"type": "event", "name": "L", "subscribes": ["go"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                ctx.logger.info("hello", {"jobId": "j1"}, extra=2)
                ctx.logger.warn("careful")
        """,
    })
    async with Harness(root) as h:
        trace = await h.emit("go", {})
        await h.run_until_idle()
        hello = next(r for r in h.logs if r["msg"] == "hello")
        assert hello["trace_id"] == trace and hello["step"] == "L" and hello["flow"] == "f"
        assert hello["topic"] == "go" and hello["attempt"] == 1
        assert hello["jobId"] == "j1" and hello["extra"] == 2 and hello["level"] == "info"
        assert next(r for r in h.logs if r["msg"] == "careful")["level"] == "warning"


async def test_a_motia_0x_python_step_runs_unchanged(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/basic.toml": 'entry_topics = ["pet.created"]\nexit_topics = ["pet.processed"]\n',
        "steps/services/__init__.py": "",
        "steps/services/pet_store.py": """
            class PetStore:
                def describe(self, name):
                    return f"pet {name}"
            pet_store_service = PetStore()
        """,
        "steps/process_pet_step.py": """
            from pydantic import BaseModel
            from .services.pet_store import pet_store_service

            class PetInput(BaseModel):
                name: str
                tags: list[str] = []

            config = {
                "type": "event",
                "name": "ProcessPet",
                "description": "Processes a pet",
                "subscribes": ["pet.created"],
                "emits": [{"topic": "pet.processed", "label": "done"}],
                "input": PetInput.model_json_schema(),
                "flows": ["basic"],
                "includeFiles": ["../assets/*"],
                "infrastructure": {"handler": {"ram": 2048, "cpu": 1, "timeout": 10}},
            }

            async def handler(input_data, context):
                context.logger.warn("processing pet", {"name": input_data["name"]})
                pets = await context.state.get_group("pets")
                for pet in pets:
                    context.logger.info("known pet", pet)
                await context.state.set("pets", input_data["name"], {"name": input_data["name"]})
                await context.emit({"topic": "pet.processed",
                                    "data": {"description": pet_store_service.describe(input_data["name"])}})
        """,
    })
    async with Harness(root) as h:
        await h.emit("pet.created", {"name": "Rex"})
        await h.emit("pet.created", {"name": "Tom"})
        await h.run_until_idle()
        assert sorted(d["description"] for d in h.emitted("pet.processed")) == ["pet Rex", "pet Tom"]
        assert len(await h.state("basic").get_group("pets")) == 2


async def test_the_harness_refuses_a_project_with_errors_listing_each(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribe": ["x"]}
            async def handler(input, ctx): pass
        """,
        "steps/b.step.py": "def oops(:\n",
    })
    with pytest.raises(GraphError) as info:
        async with Harness(root):
            pass
    text = str(info.value)
    assert "did you mean 'subscribes'?" in text and "b.step.py:1" in text and "2 error(s)" in text


async def test_harness_runs_cron_steps_only_when_asked(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/c.step.py": """
            config = {"type": "cron", "name": "Tick", "cron": "* * * * * *", "emits": ["t"], "flows": ["f"]}
            async def handler(ctx):
                await ctx.emit("t", {"at": ctx.scheduled_at.isoformat()})
        """,
        "steps/t.step.py": """
            config = {"type": "event", "name": "T", "subscribes": ["t"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                await ctx.state.set("ticks", input["at"], True)
        """,
    })
    from datetime import UTC, datetime

    async with Harness(root) as h:
        await h.run_until_idle()
        assert h.emitted("t") == []
        when = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
        await h.run_cron("Tick", scheduled_at=when)
        assert h.emitted("t") == [{"at": "2026-01-01T12:00:05+00:00"}]
        assert await h.state("f").items("ticks") == {"2026-01-01T12:00:05+00:00": True}
