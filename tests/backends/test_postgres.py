"""PostgreSQL-only behaviour: the URL and schema, migrations raced by several workers, claims raced by
several backends, NOTIFY wake-ups across connections, the server's clock, outages.

The contract suites run on PostgreSQL too (``conftest.BACKENDS["postgres"]``). The server comes from
:mod:`.postgres_support` (``scripts/with-postgres.sh``); each test works in a schema of its own, dropped
afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from motia_py.backends.base import Envelope, Outgoing, Target, new_id
from motia_py.backends.postgres import PostgresBackend
from motia_py.backends.postgres_base import parse_url, redact
from motia_py.backends.postgres_realtime import Assembler, encode_message
from motia_py.backends.postgres_schema import SCHEMA_VERSION, quote
from motia_py.backends.postgres_sql import Sql, format_style
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.errors import BackendError, BackendUnavailableError
from motia_py.types import Clock

from .postgres_support import check_reachable, drop_schema, new_schema, postgres_url, private_postgres

pytestmark = pytest.mark.postgres

LEASE_S = 30.0
OpenBackend = Callable[..., Awaitable[PostgresBackend]]


@pytest.fixture
def url() -> str:
    u = postgres_url()
    check_reachable(u)
    return u


@pytest.fixture
async def schema(url: str) -> AsyncIterator[str]:
    name = new_schema()
    yield name
    await drop_schema(url, name)


@pytest.fixture
async def open_backend(url: str, schema: str) -> AsyncIterator[OpenBackend]:
    """``await open_backend(clock=None)``: another opened backend object on the test's schema."""
    opened: list[PostgresBackend] = []

    async def make(clock: Clock | None = None, backend_url: str | None = None) -> PostgresBackend:
        made = create_backend(backend_url or url, BackendOptions(root=Path("."), clock=clock, prefix=schema))
        b = made  # the backend itself: PostgreSQL implements every store natively
        assert isinstance(b, PostgresBackend)
        await b.open()
        opened.append(b)
        return b

    yield make
    for b in opened:
        await b.close()


def out(step: str, data: object = None, *, delay_s: float = 0.0, fifo: bool = False,
        group_id: str | None = None) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0,
                   group_id=group_id)
    return Outgoing(env, (Target(step, delay_s=delay_s, fifo=fifo),))


# -- URL, schema, migrations --------------------------------------------------------------------
def test_url_parameters_name_the_schema_and_pool_and_the_rest_goes_to_the_driver() -> None:
    dsn, schema, size = parse_url("postgres://u:pw@db:5433/app?schema=jobs&pool_size=4&sslmode=disable")
    assert (dsn, schema, size) == ("postgresql://u:pw@db:5433/app?sslmode=disable", "jobs", 4)
    assert parse_url("postgresql://db/app", "from-prefix")[1:] == ("from-prefix", 10)
    assert redact("postgres://u:secret@db/app") == "postgres://u:***@db/app"


@pytest.mark.parametrize("bad", ["postgres://db/app?schema=pg_catalog", "postgres://db/app?schema=a;drop",
                                 "postgres://db/app?schema=" + "x" * 49, "postgres://db/app?pool_size=0"])
def test_bad_schema_or_pool_size_is_backend_unavailable(bad: str) -> None:
    with pytest.raises(BackendUnavailableError, match=r"schema name|pool_size"):
        create_backend(bad, BackendOptions(root=Path(".")))


def test_the_publish_statement_converts_to_the_dbapi_style() -> None:
    sql = Sql.build("motia").publish
    text, args = format_style(sql, [f"a{i}" for i in range(17)])
    assert "%" not in sql and "$" not in text and text.count("%s") == 17
    assert sorted(args) == sorted(f"a{i}" for i in range(17))  # each argument once
    assert format_style("SELECT $2, $1, $2", ["a", "b"]) == ("SELECT %s, %s, %s", ["b", "a", "b"])


async def test_unreachable_server_is_backend_unavailable_with_a_clear_message() -> None:
    b = create_backend("postgres://nobody@127.0.0.1:1/none", BackendOptions(root=Path(".")))
    with pytest.raises(BackendUnavailableError, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1/none"):
        await b.open()


async def test_workers_starting_together_create_the_schema_once(url: str, schema: str,
                                                                open_backend: OpenBackend) -> None:
    backends = await asyncio.gather(*(open_backend() for _ in range(6)))
    await backends[0].publish([out("a", 1)])
    assert [d.envelope.data for d in await backends[5].claim("a", 10, LEASE_S)] == [1]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval(f"SELECT array_agg(version) FROM {quote(schema)}.schema_version") == [
            SCHEMA_VERSION]
    finally:
        await conn.close()


async def test_a_newer_schema_is_refused(url: str, schema: str, open_backend: OpenBackend) -> None:
    await open_backend()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"UPDATE {quote(schema)}.schema_version SET version = version + 1")
    finally:
        await conn.close()
    with pytest.raises(BackendUnavailableError, match=f"version {SCHEMA_VERSION + 1}, newer"):
        await open_backend()


