"""The job-handle store's contract (status per subscriber, results, progress, keys, cancellation, the
scheduled list, retention): every backend passes it unchanged (see ``conftest.BACKENDS``), and so does
the store derived from a state store (``state-on-*``, below)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from msgspec.structs import replace

from motia_py.backends.base import (
    Backend,
    Delivery,
    HandleState,
    HandleStore,
    Outgoing,
    StateRead,
    StateWrite,
    StepHandle,
    Target,
)
from motia_py.backends.compose import ComposedBackend
from motia_py.testing import VirtualClock

from .conftest import BACKENDS, DERIVED_ON, _params, opened
from .helpers import LEASE_S, claim_one, envelope, to


@pytest.fixture(params=_params([*BACKENDS, *(f"state-on-{name}" for name in DERIVED_ON)]))
async def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Backend]:
    """Each backend with its own handle store, and the handle store derived from the state store of the
    memory and SQLite backends (``state-on-*``, wrapping their queues)."""
    name: str = request.param
    async with opened(name.removeprefix("state-on-"), tmp_path, clock) as b:
        # a backend without its own handle store gets the derived one, as the registry does
        derived = name.startswith("state-on-") or not isinstance(b, HandleStore)
        yield ComposedBackend(b, b, b, handles=None, clock=clock) if derived else b


Q, S, RUN, RETRY = HandleState.QUEUED, HandleState.SCHEDULED, HandleState.RUNNING, HandleState.RETRYING
OK, DEAD, CANCELLED = HandleState.SUCCEEDED, HandleState.DEAD, HandleState.CANCELLED


async def states(backend: Backend, event_id: str) -> dict[str, HandleState]:
    handle = await backend.handle_get(event_id)
    assert handle is not None, f"no handle for {event_id}"
    return {s.step: s.state for s in handle.steps}


async def step_of(backend: Backend, event_id: str, step: str) -> StepHandle:
    handle = await backend.handle_get(event_id)
    assert handle is not None
    return next(s for s in handle.steps if s.step == step)


async def runnable(backend: Backend, step: str) -> list[Delivery]:
    """Claim what a worker would run: deliveries of cancelled events are settled as cancelled, unrun, and
    the worker claims again (a backend may hand them out flagged instead of dropping them)."""
    out: list[Delivery] = []
    while True:
        got = await backend.claim(step, 100, LEASE_S)
        flagged = [d for d in got if d.cancelled]
        for d in flagged:
            assert await backend.cancel_settle(d)
        out += [d for d in got if not d.cancelled]
        if not flagged:
            return out


def keyed(topic: str, key: str, ttl_s: float = 60.0, *steps: str) -> Outgoing:
    return replace(to(envelope(topic), *(steps or ("a",))), key=key, key_ttl_s=ttl_s)


# -- status through a delivery's life -----------------------------------------------------------------
async def test_every_event_of_a_batch_has_its_handle(backend: Backend) -> None:
    envs = [envelope(f"t{i % 2}") for i in range(6)]
    await backend.publish([to(e, *(("a", "b") if i % 2 else ("a",))) for i, e in enumerate(envs)])
    for i, e in enumerate(envs):
        handle = await backend.handle_get(e.id)
        assert handle is not None and handle.topic == e.topic
        assert {s.step: s.state for s in handle.steps} == ({"a": Q, "b": Q} if i % 2 else {"a": Q})


async def test_unknown_event_has_no_handle(backend: Backend) -> None:
    assert await backend.handle_get("0" * 32) is None
    assert await backend.handle_cancel("0" * 32) is None
    assert await backend.handle_find("000000", 10) == []


async def test_status_follows_each_subscriber_from_queued_to_succeeded(backend: Backend, clock: VirtualClock
                                                                          ) -> None:
    env = envelope("t", {"x": 1})
    await backend.publish([Outgoing(env, (Target("a"), Target("b", delay_s=10)))])
    handle = await backend.handle_get(env.id)
    assert handle is not None
    assert (handle.event_id, handle.topic, handle.trace_id, handle.emitted_at) == (env.id, "t", env.trace_id, 1.5)
    assert await states(backend, env.id) == {"a": Q, "b": S}
    assert (await step_of(backend, env.id, "b")).due_at == clock.now + 10

    d = await claim_one(backend, "a")
    clock.advance(2)
    running = await step_of(backend, env.id, "a")
    assert (running.state, running.attempts, running.started_at, running.delivery_id) == (RUN, 1, clock.now - 2, d.id)

    assert await backend.complete_with_result(d, [], '{"sum": 3}')
    done = await step_of(backend, env.id, "a")
    assert (done.state, done.attempts, done.result_json, done.finished_at) == (OK, 1, '{"sum": 3}', clock.now)
    assert (done.started_at, done.delivery_id) == (clock.now - 2, d.id)
    after = await backend.handle_get(env.id)
    assert after is not None and not after.finished  # b is still scheduled

    clock.advance(10)
    assert await states(backend, env.id) == {"a": OK, "b": Q}
    assert await backend.complete(await claim_one(backend, "b"))
    final = await backend.handle_get(env.id)
    assert final is not None and final.finished
    assert [(s.step, s.state, s.result_json) for s in final.steps] == [("a", OK, '{"sum": 3}'), ("b", OK, None)]


async def test_a_failed_attempt_is_retrying_with_its_error_then_dead(backend: Backend, clock: VirtualClock) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    d1 = await claim_one(backend, "a")
    await backend.retry_with_error(d1, 5, "ValueError: nope")

    retrying = await step_of(backend, env.id, "a")
    assert (retrying.state, retrying.attempts, retrying.error) == (RETRY, 1, "ValueError: nope")
    clock.advance(5)
    d2 = await claim_one(backend, "a")
    assert (await step_of(backend, env.id, "a")).state is RUN
    await backend.dead_letter(d2, "ValueError: again", "Traceback...")

    dead = await step_of(backend, env.id, "a")
    assert (dead.state, dead.attempts, dead.error, dead.finished_at) == (DEAD, 2, "ValueError: again", clock.now)
    assert await backend.dlq_replay(d2.id)
    assert (await step_of(backend, env.id, "a")).state is Q  # live again
    d3 = await claim_one(backend, "a")
    assert await backend.complete(d3)
    assert (await step_of(backend, env.id, "a")).state is OK


async def test_a_lost_lease_records_nothing(backend: Backend, clock: VirtualClock) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(11)
    new = await claim_one(backend, "a", lease_s=10)

    assert await backend.complete_with_result(old, [], '"late"') is False
    assert await backend.cancel_settle(old) is False
    step = await step_of(backend, env.id, "a")
    assert (step.state, step.attempts, step.result_json) == (RUN, 2, None)
    assert await backend.complete_with_result(new, [], '"on time"')
    assert (await step_of(backend, env.id, "a")).result_json == '"on time"'


async def test_progress_is_the_latest_and_stays_after_the_end(backend: Backend) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    d = await claim_one(backend, "a")
    await backend.handle_progress(d, '{"fraction":0.25}')
    await backend.handle_progress(d, '{"fraction":0.5,"message":"half"}')
    assert (await step_of(backend, env.id, "a")).progress_json == '{"fraction":0.5,"message":"half"}'
    assert await backend.complete(d)
    done = await step_of(backend, env.id, "a")
    assert (done.state, done.progress_json) == (OK, '{"fraction":0.5,"message":"half"}')


async def test_handles_are_found_by_prefix(backend: Backend) -> None:
    envs = [envelope() for _ in range(3)]
    await backend.publish([to(e, "a") for e in envs])
    d = await claim_one(backend, "a")
    assert await backend.complete(d)  # finished and live ones alike

    for e in envs:
        assert await backend.handle_find(e.id[:8], 10) == [e.id]
    assert await backend.handle_find(envs[0].id, 10) == [envs[0].id]
    assert await backend.handle_find("zzzzzz", 10) == []
    common = next(envs[0].id[:n] for n in range(32, -1, -1) if all(e.id.startswith(envs[0].id[:n]) for e in envs))
    assert set(await backend.handle_find(common, 10)) >= {e.id for e in envs}


# -- idempotency keys ---------------------------------------------------------------------------------
async def test_a_key_publishes_once_per_topic_within_its_window(backend: Backend, clock: VirtualClock) -> None:
    first, again, other_topic = keyed("t", "order-42"), keyed("t", "order-42"), keyed("u", "order-42")

    assert await backend.publish_deduped([first]) == [first.envelope.id]
    assert await backend.publish_deduped([again, other_topic]) == [first.envelope.id, other_topic.envelope.id]
    claimed = await backend.claim("a", 10, LEASE_S)
    assert [d.envelope.id for d in claimed] == [first.envelope.id, other_topic.envelope.id]
    assert await backend.handle_get(again.envelope.id) is None
    for d in claimed:
        assert await backend.complete(d)

    clock.advance(61)  # past the window: the key is free again
    later = keyed("t", "order-42")
    assert await backend.publish_deduped([later]) == [later.envelope.id]
    assert [d.envelope.id for d in await backend.claim("a", 10, LEASE_S)] == [later.envelope.id]


async def test_unkeyed_items_and_plain_publish_honour_keys(backend: Backend) -> None:
    plain = to(envelope(), "a")
    first = keyed("t", "k")
    assert await backend.publish_deduped([plain, first]) == [plain.envelope.id, first.envelope.id]
    await backend.publish([keyed("t", "k")])  # publish() honours keys too
    assert len(await backend.claim("a", 10, LEASE_S)) == 2


async def test_keys_in_an_outbox_are_checked_when_it_is_published(backend: Backend) -> None:
    await backend.publish_deduped([keyed("t", "k", 60, "a")])
    await backend.publish([to(envelope(), "b")])
    d = await claim_one(backend, "b")
    assert await backend.complete(d, [keyed("t", "k", 60, "c"), keyed("t", "fresh", 60, "c")])
    assert len(await backend.claim("c", 10, LEASE_S)) == 1


async def test_concurrent_publishers_of_one_key_make_one_event(backend: Backend) -> None:
    items = [keyed("t", "same") for _ in range(20)]
    ids = await asyncio.gather(*(backend.publish_deduped([i]) for i in items))
    assert len({i[0] for i in ids}) == 1
    assert len(await backend.claim("a", 100, LEASE_S)) == 1


# -- cancellation -------------------------------------------------------------------------------------
async def test_cancelled_queued_and_scheduled_deliveries_never_run(backend: Backend, clock: VirtualClock) -> None:
    env = envelope()
    other = envelope()
    await backend.publish([Outgoing(env, (Target("a"), Target("b", delay_s=30))), to(other, "a")])

    result = await backend.handle_cancel(env.id)

    assert result is not None and result.changed
    assert (result.cancelled, result.requested) == (("a", "b"), ())
    assert await states(backend, env.id) == {"a": CANCELLED, "b": CANCELLED}
    assert [d.envelope.id for d in await runnable(backend, "a")] == [other.id]
    clock.advance(31)
    assert await runnable(backend, "b") == []
    assert await states(backend, env.id) == {"a": CANCELLED, "b": CANCELLED}
    assert await backend.scheduled_list(None, 10) == []


async def test_a_running_delivery_is_asked_to_stop_and_settled_cancelled(backend: Backend, clock: VirtualClock
                                                                         ) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    d = await claim_one(backend, "a")
    assert await backend.cancel_requests([d]) == set()

    result = await backend.handle_cancel(env.id)

    assert result is not None and (result.cancelled, result.requested) == ((), ("a",))
    step = await step_of(backend, env.id, "a")
    assert (step.state, step.cancel_requested) == (RUN, True)
    assert await backend.cancel_requests([d]) == {d.id}
    assert await backend.cancel_settle(d)
    done = await step_of(backend, env.id, "a")
    assert (done.state, done.attempts) == (CANCELLED, 1)
    assert await backend.dlq_list() == [] and (await backend.stats()).idle


async def test_a_cancelled_event_is_not_retried_nor_run_after_its_worker_died(backend: Backend,
                                                                                clock: VirtualClock) -> None:
    failing, dying = envelope(), envelope()
    await backend.publish([to(failing, "a"), to(dying, "a")])
    d1, _ = await backend.claim("a", 2, 10)
    await backend.handle_cancel(failing.id)
    await backend.handle_cancel(dying.id)

    await backend.retry_with_error(d1, 0, "ValueError: boom")  # the handler failed before it heard
    clock.advance(11)  # d2's worker died
    assert await runnable(backend, "a") == []
    assert await states(backend, failing.id) == {"a": CANCELLED}
    assert await states(backend, dying.id) == {"a": CANCELLED}


async def test_cancelling_a_finished_event_changes_nothing(backend: Backend) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    assert await backend.complete_with_result(await claim_one(backend, "a"), [], "1")

    result = await backend.handle_cancel(env.id)

    assert result is not None and not result.changed
    assert [(s.state, s.result_json) for s in result.handle.steps] == [(OK, "1")]


async def test_cancelling_a_fifo_head_frees_its_group(backend: Backend) -> None:
    first, second = envelope(group_id="g"), envelope(group_id="g")
    await backend.publish([to(first, "a", fifo=True), to(second, "a", fifo=True)])
    await backend.handle_cancel(first.id)
    assert [d.envelope.id for d in await runnable(backend, "a")] == [second.id]


# -- the scheduled list -------------------------------------------------------------------------------
async def test_scheduled_list_shows_future_first_attempts_earliest_first(backend: Backend, clock: VirtualClock
                                                                           ) -> None:
    later, sooner, now_env, other = envelope("t"), envelope("t"), envelope("t"), envelope("u")
    await backend.publish([to(later, "a", delay_s=60), to(sooner, "a", "b", delay_s=30), to(now_env, "a"),
                           to(other, "a", delay_s=45)])
    retried = envelope("t")
    await backend.publish([to(retried, "c")])
    await backend.retry_with_error(await claim_one(backend, "c"), 100, "boom")  # a retry is not scheduled

    got = await backend.scheduled_list(None, 10)
    assert [(s.event_id, s.step, s.due_at) for s in got] == [
        (sooner.id, "a", clock.now + 30), (sooner.id, "b", clock.now + 30), (other.id, "a", clock.now + 45),
        (later.id, "a", clock.now + 60)]
    assert [s.event_id for s in await backend.scheduled_list("u", 10)] == [other.id]
    assert len(await backend.scheduled_list(None, 2)) == 2
    clock.advance(50)
    assert [s.event_id for s in await backend.scheduled_list(None, 10)] == [later.id]


# -- retention ------------------------------------------------------------------------------------------
async def test_pruning_drops_old_and_surplus_finished_handles_and_keeps_live_ones(
        backend: Backend, clock: VirtualClock) -> None:
    envs = [envelope() for _ in range(4)]
    await backend.publish([to(e, "a") for e in envs])
    for _ in range(3):
        assert await backend.complete(await claim_one(backend, "a"))
        clock.advance(10)
    # envs[0..2] finished at +0, +10, +20; envs[3] is still queued
    assert await backend.handles_prune(before=clock.now - 25, keep=10) == 1
    assert await backend.handle_get(envs[0].id) is None
    assert await backend.handles_prune(before=0.0, keep=1) == 1
    assert await backend.handle_get(envs[1].id) is None
    assert await backend.handle_get(envs[2].id) is not None
    assert await backend.handles_prune(before=clock.now + 1, keep=0) == 1
    assert [h is None for h in [await backend.handle_get(e.id) for e in envs[2:]]] == [True, False]


async def test_results_and_progress_come_back_byte_for_byte(backend: Backend) -> None:
    env = envelope()
    await backend.publish([to(env, "a")])
    d = await claim_one(backend, "a")
    text = json.dumps({"é": [1.5, None, "x\ny"], "big": 10**20}, ensure_ascii=False)
    await backend.handle_progress(d, text)
    assert await backend.complete_with_result(d, [], text)
    step = await step_of(backend, env.id, "a")
    assert (step.result_json, step.progress_json) == (text, text)


async def test_keys_and_cancellations_hold_for_prioritised_and_limited_deliveries(backend: Backend) -> None:
    from motia_py.backends.base import FlowControl

    first = replace(Outgoing(envelope("t"), (Target("a", priority=5), Target("b"))), key="k", key_ttl_s=60)
    again = replace(Outgoing(envelope("t"), (Target("a", priority=5), Target("b"))), key="k", key_ttl_s=60)
    assert await backend.publish_deduped([first, again]) == [first.envelope.id, first.envelope.id]
    doomed = envelope("t")
    await backend.publish([Outgoing(doomed, (Target("a", priority=9),))])
    await backend.handle_cancel(doomed.id)

    assert [d.envelope.id for d in await runnable(backend, "a")] == [first.envelope.id]
    # PostgreSQL does not enforce flow control yet (see test_queue_flow_contract.FLOW_BACKENDS)
    control = None if "Postgres" in type(backend).__name__ else FlowControl(global_concurrency=5)
    assert [d.envelope.id for d in await backend.claim("b", 10, LEASE_S, control=control)] == [first.envelope.id]
    assert await states(backend, doomed.id) == {"a": CANCELLED}


# -- transactional commits ------------------------------------------------------------------------------
async def test_a_transactional_commit_records_its_result_and_takes_its_outbox_keys(backend: Backend) -> None:
    plain, env = envelope("t"), envelope("t")
    await backend.publish([to(plain, "a"), to(env, "a")])
    assert await backend.complete_tx(await claim_one(backend, "a"), [], [], []) == "ok"
    assert await states(backend, plain.id) == {"a": OK}
    d = await claim_one(backend, "a")
    first = keyed("u", "k")
    write = StateWrite("ns", "g", "k", "1")
    assert await backend.complete_tx_with_result(d, [first, keyed("u", "k")], [write], [], '{"r": 1}') == "ok"
    step = await step_of(backend, env.id, "a")
    assert (step.state, step.result_json) == (OK, '{"r": 1}')
    assert await states(backend, first.envelope.id) == {"a": Q}
    assert await backend.publish_deduped([keyed("u", "k")]) == [first.envelope.id]
    assert [d.envelope.id for d in await runnable(backend, "a")] == [first.envelope.id]


async def test_a_commit_that_does_not_happen_records_nothing_and_takes_no_key(backend: Backend,
                                                                               clock: VirtualClock) -> None:
    await backend.state_set("ns", "g", "k", "1")
    env = envelope("t")
    await backend.publish([to(env, "a")])
    d = await claim_one(backend, "a", lease_s=1.0)
    changed = [StateRead("ns", "g", "k", "2")]
    assert await backend.complete_tx_with_result(d, [keyed("u", "k")], [], changed, "1") == "conflict"
    assert await states(backend, env.id) == {"a": RUN}
    clock.advance(2.0)
    again = await claim_one(backend, "a")
    assert await backend.complete_tx_with_result(d, [keyed("u", "k")], [], [], "1") == "lost"
    assert await states(backend, env.id) == {"a": RUN}
    other = keyed("u", "k")
    assert await backend.publish_deduped([other]) == [other.envelope.id]
    assert await backend.complete_tx_with_result(again, [], [], [], None) == "ok"
    assert await step_of(backend, env.id, "a") == replace(await step_of(backend, env.id, "a"), state=OK,
                                                          result_json=None, attempts=2)
