"""Transactional enqueue on PostgreSQL: ``Client.emit(..., connection=conn)`` publishes inside the caller's
own transaction. A rolled-back transaction enqueues nothing and a committed one enqueues the event once,
which a running worker handles once, woken by the transaction's NOTIFY (its poll is far too slow to
find it in time). Each kind of connection: asyncpg, SQLAlchemy async (connection and session), psycopg
(DB-API), SQLAlchemy sync (connection and session), Django's ``connection``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from motia_py.client import Client
from motia_py.errors import BackendError
from motia_py.runtime import Runtime, backend_for, load_project
from motia_py.settings import load_settings

from .backends.postgres_support import check_reachable, drop_schema, new_schema, postgres_url
from .conftest import ProjectFactory
from .processes import lines

pytestmark = [pytest.mark.postgres]

STEP = """
    from pathlib import Path
    OUT = Path(__file__).resolve().parents[1] / "handled.log"
    config = {"type": "event", "name": "Confirm", "subscribes": ["order.placed"], "emits": [], "flows": ["shop"]}
    async def handler(input, ctx):
        with OUT.open("a") as f:
            f.write(f"{input['order']}\\n")
"""


@dataclass
class Shop:
    """A project on a fresh schema of the test database, and a worker running it."""

    root: Path
    url: str  # the backend URL (with its schema)
    dsn: str  # the database alone, for the application's connections
    client: Client

    def handled(self) -> list[str]:
        return lines(self.root / "handled.log")

    async def wait_handled(self, order: str) -> None:
        deadline = time.monotonic() + 5  # the worker polls every 60 s: only the NOTIFY wakes it in time
        while order not in self.handled():
            assert time.monotonic() < deadline, f"order {order} not handled: {self.handled()}"
            await asyncio.sleep(0.01)

    async def queued(self) -> int:
        stats = await self.client.backend.stats()
        return stats.ready + stats.delayed + stats.leased


@pytest.fixture
def schema() -> Iterator[str]:
    url = postgres_url()
    check_reachable(url)
    name = new_schema()
    yield name
    asyncio.run(drop_schema(url, name))


@pytest.fixture
async def shop(make_project: ProjectFactory, schema: str) -> AsyncIterator[Shop]:
    dsn = postgres_url()
    url = f"{dsn}?schema={schema}"
    root = make_project({"motia_py.toml": f'[backend]\nurl = "{url}"\n',
                         "flows/shop.toml": 'entry_topics = ["order.placed"]\n', "steps/confirm.step.py": STEP})
    settings = load_settings(root, env={})
    project, _ = load_project(settings)
    runtime = Runtime(project, backend_for(settings), cron=False, poll_s=60)
    await runtime.start()
    client = Client.from_project(root)
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY)")
    await conn.close()
    try:
        yield Shop(root, url, dsn, client)
    finally:
        await asyncio.to_thread(client.close)  # the loop thread of emit_sync, if it started
        await client.aclose()
        await runtime.stop(5)
        conn = await asyncpg.connect(dsn)
        await conn.execute("DROP TABLE IF EXISTS orders")
        await conn.close()


class Declined(Exception):
    pass


async def orders(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT id FROM orders ORDER BY id")]
    finally:
        await conn.close()


async def test_asyncpg_rolled_back_emit_never_runs_and_committed_one_runs_once(shop: Shop) -> None:
    conn = await asyncpg.connect(shop.dsn)
    try:
        with pytest.raises(Declined):
            async with conn.transaction():
                await conn.execute("INSERT INTO orders VALUES ('o1')")
                await shop.client.emit("order.placed", {"order": "o1"}, connection=conn)
                raise Declined
        assert await shop.queued() == 0
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES ('o2')")
            await shop.client.emit("order.placed", {"order": "o2"}, connection=conn)
            assert await shop.queued() == 0  # not visible before the commit
    finally:
        await conn.close()
    await shop.wait_handled("o2")
    await asyncio.sleep(0.2)  # room for a duplicate to show up, if there were one
    assert shop.handled() == ["o2"]
    assert await orders(shop.dsn) == ["o2"]


async def test_sqlalchemy_async_connection_enqueues_with_its_commit(shop: Shop) -> None:
    engine = create_async_engine(shop.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        async with engine.connect() as conn:
            await shop.client.emit("order.placed", {"order": "a1"}, connection=conn)  # first statement of it
            await conn.execute(sqlalchemy.text("INSERT INTO orders VALUES ('a1')"))
            await conn.rollback()
            assert await shop.queued() == 0
            await conn.execute(sqlalchemy.text("INSERT INTO orders VALUES ('a2')"))
            await shop.client.emit("order.placed", {"order": "a2"}, connection=conn)
            await conn.commit()
    finally:
        await engine.dispose()
    await shop.wait_handled("a2")
    assert shop.handled() == ["a2"]
    assert await orders(shop.dsn) == ["a2"]


async def test_sqlalchemy_async_session_as_in_the_fastapi_example(shop: Shop) -> None:
    engine = create_async_engine(shop.dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    sessions = async_sessionmaker(engine)
    try:
        for order, fail in (("f1", True), ("f2", False)):
            async with sessions() as db:
                with contextlib.suppress(Declined):
                    async with db.begin():
                        await db.execute(sqlalchemy.text("INSERT INTO orders VALUES (:id)"), {"id": order})
                        await shop.client.emit("order.placed", {"order": order}, connection=db)
                        if fail:
                            raise Declined
    finally:
        await engine.dispose()
    await shop.wait_handled("f2")
    assert shop.handled() == ["f2"]
    assert await orders(shop.dsn) == ["f2"]


# the synchronous callers run in a thread, as a Django or Flask view would, while the worker runs on the loop
async def test_psycopg_connection_rolled_back_and_committed(shop: Shop) -> None:
    def view() -> None:
        with psycopg.connect(shop.dsn) as conn:
            conn.execute("INSERT INTO orders VALUES ('p1')")
            shop.client.emit_sync("order.placed", {"order": "p1"}, connection=conn)
            conn.rollback()
            conn.execute("INSERT INTO orders VALUES ('p2')")
            shop.client.emit_sync("order.placed", {"order": "p2"}, connection=conn, message_group_id="g")
            conn.commit()

    await asyncio.to_thread(view)
    await shop.wait_handled("p2")
    assert shop.handled() == ["p2"]
    assert await orders(shop.dsn) == ["p2"]


async def test_sqlalchemy_connection_rolled_back_and_committed(shop: Shop) -> None:
    def view() -> None:
        engine = sqlalchemy.create_engine(shop.dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("INSERT INTO orders VALUES ('s1')"))
                shop.client.emit_sync("order.placed", {"order": "s1"}, connection=conn)
                conn.rollback()
                with conn.begin():
                    conn.execute(sqlalchemy.text("INSERT INTO orders VALUES ('s2')"))
                    shop.client.emit_sync("order.placed", {"order": "s2"}, connection=conn)
            with Session(engine) as session:
                with contextlib.suppress(Declined), session.begin():
                    session.execute(sqlalchemy.text("INSERT INTO orders VALUES ('s3')"))
                    shop.client.emit_sync("order.placed", {"order": "s3"}, connection=session)
                    raise Declined
                with session.begin():
                    session.execute(sqlalchemy.text("INSERT INTO orders VALUES ('s4')"))
                    shop.client.emit_sync("order.placed", {"order": "s4"}, connection=session)
        finally:
            engine.dispose()

    await asyncio.to_thread(view)
    await shop.wait_handled("s4")
    assert sorted(shop.handled()) == ["s2", "s4"]
    assert await orders(shop.dsn) == ["s2", "s4"]


DJANGO = """
    import os, sys
    import django
    from django.conf import settings
    from urllib.parse import urlsplit
    url = urlsplit(os.environ["SHOP_DSN"])
    settings.configure(DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"), "USER": url.username,
        "HOST": url.hostname, "PORT": url.port}}, USE_TZ=True)
    django.setup()
    from django.db import connection, transaction
    import motia_py
    client = motia_py.Client.from_project(sys.argv[1])
    try:
        with transaction.atomic():
            connection.cursor().execute("INSERT INTO orders VALUES ('d1')")
            client.emit_sync("order.placed", {"order": "d1"}, connection=connection)
            raise KeyError("declined")
    except KeyError:
        pass
    with transaction.atomic():
        connection.cursor().execute("INSERT INTO orders VALUES ('d2')")
        client.emit_sync("order.placed", {"order": "d2"}, connection=connection)
    client.close()
