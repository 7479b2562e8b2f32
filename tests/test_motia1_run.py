"""Running Motia 1.0 handlers in the Harness: ``ctx.trigger``, conditions (skipped, not run, not failed),
``enqueue`` checked like ``emits``, the module-level helpers from ``def`` and ``async def`` code, and
``ctx.match``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from motia_py.errors import MotiaError
from motia_py.motia_compat import enqueue, stateManager
from motia_py.motia_compat.helpers import apply_ops
from motia_py.runs import Outcome
from motia_py.testing import Harness

from .conftest import ProjectFactory

RECORDER = """
    import threading
    from motia import FlowContext, cron, http, queue, stateManager

    def remember(kind, ctx):
        t = ctx.trigger
        stateManager.set("seen", f"{t.type}:{t.index}", {"topic": t.topic, "method": t.method, "path": t.path,
                                                        "expression": t.expression, "trace": ctx.trace_id,
                                                        "thread": threading.current_thread().name})

    config = {
        "name": "Multi",
        "flows": ["f"],
        "triggers": [queue("a"), queue("b"), http("POST", "/multi/:id"), cron("0 0 * * * *")],
        "enqueues": [],
    }

    def handler(input, ctx: FlowContext):
        remember(ctx.trigger.type, ctx)
        if ctx.is_api():
            return {"status": 200, "body": {"id": input.path_params["id"], "data": ctx.get_data()}}
"""


async def items(h: Harness, ns: str, group: str) -> dict[str, Any]:
    return await h.state(ns).items(group)


async def test_ctx_trigger_tells_which_trigger_fired(make_project: ProjectFactory) -> None:
    root = make_project({"steps/multi_step.py": RECORDER, "flows/f.toml": 'entry_topics = ["a", "b"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("a", {"n": 1})
        await h.emit("b", {"n": 2})
        status, body = await h.request("POST", "/multi/7", json={"x": 1})
        await h.run_cron("Multi")  # the step's own name stands for its one cron trigger
        await h.run_until_idle()
        seen = await items(h, "f", "seen")
    assert (status, body) == (200, {"id": "7", "data": {"x": 1}})
    assert {k: (v["topic"], v["method"], v["path"], v["expression"]) for k, v in seen.items()} == {
        "queue:0": ("a", None, None, None), "queue:1": ("b", None, None, None),
        "http:2": (None, "POST", "/multi/:id", None), "cron:3": (None, None, None, "0 0 * * * *")}
    assert all(v["thread"].startswith("motia-sync-handler") for v in seen.values())  # plain def: a thread
    assert {r.step for r in h.runs_of("Multi")} == {"Multi#queue1", "Multi#queue2", "Multi#http", "Multi#cron"}


CONDITIONS = """
    from motia import cron, queue, stateManager

    def big(input, ctx):
        return input["amount"] > 100

    async def later(input, ctx):
        return False

    def broken(input, ctx):
        raise ValueError("condition bug")

    config = {"name": "Cond", "flows": ["f"], "enqueues": [], "triggers": [
        queue("order", condition=big), queue("never", condition=later), queue("oops", condition=broken),
        cron("0 0 * * * *", condition=lambda input, ctx: input is None and ctx.is_cron())]}

    def handler(input, ctx):
        stateManager.set("ran", ctx.trigger.type + (ctx.trigger.topic or ""), input)
