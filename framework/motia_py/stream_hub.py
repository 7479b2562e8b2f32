"""The stream server's core: which client joined which item or group, and fanning changes out to them.

It speaks the protocol of Motia's stream clients (``@motiadev/stream-client*``). A client sends
``{"type": "join" | "leave", "data": {"streamName", "groupId", "id"?, "subscriptionId"}}``; on a join the
hub asks the stream's ``canAccess(subscription, auth_context)`` (when it has one), answers with a
``sync`` message (the item, or the group's items; unlike Motia, an absent item's sync is sent too, with
``null``, so a client knows its join was served) and from then on forwards every message of the backend's
stream channel (:data:`motia_py.streams.CHANNEL`) about that item or group:

- a message with an ``id`` goes to clients that joined that item or its group;
- a message without one (a group-wide ``send``) goes to clients that joined the group.

Each message reaches a client **once** even when it joined both the item and its group: Motia's clients
route one message to every matching subscription themselves. A refused or impossible join gets Motia's
error event (``{"event": {"type": "event", "event": {"type": "error", "data": {"code":
"STREAM_ACCESS_DENIED", "message": ...}}}}``) and no data. Changes that arrive while a join's sync is
being read are held and sent right after the sync, so a client never misses one.

The hub is transport-free: a :class:`Client` is anything with ``send(text)`` and ``auth``; the WebSocket
endpoint (:mod:`motia_py.stream_ws`) and the test harness each provide one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .backends.pubsub import Subscription
from .backends.realtime import pubsub_of
from .errors import BackendError
from .logs import StepLogger
from .router import Router
from .state import dumps
from .streams import CHANNEL, TIMESTAMPS
from .suggest import did_you_mean

ACCESS_DENIED: Final = "STREAM_ACCESS_DENIED"

Room = tuple[str, str, str | None]
"""(stream, group id, item id or None for the whole group)."""


class Client(Protocol):
    """One connected client, as the hub sees it."""

    auth: Any

    def send(self, text: str) -> None:
        """Queue ``text`` for the client (must not block)."""


@dataclass(eq=False)
class _State:
    """What the hub keeps per client: its subscriptions and the rooms whose sync is still being read."""

    subs: dict[str, Room] = field(default_factory=dict)  # subscription id -> room
    syncing: dict[Room, list[str]] = field(default_factory=dict)  # room -> messages held until its sync


class JoinRefused(Exception):
    """A join that gets an error event instead of data."""


def _room_of(data: Any) -> tuple[str, str, str | None, str]:
    """(stream, group, item id, subscription id) of a join/leave's ``data``; raises JoinRefused."""
    if not isinstance(data, dict):
        raise JoinRefused("a join needs data {streamName, groupId, id?, subscriptionId}")
    stream, group, item, sub = data.get("streamName"), data.get("groupId"), data.get("id"), data.get("subscriptionId")
    if not isinstance(stream, str) or not isinstance(group, str):
        raise JoinRefused("a join needs 'streamName' and 'groupId' (strings)")
    if item is not None and not isinstance(item, str):
        raise JoinRefused("'id' must be a string")
    return stream, group, item or None, str(sub) if sub is not None else ""


