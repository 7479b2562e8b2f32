"""The memory backend's priorities and flow control: the claim order across priorities, and claims,
look-aheads and counts under a :class:`~.records.FlowControl` (the rules are :class:`~.stores.QueueStore`'s).

Ready standard deliveries of priority 0 wait in the step's deque (the hot path, unchanged); the others
in a heap by (-priority, order of becoming ready). The functions here see the queue through the small
protocols below, so that :mod:`.memory` keeps its private classes.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from .flow import Admission, earliest, look_ahead
from .records import FlowControl

Starts = dict[str | None, list[float]]
"""One step's rate windows: bucket (see :func:`.flow.bucket_of`) -> start times."""


class Item(Protocol):
    """What the functions here read of a memory delivery."""

    seq: int
    available_at: float
    lease_until: float | None
    priority: int
    rate_key: str | None
    conc_key: str | None


class Queue(Protocol):
    """What the functions here read and change of one step's memory queue."""

    ready: deque[Any]
    prio: list[tuple[int, int, Any]]
    delayed: list[tuple[float, int, Any]]
    leased: dict[str, Any]
    fifo_groups: dict[str, deque[Any]]
    fifo_busy: set[str]


def ready(q: Queue, order: Iterator[int], item: Item) -> None:
    """Make ``item`` due now, at the end of its priority's order (``order``: the backend's counter)."""
    if item.priority:
        heapq.heappush(q.prio, (-item.priority, next(order), item))
    else:
        q.ready.append(item)


def _standard(q: Queue, now: float) -> list[Item]:
    """Ready standard deliveries (due delayed ones included) in claim order: priority, then readiness."""
    due = [(-i.priority, n, i) for at, n, i in q.delayed if at <= now]
    ranked = sorted([*q.prio, *due], key=lambda e: (e[0], e[1]))
    high = [e[2] for e in ranked if e[0] < 0]
    low = [e[2] for e in ranked if e[0] > 0]
    zero = [e[2] for e in ranked if e[0] == 0]  # due delayed ones of priority 0 join the deque's end
    return [*high, *q.ready, *zero, *low]


def candidates(q: Queue, now: float) -> list[Item]:
    """Every delivery a claim at ``now`` could hand out, in claim order: standard ones, then the heads of
    the free FIFO groups (highest priority, then oldest head first)."""
    heads = sorted((-items[0].priority, items[0].seq, g) for g, items in q.fifo_groups.items()
                   if items and g not in q.fifo_busy and items[0].available_at <= now)
    return [*_standard(q, now), *(q.fifo_groups[g][0] for _, _, g in heads)]


def admission(control: FlowControl, now: float, q: Queue, starts: Starts) -> Admission:
    """The checks of a claim at ``now``: running deliveries from the leases, starts from ``starts``."""
    running = Counter((i.conc_key or "") for i in q.leased.values()
                      if i.lease_until is not None and i.lease_until > now)
    window = now - control.rate_period_s
    return Admission(control, now, running, {b: [t for t in ts if t > window] for b, ts in starts.items()})


def take(q: Queue, limit: int, now: float, checks: Admission | None) -> list[Any]:
    """Choose up to ``limit`` ready deliveries in claim order, skipping those ``checks`` hold back, and
    take them out of the ready structures (FIFO heads stay in their group, which becomes busy)."""
    picked: list[Any] = []
    for item in candidates(q, now):
        if len(picked) >= limit or (checks is not None and checks.closed):
            break
        if checks is not None:
            if checks.check(item.rate_key, item.conc_key) is not None:
                continue
            checks.admit(item.rate_key, item.conc_key)
        picked.append(item)
    chosen = {id(i) for i in picked}
    q.ready = deque(i for i in q.ready if id(i) not in chosen)
    q.prio = [e for e in q.prio if id(e[2]) not in chosen]
    heapq.heapify(q.prio)
    if any(at <= now and id(i) in chosen for at, _, i in q.delayed):
        q.delayed = [e for e in q.delayed if id(e[2]) not in chosen]
        heapq.heapify(q.delayed)
    for g, items in q.fifo_groups.items():
        if items and id(items[0]) in chosen:
            q.fifo_busy.add(g)
    return picked


def record_starts(control: FlowControl, starts: Starts, now: float, items: Iterable[Item]) -> None:
    """Record the starts of ``items`` at ``now`` and forget the starts out of every window."""
    if not control.rate_limit:
        return
    for i in items:
        key = (i.rate_key or "") if control.rate_keyed else None
        starts.setdefault(key, []).append(now)
    window = now - control.rate_period_s
    for b in list(starts):
        starts[b] = [t for t in starts[b] if t > window]
        if not starts[b]:
            del starts[b]


def next_due(q: Queue, now: float, control: FlowControl | None, starts: Starts) -> float | None:
    """When a claim (with ``control``) may hand something out: ``now`` when it would now, else the next
    delayed delivery, lease expiry, FIFO head or rate window opening (None: nothing scheduled)."""
    ready = candidates(q, now)
    if control is None:
        startable, opens = bool(ready), None
    else:
        startable, opens, _ = look_ahead(admission(control, now, q, starts),
                                         ((i.rate_key, i.conc_key) for i in ready))
    if startable:
        return now
    later = [at for at, _, _ in q.delayed if at > now]
    later += [i.lease_until for i in q.leased.values() if i.lease_until is not None]
    later += [items[0].available_at for g, items in q.fifo_groups.items()
              if items and g not in q.fifo_busy and items[0].available_at > now]
    return earliest(opens, *later)


def throttled(q: Queue, now: float, control: FlowControl, starts: Starts) -> dict[str, int]:
    """Ready deliveries a claim with ``control`` would hold back now, per limit."""
    _, _, held = look_ahead(admission(control, now, q, starts),
                            ((i.rate_key, i.conc_key) for i in candidates(q, now)))
    return dict(held)
