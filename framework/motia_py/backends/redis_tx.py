"""The redis backend's transactional store: one script per commit (:mod:`.redis_scripts_tx`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from .records import Delivery, Outgoing, StateRead, StateWrite, TxResult
from .redis_realtime import RedisRealtime
from .redis_scripts_tx import encode_tx


class RedisTx(RedisRealtime):
    """Transactional commits, on the queue store, pub/sub and state changes of
    :class:`.redis_realtime.RedisRealtime`."""

    async def complete_tx(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                          writes: Sequence[StateWrite], reads: Sequence[StateRead]) -> TxResult:
        """Check the lease and the reads, apply the writes, acknowledge and publish, in one script (see
        :class:`.stores.TxStore`)."""
        return await self.complete_tx_with_result(delivery, outgoing, writes, reads, None)

    async def complete_tx_with_result(self, delivery: Delivery | None, outgoing: Sequence[Outgoing],
                                      writes: Sequence[StateWrite], reads: Sequence[StateRead],
                                      result_json: str | None) -> TxResult:
        """:meth:`complete_tx`, writing the delivery's finished record with ``result_json`` in the same
        script (job handles; keys of the outbox are taken by its publish block)."""
        notified = (w.notify for w in writes if w.notify is not None)
        await self._ensure_steps(t.step for out in (*outgoing, *notified) for t in out.targets)
        ks, args = encode_tx(self.keys, self._now(), delivery, outgoing, writes, reads, result_json)
        with self._translate():
            result = cast(TxResult, await self._s.tx.complete_tx(keys=ks, args=args))
        if result == "ok" and delivery is not None:
            await self._wake_limited([delivery])  # a flow-controlled step's slot is free
        return result
