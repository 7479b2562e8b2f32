"""Completions that claim (Redis): a delivery whose outbox goes to a step this process waits for leases the
new event to that waiting step in the same script run (see ``motia_py.backends.redis_prefetch``), and the
step's next claim takes it without asking Redis. These tests check that such a claim is a claim like any
other: leased to this process only, attempt 1, handed back uncounted when nobody takes it."""

from __future__ import annotations

import asyncio
import time

import pytest

from motia_py.backends.redis import RedisBackend

from .test_redis import LEASE_S, OpenBackend, open_backend, out, prefix, url  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.redis


async def waiting_for(backend: RedisBackend, step: str) -> asyncio.Future[set[str]]:
    """A pending ``wait_any`` of ``backend`` for ``step``, once it is registered."""
    call = asyncio.ensure_future(backend.wait_any({step}, 30.0))
    deadline = time.monotonic() + 5
    while not backend._hub.waiters_of(step):  # registered on the call's first turn
        assert time.monotonic() < deadline and not call.done(), "the wait never started"
        await asyncio.sleep(0)
    return call


async def a_then_waiting_b(worker: RedisBackend):  # type: ignore[no-untyped-def]
    """Step A's delivery claimed by ``worker``, whose consumer of B found nothing and waits (3 free slots)."""
    await worker.publish([out("A", 1)])
    [a] = await worker.claim("A", 5, LEASE_S)
    assert await worker.claim("B", 3, LEASE_S) == []
    return a, await waiting_for(worker, "B")


async def test_a_completion_leases_the_next_event_to_the_step_this_process_waits_for(
        open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    a, waiting = await a_then_waiting_b(worker)
    assert await worker.complete(a, [out("B", 2)])
    assert await asyncio.wait_for(waiting, 5) == {"B"}
    assert await other.claim("B", 10, LEASE_S) == []  # leased already, to the waiting process
    [b] = await worker.claim("B", 3, LEASE_S)
    assert (b.envelope.data, b.attempt, b.expired) == (2, 1, False)
    assert await worker.complete(b)
    assert (await worker.stats()).ready == 0 and (await worker.stats()).leased == 0


async def test_no_wait_no_prefetch(open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    await worker.publish([out("A", 1)])
    [a] = await worker.claim("A", 5, LEASE_S)
    assert await worker.claim("B", 3, LEASE_S) == []  # B's consumer found nothing, but waits for nothing now
    assert await worker.complete(a, [out("B", 2)])
    [b] = await other.claim("B", 10, LEASE_S)
    assert (b.envelope.data, b.attempt) == (2, 1)


async def test_a_prefetched_event_nobody_takes_goes_back_uncounted(open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    worker._prefetch.stale_s = 0.05
    a, waiting = await a_then_waiting_b(worker)
    assert await worker.complete(a, [out("B", 2)])
    await asyncio.wait_for(waiting, 5)
    deadline = time.monotonic() + 5
    while not (got := await other.claim("B", 10, LEASE_S)):
        assert time.monotonic() < deadline, "the prefetched event never went back to its queue"
        await asyncio.sleep(0.01)
    assert [(d.envelope.data, d.attempt, d.expired) for d in got] == [(2, 1, False)]


async def test_closing_hands_a_prefetched_event_back(open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    a, waiting = await a_then_waiting_b(worker)
    assert await worker.complete(a, [out("B", 2)])
    await asyncio.wait_for(waiting, 5)
    await worker.close()
    [b] = await other.claim("B", 10, LEASE_S)
    assert (b.envelope.data, b.attempt, b.expired) == (2, 1, False)


async def test_a_prefetch_takes_no_more_than_the_waiting_step_has_room_for(open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    await worker.publish([out("A", 1)])
    [a] = await worker.claim("A", 5, LEASE_S)
    assert await worker.claim("B", 2, LEASE_S) == []  # 2 free slots
    waiting = await waiting_for(worker, "B")
    assert await worker.complete(a, [out("B", i) for i in range(5)])
    await asyncio.wait_for(waiting, 5)
    assert len(await other.claim("B", 10, LEASE_S)) == 3  # the other 3 were never leased
    got = await worker.claim("B", 2, LEASE_S)
    assert sorted(d.envelope.data for d in got) == [0, 1] and all(d.attempt == 1 for d in got)


async def test_a_prefetched_event_goes_back_before_its_short_lease_runs_out(
        open_backend: OpenBackend) -> None:  # noqa: F811
    worker, other = await open_backend(), await open_backend()
    await worker.publish([out("A", 1)])
    [a] = await worker.claim("A", 5, LEASE_S)
    assert await worker.claim("B", 3, 0.3) == []  # B's consumer leases for 0.3 s
    waiting = await waiting_for(worker, "B")
    assert await worker.complete(a, [out("B", 2)])
    await asyncio.wait_for(waiting, 5)
    deadline = time.monotonic() + 5
    while not (got := await other.claim("B", 10, LEASE_S)):
        assert time.monotonic() < deadline, "the prefetched event never went back to its queue"
        await asyncio.sleep(0.01)
    # handed back (attempt not counted), not found with an expired lease (which would count attempt 2)
    assert [(d.envelope.data, d.attempt, d.expired) for d in got] == [(2, 1, False)]
