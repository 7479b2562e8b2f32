"""``ctx.state``: a flow namespace's key-value state, JSON values, stored through the backend.

A :class:`State` built with a ``notify`` function (the router gives one when some state-triggered step
watches the namespace) writes watched groups with the backend's ``state_change``, which queues the
change event atomically with the write (see :mod:`motia_py.state_triggers`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .backends.base import Backend, Outgoing
from .backends.realtime import state_changes_of
from .backends.state_change import ANY, Expected
from .backends.stores import StateChangeStore
from .errors import MotiaError

T = TypeVar("T")
Notify = Callable[[str, str], "Outgoing | None"]
"""(group, key) -> the change event to queue with a write (see :mod:`motia_py.state_triggers`)."""
_UPDATE_ATTEMPTS = 100


def dumps(value: Any) -> str:
    """Encode a state value as compact JSON.

    Raises:
        MotiaError: the value is not JSON (state holds JSON only).
    """
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MotiaError(f"state values must be JSON: {exc}") from exc


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


class State:
    """The state of one namespace. Methods mirror Motia's: ``get``, ``set``, ``delete``, ``get_group``."""

    __slots__ = ("_changes", "backend", "namespace", "notify")

    def __init__(self, backend: Backend, namespace: str, notify: Notify | None = None) -> None:
        self.backend = backend
        self.namespace = namespace
        self.notify = notify
        self._changes: StateChangeStore | None = None

    async def _change(self, group: str, key: str, new_json: str | None, expected: Expected = ANY
                      ) -> tuple[bool, str | None] | None:
        """Write through ``state_change`` when a step watches ``group``: (applied, old JSON); else None."""
        out = self.notify(group, key) if self.notify is not None else None
        if out is None:
            return None
        if self._changes is None:
            self._changes = state_changes_of(self.backend)
        result = await self._changes.state_change(self.namespace, group, key, new_json, expected=expected,
                                                  notify=out)
        return result.applied, result.old_json

    async def get(self, group: str, key: str) -> Any:
        """The stored value itself, or None when absent."""
        raw = await self.backend.state_get(self.namespace, str(group), str(key))
        return None if raw is None else json.loads(raw)

    async def set(self, group: str, key: str, value: Any) -> Any:
        """Store ``value`` (JSON, or a pydantic model) and return it."""
        value = _jsonable(value)
        text = dumps(value)
        if await self._change(str(group), str(key), text) is None:
            await self.backend.state_set(self.namespace, str(group), str(key), text)
        return value

    async def delete(self, group: str, key: str) -> Any:
        """Delete a key; return the value it had (None when absent)."""
        changed = await self._change(str(group), str(key), None)
        if changed is not None:
            return None if changed[1] is None else json.loads(changed[1])
        old = await self.get(group, key)
        await self.backend.state_delete(self.namespace, str(group), str(key))
        return old

    async def get_group(self, group: str) -> list[Any]:
        """Every value of a group, as a list (Motia's ``getGroup``)."""
        return [json.loads(v) for v in (await self.backend.state_items(self.namespace, str(group))).values()]

    async def items(self, group: str) -> dict[str, Any]:
        """Every key of a group with its value."""
        return {k: json.loads(v) for k, v in (await self.backend.state_items(self.namespace, str(group))).items()}

    async def groups(self) -> list[str]:
        """The groups of this namespace that hold data."""
        return await self.backend.state_groups(self.namespace)

    async def clear(self, group: str) -> None:
        """Delete every key of a group (one change event per key when a step watches the group)."""
        if self.notify is not None and self.notify(str(group), "") is not None:
            for key in await self.backend.state_items(self.namespace, str(group)):
                await self._change(str(group), key, None)
            return
        await self.backend.state_clear(self.namespace, str(group))

    async def update(self, group: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomic read-modify-write: store ``fn(current)`` (``current`` is None when absent).

        ``fn`` may run more than once when another writer gets in first, so keep it pure. Its result is
        stored (``None`` as JSON null). Returns the stored value.
        """
        g, k = str(group), str(key)
        for i in range(_UPDATE_ATTEMPTS):
            raw = await self.backend.state_get(self.namespace, g, k)
            new = _jsonable(fn(None if raw is None else json.loads(raw)))
            new_raw = dumps(new)
            changed = await self._change(g, k, new_raw, expected=raw)
            if changed[0] if changed is not None else await self.backend.state_cas(self.namespace, g, k, raw, new_raw):
                return new
            await asyncio.sleep(0.001 * min(i, 20))
        raise MotiaError(f"state update of {self.namespace}/{g}/{k} lost {_UPDATE_ATTEMPTS} races in a row")


class SyncState:
    """``ctx.state`` for plain ``def`` handlers (they run in a thread): the same methods, blocking."""

    __slots__ = ("_loop", "_state")

    def __init__(self, state: State, loop: asyncio.AbstractEventLoop) -> None:
        self._state = state
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def get(self, group: str, key: str) -> Any:
        """See :meth:`State.get`."""
        return self._run(self._state.get(group, key))

    def set(self, group: str, key: str, value: Any) -> Any:
        """See :meth:`State.set`."""
        return self._run(self._state.set(group, key, value))

    def delete(self, group: str, key: str) -> Any:
        """See :meth:`State.delete`."""
        return self._run(self._state.delete(group, key))

    def get_group(self, group: str) -> list[Any]:
        """See :meth:`State.get_group`."""
        return self._run(self._state.get_group(group))

    def items(self, group: str) -> dict[str, Any]:
        """See :meth:`State.items`."""
        return self._run(self._state.items(group))

    def groups(self) -> list[str]:
        """See :meth:`State.groups`."""
        return self._run(self._state.groups())

    def clear(self, group: str) -> None:
        """See :meth:`State.clear`."""
        self._run(self._state.clear(group))

    def update(self, group: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """See :meth:`State.update`."""
        return self._run(self._state.update(group, key, fn))
