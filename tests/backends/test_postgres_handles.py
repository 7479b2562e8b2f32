"""PostgreSQL's native job handles beyond the shared contract (``test_handle_contract.py``): keys taken
by several backend objects at once (as by several hosts), handles never between live and finished while
acknowledgements are group-committed, the events of a transactional emit having handles, and a version 2
schema migrated with its queue (the records the state-derived store kept there are no longer read)."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from msgspec.structs import replace

from motia_py.backends.base import Envelope, HandleState, Outgoing, Target, new_id
from motia_py.backends.derived import RESERVED_NAMESPACE
from motia_py.backends.postgres_handle_sql import successor
from motia_py.backends.postgres_schema import MIGRATIONS, SCHEMA_VERSION, quote
from motia_py.backends.postgres_sql import publish_args, publish_rows

from . import test_postgres
from .test_postgres import LEASE_S, OpenBackend

pytestmark = test_postgres.pytestmark
url, schema, open_backend = test_postgres.url, test_postgres.schema, test_postgres.open_backend  # the fixtures


def out(step: str, data: object = None, *, key: str | None = None, env: Envelope | None = None) -> Outgoing:
    env = env or Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0)
    return replace(Outgoing(env, (Target(step),)), key=key, key_ttl_s=60.0 if key else 0.0)


async def test_backends_racing_for_one_key_publish_one_event(open_backend: OpenBackend) -> None:
    backends = [await open_backend() for _ in range(4)]
    items = [out("a", i, key="same") for i in range(40)]

    ids = await asyncio.gather(*(backends[i % 4].publish_deduped([item]) for i, item in enumerate(items)))

    assert len({i[0] for i in ids}) == 1
    assert [d.envelope.id for d in await backends[0].claim("a", 100, LEASE_S)] == [ids[0][0]]


async def test_group_committed_outboxes_take_a_key_once(open_backend: OpenBackend) -> None:
    b = await open_backend()
    await b.publish([out("a", i) for i in range(20)])
    ds = await b.claim("a", 20, LEASE_S)

    results = await asyncio.gather(*(b.complete(d, [out("b", d.envelope.data, key="k")]) for d in ds))

    assert all(results)
    assert len(await b.claim("b", 100, LEASE_S)) == 1


async def test_a_handle_is_live_or_finished_while_acknowledgements_commit(open_backend: OpenBackend) -> None:
    b, reader = await open_backend(), await open_backend()
    envs = [out("a", i) for i in range(200)]
    await b.publish(envs)
    ds = await b.claim("a", 200, LEASE_S)
    done = asyncio.Event()

    async def watch() -> int:
        looks = 0
        while not done.is_set():
            for o in envs[::10]:
                handle = await reader.handle_get(o.envelope.id)
                assert handle is not None and [s.step for s in handle.steps] == ["a"]
                looks += 1
        return looks

    watcher = asyncio.ensure_future(watch())
    assert all(await asyncio.gather(*(b.complete_with_result(d, [], str(d.envelope.data)) for d in ds)))
    done.set()
    assert await watcher > 0
    for o in envs:
        handle = await reader.handle_get(o.envelope.id)
        assert handle is not None
        assert [(s.state, s.result_json) for s in handle.steps] == [(HandleState.SUCCEEDED, o.envelope.data_json)]


async def test_two_deliveries_of_one_step_acknowledged_in_one_batch(open_backend: OpenBackend) -> None:
    b = await open_backend()
    twice = out("a", 1)
    await b.publish([twice, twice])
    ds = await b.claim("a", 2, LEASE_S)

    assert await asyncio.gather(*(b.complete_with_result(d, [], '"r"') for d in ds)) == [True, True]
    handle = await b.handle_get(twice.envelope.id)
    assert handle is not None and [(s.state, s.result_json) for s in handle.steps] == [(HandleState.SUCCEEDED, '"r"')]


async def test_an_event_emitted_in_the_applications_transaction_has_a_handle(url: str, open_backend: OpenBackend
                                                                               ) -> None:
    b = await open_backend()
    item = out("a", 1)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.fetchval(b.sql.publish, *publish_args(publish_rows([item]), None, b.schema))
    finally:
        await conn.close()

    handle = await b.handle_get(item.envelope.id)
    assert handle is not None and [s.state for s in handle.steps] == [HandleState.QUEUED]
    assert await b.handle_find(item.envelope.id[:10], 10) == [item.envelope.id]


async def test_a_version_2_schema_is_migrated_with_its_queue(url: str, schema: str, open_backend: OpenBackend
                                                             ) -> None:
    s = quote(schema)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {s}; CREATE TABLE {s}.schema_version (version integer NOT NULL); "
                           f"INSERT INTO {s}.schema_version VALUES (2);" + MIGRATIONS[1](s, schema)
                           + MIGRATIONS[2](s, schema))
        await conn.execute(f"INSERT INTO {s}.deliveries (id, step, event_id, topic, data, trace_id, emitted_at, "
                           "available_at) VALUES ('d1', 's', 'e1', 't', '\"old\"', 'tr', 1, 0)")
        # a record of the state-derived store that version 2 used: no longer read
        await conn.execute(f"INSERT INTO {s}.state VALUES ($1, 'handles', 'e0', $2)", RESERVED_NAMESPACE,
                           json.dumps({"i": ["t", "tr", 1], "s": {"s": {"s": "succeeded", "a": 1}}, "p": {}}))
    finally:
        await conn.close()

    backend = await open_backend()
    handle = await backend.handle_get("e1")
    assert handle is not None and [(s.step, s.state) for s in handle.steps] == [("s", HandleState.QUEUED)]
    assert await backend.handle_get("e0") is None
    [d] = await backend.claim("s", 10, LEASE_S)
    assert await backend.complete_with_result(d, [], '"done"')
    handle = await backend.handle_get("e1")
    assert handle is not None and [s.result_json for s in handle.steps] == ['"done"']
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval(f"SELECT max(version) FROM {s}.schema_version") == SCHEMA_VERSION == 3
    finally:
        await conn.close()


@pytest.mark.parametrize(("prefix", "upper"), [("ab", "ac"), ("a\U0010ffff", "b"), ("", None), ("\U0010ffff", None),
                                               ("x\ud7ff", "x\ue000"), ("é", "ê")])
def test_a_prefix_is_an_index_range_up_to_its_successor(prefix: str, upper: str | None) -> None:
    assert successor(prefix) == upper
    for longer in (prefix, prefix + "\x01", prefix + "\U0010ffff\U0010ffff"):
        assert upper is None or longer.encode() < upper.encode()
