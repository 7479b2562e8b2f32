"""``ctx.streams.<name>``: items that clients subscribe to, stored in the backend, changes pushed live.

An item lives at (stream, group id, id) in the backend's state store under the stream's reserved
namespace (``__motia_py_stream:<name>``), so every process sharing the backend sees it. Each write is
published on the backend's pub/sub channel :data:`CHANNEL` as the very message Motia's stream clients
read (``{"streamName", "groupId", "id", "timestamp", "event": {"type": "create"|"update"|"delete"|"event",
...}}``); the stream server of every process forwards it to the WebSocket clients that joined the item
or its group (:mod:`motia_py.stream_hub`).

The methods are Motia's: ``get``, ``set`` (validated against the stream's schema; returns the stored item,
which always has ``id``), ``delete`` (returns the deleted item), ``get_group`` (also ``getGroup``) and
``send(channel, event)`` for ephemeral events (``{"groupId", "id"?}``, ``{"type", "data"}``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, Final, TypeVar

from .backends.base import Backend
from .backends.realtime import pubsub_of, state_changes_of
from .errors import InputValidationError, MotiaError
from .state import Notify, dumps
from .stream_config import StreamSpec
from .suggest import did_you_mean

T = TypeVar("T")
CHANNEL: Final = "motia-streams"
"""The pub/sub channel that carries every stream message of a backend."""


class StreamError(MotiaError):
    """A stream call was given something it cannot store or send (the message says what)."""


class Timestamps:
    """Milliseconds since the epoch, strictly increasing within this process (Motia's item clients drop
    a message whose timestamp is not newer than the last one they saw)."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = max(int(time.time() * 1000), self._last + 1)
        self._last = now
        return now


TIMESTAMPS = Timestamps()


def message(stream: str, group_id: str, item_id: str | None, event: Mapping[str, Any]) -> str:
    """One stream message as Motia's clients read it (``id`` left out for a group-wide event)."""
    body: dict[str, Any] = {"streamName": stream, "groupId": group_id}
    if item_id is not None:
        body["id"] = item_id
    body["timestamp"] = TIMESTAMPS()
    body["event"] = event
    return dumps(body)


