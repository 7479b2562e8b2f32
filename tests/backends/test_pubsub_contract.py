"""The pub/sub store's contract (see ``PubSubStore``): every backend passes it unchanged.

"Another process" is a second backend object on the same SQLite file, Redis prefix or PostgreSQL schema:
it has its own notify socket or pub/sub (listening) connection, exactly as a second process would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.base import Backend
from motia_py.backends.memory import MemoryBackend
from motia_py.backends.postgres import PostgresBackend
from motia_py.backends.pubsub import Subscription
from motia_py.backends.realtime import pubsub_of
from motia_py.backends.redis import RedisBackend
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.backends.sqlite import SqliteBackend
from motia_py.testing import VirtualClock

WAIT_S = 5.0


async def next_message(sub: Subscription) -> str:
    return await asyncio.wait_for(sub.get(), WAIT_S)


@contextlib.asynccontextmanager
async def other_process(backend: Backend, tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Any]:
    """A second backend on the same storage (the same object for memory, which has no other process)."""
    if isinstance(backend, MemoryBackend):
        yield backend
        return
    if isinstance(backend, SqliteBackend):
        other: Any = create_backend(f"sqlite:///{backend.path}", BackendOptions(root=tmp_path, clock=clock))
    elif isinstance(backend, PostgresBackend):
        other = PostgresBackend(backend._dsn, schema=backend.schema, clock=clock)
    else:
        assert isinstance(backend, RedisBackend)
        other = RedisBackend(backend._url, prefix=backend.keys.prefix, clock=clock)
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def test_a_subscriber_gets_what_is_published_after_it_subscribed(backend: Backend) -> None:
    ps = pubsub_of(backend)
    await ps.pubsub_publish("news", "before")  # nobody listens: gone
    sub = await ps.pubsub_subscribe("news")
    for i in range(5):
        await ps.pubsub_publish("news", f"m{i}")
    assert [await next_message(sub) for _ in range(5)] == [f"m{i}" for i in range(5)]
    assert sub.get_nowait() is None
    await sub.close()


async def test_channels_are_separate_and_every_subscription_gets_each_message(backend: Backend) -> None:
    ps = pubsub_of(backend)
    a1, a2, b = (await ps.pubsub_subscribe("a"), await ps.pubsub_subscribe("a"), await ps.pubsub_subscribe("b"))
    await ps.pubsub_publish("a", '{"x":1}')
    await ps.pubsub_publish("b", "for b")
    assert await next_message(a1) == '{"x":1}'
    assert await next_message(a2) == '{"x":1}'
    assert await next_message(b) == "for b"
    assert a1.get_nowait() is None and b.get_nowait() is None


async def test_a_closed_subscription_stops_receiving(backend: Backend) -> None:
    ps = pubsub_of(backend)
    gone, kept = await ps.pubsub_subscribe("c"), await ps.pubsub_subscribe("c")
    await gone.close()
    await ps.pubsub_publish("c", "after")
    assert await next_message(kept) == "after"
    assert gone.get_nowait() is None
    with pytest.raises(StopAsyncIteration):
        await gone.get()


async def test_messages_reach_another_process_in_order(backend: Backend, tmp_path: Path,
                                                       clock: VirtualClock) -> None:
    async with other_process(backend, tmp_path, clock) as other:
        sub = await pubsub_of(other).pubsub_subscribe("jobs")
        ps = pubsub_of(backend)
        for i in range(50):
            await ps.pubsub_publish("jobs", str(i))
        assert [await next_message(sub) for _ in range(50)] == [str(i) for i in range(50)]


async def test_large_and_unicode_messages_arrive_whole(backend: Backend, tmp_path: Path,
                                                       clock: VirtualClock) -> None:
    big = "é☃" * 300_000 + "end"  # over a megabyte of UTF-8
    async with other_process(backend, tmp_path, clock) as other:
        sub = await pubsub_of(other).pubsub_subscribe("big")
        await pubsub_of(backend).pubsub_publish("big", big)
        await pubsub_of(backend).pubsub_publish("big", "next")
        assert await next_message(sub) == big
        assert await next_message(sub) == "next"


async def test_channel_names_with_separators_stay_distinct(backend: Backend) -> None:
    ps = pubsub_of(backend)
    colon, percent = await ps.pubsub_subscribe("a:b"), await ps.pubsub_subscribe("a%3Ab")
    await ps.pubsub_publish("a:b", "colon")
    await ps.pubsub_publish("a%3Ab", "percent")
    assert await next_message(colon) == "colon"
    assert await next_message(percent) == "percent"
    assert colon.get_nowait() is None