async def test_calls_on_a_closed_backend_raise_backend_error(open_backend: OpenBackend) -> None:
    b = await open_backend()
    await b.close()
    with pytest.raises(BackendError, match="not open"):
        await b.claim("a", 1, LEASE_S)


# -- several backends on one database -----------------------------------------------------------
async def test_data_survives_closing_and_reopening(open_backend: OpenBackend) -> None:
    first = await open_backend()
    await first.publish([out("a", i) for i in range(3)])
    [leased] = await first.claim("a", 1, LEASE_S)
    await first.state_set("ns", "g", "k", '{"v": 1}')
    await first.close()

    again = await open_backend()

    assert [d.envelope.data for d in await again.claim("a", 10, LEASE_S)] == [1, 2]
    assert await again.complete(leased) is True  # the lease taken before the reopen is still valid
    assert await again.state_get("ns", "g", "k") == '{"v": 1}'


async def test_four_backends_never_claim_the_same_delivery(open_backend: OpenBackend) -> None:
    backends = [await open_backend() for _ in range(4)]
    await backends[0].publish([out("s", i) for i in range(600)])

    async def drain(backend: PostgresBackend) -> list[str]:
        got: list[str] = []
        while batch := await backend.claim("s", 7, LEASE_S):
            got += [d.id for d in batch]
            assert all(await asyncio.gather(*(backend.complete(d) for d in batch)))
        return got

    got = await asyncio.gather(*(drain(b) for b in backends))

    every = [i for ids in got for i in ids]
    assert len(every) == len(set(every)) == 600
    assert all(got)  # every backend really took part
    assert (await backends[0].stats()).idle


async def test_fifo_groups_stay_serial_across_backends(open_backend: OpenBackend) -> None:
    backends = [await open_backend() for _ in range(3)]
    await backends[0].publish([out("f", i, fifo=True, group_id=f"g{i % 3}") for i in range(45)])
    seen: dict[str, list[int]] = {}
    held: set[str] = set()

    async def drain(backend: PostgresBackend) -> None:
        while batch := await backend.claim("f", 10, LEASE_S):
            groups = {str(d.envelope.group_id) for d in batch}
            assert len(groups) == len(batch) and not groups & held  # one event per group at a time
            held.update(groups)
            for d in batch:
                seen.setdefault(str(d.envelope.group_id), []).append(d.envelope.data)
            await asyncio.sleep(0.001)  # let the other backends try the held groups meanwhile
            held.difference_update(groups)
            assert all(await asyncio.gather(*(backend.complete(d) for d in batch)))

    await asyncio.gather(*(drain(b) for b in backends))

    assert seen == {f"g{g}": list(range(g, 45, 3)) for g in range(3)}


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


async def test_a_failing_call_in_a_batch_fails_alone(open_backend: OpenBackend) -> None:
    b = await open_backend()
    bad = Outgoing(Envelope(id=new_id(), topic="t", data_json='"\x00"', trace_id=new_id(), emitted_at=1.0),
                   (Target("a"),))  # PostgreSQL text cannot hold NUL

    results = await asyncio.gather(b.publish([out("a", 1)]), b.publish([bad]), b.publish([out("a", 2)]),
                                   return_exceptions=True)

    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BackendError)
    assert sorted(d.envelope.data for d in await b.claim("a", 10, LEASE_S)) == [1, 2]


