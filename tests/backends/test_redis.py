"""Redis-only behaviour: durability, several processes, blocking wake-ups, outages, key hygiene.

The contract suite runs on Redis too (``conftest.BACKENDS["redis"]`` uses
:func:`.redis_support.contract_backend`). The server comes from :mod:`.redis_support` (an unreachable one
skips these tests locally and fails them in CI). Each test uses its own key prefix and deletes that
prefix's keys afterwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from motia_py.backends.base import Delivery, Envelope, Outgoing, Target, TraceRun, new_id
from motia_py.backends.redis import RedisBackend, redact
from motia_py.backends.redis_keys import Keys, escape
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.errors import BackendError, BackendUnavailableError
from motia_py.testing import VirtualClock
from motia_py.types import Clock

from .redis_support import (  # the process tests import these from here too
    check_reachable,
    contract_backend,
    delete_prefix,
    new_prefix,
    private_redis,
    redis_url,
    unreachable,
)

__all__ = ["check_reachable", "contract_backend", "delete_prefix", "new_prefix", "private_redis", "redis_url",
           "unreachable"]

pytestmark = pytest.mark.redis

LEASE_S = 30.0


# -- fixtures -----------------------------------------------------------------------------------
OpenBackend = Callable[..., Awaitable[RedisBackend]]


@pytest.fixture
def url() -> str:
    """The test server's URL (checked reachable)."""
    u = redis_url()
    check_reachable(u)
    return u


@pytest.fixture
async def prefix(url: str) -> AsyncIterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    p = new_prefix()
    yield p
    await delete_prefix(url, p)


@pytest.fixture
async def open_backend(url: str, prefix: str) -> AsyncIterator[OpenBackend]:
    """``await open_backend(clock=None)``: another opened backend object on the test's prefix."""
    opened: list[RedisBackend] = []

    async def make(clock: Clock | None = None, backend_url: str | None = None) -> RedisBackend:
        b = create_backend(backend_url or url, BackendOptions(root=Path("."), clock=clock, prefix=prefix))
        assert isinstance(b, RedisBackend)
        await b.open()
        opened.append(b)
        return b

    yield make
    for b in opened:
        await b.close()


async def blocked_clients(url: str) -> int:
    """How many connections the server has blocked in a blocking command right now."""
    async with Redis.from_url(url) as probe:
        return int((await probe.info("clients"))["blocked_clients"])


async def one_more_blocked(url: str, before: int, timeout_s: float = 5.0) -> None:
    """Return once the server has more blocked connections than ``before`` (a blocking read started)."""
    deadline = time.monotonic() + timeout_s
    while await blocked_clients(url) <= before:
        if time.monotonic() > deadline:
            raise AssertionError("the blocking read never started")
        await asyncio.sleep(0.002)


def out(step: str, data: object = None, *, delay_s: float = 0.0, fifo: bool = False,
        group_id: str | None = None) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0,
                   group_id=group_id)
    return Outgoing(env, (Target(step, delay_s=delay_s, fifo=fifo),))


# -- durability and several processes -----------------------------------------------------------
async def test_data_survives_closing_and_reopening(open_backend: OpenBackend) -> None:
    first = await open_backend()
    await first.publish([out("a", i) for i in range(3)] + [out("f", "x", fifo=True, group_id="g")])
    [leased] = await first.claim("a", 1, LEASE_S)
    [dead] = await first.claim("f", 1, LEASE_S)
    await first.dead_letter(dead, "boom", "tb")
    await first.state_set("ns", "g", "k", '{"v": 1}')
    await first.meta_set("m", "1")
    await first.close()

    again = await open_backend()

    assert (await again.stats()).ready == 2
    assert [d.envelope.data for d in await again.claim("a", 10, LEASE_S)] == [1, 2]
    assert await again.complete(leased) is True  # the lease taken before the reopen is still valid
    assert [d.id for d in await again.dlq_list()] == [dead.id]
    assert await again.state_get("ns", "g", "k") == '{"v": 1}'
    assert await again.meta_get("m") == "1"


