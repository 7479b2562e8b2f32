"""The lease store's contract (leases and metadata): every backend passes it, and so does the lease store
derived from a state store (see ``conftest.lease_store``)."""

from __future__ import annotations

import asyncio

from motia_py.backends.base import LeaseStore
from motia_py.testing import VirtualClock


# -- leases -------------------------------------------------------------------------------------
async def test_acquire_blocks_other_owners_until_expiry(lease_store: LeaseStore, clock: VirtualClock) -> None:
    assert await lease_store.acquire("cron:x", "A", 10) is True
    assert await lease_store.acquire("cron:x", "B", 10) is False
    assert await lease_store.acquire("cron:y", "B", 10) is True
    clock.advance(8)
    assert await lease_store.acquire("cron:x", "A", 10) is True  # refresh: now held until +18
    clock.advance(8)
    assert await lease_store.acquire("cron:x", "B", 10) is False
    clock.advance(2)
    assert await lease_store.acquire("cron:x", "B", 10) is True
    assert await lease_store.acquire("cron:x", "A", 10) is False


async def test_release_frees_only_the_owners_lease(lease_store: LeaseStore) -> None:
    assert await lease_store.acquire("k", "A", 60)
    await lease_store.release("k", "B")
    assert await lease_store.acquire("k", "B", 60) is False
    await lease_store.release("k", "A")
    assert await lease_store.acquire("k", "B", 60) is True
    await lease_store.release("nobody-holds-this", "A")  # a no-op, not an error


async def test_one_of_many_concurrent_takers_gets_a_free_lease(lease_store: LeaseStore) -> None:
    results = await asyncio.gather(*(lease_store.acquire("k", f"owner-{i}", 60) for i in range(20)))
    assert results.count(True) == 1
    winner = f"owner-{results.index(True)}"
    assert await lease_store.acquire("k", winner, 60) is True  # still the winner's
    assert await lease_store.acquire("k", "someone-else", 60) is False


# -- metadata -----------------------------------------------------------------------------------
async def test_meta_get_set(lease_store: LeaseStore) -> None:
    assert await lease_store.meta_get("cron-last:x") is None
    await lease_store.meta_set("cron-last:x", "1")
    await lease_store.meta_set("cron-last:x", '{"at": 2}')
    assert await lease_store.meta_get("cron-last:x") == '{"at": 2}'
    assert await lease_store.meta_get("cron-last:y") is None


async def test_meta_cas(lease_store: LeaseStore) -> None:
    assert await lease_store.meta_cas("tick", None, "1") is True  # absent, as expected
    assert await lease_store.meta_cas("tick", None, "2") is False  # not absent any more
    assert await lease_store.meta_cas("tick", "5", "2") is False  # mismatch
    assert await lease_store.meta_get("tick") == "1"
    assert await lease_store.meta_cas("tick", "1", "2") is True
    assert await lease_store.meta_get("tick") == "2"
    assert await lease_store.meta_cas("tick", "1.0", "3") is False  # compared as text, not as numbers
    assert await lease_store.meta_get("tick") == "2"


async def test_meta_cas_lets_one_of_many_concurrent_writers_win(lease_store: LeaseStore) -> None:
    first = await asyncio.gather(*(lease_store.meta_cas("tick", None, f"a{i}") for i in range(20)))
    assert first.count(True) == 1
    current = f"a{first.index(True)}"
    assert await lease_store.meta_get("tick") == current

    second = await asyncio.gather(*(lease_store.meta_cas("tick", current, f"b{i}") for i in range(20)))
    assert second.count(True) == 1
    assert await lease_store.meta_get("tick") == f"b{second.index(True)}"


async def test_lease_and_metadata_keys_are_separate(lease_store: LeaseStore) -> None:
    await lease_store.meta_set("k", "meta value")
    assert await lease_store.acquire("k", "A", 60) is True  # metadata named k holds no lease
    assert await lease_store.meta_get("k") == "meta value"  # and the lease did not overwrite it
    await lease_store.release("k", "A")
    assert await lease_store.meta_get("k") == "meta value"
    assert await lease_store.meta_cas("k", "meta value", "changed") is True
    assert await lease_store.acquire("k", "B", 60) is True
