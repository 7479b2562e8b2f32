"""How long the redis backend's ``wait_any`` reuses a step's due time (``redis_queue._trusted_due``).

An idle worker reads its steps' due times again only when its blocking read sees something of them; a
claim that took what was seen trusts the time read after it only briefly, as other processes may have
leased some of it meanwhile. Each test runs a private redis-private_redis_url (they count its script calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from motia_py.backends.redis import RedisBackend
from motia_py.backends.registry import BackendOptions, create_backend

from .helpers import envelope, to

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair(private_redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """Two opened backends on the private_redis_url, as two worker processes would have."""
    made: list[RedisBackend] = []
    for _ in range(2):
        b = create_backend(private_redis_url, BackendOptions(root=tmp_path))
        assert isinstance(b, RedisBackend)
        await b.open()
        made.append(b)
    yield made[0], made[1]
    for b in made:
        await b.close()


async def script_calls(private_redis_url: str) -> int:
    admin = Redis.from_url(private_redis_url, decode_responses=True)
    try:
        stats = await admin.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        await admin.aclose()


async def test_idle_rounds_read_the_due_times_once(pair: tuple[RedisBackend, RedisBackend],
                                                   private_redis_url: str) -> None:
    waiting, _ = pair
    await waiting.publish([to(envelope(), "s")])
    assert len(await waiting.claim("s", 10, 30.0)) == 1  # the step exists; its lease is due in 30 s
    assert await waiting.wait_any({"s"}, 0.05) == set()  # reads the due time
    before = await script_calls(private_redis_url)
    for _ in range(8):  # 1.2 s of idle rounds: longer than a drained claim's trust
        assert await waiting.wait_any({"s"}, 0.15) == set()
    assert await script_calls(private_redis_url) == before  # nothing happened to the step: no script ran


async def test_a_lease_taken_by_another_process_after_a_drained_claim_is_seen(
        pair: tuple[RedisBackend, RedisBackend]) -> None:
    waiting, other = pair
    await waiting.publish([to(envelope(data=0), "s")])
    assert len(await waiting.claim("s", 10, 30.0)) == 1
    assert await waiting.wait_any({"s"}, 0.05) == set()  # idle, its due time read

    woken = asyncio.ensure_future(waiting.wait_any({"s"}, 10.0))
    await other.publish([to(envelope(data=1), "s")])
    assert await asyncio.wait_for(woken, 10.0) == {"s"}  # the blocking read saw the publish
    [taken] = await other.claim("s", 10, 1.0)  # the other process wins it, with a lease of 1 s
    assert await waiting.claim("s", 10, 30.0) == []  # this one finds nothing: the step is drained

    async with asyncio.timeout(8.0):  # far below the 30 s of the lease it knew of
        while not await waiting.wait_any({"s"}, 0.5):  # rounds of a worker's waker (its poll_s)
            pass
    [again] = await waiting.claim("s", 10, 30.0)  # the other's lease expired: delivered again here
    assert (again.envelope.id, again.attempt) == (taken.envelope.id, 2)
