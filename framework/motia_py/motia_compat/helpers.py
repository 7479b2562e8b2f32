"""Motia 1.0's module-level helpers: ``enqueue``, ``logger``, ``stateManager`` (also ``state_manager``) and
``Stream(name)``. Each acts on the handler call in progress (see :mod:`._run` for how they behave in
``def`` and ``async def`` code).

State lives in the namespace of the step's first flow, as ``ctx.state`` of motia-py's own steps
(``flows/<flow>.toml`` may name a shared ``state_namespace``). Results follow Motia 1.0's engine:
``set`` and ``update`` return ``{"old_value", "new_value"}``, ``delete`` returns the old value.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, TypeVar

from ..errors import InvalidEmitError, MotiaError, UndeclaredEmitError
from ..logs import StepLogger
from ..suggest import did_you_mean
from . import _run

T = TypeVar("T")
_list = list  # StateManager.list shadows the builtin inside the class


def enqueue(event: Mapping[str, Any]) -> Any:
    """Queue ``{"topic": ..., "data": ..., "messageGroupId"?: ...}`` for the steps whose queue triggers
    listen to the topic; it is published when the handler returns successfully. Returns an awaitable
    (``await enqueue(...)`` and a plain call both work).

    Raises:
        UndeclaredEmitError: the topic is not in the step's ``enqueues``.
        InvalidEmitError: ``event`` is not a dict with a topic.
    """
    inv = _run.current("enqueue()")
    if not isinstance(event, Mapping) or not isinstance(event.get("topic"), str):
        raise InvalidEmitError("enqueue() takes {'topic': ..., 'data': ..., 'messageGroupId'?: ...}")
    topic = event["topic"]
    if topic not in inv.enqueues:
        declared = sorted(inv.enqueues)
        hint = did_you_mean(topic, declared)
        raise UndeclaredEmitError(f"step '{inv.step}' enqueued '{topic}', which is not in its enqueues "
                                  f"({', '.join(declared) or 'none'})"
                                  + (f"; {hint}" if hint else "; add it to config['enqueues']"))
    return inv.ctx.emit(event)


class _Logger:
    """``logger``: the run's structured logger (``info``, ``warn``, ``error``, ``debug`` with a dict of
    fields); outside a handler, motia-py's own log."""

    _fallback = StepLogger({}, None)

    def _target(self) -> StepLogger:
        inv = _run.CURRENT.get()
        return self._fallback if inv is None else inv.ctx.logger

    def info(self, message: Any, data: Any = None, **fields: Any) -> None:
        """Log at info level."""
        self._target().info(message, data, **fields)

    def warn(self, message: Any, data: Any = None, **fields: Any) -> None:
        """Log at warning level."""
        self._target().warning(message, data, **fields)

    warning = warn

    def error(self, message: Any, data: Any = None, **fields: Any) -> None:
        """Log at error level."""
        self._target().error(message, data, **fields)

    def debug(self, message: Any, data: Any = None, **fields: Any) -> None:
        """Log at debug level."""
        self._target().debug(message, data, **fields)


logger = _Logger()


def apply_ops(value: Any, ops: Sequence[Mapping[str, Any]]) -> Any:
    """Apply Motia's update operations to a copy of ``value`` (None counts as ``{}``) and return it:
    ``{"type": "set", "path": p, "value": v}`` (``path`` ``""``: the whole value), ``merge`` (root only),
    ``increment``/``decrement`` (``by``), ``remove``. Paths name top-level fields.

    Raises:
        MotiaError: an unknown operation, or a field operation on a value that is not an object.
    """
    out = {} if value is None else copy.deepcopy(value)
    for i, op in enumerate(ops):
        kind = op.get("type") if isinstance(op, Mapping) else None
        path = str(op.get("path") or "") if isinstance(op, Mapping) else ""
        if kind == "set" and path == "":
            out = copy.deepcopy(op.get("value"))
            continue
        if kind not in ("set", "merge", "increment", "decrement", "remove"):
            hint = did_you_mean(str(kind), ["set", "merge", "increment", "decrement", "remove"])
            raise MotiaError(f"update operation {i}: unknown type {kind!r}" + (f"; {hint}" if hint else ""))
        if not isinstance(out, dict):
            raise MotiaError(f"update operation {i} ({kind}) needs an object, the value is {type(out).__name__}")
        if kind == "set":
            out[path] = copy.deepcopy(op.get("value"))
        elif kind == "merge":
            if path or not isinstance(op.get("value"), Mapping):
                raise MotiaError(f"update operation {i}: merge takes an object and no path (root only)")
            out.update(copy.deepcopy(dict(op["value"])))
        elif kind == "remove":
            out.pop(path, None)
        else:
            by = op.get("by", 1)
            current = out.get(path)
            base = current if isinstance(current, int | float) and not isinstance(current, bool) else 0
            out[path] = base + by if kind == "increment" else base - by
    return out


async def _set(state: Any, group: str, key: str, value: Any) -> dict[str, Any]:
    seen: list[Any] = []

    def put(current: Any) -> Any:
        seen.append(current)
        return value

    new = await state.update(group, key, put)
    return {"old_value": seen[-1] if seen else None, "new_value": new}