"""


async def test_a_false_condition_skips_the_run_and_a_raising_one_fails_it(make_project: ProjectFactory) -> None:
    root = make_project({"steps/cond_step.py": CONDITIONS,
                         "flows/f.toml": 'entry_topics = ["order", "never", "oops"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("order", {"amount": 5})
        await h.emit("order", {"amount": 500})
        await h.emit("never", {})
        await h.emit("oops", {})
        await h.run_cron("Cond")
        ran = await items(h, "f", "ran")
        dead = await h.dead_letters()
    outcomes = [(r.step, r.outcome) for r in h.runs]
    assert ran == {"queueorder": {"amount": 500}, "cron": None}
    assert outcomes.count(("Cond#queue1", Outcome.SKIPPED)) == 1 and ("Cond#queue2", Outcome.SKIPPED) in outcomes
    assert [d.step for d in dead] == ["Cond#queue3"] and "condition bug" in (dead[0].error or "")
    assert ("Cond#queue3", Outcome.RETRIED) in outcomes  # a condition that raises is a failed attempt


async def test_enqueue_is_checked_against_enqueues(make_project: ProjectFactory) -> None:
    root = make_project({
        "steps/a_step.py": """
            from motia import enqueue, queue
            config = {"name": "A", "flows": ["f"], "triggers": [queue("go")], "enqueues": ["order.created"]}
            def handler(input):
                enqueue({"topic": input["topic"], "data": {"ok": True}, "messageGroupId": "g"})
        """,
        "steps/b_step.py": """
            from motia import queue
            config = {"name": "B", "flows": ["f"], "triggers": [queue("order.created")], "enqueues": []}
            def handler(input): pass
        """,
        "flows/f.toml": 'entry_topics = ["go"]\n',
    })
    async with Harness(root, env={}) as h:
        await h.emit("go", {"topic": "order.created"})
        await h.emit("go", {"topic": "order.creatd"})
        await h.run_until_idle()
        dead = await h.dead_letters()
    assert h.emitted("order.created") == [{"ok": True}]
    assert [r.outcome for r in h.runs_of("B")] == [Outcome.OK]
    [letter] = dead
    assert letter.error == ("UndeclaredEmitError: step 'A' enqueued 'order.creatd', which is not in its enqueues "
                            "(order.created); did you mean 'order.created'?")


HELPERS = """
    import asyncio
    from motia import FlowContext, Stream, enqueue, http, logger, queue, stateManager

    config = {"name": "H", "flows": ["f"], "enqueues": [], "triggers": [queue("sync"), queue("async"),
              queue("lost"), http("GET", "/match")]}

    def plain(input):
        first = stateManager.set("g", "k", {"n": 1, "tags": ["a"]})
        updated = stateManager.update("g", "k", [{"type": "increment", "path": "n", "by": 2},
                                                 {"type": "merge", "value": {"x": True}},
                                                 {"type": "remove", "path": "tags"}])
        got = stateManager.get("g", "k")
        stateManager.set("g", "other", 1)
        listed = stateManager.list("g")
        groups = stateManager.list_groups()
        old = stateManager.delete("g", "other")
        logger.info("plain done", {"n": got["n"]})
        stateManager.set("results", "plain", {"first": first, "updated": updated, "got": got, "listed": listed,
                                              "groups": groups, "old": old})

    async def asynchronous(input, ctx):
        await stateManager.set("h", "a", 1)
        unawaited = stateManager.set("h", "b", 2)  # not awaited: still done before the run ends, in order
        value = await stateManager.get("h", "b")
        await ctx.state.set("results", "async", {"b": value, "awaitable": hasattr(unawaited, "__await__")})

    async def lost(input, ctx):
        stateManager.update("g", "a", [{"type": "shuffle"}])  # fails, never awaited: the run fails

    def handler(input, ctx: FlowContext):
        if ctx.is_queue() and ctx.trigger.topic == "sync":
            return plain(input)
        if ctx.is_queue() and ctx.trigger.topic == "async":
            return asynchronous(input, ctx)
        if ctx.is_queue():
            return lost(input, ctx)

        async def sub(request):
            value = await stateManager.get("results", "plain")
            return {"status": 200, "body": {"n": value["got"]["n"] if value else None}}

        return ctx.match({"default": sub})
"""


async def test_helpers_return_values_in_def_code_and_awaitables_in_async_code(make_project: ProjectFactory) -> None:
    root = make_project({"steps/h_step.py": HELPERS, "flows/f.toml": 'entry_topics = ["sync", "async", "lost"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("sync", {})
        await h.emit("async", {})
        await h.run_until_idle()
        results = await items(h, "f", "results")
        status, body = await h.request("GET", "/match")
        await h.emit("lost", {})
        await h.run_until_idle()
        dead = await h.dead_letters()
    plain = results["plain"]
    assert plain["first"] == {"old_value": None, "new_value": {"n": 1, "tags": ["a"]}}
    assert plain["updated"] == {"old_value": {"n": 1, "tags": ["a"]}, "new_value": {"n": 3, "x": True}}
    assert plain["got"] == {"n": 3, "x": True} and plain["old"] == 1
    assert plain["listed"] == [{"n": 3, "x": True}, 1] and "g" in plain["groups"]
    assert results["async"] == {"b": 2, "awaitable": True}
    assert (status, body) == (200, {"n": 3})
    assert any(r["msg"] == "plain done" and r["n"] == 3 and r["step"] == "H#queue1" for r in h.logs)
    assert [d.step for d in dead] == ["H#queue3"] and "unknown type 'shuffle'" in (dead[0].error or "")


MATCH = """
    from motia import FlowContext, http, queue, stateManager

    config = {"name": "M", "flows": ["f"], "enqueues": [], "triggers": [queue("q"), http("GET", "/m")]}

    async def handler(input, ctx: FlowContext):
        def on_queue(data):  # plain code picked by ctx.match in an async handler: it gets its own thread
            stateManager.set("m", "q", {"got": stateManager.get("m", "missing"), "data": data})

        async def on_http(request):
            return {"status": 200, "body": await stateManager.get("m", "q")}

        return await ctx.match({"queue": on_queue, "http": on_http})
