"""The SQLite backend's file: its URL, its schema, opening it (WAL) and migrating older files in place.

Schema versions (``PRAGMA user_version``): 1 queue, dead letters, state, leases and metadata; 2 traces;
3 ``traceparent`` on deliveries and dead letters; 4 one cron-tick record per step in ``meta`` (the
per-tick leases ``cron-tick:<step>:<time>`` of versions 1 to 3 are deleted by the migration); 5 ``owner``
on deliveries (the worker that took the lease) and one index of every leased row, standard or FIFO, by
lease expiry (replacing ``deliveries_leased``, which held the standard ones only); 6 flow control:
``priority``, ``rate_key`` and ``conc_key`` on deliveries and dead letters, an index of the standard rows
of a priority other than 0, and ``flow_starts`` (the starts of each step's rate windows); 7 job handles:
an index of deliveries by event id, the ``handles`` (finished records with an index of finish times, last
errors, progress), ``cancels`` and ``keys`` (idempotency keys) tables.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from ..errors import BackendUnavailableError
from ..meta_keys import cron_tick

SCHEMA_VERSION: Final = 7
BUSY_TIMEOUT_MS: Final = 5000

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,     -- the rowid: a new row always gets max + 1, which keeps the order
    id TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL,
    emitted_at REAL NOT NULL, group_id TEXT, source TEXT, traceparent TEXT,
    fifo_group TEXT,             -- NULL on standard queues; the message group ('' if none) on FIFO ones
    available_at REAL NOT NULL,  -- when it is due; while leased, when the lease expires
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,            -- NULL unless leased
    first_delivered_at REAL,
    owner TEXT                   -- the worker (host:pid) that holds the lease, or held it last
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (step, available_at) WHERE fifo_group IS NULL;
CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (step, available_at) WHERE lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_fifo ON deliveries (step, fifo_group, seq) WHERE fifo_group IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT NOT NULL UNIQUE,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL, topic TEXT NOT NULL, data TEXT NOT NULL, trace_id TEXT NOT NULL,
    emitted_at REAL NOT NULL, group_id TEXT, source TEXT, traceparent TEXT,
    attempts INTEGER NOT NULL, error TEXT NOT NULL, traceback TEXT NOT NULL,
    failed_at REAL NOT NULL, first_attempt_at REAL
);
CREATE INDEX IF NOT EXISTS dead_letters_failed ON dead_letters (failed_at);
CREATE TABLE IF NOT EXISTS state (
    namespace TEXT NOT NULL, grp TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, grp, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_runs (seq INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, run TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trace_runs_trace ON trace_runs (trace_id, seq);
CREATE TABLE IF NOT EXISTS traces (trace_id TEXT PRIMARY KEY, last REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_last ON traces (last);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE TABLE IF NOT EXISTS handles (
    event_id TEXT NOT NULL, step TEXT NOT NULL,
    topic TEXT NOT NULL, trace_id TEXT NOT NULL, emitted_at REAL NOT NULL,
    state TEXT,                  -- succeeded | dead | cancelled once finished; NULL: notes of a live delivery
    delivery_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    error TEXT, result TEXT, progress TEXT,
    PRIMARY KEY (event_id, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS handles_finished ON handles (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS cancels (event_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
    topic TEXT NOT NULL, key TEXT NOT NULL, event_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (topic, key)
) WITHOUT ROWID;
"""


def resolve_path(url: str, root: Path) -> Path:
    """The database file of ``sqlite:///relative/path.db`` (against ``root``) or ``sqlite:////abs.db``.

    Raises:
        BackendUnavailableError: the URL names no file.
    """
    rest = url.removeprefix("sqlite://").split("?", 1)[0]
    if rest == url or not rest.startswith("/") or rest == "/":
        raise BackendUnavailableError(
            f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = Path(unquote(rest[1:]))
    return path if path.is_absolute() else root / path


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create or migrate) the file. Processes starting together on a new file race for the
    switch to WAL and the schema; SQLite answers "database is locked" to the loser at once, without
    using the busy timeout, so that case is retried for as long as the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            return _connect_once(path)
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # on the connection's own thread, never the event loop
            delay = min(0.2, delay * 2)


def _connect_once(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)  # short calls may run on the event loop's thread
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendUnavailableError(f"{path}: cannot switch to WAL mode (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackendUnavailableError(
                f"{path}: schema version {version} is newer than this motia-py supports ({SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            _migrate(conn, version)
    except BaseException:
        conn.close()
        raise
    return conn


_ADDED_COLUMNS: Final = (("deliveries", "traceparent"), ("dead_letters", "traceparent"), ("deliveries", "owner"))
"""Columns added since version 1 (all TEXT), in the order they came."""
_FLOW_COLUMNS: Final = tuple((table, column) for table in ("deliveries", "dead_letters") for column in (
    "priority INTEGER NOT NULL DEFAULT 0", "rate_key TEXT", "conc_key TEXT"))
"""Version 6: a delivery's priority and flow-control keys (see :class:`~.records.Target`)."""
_FLOW_SCHEMA: Final = (
    "CREATE INDEX IF NOT EXISTS deliveries_prio ON deliveries (step, priority, available_at) "
    "WHERE fifo_group IS NULL AND priority != 0",
    "CREATE TABLE IF NOT EXISTS flow_starts (step TEXT NOT NULL, bucket TEXT, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS flow_starts_step ON flow_starts (step, at)",
)
"""Version 6: the prioritised rows (rows of priority 0, nearly all of them, stay out of it), and the starts
of the rate windows (``bucket``: the rate key of a keyed limit, NULL for a step's one window)."""
_OLD_TICK_MARKERS: Final = cron_tick("")  # versions 1-3: a lease "cron-tick:<step>:<time>" per fired tick


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a file of schema ``version`` to :data:`SCHEMA_VERSION`. Every change is idempotent, so two
    processes migrating one file together (both read the old version) do no harm."""
    conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")  # new tables and indexes (IF NOT EXISTS)
    conn.execute("BEGIN IMMEDIATE")  # the rest is checked under the write lock
    for table, column in _ADDED_COLUMNS:
        if column not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
    for table, column in _FLOW_COLUMNS:
        if column.split()[0] not in {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    for statement in _FLOW_SCHEMA:
        conn.execute(statement)
    conn.execute("DROP INDEX IF EXISTS deliveries_leased")  # versions 1-4; deliveries_expiry covers it
    if version < 4:  # the per-tick markers, replaced by one record per step (up to 60,000 a week each)
        conn.execute("DELETE FROM leases WHERE substr(key, 1, length(?1)) = ?1", (_OLD_TICK_MARKERS,))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


_DAMAGED: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def damage_hint(exc: sqlite3.Error, path: Path | str) -> str:
    """What to do, appended to an error saying the database file is damaged (empty for any other error).

    A damaged file does not mend itself: retrying (as for an outage) only repeats the error.
    """
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _DAMAGED:
        return ""
    return (f" (the file is damaged: stop every process that uses it, then restore {path} from a backup, or "
            f"rebuild it with: sqlite3 {path} .recover | sqlite3 recovered.db)")
