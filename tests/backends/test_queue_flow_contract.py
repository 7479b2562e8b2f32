"""The queue store's contract for priorities and flow control (rate limits, global and keyed concurrency):
every backend passes it unchanged (see ``conftest.BACKENDS``). Two claims stand for two workers: the
limits are the backend's, shared by every claimer."""

from __future__ import annotations

import asyncio

from motia_py.backends.base import Backend, FlowControl, Outgoing, Target
from motia_py.testing import VirtualClock

from .helpers import LEASE_S, claim_one, data, envelope, set_identity
from .test_queue_contract import timed


async def send(backend: Backend, step: str, *items: tuple[object, int, str | None, str | None],
               delay_s: float = 0.0, fifo: bool = False, group_id: str | None = None) -> None:
    """Publish one event per ``(data, priority, rate_key, concurrency_key)``, one call each, in order."""
    for value, priority, rate_key, conc_key in items:
        env = envelope(data=value, group_id=group_id)
        await backend.publish([Outgoing(env, (Target(step, delay_s, fifo, priority, rate_key, conc_key),))])


def keyed(*pairs: tuple[object, str]) -> list[tuple[object, int, str | None, str | None]]:
    """Events with data and a concurrency key (priority 0, no rate key)."""
    return [(value, 0, None, key) for value, key in pairs]


def rated(*pairs: tuple[object, str | None]) -> list[tuple[object, int, str | None, str | None]]:
    """Events with data and a rate key (priority 0, no concurrency key)."""
    return [(value, 0, key, None) for value, key in pairs]


# -- priorities -----------------------------------------------------------------------------------
async def test_higher_priority_first_and_equal_priorities_in_publish_order(backend: Backend) -> None:
    await send(backend, "a", ("p0-a", 0, None, None), ("p0-b", 0, None, None), ("p5-a", 5, None, None),
               ("p5-b", 5, None, None), ("low", -1, None, None), ("p0-c", 0, None, None), ("p9", 9, None, None))

    first = await backend.claim("a", 2, LEASE_S)
    rest = await backend.claim("a", 10, LEASE_S)

    assert data(first) == ["p9", "p5-a"]
    assert data(rest) == ["p5-b", "p0-a", "p0-b", "p0-c", "low"]
    assert [d.priority for d in first] == [9, 5]


async def test_a_claimed_delivery_carries_its_priority_and_keys(backend: Backend) -> None:
    await send(backend, "a", ("x", 3, "r1", "c1"))
    d = await claim_one(backend, "a")
    assert (d.priority, d.rate_key, d.concurrency_key) == (3, "r1", "c1")


async def test_priority_is_kept_through_retry_and_hand_back(backend: Backend) -> None:
    await send(backend, "a", *[(i, 0, None, None) for i in range(3)], ("urgent", 7, None, None))
    d = await claim_one(backend, "a")
    assert data([d]) == ["urgent"]

    await backend.retry(d, 0)
    again = await claim_one(backend, "a")
    await backend.hand_back([again])

    assert data(await backend.claim("a", 2, LEASE_S)) == ["urgent", 0]


async def test_a_replayed_dead_letter_keeps_its_priority_and_keys(backend: Backend) -> None:
    await send(backend, "a", ("urgent", 7, "r", "c"))
    d = await claim_one(backend, "a")
    await backend.dead_letter(d, "boom", "")
    await send(backend, "a", ("normal", 0, None, None))

    assert await backend.dlq_replay(d.id)
    got = await backend.claim("a", 10, LEASE_S)

    assert data(got) == ["urgent", "normal"]
    assert (got[0].priority, got[0].rate_key, got[0].concurrency_key) == (7, "r", "c")


async def test_a_delayed_priority_delivery_goes_first_once_due(backend: Backend, clock: VirtualClock) -> None:
    await send(backend, "a", ("later", 5, None, None), delay_s=5)
    await send(backend, "a", ("now-1", 0, None, None), ("now-2", 0, None, None))
    assert data(await backend.claim("a", 1, LEASE_S)) == ["now-1"]
    clock.advance(5)
    assert data(await backend.claim("a", 10, LEASE_S)) == ["later", "now-2"]


