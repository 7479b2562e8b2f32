"""The redis backend's own connections: the lane (``redis_lane``: scripts run one at a time on a
connection of their own, whose replies ``redis_wire`` reads) and the blocking read (``redis_wake``: XREAD
written and read directly).

Each test runs a private redis-private_redis_url, as the tests flush its scripts, kill and pause its clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from motia_py.backends.redis import RedisBackend
from motia_py.backends.redis_lane import LaneRedis
from motia_py.backends.redis_pack import use_hiredis_packing
from motia_py.backends.registry import BackendOptions, create_backend

from .helpers import data, envelope, to

pytestmark = pytest.mark.redis


@pytest.fixture
async def admin(private_redis_url: str) -> AsyncIterator[Redis]:
    """A plain client of the private private_redis_url."""
    client = Redis.from_url(private_redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def backend(private_redis_url: str, tmp_path: Path) -> AsyncIterator[RedisBackend]:
    """An opened redis backend on the private private_redis_url."""
    b = create_backend(private_redis_url, BackendOptions(root=tmp_path))
    assert isinstance(b, RedisBackend)
    await b.open()
    yield b
    await b.close()


async def ours(admin: Redis) -> list[dict[str, Any]]:
    """The backend's connections (named motia-py) as CLIENT LIST reports them."""
    return [c for c in await admin.client_list() if c.get("name") == "motia-py"]


async def publish(backend: RedisBackend, *values: int) -> None:
    for v in values:
        await backend.publish([to(envelope(data=v), "s")])


async def drained(backend: RedisBackend) -> list[int]:
    """The payloads of every due delivery of step ``s``, claimed, in order."""
    return sorted(cast(list[int], data(await backend.claim("s", 100, 30.0))))


async def wait_for(check: Callable[[], Any], what: str) -> Any:
    """Poll the private_redis_url until ``check()`` (a coroutine function) returns something true."""
    async with asyncio.timeout(10):
        while not (found := await check()):
            await asyncio.sleep(0.01)
    assert found, what
    return found


async def test_calls_one_at_a_time_take_the_lane(backend: RedisBackend, admin: Redis) -> None:
    await publish(backend, *range(20))
    conns = await ours(admin)
    assert len(conns) == 2, conns  # the lane and the pooled connection, no more
    assert [c["cmd"] for c in conns].count("evalsha") == 1, conns  # the publishes went down the lane
    assert await drained(backend) == list(range(20))


async def test_flushed_scripts_are_loaded_again(backend: RedisBackend, admin: Redis) -> None:
    await publish(backend, 1)
    await admin.script_flush()
    await publish(backend, 2, 3)
    assert await drained(backend) == [1, 2, 3]


async def test_a_call_made_while_the_lane_is_busy_goes_through_the_pool(backend: RedisBackend,
                                                                        admin: Redis) -> None:
    await publish(backend, 1)
    await admin.script_flush()  # both ways must load the script again
    await asyncio.gather(publish(backend, 2), publish(backend, 3))  # the second runs while the first holds the lane
    assert [c["cmd"] for c in await ours(admin)] == ["evalsha", "evalsha"]  # the lane and the pool both ran one
    assert await drained(backend) == [1, 2, 3]


async def test_a_killed_lane_reconnects_and_loses_nothing(backend: RedisBackend, admin: Redis) -> None:
    await publish(backend, 1)
    [lane] = [c for c in await ours(admin) if c["cmd"] == "evalsha"]
    await admin.client_kill_filter(_id=lane["id"])
    await publish(backend, 2)  # the dead lane sends this one through the pool
    await publish(backend, 3)  # and reconnects for the next
    relaned = [c for c in await ours(admin) if c["cmd"] == "evalsha"]
    assert relaned and relaned[0]["id"] != lane["id"], relaned
    assert await drained(backend) == [1, 2, 3]


