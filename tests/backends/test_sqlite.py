"""What only the SQLite backend promises: durability, URLs, sharing one file between processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from motia_py.backends.base import Backend, Delivery, Envelope, Outgoing, Target, new_id
from motia_py.backends.registry import BackendOptions, create_backend
from motia_py.backends.sqlite import SqliteBackend
from motia_py.backends.sqlite_schema import SCHEMA_VERSION
from motia_py.errors import BackendError, BackendUnavailableError
from motia_py.meta_keys import cron_running, cron_tick
from motia_py.testing import VirtualClock

LEASE_S = 30.0


def out(data: Any, *steps: str, fifo: bool = False) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(),
                   emitted_at=time.time(), group_id="g" if fifo else None)
    return Outgoing(env, tuple(Target(step=s, fifo=fifo) for s in steps))


def open_at(path: Path, clock: VirtualClock | None = None) -> Backend:
    return create_backend(f"sqlite:///{path}", BackendOptions(root=path.parent, clock=clock))


@pytest.fixture
async def db(tmp_path: Path, clock: VirtualClock) -> AsyncIterator[Backend]:
    b = open_at(tmp_path / "m.db", clock)
    await b.open()
    try:
        yield b
    finally:
        await b.close()


async def test_queue_state_and_dead_letters_survive_reopening(tmp_path: Path, clock: VirtualClock) -> None:
    b = open_at(tmp_path / "m.db", clock)
    await b.open()
    await b.publish([out(1, "a"), out(2, "a"), out(3, "b")])
    [d] = await b.claim("b", 1, LEASE_S)
    await b.dead_letter(d, "boom", "tb")
    [running] = await b.claim("a", 1, LEASE_S)  # "killed" mid-handler: never completed
    await b.state_set("ns", "g", "k", '{"v": 1}')
    await b.meta_set("cron-last:x", "7")
    await b.close()

    b = open_at(tmp_path / "m.db", clock)
    await b.open()
    try:
        [second] = await b.claim("a", 10, LEASE_S)
        assert second.envelope.data == 2
        assert await b.complete(second)
        clock.advance(LEASE_S)
        again = await b.claim("a", 10, LEASE_S)
        assert [(x.id, x.attempt) for x in again] == [(running.id, 2)]
        assert await b.state_get("ns", "g", "k") == '{"v": 1}'
        assert await b.meta_get("cron-last:x") == "7"
        assert [(x.id, x.error, x.traceback) for x in await b.dlq_list()] == [(d.id, "boom", "tb")]
    finally:
        await b.close()


async def test_file_is_in_wal_mode(db: Backend, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "m.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_relative_url_resolves_against_the_project_root(tmp_path: Path) -> None:
    b = create_backend("sqlite:///.motia/motia.db", BackendOptions(root=tmp_path))
    assert isinstance(b, SqliteBackend)
    assert b.path == tmp_path / ".motia" / "motia.db"
    await b.open()
    await b.close()
    assert (tmp_path / ".motia" / "motia.db").is_file()


@pytest.mark.parametrize("url", ["sqlite://motia.db", "sqlite://", "sqlite:///"])
def test_url_without_a_path_is_rejected(tmp_path: Path, url: str) -> None:
    with pytest.raises(BackendUnavailableError, match=re.escape("sqlite:///relative/path.db")):
        create_backend(url, BackendOptions(root=tmp_path))


async def test_directory_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    b = open_at(tmp_path / "file" / "sub" / "m.db")
    with pytest.raises(BackendUnavailableError, match="cannot open SQLite database") as info:
        await b.open()
    assert isinstance(info.value.__cause__, OSError)


async def test_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "m.db").write_bytes(b"garbage " * 1000)
    with pytest.raises(BackendUnavailableError) as info:
        await open_at(tmp_path / "m.db").open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "m.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(BackendUnavailableError, match="newer"):
        await open_at(tmp_path / "m.db").open()


async def test_calls_after_close_raise_backend_error(tmp_path: Path) -> None:
    b = open_at(tmp_path / "m.db")
    await b.open()
    await b.close()
    with pytest.raises(BackendError, match="not open"):
        await b.claim("a", 1, LEASE_S)


async def test_a_failing_call_fails_alone_within_its_transaction(db: Backend) -> None:
    bad = Envelope(id=new_id(), topic="t", data_json=["not", "text"], trace_id="x", emitted_at=0.0)  # type: ignore[arg-type]
    results = await asyncio.gather(
        db.publish([out(1, "a")]), db.publish([Outgoing(bad, (Target("a"),))]), db.publish([out(2, "a")]),
        return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], BackendError)
    assert isinstance(results[1].__cause__, sqlite3.Error)
    assert [d.envelope.data for d in await db.claim("a", 10, LEASE_S)] == [1, 2]


async def test_concurrent_completes_are_each_answered(db: Backend) -> None:
    await db.publish([out(i, "a") for i in range(300)])
    deliveries = await db.claim("a", 300, LEASE_S)
    results = await asyncio.gather(*(db.complete(d, [out(d.envelope.data, "b")]) for d in deliveries),
                                   db.complete(deliveries[0]))
    assert results == [True] * 300 + [False]  # the second complete() of one attempt loses
    assert sorted(d.envelope.data for d in await db.claim("b", 1000, LEASE_S)) == list(range(300))
    assert await db.claim("a", 10, LEASE_S) == []


async def test_urgent_calls_are_committed_before_the_work_queued_ahead_of_them(tmp_path: Path) -> None:
    from motia_py.backends._sqlite_thread import Connection, each
    from motia_py.backends.sqlite_schema import connect

    ran: list[str] = []
    started, gate = threading.Event(), threading.Event()

    @each
    def blocker(conn: sqlite3.Connection, arg: str) -> None:  # holds the thread inside a transaction
        ran.append(arg)
        started.set()
        gate.wait(10)

    @each
    def write(conn: sqlite3.Connection, arg: str) -> bool:
        """Whether another connection sees the urgent call's write already (i.e. it was committed)."""
        ran.append(arg)
        conn.execute("INSERT INTO meta VALUES (?, '')", (arg,))
        with contextlib.closing(sqlite3.connect(tmp_path / "m.db")) as other:
            return other.execute("SELECT 1 FROM meta WHERE key = 'complete'").fetchone() is not None

    db = Connection(tmp_path / "m.db", connect)
    await db.start()
    try:
        first = db.submit(blocker, "running", True)
        await asyncio.to_thread(started.wait, 10)
        queued = [db.submit(write, f"claim {i}", True) for i in range(3)]
        settled = db.submit(write, "complete", True, urgent=True)
        await asyncio.sleep(0)  # the submissions reach the thread while it is busy
        gate.set()
        await first
        assert await settled is False  # its own transaction, not committed yet while it ran
        assert await asyncio.gather(*queued) == [True, True, True]  # committed before they ran
        assert ran == ["running", "complete", "claim 0", "claim 1", "claim 2"]
    finally:
        gate.set()
        await db.stop()


