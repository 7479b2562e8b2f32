"""``ctx.state`` of a transactional attempt: writes buffered until the attempt commits, reads recorded
for the commit's conflict check.

A step with ``"transactional": True`` gets a :class:`TxState` over a fresh :class:`Transaction` for
every run. Nothing it writes reaches the backend while the handler runs; when the handler returns, the
settler hands :meth:`Transaction.writes` and :meth:`Transaction.reads` to the backend's
``complete_tx`` with the acknowledgement and the outbox (see :class:`~motia_py.backends.stores.TxStore`).
A failed, timed-out, cancelled or killed attempt simply drops its transaction.

Reads see the attempt's own writes (read-your-writes). The first value read from the backend for a key
(or the first listing of a group) is kept: later reads of it in the same attempt answer the same
(repeatable reads), and the commit checks that it still holds. ``groups()`` is answered but not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from msgspec import Struct, field

from .backends.base import Backend, Outgoing, StateRead, StateWrite
from .state import Notify, State, _jsonable, dumps

_Group = tuple[str, str]  # (namespace, group)
_Key = tuple[str, str, str]  # (namespace, group, key)


class _Buffer(Struct):
    """The buffered writes of one group: cleared first (when ``cleared``), then ``values`` (None: deleted),
    each with the change event to queue with it (``notify``, for the keys a state step watches)."""

    cleared: bool = False
    values: dict[str, str | None] = field(default_factory=dict)
    notify: dict[str, Outgoing] = field(default_factory=dict)


class Transaction:
    """The state effects of one transactional attempt: what it wrote (buffered) and what it read.

    Keyed by namespace, so one transaction may hold the writes of several state namespaces (or of other
    stores kept in the state store) and commit them together.
    """

    __slots__ = ("_buffers", "_group_reads", "_reads")

    def __init__(self) -> None:
        self._reads: dict[_Key, str | None] = {}
        self._group_reads: dict[_Group, dict[str, str]] = {}
        self._buffers: dict[_Group, _Buffer] = {}

    @property
    def empty(self) -> bool:
        """Nothing written and nothing read."""
        return not (self._reads or self._group_reads or self._buffers)

    async def read(self, backend: Backend, namespace: str, group: str, key: str) -> str | None:
        """The JSON text at the key as this attempt sees it: its own write, else the value first read."""
        buf = self._buffers.get((namespace, group))
        if buf is not None and (key in buf.values or buf.cleared):
            return buf.values.get(key)
        snapshot = self._group_reads.get((namespace, group))
        if snapshot is not None:
            return snapshot.get(key)
        where = (namespace, group, key)
        if where not in self._reads:
            raw = await backend.state_get(namespace, group, key)
            self._reads.setdefault(where, raw)  # a concurrent read of the same key may have come first
        return self._reads[where]

    async def items(self, backend: Backend, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group with its JSON text, as this attempt sees it."""
        buf = self._buffers.get((namespace, group))
        out: dict[str, str] = {}
        if buf is None or not buf.cleared:
            snapshot = self._group_reads.get((namespace, group))
            if snapshot is None:
                raw = await backend.state_items(namespace, group)
                snapshot = self._group_reads.setdefault((namespace, group), raw)
            out.update(snapshot)
        for key, value in (buf.values.items() if buf is not None else ()):
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    async def groups(self, backend: Backend, namespace: str) -> list[str]:
        """The non-empty groups of a namespace, as this attempt sees them (not checked at commit)."""
        found = set(await backend.state_groups(namespace))
        for (ns, group), buf in self._buffers.items():
            if ns != namespace:
                continue
            if any(v is not None for v in buf.values.values()):
                found.add(group)
            elif buf.cleared:
                found.discard(group)
        return sorted(found)

    def write(self, namespace: str, group: str, key: str, value_json: str | None, notify: Outgoing | None = None
              ) -> None:
        """Buffer a write (``value_json`` None: delete the key), with the change event to queue with it
        when it changes the key's value at commit (state-triggered steps)."""
        buf = self._buffers.setdefault((namespace, group), _Buffer())
        buf.values.pop(key, None)  # keep the order of the last writes
        buf.values[key] = value_json
        if notify is not None:
            buf.notify[key] = notify

    def clear(self, namespace: str, group: str) -> None:
        """Buffer the deletion of every key of a group (writes buffered before it are dropped)."""
        self._buffers[(namespace, group)] = _Buffer(cleared=True)

    def writes(self) -> list[StateWrite]:
        """The buffered writes, in the order the backend applies them: per group its clear, then its keys."""
        out: list[StateWrite] = []
        for (namespace, group), buf in self._buffers.items():
            if buf.cleared:
                out.append(StateWrite(namespace, group, None, None))
            out += [StateWrite(namespace, group, key, value, buf.notify.get(key))
                    for key, value in buf.values.items() if value is not None or not buf.cleared]
        return out

    def reads(self) -> list[StateRead]:
        """What the commit checks: every key and group read from the backend, with what was read."""
        out = [StateRead(ns, group, key, value) for (ns, group, key), value in self._reads.items()]
        out += [StateRead(ns, group, None, items=items) for (ns, group), items in self._group_reads.items()]
        return out


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


