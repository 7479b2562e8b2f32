"""``ctx``: emit (both call forms, undeclared topics, the outbox), the trace id, where a call runs, the logger."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from motia_py.testing import Harness

from .conftest import ProjectFactory
from .probes import inject, wait

FLOW = 'entry_topics = ["start"]\nexit_topics = ["by.dict", "by.args", "later", "from.def", "done"]\n'


async def test_emit_accepts_a_motia_dict_or_topic_and_data(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": FLOW,
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f"],
                      "emits": ["by.dict", "by.args", "later"]}
            async def handler(input, ctx):
                await ctx.emit({"topic": "by.dict", "data": {"form": "dict"}})
                await ctx.emit("by.args", {"form": "args"})
                await ctx.emit({"topic": "later", "data": {"form": "delayed"}, "delay": 30})
        """,
        "steps/d.step.py": """
            config = {"type": "event", "name": "Plain", "subscribes": ["by.dict"], "flows": ["f"],
                      "emits": ["from.def"]}
            def handler(input, ctx):
                ctx.emit("from.def", {"seen": input["form"]})  # a plain def handler need not await
        """,
        "steps/l.step.py": """
            config = {"type": "event", "name": "Later", "subscribes": ["later"], "flows": ["f"], "emits": []}
            async def handler(input, ctx):
                pass
        """,
    })
    async with Harness(root) as h:
        await h.emit("start", {})
        await h.run_until_idle()
        assert h.emitted("by.dict") == [{"form": "dict"}]
        assert h.emitted("by.args") == [{"form": "args"}]
        assert h.emitted("from.def") == [{"seen": "dict"}]
        [a], [later] = h.runs_of("A"), h.runs_of("Later")
        assert later.started_at - a.started_at >= 30  # held back by its delay (on the harness's clock)


async def test_an_undeclared_emit_raises_at_the_call_with_a_hint(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": FLOW,
        "steps/a.step.py": """
            from motia_py import UndeclaredEmitError
            config = {"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f"], "emits": ["done"]}
            async def handler(input, ctx):
                for topic in ("dnoe", "something.else"):
                    try:
                        await ctx.emit(topic, {})
                    except UndeclaredEmitError as exc:
                        await ctx.state.set("errors", topic, str(exc))
                await ctx.emit("done", {})
        """,
    })
    async with Harness(root) as h:
        await h.emit("start", {})
        await h.run_until_idle()
        errors = await h.state("f").items("errors")
        assert h.emitted("dnoe") == h.emitted("something.else") == []
        assert h.emitted("done") == [{}]  # the handler went on after catching it
    near, far = errors["dnoe"], errors["something.else"]
    assert "'A'" in near and "'dnoe'" in near and "did you mean 'done'?" in near
    assert "'something.else'" in far and "did you mean" not in far and "done" in far  # lists what is declared


async def test_emits_are_published_only_when_the_handler_returns(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": FLOW.replace('"done"', '"x"'),
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f"], "emits": ["mid"]}
            async def handler(input, ctx):
                await ctx.emit("mid", {"n": 1})
                emitted.set()
                await gate.wait()
        """,
        "steps/b.step.py": """
            config = {"type": "event", "name": "B", "subscribes": ["mid"], "flows": ["f"], "emits": []}
            async def handler(input, ctx):
                await ctx.state.set("b", "ran", True)
        """,
    })
    async with Harness(root) as h:
        emitted, gate = asyncio.Event(), asyncio.Event()
        inject(h.project, "A", emitted=emitted, gate=gate)
        await h.emit("start", {})
        await wait(emitted, "A to call emit")
        assert h.emitted("mid") == []  # held in the outbox while A runs
        gate.set()
        await h.run_until_idle()
        assert h.emitted("mid") == [{"n": 1}]
        assert await h.state("f").get("b", "ran") is True


async def test_a_failed_attempt_publishes_nothing_and_its_retry_publishes_once(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": FLOW,
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f"], "emits": ["mid"],
                      "infrastructure": {"queue": {"maxRetries": 2, "backoff": {"delay": 1, "jitter": False}}}}
            async def handler(input, ctx):
                await ctx.emit("mid", {"attempt": ctx.attempt})
                if ctx.attempt < 3:
                    raise RuntimeError("not yet")
        """,
        "steps/b.step.py": """
            config = {"type": "event", "name": "B", "subscribes": ["mid"], "flows": ["f"], "emits": []}
            async def handler(input, ctx):
                await ctx.state.update("b", "runs", lambda runs: (runs or []) + [input["attempt"]])
        """,
        "steps/dead.step.py": """
            config = {"type": "event", "name": "Dead", "subscribes": ["start"], "flows": ["f"], "emits": ["mid"],
                      "infrastructure": {"queue": {"maxRetries": 0}}}
            async def handler(input, ctx):
                await ctx.emit("mid", {"attempt": "dead"})
                raise RuntimeError("never")
        """,
    })
    async with Harness(root) as h:
        await h.emit("start", {})
        await h.run_until_idle()
        assert [r.outcome for r in h.runs_of("A")] == ["retried", "retried", "ok"]
        assert h.emitted("mid") == [{"attempt": 3}]
        assert await h.state("f").get("b", "runs") == [3]  # downstream ran once, for the attempt that succeeded
        [dead] = await h.dead_letters()
        assert dead.step == "Dead"