async def test_large_publish_keeps_its_order(db: Backend) -> None:
    await db.publish([out(i, "a") for i in range(150)])  # several multi-row statements
    assert [d.envelope.data for d in await db.claim("a", 1000, LEASE_S)] == list(range(150))


def _claim_rounds(path: Path, rounds: threading.Barrier) -> list[str]:
    """One "process": its own backend, thread and event loop. Every round both claimers claim at the
    same moment (the barrier), then complete what they got."""

    async def run() -> list[str]:
        b = open_at(path)
        await b.open()
        got: list[str] = []
        try:
            for _ in range(60):  # 60 rounds x 2 claimers x 5 > 500
                await asyncio.to_thread(rounds.wait, 10)
                batch = await b.claim("a", 5, 60)
                got += [d.id for d in batch]
                assert all(await asyncio.gather(*(b.complete(d) for d in batch)))
        finally:
            await b.close()
        return got

    return asyncio.run(run())


async def test_two_backends_on_one_file_never_lease_the_same_delivery(tmp_path: Path, db: Backend) -> None:
    await db.publish([out(i, "a") for i in range(500)])
    rounds = threading.Barrier(2)
    results: list[list[str]] = [[], []]

    def work(i: int) -> None:
        results[i] = _claim_rounds(tmp_path / "m.db", rounds)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join, 20)

    first, second = set(results[0]), set(results[1])
    assert len(results[0]) + len(results[1]) == 500
    assert first.isdisjoint(second)
    assert first and second
    assert (await db.stats()).idle


async def test_wait_notices_a_publish_through_another_connection(
    tmp_path: Path, db: Backend, clock: VirtualClock
) -> None:
    other = open_at(tmp_path / "m.db", clock)
    await other.open()
    try:
        started = time.monotonic()
        waiter = asyncio.ensure_future(db.wait("a", 5.0))
        await asyncio.sleep(0)
        await other.publish([out(1, "a")])
        await asyncio.wait_for(waiter, 2.0)
        assert time.monotonic() - started < 1.0
        assert len(await db.claim("a", 10, LEASE_S)) == 1
    finally:
        await other.close()


