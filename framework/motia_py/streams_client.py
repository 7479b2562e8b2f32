"""A Python client of stream servers (motia-py's, or Motia's own): subscribe to an item or a group and
read what arrives, for tests and for Python programs that follow a stream.

```python
async with StreamClient("ws://127.0.0.1:3000") as client:
    job = await client.subscribe_item("jobProgress", "jobs", "j1")
    first = await job.next()             # {"event": {"type": "sync", "data": {...}}, ...}
    await job.wait_for(lambda m: m["event"]["type"] == "delete")
    print(job.state)                     # the item as it is now (None once deleted)
```

It speaks the same protocol as Motia's ``@motiadev/stream-client`` and routes messages the same way: a
message about an item goes to the subscriptions of that item and (unless it is a ``sync``) of its group;
a group-wide message to the group's. :attr:`Subscription.state` follows ``sync``/``create``/``update``/
``delete`` as Motia's clients do; every message is also kept, in order, in :attr:`Subscription.messages`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from .errors import MotiaError

Message = dict[str, Any]


class StreamClientError(MotiaError):
    """The server refused the connection, or a subscription, or nothing came in time."""


class Subscription:
    """One joined item or group: what arrived for it, and the state it describes."""

    def __init__(self, client: _Subscriber, stream: str, group_id: str, item_id: str | None) -> None:
        self.client = client
        self.stream = stream
        self.group_id = group_id
        self.item_id = item_id
        self.subscription_id = uuid.uuid4().hex
        self.messages: list[Message] = []
        self.arrived_at: list[float] = []  # when each message of ``messages`` arrived (epoch seconds)
        self.events: list[Mapping[str, Any]] = []  # custom events ({"type", "data"}), errors included
        self.state: Any = None if item_id is not None else []
        self._arrived = asyncio.Event()
        self._taken = 0

    @property
    def join(self) -> dict[str, Any]:
        """The ``data`` of this subscription's join and leave messages."""
        data: dict[str, Any] = {"streamName": self.stream, "groupId": self.group_id,
                                "subscriptionId": self.subscription_id}
        if self.item_id is not None:
            data["id"] = self.item_id
        return data

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The error event the server sent instead of data (``{"code", "message"}``), if any."""
        for e in self.events:
            if e.get("type") == "error":
                return e.get("data")
        return None

    def feed(self, msg: Message) -> None:
        """Take one message routed to this subscription."""
        self._apply(msg.get("event") or {})
        self.arrived_at.append(time.time())
        self.messages.append(msg)
        self._arrived.set()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data")
        if kind == "event":
            self.events.append(event.get("event") or {})
        elif self.item_id is not None:
            self.state = None if kind == "delete" else data
        elif kind == "sync":
            self.state = list(data or [])
        elif kind in ("create", "update") and isinstance(data, Mapping):
            rest = [i for i in self.state if i.get("id") != data.get("id")]
            known = len(rest) != len(self.state)
            self.state = [data if i.get("id") == data.get("id") else i for i in self.state] if known else [*rest, data]
        elif kind == "delete" and isinstance(data, Mapping):
            self.state = [i for i in self.state if i.get("id") != data.get("id")]

    async def next(self, timeout: float = 5.0) -> Message:
        """The next message not returned by :meth:`next` yet (waiting up to ``timeout`` seconds).

        Raises:
            StreamClientError: nothing arrived in time.
        """
        return await self.wait_for(lambda _: True, timeout)

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 5.0) -> Message:
        """The first message after the ones already taken by :meth:`next`/:meth:`wait_for` that matches.

        Raises:
            StreamClientError: none arrived in time.
        """
        start = self._taken

        def found() -> int | None:
            for i in range(start, len(self.messages)):
                if predicate(self.messages[i]):
                    return i
            return None

        try:
            async with asyncio.timeout(timeout):
                while (i := found()) is None:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise StreamClientError(f"no matching message for {self.stream}/{self.group_id}"
                                    f"{'/' + self.item_id if self.item_id else ''} within {timeout} s "
                                    f"({len(self.messages)} arrived)") from None
        self._taken = i + 1
        return self.messages[i]

    async def close(self) -> None:
        """Leave (the server stops sending for this subscription)."""
        await self.client.leave(self)


class _Subscriber:
    """Subscriptions by room, and the routing of incoming messages to them (as Motia's client does)."""

    def __init__(self) -> None:
        self.rooms: dict[tuple[str, str, str | None], list[Subscription]] = {}
        self.received = 0

    async def _send(self, text: str) -> None:
        raise NotImplementedError

    async def _subscribe(self, stream: str, group_id: str, item_id: str | None) -> Subscription:
        sub = Subscription(self, stream, group_id, item_id)
        self.rooms.setdefault((stream, group_id, item_id), []).append(sub)
        await self._send(json.dumps({"type": "join", "data": sub.join}))
        return sub

    async def subscribe_item(self, stream: str, group_id: str, item_id: str) -> Subscription:
        """Join one item; its ``sync`` and later changes arrive in the returned subscription."""
        return await self._subscribe(stream, group_id, item_id)

    async def subscribe_group(self, stream: str, group_id: str) -> Subscription:
        """Join a group; its ``sync`` (every item) and later changes arrive in the returned subscription."""
        return await self._subscribe(stream, group_id, None)

    async def leave(self, sub: Subscription) -> None:
        """Leave a subscription."""
        subs = self.rooms.get((sub.stream, sub.group_id, sub.item_id), [])
        if sub in subs:
            subs.remove(sub)
            await self._send(json.dumps({"type": "leave", "data": sub.join}))

    def route(self, text: str) -> None:
        """Hand one incoming message to the subscriptions it concerns."""
        self.received += 1
        msg = json.loads(text)
        stream, group, item = msg.get("streamName"), msg.get("groupId"), msg.get("id")
        targets = list(self.rooms.get((stream, group, item), []))
        if item is not None and (msg.get("event") or {}).get("type") != "sync":
            targets += self.rooms.get((stream, group, None), [])
        for sub in targets:
            sub.feed(msg)


class StreamClient(_Subscriber):
    """A WebSocket client of a stream server (see the module docstring).

    Args:
        url: ``ws://host:port`` (any path; Motia serves the root).
        headers: extra handshake headers (e.g. ``{"authorization": ...}`` for an authenticate hook).
        subprotocols: offered WebSocket subprotocols (Motia's clients send ``["Authorization", token]``).
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 subprotocols: list[str] | None = None) -> None:
        super().__init__()
        self.url = url
        self.headers = dict(headers or {})
        self.subprotocols = subprotocols
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open the connection.

        Raises:
            StreamClientError: the server refused the handshake (its status and message are in the text).
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus
        from websockets.typing import Subprotocol

        protocols = [Subprotocol(p) for p in self.subprotocols] if self.subprotocols else None
        try:
            self._ws = await connect(self.url, additional_headers=self.headers, subprotocols=protocols,
                                     compression=None, max_size=None, open_timeout=10)
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise StreamClientError(f"{self.url} refused the connection: HTTP {exc.response.status_code} {body}"
                                    ) from exc
        except OSError as exc:
            raise StreamClientError(f"cannot connect to {self.url}: {exc}") from exc
        self._reader = asyncio.create_task(self._read(), name="motia-stream-client")

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            async for text in self._ws:
                self.route(text if isinstance(text, str) else text.decode())

    async def _send(self, text: str) -> None:
        if self._ws is None:
            raise StreamClientError("connect() first (or use 'async with StreamClient(...)')")
        await self._ws.send(text)

    async def close(self) -> None:
        """Close the connection."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._ws = self._reader = None

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
                        ) -> None:
        await self.close()
