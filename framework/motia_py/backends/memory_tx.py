"""The memory backend's transactional commit: reads checked and writes applied on its nested dicts of
state (namespace -> group -> key -> JSON text), in one event-loop step (see :class:`.stores.TxStore`)."""

from __future__ import annotations

from collections.abc import Sequence

from .records import StateRead, StateWrite

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


def apply_writes(state: StateDicts, writes: Sequence[StateWrite]) -> None:
    """Apply ``writes`` in order: set, delete (``value_json`` None) or clear the group (``key`` None)."""
    for w in writes:
        if w.key is None:
            state.get(w.namespace, {}).pop(w.group, None)
        elif w.value_json is None:
            state.get(w.namespace, {}).get(w.group, {}).pop(w.key, None)
        else:
            state.setdefault(w.namespace, {}).setdefault(w.group, {})[w.key] = w.value_json