async def test_two_backends_never_claim_the_same_delivery(open_backend: OpenBackend) -> None:
    a, b = await open_backend(), await open_backend()
    await a.publish([out("s", i) for i in range(500)])

    async def drain(backend: RedisBackend) -> list[str]:
        got: list[str] = []
        while batch := await backend.claim("s", 7, LEASE_S):
            got += [d.id for d in batch]
            assert all(await asyncio.gather(*(backend.complete(d) for d in batch)))
        return got

    got_a, got_b = await asyncio.gather(drain(a), drain(b))

    assert len(got_a) + len(got_b) == 500
    assert len(set(got_a) | set(got_b)) == 500
    assert got_a and got_b  # both really took part
    assert (await a.stats()).idle


async def test_fifo_groups_stay_serial_across_backends(open_backend: OpenBackend) -> None:
    a, b = await open_backend(), await open_backend()
    await a.publish([out("f", i, fifo=True, group_id=f"g{i % 3}") for i in range(30)])
    seen: dict[str, list[int]] = {}

    async def drain(backend: RedisBackend) -> None:
        while batch := await backend.claim("f", 10, LEASE_S):
            assert len({d.envelope.group_id for d in batch}) == len(batch)  # one head per group
            for d in batch:
                seen.setdefault(str(d.envelope.group_id), []).append(d.envelope.data)
            assert all(await asyncio.gather(*(backend.complete(d) for d in batch)))

    await asyncio.gather(drain(a), drain(b))

    assert seen == {f"g{g}": list(range(g, 30, 3)) for g in range(3)}


async def test_publish_from_another_backend_wakes_wait_at_once(url: str, open_backend: OpenBackend) -> None:
    waiter_side, publisher = await open_backend(), await open_backend()
    start = time.monotonic()
    before = await blocked_clients(url)
    waiting = asyncio.ensure_future(waiter_side.wait("a", 5.0))
    await one_more_blocked(url, before)  # the test measures the wake-up, not the start of the read

    await publisher.publish([out("a")])

    await asyncio.wait_for(waiting, 2.0)
    assert time.monotonic() - start < 0.5
    assert len(await waiter_side.claim("a", 10, LEASE_S)) == 1


async def test_fifo_publish_from_another_backend_wakes_wait(url: str, open_backend: OpenBackend) -> None:
    waiter_side, publisher = await open_backend(), await open_backend()
    before = await blocked_clients(url)
    waiting = asyncio.ensure_future(waiter_side.wait("f", 5.0))
    await one_more_blocked(url, before)
    start = time.monotonic()

    await publisher.publish([out("f", fifo=True, group_id="g")])

    await asyncio.wait_for(waiting, 2.0)
    assert time.monotonic() - start < 0.5


async def test_close_stops_a_blocking_wait(url: str, open_backend: OpenBackend) -> None:
    b = await open_backend()
    before = await blocked_clients(url)
    waiting = asyncio.ensure_future(b.wait("a", 30.0))
    await one_more_blocked(url, before)
    await asyncio.wait_for(b.close(), 2.0)
    await asyncio.wait_for(waiting, 2.0)  # returns instead of blocking for 30 s


async def test_group_commit_of_concurrent_completes_and_publishes(open_backend: OpenBackend) -> None:
    b = await open_backend()
    await asyncio.gather(*(b.publish([out("a", i)]) for i in range(300)))
    ds = await b.claim("a", 300, LEASE_S)
    assert sorted(d.envelope.data for d in ds) == list(range(300))

    results = await asyncio.gather(*(b.complete(d, [out("b", d.envelope.data)]) for d in ds))
    stale = await asyncio.gather(*(b.complete(d) for d in ds[:5]))

    assert all(results) and not any(stale)
    assert sorted(d.envelope.data for d in await b.claim("b", 1000, LEASE_S)) == list(range(300))


async def test_completing_one_delivery_twice_in_one_batch_succeeds_once(open_backend: OpenBackend) -> None:
    b = await open_backend()
    await b.publish([out("a")])
    [d] = await b.claim("a", 1, LEASE_S)

    results = await asyncio.gather(b.complete(d, [out("b", 1)]), b.complete(d, [out("b", 2)]))

    assert sorted(results) == [False, True]
    assert [x.envelope.data for x in await b.claim("b", 10, LEASE_S)] == [1 if results[0] else 2]


