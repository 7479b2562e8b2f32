"""The thread that owns a SQLite connection and commits batches of calls (group commit).

Calls submitted during one event-loop iteration, plus whatever queued while the thread was busy, run in
one transaction; a run of consecutive calls of one kind goes to its operation at once, so it can use
multi-row statements. When a call raises, the batch is rolled back and its calls run again one
transaction each, so a failure reaches only the call that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
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

    def submit(self, op: Op[A, R], arg: A, write: bool) -> asyncio.Future[R]:
        if not self.open or self._loop is None:
            raise BackendError(f"sqlite backend {self.path} is not open")
        future: asyncio.Future[R] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)  # hand over everything submitted in this iteration at once
        self._pending.append(_Call(op, arg, write, future))
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
        while True:
            item = self._inbox.get()
            stopped = item if isinstance(item, asyncio.Future) else None
            calls = item if isinstance(item, list) else []
            while stopped is None and len(calls) < _MAX_BATCH:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if isinstance(more, asyncio.Future):
                    stopped = more
                else:
                    calls.extend(more)
            if calls:
                try:
                    _transaction(conn, calls)
                except Exception as exc:  # a bug here must fail the calls, not hang their callers
                    for c in calls:
                        c.ok, c.value = False, exc
                self._reply(loop, _settle, calls)
            if stopped is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                self._reply(loop, _resolve, stopped, True, None)
                return


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