"""


async def test_ctx_match_runs_plain_functions_in_a_thread_from_async_handlers(make_project: ProjectFactory) -> None:
    root = make_project({"steps/m_step.py": MATCH, "flows/f.toml": 'entry_topics = ["q"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("q", {"v": 1})
        await h.run_until_idle()
        assert await h.request("GET", "/m") == (200, {"got": None, "data": {"v": 1}})


async def test_input_schemas_validate_queue_messages(make_project: ProjectFactory) -> None:
    root = make_project({"steps/a_step.py": """
        from pydantic import BaseModel
        from motia import queue, stateManager

        class Order(BaseModel):
            id: str
            amount: float

        config = {"name": "A", "flows": ["f"], "triggers": [queue("order", input=Order)], "enqueues": []}

        def handler(order: Order):
            stateManager.set("orders", order.id, {"amount": order.amount, "model": type(order).__name__})
    """, "flows/f.toml": 'entry_topics = ["order"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("order", {"id": "o1", "amount": 3})
        await h.emit("order", {"id": "o2"})
        await h.run_until_idle()
        assert await items(h, "f", "orders") == {"o1": {"amount": 3.0, "model": "Order"}}
        [dead] = await h.dead_letters()
    assert dead.error is not None and "amount" in dead.error


@pytest.mark.parametrize("signature", ["handler()", "handler(input)", "handler(input, ctx)", "handler(*args)"])
async def test_handlers_take_none_one_or_two_arguments(make_project: ProjectFactory, signature: str) -> None:
    root = make_project({"steps/a_step.py": f"""
        from motia import queue, stateManager
        config = {{"name": "A", "flows": ["f"], "triggers": [queue("go")], "enqueues": []}}
        def {signature}:
            stateManager.set("calls", "n", {signature!r})
    """, "flows/f.toml": 'entry_topics = ["go"]\n'})
    async with Harness(root, env={}) as h:
        await h.emit("go", {})
        await h.run_until_idle()
        assert await items(h, "f", "calls") == {"n": signature}


def test_helpers_outside_a_handler_say_so() -> None:
    with pytest.raises(MotiaError, match=r"enqueue\(\) was called outside a step's handler"):
        enqueue({"topic": "t"})
    with pytest.raises(MotiaError, match=r"stateManager.get\(\) was called outside"):
        stateManager.get("g", "k")


@pytest.mark.parametrize(("value", "ops", "expected"), [
    (None, [{"type": "set", "path": "a", "value": 1}], {"a": 1}),
    ({"a": 1}, [{"type": "set", "path": "", "value": [1, 2]}], [1, 2]),
    ({"n": 1}, [{"type": "increment", "path": "n", "by": 4}, {"type": "decrement", "path": "m", "by": 2}],
     {"n": 5, "m": -2}),
    ({"a": 1, "b": 2}, [{"type": "remove", "path": "a"}, {"type": "merge", "value": {"c": 3}}], {"b": 2, "c": 3}),
    ({"n": "x"}, [{"type": "increment", "path": "n", "by": 1}], {"n": 1}),
])
def test_update_operations(value: Any, ops: list[dict[str, Any]], expected: Any) -> None:
    assert apply_ops(value, ops) == expected


def test_update_operations_refuse_what_they_cannot_apply() -> None:
    with pytest.raises(MotiaError, match="needs an object"):
        apply_ops([1], [{"type": "set", "path": "a", "value": 1}])
    with pytest.raises(MotiaError, match="did you mean 'merge'"):
        apply_ops({}, [{"type": "merg", "value": {}}])


def test_the_sample_project_is_in_the_1_0_format() -> None:
    steps = Path(__file__).parent / "motia1_app" / "steps"
    assert all("from motia import" in p.read_text() for p in steps.rglob("*_step.py"))


STATE_AND_STREAM = {
    "steps/write_step.py": """
        from motia import Stream, http, stateManager

        notes = Stream("notes")  # declared here: no stream file needed

        config = {"name": "Write", "flows": ["f"], "enqueues": [], "triggers": [http("POST", "/write")]}

        def handler(request):
            body = request.body
            if body["kind"] == "state":
                stateManager.set(body["group"], body["key"], body["value"])
            elif body["value"] is None:
                notes.delete("g", body["key"])
            else:
                notes.set("g", body["key"], body["value"])
            return {"status": 200, "body": {}}
    """,
    "steps/on_state_step.py": """
        from motia import StateTriggerInput, stateManager, state

        config = {"name": "OnState", "flows": ["f"], "enqueues": [],
                  "triggers": [state(condition=lambda input, ctx: input.group_id == "users")]}

        def handler(input: StateTriggerInput):
            stateManager.set("state-seen", input.item_id, {"old": input.old_value, "new": input.new_value,
                                                           "type": type(input).__name__})
    """,
    "steps/on_note_step.py": """
        from motia import StreamTriggerInput, stateManager, stream

        config = {"name": "OnNote", "flows": ["f"], "enqueues": [],
                  "triggers": [stream("notes", group_id="g", item_id="n1")]}

        def handler(input: StreamTriggerInput, ctx):
            seen = stateManager.get("stream-seen", "n1") or []
            stateManager.set("stream-seen", "n1", [*seen, [input.event.type, input.event.data, input.stream_name,
                                                          input.group_id, ctx.trigger.type]])
    """,
}


async def test_state_and_stream_triggers_run_on_changes(make_project: ProjectFactory) -> None:
    async with Harness(make_project(STATE_AND_STREAM), env={}) as h:
        for body in ({"kind": "state", "group": "users", "key": "u1", "value": {"status": "on"}},
                     {"kind": "state", "group": "users", "key": "u1", "value": {"status": "off"}},
                     {"kind": "state", "group": "other", "key": "x", "value": 1},
                     {"kind": "stream", "key": "n1", "value": {"text": "a"}},
                     {"kind": "stream", "key": "n2", "value": {"text": "b"}},
                     {"kind": "stream", "key": "n1", "value": {"text": "c"}},
                     {"kind": "stream", "key": "n1", "value": None}):
            assert (await h.request("POST", "/write", json=body))[0] == 200
            await h.run_until_idle()
        state_seen = await items(h, "f", "state-seen")
        stream_seen = await h.state("f").get("stream-seen", "n1")
    assert state_seen == {"u1": {"old": {"status": "on"}, "new": {"status": "off"}, "type": "StateTriggerInput"}}
    assert [r.outcome for r in h.runs_of("OnState")].count(Outcome.SKIPPED) >= 1  # 'other' and its own writes
    assert stream_seen == [["create", {"text": "a", "id": "n1"}, "notes", "g", "stream"],
                           ["update", {"text": "c", "id": "n1"}, "notes", "g", "stream"],
                           ["delete", {"text": "c", "id": "n1"}, "notes", "g", "stream"]]
    assert Outcome.SKIPPED in [r.outcome for r in h.runs_of("OnNote")]  # n2: another item


def test_a_stream_trigger_on_an_unknown_stream_is_an_error(make_project: ProjectFactory) -> None:
    from motia_py.discovery import discover
    from motia_py.graph import validate
    from motia_py.settings import load_settings

    root = make_project({**STATE_AND_STREAM, "steps/on_note_step.py": """
        from motia import stream
        config = {"name": "OnNote", "flows": ["f"], "enqueues": [], "triggers": [stream("note")]}
        def handler(input): pass
    """})
    [found] = [f for f in validate(discover(load_settings(root, env={}))) if f.code == "unknown-stream"]
    assert (found.step, found.field, found.hint) == ("OnNote", "triggers[0].streamName", "did you mean 'notes'?")


@pytest.mark.parametrize("scheme", ["memory", "sqlite", "redis"])
async def test_state_and_stream_triggers_on_every_backend(make_project: ProjectFactory, scheme: str) -> None:
    from motia_py.http import ApiApp
    from motia_py.runtime import Runtime, backend_for, load_project, require_valid
    from motia_py.settings import load_settings
    from motia_py.state import State

    from .backends.redis_support import check_reachable, delete_prefix, new_prefix, redis_url
    from .probes import until

    root = make_project(STATE_AND_STREAM)
    flags = {"backend_url": {"memory": "memory://", "sqlite": "sqlite:///.motia/motia.db"}.get(scheme, "")}
    if scheme == "redis":
        flags = {"backend_url": redis_url(), "redis_prefix": new_prefix()}
        check_reachable(flags["backend_url"])
    settings = load_settings(root, flags=flags, env={})
    project, findings = load_project(settings)
    require_valid(project, findings)
    try:
        async with Runtime(project, backend_for(settings), cron=False, poll_s=0.05) as rt:
            app = ApiApp(rt.router)
            for body in ({"kind": "state", "group": "users", "key": "u1", "value": {"status": "on"}},
                         {"kind": "stream", "key": "n1", "value": {"text": "a"}}):
                response = await app.handle("POST", "/write", headers={"content-type": "application/json"},
                                            raw_body=json.dumps(body).encode())
                assert response.status == 200
            state = State(rt.backend, "f")

            async def both_ran() -> bool:
                return (await state.get("state-seen", "u1") is not None
                        and await state.get("stream-seen", "n1") is not None)

            await until(both_ran, "the state and the stream trigger")
            assert await state.get("stream-seen", "n1") == [["create", {"text": "a", "id": "n1"}, "notes", "g",
                                                              "stream"]]
    finally:
        if scheme == "redis":
            await delete_prefix(flags["backend_url"], flags["redis_prefix"])
