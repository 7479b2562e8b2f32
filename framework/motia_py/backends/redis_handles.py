"""The redis backend's job-handle store: one hash per event, ``p:h:<event id>`` (see :mod:`.redis_keys`).

The publish script writes an event's handle with its deliveries (``s:<step>`` = ``q|uid|delay|kind``, the
kind naming the step's FIFO group when it has one) and takes its idempotency key in the same script; the
complete, dead-letter and cancel scripts replace a step's field with its finished record (JSON) in the
script that ends the delivery, and index the event in ``p:handles`` for retention. Whether a live delivery
is running is read from the step's owner hash (every leased delivery has an owner), its attempt from the
in-flight record or the FIFO head; a failed attempt leaves its error in ``e:<step>``.

Cancellation is lazy for deliveries that wait in a queue: their finished record (``cancelled``) is written
at once, the event goes into ``p:cancels``, and every claim flags the deliveries of events found there, so
that the worker settles them without running them (``x`` counts those still in a queue).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from .handle_records import event_handle, finish_json_open, live_state, step_from_finish
from .records import CancelResult, Delivery, EventHandle, HandleState, ScheduledDelivery, StepHandle
from .redis_keys import escape
from .redis_queue import RedisQueue
from .redis_scripts_queue import delivery_keys, fifo_group
from .redis_tags import untag

_PRUNE_CHUNK = 200
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisHandles(RedisQueue):
    """The job-handle store of :class:`.redis.RedisBackend` (see the module docstring)."""

    async def retry_with_error(self, delivery: Delivery, delay_s: float, error: str) -> None:
        """Retry after ``delay_s`` and keep ``error``, in one transaction; a delivery of a cancelled event
        ends as cancelled (one that is cancelled meanwhile is flagged by its next claim)."""
        c, eid = self._c, delivery.envelope.id
        with self._translate():
            if await c.zscore(self.keys.cancels, eid) is not None:
                await self.cancel_settle(delivery)
                return
            ks, args = delivery_keys(self.keys.step(delivery.step), delivery), [
                self._now(), delivery.step, delivery.id, str(delivery.attempt), fifo_group(delivery)]
            note = json.dumps({"e": error, "a": delivery.attempt})
            async with c.pipeline(transaction=True) as pipe:
                await self._s.queue.retry(keys=[*ks, self.keys.step(delivery.step).delayed],
                                          args=[*args, repr(max(0.0, float(delay_s)))], client=pipe)
                pipe.hset(self.keys.handle(eid), f"e:{delivery.step}", note)
                await pipe.execute()
        await self._wake_limited([delivery])

    async def cancel_settle(self, delivery: Delivery) -> bool:
        """End a leased delivery as cancelled; False when the lease was lost."""
        d = delivery
        record = finish_json_open(HandleState.CANCELLED, delivery_id=d.id, attempts=d.attempt,
                                  started_at=d.first_delivered_at)
        with self._translate():
            ended = bool(await self._s.handles.cancel_settle(
                keys=[*delivery_keys(self.keys.step(d.step), d), self.keys.handle(d.envelope.id), self.keys.handles],
                args=[self._now(), d.step, d.id, str(d.attempt), fifo_group(d), d.envelope.id, record]))
        await self._wake_limited([d])  # a slot of a concurrency limit may be free now
        return ended

    async def handle_get(self, event_id: str) -> EventHandle | None:
        """The event's handle, read in one script."""
        with self._translate():
            got = await self._s.handles.status(keys=[self.keys.handle(event_id)], args=[self._now(), self.keys.prefix])
        if not got:
            return None
        flat, extra, now = cast(tuple[list[str], list[Any], str], got)
        return _handle(event_id, dict(zip(flat[::2], flat[1::2], strict=True)), extra, float(now))

    async def handle_find(self, prefix: str, limit: int) -> list[str]:
        """Known event ids starting with ``prefix`` (a SCAN of the handle keys)."""
        head = f"{self.keys.prefix}:h:"
        pattern = head + escape(prefix).translate(_GLOB) + "*"
        found: set[str] = set()
        with self._translate():
            async for key in self._c.scan_iter(match=pattern, count=1000):
                found.add(str(key)[len(head):])
        return sorted(found)[:max(0, limit)]

    async def handle_progress(self, delivery: Delivery, progress_json: str) -> None:
        """Store the latest progress of a delivery."""
        with self._translate():
            await self._c.hset(self.keys.handle(delivery.envelope.id), f"p:{delivery.step}", progress_json)

    async def handle_cancel(self, event_id: str) -> CancelResult | None:
        """Cancel in one script: deliveries waiting in a queue are cancelled, running ones are marked."""
        with self._translate():
            got = await self._s.handles.cancel(keys=[self.keys.handle(event_id), self.keys.cancels, self.keys.handles],
                                               args=[self._now(), self.keys.prefix, event_id])
        if not got:
            return None
        handle = await self.handle_get(event_id)
        if handle is None:
            return None
        cancelled, requested = cast(tuple[list[str], list[str]], got)
        return CancelResult(handle=handle, cancelled=tuple(sorted(cancelled)), requested=tuple(sorted(requested)))

    async def cancel_requests(self, deliveries: Sequence[Delivery]) -> set[str]:
        """The deliveries whose event was cancelled (one ZMSCORE)."""
        if not deliveries:
            return set()
        events = list({d.envelope.id for d in deliveries})
        with self._translate():
            scores = await self._c.zmscore(self.keys.cancels, events)
        gone = {e for e, score in zip(events, scores, strict=True) if score is not None}
        return {d.id for d in deliveries if d.envelope.id in gone}

    async def scheduled_list(self, topic: str | None, limit: int) -> list[ScheduledDelivery]:
        """Scheduled deliveries of every step, the earliest due first."""
        if limit <= 0:
            return []
        needle = "" if topic is None else '"topic":' + json.dumps(topic)
        out: list[ScheduledDelivery] = []
        with self._translate():
            steps = sorted(cast(set[str], await self._c.smembers(self.keys.steps)))
            for step in steps:
                sk = self.keys.step(step)
                flat = await self._s.handles.scheduled(
                    keys=[sk.delayed, sk.fifo_ready, sk.fifo_wait, sk.fifo_lease, self.keys.cancels],
                    args=[self._now(), sk.fifo_prefix, str(limit), needle])
                for i in range(0, len(flat), 3):
                    env = json.loads(untag(flat[i + 2])[0])
                    out.append(ScheduledDelivery(event_id=env["id"], step=step, topic=env["topic"],
                                                 trace_id=env["trace_id"], due_at=float(flat[i]),
                                                 emitted_at=env["emitted_at"], delivery_id=flat[i + 1]))
        return sorted(out, key=lambda s: (s.due_at, s.event_id, s.step))[:limit]

    async def handles_prune(self, before: float, keep: int) -> int:
        """Retention of finished handles, then of cancellations with nothing left in a queue."""
        c, dropped = self._c, 0
        with self._translate():
            old = cast(list[str], await c.zrangebyscore(self.keys.handles, "-inf", f"({float(before)!r}"))
            extra = cast(list[str], await c.zrevrange(self.keys.handles, max(0, keep), -1))
            events = sorted(set(old) | set(extra))
            for i in range(0, len(events), _PRUNE_CHUNK):
                chunk = events[i:i + _PRUNE_CHUNK]
                dropped += int(await self._s.handles.prune(
                    keys=[self.keys.handles, *(self.keys.handle(e) for e in chunk)], args=chunk))
            await self._s.handles.prune_cancels(keys=[self.keys.cancels], args=[self.keys.prefix])
        return dropped


