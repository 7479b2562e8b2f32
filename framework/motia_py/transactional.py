"""Publishing inside the application's own PostgreSQL transaction (``Client.emit(..., connection=conn)``).

The event's deliveries are inserted through the caller's connection, by the statement the PostgreSQL
backend publishes with (:attr:`motia_py.backends.postgres_sql.Sql.publish`), so they commit or roll back
with the caller's own writes: a rolled-back transaction enqueues nothing, a committed one enqueues the
event exactly once. The statement's ``NOTIFY`` reaches the workers when the transaction commits.

Connections it takes:

- async (:func:`emit_async`): an asyncpg connection (or one lent by an asyncpg pool), a SQLAlchemy
  ``AsyncConnection`` or ``AsyncSession``, a psycopg 3 ``AsyncConnection``;
- sync (:func:`emit_sync`): any DB-API connection with ``cursor()`` whose driver takes ``%s`` parameters
  (psycopg 2 and 3, Django's ``django.db.connection``), a SQLAlchemy ``Connection`` or ``Session``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import asyncpg

from .backends.base import Backend, Outgoing
from .backends.postgres import PostgresBackend
from .backends.postgres_sql import format_style, publish_args, publish_rows
from .context import encode_payload
from .errors import BackendError
from .publisher import Publisher

_ASYNCPG = (asyncpg.Connection, asyncpg.pool.PoolConnectionProxy)
_ASYNC_KINDS = ("an asyncpg connection, a SQLAlchemy AsyncConnection or AsyncSession, or a psycopg "
                "AsyncConnection")
_SYNC_KINDS = "a DB-API connection (psycopg 2 or 3, Django's connection), or a SQLAlchemy Connection or Session"


def postgres_of(backend: Backend) -> PostgresBackend:
    """``backend`` as the PostgreSQL backend a transactional emit needs.

    Raises:
        BackendError: it is another backend (the event could not share the caller's transaction).
    """
    pg = backend if isinstance(backend, PostgresBackend) else getattr(backend, "core", None)  # composed: its core
    if not isinstance(pg, PostgresBackend):
        raise BackendError(f"emit(..., connection=...) publishes inside your PostgreSQL transaction, so it needs "
                           f"the postgres backend; this client's backend is {backend.url}")
    return pg


@contextlib.contextmanager
def _prepared(publisher: Publisher, topic: str, data: Any, trace_id: str | None, group_id: str | None,
              delay_s: float, priority: int | None = None) -> Iterator[tuple[Outgoing, str]]:
    """The checks and the fan-out of :meth:`Publisher.emit`, inside its producer span."""
    publisher.check_external_topic(topic)
    text = encode_payload(data, publisher.max_payload_bytes)
    fresh = trace_id is None and not publisher.spans.in_span()  # a new trace: the event's id is the trace's
    with publisher.spans.span(f"publish {topic}", "producer", trace_id=trace_id,
                              attributes={"messaging.destination.name": topic}) as (tid, tp, _):
        out = publisher.outgoing(topic, text, trace_id or tid, group_id, delay_s, None, tp, priority,
                                 event_id=tid if fresh else None)
        yield out, out.envelope.id


def _statement(backend: PostgresBackend, out: Outgoing) -> tuple[str, list[Any]] | None:
    rows = publish_rows([out])
    if not rows:
        return None  # a topic listed in entry_topics that no step subscribes to: nothing to insert
    return backend.sql.publish, publish_args(rows, backend.time_arg(), backend.schema)


def _styled(sql: str, args: list[Any], paramstyle: str) -> tuple[str, tuple[Any, ...]]:
    """The statement for a driver of ``paramstyle``: ``$n`` (asyncpg's, "numeric_dollar") or ``%s``."""
    if paramstyle == "numeric_dollar":
        return sql, tuple(args)
    text, ordered = format_style(sql, args)
    return text, tuple(ordered)


async def emit_async(publisher: Publisher, backend: Backend, connection: Any, topic: str, data: Any, *,
                     trace_id: str | None = None, message_group_id: str | None = None, delay_s: float = 0.0,
                     priority: int | None = None) -> str:
    """Publish one event through ``connection``, inside its open transaction; return the trace id.

    Raises:
        UnknownTopicError, PayloadTooLargeError: as :meth:`Publisher.emit`.
        BackendError: the client's backend is not PostgreSQL.
        TypeError: ``connection`` is none of the kinds in the module docstring.
    """
    pg = postgres_of(backend)
    with _prepared(publisher, topic, data, trace_id, message_group_id, delay_s, priority) as (out, tid):
        statement = _statement(pg, out)
        if statement is not None:
            await _execute_async(connection, *statement)
    return tid


async def _execute_async(connection: Any, sql: str, args: list[Any]) -> None:
    if isinstance(connection, _ASYNCPG):
        await connection.fetchval(sql, *args)
        return
    if hasattr(connection, "get_bind") and inspect.iscoroutinefunction(getattr(connection, "connection", None)):
        connection = await connection.connection()  # an AsyncSession: its connection, in its transaction
    if inspect.iscoroutinefunction(getattr(connection, "exec_driver_sql", None)):  # SQLAlchemy AsyncConnection
        await connection.exec_driver_sql(*_styled(sql, args, connection.dialect.paramstyle))
        return
    if type(connection).__module__.startswith("psycopg") and inspect.iscoroutinefunction(
            getattr(connection, "execute", None)):
        await connection.execute(*format_style(sql, args))
        return
    raise TypeError(f"emit(connection=...) takes {_ASYNC_KINDS}, not {type(connection).__name__}; "
                    "from synchronous code use emit_sync(..., connection=...)")


def emit_sync(publisher: Publisher, backend: Backend, connection: Any, topic: str, data: Any, *,
              trace_id: str | None = None, message_group_id: str | None = None, delay_s: float = 0.0,
              priority: int | None = None) -> str:
    """Blocking :func:`emit_async` for a synchronous connection, run in the caller's thread (where the
    connection and its transaction live); return the trace id.

    Raises:
        UnknownTopicError, PayloadTooLargeError: as :meth:`Publisher.emit`.
        BackendError: the client's backend is not PostgreSQL.
        TypeError: ``connection`` is none of the kinds in the module docstring.
    """
    pg = postgres_of(backend)
    with _prepared(publisher, topic, data, trace_id, message_group_id, delay_s, priority) as (out, tid):
        statement = _statement(pg, out)
        if statement is not None:
            _execute_sync(connection, *statement)
    return tid


def _execute_sync(connection: Any, sql: str, args: list[Any]) -> None:
    if hasattr(connection, "get_bind") and callable(getattr(connection, "connection", None)) \
            and not hasattr(connection, "exec_driver_sql"):
        connection = connection.connection()  # a SQLAlchemy Session: its connection, in its transaction
    if callable(getattr(connection, "exec_driver_sql", None)):  # a SQLAlchemy Connection
        if inspect.iscoroutinefunction(connection.exec_driver_sql):
            raise TypeError("a SQLAlchemy AsyncConnection needs `await client.emit(..., connection=...)`")
        connection.exec_driver_sql(*_styled(sql, args, connection.dialect.paramstyle))
        return
    if not callable(getattr(connection, "cursor", None)) or isinstance(connection, _ASYNCPG):
        raise TypeError(f"emit_sync(connection=...) takes {_SYNC_KINDS}, not {type(connection).__name__}; "
                        "from async code use `await client.emit(..., connection=...)`")
    text, ordered = format_style(sql, args)
    cursor = connection.cursor()
    try:
        cursor.execute(text, ordered)
    finally:
        cursor.close()