async def test_the_trace_id_follows_every_event_downstream(make_project: ProjectFactory) -> None:
    hop = """
        config = {{"type": "event", "name": "{name}", "subscribes": ["{sub}"], "flows": ["f"], "emits": [{emits}]}}
        async def handler(input, ctx):
            await ctx.state.set("traces", input["run"] + ":{name}", ctx.trace_id)
            {emit}
    """
    root = make_project({
        "flows/f.toml": 'entry_topics = ["start"]\n',
        "steps/a.step.py": hop.format(name="A", sub="start", emits='"one"', emit='await ctx.emit("one", input)'),
        "steps/b.step.py": hop.format(name="B", sub="one", emits='"two"', emit='await ctx.emit("two", input)'),
        "steps/c.step.py": hop.format(name="C", sub="two", emits="", emit="pass"),
    })
    async with Harness(root) as h:
        first = await h.emit("start", {"run": "r1"})
        second = await h.emit("start", {"run": "r2"})
        joined = await h.emit("start", {"run": "r3"}, trace_id="from-the-caller")
        await h.run_until_idle()
        traces = await h.state("f").items("traces")
    # an emit from outside starts a trace whose id is the event's id; one given a trace id joins that trace
    assert first != second and joined not in (first, second, "from-the-caller")
    for run, trace in (("r1", first), ("r2", second), ("r3", "from-the-caller")):
        assert [traces[f"{run}:{step}"] for step in "ABC"] == [trace] * 3


async def test_ctx_says_where_and_how_the_call_runs(make_project: ProjectFactory) -> None:
    record = """
        await ctx.state.set("calls", f"{ctx.step}:{ctx.attempt}",
                            {"topic": ctx.topic, "flows": ctx.flows, "attempt": ctx.attempt})
    """.strip()
    root = make_project({
        "flows/f.toml": 'entry_topics = ["start"]\n',
        "steps/a.step.py": f"""
            config = {{"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f", "g"], "emits": [],
                      "infrastructure": {{"queue": {{"backoff": {{"delay": 1, "jitter": False}}}}}}}}
            async def handler(input, ctx):
                {record}
                if ctx.attempt == 1:
                    raise RuntimeError("once")
        """,
        "steps/c.step.py": f"""
            config = {{"type": "cron", "name": "Tick", "cron": "0 * * * *", "flows": ["f"], "emits": []}}
            async def handler(ctx):
                {record}
                await ctx.state.set("calls", "Tick:at", ctx.scheduled_at.isoformat())
        """,
    })
    async with Harness(root) as h:
        await h.emit("start", {})
        await h.run_until_idle()
        await h.run_cron("Tick", scheduled_at=datetime(2026, 1, 1, 12, tzinfo=UTC))
        calls = await h.state("f").items("calls")
    assert calls == {
        "A:1": {"topic": "start", "flows": ["f", "g"], "attempt": 1},
        "A:2": {"topic": "start", "flows": ["f", "g"], "attempt": 2},
        "Tick:1": {"topic": None, "flows": ["f"], "attempt": 1},
        "Tick:at": "2026-01-01T12:00:00+00:00",
    }


async def test_log_lines_carry_where_they_ran_and_land_in_the_run_record(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["start"]\n',
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["start"], "flows": ["f"], "emits": [],
                      "infrastructure": {"queue": {"backoff": {"delay": 1, "jitter": False}}}}
            async def handler(input, ctx):
                ctx.logger.info("charging", {"amount": 5}, currency="EUR")
                ctx.logger.debug("details", attempt_note=ctx.attempt)
                if ctx.attempt == 1:
                    ctx.logger.error("card declined")
                    raise RuntimeError("declined")
                ctx.logger.warn("charged late")
        """,
    })
    async with Harness(root) as h:
        trace = await h.emit("start", {})
        await h.run_until_idle()
        assert h.runtime.recorder is not None
        await h.runtime.recorder.flush()
        stored = [json.loads(r) for r in await h.backend.traces_get(trace)]
    handler_lines = {"charging", "details", "card declined", "charged late"}
    mine = [r for r in h.logs if r["msg"] in handler_lines]
    assert [(r["msg"], r["level"], r["attempt"]) for r in mine] == [
        ("charging", "info", 1), ("details", "debug", 1), ("card declined", "error", 1),
        ("charging", "info", 2), ("details", "debug", 2), ("charged late", "warning", 2)]
    for line in mine:
        assert (line["trace_id"], line["flow"], line["topic"]) == (trace, "f", "start")
    assert mine[0]["amount"] == 5 and mine[0]["currency"] == "EUR"
    # each run's record keeps the lines that run wrote, with their own fields
    by_attempt = {r["attempt"]: r for r in stored}
    assert [line["msg"] for line in by_attempt[1]["logs"]] == ["charging", "details", "card declined"]
    assert [line["msg"] for line in by_attempt[2]["logs"]] == ["charging", "details", "charged late"]
    charging = by_attempt[1]["logs"][0]
    assert charging["amount"] == 5 and charging["currency"] == "EUR" and charging["level"] == "info"


async def test_a_log_field_named_like_a_reserved_one_is_kept_beside_it(make_project: ProjectFactory) -> None:
    root = make_project({
        "flows/f.toml": 'entry_topics = ["go"]\n',
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["go"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                ctx.logger.info("charged", attempt=99, step="billing", amount=5)
        """})
    async with Harness(root) as h:
        await h.emit("go", {})
        await h.run_until_idle()
        [line] = [r for r in h.logs if r.get("msg") == "charged"]
    assert (line["attempt"], line["step"]) == (1, "A")  # motia-py's own fields are intact
    assert (line["user_attempt"], line["user_step"], line["amount"]) == (99, "billing", 5)
