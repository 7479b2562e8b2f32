"""Flow control as the memory and SQLite backends apply it in their claims: :class:`Admission` checks the
candidates of one claim, in claim order, against a step's :class:`~.records.FlowControl`.

The backend gives it what it knows at the claim's *now*: the running (leased, unexpired) deliveries per
concurrency key, and the starts of the rate windows still open. The rules are those of
:class:`~.stores.QueueStore` (the Redis backend keeps the same rules in Lua, :mod:`.redis_scripts_flow`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from .records import FlowControl

GLOBAL: Final = "globalConcurrency"
KEY: Final = "concurrencyKey"
RATE: Final = "rateLimit"


def bucket_of(control: FlowControl, rate_key: str | None) -> str | None:
    """The rate window a delivery counts in: its rate key (``""`` for none) when keyed, else the step's
    one window (``None``)."""
    return (rate_key or "") if control.rate_keyed else None


class Admission:
    """The checks of one claim (or of a look-ahead that claims nothing).

    Args:
        control: the step's limits.
        now: the claim's time.
        running: running deliveries of the step per concurrency key (``""`` for none).
        starts: per rate window (see :func:`bucket_of`), the start times of the window ending at ``now``
            (later than ``now - rate_period_s``).
    """

    def __init__(self, control: FlowControl, now: float, running: Mapping[str, int],
                 starts: Mapping[str | None, Iterable[float]]) -> None:
        self.control = control
        self.now = now
        self.running = Counter(running)
        self.total = sum(self.running.values())
        self.starts = {b: sorted(ts) for b, ts in starts.items()}

    def check(self, rate_key: str | None, concurrency_key: str | None) -> str | None:
        """``None`` when a delivery with these keys may start now, else the limit it waits for."""
        c = self.control
        if c.global_concurrency and self.total >= c.global_concurrency:
            return GLOBAL
        if c.key_concurrency and self.running[concurrency_key or ""] >= c.key_concurrency:
            return KEY
        if c.rate_limit and len(self.starts.get(bucket_of(c, rate_key), ())) >= c.rate_limit:
            return RATE
        return None

    def admit(self, rate_key: str | None, concurrency_key: str | None, *, slot: bool = True) -> None:
        """Count a start (and, with ``slot``, a running delivery) handed out by this claim."""
        if slot:
            self.total += 1
            self.running[concurrency_key or ""] += 1
        if self.control.rate_limit:
            self.starts.setdefault(bucket_of(self.control, rate_key), []).append(self.now)

    @property
    def closed(self) -> bool:
        """Nothing more may start in this claim (the step's concurrency or its one rate window is full)."""
        c = self.control
        if c.global_concurrency and self.total >= c.global_concurrency:
            return True
        return bool(c.rate_limit and not c.rate_keyed and len(self.starts.get(None, ())) >= c.rate_limit)

    def opens_at(self, rate_key: str | None) -> float | None:
        """When the rate window of ``rate_key`` admits one more start (None: no rate limit)."""
        c = self.control
        if not c.rate_limit:
            return None
        ts = self.starts.get(bucket_of(c, rate_key), [])
        if len(ts) < c.rate_limit:
            return self.now
        return ts[len(ts) - c.rate_limit] + c.rate_period_s


def look_ahead(admission: Admission, candidates: Iterable[tuple[str | None, str | None]]
               ) -> tuple[bool, float | None, Counter[str]]:
    """Run every candidate ``(rate_key, concurrency_key)`` (ready deliveries, in claim order) through
    ``admission`` as an unlimited claim would, claiming nothing.

    Returns whether one may start now, the earliest time a rate window opens for one held back by a rate
    limit (None: none is), and how many are held back per limit.
    """
    startable = False
    opens: float | None = None
    held: Counter[str] = Counter()
    for rate_key, concurrency_key in candidates:
        reason = admission.check(rate_key, concurrency_key)
        if reason is None:
            startable = True
            admission.admit(rate_key, concurrency_key)
            continue
        held[reason] += 1
        if reason == RATE:
            at = admission.opens_at(rate_key)
            if at is not None and (opens is None or at < opens):
                opens = at
    return startable, opens, held


def earliest(*times: float | None) -> float | None:
    """The smallest of the times given (None when none is)."""
    known = [t for t in times if t is not None]
    return min(known) if known else None
