"""PostgreSQL's own transactional commits (:mod:`motia_py.backends.postgres_tx`): the registry hands out the
backend itself, which commits atomically, and commits of two processes (two backend objects) on one
database exclude each other. The rules themselves are checked by ``test_tx_contract``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from motia_py.backends.base import StateRead, StateWrite
from motia_py.backends.compose import atomic_transactions
from motia_py.backends.postgres import PostgresBackend
from motia_py.backends.registry import BackendOptions, create_backend

from .postgres_support import check_reachable, drop_schema, new_schema, postgres_url

pytestmark = [pytest.mark.postgres]


def test_the_registry_returns_the_postgres_backend_itself_with_atomic_commits(tmp_path: Path) -> None:
    backend = create_backend("postgres://u@localhost/db", BackendOptions(root=tmp_path))

    assert isinstance(backend, PostgresBackend)
    assert atomic_transactions(backend)


async def test_commits_of_two_processes_on_one_counter_each_count_once() -> None:
    url = postgres_url()
    check_reachable(url)
    schema = new_schema()
    a, b = PostgresBackend(url, schema=schema), PostgresBackend(url, schema=schema)
    await a.open()
    await b.open()
    try:
        async def increment(backend: PostgresBackend) -> None:
            while True:  # a transactional run: read, write what it read plus one, commit; again on a conflict
                old = await backend.state_get("f", "g", "n")
                new = str(int(old or "0") + 1)
                if await backend.complete_tx(None, [], [StateWrite("f", "g", "n", new)],
                                             [StateRead("f", "g", "n", old)]) == "ok":
                    return

        await asyncio.gather(*(increment(backend) for _ in range(10) for backend in (a, b)))

        assert await a.state_get("f", "g", "n") == "20"
    finally:
        await a.close()
        await b.close()
        await drop_schema(url, schema)
