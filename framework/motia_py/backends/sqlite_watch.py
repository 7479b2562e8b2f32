"""The safety net by which one SQLite backend object notices other processes' commits that came with no
message (:mod:`.sqlite_wake` carries the others): a thread ``stat``s the database's WAL file every
``interval_s`` (about a second) while waits are pending and calls back into the event loop only when the
file changed (its size or modification time), or every ``force_every`` ticks in case a change left both
as they were. The callback then asks the database (``PRAGMA data_version`` and the due times) once for
every pending wait.

A thread that sleeps and ``stat``s costs a fraction of what an event-loop timer costs per tick, and the
loop is woken only when there is something to look at.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable


def signature(path: str) -> tuple[int, int] | None:
    """(modification time, size) of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class WalWatch:
    """The watcher thread of one backend object (see the module docstring)."""

    def __init__(self, path: str, interval_s: float, force_every: int, on_change: Callable[[], None]) -> None:
        self._path = path
        self.interval_s = interval_s  # read at every tick: it may be changed while the thread runs
        self._force_every = force_every
        self._on_change = on_change
        self._active = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, on: bool) -> None:
        """Watch (while waits are pending) or pause (when none is); starts the thread on first use."""
        if on and self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._stopped.clear()
            self._thread = threading.Thread(target=self._main, name="motia-sqlite-watch", daemon=True)
            self._thread.start()
        if on != self._active.is_set():
            (self._active.set if on else self._active.clear)()

    def stop(self) -> None:
        """Stop the thread (it exits at once)."""
        self._stopped.set()
        self._active.set()  # a paused thread wakes up to see it is stopped
        self._thread = None

    def _main(self) -> None:
        last, ticks, loop = signature(self._path), 0, self._loop
        assert loop is not None  # set by watch() before the thread starts
        while not self._stopped.is_set():
            if not self._active.is_set():  # paused: look at once when resumed, not an interval later
                self._active.wait()
            else:
                self._stopped.wait(self.interval_s)  # a tick a second or so: stop() ends it at once
            if self._stopped.is_set():
                return
            ticks += 1
            now = signature(self._path)
            if now is None or now != last or ticks % self._force_every == 0:
                last = now
                try:
                    loop.call_soon_threadsafe(self._on_change)
                except RuntimeError:  # the loop closed: nobody waits any more
                    return
