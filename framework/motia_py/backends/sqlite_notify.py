"""Messages between the processes that share one SQLite file, without polling: Unix sockets in a folder.

Every process that listens binds one Unix stream socket in the *notify folder* of the database,
``<database file>-notify/`` beside it (``.motia/motia.db-notify/``), named ``<pid>-<random>.sock``. A
process that sends lists the folder and writes each message to every socket there, its own included,
over one connection per peer kept open between messages; the reader side hands what arrives to its
:class:`~.pubsub.Fanout`. A socket left behind by a killed process refuses connections and is deleted by
the first sender that finds it so; a socket that cannot be reached for another reason (a process of
another user) is tried again at most once a second. :meth:`Notifier.post` is the sender's fire-and-forget
form (no ``await``, other processes only), for hints such as the queue's wake-ups
(:mod:`.sqlite_wake`): with nobody listening it costs one ``stat`` of the folder.

Properties (they make :class:`~.stores.PubSubStore`'s rules hold on SQLite):

- a listener is reachable as soon as :meth:`Notifier.start` returns (its socket is bound before);
- messages of one sending process arrive at each listener in the order sent (one connection each);
- nothing waits on a slow listener: writes are buffered per peer, and past ``PEER_BUFFER_BYTES`` of
  unread data that peer's connection is dropped with what it held (at most once, best effort);
- no timer, no polling: an idle process costs nothing.

When the folder's path is too long for a Unix socket address (about 100 bytes), the folder is
``<temp dir>/motia-notify-<hash of the database path>`` instead, which every process using the same file
computes alike. Unix sockets only (Linux, macOS); the SQLite backend needs nothing else of them.

Other parts of motia-py may use a notifier for their own channels (a channel is any name)::

    notifier = Notifier.for_database(path)
    await notifier.start()                      # this process listens from now on
    stop = notifier.listen("queue", lambda message: wake.set())
    await notifier.send("queue", "step-a")      # every listening process, this one included
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from .pubsub import Fanout, Listener, Subscription

SUFFIX: Final = "-notify"
PEER_BUFFER_BYTES: Final = 8 * 1024 * 1024
_MAX_ADDRESS: Final = 100  # bytes of a socket path (Linux allows 107, macOS 103)
_HEADER: Final = struct.Struct("!IH")  # message bytes, channel bytes
_SETTLE_S: Final = 0.05  # a folder listing younger than this past its mtime is not trusted (coarse mtimes)
_RETRY_S: Final = 1.0  # a peer that could not be reached (but is not gone) is not tried again before this


def notify_dir(database: Path) -> Path:
    """The notify folder of ``database`` (beside it, or in the temp dir when that path is too long)."""
    beside = database.parent / (database.name + SUFFIX)
    if len(os.fsencode(str(beside))) + 24 <= _MAX_ADDRESS:
        return beside
    import tempfile  # only for long paths (it imports shutil, bz2 and lzma: about 3 ms of start-up)

    digest = hashlib.sha256(os.fsencode(str(database.resolve()))).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"motia-notify-{digest}"


class Notifier:
    """Sends to and listens for the other processes using one notify folder (see the module docstring).

    Args:
        directory: the notify folder (created on first use).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fanout = Fanout()
        self.dropped = 0  # messages dropped for peers that did not read
        self._path: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._peers: dict[str, asyncio.Task[asyncio.StreamWriter | None]] = {}
        self._failed: dict[str, float] = {}  # peer -> when connecting to it failed (but it is not gone)
        self._listing: tuple[int, float, list[str]] | None = None  # (dir mtime_ns, taken at, socket names)
        self._readers: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[asyncio.StreamWriter | None]] = set()  # connections cancelled
        self._start_lock = asyncio.Lock()

    @classmethod
    def for_database(cls, database: Path) -> Notifier:
        """A notifier for the processes sharing the SQLite file ``database``."""
        return cls(notify_dir(database))

    @property
    def listening(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._server is not None

    # -- listening ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind this process's socket; from then on every message any process sends reaches it."""
        async with self._start_lock:
            if self._server is not None:
                return
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.directory / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
            self._server = await asyncio.start_unix_server(self._serve, path=str(path))
            self._path = path

    async def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (starts listening first)."""
        await self.start()
        return self.fanout.subscribe(channel)

    async def listen(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each message of ``channel`` (starts listening first); returns the stopper."""
        await self.start()
        return self.fanout.listen(channel, listener)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        try:
            while True:
                size, chan = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                channel = (await reader.readexactly(chan)).decode()
                message = (await reader.readexactly(size)).decode()
                self.fanout.deliver(channel, message)
        except (asyncio.IncompleteReadError, ConnectionError, UnicodeDecodeError):
            pass  # the peer went away (or sent garbage): its connection ends here
        finally:
            writer.close()
            if task is not None:
                self._readers.discard(task)

    # -- sending ------------------------------------------------------------------------------------
    def _socket_names(self) -> list[str]:
        """The socket files in the folder; the listing is reused while the folder's mtime is unchanged.
        The connections to sockets that left the folder are closed when it is listed again."""
        try:
            mtime = self.directory.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._listing
        if cached is not None and cached[0] == mtime and cached[1] - mtime / 1e9 > _SETTLE_S:
            return cached[2]
        names = sorted(e.name for e in os.scandir(self.directory) if e.name.endswith(".sock"))
        self._listing = (mtime, time.time(), names)
        if self._peers or self._failed:
            present = set(names)
            for gone in [n for n in self._peers if n not in present]:
                self._forget(gone)
            self._failed = {n: t for n, t in self._failed.items() if n in present}
        return names

    def _peer(self, name: str) -> asyncio.Task[asyncio.StreamWriter | None] | None:
        """The connection (made or under way) to the socket ``name``; None while it is not to be tried."""
        task = self._peers.get(name)
        if task is None:
            failed = self._failed.get(name)
            if failed is not None and time.monotonic() - failed < _RETRY_S:
                return None
            task = self._peers[name] = asyncio.ensure_future(self._connect(name))
        return task

    async def _connect(self, name: str) -> asyncio.StreamWriter | None:
        path = self.directory / name
        try:
            _, writer = await asyncio.open_unix_connection(str(path))
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # its process is gone
                with contextlib.suppress(OSError):
                    path.unlink()
                self._listing = None
            else:  # another user's, or too busy: not tried again for a while
                self._failed[name] = time.monotonic()
            return None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024 * 1024)
        return writer

    def _write(self, name: str, task: asyncio.Task[asyncio.StreamWriter | None], frame: bytes) -> bool:
        """Write ``frame`` to the connection made by ``task`` (done); False when that peer is not there."""
        if self._peers.get(name) is not task or task.cancelled():
            return False
        writer = task.result()
        if writer is None or writer.is_closing():
            self._forget(name)
            return False
        if writer.transport.get_write_buffer_size() > PEER_BUFFER_BYTES:
            self.dropped += 1
            self._forget(name)  # a peer that reads nothing: drop its connection and what it held
            return False
        writer.write(frame)
        return True

    async def send(self, channel: str, message: str) -> int:
        """Send ``message`` on ``channel`` to every listening process (this one too); return how many."""
        frame = _frame(channel, message)
        reached = 0
        for name in self._socket_names():
            task = self._peer(name)
            if task is None:
                continue
            if not task.done():
                await asyncio.wait((task,))  # not cancelled with it, when it is forgotten meanwhile
            reached += self._write(name, task, frame)
        return reached

    def post(self, channel: str, message: str) -> int:
        """Send ``message`` on ``channel`` to every *other* listening process (not this notifier's own
        socket) without waiting: written now to the peers already connected, once connected to the others.
        Returns how many peers it went to. Costs one ``stat`` of the folder when nobody listens."""
        names = self._socket_names()
        if not names:
            return 0
        frame = _frame(channel, message)
        own = None if self._path is None else self._path.name
        reached = 0
        for name in names:
            if name == own or (task := self._peer(name)) is None:
                continue
            if task.done():
                reached += self._write(name, task, frame)
            else:
                task.add_done_callback(functools.partial(self._write_later, name, frame))
                reached += 1
        return reached

    def _write_later(self, name: str, frame: bytes, task: asyncio.Task[asyncio.StreamWriter | None]) -> None:
        self._write(name, task, frame)

    def _forget(self, name: str) -> None:
        task = self._peers.pop(name, None)
        if task is None:
            return
        if not task.done():
            task.cancel()
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        elif not task.cancelled() and (writer := task.result()) is not None:
            writer.close()

    # -- closing ------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop listening (the socket file is deleted), close the peer connections (after what was sent
        or posted to them was written) and subscriptions."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._readers):
            task.cancel()
        if self._readers:
            await asyncio.gather(*self._readers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None
        connecting = [t for t in self._peers.values() if not t.done()]
        if connecting:  # what was posted to them is written once they connect
            await asyncio.wait(connecting, timeout=1.0)
        for name in list(self._peers):
            self._forget(name)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        await self.fanout.close()


def _frame(channel: str, message: str) -> bytes:
    body, chan = message.encode(), channel.encode()
    return _HEADER.pack(len(body), len(chan)) + chan + body
