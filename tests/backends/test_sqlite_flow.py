"""SQLite-only behaviour of flow control: a schema-5 file is upgraded in place (its queued rows keep
working, with priority 0 and no keys), and the claims of prioritised rows use their own index."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from motia_py.backends.base import Envelope, FlowControl, Outgoing, Target, new_id
from motia_py.backends.sqlite import SqliteBackend
from motia_py.backends.sqlite_queue import LEVEL
from motia_py.backends.sqlite_schema import SCHEMA_VERSION


def out(step: str, data: object, priority: int = 0, key: str | None = None) -> Outgoing:
    env = Envelope(id=new_id(), topic="t", data_json=json.dumps(data), trace_id=new_id(), emitted_at=1.0)
    return Outgoing(env, (Target(step, priority=priority, concurrency_key=key),))


async def test_a_version_5_file_gains_priorities_and_keys_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v5.db"
    b = SqliteBackend("sqlite:///v5.db", path)
    await b.open()
    await b.publish([out("A", "old-1"), out("A", "old-2")])
    await b.close()
    with sqlite3.connect(path) as conn:  # back to schema 5: no flow columns, index or table
        conn.executescript("""
            DROP INDEX deliveries_prio; DROP TABLE flow_starts;
            ALTER TABLE deliveries DROP COLUMN priority; ALTER TABLE deliveries DROP COLUMN rate_key;
            ALTER TABLE deliveries DROP COLUMN conc_key; ALTER TABLE dead_letters DROP COLUMN priority;
            ALTER TABLE dead_letters DROP COLUMN rate_key; ALTER TABLE dead_letters DROP COLUMN conc_key;
            PRAGMA user_version = 5;
        """)
    conn.close()

    b = SqliteBackend("sqlite:///v5.db", path)
    await b.open()
    try:
        await b.publish([out("A", "new", priority=5, key="k")])
        got = await b.claim("A", 10, 30, control=FlowControl(key_concurrency=1))
        assert [(d.envelope.data, d.priority, d.concurrency_key) for d in got] == [
            ("new", 5, "k"), ("old-1", 0, None)]  # the old rows have no key: they share the key ""
    finally:
        await b.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7  # 6 flow control, 7 handles
    conn.close()


async def test_prioritised_rows_are_read_from_their_own_index(tmp_path: Path) -> None:
    b = SqliteBackend("sqlite:///p.db", tmp_path / "p.db")
    await b.open()
    await b.close()
    with sqlite3.connect(tmp_path / "p.db") as conn:
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + LEVEL.format(where=""),
                                                   {"step": "A", "p": 5, "now": 1.0, "limit": 10}))
    conn.close()
    assert "deliveries_prio" in plan and "TEMP B-TREE" not in plan  # in index order: no sort
