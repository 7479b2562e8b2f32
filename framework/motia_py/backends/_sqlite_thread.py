"""The thread that owns a SQLite connection and commits batches of calls (group commit).

Calls submitted during one event-loop iteration, plus whatever queued while the thread was busy, run in
one transaction; a run of consecutive calls of one kind goes to its operation at once, so it can use
multi-row statements. When a call raises, the batch is rolled back and its calls run again one
transaction each, so a failure reaches only the call that caused it. A caller resumes only after the
transaction of its call committed (or failed).

**Urgent calls first.** Calls submitted as urgent (the end of an attempt: complete, retry, dead letter,
hand back; and lease renewals) are taken out of whatever is queued and committed in a transaction of
their own, ahead of the other calls (claims, publishes, reads), however many of those are waiting: an
acknowledgement never waits for a batch of unrelated work, only for the transaction already running.
That matters when a handler kills its process: what is committed before the kill survives, what still
waits in this thread is redone (delivered again after its lease).

**Short calls inline.** A call submitted as ``inline`` (a publish: the producer's ``emit``) while the
thread has nothing to do runs at once on the caller's thread, in a transaction of its own: no hop to
the thread and back. It never waits for a lock there: the connection's busy timeout is 0, and when
another process holds the write lock the call goes to the thread like any other. Its caller resumes
on the next loop iteration (an ``await`` still yields), and calls submitted after it keep their order;
those submitted before it resumes (concurrent emits) go to the thread together, one transaction.

**Waiting for the write lock** happens on the thread only, in short sleeps (from 50 µs, doubling up
to 1 ms, for up to ``BUSY_TIMEOUT_MS``) rather than SQLite's own busy handler, whose first sleep is a
whole millisecond. The connection does not checkpoint on commit either (a checkpoint syncs the disk):
:mod:`._sqlite_checkpoint` does, beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from msgspec import Struct

from ..errors import BackendError
from . import _sqlite_checkpoint as checkpoint
from .sqlite_schema import BUSY_TIMEOUT_MS

A = TypeVar("A")
R = TypeVar("R")
Op = Callable[[sqlite3.Connection, Sequence[A]], list[R]]
"""Runs a run of consecutive calls of one kind: one argument in and one result out per call."""
Row = tuple[Any, ...]

_MAX_BATCH: Final = 1024  # calls per transaction (soft limit)
_FIRST_PAUSE_S: Final = 50e-6  # the first sleep while another process holds the write lock (then doubled)
_MAX_PAUSE_S: Final = 0.001
_FINISH_CHECKPOINT: Final = "finish checkpoint"  # an inbox item (see _sqlite_checkpoint)


class _Call(Struct, eq=False):
    op: Op[Any, Any]
    arg: Any
    write: bool
    future: asyncio.Future[Any]
    urgent: bool = False
    ok: bool = False
    value: Any = None  # the result, or the exception


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class Connection:
    """The thread that owns the sqlite3 connection and runs batches of calls, one transaction each (and
    the short calls made while it is idle, on the caller's thread: see the module docstring)."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self.path = path
        self._connect = connect
        self.open = False
        self._inbox: queue.SimpleQueue[list[_Call] | str | asyncio.Future[None]] = queue.SimpleQueue()
        self._pending: list[_Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None  # set by the thread once open
        self._use = threading.Lock()  # held by whichever thread runs a transaction on the connection
        self._queued = 0  # calls handed to the thread whose results did not reach the loop yet
        self._inlined = False  # a call ran inline and its caller has not resumed yet
        self._writes = 0  # since the last checkpoint was asked for
        self._checkpoints = checkpoint.Checkpointer(path, lambda: self._inbox.put(_FINISH_CHECKPOINT))

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=self._main, args=(loop, ready), name=f"motia-sqlite:{self.path.name}",
                         daemon=True).start()  # daemon: a backend never closed must not hang exit
        await ready
        self.open = True

    async def stop(self) -> None:
        if not self.open or self._loop is None:
            return
        self.open = False
        self._flush()
        stopped: asyncio.Future[None] = self._loop.create_future()
        self._inbox.put(stopped)
        await stopped

    def submit(self, op: Op[A, R], arg: A, write: bool, urgent: bool = False, inline: bool = False
               ) -> asyncio.Future[R]:
        """Queue one call; its future resolves once its transaction committed (or with the error).
        An ``inline`` call runs at once when the thread is idle (see the module docstring)."""
        loop = self._loop
        if not self.open or loop is None:
            raise BackendError(f"sqlite backend {self.path} is not open")
        future: asyncio.Future[R] = loop.create_future()
        call = _Call(op, arg, write, future, urgent)
        if inline and not self._inlined and not self._pending and not self._queued and self._inline(call):
            self._inlined = True  # until its caller resumes: calls made meanwhile go to the thread together
            loop.call_soon(self._inline_done, call)
            return future
        if not self._pending:
            loop.call_soon(self._flush)  # hand over everything submitted in this iteration at once
        self._pending.append(call)
        return future

    def _inline(self, call: _Call) -> bool:
        """Run ``call`` here, unless the thread holds the connection or another process the write lock."""
        conn = self._conn
        if conn is None or not self._use.acquire(blocking=False):
            return False
        try:
            if not _attempt(conn, [call], final=False):  # one call: never retried one by one (no waits)
                return False
            if call.write:
                self._wrote(1)
        finally:
            self._use.release()
        return True

    def _inline_done(self, call: _Call) -> None:
        self._inlined = False
        _resolve(call.future, call.ok, call.value)

    def _wrote(self, calls: int) -> None:
        """``calls`` write calls committed (under ``_use``): a checkpoint every ``checkpoint.EVERY``."""
        self._writes += calls
        if self._writes >= checkpoint.EVERY:
            self._writes = 0
            self._checkpoints.request()

    def _flush(self) -> None:
        if self._pending:
            calls, self._pending = self._pending, []
            self._queued += len(calls)
            self._inbox.put(calls)

    def _settle(self, calls: list[_Call]) -> None:
        self._queued -= len(calls)
        for c in calls:
            _resolve(c.future, c.ok, c.value)

    @staticmethod
    def _reply(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(fn, *args)

    def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect(self.path)
            conn.execute("PRAGMA busy_timeout = 0")  # lock waits: in _transaction, on this thread only
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints: beside it (_sqlite_checkpoint)
        except BaseException as exc:  # every failure goes to the opener
            self._reply(loop, _resolve, ready, False, exc)
            return
        self._conn = conn
        self._reply(loop, _resolve, ready, True, None)
        urgent: deque[_Call] = deque()
        rest: deque[_Call] = deque()
        stopped: asyncio.Future[None] | None = None
        while True:
            if stopped is None:
                stopped = self._receive(urgent, rest, block=not urgent and not rest)
            calls = urgent or rest  # urgent calls first, in a transaction of their own
            if calls:
                batch = [calls.popleft() for _ in range(min(len(calls), _MAX_BATCH))]
                with self._use:
                    try:
                        _transaction(conn, batch)
                    except Exception as exc:  # a bug here must fail the calls, not hang their callers
                        for c in batch:
                            c.ok, c.value = False, exc
                    self._wrote(sum(c.write for c in batch))
                self._reply(loop, self._settle, batch)
            elif stopped is not None:
                self._checkpoints.stop()  # this connection, closed last, checkpoints what is left
                with self._use:
                    self._conn = None
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                self._reply(loop, _resolve, stopped, True, None)
                return

    def _receive(self, urgent: deque[_Call], rest: deque[_Call], block: bool) -> asyncio.Future[None] | None:
        """Move every queued call to ``urgent`` or ``rest`` (waiting for one first when ``block``);
        the stop request, when one came."""
        while True:
            try:
                item = self._inbox.get() if block else self._inbox.get_nowait()
            except queue.Empty:
                return None
            block = False
            if isinstance(item, asyncio.Future):
                return item  # the last thing ever queued: stop() flushes the calls before it
            if isinstance(item, str):
                with self._use:
                    if self._conn is not None:
                        checkpoint.finish(self._conn)
                continue
            for c in item:
                (urgent if c.urgent else rest).append(c)


def each(fn: Callable[[sqlite3.Connection, A], R]) -> Op[A, R]:
    """An operation whose calls run one after the other."""

    def run(conn: sqlite3.Connection, args: Sequence[A]) -> list[R]:
        return [fn(conn, arg) for arg in args]

    return run


class _Busy(Exception):
    """Another connection holds a lock this transaction needs (rolled back; try again later)."""

    def __init__(self, error: sqlite3.Error) -> None:
        super().__init__(str(error))
        self.error = error


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY)


def _transaction(conn: sqlite3.Connection, calls: list[_Call]) -> None:
    """Run ``calls`` in one transaction, waiting (in short sleeps) while another process holds the lock."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = _FIRST_PAUSE_S
    while not _attempt(conn, calls, final=time.monotonic() >= deadline):
        time.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE_S)


def _attempt(conn: sqlite3.Connection, calls: list[_Call], final: bool = True) -> bool:
    """One try at running ``calls`` in one transaction; False (nothing done) when a lock was busy and
    this is not the ``final`` try, else True with every call's outcome set (a busy lock fails them)."""
    try:
        _run(conn, calls)
    except _Busy as busy:
        if not final:
            return False
        for c in calls:
            c.ok, c.value = False, busy.error
    return True


def _run(conn: sqlite3.Connection, calls: list[_Call]) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE" if any(c.write for c in calls) else "BEGIN")
    except sqlite3.Error as exc:
        if _is_busy(exc):
            raise _Busy(exc) from exc
        for c in calls:
            c.ok, c.value = False, exc
        return
    i = 0
    while i < len(calls):
        j = i + 1
        while j < len(calls) and calls[j].op is calls[i].op:
            j += 1
        run = calls[i:j]
        try:
            results = run[0].op(conn, [c.arg for c in run])
        except Exception as exc:  # handed to its caller: a framework bug surfaces there
            _rollback(conn)
            if isinstance(exc, sqlite3.Error) and _is_busy(exc):
                raise _Busy(exc) from exc
            if len(calls) == 1:
                calls[0].ok, calls[0].value = False, exc
            else:
                for c in calls:
                    _transaction(conn, [c])
            return
        for c, result in zip(run, results, strict=True):
            c.ok, c.value = True, result
        i = j
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        if _is_busy(exc):
            raise _Busy(exc) from exc
        for c in calls:
            c.ok, c.value = False, exc


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