class Stream:
    """One stream's items, as ``ctx.streams.<name>`` (see the module docstring)."""

    __slots__ = ("_changes", "_pubsub", "backend", "notify", "spec")

    def __init__(self, spec: StreamSpec, backend: Backend, notify: Notify | None = None) -> None:
        self.spec = spec
        self.backend = backend
        self.notify = notify  # a change event for the steps whose stream triggers watch it (Motia 1.0)
        self._changes = state_changes_of(backend)
        self._pubsub = pubsub_of(backend)

    @property
    def name(self) -> str:
        """The stream's name."""
        return self.spec.name

    async def get(self, group_id: str, id: str) -> dict[str, Any] | None:
        """The item, or None."""
        raw = await self.backend.state_get(self.spec.namespace, str(group_id), str(id))
        return None if raw is None else dict(json.loads(raw))

    async def set(self, group_id: str, id: str, data: Any) -> dict[str, Any]:
        """Store ``data`` as item ``id`` of ``group_id`` (with ``"id": id`` added), validated against the
        stream's schema; push ``create`` (new item) or ``update`` to subscribers; return the stored item.

        Raises:
            StreamError: ``data`` is not an object, or fails the schema (naming each bad field).
        """
        item = self._validated(str(id), data)
        text = dumps(item)
        notify = self.notify(str(group_id), str(id)) if self.notify is not None else None
        change = await self._changes.state_change(self.spec.namespace, str(group_id), str(id), text, notify=notify)
        kind = "create" if change.old_json is None else "update"
        await self._publish(str(group_id), str(id), {"type": kind, "data": item})
        return item

    async def delete(self, group_id: str, id: str) -> dict[str, Any] | None:
        """Delete the item; push ``delete`` when it existed; return it (None when absent)."""
        notify = self.notify(str(group_id), str(id)) if self.notify is not None else None
        change = await self._changes.state_change(self.spec.namespace, str(group_id), str(id), None, notify=notify)
        if change.old_json is None:
            return None
        item = dict(json.loads(change.old_json))
        await self._publish(str(group_id), str(id), {"type": "delete", "data": item})
        return item

    async def get_group(self, group_id: str) -> list[dict[str, Any]]:
        """Every item of a group, ordered by id."""
        items = await self.backend.state_items(self.spec.namespace, str(group_id))
        return [dict(json.loads(items[k])) for k in sorted(items)]

    getGroup = get_group

    async def send(self, channel: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """Push an ephemeral event (not stored): to the group's subscribers with ``{"groupId"}``, to the
        item's (and its group's) with ``{"groupId", "id"}``. ``event`` is ``{"type": ..., "data": ...}``.

        Raises:
            StreamError: a malformed channel or event.
        """
        if not isinstance(channel, Mapping) or not isinstance(channel.get("groupId", channel.get("group_id")), str):
            raise StreamError(f"stream '{self.name}': send's channel must be {{'groupId': ..., 'id'?: ...}}")
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise StreamError(f"stream '{self.name}': send's event must be {{'type': ..., 'data': ...}}")
        item_id = channel.get("id")
        await self._publish(str(channel.get("groupId", channel.get("group_id"))),
                            None if item_id is None else str(item_id),
                            {"type": "event", "event": {"type": event["type"], "data": event.get("data")}})

    async def _publish(self, group_id: str, item_id: str | None, event: Mapping[str, Any]) -> None:
        await self._pubsub.pubsub_publish(CHANNEL, message(self.name, group_id, item_id, event))

    def _validated(self, item_id: str, data: Any) -> dict[str, Any]:
        dump = getattr(data, "model_dump", None)
        if callable(dump):
            data = dump(mode="json")
        if not isinstance(data, Mapping):
            raise StreamError(f"stream '{self.name}': an item must be an object (a dict or a pydantic model), "
                              f"not {type(data).__name__}")
        item = {**data, "id": item_id}
        if self.spec.schema is not None:
            try:
                valid = self.spec.schema.validate(item)
            except InputValidationError as exc:
                raise StreamError(f"stream '{self.name}': the item fails its schema: {exc}") from exc
            vdump = getattr(valid, "model_dump", None)
            if callable(vdump):
                item = {**vdump(mode="json"), "id": item_id}
        return item


class SyncStream:
    """A stream for plain ``def`` handlers (they run in a thread): the same methods, blocking."""

    __slots__ = ("_loop", "_stream")

    def __init__(self, stream: Stream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def get(self, group_id: str, id: str) -> dict[str, Any] | None:
        """See :meth:`Stream.get`."""
        return self._run(self._stream.get(group_id, id))

    def set(self, group_id: str, id: str, data: Any) -> dict[str, Any]:
        """See :meth:`Stream.set`."""
        return self._run(self._stream.set(group_id, id, data))

    def delete(self, group_id: str, id: str) -> dict[str, Any] | None:
        """See :meth:`Stream.delete`."""
        return self._run(self._stream.delete(group_id, id))

    def get_group(self, group_id: str) -> list[dict[str, Any]]:
        """See :meth:`Stream.get_group`."""
        return self._run(self._stream.get_group(group_id))

    getGroup = get_group

    def send(self, channel: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        """See :meth:`Stream.send`."""
        self._run(self._stream.send(channel, event))


class Streams:
    """``ctx.streams``: every stream of the project by name (``ctx.streams.todo`` or ``ctx.streams["todo"]``)."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: Mapping[str, Stream | SyncStream]) -> None:
        self._by_name = dict(by_name)

    def __getattr__(self, name: str) -> Stream | SyncStream:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __getitem__(self, name: str) -> Stream | SyncStream:
        stream = self._by_name.get(name)
        if stream is None:
            hint = did_you_mean(name, list(self._by_name))
            raise KeyError(f"no stream '{name}'" + (f"; {hint}" if hint else
                                                    f" (streams: {', '.join(sorted(self._by_name)) or 'none'})"))
        return stream

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)

    def blocking(self, loop: asyncio.AbstractEventLoop) -> Streams:
        """The same streams for a plain ``def`` handler (blocking calls, run on ``loop``)."""
        return Streams({n: SyncStream(s, loop) if isinstance(s, Stream) else s for n, s in self._by_name.items()})


def project_streams(specs: tuple[StreamSpec, ...], backend: Backend,
                    notifier: Callable[[str], Notify | None] | None = None) -> Streams:
    """``ctx.streams`` of a project (the first stream of a duplicated name wins; validation reports it).

    ``notifier(namespace)`` gives the change events of a stream's writes for the steps that watch it
    (Motia 1.0 stream triggers; None when none does)."""
    by_name: dict[str, Stream | SyncStream] = {}
    for spec in specs:
        if spec.name not in by_name:
            by_name[spec.name] = Stream(spec, backend, notifier(spec.namespace) if notifier is not None else None)
    return Streams(by_name)
