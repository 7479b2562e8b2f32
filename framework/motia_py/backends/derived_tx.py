"""A stand-in transactional store for backends that do not implement :class:`~.stores.TxStore`.

It is **not atomic and not fenced**: it checks the reads, applies the writes one call each, then
completes the delivery (publishing the outbox), so a failed attempt still leaves no state change and no
emit, but a crash or a lost lease between the writes and the acknowledgement leaves the writes done and
the event delivered again: the at-least-once effects of a step that is not transactional, with its
writes delayed to the end of the attempt. ``motia-py validate`` reports every transactional step as
unsupported on such a backend (:func:`.compose.atomic_transactions`), so a project never relies on it
unawares.
"""

from __future__ import annotations

from collections.abc import Sequence

from .realtime import state_changes_of
from .records import Delivery, Outgoing, StateRead, StateWrite, TxResult
from .stores import CoreBackend


class StateTxStore:
    """:meth:`complete_tx` built on a backend's queue and state stores, one call after the other.

    Args:
        core: the backend whose state and queue the commits use.
    """

    def __init__(self, core: CoreBackend) -> None:
        self.core = core

    async def _reads_hold(self, reads: Sequence[StateRead]) -> bool:
        for r in reads:
            if r.key is None:
                if await self.core.state_items(r.namespace, r.group) != dict(r.items or {}):
                    return False
            elif await self.core.state_get(r.namespace, r.group, r.key) != r.value_json:
                return False
        return True

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """Check the reads, apply the writes, then complete (or, without a delivery, publish)."""
        if not await self._reads_hold(reads):
            return "conflict"
        for w in writes:
            if w.key is None:
                await self.core.state_clear(w.namespace, w.group)
            elif w.notify is not None:
                await state_changes_of(self.core).state_change(w.namespace, w.group, w.key, w.value_json,
                                                               notify=w.notify)
            elif w.value_json is None:
                await self.core.state_delete(w.namespace, w.group, w.key)
            else:
                await self.core.state_set(w.namespace, w.group, w.key, w.value_json)
        if delivery is None:
            if outgoing:
                await self.core.publish(outgoing)
            return "ok"
        return "ok" if await self.core.complete(delivery, outgoing) else "lost"