# -- wake-ups -----------------------------------------------------------------------------------
async def listening(url: str, schema: str, n: int = 1, timeout_s: float = 5.0) -> list[int]:
    """Wait until ``n`` connections LISTEN on the schema's channel; their server process ids."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            pids: list[int] = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'motia-py listener' AND "
                "datname = current_database() AND query LIKE $1", f"%LISTEN%{schema}%")]
            if len(pids) >= n or time.monotonic() > deadline:
                return pids
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_publish_from_another_backend_wakes_wait_at_once(url: str, schema: str,
                                                               open_backend: OpenBackend) -> None:
    waiter_side, publisher = await open_backend(), await open_backend()
    waiting = asyncio.ensure_future(waiter_side.wait("a", 10.0))
    assert await listening(url, schema)
    await asyncio.sleep(0.05)  # past the wait's look at the queue: only the notification can end it now
    start = time.monotonic()

    await publisher.publish([out("a")])

    await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - start < 0.5
    assert len(await waiter_side.claim("a", 10, LEASE_S)) == 1


async def test_a_lost_listening_connection_is_replaced(url: str, schema: str, open_backend: OpenBackend) -> None:
    waiter_side, publisher = await open_backend(), await open_backend()
    waiting = asyncio.ensure_future(waiter_side.wait("a", 10.0))
    [pid] = await listening(url, schema)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
    await asyncio.wait_for(waiting, 5.0)  # a lost listener wakes its waiters: they look again

    waiting = asyncio.ensure_future(waiter_side.wait("a", 10.0))
    assert await listening(url, schema)
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await publisher.publish([out("a")])
    await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - start < 0.5


# -- pub/sub over NOTIFY --------------------------------------------------------------------------
def test_long_messages_are_cut_between_characters_and_joined_again() -> None:
    message = "a" + "é☃" * 20_000
    payloads = encode_message("ch:1", message)
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    assembler = Assembler()
    assert [assembler.feed(p) for p in payloads][-1] == ("ch:1", message)
    assert Assembler().feed(encode_message("c", "short")[0]) == ("c", "short")
    broken = Assembler()  # a piece lost (the listener reconnected in between): the message is dropped
    assert [broken.feed(p) for p in payloads[:1] + payloads[2:]] == [None] * (len(payloads) - 1)


async def test_subscriptions_survive_a_lost_listening_connection(url: str, schema: str,
                                                                 open_backend: OpenBackend) -> None:
    subscriber, publisher = await open_backend(), await open_backend()
    sub = await subscriber.pubsub_subscribe("news")
    [pid] = await listening(url, schema)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
    deadline = time.monotonic() + 10
    while (pids := await listening(url, schema, timeout_s=0.1)) in ([], [pid]):  # nobody calls wait()
        assert time.monotonic() < deadline, "the listening connection was not opened again"
    await publisher.pubsub_publish("news", "after")
    assert await asyncio.wait_for(sub.get(), 5.0) == "after"
    assert pids != [pid]


async def test_close_ends_a_pending_wait(open_backend: OpenBackend) -> None:
    b = await open_backend()
    waiting = asyncio.ensure_future(b.wait("a", 30.0))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(b.close(), 5.0)
    await asyncio.wait_for(waiting, 2.0)  # returns instead of waiting for 30 s


async def test_without_an_injected_clock_leases_and_delays_use_the_server_time(open_backend: OpenBackend) -> None:
    a, b = await open_backend(), await open_backend()
    await a.publish([out("a", "now"), out("a", "later", delay_s=0.3)])
    [d1] = await a.claim("a", 10, 0.2)  # a worker that then dies without completing
    assert abs(d1.first_delivered_at - time.time()) < 5  # type: ignore[operator]

    await b.wait("a", 5.0)  # wakes when the lease expires (no sleep in the test)
    again = await b.claim("a", 10, 10)
    while len(again) < 2:  # the delayed one falls due 0.1 s later
        await b.wait("a", 5.0)
        again += await b.claim("a", 10, 10)

    assert [(d.envelope.data, d.attempt, d.expired) for d in again] == [("now", 2, True), ("later", 1, False)]
    assert again[0].id == d1.id and again[0].first_delivered_at == d1.first_delivered_at
    assert await a.complete(d1) is False
    assert all([await b.complete(d) for d in again])


# -- an outage of a private server --------------------------------------------------------------
async def test_outage_raises_backend_unavailable_then_recovers_without_losing_data(
        open_backend: OpenBackend) -> None:
    with private_postgres() as server:
        await asyncio.to_thread(server.start)
        b = await open_backend(backend_url=server.url)
        await b.publish([out("a", i) for i in range(3)])
        [d] = await b.claim("a", 1, LEASE_S)

        await asyncio.to_thread(server.kill)  # SIGKILL: the publish is in the write-ahead log, on disk
        with pytest.raises(BackendUnavailableError):
            await b.publish([out("a", 99)])
        with pytest.raises(BackendUnavailableError):
            await b.claim("a", 10, LEASE_S)

        await asyncio.to_thread(server.start)
        # the same object reconnects by itself. The claim committed asynchronously: if the crash came
        # before it reached the disk, it is forgotten and its event is due again (delivered again)
        held = await b.complete(d)
        assert sorted(x.envelope.data for x in await b.claim("a", 10, LEASE_S)) == ([1, 2] if held else [0, 1, 2])