async def _update(state: Any, group: str, key: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    seen: list[Any] = []

    def change(current: Any) -> Any:
        seen.append(current)
        return apply_ops(current, ops)

    new = await state.update(group, key, change)
    return {"old_value": seen[-1] if seen else None, "new_value": new}


class StateManager:
    """``stateManager``: key-value state by scope (group) and key, JSON values."""

    def _call(self, what: str, op: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        inv = _run.current(f"stateManager.{what}()")
        return inv.call(lambda: op(inv.ctx.state))

    def get(self, scope: str, key: str) -> Any:
        """The value, or None."""
        return self._call("get", lambda s: s.get(scope, key))

    def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value``; returns ``{"old_value", "new_value"}``."""
        return self._call("set", lambda s: _set(s, scope, key, value))

    def update(self, scope: str, key: str, ops: Sequence[Mapping[str, Any]]) -> Any:
        """Apply update operations atomically (see :func:`apply_ops`); returns ``{"old_value", "new_value"}``."""
        return self._call("update", lambda s: _update(s, scope, key, ops))

    def delete(self, scope: str, key: str) -> Any:
        """Delete the key; returns its old value (None when absent)."""
        return self._call("delete", lambda s: s.delete(scope, key))

    def list(self, scope: str) -> Any:
        """Every value of the scope."""
        return self._call("list", lambda s: s.get_group(scope))

    get_group = list

    def list_groups(self) -> Any:
        """The scopes that hold data."""
        return self._call("list_groups", lambda s: s.groups())

    def clear(self, scope: str) -> Any:
        """Delete every key of the scope."""
        return self._call("clear", lambda s: s.clear(scope))


stateManager = StateManager()
state_manager = stateManager


DECLARED_STREAMS: dict[str, tuple[Any, str, int]] = {}
"""Streams declared with ``Stream(...)`` since discovery last cleared it: name -> (its ``StreamConfig`` or
None, the file and line that declared it)."""


class Stream(Generic[T]):
    """A stream declared in a step file (``todo = Stream("todo")``): ``get``, ``set``, ``delete``,
    ``get_group`` (``list``), ``update``, ``list_groups`` and ``send``, on the run in progress.

    Declaring one makes the stream exist in the project (without a schema) when no stream file
    defines it.
    """

    def __init__(self, config: Any) -> None:
        name = config if isinstance(config, str) else getattr(config, "name", None)
        if not isinstance(name, str) or not name:
            raise MotiaError("Stream() takes a stream name or a StreamConfig")
        self.stream_name = name
        self.config = None if isinstance(config, str) else config
        if name not in DECLARED_STREAMS or self.config is not None:
            caller = sys._getframe(1)
            DECLARED_STREAMS[name] = (self.config, caller.f_code.co_filename, caller.f_lineno)

    def _call(self, what: str, op: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        inv = _run.current(f"Stream({self.stream_name!r}).{what}()")
        streams = getattr(inv.ctx, "streams", None)
        if streams is None or self.stream_name not in streams:
            known = _list(streams) if streams is not None else []
            hint = did_you_mean(self.stream_name, known)
            raise MotiaError(f"no stream '{self.stream_name}' in this project" + (f"; {hint}" if hint else ""))
        stream = streams[self.stream_name]
        return inv.call(lambda: op(stream))

    def get(self, group_id: str, item_id: str) -> Any:
        """The item, or None."""
        return self._call("get", lambda s: s.get(group_id, item_id))

    def set(self, group_id: str, item_id: str, data: Any) -> Any:
        """Store the item (clients subscribed to it or its group get it); returns ``{"old_value", "new_value"}``."""

        async def op(s: Any) -> dict[str, Any]:
            old = await s.get(group_id, item_id)
            return {"old_value": old, "new_value": await s.set(group_id, item_id, data)}

        return self._call("set", op)

    def delete(self, group_id: str, item_id: str) -> Any:
        """Delete the item; returns its old value."""
        return self._call("delete", lambda s: s.delete(group_id, item_id))

    def get_group(self, group_id: str) -> Any:
        """Every item of the group."""
        return self._call("get_group", lambda s: s.get_group(group_id))

    list = get_group
    getGroup = get_group

    def update(self, group_id: str, item_id: str, ops: Sequence[Mapping[str, Any]]) -> Any:
        """Apply update operations (see :func:`apply_ops`); returns ``{"old_value", "new_value"}``."""

        async def op(s: Any) -> dict[str, Any]:
            old = await s.get(group_id, item_id)
            return {"old_value": old, "new_value": await s.set(group_id, item_id, apply_ops(old, ops))}

        return self._call("update", op)

    def list_groups(self) -> Any:
        """The groups that hold items."""
        return self._call("list_groups", lambda s: s.backend.state_groups(s.spec.namespace))

    def send(self, channel: Mapping[str, Any], event: Mapping[str, Any]) -> Any:
        """Push an ephemeral event to a group (``{"groupId"}``) or an item (``{"groupId", "id"}``)."""
        return self._call("send", lambda s: s.send(channel, event))


class Streams:
    """``ctx.streams``: ``ctx.streams.todo`` (or ``ctx.streams["todo"]``) is the stream ``todo``."""

    def __getattr__(self, name: str) -> Stream[Any]:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Stream[Any]:
        stream: Stream[Any] = Stream.__new__(Stream)  # not a declaration: the stream must exist already
        stream.stream_name, stream.config = name, None
        return stream
