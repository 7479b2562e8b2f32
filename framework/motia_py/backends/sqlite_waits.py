"""Waiting for work on the SQLite backend (mixed into :class:`.sqlite.SqliteBackend`): ``wait`` and
``wait_any``, the due-time cache behind them, and how they learn of commits.

A change made through the backend object wakes its waits directly (``_wake``). A change made by another
process arrives as a message naming its steps (:mod:`.sqlite_wake`), within about a millisecond; the WAL
watcher (:mod:`.sqlite_watch`) is only the safety net for a lost message or a writer that sends none, at
``SAFETY_POLL_S``: after it looked, the waits read the due times once (``PRAGMA data_version`` tells
whether another connection committed since they were last read). A timer wakes them when the earliest
due time comes.

**The cache of due times** holds, per step, a time no later than its true next due time, so that a wait
never sleeps past work. A claim sets its step's exactly (read in its transaction); a change made here
lowers the steps it gave work to the time of that work, or marks them to be read; an acknowledgement
leaves it (removing a row makes the true time no earlier); another process's message lowers the steps
it names to now. A wait reads only what is marked or unknown, and reads nothing at all while this
process listens and the WAL watcher saw no change since the last read: other processes' commits come
with a message, and one that came without is the watcher's to notice (a second at most, as before the
cache). A time that is too early costs one claim that finds nothing, which sets it right.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..errors import BackendError
from ..types import Clock
from . import sqlite_flow as flow
from ._sqlite_thread import Op, Row
from .records import FlowControl
from .sqlite_notify import Notifier
from .sqlite_wake import CrossWake
from .sqlite_watch import WalWatch
from .wakeups import Wakeups

SAFETY_POLL_S: Final = 1.0  # how often the WAL watcher looks for commits that came with no message
FAST_POLL_S: Final = 0.025  # ... when this process cannot listen for messages
_POLL_FORCE: Final = 4  # every this many ticks the database is asked even if the WAL looks unchanged


class SqliteWaits:
    """``wait``/``wait_any`` of the SQLite backend (see the module docstring); ``_init_waits`` sets it up."""

    path: Path
    clock: Clock

    if TYPE_CHECKING:  # provided by SqliteBackend and SqliteRealtime
        async def _run(self, op: Op[Any, Any], arg: Any, *, write: bool = True, urgent: bool = False,
                       inline: bool = False) -> Any: ...

        @property
        def notifier(self) -> Notifier: ...

    def _init_waits(self, poll_s: float) -> None:
        self._hub = Wakeups()  # the pending waits, woken by this object's changes, messages and the watcher
        self._due: dict[str, float | None] = {}  # each step's next due time as read at _version (a cache)
        self._dirty: set[str] = set()  # steps this object changed since their due time was read
        self._watch = WalWatch(f"{self.path}-wal", poll_s, _POLL_FORCE, self._changed)
        self._cross = CrossWake(lambda: self.notifier, self._told)
        self._check: asyncio.Task[None] | None = None  # reading what another process committed
        self._check_again = False
        self._version: int | None = None  # PRAGMA data_version when the due times were last read
        self._due_timer: asyncio.TimerHandle | None = None
        self._controls: dict[str, FlowControl] = {}  # the flow control of the waiting steps that have one
        self._news = False  # another process may have committed since the due times were read
        self._told_of: set[str] = set()  # steps another process named since their last claim here

    def _wake(self, steps: Iterable[str], later: Iterable[str] = (), at: dict[str, float] | None = None) -> None:
        """A change made through this object gave ``steps`` work due now and ``later`` work due later:
        their due times are read again (or, for those in ``at``, lowered to the time given there), their
        waits woken, and the other processes told (at the end of this loop iteration)."""
        steps, later = set(steps), set(later)
        if steps or later:
            both = steps | later
            for step in both:
                known = self._due.get(step, False)
                if at is None or step not in at or known is False or step in self._dirty:
                    self._dirty.add(step)
                else:  # a cached due time stays no later than the true one: no read needed
                    self._due[step] = at[step] if known is None else min(known, at[step])
            self._hub.signal(both)
            self._cross.note(steps, bool(later - steps))

    def _wake_rows(self, rows: Iterable[Row], now: float, steps: Iterable[str] = ()) -> None:
        """:meth:`_wake` for the delivery rows just inserted (due now or later), and ``steps``."""
        due, later, at = set(steps), set[str](), dict[str, float]()
        for r in rows:
            step, available_at = r[1], r[11]  # (id, step, ..., available_at)
            (due if available_at <= now else later).add(step)
            at[step] = min(available_at, at.get(step, available_at))
        for step in steps:
            at.pop(step, None)  # the next of a FIFO group, a free slot: due at a time not known here
        self._wake(due, later, at)

    def _told(self, steps: set[str]) -> None:
        """Another process named ``steps`` as having work due now (``""`` among them: some step has
        work due later, the due times are read again). The due times known for them are lowered to now
        (a step not known is read when it is first waited for): no read, unless a wait needs one."""
        if "" in steps:
            steps.discard("")
            self._changed()
        now = self.clock()
        for step in steps & self._due.keys():
            known = self._due[step]
            self._due[step] = now if known is None else min(known, now)
            self._told_of.add(step)
        self._hub.signal(steps)

    async def _close_waits(self) -> None:
        await self._cross.close()
        self._watch.stop()
        if self._due_timer is not None:
            self._due_timer.cancel()
        if self._check is not None:
            self._check.cancel()
            await asyncio.gather(self._check, return_exceptions=True)

    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """Return when ``step`` may have a due delivery (with ``control``: one a claim with it would hand
        out), or after ``timeout_s`` (see :meth:`wait_any`)."""
        if control is None:
            await self.wait_any((step,), timeout_s)
            return
        self._controls[step] = control  # its due times are read under its limits, and always afresh
        try:
            await self.wait_any((step,), timeout_s)
        finally:
            if not self._hub.waiters_of(step):
                self._controls.pop(step, None)

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        """The steps that may have a due delivery, waiting up to ``timeout_s`` for one.

        A change through this object wakes it at once, one by another process when that process's
        message arrives (this object listens from its first wait on); the WAL watcher catches the rest.
        """
        started = time.monotonic()
        with self._hub.waiting(steps) as waiter:
            try:
                if self._cross.listening is None and not await self._cross.listen():
                    self._watch.interval_s = FAST_POLL_S  # no messages: poll as before they existed
                need = tuple(s for s in waiter.steps if s in self._dirty or s not in self._due or s in self._controls)
                if need or self._news or self._version is None or not self._cross.listening:
                    await self._read_due_times(tuple(waiter.steps), need)
                # else the cache is current: this object's changes keep it so, another process's commit
                # comes with a message that lowers it (_told), and the WAL watcher's look (a lost
                # message, a writer that sends none) sets _news
                now = self.clock()
                later = {s: t - now for s in waiter.steps if (t := self._due.get(s)) is not None}
                due = {s for s, wait_s in later.items() if wait_s <= 0}
                if due or waiter.hits:
                    return due | waiter.hits
                self._watch.watch(True)
                hits = await waiter.wait(min([timeout_s, *later.values()]) - (time.monotonic() - started))
            finally:
                if self._hub.count <= 1:
                    self._watch.watch(False)  # the last pending wait: the watcher pauses
        elapsed = time.monotonic() - started
        return hits or {s for s, wait_s in later.items() if wait_s <= elapsed}

    def _due_now(self, steps: Iterable[str]) -> set[str]:
        """The steps due now by the due times last read."""
        now = self.clock()
        return {s for s in steps if (t := self._due.get(s)) is not None and t <= now}

    async def _read_due_times(self, steps: tuple[str, ...], need: tuple[str, ...]) -> None:
        """Bring the due times of ``steps`` up to date: all of them, and every other step whose due time
        is known, when another process committed since they were read (the rest are forgotten), else
        those of ``need`` (changed here, or unknown)."""
        self._dirty.difference_update(need)  # a change from now on marks them again
        self._news = False  # ... and the watcher's next look sets this again
        steps = tuple(dict.fromkeys((*steps, *self._due)))  # a busy consumer's step: known when it waits
        controls = tuple(self._controls.get(s) for s in steps)
        try:
            seen, dues = await self._run(flow.due_times, (self._version, steps, need, controls, self.clock()),
                                         write=False, inline=True)
        except BaseException:  # cancelled (a waker asks again) or failed: they are still to be read
            self._dirty.update(need)
            self._news = True
            raise
        if seen != self._version:
            self._due.clear()
            self._version = seen
        self._due.update(dues)

    def _changed(self) -> None:
        """The WAL changed (or it is time to look anyway): read the due times of the waited-for steps
        once, unless a read is under way (then once more after it)."""
        self._news = True
        if self._check is not None:
            self._check_again = True
        elif self._hub:
            self._check = asyncio.create_task(self._read_dues(), name=f"motia-sqlite-check:{self.path.name}")

    async def _read_dues(self) -> None:
        """Wake the waits of the steps that have something due, and set a timer for the next due time."""
        try:
            again = True
            while again and self._hub:
                self._check_again = False
                steps = tuple(self._hub.steps)
                await self._read_due_times(steps, tuple(
                    s for s in steps if s in self._dirty or s not in self._due or s in self._controls))
                self._hub.signal(self._due_now(steps))
                again = self._check_again
            self._time_next_due()
        except BackendError:
            pass  # closed (or failing): the waits still return at their timeout
        finally:
            self._check = None

    def _time_next_due(self) -> None:
        """Wake the waits when the earliest due time read for them (by any process's commit) comes."""
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        later = [t for s in self._hub.steps if (t := self._due.get(s)) is not None]
        if later:
            delay = max(0.0, min(later) - self.clock())
            self._due_timer = asyncio.get_running_loop().call_later(
                delay, lambda: self._hub.signal(self._due_now(self._hub.steps)))
