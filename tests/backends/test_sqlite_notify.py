"""The SQLite notifier's own rules: its folder, sockets left by killed processes, and closing."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

from motia_py.backends.sqlite_notify import Notifier, notify_dir


def test_the_folder_is_beside_the_database_unless_its_path_is_too_long(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory() as short:  # tmp_path may be too long already (pytest -n adds a level)
        assert notify_dir(Path(short) / "m.db") == Path(short) / "m.db-notify"
    deep = tmp_path / ("x" * 120) / "m.db"
    moved = notify_dir(deep)
    assert moved.name.startswith("motia-notify-") and moved == notify_dir(deep)  # the same for every process
    assert moved != notify_dir(tmp_path / ("y" * 120) / "m.db")


async def test_a_socket_left_by_a_dead_process_is_removed_and_the_live_ones_still_get_messages(
        tmp_path: Path) -> None:
    folder = tmp_path / "db-notify"
    folder.mkdir()
    dead = folder / "999999-deadbeef.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # bound, never listened to, then gone
        s.bind(str(dead))
    live, sender = Notifier(folder), Notifier(folder)
    try:
        sub = await live.subscribe("c")
        assert await sender.send("c", "hello") == 1
        assert await asyncio.wait_for(sub.get(), 5) == "hello"
        assert not dead.exists()
    finally:
        await live.close()
        await sender.close()
    assert list(folder.iterdir()) == []  # closing removes the listener's own socket


async def test_a_listener_that_closed_is_forgotten(tmp_path: Path) -> None:
    a, b = Notifier(tmp_path / "n"), Notifier(tmp_path / "n")
    got = asyncio.Queue[str]()
    await a.listen("c", got.put_nowait)
    sub = await b.subscribe("c")
    assert await b.send("c", "1") == 2
    assert await asyncio.wait_for(sub.get(), 5) == "1"
    assert await asyncio.wait_for(got.get(), 5) == "1"
    await a.close()
    assert await b.send("c", "2") == 1
    assert await asyncio.wait_for(sub.get(), 5) == "2"
    await b.close()
    assert got.empty()


async def test_post_goes_to_the_other_listeners_not_to_its_own_socket(tmp_path: Path) -> None:
    a, b = Notifier(tmp_path / "n"), Notifier(tmp_path / "n")
    got_a, got_b = asyncio.Queue[str](), asyncio.Queue[str]()
    try:
        await a.listen("c", got_a.put_nowait)
        await b.listen("c", got_b.put_nowait)
        assert a.post("c", "1") == 1  # no await: written once connected
        assert await asyncio.wait_for(got_b.get(), 5) == "1"
        assert b.post("c", "2") == 1
        assert await asyncio.wait_for(got_a.get(), 5) == "2"
        assert got_a.empty() and got_b.empty()
    finally:
        await a.close()
        await b.close()


def test_post_with_nobody_listening_reaches_no_one(tmp_path: Path) -> None:
    assert Notifier(tmp_path / "missing").post("c", "1") == 0