def _handle(event_id: str, h: dict[str, str], extra: list[Any], now: float) -> EventHandle:
    """An :class:`EventHandle` from a handle hash and the running info the status script added."""
    topic, trace_id, emitted_at = json.loads(h["i"]) if "i" in h else ("", "", 0.0)
    published = float(h.get("@", emitted_at))
    live = {extra[i]: (int(extra[i + 1]) == 1, extra[i + 2], extra[i + 3]) for i in range(0, len(extra), 4)}
    steps: list[StepHandle] = []
    for field, value in h.items():
        if not field.startswith("s:"):
            continue
        step = field[2:]
        progress = h.get(f"p:{step}")
        if value.startswith("{"):
            steps.append(step_from_finish(step, value, progress))
            continue
        _, uid, delay, _ = value.split("|", 3)
        running, att, first = live.get(step, (False, "", ""))
        note = json.loads(h[f"e:{step}"]) if f"e:{step}" in h else None
        attempts = int(att) if att else (int(note["a"]) if note else 0)
        due = published + float(delay)
        steps.append(StepHandle(
            step=step, state=live_state(running, attempts, due, now), delivery_id=uid, attempts=attempts,
            due_at=None if running or attempts else due, started_at=float(first) if first else None,
            error=note["e"] if note else None, progress_json=progress, cancel_requested=running and "c" in h))
    return event_handle(event_id, (topic, trace_id, emitted_at), steps)
