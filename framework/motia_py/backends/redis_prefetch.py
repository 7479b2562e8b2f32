"""Claims made by completions: when a worker finishes a delivery whose outbox goes to a step it is
waiting on, the completion script leases the new delivery to it at once (see
:mod:`.redis_scripts_complete`), and the step's next claim takes it from here without a round trip.

A chain A -> B -> C run by one worker then costs one round trip per hop (finish A and lease B), where it
would cost three steps otherwise (finish A; the blocking read wakes the worker; claim B).

The rules that keep a prefetch a claim like any other:

- only for a step some wait of this process is for (its consumer is idle, so it has a free slot), whose
  last claim had no flow control and asked for more than it got: at most that many more (the consumer's
  free slots then), and with that claim's lease;
- one prefetch per step at a time, and none while what the last one took is still here;
- what a consumer does not take within ``STALE_S`` (or a third of the lease, if shorter: nothing renews
  it here) is handed back, not counted as an attempt, like any claimed delivery that never started
  (its consumer stopped, or its step was removed by a reload).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from .records import Delivery, FlowControl
from .redis_wake import ActivityHub

STALE_S: Final = 2.0  # a prefetched delivery not taken by then goes back to its queue


class Prefetch:
    """The prefetch book-keeping of one Redis backend object (see the module docstring).

    Args:
        hub: the backend's pending waits (whose steps may be prefetched for, and which are woken).
        hand_back: returns deliveries that will not run here to their queues.
    """

    def __init__(self, hub: ActivityHub, hand_back: Callable[[list[Delivery]], Awaitable[None]]) -> None:
        self._hub = hub
        self._hand_back = hand_back
        self._shape: dict[str, tuple[int, float]] = {}  # step -> (free slots, lease) after its last claim
        self._asked: set[str] = set()  # a prefetch in flight
        self._stash: dict[str, list[Delivery]] = {}  # prefetched, not taken yet
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self.stale_s = STALE_S

    def claimed(self, step: str, limit: int, lease_s: float, got: int, control: FlowControl | None) -> None:
        """Note a claim: a consumer that got less than it asked for waits next, with that many free slots."""
        if control is None and got < limit:
            self._shape[step] = (limit - got, lease_s)
        else:
            self._shape.pop(step, None)

    def wanted(self, steps: Iterable[str]) -> list[tuple[str, int, float]]:
        """(step, limit, lease) of the steps a completion publishing to ``steps`` may claim for now; they
        count as asked until :meth:`answered`."""
        out = []
        for step in dict.fromkeys(steps):
            shape = self._shape.get(step)
            if (shape is not None and step not in self._asked and step not in self._stash
                    and self._hub.waiters_of(step)):
                self._asked.add(step)
                out.append((step, *shape))
        return out

    def answered(self, step: str, got: list[Delivery], lease_s: float) -> None:
        """What a completion claimed for ``step`` with a lease of ``lease_s`` (maybe nothing): kept for its
        consumer, whose wait is woken; handed back if not taken well before the lease runs out."""
        self._asked.discard(step)
        if not got:
            return
        self._stash[step] = got
        stale_s = min(self.stale_s, lease_s / 3)  # nobody renews a lease here: back long before it expires
        self._timers[step] = asyncio.get_running_loop().call_later(stale_s, self._stale, step)
        self._hub.nudge((step,))

    def forget(self, steps: Iterable[str]) -> None:
        """The prefetches for ``steps`` failed (no answer will come)."""
        self._asked.difference_update(steps)

    def stashed(self, steps: Iterable[str]) -> set[str]:
        """The steps among ``steps`` with prefetched deliveries waiting to be taken."""
        return {s for s in steps if s in self._stash}

    def take(self, step: str, limit: int) -> list[Delivery]:
        """Up to ``limit`` prefetched deliveries of ``step`` (the rest stay for its next claim)."""
        got = self._stash.pop(step, None)
        if not got:
            return []
        if len(got) > limit:
            self._stash[step], got = got[limit:], got[:limit]
        else:
            timer = self._timers.pop(step, None)
            if timer is not None:
                timer.cancel()
        return got

    def _stale(self, step: str) -> None:
        self._timers.pop(step, None)
        left = self._stash.pop(step, None)
        if left:
            task = asyncio.ensure_future(self._hand_back(left))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    async def close(self) -> None:
        """Hand back everything not taken (before the connection closes)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        stash, self._stash = self._stash, {}
        left = [d for got in stash.values() for d in got]
        if left:
            await self._hand_back(left)
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        self._shape.clear()
        self._asked.clear()