@pytest.mark.slow
async def test_nothing_is_lost_when_a_worker_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, json, time
        from pathlib import Path
        from motia_py.backends.base import Envelope, Outgoing, Target
        from motia_py.backends.registry import BackendOptions, create_backend

        async def main():
            b = create_backend("sqlite:///{tmp_path / 'm.db'}", BackendOptions(root=Path(".")))
            await b.open()
            for i in range(0, 100, 10):
                await b.publish([Outgoing(Envelope(id=f"e{{j}}", topic="t", data_json=json.dumps(j), trace_id="tr",
                                                   emitted_at=time.time()), (Target("a"),)) for j in range(i, i + 10)])
            running = await b.claim("a", 3, 1.0)  # mid-handler when killed
            print(json.dumps([d.id for d in running]), flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10.0)
        assert line, (await proc.communicate())[1].decode()
    finally:
        proc.kill()  # SIGKILL: no close(), no checkpoint
        await proc.wait()
    running = json.loads(line)

    clock = VirtualClock(time.time() + 2.0)  # past the killed worker's leases
    b = open_at(tmp_path / "m.db", clock)
    await b.open()
    try:
        expired = [await b.claim("a", 1000, LEASE_S) for _ in running]  # one at a time
        rest = await b.claim("a", 1000, LEASE_S)
        assert [len(batch) for batch in expired] == [1] * len(running)
        assert {batch[0].id for batch in expired} == set(running)
        killed = f"{socket.gethostname()}:{proc.pid}"
        assert {(d.attempt, d.expired, d.last_owner) for [d] in expired} == {(2, True, killed)}
        assert sorted(d.envelope.data for d in [*rest, *(d for [d] in expired)]) == list(range(100))
        assert {(d.attempt, d.expired) for d in rest} == {(1, False)}
    finally:
        await b.close()


@pytest.mark.slow
async def test_publish_from_another_process_is_claimed_here(tmp_path: Path) -> None:
    here = open_at(tmp_path / "m.db")
    await here.open()
    script = textwrap.dedent(f"""
        import asyncio, time
        from pathlib import Path
        from motia_py.backends.base import Envelope, Outgoing, Target
        from motia_py.backends.registry import BackendOptions, create_backend

        async def main():
            b = create_backend("sqlite:///{tmp_path / 'm.db'}", BackendOptions(root=Path(".")))
            await b.open()
            env = Envelope(id="e1", topic="t", data_json='"from afar"', trace_id="tr", emitted_at=time.time())
            await b.publish([Outgoing(env, (Target("a"),))])
            await b.close()

        asyncio.run(main())
    """)
    try:
        waiter = asyncio.ensure_future(here.wait("a", 10.0))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=subprocess.PIPE)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10.0)
        assert proc.returncode == 0, stderr.decode()
        finished = time.monotonic()
        await asyncio.wait_for(waiter, 1.0)  # the poller saw the other process's commit
        assert time.monotonic() - finished < 0.5
        [d] = await here.claim("a", 10, LEASE_S)
        assert isinstance(d, Delivery)
        assert (d.envelope.id, d.envelope.data) == ("e1", "from afar")
    finally:
        await here.close()


