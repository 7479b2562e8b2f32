"""The redis backend's queue store: per-step streams, leases, delays, FIFO groups and dead letters.

Fan-out happens at publish time: every subscribing step has its own Redis Stream with one consumer group
(named after the step), so an event with three subscribers is three stream entries. Per-step streams
rather than one stream per topic, because then an entry has exactly one group to acknowledge it: it is
XDEL'd as soon as that group is done with it, so streams stay bounded without MAXLEN trimming (which can
drop events nobody has consumed yet), and a delay or retry goes back to exactly one step. The group is
created at id 0 the first time a process publishes to or claims from the step, so events published
before any worker ran are delivered.

Leases are not Redis's idle times: a claim records ``delivery id -> expiry`` in a sorted set, the
attempt in a hash and the claiming worker (``host:pid``) in another (see :mod:`.redis_keys`); the next
claim that finds an expired lease XCLAIMs that one entry alone with ``attempt + 1``, reporting the worker
whose lease expired. Expiry is measured on the injected clock when there is one (so tests are
deterministic) and on Redis's ``TIME`` otherwise, so workers on hosts with skewed clocks still agree.
Delayed deliveries wait in a sorted set until a claim moves them into the stream; FIFO queues are one
list per message group whose head alone is ever out. Every multi-key change is one Lua script
(:mod:`.redis_scripts`); payloads are JSON text, never pickle.

``complete`` and ``publish`` calls made in one event-loop iteration go to Redis as one script call
(group commit), so a worker finishing a hundred deliveries pays one round trip, not a hundred.

``wait`` does not consume anything: it blocks in ``XREAD`` on the step's stream (and a one-entry "wake"
stream that FIFO and delayed changes bump) from the last id it saw, so a publish by any process wakes
it at once and a crash while waiting cannot strand an entry.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, cast

from ..types import Clock
from .handle_records import finish_json_open
from .records import (
    DeadLetter,
    Delivery,
    Envelope,
    FlowControl,
    HandleState,
    Outgoing,
    QueueStats,
    StepQueueStats,
    new_id,
)
from .redis_base import Batcher
from .redis_flow import RedisFlow
from .redis_keys import CONSUMER, flow_keys
from .redis_scripts_queue import MOVE_MAX, delivery_keys, encode_outgoing, fifo_group, queue_keys
from .redis_tags import tag, untag

_MAX_CLAIM: Final = 1000  # deliveries per claim script run (bounds its run time and Lua's unpack())
_BLOCK_GRACE_S: Final = 5.0  # how long past its BLOCK time a blocking read may take before we give up on it
_SCAN: Final = 1000  # stream entries (dead letters) read per round trip by step_stats


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a blocking read that failed after nobody waited for it any more


class RedisQueue(RedisFlow):
    """The queue store and dead-letter queue of :class:`.redis.RedisBackend` (see the module docstring)."""

    def __init__(self, url: str, prefix: str = "motia", clock: Clock | None = None,
                 identity: str | None = None) -> None:
        super().__init__(url, prefix, clock, identity)
        self._reads: set[asyncio.Future[Any]] = set()
        self._publishes: Batcher[Sequence[Outgoing], dict[str, str]] = Batcher(self._publish_batch)
        self._completes: Batcher[tuple[Delivery, Sequence[Outgoing], str | None], bool] = Batcher(
            self._complete_batch)

    async def close(self) -> None:
        """Finish the batched calls, stop blocking reads and disconnect; deliveries stay queued."""
        if self._client is None:
            return
        await self._publishes.drain()
        await self._completes.drain()
        for read in list(self._reads):
            read.cancel()
        if self._reads:
            await asyncio.gather(*self._reads, return_exceptions=True)
        await super().close()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item (but those whose key is held), atomically."""
        await self.publish_deduped(items)

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """:meth:`publish`; per item the id of the event that holds its key (its own when published)."""
        held: dict[str, str] = {}
        if any(out.targets for out in items):
            self._require_open()
            held = await self._publishes.submit(items)
        return [held.get(out.envelope.id, out.envelope.id) for out in items]

    async def _publish_batch(self, calls: list[Sequence[Outgoing]]) -> list[dict[str, str]]:
        items = [out for call in calls for out in call]
        await self._ensure_steps(t.step for out in items for t in out.targets)
        ks, args = [self.keys.seq], [self._now()]
        encode_outgoing(self.keys, items, ks, args)
        with self._translate():
            dups = await self._s.queue.publish(keys=ks, args=args)
        held = {items[int(dups[i]) - 1].envelope.id: dups[i + 1] for i in range(0, len(dups), 2)}
        return [held] * len(calls)

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries of ``step``: an expired lease alone, else the stream in
        order, then the heads of free FIFO groups (oldest first); with ``control``, or while the step has
        prioritised deliveries, through the flow path (:mod:`.redis_scripts_flow`)."""
        if limit <= 0:
            return []
        if control is not None:
            flat = await self._flow_claim(step, min(limit, _MAX_CLAIM), lease_s, control)
            return await self._screened(self._deliveries(flat, step, control.limits_concurrency))
        sk = self.keys.step(step)
        with self._translate():
            flat = await self._s.queue.claim(
                keys=[*queue_keys(sk), sk.owner, self.keys.steps, flow_keys(self.keys.prefix, step).flag,
                      self.keys.cancels],
                args=[self._now(), step, CONSUMER, str(min(limit, _MAX_CLAIM)), repr(float(lease_s)),
                      sk.fifo_prefix, step, str(MOVE_MAX), self.identity])
        if flat[:1] == ["~flow"]:
            return await self._screened(self._deliveries(
                await self._flow_claim(step, min(limit, _MAX_CLAIM), lease_s, None), step, False))
        gone: set[str] = set(flat.pop()) if flat and isinstance(flat[-1], list) else set()  # cancelled events
        got = self._deliveries(flat, step, False)
        return [replace(d, cancelled=True) if d.id in gone else d for d in got] if gone else got

    async def _screened(self, got: list[Delivery]) -> list[Delivery]:
        """Flag the deliveries of cancelled events in a claim of the flow path (whose script does not look at
        cancellations; the plain claim script flags them itself)."""
        if not got:
            return got
        events = list({d.envelope.id for d in got})
        with self._translate():
            scores = await self._c.zmscore(self.keys.cancels, events)
        gone = {e for e, score in zip(events, scores, strict=True) if score is not None}
        return [replace(d, cancelled=True) if d.envelope.id in gone else d for d in got] if gone else got

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Undo the claims of deliveries that never started, in one script: not counted, due at once (a
        standard one at the end of its stream, a FIFO head still its group's head); one claimed for an
        expired lease goes back to that expired lease and its ``last_owner``. ``first_delivered_at`` is
        cleared when the claim handed back was the first. Lost leases are skipped."""
        if not deliveries:
            return
        ks: list[str] = []
        args = [self._now(), str(len(deliveries))]
        for d in deliveries:
            ks += delivery_keys(self.keys.step(d.step), d)
            args += (d.step, d.id, str(d.attempt), fifo_group(d), "1" if d.expired else "", d.last_owner or "")
        with self._translate():
            await self._s.queue.hand_back(keys=ks, args=args)
        await self._wake_limited(deliveries)

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge and publish ``outgoing`` in one script; False (nothing published) when the lease was
        lost."""
        return await self.complete_with_result(delivery, outgoing, None)

    async def complete_with_result(self, delivery: Delivery, outgoing: Sequence[Outgoing],
                                   result_json: str | None) -> bool:
        """:meth:`complete`, recording ``result_json`` in the delivery's finished record."""
        self._require_open()
        return await self._completes.submit((delivery, outgoing, result_json))

    async def _complete_batch(self, calls: list[tuple[Delivery, Sequence[Outgoing], str | None]]) -> list[bool]:
        await self._ensure_steps(t.step for _, outgoing, _ in calls for out in outgoing for t in out.targets)
        ks, args = [self.keys.seq, self.keys.handles], [self._now(), str(len(calls))]
        for d, outgoing, result in calls:
            ks += delivery_keys(self.keys.step(d.step), d)
            ks.append(self.keys.handle(d.envelope.id))
            args += (d.step, d.id, str(d.attempt), fifo_group(d), d.envelope.id,
                     finish_json_open(HandleState.SUCCEEDED, delivery_id=d.id, attempts=d.attempt,
                                      started_at=d.first_delivered_at, result_json=result))
            encode_outgoing(self.keys, outgoing, ks, args)
        with self._translate():
            done = await self._s.queue.complete(keys=ks, args=args)
        await self._wake_limited(d for (d, _, _), ok in zip(calls, done, strict=True) if ok)
        return [bool(x) for x in done]

    def _single(self, d: Delivery) -> tuple[list[str], list[str]]:
        """KEYS and the leading ARGV (now group uid attempt fifo_group) of the retry and dead-letter scripts."""
        return delivery_keys(self.keys.step(d.step), d), [self._now(), d.step, d.id, str(d.attempt), fifo_group(d)]

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Release a failed delivery so it is delivered again after ``delay_s`` (a no-op if the lease was lost)."""
        ks, args = self._single(delivery)
        with self._translate():
            await self._s.queue.retry(keys=[*ks, self.keys.step(delivery.step).delayed],
                                args=[*args, repr(max(0.0, float(delay_s)))])
        await self._wake_limited([delivery])

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                          ) -> None:
        """Move a delivery to the dead-letter queue (a no-op if the lease was lost)."""
        ks, args = self._single(delivery)
        made = delivery.attempt if attempts is None else attempts
        env = tag(delivery.priority, delivery.rate_key, delivery.concurrency_key) + delivery.envelope.to_json()
        record = json.dumps({"step": delivery.step, "env": env, "attempts": made,
                             "error": error, "traceback": traceback, "first": delivery.first_delivered_at})
        finished = finish_json_open(HandleState.DEAD, delivery_id=delivery.id, attempts=made,
                                    started_at=delivery.first_delivered_at, error=error)
        with self._translate():
            await self._s.queue.dead(keys=[*ks, self.keys.dlq, self.keys.dlq_index,
                                           self.keys.handle(delivery.envelope.id), self.keys.handles],
                                     args=[*args, record, delivery.envelope.id, finished])
        await self._wake_limited([delivery])

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Push the leases of running deliveries ``lease_s`` seconds into the future (lost ones are skipped)."""
        by_step: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_step.setdefault(d.step, []).append(d)
        for step, ds in by_step.items():
            sk = self.keys.step(step)
            args = [self._now(), repr(float(lease_s)), sk.fifo_prefix]
            for d in ds:
                args += (d.id, str(d.attempt), fifo_group(d))
            with self._translate():
                await self._s.queue.extend(keys=[sk.inflight, sk.lease, sk.fifo_lease], args=args)

    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """Return when ``step`` may have a due delivery (with ``control``: one a claim with it would hand
        out), or after ``timeout_s``.

        Returns at once when something is due; otherwise blocks in ``XREAD`` until a publish by any
        process, the next delayed delivery or lease expiry, the end of a limited delivery, or the timeout.
        """
        sk = self.keys.step(step)
        if control is not None:
            due_in, stream_id, wake_id = await self._flow_next_due(step, control)
        else:
            with self._translate():
                due_in, stream_id, wake_id = await self._s.queue.next_due(
                    keys=[*queue_keys(sk), sk.wake, flow_keys(self.keys.prefix, step).data], args=[self._now()])
        if due_in != "":
            timeout_s = min(timeout_s, max(0.0, float(due_in)))
        if timeout_s <= 0 or self._blocking is None:
            return
        block_ms = max(1, math.ceil(timeout_s * 1000))
        read = asyncio.ensure_future(
            self._blocking.xread({sk.stream: stream_id, sk.wake: wake_id}, count=1, block=block_ms))
        read.add_done_callback(_retrieve)
        self._reads.add(read)
        try:
            await asyncio.wait({read}, timeout=timeout_s + _BLOCK_GRACE_S)
        finally:
            self._reads.discard(read)
            if not read.done():
                read.cancel()  # redis-py drops the connection of a read it was interrupted in
        if read.done() and not read.cancelled() and (exc := read.exception()) is not None:
            with self._translate():
                raise exc

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries across every step."""
        c, now = self._c, self._now()
        with self._translate():
            steps = sorted(cast(set[str], await c.smembers(self.keys.steps)))
            rows = await asyncio.gather(*(
                self._s.queue.stats(keys=queue_keys(self.keys.step(s)), args=[now, self.keys.step(s).fifo_prefix])
                for s in steps))
            dead = int(await c.hlen(self.keys.dlq))
        flowing = await self._flow_size(steps)
        ready = delayed = leased = 0
        per_step: dict[str, int] = {}
        due: list[float] = []
        for step, (n_ready, n_delayed, n_leased, next_due, _), n_flow in zip(steps, rows, flowing, strict=True):
            n_ready += n_flow
            ready, delayed, leased = ready + n_ready, delayed + n_delayed, leased + n_leased
            per_step[step] = n_ready + n_delayed + n_leased
            if next_due != "":
                due.append(float(next_due))
        return QueueStats(ready=ready, delayed=delayed, leased=leased, dead=dead,
                          next_due_at=min(due) if due else None, per_step=per_step)

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """Per step: ready, delayed, leased and dead counts, the oldest ready delivery's due time, and (with
        its control) the ready ones held back by a limit.

        Reads every ready stream entry and every dead letter (in pages, on the server), so its cost grows
        with the queues: it is for ``motia-py queue``, not for the hot path.
        """
        c, now = self._c, self._now()
        with self._translate():
            steps = sorted(cast(set[str], await c.smembers(self.keys.steps)))
            dead = Counter([json.loads(record)["step"] async for _, record in c.hscan_iter(self.keys.dlq, count=_SCAN)])
            out: dict[str, StepQueueStats] = {}
            for step in sorted({*steps, *dead}):
                sk = self.keys.step(step)
                n_ready, n_delayed, n_leased, _, oldest = await self._s.queue.stats(
                    keys=queue_keys(sk), args=[now, sk.fifo_prefix])
                times = [float(t) for t in (oldest, await self._stream_oldest(sk.stream, sk.inflight)) if t != ""]
                n_flow, flow_oldest, throttled = await self._flow_stats(step, (controls or {}).get(step))
                n_ready += n_flow
                times += [flow_oldest] if flow_oldest is not None else []
                if n_ready or n_delayed or n_leased or dead[step]:
                    out[step] = StepQueueStats(ready=n_ready, delayed=n_delayed, leased=n_leased, dead=dead[step],
                                               oldest_ready_at=min(times, default=None), throttled=throttled)
        return out

    async def _stream_oldest(self, stream: str, inflight: str) -> str:
        """The earliest due time among the ready entries of a stream ('' for none), a page per script run."""
        oldest, start = "", "-"
        while True:
            best, last, n = await self._s.queue.ready_scan(keys=[stream, inflight], args=[start, str(_SCAN)])
            if best != "" and (oldest == "" or float(best) < float(oldest)):
                oldest = best
            if int(n) < _SCAN:
                return oldest
            start = f"({last}"

    # -- dead letters ---------------------------------------------------------------------------
    @staticmethod
    def _dead(dead_id: str, record: str, failed_at: float) -> DeadLetter:
        r = json.loads(record)
        env, priority, rate_key, conc_key = untag(r["env"])
        return DeadLetter(id=dead_id, step=r["step"], envelope=Envelope.from_json(env), attempts=r["attempts"],
                          error=r["error"], traceback=r["traceback"], failed_at=failed_at,
                          first_attempt_at=r["first"], priority=priority, rate_key=rate_key,
                          concurrency_key=conc_key)

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        if limit <= 0:
            return []
        c = self._c
        with self._translate():
            index = cast(list[tuple[str, float]],
                         await c.zrevrange(self.keys.dlq_index, 0, limit - 1, withscores=True))
            if not index:
                return []
            records = cast(list[str | None], await c.hmget(self.keys.dlq, [i for i, _ in index]))
        return [self._dead(i, r, at) for (i, at), r in zip(index, records, strict=True) if r is not None]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter by id."""
        c = self._c
        with self._translate():
            record = cast(str | None, await c.hget(self.keys.dlq, dead_id))
            failed_at = await c.zscore(self.keys.dlq_index, dead_id)
        if record is None or failed_at is None:
            return None
        return self._dead(dead_id, record, float(failed_at))

    async def dlq_replay(self, dead_id: str) -> bool:
        """Put a dead letter back on its step's stream with fresh attempts; False when unknown."""
        with self._translate():
            record = await self._c.hget(self.keys.dlq, dead_id)
        if record is None:
            return False
        r = json.loads(record)
        await self._ensure_steps([r["step"]])
        if r["env"].startswith("#"):  # prioritised or keyed: its step's claims must sort it in
            await self._mark_flow(r["step"])
        event_id = Envelope.from_json(untag(r["env"])[0]).id
        with self._translate():
            return bool(await self._s.queue.replay(
                keys=[self.keys.dlq, self.keys.dlq_index, self.keys.step(r["step"]).stream, self.keys.handle(event_id)],
                args=[self._now(), dead_id, new_id(), r["env"], r["step"]]))

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete a dead letter; False when unknown."""
        with self._translate():
            async with self._c.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.dlq, dead_id)
                pipe.zrem(self.keys.dlq_index, dead_id)
                removed, _ = await pipe.execute()
        return bool(removed)
