"""The SQLite backend's transactional commit (see :class:`.stores.TxStore`): the lease check, the read
checks, the state writes (with their change events), the acknowledgement and the outbox in the one
``BEGIN IMMEDIATE`` transaction of the connection's thread (:mod:`._sqlite_thread`), so no other
connection writes in between.

A conflict or a lost lease is answered before anything is written, so such a call changes nothing even
when it shares its transaction with other calls (group commit); the calls of one transaction run one
after the other, each seeing what the ones before it wrote.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from . import sqlite_queue as q
from ._sqlite_thread import Row, each
from .records import Delivery, Outgoing, StateRead, StateWrite, TxResult
from .state_change import change_event

_HELD: Final = ("SELECT seq, fifo_group IS NOT NULL FROM deliveries "
                "WHERE id = ? AND attempts = ? AND lease_until IS NOT NULL")  # the fence: complete()'s test
_VALUE: Final = "SELECT value FROM state WHERE namespace = ? AND grp = ? AND key = ?"
_GROUP: Final = "SELECT key, value FROM state WHERE namespace = ? AND grp = ?"

TxArg = tuple[Delivery | None, list[Row], Sequence[StateWrite], Sequence[StateRead], float]
"""(delivery or None, its outbox as ``deliveries`` rows, writes, reads, now)."""


def _reads_hold(conn: sqlite3.Connection, reads: Sequence[StateRead]) -> bool:
    for r in reads:
        if r.key is None:
            if dict(conn.execute(_GROUP, (r.namespace, r.group)).fetchall()) != dict(r.items or {}):
                return False
            continue
        row = conn.execute(_VALUE, (r.namespace, r.group, r.key)).fetchone()
        if (None if row is None else row[0]) != r.value_json:
            return False
    return True


def _apply(conn: sqlite3.Connection, writes: Sequence[StateWrite]) -> list[Outgoing]:
    """Apply the writes in order; the change events of those with a ``notify`` that changed a value."""
    events: list[Outgoing] = []
    for w in writes:
        if w.key is None:
            conn.execute("DELETE FROM state WHERE namespace = ? AND grp = ?", (w.namespace, w.group))
            continue
        if w.notify is not None and w.notify.targets:
            row = conn.execute(_VALUE, (w.namespace, w.group, w.key)).fetchone()
            old = None if row is None else row[0]
            if old != w.value_json:
                events.append(change_event(w.notify, w.group, w.key, old, w.value_json))
        if w.value_json is None:
            conn.execute("DELETE FROM state WHERE namespace = ? AND grp = ? AND key = ?",
                         (w.namespace, w.group, w.key))
        else:
            conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?)",
                         (w.namespace, w.group, w.key, w.value_json))
    return events


@each
def complete_tx(conn: sqlite3.Connection, arg: TxArg) -> tuple[TxResult, bool, list[str]]:
    """(result, whether the acknowledged delivery was on a FIFO queue, so its group moves on, the steps
    its writes' change events went to)."""
    delivery, rows, writes, reads, now = arg
    held = None
    if delivery is not None:
        held = conn.execute(_HELD, (delivery.id, delivery.attempt)).fetchone()
        if held is None:
            return "lost", False, []
    if not _reads_hold(conn, reads):
        return "conflict", False, []
    changes = q.delivery_rows(_apply(conn, writes), now)
    if held is not None:
        conn.execute("DELETE FROM deliveries WHERE seq = ?", (held[0],))
    if rows or changes:
        q.publish_run(conn, [changes + rows])
    return "ok", bool(held is not None and held[1]), [r[1] for r in changes]
