"""The memory backend's transactional commit (mixed into :class:`.memory.MemoryBackend`): the lease, the
reads and the writes on its nested dicts of state (namespace -> group -> key -> JSON text), checked and
applied in one event-loop step, with nothing else running in between (see :class:`.stores.TxStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .records import Delivery, Outgoing, StateRead, StateWrite, TxResult
from .state_change import change_event

StateDicts = dict[str, dict[str, dict[str, str]]]
"""namespace -> group -> key -> JSON text."""


def reads_hold(state: StateDicts, reads: Sequence[StateRead]) -> bool:
    """True when every key read still holds its text and every group read still holds exactly its items."""
    for r in reads:
        group = state.get(r.namespace, {}).get(r.group, {})
        if r.key is None:
            if group != dict(r.items or {}):
                return False
        elif group.get(r.key) != r.value_json:
            return False
    return True


def apply_writes(state: StateDicts, writes: Sequence[StateWrite]) -> list[Outgoing]:
    """Apply ``writes`` in order: set, delete (``value_json`` None) or clear the group (``key`` None); the
    change events of the writes with a ``notify`` that changed their key's value."""
    events: list[Outgoing] = []
    for w in writes:
        if w.key is None:
            state.get(w.namespace, {}).pop(w.group, None)
            continue
        old = state.get(w.namespace, {}).get(w.group, {}).get(w.key)
        if w.value_json is None:
            state.get(w.namespace, {}).get(w.group, {}).pop(w.key, None)
        else:
            state.setdefault(w.namespace, {}).setdefault(w.group, {})[w.key] = w.value_json
        if w.notify is not None and w.notify.targets and old != w.value_json:
            events.append(change_event(w.notify, w.group, w.key, old, w.value_json))
    return events


class MemoryTx:
    """:class:`~.stores.TxStore` for the memory backend."""

    _state: StateDicts

    if TYPE_CHECKING:
        async def publish(self, items: Sequence[Outgoing]) -> None: ...
        async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool: ...
        def _held(self, delivery: Delivery) -> Any: ...

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """Check the lease and the reads, then apply the writes (queueing their change events),
        acknowledge and publish, without yielding to the event loop in between."""
        if delivery is not None and self._held(delivery) is None:
            return "lost"
        if not reads_hold(self._state, reads):
            return "conflict"
        events = apply_writes(self._state, writes)
        if events:
            await self.publish(events)
        if delivery is not None:
            await self.complete(delivery, outgoing)
        elif outgoing:
            await self.publish(outgoing)
        return "ok"
