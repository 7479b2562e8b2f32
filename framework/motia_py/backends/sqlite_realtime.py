"""The SQLite backend's pub/sub (over :mod:`.sqlite_notify`) and state changes (mixed into
:class:`.sqlite.SqliteBackend`).

A state change is one operation on the connection's thread: the old value is read, the new one written
and the change event's delivery rows inserted in the same transaction, so they commit (or roll back)
together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..types import Clock
from . import sqlite_queue as q
from ._sqlite_thread import Op, each
from .pubsub import Subscription
from .records import Outgoing
from .sqlite_notify import Notifier
from .state_change import ANY, Expected, StateChange, change_event, matches

_WHERE = "namespace = ? AND grp = ? AND key = ?"


@each
def _state_change(conn: sqlite3.Connection, arg: tuple[str, str, str, str | None, Expected, Outgoing | None, float]
                  ) -> tuple[StateChange, list[str]]:
    """(the outcome, the steps that got a delivery)."""
    namespace, group, key, new, expected, notify, now = arg
    where = (namespace, group, key)
    row = conn.execute(f"SELECT value FROM state WHERE {_WHERE}", where).fetchone()
    old = None if row is None else str(row[0])
    if not matches(expected, old):
        return StateChange(False, old), []
    if new is None:
        conn.execute(f"DELETE FROM state WHERE {_WHERE}", where)
    elif new != old:
        conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)", (*where, new))
    steps: list[str] = []
    if old != new and notify is not None and notify.targets:
        rows = q.delivery_rows([change_event(notify, group, key, old, new)], now)
        q.publish_run(conn, [rows])
        steps = [r[1] for r in rows]
    return StateChange(True, old), steps


class SqliteRealtime:
    """:class:`~.stores.PubSubStore` and :class:`~.stores.StateChangeStore` for the SQLite backend."""

    path: Path
    clock: Clock
    _notifier_: Notifier | None = None

    if TYPE_CHECKING:
        async def _run(self, op: Op[Any, Any], arg: Any, *, write: bool = True, urgent: bool = False) -> Any: ...

        def _wake(self, steps: Iterable[str]) -> None: ...

    @property
    def notifier(self) -> Notifier:
        """The notifier of this database file's processes (created on first use)."""
        if self._notifier_ is None:
            self._notifier_ = Notifier.for_database(self.path)
        return self._notifier_

    async def pubsub_publish(self, channel: str, message: str) -> None:
        """Send ``message`` to the subscriptions of ``channel`` in every process using this file."""
        await self.notifier.send(channel, message)

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (this process listens on the notify folder from now on)."""
        return await self.notifier.subscribe(channel)

    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Write (or delete) and queue the change event in one transaction (see the protocol)."""
        result, steps = await self._run(_state_change, (namespace, group, key, new_json, expected, notify,
                                                         self.clock()))
        if steps:
            self._wake(steps)
        return result  # type: ignore[no-any-return]

    async def _close_realtime(self) -> None:
        if self._notifier_ is not None:
            await self._notifier_.close()
            self._notifier_ = None
