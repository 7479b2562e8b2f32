"""The contract of ``WaitStore.wait_any`` (one wait for many steps), on every backend, and of the wait
derived from per-step ``wait`` calls for plug-ins without one.

These tests measure how long a wait takes, so they run in real time, each bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import pytest

from motia_py.backends.base import Backend
from motia_py.backends.compose import ComposedBackend
from motia_py.backends.derived import StateLeaseStore, StateTraceStore, wait_any_by_step
from motia_py.testing import VirtualClock

from .helpers import LEASE_S, claim_one, publish


async def timed(aw: Awaitable[set[str]]) -> tuple[set[str], float]:
    start = time.monotonic()
    got = await aw
    return got, time.monotonic() - start


async def started(aw: Awaitable[set[str]]) -> asyncio.Future[tuple[set[str], float]]:
    """``aw`` running in the background, past its first look at the queue."""
    waiter = asyncio.ensure_future(timed(aw))
    for _ in range(20):  # its first look is one backend call: let it finish before the test acts
        await asyncio.sleep(0.005)
    return waiter


async def test_wait_any_returns_at_once_the_steps_that_have_a_due_delivery(backend: Backend) -> None:
    await publish(backend, "a")
    await publish(backend, "c")

    got, took = await timed(backend.wait_any(["a", "b", "c"], 5.0))

    assert got == {"a", "c"}
    assert took < 1.0


async def test_wait_any_names_the_step_a_publish_reached(backend: Backend) -> None:
    waiter = await started(backend.wait_any(["a", "b", "c"], 5.0))

    await publish(backend, "b")

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert got == {"b"}
    assert took < 1.5


async def test_wait_any_times_out_empty_when_only_other_steps_get_events(backend: Backend) -> None:
    waiter = await started(backend.wait_any(["a", "b"], 0.3))

    await publish(backend, "z")

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert got == set()
    assert 0.2 <= took < 1.5


async def test_wait_any_returns_when_a_delayed_delivery_of_one_step_falls_due(backend: Backend) -> None:
    await publish(backend, "b", delay_s=0.2)  # the fake clock stands still: due in 0.2 s of real time

    got, took = await timed(backend.wait_any(["a", "b"], 5.0))

    assert "b" in got and "a" not in got
    assert took < 1.5


async def test_a_retried_delivery_wakes_the_wait_of_its_step(backend: Backend) -> None:
    await publish(backend, "a")
    d = await claim_one(backend, "a")
    waiter = await started(backend.wait_any(["a"], 5.0))

    await backend.retry(d, 0.0)

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert got == {"a"}
    assert took < 1.5


async def test_a_fifo_publish_wakes_the_wait_of_its_step(backend: Backend) -> None:
    waiter = await started(backend.wait_any(["f", "g"], 5.0))

    await publish(backend, "f", fifo=True, group_id="g1")

    got, _ = await asyncio.wait_for(waiter, 2.0)
    assert got == {"f"}


async def test_one_wait_covers_two_hundred_steps(backend: Backend) -> None:
    steps = [f"s{i}" for i in range(200)]
    waiter = await started(backend.wait_any(steps, 5.0))

    await publish(backend, "s199")

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert got == {"s199"}
    assert took < 1.5
    assert len(await backend.claim("s199", 10, LEASE_S)) == 1


async def test_a_cancelled_wait_leaves_the_backend_waiting_as_before(backend: Backend) -> None:
    first = asyncio.ensure_future(backend.wait_any(["a"], 5.0))
    await asyncio.sleep(0.05)
    first.cancel()
    waiter = await started(backend.wait_any(["a", "b"], 5.0))

    await publish(backend, "a")

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert got == {"a"}
    assert took < 1.5


async def test_a_wait_cancelled_while_it_looks_does_not_hide_what_is_due(backend: Backend) -> None:
    assert await backend.wait_any(["a"], 0.01) == set()  # the step's due time is known (nothing)
    await publish(backend, "a")
    looking = asyncio.ensure_future(backend.wait_any(["a"], 5.0))
    await asyncio.sleep(0)  # it has started to read the due times
    looking.cancel()  # as a worker's waker does when another consumer goes idle

    got, took = await timed(backend.wait_any(["a"], 5.0))

    assert got == {"a"}
    assert took < 1.0


async def test_concurrent_waits_are_each_woken_by_their_own_steps(backend: Backend) -> None:
    on_a = await started(backend.wait_any(["a"], 5.0))
    on_b = asyncio.ensure_future(timed(backend.wait_any(["b"], 0.4)))

    await publish(backend, "a")

    assert (await asyncio.wait_for(on_a, 2.0))[0] == {"a"}
    assert (await asyncio.wait_for(on_b, 2.0))[0] == set()


# -- the derived wait: one per-step wait each, raced ------------------------------------------------
async def test_the_derived_wait_names_the_step_a_publish_reached(backend: Backend) -> None:
    waiter = await started(wait_any_by_step(backend, ["a", "b"], 5.0))

    await publish(backend, "b")

    got, took = await asyncio.wait_for(waiter, 2.0)
    assert "b" in got
    assert took < 1.5


async def test_a_composed_backend_without_wait_any_gets_the_derived_one(backend: Backend) -> None:
    class QueueAndStateOnly:
        """Forwards everything but ``wait_any`` (as a plug-in written before it existed)."""

        def __getattr__(self, name: str) -> object:
            if name == "wait_any":
                raise AttributeError(name)
            return getattr(backend, name)

    core = QueueAndStateOnly()
    composed = ComposedBackend(core, StateLeaseStore(backend), StateTraceStore(backend))  # type: ignore[arg-type]
    waiter = await started(composed.wait_any(["a"], 5.0))

    await publish(backend, "a")

    assert (await asyncio.wait_for(waiter, 2.0))[0] == {"a"}


@pytest.mark.parametrize("steps", [[], ["a"]])
async def test_the_derived_wait_times_out_empty_without_steps_or_events(backend: Backend, steps: list[str]) -> None:
    got, took = await timed(wait_any_by_step(backend, steps, 0.1))
    assert took < 1.0
    assert got == (set() if not steps else {"a"})  # a per-step wait cannot tell a timeout from a wake-up


async def test_a_step_whose_deliveries_are_claimed_and_acknowledged_is_not_due(backend: Backend) -> None:
    await publish(backend, "a", 2)
    assert (await backend.wait_any(["a"], 5.0)) == {"a"}  # as a worker does: it waits, then claims
    claimed = await backend.claim("a", 5, LEASE_S)
    assert len(claimed) == 2

    got, took = await timed(backend.wait_any(["a"], 0.2))
    assert got == set()  # leased: nothing due until the leases expire
    assert took >= 0.15

    for d in claimed:
        assert await backend.complete(d)
    got, took = await timed(backend.wait_any(["a"], 0.2))
    assert got == set()
    assert took >= 0.15


async def test_a_wait_after_a_claim_wakes_when_the_lease_expires(backend: Backend, clock: VirtualClock) -> None:
    await publish(backend, "a")
    await claim_one(backend, "a", lease_s=0.2)  # the fake clock stands still: expires in 0.2 s of real time

    got, took = await timed(backend.wait_any(["a", "b"], 5.0))

    assert got == {"a"}
    assert 0.1 <= took < 1.5
    clock.advance(0.3)
    assert (await claim_one(backend, "a")).expired


async def test_a_delayed_publish_after_an_empty_claim_wakes_the_wait_at_its_time(backend: Backend) -> None:
    assert await backend.claim("a", 1, LEASE_S) == []  # the worker found nothing...
    await publish(backend, "a", delay_s=0.2)  # ... then this arrived (the fake clock stands still)

    got, took = await timed(backend.wait_any(["a"], 5.0))

    assert got == {"a"}
    assert 0.1 <= took < 1.5
