"""The local half of every backend's pub/sub: the subscriptions of this process and their delivery.

A backend's :class:`~.stores.PubSubStore` carries messages between processes (in-process for memory,
datagrams for SQLite, Redis pub/sub for Redis); whatever arrives in a process is handed to its
:class:`Fanout`, which gives it to every local :class:`Subscription` and listener of the channel.
Nothing here blocks: a subscription buffers what its reader has not taken yet, up to a bound past which
the oldest messages are dropped (and counted), so one stuck reader never slows a publisher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

Listener = Callable[[str], None]
"""Called with each message of a channel, on the event loop; it must not block."""

DEFAULT_BUFFER: Final = 10_000


class Subscription:
    """The messages of one channel that reached this process since the subscription was made.

    Use ``async for message in sub`` or ``await sub.get()``; ``await sub.close()`` ends it (a pending
    ``get`` then raises ``StopAsyncIteration``). Messages come in the order they arrived; past
    ``buffer`` unread ones, the oldest are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, channel: str, on_close: Callable[[Subscription], None], buffer: int = DEFAULT_BUFFER) -> None:
        self.channel = channel
        self.dropped = 0
        self._on_close = on_close
        self._buffer = buffer
        self._items: deque[str] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def put(self, message: str) -> None:
        """Deliver one message (called by the backend's fan-out)."""
        if self._closed:
            return
        if len(self._items) >= self._buffer:
            self._items.popleft()
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def get_nowait(self) -> str | None:
        """The next buffered message, or None when none is waiting."""
        if not self._items:
            return None
        return self._items.popleft()

    async def get(self) -> str:
        """The next message, waiting for it.

        Raises:
            StopAsyncIteration: the subscription was closed (before or while waiting).
        """
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        return await self.get()

    async def close(self) -> None:
        """Stop receiving; buffered messages are dropped."""
        if self._closed:
            return
        self._closed = True
        self._items.clear()
        self._ready.set()
        self._on_close(self)


class Fanout:
    """The subscriptions and listeners of one process, per channel."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._listeners: dict[str, list[Listener]] = {}

    def subscribe(self, channel: str, buffer: int = DEFAULT_BUFFER) -> Subscription:
        """A new subscription to ``channel``."""
        sub = Subscription(channel, self._drop, buffer)
        self._subs.setdefault(channel, set()).add(sub)
        return sub

    def listen(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every message of ``channel``; returns the function that stops it."""
        self._listeners.setdefault(channel, []).append(listener)

        def stop() -> None:
            listeners = self._listeners.get(channel, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(channel, None)

        return stop

    def _drop(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.channel]

    def wanted(self, channel: str) -> bool:
        """True when some subscription or listener of this process takes ``channel``."""
        return channel in self._subs or channel in self._listeners

    def deliver(self, channel: str, message: str) -> None:
        """Hand one message to every local subscription and listener of ``channel``."""
        for sub in tuple(self._subs.get(channel, ())):
            sub.put(message)
        for listener in tuple(self._listeners.get(channel, ())):
            listener(message)

    async def close(self) -> None:
        """Close every subscription (their readers stop) and forget the listeners."""
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()
        self._listeners.clear()
