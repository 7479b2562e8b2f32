"""Publishes that run on the event loop's thread when the SQLite connection's thread is idle: they never
wait for another process's write lock there, keep their order, and the WAL file stays small although
the connection no longer checkpoints on commit."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from motia_py.backends.base import Envelope, Outgoing, Target, new_id
from motia_py.backends.sqlite import SqliteBackend

HOLD_S = 0.5


def out(i: int) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(i), trace_id=new_id(), emitted_at=time.time())
    return Outgoing(env, (Target(step="a"),))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "m.db")
    await b.open()
    try:
        yield b
    finally:
        await b.close()


def hold_write_lock(path: Path, locked: threading.Event, release: threading.Event) -> None:
    """Another connection (as another process would) takes the write lock until ``release``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_a_publish_waiting_for_another_writer_does_not_block_the_loop_and_keeps_its_order(
        db: SqliteBackend) -> None:
    await db.publish([out(0)])  # the file exists, the connection is idle
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(db.path, locked, release))
    holder.start()
    try:
        await asyncio.to_thread(locked.wait, 10)
        loop = asyncio.get_running_loop()
        loop.call_later(HOLD_S, release.set)
        started = time.monotonic()
        gaps: list[float] = []

        async def tick() -> None:  # the loop keeps turning while the publishes wait
            last = time.monotonic()
            while not release.is_set():
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticker = asyncio.ensure_future(tick())
        await asyncio.gather(*(db.publish([out(i)]) for i in (1, 2)), db.publish([out(3)]))
        await ticker
        assert time.monotonic() - started >= HOLD_S * 0.9  # they did wait for the lock
        assert max(gaps) < HOLD_S / 2
    finally:
        release.set()
        await asyncio.to_thread(holder.join)
    await db.publish([out(4)])
    got = await db.claim("a", 10, 30.0)
    assert [json.loads(d.envelope.data_json) for d in got] == [0, 1, 2, 3, 4]


async def test_the_wal_file_stays_small_under_a_stream_of_single_publishes(db: SqliteBackend) -> None:
    for i in range(3000):
        await db.publish([out(i)])
    assert (db.path.parent / f"{db.path.name}-wal").stat().st_size < 32 * 1024 * 1024
