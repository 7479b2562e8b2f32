"""PostgreSQL's flow control beyond the shared contract: limits shared by several backend objects (as by
several hosts), the wake-up of another process's waiters when a limited delivery ends, priorities and keys
through the transactional publish statement, and a version 1 schema migrated with its queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from motia_py.backends.base import Envelope, FlowControl, Outgoing, Target, new_id
from motia_py.backends.postgres import PostgresBackend
from motia_py.backends.postgres_schema import MIGRATIONS, SCHEMA_VERSION, quote
from motia_py.backends.postgres_sql import publish_args, publish_rows
from motia_py.backends.registry import BackendOptions, create_backend

from .postgres_support import check_reachable, drop_schema, new_schema, postgres_url

pytestmark = pytest.mark.postgres

LEASE_S = 30.0
OpenBackend = Callable[[], Awaitable[PostgresBackend]]


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
    """``await open_backend()``: another opened backend object on the test's schema."""
    opened: list[PostgresBackend] = []

    async def make() -> PostgresBackend:
        made = create_backend(url, BackendOptions(root=Path("."), prefix=schema))
        b = made  # the backend itself: PostgreSQL implements every store natively
        assert isinstance(b, PostgresBackend)
        await b.open()
        opened.append(b)
        return b

    yield make
    for b in opened:
        await b.close()


def out(step: str, data: object, *, priority: int = 0, rate_key: str | None = None,
        concurrency_key: str | None = None) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0)
    return Outgoing(env, (Target(step, priority=priority, rate_key=rate_key, concurrency_key=concurrency_key),))


async def test_six_backends_claiming_at_once_share_one_global_limit(open_backend: OpenBackend) -> None:
    backends = [await open_backend() for _ in range(6)]
    await backends[0].publish([out("s", i) for i in range(20)])
    control = FlowControl(global_concurrency=3)

    got = await asyncio.gather(*(b.claim("s", 10, LEASE_S, control=control) for b in backends))

    assert sum(len(batch) for batch in got) == 3
    assert (await backends[0].stats()).leased == 3


async def test_six_backends_claiming_at_once_share_one_rate_window(open_backend: OpenBackend) -> None:
    backends = [await open_backend() for _ in range(6)]
    await backends[0].publish([out("s", i, rate_key="k") for i in range(20)])
    control = FlowControl(rate_limit=4, rate_period_s=600.0, rate_keyed=True)

    got = await asyncio.gather(*(b.claim("s", 3, LEASE_S, control=control) for b in backends))

    assert sum(len(batch) for batch in got) == 4


async def test_the_end_of_a_limited_delivery_wakes_the_waiters_of_another_backend(open_backend: OpenBackend
                                                                                   ) -> None:
    worker, other = await open_backend(), await open_backend()
    control = FlowControl(key_concurrency=1)
    await worker.publish([out("s", i, concurrency_key="k") for i in range(2)])
    [running] = await worker.claim("s", 10, LEASE_S, control=control)
    waiting = asyncio.ensure_future(other.wait("s", 10.0, control=control))
    await asyncio.sleep(0.2)  # past the wait's look at the queue: only the notification can end it now
    assert not waiting.done()
    start = time.monotonic()

    assert await worker.complete(running)

    await asyncio.wait_for(waiting, 5.0)
    assert time.monotonic() - start < 1.0
    assert [d.envelope.data for d in await other.claim("s", 10, LEASE_S, control=control)] == [1]


async def test_the_transactional_publish_statement_stores_priority_and_keys(url: str, schema: str,
                                                                          open_backend: OpenBackend) -> None:
    backend = await open_backend()
    await backend.publish([out("s", "plain")])
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():  # as motia_py.transactional runs it on the application's connection
            rows = publish_rows([out("s", "urgent", priority=8, rate_key="r", concurrency_key="c")])
            await conn.execute(backend.sql.publish, *publish_args(rows, None, schema))
    finally:
        await conn.close()

    got = await backend.claim("s", 10, LEASE_S)

    assert [d.envelope.data for d in got] == ["urgent", "plain"]
    assert (got[0].priority, got[0].rate_key, got[0].concurrency_key) == (8, "r", "c")


async def test_a_version_1_schema_is_migrated_with_its_queue(url: str, schema: str,
                                                             open_backend: OpenBackend) -> None:
    s = quote(schema)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.schema_version (version integer NOT NULL); "
                           f"INSERT INTO {s}.schema_version VALUES (1);" + MIGRATIONS[1](s, schema))
        await conn.execute(f"INSERT INTO {s}.deliveries (id, step, event_id, topic, data, trace_id, emitted_at, "
                           "available_at) VALUES ('d1', 's', 'e1', 't', '\"old\"', 'tr', 1, 0)")
    finally:
        await conn.close()

    backend = await open_backend()
    await backend.publish([out("s", "new", priority=1)])
    got = await backend.claim("s", 10, LEASE_S, control=FlowControl(global_concurrency=5))

    assert [(d.envelope.data, d.priority) for d in got] == [("new", 1), ("old", 0)]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval(f"SELECT max(version) FROM {s}.schema_version") == SCHEMA_VERSION
    finally:
        await conn.close()
