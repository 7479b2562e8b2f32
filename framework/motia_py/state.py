"""``ctx.state``: a flow namespace's key-value state, JSON values, stored through the backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .backends.base import Backend
from .errors import MotiaError

T = TypeVar("T")
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

    __slots__ = ("backend", "namespace")

    def __init__(self, backend: Backend, namespace: str) -> None:
        self.backend = backend
        self.namespace = namespace

    async def get(self, group: str, key: str) -> Any:
        """The stored value itself, or None when absent."""
        raw = await self.backend.state_get(self.namespace, str(group), str(key))
        return None if raw is None else json.loads(raw)

    async def set(self, group: str, key: str, value: Any) -> Any:
        """Store ``value`` (JSON, or a pydantic model) and return it."""
        value = _jsonable(value)
        await self.backend.state_set(self.namespace, str(group), str(key), dumps(value))
        return value

    async def delete(self, group: str, key: str) -> Any:
        """Delete a key; return the value it had (None when absent)."""
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
        """Delete every key of a group."""
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
            if await self.backend.state_cas(self.namespace, g, k, raw, new_raw):
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
