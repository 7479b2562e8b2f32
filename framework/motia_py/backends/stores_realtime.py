"""The realtime store protocols: pub/sub between processes and atomic state changes (streams and
state-triggered steps); re-exported by :mod:`.stores`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .pubsub import Subscription
from .records import Outgoing
from .state_change import ANY, Expected, StateChange


@runtime_checkable
class PubSubStore(Protocol):
    """Messages between the processes that share a backend (what streams reach browsers through).

    Rules:

    - **Best effort, at most once.** A message reaches the subscriptions that exist when it is
      published, in every process sharing the backend, at most once each. Nothing is stored: a process
      that subscribes later, or was disconnected meanwhile, never sees it.
    - **Ready on return.** Once ``pubsub_subscribe`` has returned, every message published afterwards
      on its channel (by any process) is delivered to it.
    - **Order.** Messages of one publishing process on one channel arrive in the order published.
    - **Channels** are plain names; a message is text (JSON in practice), up to at least 1 MiB.

    memory delivers in-process; SQLite sends datagrams to the other processes using the same file
    (:mod:`.sqlite_notify`); Redis uses its pub/sub. A plug-in backend without this store gets an
    in-process one (:func:`.realtime.pubsub_of`), which reaches the subscribers of its own process only.
    """

    async def pubsub_publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every current subscription of ``channel``, in every process."""

    async def pubsub_subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel`` (ready when returned; ``await sub.close()`` ends it)."""


@runtime_checkable
class StateChangeStore(Protocol):
    """A state write that reports what it replaced and publishes a change event atomically with it.

    State-triggered steps and streams use it; plain ``state_set`` stays the fast path elsewhere.
    """

    async def state_change(self, namespace: str, group: str, key: str, new_json: str | None, *,
                           expected: Expected = ANY, notify: Outgoing | None = None) -> StateChange:
        """Store ``new_json`` at (namespace, group, key) (delete it when None) and return the old value.

        With ``expected`` (JSON text, or None for an absent key) the write happens only when the current
        value is exactly that (compare-and-set); otherwise ``applied`` is False and nothing changes.
        When the write changed the value (old text differs from new text) and ``notify`` is given,
        ``notify``'s envelope is published to its targets with its payload replaced by the change
        document (:func:`.state_change.change_json`), **in the same atomic operation as the write**: no
        process ever sees the new value without the event having been queued, and a write that changes
        nothing (same value, or deleting an absent key) publishes nothing.
        """
