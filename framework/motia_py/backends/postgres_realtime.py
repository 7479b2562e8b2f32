"""The PostgreSQL backend's pub/sub and state changes (the base of :class:`.postgres.PostgresBackend`).

**Pub/sub** rides on ``NOTIFY``: every message goes to the schema's pub/sub channel
(:func:`.postgres_sql.pubsub_channel`), which the process's listening connection (the one that also
carries the queue's wake-ups) hands to its :class:`~.pubsub.Fanout`. A notification holds at most 8000
bytes, so a longer message is cut into pieces sent in one transaction: PostgreSQL delivers the
notifications of one transaction together and in order, and the receiver joins them. When the
listening connection drops, a task opens it again (messages sent meanwhile are lost: the store is best
effort).

**State changes** run in one transaction: the key's row is locked (``FOR UPDATE``), compared, written,
and the change event is queued with the queue's own publish statement before the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Final

from ..errors import BackendError
from .postgres_queue import PostgresQueue
from .postgres_sql import publish_args, publish_rows, pubsub_channel
from .pubsub import Fanout, Subscription
from .records import Outgoing, new_id
from .state_change import ANY, Expected, StateChange, change_event, matches

_PIECE_BYTES: Final = 7800  # of UTF-8 per notification (the payload limit is 8000 bytes, headers included)
_MAX_RACES: Final = 1000
_RELISTEN_MAX_S: Final = 5.0


def _pieces(text: str) -> list[str]:
    """``text`` cut into pieces of at most :data:`_PIECE_BYTES` bytes of UTF-8, never inside a character."""
    data = text.encode()
    out: list[str] = []
    i = 0
    while i < len(data):
        j = min(i + _PIECE_BYTES, len(data))
        while j < len(data) and data[j] & 0xC0 == 0x80:  # a continuation byte: cut before its character
            j -= 1
        out.append(data[i:j].decode())
        i = j
    return out


def encode_message(channel: str, message: str) -> list[str]:
    """The notification payloads of one message: ``=`` and the body when it fits in one, else pieces
    ``+<id>:<index>:<count>:<part>`` of the body. The body is ``<len(channel)>:<channel><message>``."""
    body = f"{len(channel)}:{channel}{message}"
    if len(body.encode()) <= _PIECE_BYTES:
        return ["=" + body]
    parts = _pieces(body)
    mid = new_id()
    return [f"+{mid}:{i}:{len(parts)}:{part}" for i, part in enumerate(parts)]


def _split_body(body: str) -> tuple[str, str]:
    size, _, rest = body.partition(":")
    n = int(size)
    return rest[:n], rest[n:]


class Assembler:
    """Joins the pieces of long messages (they arrive together, in order) into (channel, message)."""

    def __init__(self) -> None:
        self._id = ""
        self._parts: list[str] = []

    def feed(self, payload: str) -> tuple[str, str] | None:
        """One notification; the (channel, message) it completes, or None."""
        if payload.startswith("="):
            return _split_body(payload[1:])
        mid, index, count, part = payload[1:].split(":", 3)
        if int(index) == 0:
            self._id, self._parts = mid, []
        elif mid != self._id or len(self._parts) != int(index):
            self._id, self._parts = "", []  # a piece missing (the listener reconnected): drop the message
            return None
        self._parts.append(part)
        if len(self._parts) < int(count):
            return None
        body, self._id, self._parts = "".join(self._parts), "", []
        return _split_body(body)


class PostgresRealtime(PostgresQueue):
    """:class:`~.stores.PubSubStore` and :class:`~.stores.StateChangeStore` on PostgreSQL (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fanout = Fanout()
        self._assembler = Assembler()
        self._pubsub_channel = pubsub_channel(self.schema)
        self._relisten: asyncio.Task[None] | None = None

    # -- state changes ------------------------------------------------------------------------------
    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Write (or delete) and queue the change event in one transaction (see the protocol)."""
        t, where = self.sql.table("state"), "namespace = $1 AND grp = $2 AND key = $3"
        steps: list[str] = []
        async with self._translate_acquire() as conn, conn.transaction():
            for _ in range(_MAX_RACES):
                old: str | None = await conn.fetchval(f"SELECT value FROM {t} WHERE {where} FOR UPDATE",
                                                      namespace, group, key)
                if not matches(expected, old):
                    return StateChange(False, old)
                if new_json is None:
                    if old is not None:
                        await conn.execute(f"DELETE FROM {t} WHERE {where}", namespace, group, key)
                elif old is None:
                    if not await conn.fetchval(f"INSERT INTO {t} VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING "
                                               "RETURNING true", namespace, group, key, new_json):
                        continue  # another writer created the key meanwhile: read it (locked) again
                elif new_json != old:
                    await conn.execute(f"UPDATE {t} SET value = $4 WHERE {where}", namespace, group, key, new_json)
                break
            else:
                raise BackendError(f"{namespace}/{group}/{key}: lost {_MAX_RACES} races to create the key")
            if old != new_json and notify is not None and notify.targets:
                rows = publish_rows([change_event(notify, group, key, old, new_json)])
                await conn.fetchval(self.sql.publish, *publish_args(rows, self.time_arg(), self.schema))
                steps = [r[1] for r in rows]
        self._wake(steps)
        return StateChange(True, old)

    # -- pub/sub ------------------------------------------------------------------------------------
    async def pubsub_publish(self, channel: str, message: str) -> None:
        """``NOTIFY`` on the schema's pub/sub channel (a long message in pieces, in one transaction)."""
        payloads = encode_message(channel, message)
        await self._fetchval("SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p",
                             self._pubsub_channel, payloads)

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``, ready once the process's listening connection listens."""
        await self._listen()
        return self.fanout.subscribe(channel)

    def _channels(self) -> list[tuple[str, Callable[[Any, int, str, Any], None]]]:
        return [*super()._channels(), (self._pubsub_channel, self._on_pubsub)]

    def _on_pubsub(self, conn: object, pid: int, chan: str, payload: object) -> None:
        done = self._assembler.feed(str(payload))
        if done is not None and self.fanout.wanted(done[0]):
            self.fanout.deliver(*done)

    def _on_listener_lost(self, conn: object) -> None:
        super()._on_listener_lost(conn)
        self._assembler = Assembler()
        if self._relisten is None and self._pool is not None:  # subscribers wait for no one to call wait()
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again(),
                                                                    name="motia-postgres-listen")

    async def _listen_again(self) -> None:
        """Open the listening connection again, with backoff, until it is back or the backend closes."""
        delay = 0.05
        try:
            while self._pool is not None:
                with contextlib.suppress(BackendError):
                    await self._listen()
                    return
                await asyncio.sleep(delay)
                delay = min(_RELISTEN_MAX_S, delay * 2)
        finally:
            self._relisten = None

    async def close(self) -> None:
        """Stop listening again, end every subscription, then close the backend."""
        relisten, self._relisten = self._relisten, None
        if relisten is not None:
            relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relisten
        await self.fanout.close()
        await super().close()