async def test_a_cancelled_call_leaves_no_reply_for_the_next(backend: RedisBackend, admin: Redis) -> None:
    await publish(backend, 1)
    await admin.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
    try:
        task = asyncio.ensure_future(publish(backend, 2))

        async def blocked() -> bool:
            return any("b" in c["flags"] and c["cmd"] == "evalsha" for c in await ours(admin))

        await wait_for(blocked, "the publish is held by the pause")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    await publish(backend, 3)
    got = await drained(backend)  # a claim reading the cancelled publish's reply would fail or return []
    assert got in ([1, 3], [1, 2, 3]), got  # the cancelled publish may have run: it was sent
    assert (await backend.claim("s", 10, 30.0)) == []



async def test_a_reply_later_than_the_socket_timeout_answers_no_later_call(private_redis_url: str,
                                                                        admin: Redis) -> None:
    pool = use_hiredis_packing(ConnectionPool.from_url(private_redis_url, decode_responses=True,
                                                       socket_timeout=0.25))
    client = LaneRedis.with_lane(pool)
    echo = client.register_script("return ARGV[1]")
    try:
        assert await echo(args=["first"]) == "first"
        first = client.lane._wire
        assert first is not None  # the lane reads its replies itself (redis_wire): the path under test
        await admin.execute_command("CLIENT", "PAUSE", "600", "WRITE")  # holds every script call
        with contextlib.suppress(RedisTimeoutError, RedisConnectionError):  # the pool's way may time out too
            await echo(args=["late"])  # the lane gives up after 0.25 s, then the pool's way waits or fails
        # the late reply came (or comes) on a connection that is closed: no later call reads it
        assert [await echo(args=[str(i)]) for i in range(5)] == ["0", "1", "2", "3", "4"]
        assert client.lane._wire is not None and client.lane._wire is not first
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()


async def test_a_lane_closed_mid_call_fails_over_to_the_pool(private_redis_url: str, admin: Redis) -> None:
    pool = use_hiredis_packing(ConnectionPool.from_url(private_redis_url, decode_responses=True,
                                                       socket_timeout=None))  # no timeout to fall back on
    client = LaneRedis.with_lane(pool)
    echo = client.register_script("return ARGV[1]")
    try:
        assert await echo(args=["first"]) == "first"
        await admin.execute_command("CLIENT", "PAUSE", "300", "WRITE")
        call = asyncio.ensure_future(echo(args=["held"]))

        async def held() -> bool:
            return any("b" in c["flags"] and c["cmd"] == "evalsha" for c in await admin.client_list())

        await wait_for(held, "the call is held by the pause")
        for conn in await admin.client_list():
            if conn["cmd"] == "evalsha":
                await admin.client_kill_filter(_id=conn["id"])  # the lane's connection dies under the call
        async with asyncio.timeout(30):  # (a lost connection the lane missed would wait forever)
            assert await call == "held"  # sent again the pool's way (a script may run twice: at least once)
        assert await echo(args=["next"]) == "next"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await client.aclose()


async def test_the_blocking_read_comes_back_after_its_connection_is_killed(
        backend: RedisBackend, private_redis_url: str, tmp_path: Path, admin: Redis) -> None:
    publisher = create_backend(private_redis_url, BackendOptions(root=tmp_path))
    await publisher.open()
    try:
        await publish(publisher, 0)
        assert data(await backend.claim("s", 10, 30.0)) == [0]  # the step exists; nothing is due now

        async def reading() -> list[dict[str, Any]]:
            return [c for c in await ours(admin) if c["cmd"] == "xread" and "b" in c["flags"]]

        first = asyncio.ensure_future(backend.wait_any({"s"}, 30.0))
        [read] = await wait_for(reading, "the wait blocks in XREAD")
        await admin.client_kill_filter(_id=read["id"])
        async with asyncio.timeout(10):  # a lost read wakes the waits: their consumers look at the queue again
            assert await first <= {"s"}

        second = asyncio.ensure_future(backend.wait_any({"s"}, 30.0))
        [again] = await wait_for(reading, "a new blocking read")
        assert again["id"] != read["id"]
        await publish(publisher, 1)
        async with asyncio.timeout(10):  # woken by the publish, far before the wait's 30 s
            assert await second == {"s"}
    finally:
        await publisher.close()
