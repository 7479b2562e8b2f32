"""The queue store's contract (deliveries and dead letters): every backend passes it unchanged
(see ``conftest.BACKENDS``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from motia_py.backends.base import Backend, Outgoing, StepQueueStats, Target, worker_identity
from motia_py.testing import VirtualClock

from .helpers import LEASE_S, claim_one, data, envelope, publish, seen, set_identity, to


# -- publish, claim, complete -------------------------------------------------------------------
async def test_published_event_is_claimed_then_completed(backend: Backend, clock: VirtualClock) -> None:
    env = envelope(data={"x": [1, "two"]}, group_id="g")
    await backend.publish([to(env, "a")])

    [d] = await backend.claim("a", 10, LEASE_S)

    assert (d.step, d.envelope, d.attempt, d.first_delivered_at) == ("a", env, 1, clock.now)
    assert d.envelope.data == {"x": [1, "two"]}
    assert await backend.complete(d) is True
    assert await backend.claim("a", 10, LEASE_S) == []
    assert (await backend.stats()).idle


async def test_claim_of_unknown_step_or_zero_limit_is_empty(backend: Backend) -> None:
    await publish(backend, "a")
    assert await backend.claim("nobody", 10, LEASE_S) == []
    assert await backend.claim("a", 0, LEASE_S) == []
    assert len(await backend.claim("a", 1, LEASE_S)) == 1


async def test_fan_out_gives_every_target_its_own_delivery(backend: Backend) -> None:
    env = envelope(data="hello")
    await backend.publish([to(env, "a", "b", "c")])

    got = {s: await backend.claim(s, 10, LEASE_S) for s in ("a", "b", "c")}

    assert {s: [d.envelope for d in ds] for s, ds in got.items()} == {"a": [env], "b": [env], "c": [env]}
    assert len({ds[0].id for ds in got.values()}) == 3
    assert await backend.complete(got["a"][0])
    stats = await backend.stats()
    assert (stats.ready, stats.leased, stats.per_step.get("a", 0)) == (0, 2, 0)  # b and c still run theirs


async def test_claim_respects_limit_oldest_first(backend: Backend) -> None:
    await publish(backend, "a", 5)

    first = await backend.claim("a", 2, LEASE_S)
    rest = await backend.claim("a", 10, LEASE_S)

    assert data(first) == [0, 1]
    assert data(rest) == [2, 3, 4]


async def test_one_publish_call_keeps_its_items_in_order(backend: Backend) -> None:
    envs = [envelope(data=i) for i in range(4)]
    await backend.publish([to(e, "a") for e in envs])
    assert data(await backend.claim("a", 10, LEASE_S)) == [0, 1, 2, 3]


async def test_one_publish_call_of_many_topics_keeps_each_steps_order(backend: Backend) -> None:
    # runs of events with the same subscribers (a, then a+b, then a, then c), and events with no subscriber
    envs = [envelope(data=i) for i in range(9)]
    steps = [("a",), ("a",), ("a", "b"), ("a", "b"), (), ("a",), ("c",), ("c",), ("a", "b")]
    await backend.publish([to(e, *ss) for e, ss in zip(envs, steps, strict=True)])
    got = {s: data(await backend.claim(s, 20, LEASE_S)) for s in ("a", "b", "c")}
    assert got == {"a": [0, 1, 2, 3, 5, 8], "b": [2, 3, 8], "c": [6, 7]}
    assert (await backend.stats()).leased == 11


async def test_a_batch_with_a_delayed_item_keeps_the_order_of_the_rest(backend: Backend, clock: VirtualClock
                                                                        ) -> None:
    envs = [envelope(data=i) for i in range(4)]
    await backend.publish([to(envs[0], "a"), to(envs[1], "a", delay_s=5), to(envs[2], "a"), to(envs[3], "a")])
    assert data(await backend.claim("a", 10, LEASE_S)) == [0, 2, 3]
    clock.advance(5)
    assert data(await backend.claim("a", 10, LEASE_S)) == [1]


async def test_leased_delivery_is_not_claimed_twice(backend: Backend) -> None:
    await publish(backend, "a", 2)
    first = await backend.claim("a", 1, LEASE_S)
    second = await backend.claim("a", 10, LEASE_S)
    assert data(first) == [0]
    assert data(second) == [1]
    assert await backend.claim("a", 10, LEASE_S) == []


async def test_expired_lease_is_delivered_again_and_old_attempt_loses(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(9.9)
    assert await backend.claim("a", 10, 10) == []

    clock.advance(0.2)
    new = await claim_one(backend, "a", lease_s=10)

    assert (new.id, new.attempt, new.first_delivered_at) == (old.id, 2, old.first_delivered_at)
    assert await backend.complete(old) is False
    assert await backend.complete(new) is True
    assert (await backend.stats()).idle


async def test_lost_lease_makes_retry_and_dead_letter_no_ops(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(11)
    new = await claim_one(backend, "a", lease_s=10)

    await backend.retry(old, 0)
    await backend.dead_letter(old, "late", "")

    assert await backend.dlq_list() == []
    assert await backend.claim("a", 10, 10) == []  # still leased by the new attempt
    assert await backend.complete(new)


async def test_retry_delivers_again_after_delay(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    d1 = await claim_one(backend, "a")

    await backend.retry(d1, 5)

    assert await backend.claim("a", 10, LEASE_S) == []
    stats = await backend.stats()
    assert (stats.delayed, stats.leased, stats.next_due_at) == (1, 0, clock.now + 5)
    clock.advance(5)
    d2 = await claim_one(backend, "a")
    assert (d2.id, d2.attempt, d2.first_delivered_at) == (d1.id, 2, d1.first_delivered_at)
    assert await backend.complete(d1) is False
    assert await backend.complete(d2) is True


async def test_retry_without_delay_is_claimable_at_once(backend: Backend) -> None:
    await publish(backend, "a")
    d1 = await claim_one(backend, "a")
    await backend.retry(d1, 0)
    assert (await claim_one(backend, "a")).attempt == 2


async def test_target_delay_holds_delivery_until_due(backend: Backend, clock: VirtualClock) -> None:
    env = envelope()
    await backend.publish([Outgoing(env, (Target("a", delay_s=10), Target("b")))])

    assert await backend.claim("a", 10, LEASE_S) == []
    assert len(await backend.claim("b", 10, LEASE_S)) == 1
    clock.advance(9.99)
    assert await backend.claim("a", 10, LEASE_S) == []
    clock.advance(0.01)
    assert [d.envelope for d in await backend.claim("a", 10, LEASE_S)] == [env]


async def test_delayed_delivery_queues_behind_earlier_due_ones(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", delay_s=5)  # data 0, due at +5
    clock.advance(1)
    await backend.publish([to(envelope(data="now"), "a")])  # due at +1
    clock.advance(5)
    assert data(await backend.claim("a", 10, LEASE_S)) == ["now", 0]


# -- expired leases and hand-backs ---------------------------------------------------------------
async def test_expired_leases_are_claimed_alone_oldest_first(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 3)
    set_identity(backend, "host-a:1")
    assert len(await backend.claim("a", 3, 10)) == 3  # one batch: one lease expiry for the three
    await backend.publish([to(envelope(data="newer"), "a")])
    set_identity(backend, "host-b:2")
    clock.advance(10)

    batches = [await backend.claim("a", 10, 10) for _ in range(4)]

    assert [seen(b) for b in batches] == [[(0, 2, True, "host-a:1")], [(1, 2, True, "host-a:1")],
                                          [(2, 2, True, "host-a:1")], [("newer", 1, False, None)]]


async def test_the_last_owner_is_the_worker_whose_lease_expired(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    first = await claim_one(backend, "a", lease_s=10)
    assert (first.expired, first.last_owner) == (False, None)
    clock.advance(10)
    set_identity(backend, "other-host:42")
    second = await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    third = await claim_one(backend, "a", lease_s=10)

    assert seen([second, third]) == [(0, 2, True, worker_identity()), (0, 3, True, "other-host:42")]
    assert third.first_delivered_at == first.first_delivered_at
    assert await backend.complete(second) is False
    assert await backend.complete(third) is True


async def test_an_expired_fifo_head_is_claimed_alone(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    head = await claim_one(backend, "a", lease_s=10)
    clock.advance(1)
    await backend.publish([to(envelope(data="standard"), "a")])
    await claim_one(backend, "a", lease_s=10)
    clock.advance(10)  # both leases expired, the head's first

    assert seen(await backend.claim("a", 10, 10)) == [(0, 2, True, worker_identity())]
    assert seen(await backend.claim("a", 10, 10)) == [("standard", 2, True, worker_identity())]
    assert await backend.claim("a", 10, 10) == []  # the group waits for its head
    assert (await backend.stats()).leased == 2
    assert head.envelope.group_id == "g"


async def test_hand_back_does_not_count_the_attempt_and_is_due_at_once(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2)
    claimed = await backend.claim("a", 2, LEASE_S)

    await backend.hand_back(claimed)

    stats = await backend.stats()
    assert (stats.ready, stats.delayed, stats.leased) == (2, 0, 0)
    assert await backend.complete(claimed[0]) is False  # no longer leased
    clock.advance(1)
    again = await backend.claim("a", 10, LEASE_S)
    assert [(d.id, d.attempt, d.expired) for d in again] == [(d.id, 1, False) for d in claimed]
    assert [d.first_delivered_at for d in again] == [clock.now, clock.now]  # the claim handed back was no start


async def test_hand_back_of_a_retried_delivery_keeps_its_first_delivery(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    d1 = await claim_one(backend, "a")
    await backend.retry(d1, 0)
    clock.advance(1)
    d2 = await claim_one(backend, "a")

    await backend.hand_back([d2])

    d3 = await claim_one(backend, "a")
    assert (d3.attempt, d3.first_delivered_at) == (2, d1.first_delivered_at)
    assert await backend.complete(d3) is True


async def test_hand_back_of_a_lost_lease_does_nothing(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    new = await claim_one(backend, "a", lease_s=10)

    await backend.hand_back([old])

    assert await backend.claim("a", 10, 10) == []
    assert (await backend.stats()).leased == 1
    assert await backend.complete(new) is True


async def test_hand_back_of_an_expired_claim_keeps_it_alone_and_expired(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2)
    set_identity(backend, "crashed:1")
    await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    set_identity(backend, "shutting-down:2")
    expired = await claim_one(backend, "a", lease_s=10)

    await backend.hand_back([expired])

    assert seen(await backend.claim("a", 10, 10)) == [(0, 2, True, "crashed:1")]
    assert seen(await backend.claim("a", 10, 10)) == [(1, 1, False, None)]


async def test_hand_back_of_a_fifo_head_keeps_it_the_head(backend: Backend) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    head = await claim_one(backend, "a")

    await backend.hand_back([head])

    again = await backend.claim("a", 10, LEASE_S)
    assert [(d.id, d.attempt) for d in again] == [(head.id, 1)]
    assert await backend.complete(again[0])
    assert data(await backend.claim("a", 10, LEASE_S)) == [1]


# -- dead letters -------------------------------------------------------------------------------
async def test_dead_letter_keeps_the_failure(backend: Backend, clock: VirtualClock) -> None:
    env = envelope(topic="job.run", data={"job": 7})
    await backend.publish([to(env, "a")])
    d1 = await claim_one(backend, "a")
    first_at = clock.now
    await backend.retry(d1, 1)
    clock.advance(2)
    d2 = await claim_one(backend, "a")

    await backend.dead_letter(d2, "ValueError: boom", "Traceback (most recent call last): ...")

    assert await backend.claim("a", 10, LEASE_S) == []
    [dead] = await backend.dlq_list()
    assert (dead.id, dead.step, dead.envelope, dead.attempts) == (d2.id, "a", env, 2)
    assert (dead.error, dead.traceback) == ("ValueError: boom", "Traceback (most recent call last): ...")
    assert (dead.failed_at, dead.first_attempt_at) == (clock.now, first_at)
    assert dead.to_json()["topic"] == "job.run"
    assert dead.to_json()["data"] == {"job": 7}
    assert await backend.dlq_get(dead.id) == dead
    assert await backend.dlq_get("no-such-id") is None
    stats = await backend.stats()
    assert (stats.dead, stats.idle) == (1, True)
    assert await backend.complete(d2) is False


async def test_dead_letter_records_the_attempts_given(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    d = await claim_one(backend, "a", lease_s=10)  # attempt 2: its lease expired once

    await backend.dead_letter(d, "the worker died during 3 attempts", "", attempts=3)

    [dead] = await backend.dlq_list()
    assert (dead.id, dead.attempts, dead.first_attempt_at) == (d.id, 3, d.first_delivered_at)


async def test_dead_letters_are_listed_newest_first(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 3)
    for d in await backend.claim("a", 3, LEASE_S):
        clock.advance(1)
        await backend.dead_letter(d, f"error {d.envelope.data}", "")

    assert [d.error for d in await backend.dlq_list()] == ["error 2", "error 1", "error 0"]
    assert [d.error for d in await backend.dlq_list(limit=2)] == ["error 2", "error 1"]


async def test_replay_puts_dead_letter_back_with_fresh_attempts(backend: Backend) -> None:
    env = envelope(data="again")
    await backend.publish([to(env, "a")])
    d = await claim_one(backend, "a")
    await backend.retry(d, 0)
    d = await claim_one(backend, "a")
    await backend.dead_letter(d, "x", "tb")

    assert await backend.dlq_replay(d.id) is True

    assert await backend.dlq_list() == []
    assert await backend.dlq_replay(d.id) is False
    again = await claim_one(backend, "a")
    assert (again.envelope, again.attempt) == (env, 1)
    assert await backend.complete(again)


async def test_purge_deletes_one_dead_letter(backend: Backend) -> None:
    await publish(backend, "a", 2)
    ds = await backend.claim("a", 2, LEASE_S)
    for d in ds:
        await backend.dead_letter(d, "x", "")

    assert await backend.dlq_purge(ds[0].id) is True
    assert await backend.dlq_purge(ds[0].id) is False
    assert [d.id for d in await backend.dlq_list()] == [ds[1].id]
    assert (await backend.stats()).dead == 1


# -- outbox -------------------------------------------------------------------------------------
async def test_complete_publishes_the_outbox(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    e1, e2 = envelope(data="b and c"), envelope(data="later")

    assert await backend.complete(d, [to(e1, "b", "c"), to(e2, "b", delay_s=5)])

    assert [x.envelope for x in await backend.claim("b", 10, LEASE_S)] == [e1]
    assert [x.envelope for x in await backend.claim("c", 10, LEASE_S)] == [e1]
    clock.advance(5)
    assert [x.envelope for x in await backend.claim("b", 10, LEASE_S)] == [e2]


async def test_a_second_complete_of_one_attempt_loses(backend: Backend) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    assert await backend.complete(d, [to(envelope(data=1), "b")]) is True
    assert await backend.complete(d, [to(envelope(data=2), "b")]) is False
    assert data(await backend.claim("b", 10, LEASE_S)) == [1]


async def test_complete_with_lost_lease_publishes_nothing(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(11)
    await claim_one(backend, "a", lease_s=10)

    assert await backend.complete(old, [to(envelope(), "b")]) is False
    assert await backend.claim("b", 10, LEASE_S) == []


async def test_retry_moves_the_delivery_back_without_copying_it(backend: Backend) -> None:
    # retry has no outbox to publish (its signature takes none); what it must not do is leave the attempt
    # leased, copy the delivery, or reset its attempt count
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    await backend.retry(d, 0)
    stats = await backend.stats()
    assert (stats.ready, stats.delayed, stats.leased, stats.per_step) == (1, 0, 0, {"a": 1})
    [again] = await backend.claim("a", 10, LEASE_S)
    assert (again.id, again.attempt) == (d.id, 2)


# -- leases -------------------------------------------------------------------------------------
async def test_extend_keeps_the_lease_past_its_first_expiry(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a", lease_s=10)
    clock.advance(8)
    await backend.extend([d], 10)
    clock.advance(8)  # 16 s after the claim

    assert await backend.claim("a", 10, 10) == []
    assert (await backend.stats()).next_due_at == clock.now + 2
    assert await backend.complete(d) is True


async def test_extend_ignores_a_lost_attempt(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    new = await claim_one(backend, "a", lease_s=10)
    clock.advance(5)
    await backend.extend([old], 100)
    clock.advance(5)
    assert (await claim_one(backend, "a", lease_s=10)).attempt == 3
    assert await backend.complete(new) is False


# -- stats --------------------------------------------------------------------------------------
async def test_stats_counts_every_state(backend: Backend, clock: VirtualClock) -> None:
    assert (await backend.stats()).idle
    await publish(backend, "a", 3)
    await publish(backend, "a", 1, delay_s=10)
    await publish(backend, "b", 1)
    [_, d2] = await backend.claim("a", 2, LEASE_S)
    await backend.dead_letter(d2, "x", "")

    stats = await backend.stats()

    assert (stats.ready, stats.delayed, stats.leased, stats.dead) == (2, 1, 1, 1)
    assert stats.next_due_at == clock.now + 10
    assert (stats.per_step["a"], stats.per_step["b"]) == (3, 1)
    assert not stats.idle
    clock.advance(10)
    stats = await backend.stats()
    assert (stats.ready, stats.delayed, stats.next_due_at) == (3, 0, clock.now + LEASE_S - 10)


async def test_stats_counts_a_fifo_group_behind_its_delayed_head(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 3, fifo=True, group_id="g")
    head = await claim_one(backend, "a")
    await backend.retry(head, 5)
    stats = await backend.stats()
    assert (stats.ready, stats.delayed, stats.leased, stats.next_due_at) == (2, 1, 0, clock.now + 5)


async def test_step_stats_counts_each_step(backend: Backend, clock: VirtualClock) -> None:
    t0 = clock.now
    await publish(backend, "a", 3)
    await publish(backend, "f", 2, fifo=True, group_id="g")
    clock.advance(1)
    await publish(backend, "a", 1, delay_s=10)
    await publish(backend, "b", 1)
    await publish(backend, "c", 1)
    [_, dead] = await backend.claim("a", 2, LEASE_S)
    await backend.dead_letter(dead, "x", "")
    await backend.dead_letter(await claim_one(backend, "c"), "x", "")
    await claim_one(backend, "f")  # the group's head; the event behind it counts by its own due time

    assert await backend.step_stats() == {
        "a": StepQueueStats(ready=1, delayed=1, leased=1, dead=1, oldest_ready_at=t0),
        "b": StepQueueStats(ready=1, oldest_ready_at=t0 + 1),
        "c": StepQueueStats(dead=1),
        "f": StepQueueStats(ready=1, leased=1, oldest_ready_at=t0),
    }
    clock.advance(10)
    assert (await backend.step_stats())["a"] == StepQueueStats(ready=2, leased=1, dead=1, oldest_ready_at=t0)
    [first] = await backend.claim("a", 1, LEASE_S)
    await backend.retry(first, 5)  # the oldest ready one goes back with a delay
    step = (await backend.step_stats())["a"]
    assert (step.ready, step.delayed, step.leased, step.oldest_ready_at) == (1, 1, 1, t0 + 11)
    totals = await backend.stats()
    every = (await backend.step_stats()).values()
    assert (totals.ready, totals.delayed, totals.leased, totals.dead) == (
        sum(s.ready for s in every), sum(s.delayed for s in every), sum(s.leased for s in every),
        sum(s.dead for s in every))


# -- wait (real time, bounded: these tests measure how long wait() takes) -------------------------
async def timed(aw: Awaitable[None]) -> float:
    start = time.monotonic()
    await aw
    return time.monotonic() - start


async def test_wait_returns_promptly_after_a_publish_for_its_step(backend: Backend) -> None:
    waiter = asyncio.ensure_future(timed(backend.wait("a", 5.0)))
    await asyncio.sleep(0)  # let wait() start
    await publish(backend, "a")
    assert await asyncio.wait_for(waiter, 2.0) < 1.0


async def test_wait_times_out_without_a_publish_for_its_step(backend: Backend) -> None:
    waiter = asyncio.ensure_future(timed(backend.wait("a", 0.2)))
    await asyncio.sleep(0)
    await publish(backend, "b")
    assert 0.15 <= await asyncio.wait_for(waiter, 2.0) < 1.0


async def test_wait_returns_when_a_delayed_delivery_falls_due(backend: Backend) -> None:
    await publish(backend, "a", delay_s=0.1)  # the fake clock stands still: due in 0.1 s of real time
    assert await backend.claim("a", 1, LEASE_S) == []
    assert await timed(backend.wait("a", 5.0)) < 1.0


async def test_wait_returns_at_once_when_a_delivery_is_already_due(backend: Backend) -> None:
    await publish(backend, "a")
    assert await timed(backend.wait("a", 1.0)) < 0.5
