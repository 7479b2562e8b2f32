"""The memory backend's pub/sub and state changes (mixed into :class:`.memory.MemoryBackend`).

Everything happens on one event loop, so a state change and its event are atomic by construction:
nothing else runs between the write and the publish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .pubsub import Fanout, Subscription
from .records import Outgoing
from .state_change import ANY, Expected, StateChange, change_event, matches


class MemoryRealtime:
    """:class:`~.stores.PubSubStore` and :class:`~.stores.StateChangeStore` for the memory backend."""

    _state: dict[str, dict[str, dict[str, str]]]
    _fanout_: Fanout | None = None

    if TYPE_CHECKING:
        async def publish(self, items: Sequence[Outgoing]) -> None: ...

    @property
    def fanout(self) -> Fanout:
        """This backend's subscriptions (every subscriber lives in this process)."""
        if self._fanout_ is None:
            self._fanout_ = Fanout()
        return self._fanout_

    async def pubsub_publish(self, channel: str, message: str) -> None:
        """Deliver to this process's subscriptions of ``channel`` (the only ones there are)."""
        self.fanout.deliver(channel, message)

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``."""
        return self.fanout.subscribe(channel)

    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Write (or delete) and publish the change event when the value changed (see the protocol)."""
        items = self._state.get(namespace, {}).get(group, {})
        old = items.get(key)
        if not matches(expected, old):
            return StateChange(False, old)
        if new_json is None:
            items.pop(key, None)
        else:
            self._state.setdefault(namespace, {}).setdefault(group, {})[key] = new_json
        if old != new_json and notify is not None and notify.targets:
            await self.publish([change_event(notify, group, key, old, new_json)])
        return StateChange(True, old)
