"""The queue store's contract for FIFO message groups: every backend passes it unchanged (see
``conftest.BACKENDS``)."""

from __future__ import annotations

from motia_py.backends.base import Backend
from motia_py.testing import VirtualClock

from .helpers import LEASE_S, claim_one, data, envelope, publish, seen, set_identity, to


async def test_fifo_group_delivers_one_at_a_time_in_order(backend: Backend) -> None:
    await publish(backend, "a", 3, fifo=True, group_id="g")
    seen = []
    for _ in range(3):
        [d] = await backend.claim("a", 10, LEASE_S)
        assert await backend.claim("a", 10, LEASE_S) == []  # the group is busy
        seen.append(d.envelope.data)
        assert await backend.complete(d)
    assert seen == [0, 1, 2]
    assert (await backend.stats()).idle


async def test_fifo_groups_run_in_parallel(backend: Backend) -> None:
    for i in range(4):
        await backend.publish([to(envelope(data=i, group_id=f"g{i % 2}"), "a", fifo=True)])

    first = await backend.claim("a", 10, LEASE_S)
    assert data(first) == [0, 1]
    assert await backend.complete(first[1])
    assert data(await backend.claim("a", 10, LEASE_S)) == [3]


async def test_fifo_without_group_id_is_one_group(backend: Backend) -> None:
    await publish(backend, "a", 2, fifo=True)
    assert data(await backend.claim("a", 10, LEASE_S)) == [0]


async def test_fifo_and_standard_deliveries_of_one_step(backend: Backend) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    await publish(backend, "a", 2)
    got = await backend.claim("a", 10, LEASE_S)
    assert sorted(map(str, data(got))) == ["0", "0", "1"]  # both standard ones and the group's head


async def test_fifo_retried_head_blocks_its_group(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    await publish(backend, "a", 1, fifo=True, group_id="other")
    [head, other] = await backend.claim("a", 10, LEASE_S)
    assert other.envelope.group_id == "other"

    await backend.retry(head, 5)

    assert await backend.claim("a", 10, LEASE_S) == []  # not the second event of g
    clock.advance(5)
    again = await claim_one(backend, "a")
    assert (again.envelope, again.attempt) == (head.envelope, 2)
    assert await backend.claim("a", 10, LEASE_S) == []
    assert await backend.complete(again)
    assert data(await backend.claim("a", 10, LEASE_S)) == [1]


async def test_fifo_dead_lettered_head_frees_its_group(backend: Backend) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    head = await claim_one(backend, "a")
    await backend.dead_letter(head, "boom", "")
    assert data(await backend.claim("a", 10, LEASE_S)) == [1]


async def test_fifo_expired_head_is_delivered_again_before_the_rest(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    old = await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    new = await claim_one(backend, "a", lease_s=10)
    assert (new.id, new.attempt) == (old.id, 2)
    assert await backend.claim("a", 10, 10) == []


async def test_fifo_expired_head_handed_back_is_claimed_alone_again(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a", 2, fifo=True, group_id="g")
    set_identity(backend, "crashed:1")
    await claim_one(backend, "a", lease_s=10)
    clock.advance(10)
    set_identity(backend, "shutting-down:2")
    expired = await claim_one(backend, "a", lease_s=10)

    await backend.hand_back([expired])

    assert seen(await backend.claim("a", 10, 10)) == [(0, 2, True, "crashed:1")]
    assert await backend.claim("a", 10, 10) == []  # the group still waits for its head


async def test_replayed_fifo_dead_letter_comes_back_as_a_standard_delivery(backend: Backend) -> None:
    await publish(backend, "f", 2, fifo=True, group_id="g")
    head = await claim_one(backend, "f")
    await backend.dead_letter(head, "boom", "tb")

    assert await backend.dlq_replay(head.id)

    got = await backend.claim("f", 10, LEASE_S)
    assert sorted(map(str, data(got))) == ["0", "1"]  # the replay neither waits behind its group nor blocks it
    assert [d.attempt for d in got] == [1, 1]
