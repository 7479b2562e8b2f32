"""The SQLite backend's checkpoints, on a thread and a connection of their own.

A checkpoint copies the WAL's pages back into the database file and, with ``synchronous=NORMAL``, syncs
both files to the disk: milliseconds. SQLite's automatic checkpoint runs it inside the commit that
crosses about 1,000 pages, on the committing connection, so every few hundred publishes one of them
(and every call queued behind it) waited for the disk; it was more than half the cost of an ``emit``.
Here the backend's connection never checkpoints on commit (``wal_autocheckpoint = 0``); after every
``EVERY`` writes it asks this thread for a passive checkpoint, which runs beside its commits (WAL mode
lets one checkpoint run while writers append) and is skipped when another process's checkpoint runs.
Then ``then`` is called: the connection's own thread checkpoints the few pages committed meanwhile
(well under a millisecond), so that the WAL is wholly copied and the next commit starts it again from
its beginning; otherwise it would grow for as long as commits keep coming.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

EVERY: Final = 256  # writes (calls) between checkpoints: about SQLite's 1,000 pages of small commits


class Checkpointer:
    """Runs passive checkpoints of one database file when asked (see the module docstring).

    Args:
        path: the database file.
        then: called on this thread after each checkpoint.
    """

    def __init__(self, path: Path, then: Callable[[], None]) -> None:
        self.path = path
        self._then = then
        self._asked = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request(self) -> None:
        """Ask for a checkpoint soon (from any thread; the thread starts on first use)."""
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=f"motia-sqlite-checkpoint:{self.path.name}",
                                                daemon=True)
                self._thread.start()
        self._asked.set()

    def stop(self) -> None:
        """Stop the thread (after the checkpoint it is running, if any)."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        self._asked.set()
        if thread is not None:
            thread.join()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._asked.wait()
                self._asked.clear()
                if self._stopped:
                    return
                with contextlib.suppress(sqlite3.Error):  # busy (another checkpoint), or gone: next time
                    if conn is None:
                        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self._then()
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


def finish(conn: sqlite3.Connection) -> None:
    """The connection's own short checkpoint after this thread's (see the module docstring)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
