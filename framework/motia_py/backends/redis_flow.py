"""The redis queue's flow path, on the Python side: calls of the scripts of :mod:`.redis_scripts_flow`
(claims under a :class:`~.records.FlowControl` or of a step with prioritised deliveries, the next due
time of a controlled step, the flow queue's counts) and the wake-ups after a limited delivery ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .records import Delivery, Envelope, FlowControl
from .redis_base import RedisConnection
from .redis_keys import CONSUMER, flow_keys
from .redis_scripts_flow import SWEEP_MAX
from .redis_scripts_queue import MOVE_MAX, queue_keys
from .redis_tags import untag

_NO_LIMITS = FlowControl()


def _limits(control: FlowControl) -> list[str]:
    return [str(control.rate_limit), repr(float(control.rate_period_s)), "1" if control.rate_keyed else "",
            str(control.global_concurrency), str(control.key_concurrency)]


class RedisFlow(RedisConnection):
    """The flow path of :class:`.redis_queue.RedisQueue` (see :mod:`.redis_scripts_flow`)."""

    def _deliveries(self, flat: Sequence[Any], step: str, limited: bool) -> list[Delivery]:
        """The deliveries of a claim script's flat answer (envelopes untagged, see :mod:`.redis_tags`): an
        expired lease alone as 6 fields (the 5th '1', then its last owner), else 4 fields each (never 6 in
        all: one delivery is 4, two are 8)."""
        expired = len(flat) == 6
        size = 6 if expired else 4
        out = []
        for i in range(0, len(flat), size):
            text, priority, rate_key, conc_key = untag(flat[i + 1])
            out.append(Delivery(id=flat[i], step=step, envelope=Envelope.from_json(text), attempt=int(flat[i + 2]),
                                first_delivered_at=float(flat[i + 3]), expired=expired,
                                last_owner=(flat[i + 5] or None) if expired else None, priority=priority,
                                rate_key=rate_key, concurrency_key=conc_key, limited=limited))
        return out

    async def _flow_claim(self, step: str, limit: int, lease_s: float, control: FlowControl | None) -> list[Any]:
        """The flat answer of the flow claim script (``control`` None: priorities only)."""
        sk, fk = self.keys.step(step), flow_keys(self.keys.prefix, step)
        with self._translate():
            return list(await self._s.flow.claim(
                keys=[*queue_keys(sk), sk.owner, self.keys.steps, fk.flag, fk.ready, fk.waiting, fk.data, fk.held,
                      self.keys.seq],
                args=[self._now(), step, CONSUMER, str(limit), repr(float(lease_s)), sk.fifo_prefix, step,
                      str(MOVE_MAX), self.identity, fk.part_prefix, fk.rate_prefix,
                      *_limits(control or _NO_LIMITS), "1" if control is not None else "", str(SWEEP_MAX)]))

    async def _flow_next_due(self, step: str, control: FlowControl) -> tuple[str, str, str]:
        """(seconds until a claim with ``control`` may hand something out, or '', last stream id, last wake
        id)."""
        sk, fk = self.keys.step(step), flow_keys(self.keys.prefix, step)
        with self._translate():
            due_in, stream_id, wake_id = await self._s.flow.next_due(
                keys=[*queue_keys(sk), sk.wake, fk.ready, fk.waiting, fk.held],
                args=[self._now(), sk.fifo_prefix, fk.rate_prefix, *_limits(control)])
        return str(due_in), str(stream_id), str(wake_id)

    async def _flow_stats(self, step: str, control: FlowControl | None) -> tuple[int, float | None, dict[str, int]]:
        """(deliveries in the step's flow queue, the earliest due time among them, held back per limit)."""
        sk, fk = self.keys.step(step), flow_keys(self.keys.prefix, step)
        with self._translate():
            n, oldest, *held = await self._s.flow.stats(
                keys=[fk.ready, fk.waiting, fk.data, fk.held, sk.lease, sk.fifo_lease, sk.fifo_ready],
                args=[self._now(), sk.fifo_prefix, fk.part_prefix, fk.rate_prefix,
                      *_limits(control or _NO_LIMITS), "1" if control is not None else ""])
        names = ("globalConcurrency", "concurrencyKey", "rateLimit")
        return int(n), float(oldest) if oldest != "" else None, {k: int(v) for k, v in zip(names, held,
                                                                                        strict=True) if int(v)}

    async def _flow_size(self, steps: Sequence[str]) -> list[int]:
        """How many deliveries wait in each step's flow queue (they are ready: the stream does not hold them)."""
        with self._translate():
            async with self._c.pipeline(transaction=False) as pipe:
                for step in steps:
                    pipe.hlen(flow_keys(self.keys.prefix, step).data)
                return [int(n) for n in await pipe.execute()]

    async def _mark_flow(self, step: str) -> None:
        """Send ``step``'s claims through the flow path (a tagged dead letter goes back on its stream)."""
        with self._translate():
            await self._c.set(flow_keys(self.keys.prefix, step).flag, "1")

    async def _wake_limited(self, deliveries: Iterable[Delivery]) -> None:
        """Wake the waiters of the steps whose limited deliveries ended (a slot may have freed)."""
        steps = {d.step for d in deliveries if d.limited}
        if not steps:
            return
        with self._translate():
            async with self._c.pipeline(transaction=False) as pipe:
                for step in steps:
                    pipe.xadd(self.keys.step(step).wake, {"w": "1"}, maxlen=1, approximate=False)
                await pipe.execute()