class StreamHub:
    """Subscriptions of the clients of one server process, fed by the backend's stream channel.

    Args:
        router: the running router (its current project's streams and the backend are read on each join,
            so hot reloads show).
        log: where refused joins and broken messages are logged.
    """

    def __init__(self, router: Router, log: StepLogger) -> None:
        self.router = router
        self.log = log
        self._clients: dict[Client, _State] = {}
        self._rooms: dict[Room, dict[Client, int]] = {}  # room -> client -> how many of its subscriptions
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    async def start(self) -> None:
        """Subscribe to the backend's stream channel and start forwarding."""
        if self._sub is None:
            self._sub = await pubsub_of(self.router.backend).pubsub_subscribe(CHANNEL)
            self._task = asyncio.create_task(self._forward(self._sub), name="motia-stream-hub")

    async def stop(self) -> None:
        """Stop forwarding (clients stay connected until their transport closes)."""
        sub, task = self._sub, self._task
        self._sub = self._task = None
        if sub is not None:
            await sub.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forward(self, sub: Subscription) -> None:
        async for text in sub:
            self.dispatch(text)

    # -- clients ------------------------------------------------------------------------------------
    def connect(self, client: Client) -> None:
        """Register a client (before its first message)."""
        self._clients[client] = _State()

    def disconnect(self, client: Client) -> None:
        """Forget a client and every subscription it had."""
        state = self._clients.pop(client, None)
        if state is None:
            return
        for room in state.subs.values():
            self._unroom(room, client)

    async def receive(self, client: Client, text: str) -> None:
        """Handle one message from a client (a client's messages must be handled one at a time, in order)."""
        try:
            msg = json.loads(text)
        except ValueError:
            self.log.warning("stream client sent a message that is not JSON; ignored", message=text[:200])
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        data = msg.get("data") if isinstance(msg, dict) else None
        if kind == "join":
            await self._join(client, data)
        elif kind == "leave":
            self._leave(client, data)
        else:
            self.log.warning(f"stream client sent an unknown message type {kind!r}; ignored")

    async def _join(self, client: Client, data: Any) -> None:
        state = self._clients.get(client)
        if state is None:
            return
        try:
            stream, group, item, sub_id = _room_of(data)
        except JoinRefused as exc:
            raw = data if isinstance(data, dict) else {}
            client.send(_error(str(raw.get("streamName", "")), str(raw.get("groupId", "")), None, str(exc)))
            return
        room: Room = (stream, group, item)
        try:
            await self._check_access(client, stream, group, item)
        except JoinRefused as exc:
            self.log.info(f"stream join refused: {exc}", stream=stream, group=group, item=item)
            client.send(_error(stream, group, item, str(exc)))
            return
        if room in state.syncing:  # the same room joined twice at once: the first sync serves both
            self._add(state, client, sub_id, room)
            return
        stamp = TIMESTAMPS()  # before the read: a change made after it is newer than the sync
        state.syncing[room] = []
        self._add(state, client, sub_id, room)
        try:
            sync = await self._read(stream, group, item)
        except BackendError as exc:
            self.log.error(f"stream join could not read its data: {exc}", stream=stream, group=group)
            client.send(_error(stream, group, item, f"stream '{stream}' is unavailable: {exc}"))
        else:
            client.send(_message(stream, group, item, stamp, {"type": "sync", "data": sync}))
        held = state.syncing.pop(room, [])
        for text in held:
            client.send(text)

    async def _check_access(self, client: Client, stream: str, group: str, item: str | None) -> None:
        spec = self.router.project.stream(stream)
        if spec is None:
            names = [s.name for s in self.router.project.streams]
            hint = did_you_mean(stream, names)
            raise JoinRefused(f"unknown stream '{stream}'" + (f"; {hint}" if hint else ""))
        if spec.can_access is None:
            return
        try:
            allowed = spec.can_access({"groupId": group, "id": item}, client.auth)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception as exc:
            self.log.error(f"canAccess of stream '{stream}' raised {type(exc).__name__}: {exc}", stream=stream)
            raise JoinRefused(f"access denied to stream '{stream}' (its canAccess failed)") from exc
        if not allowed:
            where = f"group '{group}'" + (f", item '{item}'" if item is not None else "")
            raise JoinRefused(f"access denied to stream '{stream}', {where}")

    async def _read(self, stream: str, group: str, item: str | None) -> Any:
        handle = self.router.streams[stream]
        getter: Callable[..., Any] = handle.get if item is not None else handle.get_group
        data = getter(group, item) if item is not None else getter(group)
        return await data if inspect.isawaitable(data) else data

    def _leave(self, client: Client, data: Any) -> None:
        state = self._clients.get(client)
        sub_id = data.get("subscriptionId") if isinstance(data, dict) else None
        if state is None or sub_id is None:
            return
        room = state.subs.pop(str(sub_id), None)
        if room is not None:
            self._unroom(room, client)

    def _add(self, state: _State, client: Client, sub_id: str, room: Room) -> None:
        old = state.subs.get(sub_id)
        if old is not None:  # a subscription id joined again: it moves
            self._unroom(old, client)
        state.subs[sub_id] = room
        counts = self._rooms.setdefault(room, {})
        counts[client] = counts.get(client, 0) + 1

    def _unroom(self, room: Room, client: Client) -> None:
        counts = self._rooms.get(room)
        if counts is None or client not in counts:
            return
        counts[client] -= 1
        if counts[client] <= 0:
            del counts[client]
        if not counts:
            del self._rooms[room]

    # -- changes ------------------------------------------------------------------------------------
    def dispatch(self, text: str) -> None:
        """Forward one stream message to every client of its item or group, once each."""
        try:
            msg = json.loads(text)
            stream, group, item = msg["streamName"], msg["groupId"], msg.get("id")
        except (ValueError, KeyError, TypeError):
            self.log.warning("a stream message without streamName/groupId was ignored", message=text[:200])
            return
        group_room: Room = (stream, group, None)
        item_room: Room | None = (stream, group, item) if item is not None else None
        targets: Any = self._rooms.get(group_room, {})
        if item_room is not None and item_room in self._rooms:
            targets = set(targets) | set(self._rooms[item_room])
        for client in targets:
            state = self._clients.get(client)
            if state is None:
                continue
            held = None
            if state.syncing:  # a join of this client is still reading its sync: hold the message
                held = state.syncing.get(group_room)
                if held is None and item_room is not None:
                    held = state.syncing.get(item_room)
            if held is not None:
                held.append(text)
            else:
                client.send(text)


def _message(stream: str, group: str, item: str | None, stamp: int, event: dict[str, Any]) -> str:
    body: dict[str, Any] = {"timestamp": stamp, "streamName": stream, "groupId": group}
    if item is not None:
        body["id"] = item
    body["event"] = event
    return dumps(body)


def _error(stream: str, group: str, item: str | None, text: str) -> str:
    """Motia's error event for a refused join."""
    return _message(stream, group, item, TIMESTAMPS(),
                    {"type": "event", "event": {"type": "error", "data": {"code": ACCESS_DENIED, "message": text}}})