async def test_fifo_target_with_a_delay_holds_its_group(open_backend: OpenBackend) -> None:
    clock = VirtualClock(1_700_000_000.0)
    b = await open_backend(clock=clock)
    await b.publish([out("f", 0, fifo=True, group_id="g", delay_s=10)])
    await b.publish([out("f", 1, fifo=True, group_id="g")])

    assert await b.claim("f", 10, LEASE_S) == []
    stats = await b.stats()
    assert (stats.ready, stats.delayed, stats.next_due_at) == (1, 1, clock.now + 10)
    clock.advance(10)
    [head] = await b.claim("f", 10, LEASE_S)
    assert head.envelope.data == 0
    assert await b.complete(head)
    assert [d.envelope.data for d in await b.claim("f", 10, LEASE_S)] == [1]


# -- Redis's own clock (no injected clock) ------------------------------------------------------
async def test_without_an_injected_clock_leases_and_delays_use_redis_time(open_backend: OpenBackend) -> None:
    a, b = await open_backend(), await open_backend()
    await a.publish([out("a", "now"), out("a", "later", delay_s=0.3)])
    [d1] = await a.claim("a", 10, 0.2)  # a worker that then dies without completing
    assert d1.envelope.data == "now"

    await b.wait("a", 5.0)  # wakes when the lease expires (no sleep in the test)
    again = await b.claim("a", 10, 10)
    while len(again) < 2:  # the delayed one falls due 0.1 s later
        await b.wait("a", 5.0)
        again += await b.claim("a", 10, 10)

    assert [(d.envelope.data, d.attempt) for d in again] == [("now", 2), ("later", 1)]
    assert again[0].id == d1.id and again[0].first_delivered_at == d1.first_delivered_at
    assert await a.complete(d1) is False
    assert all([await b.complete(d) for d in again])


_CLAIMER = """
import asyncio, sys
from pathlib import Path
from motia_py.backends.registry import BackendOptions, create_backend

async def main():
    b = create_backend(sys.argv[1], BackendOptions(root=Path("."), prefix=sys.argv[2]))
    await b.open()
    [d] = await b.claim("a", 1, 0.5)
    print(d.id, flush=True)
    await asyncio.sleep(60)  # the "handler" never finishes: the parent kills this process

asyncio.run(main())
"""


async def test_delivery_of_a_killed_worker_process_is_delivered_again(
    url: str, prefix: str, open_backend: OpenBackend
) -> None:
    b = await open_backend()
    await b.publish([out("a", "job")])
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLAIMER, url, prefix,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    claimed_id = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    proc.kill()  # SIGKILL mid-handler
    await proc.wait()

    again: list[Delivery] = []
    while not again:
        await b.wait("a", 5.0)  # returns when the dead worker's lease expires
        again = await b.claim("a", 10, LEASE_S)

    assert [(d.id, d.envelope.data, d.attempt) for d in again] == [(claimed_id, "job", 2)]
    assert (again[0].expired, again[0].last_owner) == (True, f"{socket.gethostname()}:{proc.pid}")
    assert await b.complete(again[0])


async def test_owner_records_go_with_their_leases(url: str, open_backend: OpenBackend) -> None:
    clock = VirtualClock(1_700_000_000.0)
    b = await open_backend(clock)
    await b.publish([out("a", i) for i in range(4)] + [out("a", "f", fifo=True, group_id="g")])
    ds = await b.claim("a", 10, 10)
    assert len(ds) == 5
    await b.complete(ds[0])
    await b.retry(ds[1], 0)
    await b.dead_letter(ds[2], "x", "")
    await b.hand_back(ds[3:])
    clock.advance(1)
    client = Redis.from_url(url, decode_responses=True)
    try:
        assert await client.hlen(b.keys.step("a").owner) == 0
        again = await b.claim("a", 10, 10)
        assert await client.hgetall(b.keys.step("a").owner) == {d.id: b.identity for d in again}
        for d in again:
            await b.complete(d)
        assert await client.hlen(b.keys.step("a").owner) == 0
    finally:
        await client.aclose()


