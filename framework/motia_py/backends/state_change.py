"""What :meth:`~.stores.StateChangeStore.state_change` takes and returns, shared by every backend.

A state change is one write (or delete) of a state key that reports the value it replaced and, when
the value really changed, publishes a *change event* in the same atomic operation: an
:class:`~.records.Outgoing` whose payload is the change document

    {"group_id": <group>, "item_id": <key>, "old_value": <old or null>, "new_value": <new or null>}

with the stored JSON texts embedded verbatim. State-triggered steps and streams are built on it.
"""

from __future__ import annotations

import enum
import json
from typing import Final, Literal

from msgspec import Struct
from msgspec.structs import replace

from .records import Envelope, Outgoing


class Unset(enum.Enum):
    """The type of :data:`ANY`."""

    ANY = "any"


ANY: Final = Unset.ANY
"""``expected=ANY``: write whatever the current value is (no compare-and-set)."""

Expected = str | None | Literal[Unset.ANY]
"""The value a change expects to replace: JSON text, None for an absent key, or :data:`ANY`."""


class StateChange(Struct, frozen=True):
    """The outcome of one :meth:`state_change` call.

    Attributes:
        applied: False only when ``expected`` did not match (nothing was written or published).
        old_json: the value the key held before the call (None: absent); the current value when not applied.
    """

    applied: bool
    old_json: str | None

    def changed(self, new_json: str | None) -> bool:
        """True when the call stored a value different from the old one (then its event was published)."""
        return self.applied and self.old_json != new_json


def change_head(group: str, key: str) -> str:
    """The change document up to its old value: ``{"group_id":..,"item_id":..,"old_value":``."""
    return ('{"group_id":' + json.dumps(group, ensure_ascii=False) + ',"item_id":'
            + json.dumps(key, ensure_ascii=False) + ',"old_value":')


def change_json(group: str, key: str, old_json: str | None, new_json: str | None) -> str:
    """The change document of one write (see the module docstring)."""
    return (change_head(group, key) + ("null" if old_json is None else old_json) + ',"new_value":'
            + ("null" if new_json is None else new_json) + "}")


def change_event(notify: Outgoing, group: str, key: str, old_json: str | None, new_json: str | None) -> Outgoing:
    """``notify`` with its payload replaced by the change document."""
    env: Envelope = replace(notify.envelope, data_json=change_json(group, key, old_json, new_json))
    return Outgoing(envelope=env, targets=notify.targets)


def matches(expected: Expected, current: str | None) -> bool:
    """Whether ``current`` is what a change expecting ``expected`` may replace."""
    return expected is ANY or expected == current