async def test_fifo_groups_keep_their_order_whatever_the_priorities(backend: Backend) -> None:
    await send(backend, "a", ("g-first", 0, None, None), ("g-urgent", 9, None, None), fifo=True, group_id="g")
    await send(backend, "a", ("h-first", 5, None, None), fifo=True, group_id="h")

    heads = await backend.claim("a", 10, LEASE_S)
    assert data(heads) == ["h-first", "g-first"]  # the higher head first; g's urgent one waits its turn
    assert await backend.complete(heads[1])
    assert data(await backend.claim("a", 10, LEASE_S)) == ["g-urgent"]


# -- global concurrency ---------------------------------------------------------------------------
async def test_global_concurrency_caps_running_deliveries_across_claimers(backend: Backend) -> None:
    control = FlowControl(global_concurrency=2)
    await send(backend, "a", *[(i, 0, None, None) for i in range(5)])

    first = await backend.claim("a", 10, LEASE_S, control=control)
    set_identity(backend, "other-host:1")  # another worker
    assert await backend.claim("a", 10, LEASE_S, control=control) == []
    assert await backend.complete(first[0])
    second = await backend.claim("a", 10, LEASE_S, control=control)

    assert (data(first), data(second)) == ([0, 1], [2])
    assert all(d.limited for d in first + second) and all(d.attempt == 1 for d in first + second)
    stats = await backend.stats()
    assert (stats.ready, stats.leased, stats.dead) == (2, 2, 0)  # held back: neither failed nor retried


async def test_an_expired_lease_frees_its_slot(backend: Backend, clock: VirtualClock) -> None:
    control = FlowControl(global_concurrency=1)
    await send(backend, "a", ("held", 0, None, None), ("next", 0, None, None))
    held = await claim_one(backend, "a", lease_s=10)  # its worker is killed: it never completes
    assert await backend.claim("a", 10, 10, control=control) == []  # the step's one slot is taken

    clock.advance(10)
    again = await backend.claim("a", 10, 10, control=control)
    assert [(d.id, d.expired) for d in again] == [(held.id, True)]  # the freed slot: claimed alone
    assert await backend.claim("a", 10, 10, control=control) == []
    assert await backend.complete(again[0])
    assert data(await backend.claim("a", 10, 10, control=control)) == ["next"]


async def test_retry_and_dead_letter_free_the_slot(backend: Backend) -> None:
    control = FlowControl(global_concurrency=1)
    await send(backend, "a", *[(i, 0, None, None) for i in range(3)])
    d = await claim_one(backend, "a")
    await backend.retry(d, 60)
    d = (await backend.claim("a", 10, LEASE_S, control=control))[0]
    await backend.dead_letter(d, "boom", "")
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [2]


# -- concurrency keys -----------------------------------------------------------------------------
async def test_a_busy_key_waits_without_blocking_other_keys(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")))

    first = await backend.claim("a", 10, LEASE_S, control=control)
    assert data(first) == ["a1", "b1", "c1"]
    set_identity(backend, "other-host:1")
    assert await backend.claim("a", 10, LEASE_S, control=control) == []

    assert await backend.complete(first[0])
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a2"]


async def test_concurrency_limit_above_one_and_deliveries_without_a_key(backend: Backend) -> None:
    control = FlowControl(key_concurrency=2)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a"), ("a3", "a")), ("n1", 0, None, None),
               ("n2", 0, None, None), ("n3", 0, None, None))
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a1", "a2", "n1", "n2"]


async def test_key_and_global_concurrency_together(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1, global_concurrency=2)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")))
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a1", "b1"]


