"""The in-process backend: the reference implementation of every store protocol and the test double.

Everything lives in dicts owned by one event loop. Payloads are still stored as JSON text so that
the memory backend behaves exactly like the durable ones (no shared mutable objects between steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence

from msgspec import Struct, field

from ..types import Clock
from . import memory_flow as flow
from .memory_handles import MemoryHandles
from .memory_realtime import MemoryRealtime
from .memory_tx import MemoryTx
from .memory_wait import MemoryWait, StepEvent, Wakeups
from .records import (
    DeadLetter,
    Delivery,
    Envelope,
    FlowControl,
    HandleState,
    Outgoing,
    QueueStats,
    StepQueueStats,
    TraceRun,
    new_id,
    worker_identity,
)
from .registry import BackendOptions


class _Item(Struct):
    id: str
    step: str
    envelope: Envelope
    seq: int
    available_at: float
    fifo: bool
    attempts: int = 0  # deliveries so far
    lease_until: float | None = None
    first_delivered_at: float | None = None
    owner: str | None = None  # the worker that holds (or last held) the lease
    priority: int = 0
    rate_key: str | None = None
    conc_key: str | None = None


class _StepQueue(Struct):
    ready: deque[_Item] = field(default_factory=deque)  # due, FIFO by seq (standard queues, priority 0)
    prio: list[tuple[int, int, _Item]] = field(default_factory=list)  # due, other priorities: heap (-p, order)
    delayed: list[tuple[float, int, _Item]] = field(default_factory=list)  # heap by available_at
    leased: dict[str, _Item] = field(default_factory=dict)
    fifo_groups: dict[str, deque[_Item]] = field(default_factory=dict)  # group -> items in order
    fifo_busy: set[str] = field(default_factory=set)  # groups with a leased item
    wakeup: asyncio.Event | None = None


class MemoryBackend(MemoryRealtime, MemoryHandles, MemoryTx, MemoryWait):
    """In-process backend (``memory://``). Not shared between processes; lost on exit. Its pub/sub and
    state changes are in :class:`.memory_realtime.MemoryRealtime`, its job handles in
    :class:`.memory_handles.MemoryHandles`, its transactional commits in :class:`.memory_tx.MemoryTx`.

    Args:
        url: ``memory://``.
        clock: epoch seconds; ``time.time`` by default.
        identity: the owner recorded on every claim (``worker_identity()``, ``host:pid``, by default);
            the attribute of that name may be changed at any time.
    """

    def __init__(self, url: str = "memory://", clock: Clock | None = None, identity: str | None = None) -> None:
        self.url = url
        self.clock: Clock = clock or time.time
        self.identity = identity or worker_identity()
        self._queues: dict[str, _StepQueue] = {}
        self._seq = itertools.count()
        self._dead: dict[str, DeadLetter] = {}
        self._state: dict[str, dict[str, dict[str, str]]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._meta: dict[str, str] = {}
        self._traces: dict[str, tuple[float, list[str]]] = {}  # trace id -> (latest run start, runs)
        self._hub = Wakeups()
        self._starts: dict[str, flow.Starts] = {}  # per step: its rate windows' starts
        self._init_handles()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; data stays in memory until the object is dropped."""

    # -- queue ----------------------------------------------------------------------------------
    def _queue(self, step: str) -> _StepQueue:
        q = self._queues.get(step)
        if q is None:
            q = self._queues[step] = _StepQueue()
        return q

    def _enqueue(self, item: _Item) -> None:
        q = self._queue(item.step)
        if item.fifo:
            group = item.envelope.group_id or ""
            items = q.fifo_groups.setdefault(group, deque())
            items.append(item)
            # keep group order by seq (a retried head stays the head because it is never removed)
        elif item.available_at <= self.clock():
            flow.ready(q, self._seq, item)
        else:
            heapq.heappush(q.delayed, (item.available_at, item.seq, item))
        if q.wakeup is not None:
            q.wakeup.set()

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Enqueue one delivery per target."""
        now = self.clock()
        for out in items:
            if out.key is not None and self._key_holder(out, now) is not None:
                continue  # the key is taken: an event was published with it within its window
            for t in out.targets:
                self._enqueue(_Item(id=new_id(), step=t.step, envelope=out.envelope, seq=next(self._seq),
                                    available_at=now + t.delay_s, fifo=t.fifo, priority=t.priority,
                                    rate_key=t.rate_key, conc_key=t.concurrency_key))

    @staticmethod
    def _oldest_expired(q: _StepQueue, now: float) -> _Item | None:
        expired = [(i.lease_until, i.seq, i) for i in q.leased.values()
                   if i.lease_until is not None and i.lease_until <= now]
        return min(expired)[2] if expired else None

    def _lease(self, q: _StepQueue, item: _Item, now: float, lease_s: float, *, expired: bool = False,
               limited: bool = False) -> Delivery:
        last_owner = item.owner
        item.attempts += 1
        item.lease_until = now + lease_s
        item.owner = self.identity
        if item.first_delivered_at is None:
            item.first_delivered_at = now
        q.leased[item.id] = item
        return Delivery(id=item.id, step=item.step, envelope=item.envelope, attempt=item.attempts,
                        first_delivered_at=item.first_delivered_at, expired=expired,
                        last_owner=last_owner if expired else None, priority=item.priority,
                        rate_key=item.rate_key, concurrency_key=item.conc_key, limited=limited,
                        cancelled=bool(self._cancels) and item.envelope.id in self._cancels)

    async def claim(self, step: str, limit: int, lease_s: float, *, control: FlowControl | None = None
                    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries, highest priority then oldest first, within ``control``;
        an expired lease alone."""
        q = self._queues.get(step)
        if q is None or limit <= 0:
            return []
        now = self.clock()
        limited = control is not None and control.limits_concurrency
        expired = self._oldest_expired(q, now) if q.leased else None
        if expired is not None:  # its worker probably died running it: alone, so it takes nothing with it
            flow.record_starts(control or FlowControl(), self._starts.setdefault(step, {}), now, [expired])
            return [self._lease(q, expired, now, lease_s, expired=True, limited=limited)]
        while q.delayed and q.delayed[0][0] <= now:
            flow.ready(q, self._seq, heapq.heappop(q.delayed)[2])
        if control is not None or q.prio:
            starts = self._starts.setdefault(step, {})
            chosen: list[_Item] = flow.take(q, limit, now, flow.admission(control, now, q, starts) if control else None)
            flow.record_starts(control or FlowControl(), starts, now, chosen)
            return [self._lease(q, item, now, lease_s, limited=limited) for item in chosen]
        picked: list[_Item] = []
        while q.ready and len(picked) < limit:
            picked.append(q.ready.popleft())
        if q.fifo_groups and len(picked) < limit:
            heads = [(-items[0].priority, items[0].seq, g) for g, items in q.fifo_groups.items()
                     if items and g not in q.fifo_busy and items[0].available_at <= now]
            for *_, g in sorted(heads)[: limit - len(picked)]:
                picked.append(q.fifo_groups[g][0])
                q.fifo_busy.add(g)
        return [self._lease(q, item, now, lease_s) for item in picked]

    def _held(self, delivery: Delivery) -> tuple[_StepQueue, _Item] | None:
        """The queue and item of a delivery whose lease of this attempt is held (expired or not)."""
        q = self._queues.get(delivery.step)
        item = q.leased.get(delivery.id) if q is not None else None
        if q is None or item is None or item.attempts != delivery.attempt:
            return None  # the lease expired and the delivery went to someone else
        return q, item

    async def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Undo the claims of deliveries that never started (their attempt is not counted): due at once,
        at the end of the ready queue; one claimed for an expired lease goes back to that expired lease
        (claimed first and alone again, with the same ``last_owner``). ``first_delivered_at`` is cleared
        when the claim handed back was the first one."""
        now = self.clock()
        for d in deliveries:
            held = self._held(d)
            if held is None:
                continue
            q, item = held
            if d.expired:
                item.lease_until, item.owner = now, d.last_owner
            else:
                self._take(d)
                item.available_at = now
                if item.attempts == 1:
                    item.first_delivered_at = None
                if not item.fifo:
                    flow.ready(q, self._seq, item)
            item.attempts -= 1
            if q.wakeup is not None:
                q.wakeup.set()

    def _take(self, delivery: Delivery) -> _Item | None:
        held = self._held(delivery)
        if held is None:
            return None
        q, item = held
        del q.leased[delivery.id]
        item.lease_until = None
        if delivery.limited and q.wakeup is not None:
            q.wakeup.set()  # a slot freed: claims held back by a concurrency limit may go on
        if item.fifo:
            group = item.envelope.group_id or ""
            q.fifo_busy.discard(group)
        return item

    def _drop_fifo_head(self, item: _Item) -> None:
        q = self._queue(item.step)
        group = item.envelope.group_id or ""
        items = q.fifo_groups.get(group)
        if items and items[0] is item:
            items.popleft()
            if not items:
                del q.fifo_groups[group]
        if q.wakeup is not None:
            q.wakeup.set()

    async def complete(self, delivery: Delivery, outgoing: Sequence[Outgoing] = ()) -> bool:
        """Acknowledge and publish the outbox; False when the lease was lost (see ``complete_with_result``)."""
        return await self.complete_with_result(delivery, outgoing, None)

    async def retry(self, delivery: Delivery, delay_s: float) -> None:
        """Deliver again after ``delay_s``."""
        item = self._take(delivery)
        if item is None:
            return
        item.available_at = self.clock() + delay_s
        q = self._queue(item.step)
        if item.fifo:
            if q.wakeup is not None:
                q.wakeup.set()  # stays the head of its group; due at available_at
        elif delay_s <= 0:
            flow.ready(q, self._seq, item)
            if q.wakeup is not None:
                q.wakeup.set()
        else:
            heapq.heappush(q.delayed, (item.available_at, item.seq, item))

    async def dead_letter(self, delivery: Delivery, error: str, traceback: str, attempts: int | None = None
                          ) -> None:
        """Move to the dead-letter queue (with ``attempts`` as its attempt count when given)."""
        item = self._take(delivery)
        if item is None:
            return
        if item.fifo:
            self._drop_fifo_head(item)
        self._dead[item.id] = DeadLetter(id=item.id, step=item.step, envelope=item.envelope,
                                         attempts=item.attempts if attempts is None else attempts,
                                         error=error, traceback=traceback,
                                         failed_at=self.clock(), first_attempt_at=item.first_delivered_at,
                                         priority=item.priority, rate_key=item.rate_key,
                                         concurrency_key=item.conc_key)
        self._finish(item, HandleState.DEAD, error=error, attempts=attempts)

    async def extend(self, deliveries: Sequence[Delivery], lease_s: float) -> None:
        """Heartbeat: push leases forward."""
        now = self.clock()
        for d in deliveries:
            q = self._queues.get(d.step)
            item = q.leased.get(d.id) if q else None
            if item is not None and item.attempts == d.attempt:
                item.lease_until = now + lease_s

    async def wait(self, step: str, timeout_s: float, *, control: FlowControl | None = None) -> None:
        """Sleep until a publish for ``step``, the next delayed delivery, or ``timeout_s`` (with ``control``:
        until a claim with it may hand something out)."""
        q = self._queue(step)
        if q.wakeup is None:
            q.wakeup = StepEvent(step, self._hub)
        if control is not None or q.prio:
            due = self.next_claimable(step, control)
        elif q.ready:  # published before anyone waited: no wake-up was set for it
            q.wakeup.clear()
            return
        else:
            due = self._next_due(q)
        if due is not None:
            timeout_s = max(0.0, min(timeout_s, due - self.clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(q.wakeup.wait(), timeout_s)
        q.wakeup.clear()

    def next_claimable(self, step: str, control: FlowControl | None) -> float | None:
        """When a claim of ``step`` with ``control`` may hand something out (None: nothing scheduled)."""
        return flow.next_due(self._queue(step), self.clock(), control, self._starts.get(step, {}))

    def notify_all(self) -> None:
        """Wake every waiting consumer (after an injected clock moved forward)."""
        for q in self._queues.values():
            if q.wakeup is not None:
                q.wakeup.set()

    def _next_due(self, q: _StepQueue) -> float | None:
        times = [q.delayed[0][0]] if q.delayed else []
        times += [i.lease_until for i in q.leased.values() if i.lease_until is not None]
        times += [items[0].available_at for g, items in q.fifo_groups.items() if items and g not in q.fifo_busy]
        return min(times) if times else None

    async def stats(self) -> QueueStats:
        """Counts across every queue."""
        now = self.clock()
        ready = delayed = leased = 0
        per_step: dict[str, int] = {}
        due: list[float] = []
        for step, q in self._queues.items():
            n_ready = len(q.ready) + len(q.prio) + sum(1 for d in q.delayed if d[0] <= now)
            n_delayed = sum(1 for d in q.delayed if d[0] > now)
            due += [d[0] for d in q.delayed if d[0] > now]
            for g, items in q.fifo_groups.items():
                for i in items:
                    if i.lease_until is not None:
                        continue
                    if i.available_at <= now:
                        n_ready += 1
                    else:
                        n_delayed += 1
                        if g not in q.fifo_busy and i is items[0]:
                            due.append(i.available_at)
            due += [i.lease_until for i in q.leased.values() if i.lease_until is not None]
            ready += n_ready
            delayed += n_delayed
            leased += len(q.leased)
            per_step[step] = n_ready + n_delayed + len(q.leased)
        return QueueStats(ready=ready, delayed=delayed, leased=leased, dead=len(self._dead),
                          next_due_at=min(due) if due else None, per_step=per_step)

    async def step_stats(self, controls: Mapping[str, FlowControl] | None = None) -> dict[str, StepQueueStats]:
        """Per step with a delivery or a dead letter: ready, delayed, leased, dead, oldest ready due time,
        and (with its control) the ready ones held back by a limit."""
        now = self.clock()
        dead = Counter(d.step for d in self._dead.values())
        out: dict[str, StepQueueStats] = {}
        for step, q in self._queues.items():
            control = (controls or {}).get(step)
            throttled = flow.throttled(q, now, control, self._starts.get(step, {})) if control else {}
            ready = [i.available_at for i in q.ready] + [e[2].available_at for e in q.prio]
            ready += [at for at, _, _ in q.delayed if at <= now]
            delayed = sum(1 for at, _, _ in q.delayed if at > now)
            for items in q.fifo_groups.values():
                for i in items:
                    if i.lease_until is None and i.available_at <= now:
                        ready.append(i.available_at)
                    elif i.lease_until is None:
                        delayed += 1
            if ready or delayed or q.leased or dead[step]:
                out[step] = StepQueueStats(ready=len(ready), delayed=delayed, leased=len(q.leased),
                                           dead=dead[step], oldest_ready_at=min(ready, default=None),
                                           throttled=throttled)
        for step, n in dead.items():
            out.setdefault(step, StepQueueStats(dead=n))
        return out

    # -- dead letters ---------------------------------------------------------------------------
    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        return sorted(self._dead.values(), key=lambda d: d.failed_at, reverse=True)[:limit]

    async def dlq_get(self, dead_id: str) -> DeadLetter | None:
        """One dead letter."""
        return self._dead.get(dead_id)

    async def dlq_replay(self, dead_id: str) -> bool:
        """Back on the queue with fresh attempts."""
        dead = self._dead.pop(dead_id, None)
        if dead is None:
            return False
        self._enqueue(_Item(id=new_id(), step=dead.step, envelope=dead.envelope, seq=next(self._seq),
                            available_at=self.clock(), fifo=False, priority=dead.priority,
                            rate_key=dead.rate_key, conc_key=dead.concurrency_key))
        return True

    async def dlq_purge(self, dead_id: str) -> bool:
        """Delete one dead letter."""
        return self._dead.pop(dead_id, None) is not None

    # -- state ----------------------------------------------------------------------------------
    async def state_get(self, namespace: str, group: str, key: str) -> str | None:
        """JSON text or None."""
        return self._state.get(namespace, {}).get(group, {}).get(key)

    async def state_set(self, namespace: str, group: str, key: str, value_json: str) -> None:
        """Store JSON text."""
        self._state.setdefault(namespace, {}).setdefault(group, {})[key] = value_json

    async def state_delete(self, namespace: str, group: str, key: str) -> bool:
        """Delete a key."""
        g = self._state.get(namespace, {}).get(group)
        if g is None or key not in g:
            return False
        del g[key]
        return True

    async def state_items(self, namespace: str, group: str) -> dict[str, str]:
        """Every key of a group."""
        return dict(self._state.get(namespace, {}).get(group, {}))

    async def state_groups(self, namespace: str) -> list[str]:
        """Non-empty groups."""
        return sorted(g for g, items in self._state.get(namespace, {}).items() if items)

    async def state_clear(self, namespace: str, group: str) -> None:
        """Delete a group."""
        self._state.get(namespace, {}).pop(group, None)

    async def state_cas(
        self, namespace: str, group: str, key: str, expected_json: str | None, new_json: str | None
    ) -> bool:
        """Compare-and-set (trivially atomic on one event loop)."""
        if await self.state_get(namespace, group, key) != expected_json:
            return False
        if new_json is None:
            await self.state_delete(namespace, group, key)
        else:
            await self.state_set(namespace, group, key, new_json)
        return True

    # -- leases and metadata ------------------------------------------------------------------
    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Take or refresh a lease."""
        now = self.clock()
        held = self._leases.get(key)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[key] = (owner, now + ttl_s)
        return True

    async def release(self, key: str, owner: str) -> None:
        """Give up a lease."""
        held = self._leases.get(key)
        if held is not None and held[0] == owner:
            del self._leases[key]

    async def meta_get(self, key: str) -> str | None:
        """Metadata text."""
        return self._meta.get(key)

    async def meta_set(self, key: str, value: str) -> None:
        """Store metadata text."""
        self._meta[key] = value

    async def meta_cas(self, key: str, expected: str | None, new: str) -> bool:
        """Compare-and-set (trivially atomic on one event loop)."""
        if self._meta.get(key) != expected:
            return False
        self._meta[key] = new
        return True

    # -- traces ---------------------------------------------------------------------------------
    async def traces_add(self, runs: Sequence[TraceRun]) -> None:
        """Store run records."""
        for tid, started_at, raw in runs:
            entry = self._traces.pop(tid, None) or (0.0, [])
            entry[1].append(raw)
            self._traces[tid] = (max(entry[0], started_at), entry[1])

    async def traces_get(self, trace_id: str) -> list[str]:
        """Run records of one trace."""
        entry = self._traces.get(trace_id)
        return list(entry[1]) if entry else []

    async def traces_recent(self, limit: int) -> list[str]:
        """Most recently active first (by the latest run start)."""
        return sorted(self._traces, key=lambda t: self._traces[t][0], reverse=True)[:limit]

    async def traces_prune(self, before: float, keep: int) -> int:
        """Retention by age and count."""
        ranked = sorted(self._traces, key=lambda t: self._traces[t][0], reverse=True)
        drop = [t for i, t in enumerate(ranked) if i >= keep or self._traces[t][0] < before]
        for t in drop:
            del self._traces[t]
        return len(drop)


def create_backend(url: str, options: BackendOptions) -> MemoryBackend:
    """Entry point for ``memory://``."""
    return MemoryBackend(url, clock=options.clock)