"""


async def test_django_connection_enqueues_with_the_atomic_block(shop: Shop) -> None:
    assert urlsplit(shop.dsn).username, "the Django test needs a user name in MOTIA_PY_TEST_POSTGRES_URL"
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", textwrap.dedent(DJANGO), str(shop.root)], capture_output=True,
        text=True, timeout=60, env={**os.environ, "SHOP_DSN": shop.dsn})
    assert result.returncode == 0, result.stderr
    await shop.wait_handled("d2")
    assert shop.handled() == ["d2"]
    assert await orders(shop.dsn) == ["d2"]


async def test_a_connection_emit_needs_the_postgres_backend(make_project: ProjectFactory) -> None:
    root = make_project({"flows/shop.toml": 'entry_topics = ["order.placed"]\n', "steps/confirm.step.py": STEP})
    async with Client.from_project(root) as client:  # memory://
        with pytest.raises(BackendError, match="needs the postgres backend"):
            await client.emit("order.placed", {"order": "x"}, connection=object())


async def test_a_connection_of_the_wrong_kind_is_refused(shop: Shop) -> None:
    with pytest.raises(TypeError, match="asyncpg connection"):
        await shop.client.emit("order.placed", {"order": "x"}, connection=object())
    conn = await asyncpg.connect(shop.dsn)
    sync_client = Client.from_project(shop.root)  # a client is used from sync code or from async code, not both
    try:
        with pytest.raises(TypeError, match=r"await client\.emit"):
            await asyncio.to_thread(sync_client.emit_sync, "order.placed", {"order": "x"}, connection=conn)
    finally:
        await asyncio.to_thread(sync_client.close)
        await conn.close()
    assert await shop.queued() == 0
