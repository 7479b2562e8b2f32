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
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from ..errors import BackendError

A = TypeVar("A")
R = TypeVar("R")
Op = Callable[[sqlite3.Connection, Sequence[A]], list[R]]
"""Runs a run of consecutive calls of one kind: one argument in and one result out per call."""
Row = tuple[Any, ...]

_MAX_BATCH: Final = 1024  # calls per transaction (soft limit)


@dataclass(slots=True, eq=False)
class _Call:
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


def _settle(calls: Iterable[_Call]) -> None:
    for c in calls:
        _resolve(c.future, c.ok, c.value)


class Connection:
    """The thread that owns the sqlite3 connection and runs batches of calls, one transaction each."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self.path = path
        self._connect = connect
        self.open = False
        self._inbox: queue.SimpleQueue[list[_Call] | asyncio.Future[None]] = queue.SimpleQueue()
        self._pending: list[_Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None

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

    def submit(self, op: Op[A, R], arg: A, write: bool, urgent: bool = False) -> asyncio.Future[R]:
        """Queue one call; its future resolves once its transaction committed (or with the error)."""
        if not self.open or self._loop is None:
            raise BackendError(f"sqlite backend {self.path} is not open")
        future: asyncio.Future[R] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)  # hand over everything submitted in this iteration at once
        self._pending.append(_Call(op, arg, write, future, urgent))
        return future

    def _flush(self) -> None:
        if self._pending:
            calls, self._pending = self._pending, []
            self._inbox.put(calls)

    @staticmethod
    def _reply(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(fn, *args)

    def _main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect(self.path)
        except BaseException as exc:  # every failure goes to the opener
            self._reply(loop, _resolve, ready, False, exc)
            return
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
                try:
                    _transaction(conn, batch)
                except Exception as exc:  # a bug here must fail the calls, not hang their callers
                    for c in batch:
                        c.ok, c.value = False, exc
                self._reply(loop, _settle, batch)
            elif stopped is not None:
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
            for c in item:
                (urgent if c.urgent else rest).append(c)


def each(fn: Callable[[sqlite3.Connection, A], R]) -> Op[A, R]:
    """An operation whose calls run one after the other."""

    def run(conn: sqlite3.Connection, args: Sequence[A]) -> list[R]:
        return [fn(conn, arg) for arg in args]

    return run


def _transaction(conn: sqlite3.Connection, calls: list[_Call]) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE" if any(c.write for c in calls) else "BEGIN")
    except sqlite3.Error as exc:
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
        for c in calls:
            c.ok, c.value = False, exc


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
