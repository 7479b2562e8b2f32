"""Pub/sub and state changes for any backend: its own stores, or defaults for plug-ins that lack them.

The built-in backends implement :class:`~.stores.PubSubStore` and :class:`~.stores.StateChangeStore`
themselves. For a plug-in backend that does not (they are not part of :class:`~.stores.CoreBackend`):

- :class:`LocalPubSub` delivers within the process only: streams then reach the clients of the
  server process that wrote, not those of other processes;
- :class:`CasStateChanges` writes with ``state_cas`` and then publishes the change event with the
  queue's ``publish``: the write and the event are **not** atomic (a crash between them loses the event).
"""

from __future__ import annotations

import weakref
from typing import Any

from .pubsub import Fanout, Subscription
from .records import Outgoing
from .state_change import ANY, Expected, StateChange, change_event, matches
from .stores import PubSubStore, QueueStore, StateChangeStore, StateStore

_MAX_RACES = 1000


class LocalPubSub:
    """A :class:`~.stores.PubSubStore` whose messages stay in this process."""

    def __init__(self) -> None:
        self.fanout = Fanout()

    async def pubsub_publish(self, channel: str, message: str) -> None:
        """Deliver to this process's subscriptions."""
        self.fanout.deliver(channel, message)

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``."""
        return self.fanout.subscribe(channel)


class CasStateChanges:
    """A :class:`~.stores.StateChangeStore` on a state store's ``state_cas`` and a queue's ``publish``
    (not atomic: see the module docstring)."""

    def __init__(self, backend: Any) -> None:
        self.state: StateStore = backend
        self.queue: QueueStore = backend

    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Compare-and-set until it sticks, then publish the change event."""
        from ..errors import BackendError

        for _ in range(_MAX_RACES):
            old = await self.state.state_get(namespace, group, key)
            if not matches(expected, old):
                return StateChange(False, old)
            if old == new_json or await self.state.state_cas(namespace, group, key, old, new_json):
                break
        else:
            raise BackendError(f"{namespace}/{group}/{key}: lost {_MAX_RACES} compare-and-set races in a row")
        if old != new_json and notify is not None and notify.targets:
            await self.queue.publish([change_event(notify, group, key, old, new_json)])
        return StateChange(True, old)


_local: weakref.WeakKeyDictionary[Any, LocalPubSub] = weakref.WeakKeyDictionary()


def _part(backend: Any, protocol: type) -> Any:
    """``backend``, or the core of a composed backend, when it implements ``protocol``."""
    if isinstance(backend, protocol):
        return backend
    core = getattr(backend, "core", None)
    return core if core is not None and isinstance(core, protocol) else None


def pubsub_of(backend: Any) -> PubSubStore:
    """The backend's pub/sub, or an in-process one kept for it (see the module docstring)."""
    own = _part(backend, PubSubStore)
    if own is not None:
        return own  # type: ignore[no-any-return]
    local = _local.get(backend)
    if local is None:
        local = _local[backend] = LocalPubSub()
    return local


def state_changes_of(backend: Any) -> StateChangeStore:
    """The backend's state changes, or ones built on its ``state_cas`` (see the module docstring)."""
    own = _part(backend, StateChangeStore)
    return own if own is not None else CasStateChanges(backend)