class TxState(State):
    """``ctx.state`` of a transactional attempt (the methods of :class:`~motia_py.state.State`).

    Writes are buffered in ``tx`` and take effect when the attempt commits; reads see them.
    ``update`` is a plain read-modify-write here: the commit checks that the value read is unchanged
    (otherwise the attempt runs again), so ``fn`` runs once per run. A write to a group that a state
    step watches carries its change event (``notify``), queued by the commit, in the same transaction,
    when the write changed the value.
    """

    __slots__ = ("tx",)

    def __init__(self, backend: Backend, namespace: str, tx: Transaction, notify: Notify | None = None) -> None:
        super().__init__(backend, namespace, notify)
        self.tx = tx

    def _write(self, group: str, key: str, value_json: str | None) -> None:
        notify = self.notify(group, key) if self.notify is not None else None
        self.tx.write(self.namespace, group, key, value_json, notify)

    async def get(self, group: str, key: str) -> Any:
        """The value as this attempt sees it (its own writes included), or None."""
        return _loads(await self.tx.read(self.backend, self.namespace, str(group), str(key)))

    async def set(self, group: str, key: str, value: Any) -> Any:
        """Buffer ``value`` (JSON, or a pydantic model) for the commit and return it."""
        value = _jsonable(value)
        self._write(str(group), str(key), dumps(value))
        return value

    async def delete(self, group: str, key: str) -> Any:
        """Buffer the deletion of a key; return the value it had (None when absent)."""
        g, k = str(group), str(key)
        old = await self.tx.read(self.backend, self.namespace, g, k)
        self._write(g, k, None)
        return _loads(old)

    async def get_group(self, group: str) -> list[Any]:
        """Every value of a group, as this attempt sees it."""
        return [json.loads(v) for v in (await self.tx.items(self.backend, self.namespace, str(group))).values()]

    async def items(self, group: str) -> dict[str, Any]:
        """Every key of a group with its value, as this attempt sees it."""
        return {k: json.loads(v) for k, v in (await self.tx.items(self.backend, self.namespace, str(group))).items()}

    async def groups(self) -> list[str]:
        """The groups of this namespace that hold data, as this attempt sees them."""
        return await self.tx.groups(self.backend, self.namespace)

    async def clear(self, group: str) -> None:
        """Buffer the deletion of every key of a group (of each key it holds, checked at commit, when a
        state step watches the group, so that each deletion queues its change event)."""
        g = str(group)
        if self.notify is not None and self.notify(g, "") is not None:
            for key in await self.tx.items(self.backend, self.namespace, g):
                self._write(g, key, None)
            return
        self.tx.clear(self.namespace, g)

    async def update(self, group: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """Read, apply ``fn`` and buffer the result; the commit checks that the value read still holds.
        Returns the new value."""
        g, k = str(group), str(key)
        new = _jsonable(fn(_loads(await self.tx.read(self.backend, self.namespace, g, k))))
        self._write(g, k, dumps(new))
        return new
