"""A lane's connection after its handshake: its replies read by a protocol of its own.

redis-py reads a reply through an ``asyncio.StreamReader``: its read loop, a timeout context and the
stream's own wake-up per reply. On a call made one at a time that was about 15 us of a 50 us round trip
on this project's machine. :func:`take_over` lets redis-py connect as the pool's settings say
(``AUTH``, ``SELECT``, ``CLIENT SETNAME``), then swaps the connection's transport over to a :class:`Wire`:
the bytes of each reply go straight to a hiredis reader made as redis-py makes its own (the same
decoding, the same exception for each error reply), and the parsed reply to the call waiting for it.

A wire carries one call at a time (the lane's). What redis-py did around the reading is kept:

- a reply that does not come within the connection's socket timeout fails the call with redis-py's
  ``TimeoutError`` and closes the connection (a late reply must never answer the next call);
- a cancelled call closes the connection, for the same reason;
- a lost connection fails the call waiting, and every later one, with redis-py's ``ConnectionError``.

Only a plain TCP connection (not TLS) speaking RESP2 or RESP3 (redis-py 8's default) through
redis-py's hiredis parser is taken over, any other stays redis-py's (:func:`take_over` returns None).
The lane asks for no RESP3 push message (no client tracking, no subscription); one that came anyway
would be skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_MORE: Final = object()  # hiredis's answer while a reply is still incomplete
_PUSH: Final[type | None] = getattr(hiredis, "PushNotification", None)  # RESP3 out-of-band (hiredis >= 3.2)


class Wire(asyncio.Protocol):
    """The protocol of a taken-over connection (see the module docstring)."""

    def __init__(self, transport: asyncio.Transport, reader: hiredis.Reader, timeout_s: float | None) -> None:
        self._transport = transport
        self._reader = reader
        self._timeout_s = timeout_s
        self._waiting: asyncio.Future[Any] | None = None
        self._lost: Exception | None = None

    @property
    def lost(self) -> bool:
        """The connection is gone (or closed): no call can be made on it."""
        return self._lost is not None

    def data_received(self, data: bytes) -> None:
        """Parse what came; hand a whole reply to the call waiting for it."""
        self._reader.feed(data)
        reply = self._next()
        if reply is _MORE:
            return
        waiting, self._waiting = self._waiting, None
        if waiting is None or waiting.done() or self._next() is not _MORE:
            self.close()  # a reply nobody asked for: the stream is out of step, nothing on it can be trusted
            return
        waiting.set_result(reply)

    def _next(self) -> Any:
        """The next whole reply, or ``_MORE``; RESP3 push messages (none is asked for) are skipped."""
        reply = self._reader.gets()
        while _PUSH is not None and isinstance(reply, _PUSH):
            reply = self._reader.gets()
        return reply

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the call waiting, and every later one."""
        if self._lost is None:
            self._lost = RedisConnectionError(f"Connection closed by server or lost: {exc}" if exc
                                              else "Connection closed")
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(self._lost)

    def close(self) -> None:
        """Close the connection (the call waiting, if any, fails)."""
        if self._lost is None:
            self._lost = RedisConnectionError("Connection closed")
        self._transport.close()
        self.connection_lost(None)

    async def call(self, packed: Sequence[bytes]) -> Any:
        """Send one packed command and return its reply (an error reply raised as redis-py raises it).

        Raises:
            redis.exceptions.ConnectionError: the connection is lost.
            redis.exceptions.TimeoutError: no reply within the socket timeout (the connection is closed).
            redis.exceptions.ResponseError: the server answered with an error (``NoScriptError``...).
        """
        if self._lost is not None:
            raise self._lost
        loop = asyncio.get_running_loop()
        waiting = self._waiting = loop.create_future()
        self._transport.writelines(packed)
        timer = None if self._timeout_s is None else loop.call_later(self._timeout_s, self._time_out, waiting)
        try:
            reply = await waiting
        except asyncio.CancelledError:
            self.close()  # its reply would otherwise answer the next call
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _time_out(self, waiting: asyncio.Future[Any]) -> None:
        if not waiting.done():
            waiting.set_exception(RedisTimeoutError("Timeout reading from the lane's connection"))
            self.close()


def take_over(conn: AbstractConnection) -> Wire | None:
    """Swap the freshly connected ``conn``'s transport over to a :class:`Wire`; None (nothing changed)
    when the connection is TLS, or does not speak RESP2 or RESP3 through redis-py's hiredis parser.
    From then on ``conn`` must only be disconnected, with ``nowait=True`` (its stream never learns that
    it closed)."""
    parser: Any = getattr(conn, "_parser", None)
    writer: Any = getattr(conn, "_writer", None)
    stream: Any = getattr(conn, "_reader", None)
    parsed: Any = getattr(parser, "_reader", None)  # redis-py's hiredis reader (None: its Python parser)
    if (writer is None or stream is None or parsed is None or not hasattr(parser, "parse_error")
            or str(getattr(conn, "protocol", 2) or 2) not in ("2", "3")):
        return None
    if getattr(stream, "_buffer", b"") or parsed.has_data():
        return None  # bytes already read and not parsed (never after a handshake): leave it to redis-py
    kwargs: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": parser.parse_error,
                              "notEnoughData": _MORE}
    encoder = conn.encoder
    if encoder.decode_responses:
        kwargs.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
    transport = writer.transport
    if transport.get_extra_info("sslcontext") is not None:
        return None  # TLS: left to redis-py's reading (no TLS server in this project's tests)
    wire = Wire(transport, hiredis.Reader(**kwargs), conn.socket_timeout)
    transport.set_protocol(wire)
    return wire
