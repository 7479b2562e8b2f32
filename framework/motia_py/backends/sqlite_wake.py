"""How the processes sharing one SQLite file wake each other's waiting workers: a message over the
notify folder's Unix sockets (:mod:`.sqlite_notify`) right after a commit that gave steps work.

**Sending.** Every change that wakes waits in this process (a publish, a complete with outgoing events, a
retry, a hand-back, a dead letter or a completion that frees a FIFO group or a flow-control slot: the
backend's ``_wake``) also names its steps here. At the end of the event-loop iteration the steps named
during it go out in one message, on channel :data:`CHANNEL`, to every *other* process that listens
(:meth:`~.sqlite_notify.Notifier.post`: no ``await``, one buffered write per peer). A process's own
waits are woken directly, never through its socket. With nobody listening (no socket in the folder) a
send costs one ``stat`` of the folder.

**Listening.** A backend object starts listening the first time one of its waits blocks (before it reads
the due times, so no commit falls between the two), and goes on until it closes: only processes that
wait for work (workers) bind a socket; a producer (``motia_py.Client``, ``motia-py emit``) never does. A
message wakes the waits of the steps it names (those with work due now) at once; they then read the
queue as after a local publish. An empty line in it (work due later: a delayed publish, a retry with a
delay) makes the waits read their due times again, which sets their timer.

**Safety net.** Messages are hints, not the truth: a lost one (a peer's buffer overflowed), or a commit
made by a process that does not send (an older motia-py, the ``sqlite3`` shell), is still noticed by the
WAL watcher (:mod:`.sqlite_watch`), slowly (about once a second). When this process cannot listen (the
folder cannot be created), the watcher polls fast instead, as it did before messages existed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Final

from .sqlite_notify import Notifier

CHANNEL: Final = "motia.queue"
"""The notify channel of the queue's wake-ups: the names of the steps that got work, one per line."""


class CrossWake:
    """The cross-process wake-ups of one SQLite backend object (see the module docstring).

    Args:
        notifier: the backend's notifier (created on first use; shared with its pub/sub).
        on_steps: called on the event loop with the steps another process named as due now; among them
            ``""`` when some step has work due later (read the due times again).
    """

    def __init__(self, notifier: Callable[[], Notifier], on_steps: Callable[[set[str]], None]) -> None:
        self._notifier = notifier
        self._on_steps = on_steps
        self._steps: set[str] = set()  # named during this loop iteration, not sent yet
        self._started: asyncio.Future[bool] | None = None  # listening (True) or failed to (False)
        self._stop: Callable[[], None] | None = None
        self.closed = False

    @property
    def listening(self) -> bool | None:
        """True once listening, False when that failed, None before the first :meth:`listen`."""
        started = self._started
        return None if started is None or not started.done() else started.result()

    def note(self, steps: Iterable[str], later: bool = False) -> None:
        """``steps`` have work due now through this process (``later``: some step has work due later):
        tell the other processes at the end of this loop iteration."""
        pending = self._steps
        was_empty = not pending
        pending.update(steps)
        if later:
            pending.add("")  # the empty line: read the due times again
        if was_empty and pending and not self.closed:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        steps, self._steps = self._steps, set()
        if self.closed or not steps:
            return
        with contextlib.suppress(OSError):  # the folder cannot be read: the safety net remains
            self._notifier().post(CHANNEL, "\n".join(steps))

    async def listen(self) -> bool:
        """Listen for the other processes' wake-ups from now on (the first call binds the socket, later
        ones return at once); False when this process cannot listen."""
        started = self._started
        if started is None:
            started = self._started = asyncio.ensure_future(self._start())
        if not started.done():
            return await asyncio.shield(started)
        return started.result()

    async def _start(self) -> bool:
        try:
            self._stop = await self._notifier().listen(CHANNEL, self._received)
        except OSError:  # a folder that cannot be created or bound in
            return False
        return True

    def _received(self, message: str) -> None:
        if not self.closed:
            self._on_steps(set(message.split("\n")))

    async def close(self) -> None:
        """Send what is pending, then stop sending and listening (the notifier itself, which writes what
        was sent, is closed by its owner)."""
        self._flush()
        self.closed = True
        started, self._started = self._started, None
        if started is not None and not started.done():
            started.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await started
        if self._stop is not None:
            self._stop()
            self._stop = None

    def reopen(self) -> None:
        """Send again after :meth:`close` (the backend object was opened again)."""
        self.closed = False
