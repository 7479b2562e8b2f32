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

``wait_any`` (and ``wait``, one step's) consumes nothing: one script reads when each step's next delivery
falls due and the newest ids of its stream and of its one-entry "wake" stream (which FIFO and delayed
changes bump); then one blocking ``XREAD`` per process, over every waited-for step's two streams
(:mod:`.redis_wake`), wakes it when any of them grows, so a publish by any process wakes it at once, a
crash while waiting cannot strand an entry, and a worker holds at most three connections whatever its
steps. Claims made in one event-loop iteration go out in one pipeline.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, cast

from msgspec.structs import replace
from redis.asyncio import ConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from ..types import Clock
from .handle_records import finish_json_open
from .records import (
    Delivery,
    FlowControl,
    HandleState,
    Outgoing,
    QueueStats,
    StepQueueStats,
)
from .redis_base import Batcher
from .redis_dlq import RedisDeadLetters
from .redis_keys import CONSUMER, flow_keys
from .redis_pack import use_hiredis_packing
from .redis_prefetch import Prefetch
from .redis_scripts_queue import MOVE_MAX, delivery_keys, encode_outgoing, fifo_group, queue_keys
from .redis_tags import tag
from .redis_wake import ActivityHub, Generation, StreamWatch

_MAX_CLAIM: Final = 1000  # deliveries per claim script run (bounds its run time and Lua's unpack())
_CONNECT_TIMEOUT_S: Final = 5.0
_DUE_TRUSTED_S: Final = 1.0  # how long a due time is reused after a claim took what the blocking read saw
_DUE_QUIET_S: Final = 30.0  # how long a due time is reused while the blocking read sees nothing of its step
_SCAN: Final = 1000  # stream entries (dead letters) read per round trip by step_stats


class RedisQueue(RedisDeadLetters):
    """The queue store and dead-letter queue of :class:`.redis.RedisBackend` (see the module docstring)."""

    def __init__(self, url: str, prefix: str = "motia", clock: Clock | None = None,
                 identity: str | None = None) -> None:
        super().__init__(url, prefix, clock, identity)
        self._hub = ActivityHub()
        self._watch = StreamWatch(self._watch_client, lambda: self._c, self._hub)
        self._due: dict[str, tuple[float | None, float, Generation]] = {}  # see _trusted_due
        self._drained: dict[str, Generation] = {}  # a claim found nothing more due, at this generation
        self._claims: Batcher[tuple[list[str], list[str]], Any] = Batcher(self._claim_batch)
        self._publishes: Batcher[Sequence[Outgoing], dict[str, str]] = Batcher(self._publish_batch)
        self._completes: Batcher[tuple[Delivery, Sequence[Outgoing], str | None], bool] = Batcher(
            self._complete_batch)
        self._prefetch = Prefetch(self._hub, self.hand_back)

    async def close(self) -> None:
        """Finish the batched calls, stop blocking reads and disconnect; deliveries stay queued."""
        if self._client is None:
            return
        await self._publishes.drain()
        await self._completes.drain()
        await self._claims.drain()
        await self._prefetch.close()
        await self._watch.close()
        self._watch = StreamWatch(self._watch_client, lambda: self._c, self._hub)
        self._hub.signal_all()  # pending waits return now rather than at their timeout
        await super().close()

    def _watch_client(self) -> Redis:
        """The client of the one blocking read (one connection, no socket timeout)."""
        pool = use_hiredis_packing(ConnectionPool.from_url(
            self._url, decode_responses=True, socket_timeout=None, socket_connect_timeout=_CONNECT_TIMEOUT_S,
            socket_keepalive=True, health_check_interval=30, client_name="motia-py"))
        client = Redis(connection_pool=pool, single_connection_client=True)
        client.auto_close_connection_pool = True  # its pool is its own: closed with it
        return client

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target of every item (but those whose key is held), atomically."""
        await self.publish_deduped(items)

    async def publish_deduped(self, items: Sequence[Outgoing]) -> list[str]:
        """:meth:`publish`; per item the id of the event that holds its key (its own when published)."""
        held: dict[str, str] = {}
        if any(out.targets for out in items):
            self._require_open()
            held = await self._publishes.call(items)
        return [held.get(out.envelope.id, out.envelope.id) for out in items]

    async def _publish_batch(self, calls: list[Sequence[Outgoing]]) -> list[dict[str, str]]:
        items = [out for call in calls for out in call]
        if new := self._new_steps(calls):
            await self._ensure_steps(new)
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
            self._prefetch.claimed(step, limit, lease_s, 0, control)
            flat = await self._flow_claim(step, min(limit, _MAX_CLAIM), lease_s, control)
            return await self._screened(self._deliveries(flat, step, control.limits_concurrency))
        before = self._hub.generation(step)
        got = self._prefetch.take(step, limit)
        if got:  # leased by a completion of this process (see redis_prefetch)
            self._prefetch.claimed(step, limit, lease_s, len(got), None)
            if len(got) < limit:
                self._drained[step] = before
            return got
        sk = self.keys.step(step)
        self._require_open()
        with self._translate():
            flat = await self._claims.call((
                [*queue_keys(sk), sk.owner, self.keys.steps, flow_keys(self.keys.prefix, step).flag, self.keys.cancels],
                [self._now(), step, CONSUMER, str(min(limit, _MAX_CLAIM)), repr(float(lease_s)),
                 sk.fifo_prefix, step, str(MOVE_MAX), self.identity]))
            if isinstance(flat, Exception):
                raise flat
        if flat[:1] == ["~flow"]:
            return await self._screened(self._deliveries(
                await self._flow_claim(step, min(limit, _MAX_CLAIM), lease_s, None), step, False))
        gone: set[str] = set(flat.pop()) if flat and isinstance(flat[-1], list) else set()  # cancelled events
        got = self._deliveries(flat, step, False)
        self._prefetch.claimed(step, min(limit, _MAX_CLAIM), lease_s, len(got), None)
        if len(got) < min(limit, _MAX_CLAIM) and not (got and got[0].expired):
            self._drained[step] = before  # nothing else was due: waits may trust the step's due time
        return [replace(d, cancelled=True) if d.id in gone else d for d in got] if gone else got

    async def _claim_batch(self, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        """The claims of one event-loop iteration (of many steps' consumers) in one pipeline: one round
        trip on one connection, each claim still one atomic script run. A claim's own error comes back
        as its result."""
        return await self._pipelined(self._s.queue.claim, calls)

    async def _pipelined(self, script: AsyncScript, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        """Run ``script`` once per (keys, args) in one pipeline (one round trip, one connection), each run
        atomic on its own; a run's error comes back as its result."""
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        async with self._c.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        for i, ((keys, args), result) in enumerate(zip(calls, results, strict=True)):
            if isinstance(result, NoScriptError):  # Redis restarted (or SCRIPT FLUSH): load it again
                results[i] = await script(keys=keys, args=args)
        return list(results)

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
        return await self._completes.call((delivery, outgoing, result_json))

    async def _complete_batch(self, calls: list[tuple[Delivery, Sequence[Outgoing], str | None]]) -> list[bool]:
        if new := self._new_steps([outgoing for _, outgoing, _ in calls]):
            await self._ensure_steps(new)
        ks, args = [self.keys.seq, self.keys.handles], [self._now(), str(len(calls))]
        for d, outgoing, result in calls:
            ks += delivery_keys(self.keys.step(d.step), d)
            ks.append(self.keys.handle(d.envelope.id))
            args += (d.step, d.id, str(d.attempt), fifo_group(d), d.envelope.id,
                     finish_json_open(HandleState.SUCCEEDED, delivery_id=d.id, attempts=d.attempt,
                                      started_at=d.first_delivered_at, result_json=result))
            encode_outgoing(self.keys, outgoing, ks, args)
        asked = self._prefetch.wanted(t.step for _, outgoing, _ in calls for out in outgoing for t in out.targets
                                      if not t.fifo and t.delay_s <= 0 and not tag(t.priority, t.rate_key,
                                                                                  t.concurrency_key))
        if asked:
            ks.append(self.keys.cancels)
            args += (str(len(asked)), CONSUMER, self.identity)
            for step, limit, lease_s in asked:
                sk = self.keys.step(step)
                ks += (sk.stream, sk.inflight, sk.lease, sk.owner, flow_keys(self.keys.prefix, step).flag)
                args += (step, str(min(limit, _MAX_CLAIM)), repr(float(lease_s)))
        try:
            with self._translate():
                done = await self._s.complete(keys=ks, args=args)
        except BaseException:
            self._prefetch.forget(step for step, _, _ in asked)
            raise
        if asked:
            self._prefetched(asked, done.pop())
        await self._wake_limited(d for (d, _, _), ok in zip(calls, done, strict=True) if ok)
        return [bool(x) for x in done]

    def _prefetched(self, asked: list[tuple[str, int, float]], answers: list[Any]) -> None:
        """Keep what a completion claimed for waiting steps (see :mod:`.redis_prefetch`); tell the blocking
        read about the entries it took, so that they do not wake the steps again."""
        for (step, _, lease_s), (last, flat) in zip(asked, answers, strict=True):
            gone: set[str] = set(flat.pop()) if flat and isinstance(flat[-1], list) else set()
            got = self._deliveries(flat, step, False)
            if gone:
                got = [replace(d, cancelled=True) if d.id in gone else d for d in got]
            if last:
                self._watch.seen(self.keys.step(step).stream, last)
            self._prefetch.answered(step, got, lease_s)

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
        out), or after ``timeout_s`` (see :meth:`wait_any`).

        Returns at once when something is due; otherwise the process's one blocking read wakes it on a
        publish by any process or the end of a limited delivery, else the next due time or the timeout.
        """
        if control is None:
            await self.wait_any((step,), timeout_s)
            return
        started = time.monotonic()
        with self._hub.waiting((step,)) as waiter:
            due_in, stream_id, wake_id = await self._flow_next_due(step, control)
            sk = self.keys.step(step)
            self._watch.watch({sk.stream: (step, stream_id, False), sk.wake: (step, wake_id, True)})
            if due_in != "":
                timeout_s = min(timeout_s, float(due_in))
            await waiter.wait(timeout_s - (time.monotonic() - started))

    async def wait_any(self, steps: Collection[str], timeout_s: float) -> set[str]:
        """The steps that may have a due delivery, waiting up to ``timeout_s`` for one.

        One script reads the due times and newest stream ids of the steps whose due time is not known
        already; then the process's one blocking read (:mod:`.redis_wake`) wakes the call when a publish
        by any process reaches one of the steps, or the earliest due time passes. A due time read here is
        reused while the blocking read sees nothing of its step (up to ``_DUE_QUIET_S``, a safety net), so
        a wait that starts again at once (a worker's consumers come and go) costs no round trip, and an
        idle worker reads its steps' due times again only when something happens to them.
        """
        order = list(dict.fromkeys(steps))
        stashed = self._prefetch.stashed(order)
        if stashed:
            return stashed
        started = time.monotonic()
        with self._hub.waiting(order) as waiter:
            later: dict[str, float] = {}
            unknown: list[str] = []
            for step in order:
                known = self._trusted_due(step, started)
                if known is None:
                    unknown.append(step)
                elif known[0] is not None:
                    later[step] = known[0] - started
            due = await self._read_due(unknown, later, started)
            if due or waiter.hits:
                return due | waiter.hits
            timeout_s = min([timeout_s, *later.values()])
            hits = await waiter.wait(timeout_s - (time.monotonic() - started))
        elapsed = time.monotonic() - started
        return hits or {step for step, due_in in later.items() if due_in <= elapsed}

    def _trusted_due(self, step: str, now: float) -> tuple[float | None] | None:
        """The step's next due time (monotonic; None: nothing scheduled) when it has not passed and was
        read less than ``_DUE_QUIET_S`` ago with nothing seen on its streams since, or less than
        ``_DUE_TRUSTED_S`` ago with only standard deliveries seen that a claim then took all of; else None.

        The due time covers the leases held when it was read (the earliest expiry). A lease taken later
        needs a delivery that became due later, and every way one does is seen: a publish, a hand back or
        a replay grows the stream; delayed, retried and FIFO deliveries bump the wake stream; a delayed
        one or a held lease falls due at the time read. Only after a claim that took what was seen may
        other processes have leased some of it too, unseen: hence the shorter limit there."""
        known = self._due.get(step)
        if known is None:
            return None
        at, read_at, (epoch, streams, wakes) = known
        now_epoch, now_streams, now_wakes = generation = self._hub.generation(step)
        quiet = streams == now_streams
        if (now - read_at > (_DUE_QUIET_S if quiet else _DUE_TRUSTED_S) or (at is not None and at <= now)
                or epoch != now_epoch or wakes != now_wakes or (not quiet and self._drained.get(step) != generation)):
            return None
        return (at,)

    async def _read_due(self, steps: list[str], later: dict[str, float], now: float) -> set[str]:
        """Read the due times of ``steps`` (one script): return the due ones, note the others in
        ``later`` and remember them, and have the blocking read watch their streams."""
        if not steps:
            return set()
        generations = {s: self._hub.generation(s) for s in steps}
        keys: list[str] = []
        for step in steps:
            sk = self.keys.step(step)
            keys += (*queue_keys(sk), sk.wake, flow_keys(self.keys.prefix, step).data)
        with self._translate():
            flat = await self._s.queue.next_due(keys=keys, args=[self._now()])
        due: set[str] = set()
        streams: dict[str, tuple[str, str, bool]] = {}
        for i, step in enumerate(steps):
            due_in, stream_id, wake_id = flat[3 * i:3 * i + 3]
            sk = self.keys.step(step)
            streams[sk.stream], streams[sk.wake] = (step, stream_id, False), (step, wake_id, True)
            if due_in != "" and float(due_in) <= 0:
                due.add(step)
                continue
            if due_in != "":
                later[step] = float(due_in)
            if self._hub.generation(step) == generations[step]:  # nothing happened while reading
                self._due[step] = (None if due_in == "" else now + float(due_in), now, generations[step])
        self._watch.watch(streams)
        return due

    async def stats(self) -> QueueStats:
        """Counts of ready, delayed, leased and dead deliveries across every step."""
        c, now = self._c, self._now()
        with self._translate():
            steps = sorted(cast(set[str], await c.smembers(self.keys.steps)))
            rows = await self._pipelined(self._s.queue.stats, [
                (queue_keys(self.keys.step(s)), [now, self.keys.step(s).fifo_prefix]) for s in steps]) if steps else []
            for row in rows:
                if isinstance(row, Exception):
                    raise row
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
