"""Cross-process wake-ups on SQLite: a commit in another process reaches a waiting backend as a message
over the notify folder, long before the WAL watcher (the safety net) would have looked; sockets of
killed processes do not get in the way; a producer never listens; writers that send nothing (the
``sqlite3`` shell) are still noticed by the safety net."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from motia_py.backends.base import Envelope, Outgoing, Target, new_id
from motia_py.backends.sqlite import SqliteBackend
from motia_py.backends.sqlite_notify import notify_dir

from ..conftest import ProjectFactory

NEVER_S = 3600.0  # a safety-net interval no test waits for


def backend(path: Path, poll_s: float = NEVER_S) -> SqliteBackend:
    return SqliteBackend(f"sqlite:///{path}", path, poll_s=poll_s)


def out(step: str, delay_s: float = 0.0) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json="1", trace_id=new_id(), emitted_at=time.time())
    return Outgoing(env, (Target(step=step, delay_s=delay_s),))


def sockets(db: Path) -> list[Path]:
    folder = notify_dir(db)
    return sorted(folder.glob("*.sock")) if folder.exists() else []


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def waiting(tmp_path: Path) -> AsyncIterator[SqliteBackend]:
    b = backend(tmp_path / "m.db")
    await b.open()
    try:
        yield b
    finally:
        await b.close()


async def run_python(script: str, timeout_s: float = 60.0) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, stderr.decode()


async def test_an_emit_from_another_process_wakes_a_waiting_backend_long_before_its_safety_net(
        make_project: ProjectFactory, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    root = make_project({
        "motia_py.toml": f'[backend]\nurl = "sqlite:///{db}"\n',
        "flows/f.toml": 'entry_topics = ["a"]\n',
        "steps/a.step.py": """
            config = {"type": "event", "name": "A", "subscribes": ["a"], "emits": [], "flows": ["f"]}
            async def handler(input, ctx):
                pass
        """,
    })
    here = backend(db)
    await here.open()
    try:
        waiter = asyncio.ensure_future(here.wait_any({"A"}, NEVER_S))
        await until(lambda: len(sockets(db)) == 1, "the waiting backend to listen")
        await run_python(textwrap.dedent(f"""
            import asyncio
            from motia_py import Client

            async def main():
                async with Client.from_project({str(root)!r}) as client:
                    await client.emit("a", {{"from": "afar"}})

            asyncio.run(main())
        """))
        assert await asyncio.wait_for(waiter, 10.0) == {"A"}
        [d] = await here.claim("A", 10, 30.0)
        assert json.loads(d.envelope.data_json) == {"from": "afar"}
    finally:
        await here.close()
    assert sockets(db) == []  # closing removed its socket


async def test_a_socket_left_by_a_killed_worker_does_not_block_the_others(
        tmp_path: Path, waiting: SqliteBackend) -> None:
    db = waiting.path
    with subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from motia_py.backends.sqlite import SqliteBackend

        async def main():
            b = SqliteBackend("sqlite:///{db}", Path({str(db)!r}))
            await b.open()
            wait = asyncio.ensure_future(b.wait_any({{"other"}}, 3600))
            while not wait.done() and b._cross.listening is not True:
                await asyncio.sleep(0.01)
            print("listening", flush=True)
            await wait

        asyncio.run(main())
    """)], stdout=subprocess.PIPE, text=True) as killed:
        try:
            assert killed.stdout is not None
            assert killed.stdout.readline().strip() == "listening"
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.wait()
    [stale] = sockets(db)  # left behind: a killed process deletes nothing

    waiter = asyncio.ensure_future(waiting.wait_any({"a"}, NEVER_S))
    await until(lambda: len(sockets(db)) == 2, "the waiting backend to listen")
    producer = backend(db)
    await producer.open()
    try:
        started = time.monotonic()
        await producer.publish([out("a")])
        assert time.monotonic() - started < 5.0  # the dead socket costs no wait
        assert await asyncio.wait_for(waiter, 10.0) == {"a"}
        await until(lambda: not stale.exists(), "the stale socket to be removed")
        assert sockets(db) == [p for p in sockets(db) if p != stale] and len(sockets(db)) == 1
    finally:
        await producer.close()


async def test_a_backend_that_never_waits_never_listens(tmp_path: Path, waiting: SqliteBackend) -> None:
    db = waiting.path
    producer = backend(db)
    await producer.open()
    try:
        await producer.publish([out("a"), out("b")])
        await producer.complete((await producer.claim("a", 1, 30.0))[0], [out("b")])
        assert sockets(db) == []  # nobody waits: no socket, not even the folder's
        assert not notify_dir(db).exists()
    finally:
        await producer.close()


async def test_a_message_wakes_only_the_steps_it_names_and_a_delayed_delivery_waits_for_its_time(
        tmp_path: Path, waiting: SqliteBackend) -> None:
    db = waiting.path
    producer = backend(db)
    await producer.open()
    try:
        waiter = asyncio.ensure_future(waiting.wait_any({"a", "b"}, NEVER_S))
        await until(lambda: len(sockets(db)) == 1, "the waiting backend to listen")
        await producer.publish([out("b")])
        assert await asyncio.wait_for(waiter, 10.0) == {"b"}
        await waiting.claim("b", 1, 30.0)
        waiter = asyncio.ensure_future(waiting.wait_any({"a"}, NEVER_S))
        await asyncio.sleep(0.05)  # the wait has read the due times: nothing for "a"
        started = time.monotonic()
        await producer.publish([out("a", delay_s=0.3)])  # the message makes it read them again
        assert await asyncio.wait_for(waiter, 10.0) == {"a"}
        assert time.monotonic() - started >= 0.25
    finally:
        await producer.close()


async def test_a_commit_that_sends_no_message_is_noticed_by_the_safety_net(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    here = backend(db, poll_s=0.05)
    await here.open()
    try:
        await here.publish([out("a", delay_s=NEVER_S)])
        waiter = asyncio.ensure_future(here.wait_any({"a"}, NEVER_S))
        await until(lambda: len(sockets(db)) == 1, "the waiting backend to listen")
        with sqlite3.connect(db) as shell:  # what the sqlite3 shell would do: no message
            shell.execute("UPDATE deliveries SET available_at = 0")
        assert await asyncio.wait_for(waiter, 10.0) == {"a"}
    finally:
        await here.close()


async def test_a_message_for_a_step_nobody_waits_on_yet_is_not_lost(tmp_path: Path, waiting: SqliteBackend) -> None:
    """A wait trusts the due times it knows until another process says something: a message naming a step
    whose consumer was busy (no wait on it) makes that step's next wait read again."""
    db = waiting.path
    producer = backend(db)
    await producer.open()
    try:
        assert await waiting.claim("b", 1, 30.0) == []  # its due time is known now: nothing
        waiter = asyncio.ensure_future(waiting.wait_any({"a", "c"}, NEVER_S))  # "b"'s consumer is busy
        await until(lambda: len(sockets(db)) == 1, "the waiting backend to listen")
        await producer.publish([out("b")])  # one message...
        await producer.publish([out("c")])  # ... then another, on the same socket after it
        assert await asyncio.wait_for(waiter, 10.0) == {"c"}  # so the first one has arrived too

        assert await asyncio.wait_for(waiting.wait_any({"b"}, NEVER_S), 10.0) == {"b"}
    finally:
        await producer.close()