async def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3

    from motia_py.backends.base import TraceRun
    from motia_py.backends.sqlite import SqliteBackend

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, step TEXT NOT NULL,
            event_id TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL,
            emitted_at REAL NOT NULL, group_id TEXT, source TEXT, fifo_group TEXT, available_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, lease_until REAL, first_delivered_at REAL);
        CREATE TABLE dead_letters (id TEXT NOT NULL UNIQUE, step TEXT NOT NULL, event_id TEXT NOT NULL,
            topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL, emitted_at REAL NOT NULL,
            group_id TEXT, source TEXT, attempts INTEGER NOT NULL, error TEXT NOT NULL, traceback TEXT NOT NULL,
            failed_at REAL NOT NULL, first_attempt_at REAL);
        CREATE INDEX deliveries_leased ON deliveries (step, available_at)
            WHERE fifo_group IS NULL AND lease_until IS NOT NULL;
        INSERT INTO deliveries (id, step, event_id, topic, data, trace_id, emitted_at, available_at)
            VALUES ('d1', 'A', 'e1', 't', '{"x":1}', 'tr', 1.0, 0);
        INSERT INTO deliveries (id, step, event_id, topic, data, trace_id, emitted_at, available_at, attempts,
                                lease_until, first_delivered_at)
            VALUES ('d2', 'A', 'e2', 't', '{"x":2}', 'tr', 1.0, 5.0, 1, 5.0, 1.0);  -- leased, expired
        PRAGMA user_version = 1;
    """)
    conn.close()
    backend = SqliteBackend("sqlite:///old.db", path, identity="new:1")
    await backend.open()
    try:
        [d2] = await backend.claim("A", 10, 30)  # the expired lease alone, its owner unknown
        assert (d2.envelope.data, d2.attempt, d2.expired, d2.last_owner) == ({"x": 2}, 2, True, None)
        [d] = await backend.claim("A", 10, 30)
        assert (d.envelope.data, d.envelope.traceparent) == ({"x": 1}, None)  # queued work survives the upgrade
        await backend.traces_add([TraceRun("t1", 1.0, "{}")])  # and the new tables exist
        assert await backend.traces_recent(1) == ["t1"]
        assert await backend.complete_with_result(d, [], '"done"')  # job handles of work queued before
        handle = await backend.handle_get("e1")
        assert handle is not None and [(s.state.value, s.result_json) for s in handle.steps] == [("succeeded",
                                                                                                 '"done"')]
    finally:
        await backend.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, owner FROM deliveries").fetchall() == [("d2", "new:1")]  # d completed
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"deliveries_expiry", "deliveries_event"} <= indexes and "deliveries_leased" not in indexes
    conn.close()


async def test_a_version_3_file_loses_its_per_tick_cron_markers(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    b = SqliteBackend("sqlite:///v3.db", path)
    await b.open()
    await b.acquire(cron_running("Tick"), "worker", 60)  # a lease of another kind stays
    await b.meta_set(cron_tick("Tick"), "1700000010.0")
    await b.close()
    with sqlite3.connect(path) as conn:  # as schema 3 left it: a lease per fired tick
        conn.executemany("INSERT INTO leases VALUES (?, 'owner', 9e9)",
                         [(f"{cron_tick('Tick')}:{1_700_000_000 + i:.3f}",) for i in range(500)])
        conn.execute("PRAGMA user_version = 3")
    conn.close()

    b = SqliteBackend("sqlite:///v3.db", path)
    await b.open()
    await b.close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT key FROM leases").fetchall() == [(cron_running("Tick"),)]
        assert conn.execute("SELECT key, value FROM meta").fetchall() == [(cron_tick("Tick"), "1700000010.0")]
    conn.close()


def _open_and_close(path: str) -> None:
    import asyncio

    from motia_py.backends.sqlite import SqliteBackend

    async def go() -> None:
        backend = SqliteBackend("sqlite:///x", Path(path))
        await backend.open()
        await backend.close()

    asyncio.run(go())


def test_processes_starting_together_on_a_new_file_all_open_it(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # fast starts: the processes really do race
    for i in range(30):
        path = tmp_path / f"race{i}" / ".motia" / "m.db"
        procs = [ctx.Process(target=_open_and_close, args=(str(path),)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * 8  # nobody gets "database is locked"


async def test_a_damaged_file_is_reported_as_damaged_with_what_to_do(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "m.db"
    b = open_at(path, clock)
    await b.open()
    await b.publish([out(i, "a") for i in range(200)])
    await b.close()
    assert not (tmp_path / "m.db-wal").exists() or (tmp_path / "m.db-wal").stat().st_size == 0  # all in the file
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")  # the header's page size
    path.write_bytes(data[:page] + b"\x5a" * (len(data) - page))  # every page but the schema's: garbage

    b = open_at(path, clock)
    try:
        with pytest.raises(BackendError) as raised:
            await b.open()
            await b.claim("a", 10, LEASE_S)
    finally:
        with contextlib.suppress(BackendError):
            await b.close()

    message = str(raised.value)
    assert "malformed" in message  # SQLite's own words, then what to do
    assert f"the file is damaged: stop every process that uses it, then restore {path} from a backup" in message
    assert f"sqlite3 {path} .recover" in message


@pytest.mark.parametrize("n", [1, 2, 4, 5, 16, 17, 64, 65, 130])
async def test_any_number_of_claims_and_acknowledgements_in_one_batch_touch_exactly_those(
        db: Backend, clock: VirtualClock, n: int) -> None:
    # the statements over a list of deliveries come in a few sizes, the list padded with NULLs to the next
    await db.publish([out(i, "a") for i in range(n)] + [out("left", "a"), out("other", "b")])

    got = await db.claim("a", n, LEASE_S)
    assert sorted(d.envelope.data for d in got) == list(range(n))
    assert all(await asyncio.gather(*(db.complete(d) for d in got)))  # acknowledged in one transaction

    clock.advance(LEASE_S + 1)  # a delivery still leased would be due again now
    assert [d.envelope.data for d in await db.claim("a", 1000, LEASE_S)] == ["left"]
    assert [d.envelope.data for d in await db.claim("b", 1000, LEASE_S)] == ["other"]