async def test_priorities_apply_within_the_limits(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1)
    await send(backend, "a", ("a-low", 0, None, "a"), ("b-low", 0, None, "b"), ("a-high", 5, None, "a"))
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a-high", "b-low"]


async def test_limits_apply_to_fifo_heads(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1)
    await send(backend, "a", ("g1", 0, None, "k"), ("g2", 0, None, "k"), fifo=True, group_id="g")
    await send(backend, "a", ("h1", 0, None, "k"), fifo=True, group_id="h")
    await send(backend, "a", ("i1", 0, None, "other"), fifo=True, group_id="i")

    first = await backend.claim("a", 10, LEASE_S, control=control)
    assert data(first) == ["g1", "i1"]  # h's head has g's key, which is busy
    assert await backend.complete(first[0])
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["g2"]


# -- rate limits ----------------------------------------------------------------------------------
async def test_rate_limit_allows_limit_starts_per_period(backend: Backend, clock: VirtualClock) -> None:
    control = FlowControl(rate_limit=3, rate_period_s=1.0)
    await send(backend, "a", *[(i, 0, None, None) for i in range(8)])

    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [0, 1, 2]
    set_identity(backend, "other-host:1")
    assert await backend.claim("a", 10, LEASE_S, control=control) == []
    clock.advance(0.5)
    assert await backend.claim("a", 10, LEASE_S, control=control) == []
    clock.advance(0.5)
    assert data(await backend.claim("a", 2, LEASE_S, control=control)) == [3, 4]
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [5]
    stats = await backend.stats()
    assert (stats.ready, stats.leased, stats.dead) == (2, 6, 0)


async def test_the_rate_window_slides(backend: Backend, clock: VirtualClock) -> None:
    control = FlowControl(rate_limit=2, rate_period_s=10.0)
    await send(backend, "a", *[(i, 0, None, None) for i in range(5)])
    assert data(await backend.claim("a", 1, LEASE_S, control=control)) == [0]  # t=0
    clock.advance(5)
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [1]  # t=5
    clock.advance(5)
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [2]  # t=10: the t=0 start left
    clock.advance(4)
    assert await backend.claim("a", 10, LEASE_S, control=control) == []  # t=14: 5 and 10 still in
    clock.advance(1)
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [3]


async def test_a_keyed_rate_limit_holds_back_one_key_only(backend: Backend, clock: VirtualClock) -> None:
    control = FlowControl(rate_limit=1, rate_period_s=10.0, rate_keyed=True)
    await send(backend, "a", *rated(("a1", "a"), ("a2", "a"), ("b1", "b"), ("n1", None), ("n2", None)))

    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a1", "b1", "n1"]
    assert await backend.claim("a", 10, LEASE_S, control=control) == []
    clock.advance(10)
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a2", "n2"]


async def test_an_expired_lease_is_claimed_past_the_rate_limit_and_counted(backend: Backend,
                                                                          clock: VirtualClock) -> None:
    control = FlowControl(rate_limit=1, rate_period_s=10.0)
    await send(backend, "a", ("crashed", 0, None, None), ("next", 0, None, None))
    first = await backend.claim("a", 10, 5, control=control)  # t=0
    clock.advance(6)
    again = await backend.claim("a", 10, 5, control=control)  # t=6: its worker died; not rate limited
    assert [(d.id, d.expired) for d in again] == [(first[0].id, True)]
    assert await backend.complete(again[0])
    clock.advance(9)
    assert await backend.claim("a", 10, 5, control=control) == []  # t=15: the t=6 start still counts
    clock.advance(1)
    assert data(await backend.claim("a", 10, 5, control=control)) == ["next"]


async def test_rate_and_concurrency_together(backend: Backend, clock: VirtualClock) -> None:
    control = FlowControl(rate_limit=2, rate_period_s=1.0, key_concurrency=1)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")))
    first = await backend.claim("a", 10, LEASE_S, control=control)
    assert data(first) == ["a1", "b1"]
    clock.advance(1)
    assert await backend.complete(first[0])
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a2", "c1"]


