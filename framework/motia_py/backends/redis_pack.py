"""Packing and sending commands faster with the asyncio Redis client.

- redis-py's asyncio connections build the bytes of every command in Python, argument by argument, where
  its synchronous ones use hiredis's ``pack_command``. A worker's scripts carry dozens to hundreds of
  arguments per call (a batch of completions with their outboxes), so packing took over a quarter of a
  draining worker's CPU. The connections of :func:`use_hiredis_packing` pack with hiredis the commands
  whose arguments it encodes exactly as redis-py does (text as UTF-8, bytes as they are, integers in
  decimal); a command with anything else (floats, memoryviews) is packed by redis-py as before.
- With a socket timeout, redis-py sends every command under ``asyncio.wait_for``, which on Python 3.11
  runs the write as a task of its own: one more turn of the event loop per command. These connections
  write at once and only wait (with redis-py's timeout and errors) when the socket did not take it all.
"""

from __future__ import annotations

from typing import Any, cast

from hiredis import pack_command as _pack
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def use_hiredis_packing(pool: ConnectionPool) -> ConnectionPool:
    """Make ``pool``'s connections (made from now on) pack commands with hiredis; returns ``pool``."""
    kwargs = pool.connection_kwargs
    encoding, errors = kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict")
    if encoding.lower().replace("-", "") == "utf8" and errors == "strict":
        pool.connection_class = _fast(pool.connection_class)
    return pool


def _fast(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` with hiredis's packer (one class per connection class, made once)."""
    made = _CLASSES.get(base)
    if made is not None:
        return made

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) and " " not in head and _plain(args):
            return [_pack(args)]
        return base.pack_command(self, *args)

    async def send_packed_command(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        writer = getattr(self, "_writer", None)
        if (not isinstance(command, list) or writer is None or not self.is_connected
                or writer.transport.is_closing()):
            return await base.send_packed_command(self, command, check_health)  # connects, or reports the loss
        if check_health:
            await cast(Any, self).check_health()
        try:
            writer.writelines(command)
        except RuntimeError as exc:  # uvloop: a transport the server just closed ("the handler is closed")
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        if writer.transport.get_write_buffer_size():  # the socket did not take it all: drain, as redis-py does
            await base.send_packed_command(self, [], check_health=False)

    made = _CLASSES[base] = type(f"Hiredis{base.__name__}", (base,), {
        "pack_command": pack_command, "send_packed_command": send_packed_command})
    return made


def _plain(args: tuple[Any, ...]) -> bool:
    """Every argument is text, bytes or a (non-bool) integer: encoded alike by hiredis and redis-py."""
    for arg in args:
        kind = type(arg)
        if kind is not str and kind is not bytes and kind is not int:
            return False
    return True