# -- failures -----------------------------------------------------------------------------------
async def test_unreachable_server_is_backend_unavailable_with_a_clear_message() -> None:
    b = create_backend("redis://127.0.0.1:1/0", BackendOptions(root=Path(".")))
    with pytest.raises(BackendUnavailableError) as info:
        await b.open()
    message = str(info.value)
    assert "cannot reach Redis at 127.0.0.1:1/0" in message
    assert "refused" in message.lower() or "error" in message.lower()


@pytest.mark.parametrize("bad", ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/notadb"])
async def test_bad_url_is_backend_unavailable(bad: str) -> None:
    with pytest.raises(BackendUnavailableError, match="bad Redis URL"):
        await create_backend(bad, BackendOptions(root=Path("."))).open()


async def test_calls_on_a_closed_backend_raise_backend_error(open_backend: OpenBackend) -> None:
    b = await open_backend()
    await b.close()
    with pytest.raises(BackendError, match="not open"):
        await b.claim("a", 1, LEASE_S)
    with pytest.raises(BackendError, match="not open"):
        await b.publish([out("a")])


def test_password_is_redacted_from_the_url() -> None:
    assert redact("redis://user:s3cret@host:6380/2") == "redis://user:***@host:6380/2"
    assert redact("redis://host:6380/2") == "redis://host:6380/2"
    b = create_backend("redis://:s3cret@127.0.0.1:1/0", BackendOptions(root=Path(".")))
    assert "s3cret" not in b.url


# -- keys ---------------------------------------------------------------------------------------
def test_user_names_never_collide_in_keys() -> None:
    keys = Keys("p")
    assert keys.state("a:b", "c") != keys.state("a", "b:c")
    assert keys.step("x:y").stream != keys.step("x").fifo_list("y")
    assert "{" not in keys.step("{tag}").stream  # a step name cannot pick the cluster hash slot
    assert escape("100%:{}") == "100%25%3A%7B%7D"


async def test_every_key_starts_with_the_prefix(url: str, prefix: str, open_backend: OpenBackend) -> None:
    marker = uuid.uuid4().hex  # in every user-chosen name, so keys built from them are found by SCAN
    b = await open_backend()
    step, fifo_step = f"s-{marker}", f"f-{marker}"
    await b.publish([out(step, 1), out(step, 2, delay_s=60), out(fifo_step, 3, fifo=True, group_id=marker)])
    [d] = await b.claim(step, 1, LEASE_S)
    [f] = await b.claim(fifo_step, 1, LEASE_S)
    await b.retry(f, 5)
    await b.dead_letter(d, "x", "")
    await b.state_set(f"ns-{marker}", f"g-{marker}", "k", "1")
    await b.acquire(f"lock-{marker}", "me", 60)
    await b.meta_set(f"meta-{marker}", "1")
    await b.traces_add([TraceRun(f"t-{marker}", 1.0, "{}")])
    await b.wait(step, 0.01)

    client = Redis.from_url(url, decode_responses=True)
    try:
        ours = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        marked = [k async for k in client.scan_iter(match=f"*{marker}*", count=1000)]
    finally:
        await client.aclose()
    assert len(ours) >= 15  # streams, sets, hashes, FIFO structures, DLQ, state, lock, meta
    assert marked and all(k.startswith(f"{prefix}:") for k in marked)


# -- an outage of a private server --------------------------------------------------------------
async def test_outage_raises_backend_error_then_recovers_without_losing_data(
    tmp_path: Path, open_backend: OpenBackend
) -> None:
    with private_redis(tmp_path) as start:
        server = start()
        b = await open_backend(backend_url=f"redis://127.0.0.1:{start.port}/0")  # type: ignore[attr-defined]
        await b.publish([out("a", i) for i in range(3)])
        [d] = await b.claim("a", 1, LEASE_S)

        server.kill()  # SIGKILL: acknowledged writes are in the fsync-always AOF
        server.wait()
        with pytest.raises(BackendError):
            await b.publish([out("a", 99)])
        with pytest.raises(BackendError):
            await b.claim("a", 10, LEASE_S)

        start()
        assert await b.complete(d) is True  # the same object reconnects by itself
        assert sorted(x.envelope.data for x in await b.claim("a", 10, LEASE_S)) == [1, 2]