async def test_an_empty_control_limits_nothing(backend: Backend) -> None:
    await send(backend, "a", *[(i, 0, None, "k") for i in range(3)])
    got = await backend.claim("a", 10, LEASE_S, control=FlowControl())
    assert data(got) == [0, 1, 2] and not any(d.limited for d in got)


# -- what is held back, and why -------------------------------------------------------------------
async def test_step_stats_counts_the_deliveries_held_back_per_limit(backend: Backend) -> None:
    keys = FlowControl(key_concurrency=1)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")))
    await backend.claim("a", 1, LEASE_S, control=keys)
    await send(backend, "g", *[(i, 0, None, None) for i in range(3)])
    everything = FlowControl(global_concurrency=1)
    await backend.claim("g", 1, LEASE_S, control=everything)

    stats = await backend.step_stats({"a": keys, "g": everything})

    assert (stats["a"].ready, stats["a"].throttled) == (3, {"concurrencyKey": 2})  # b1 could start now
    assert (stats["g"].ready, stats["g"].throttled) == (2, {"globalConcurrency": 2})
    assert (await backend.step_stats())["a"].throttled == {}


async def test_step_stats_counts_deliveries_waiting_for_the_rate(backend: Backend) -> None:
    control = FlowControl(rate_limit=1, rate_period_s=60.0, rate_keyed=True)
    await send(backend, "a", *rated(("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")))
    await backend.claim("a", 1, LEASE_S, control=control)
    assert (await backend.step_stats({"a": control}))["a"].throttled == {"rateLimit": 2}


# -- wait (real time, bounded) --------------------------------------------------------------------
async def test_wait_does_not_return_at_once_while_every_ready_delivery_is_held_back(backend: Backend) -> None:
    control = FlowControl(rate_limit=1, rate_period_s=600.0)
    await send(backend, "a", (0, 0, None, None), (1, 0, None, None))
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [0]
    assert 0.25 <= await timed(backend.wait("a", 0.3, control=control)) < 2.0


async def test_wait_returns_when_the_rate_window_opens(backend: Backend) -> None:
    control = FlowControl(rate_limit=1, rate_period_s=0.3)  # the fake clock stands still: 0.3 s of real time
    await send(backend, "a", (0, 0, None, None), (1, 0, None, None))
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == [0]
    assert await timed(backend.wait("a", 10.0, control=control)) < 2.0


async def test_wait_returns_at_once_when_a_held_back_key_has_a_free_neighbour(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a")))
    await backend.claim("a", 1, LEASE_S, control=control)
    await send(backend, "a", *keyed(("b1", "b")))
    assert await timed(backend.wait("a", 5.0, control=control)) < 1.0


async def test_wait_returns_promptly_when_a_limited_delivery_ends(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1)
    await send(backend, "a", *keyed(("a1", "a"), ("a2", "a")))
    [d] = await backend.claim("a", 10, LEASE_S, control=control)
    waiter = asyncio.ensure_future(timed(backend.wait("a", 10.0, control=control)))
    await asyncio.sleep(0)  # let wait() start
    assert await backend.complete(d)
    assert await asyncio.wait_for(waiter, 5.0) < 2.0
    assert data(await backend.claim("a", 10, LEASE_S, control=control)) == ["a2"]


async def test_keys_are_compared_as_text_whatever_they_contain(backend: Backend) -> None:
    control = FlowControl(key_concurrency=1, rate_limit=5, rate_period_s=60.0, rate_keyed=True)
    odd = ["a|b", "a:b", "{a}", "%7C", "", "a%b", "é"]
    await send(backend, "a", *[(k, 0, k, k) for k in odd], *[(k + "-2", 0, k, k) for k in odd])
    got = await backend.claim("a", 20, LEASE_S, control=control)
    assert data(got) == odd
    assert [(d.rate_key, d.concurrency_key) for d in got] == [(k, k) for k in odd]
