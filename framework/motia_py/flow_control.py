"""Flow control in a step's config: ``infrastructure.queue`` keys ``rateLimit {limit, period, key?}``,
``globalConcurrency``, ``concurrencyKey`` + ``concurrencyLimit`` and ``priority`` -> a frozen
:class:`FlowSpec`; and the keys and priority of one event, computed when it is published.

:mod:`.flow_config` parses the keys. The backend enforces the limits when it claims
(:class:`~motia_py.backends.records.FlowControl`, see ``QueueStore``); it never runs user code: a
delivery's keys are computed here, by the process that publishes the event, and stored with it.

A key is a dotted field path into the event data (``"customerId"``, ``"customer.id"``) or a function
``key(data)`` called with the event data (the decoded JSON, before input validation) in the process that
publishes the event; keep it pure and fast. Its value becomes text: a string as it is, ``null`` or a
missing field as ``""``, anything else as its JSON text (``42``, ``true``). Deliveries with equal texts
share a limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from msgspec import Struct

from .backends.records import FlowControl
from .errors import InvalidEmitError

RATE_MARGIN_S: Final = 0.025
"""How much longer than its period a rate window lasts (at most 5% of the period): a handler starts a
little after its claim, and not always equally late, so windows measured at the claims alone would let a
downstream API see a few more starts than the limit in some window of its own."""
PRIORITY_MIN: Final = -1000
PRIORITY_MAX: Final = 1000
QUEUE_KEYS: Final = frozenset({"rate_limit", "global_concurrency", "concurrency_key", "concurrency_limit", "priority"})
"""The ``infrastructure.queue`` keys of this module (snake_case; camelCase is accepted too)."""


class FlowKey(Struct, frozen=True, eq=False):  # identity equality: may hold a function
    """Where a keyed limit finds its key: a dotted field path, or a function of the event data."""

    path: str | None = None
    fn: Callable[[Any], Any] | None = None

    def of(self, data: Any, what: str) -> str:
        """The key text of ``data`` (see the module docstring); ``what`` names the limit in errors.

        Raises:
            InvalidEmitError: the key function raised.
        """
        if self.fn is not None:
            try:
                value = self.fn(data)
            except Exception as exc:
                raise InvalidEmitError(f"the {what} function failed on this event: {type(exc).__name__}: {exc}"
                                       ) from exc
        else:
            value = data
            for part in (self.path or "").split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def describe(self) -> str:
        """The path, or the function's name (for messages and the Workbench)."""
        return self.path if self.path is not None else getattr(self.fn, "__name__", "a function")


class RateLimitSpec(Struct, frozen=True):
    """``rateLimit``: at most ``limit`` handler starts per ``period_s`` seconds (per ``key`` value)."""

    limit: int
    period_s: float
    key: FlowKey | None = None


class FlowSpec(Struct, frozen=True):
    """A step's fleet-wide limits and default priority (see the module docstring)."""

    priority: int = 0
    rate_limit: RateLimitSpec | None = None
    global_concurrency: int = 0  # 0: no limit
    concurrency_key: FlowKey | None = None
    concurrency_limit: int = 1  # per concurrency key value

    @property
    def control(self) -> FlowControl | None:
        """What the backend enforces for this step (None: no limit)."""
        rate = self.rate_limit
        if rate is None and not self.global_concurrency and self.concurrency_key is None:
            return None
        period = rate.period_s + min(RATE_MARGIN_S, rate.period_s * 0.05) if rate else 1.0
        return FlowControl(rate_limit=rate.limit if rate else 0, rate_period_s=period,
                           rate_keyed=bool(rate and rate.key), global_concurrency=self.global_concurrency,
                           key_concurrency=self.concurrency_limit if self.concurrency_key else 0)

    @property
    def keyed(self) -> bool:
        """Whether an event's keys must be computed for this step."""
        return self.concurrency_key is not None or (self.rate_limit is not None and self.rate_limit.key is not None)

    def describe(self) -> list[str]:
        """The limits and default priority in words, one line each (for the Workbench)."""
        out = []
        if self.rate_limit is not None:
            rate, key = self.rate_limit, self.rate_limit.key
            out.append(f"rateLimit: {rate.limit} per {rate.period_s:g} s" + (f" per {key.describe()}" if key else ""))
        if self.global_concurrency:
            out.append(f"globalConcurrency: {self.global_concurrency}")
        if self.concurrency_key is not None:
            out.append(f"concurrencyKey: {self.concurrency_key.describe()} ({self.concurrency_limit} each)")
        if self.priority:
            out.append(f"priority: {self.priority}")
        return out

    def keys(self, data: Any) -> tuple[str | None, str | None]:
        """(rate key, concurrency key) of an event's data for this step (None: no such keyed limit)."""
        rate = self.rate_limit.key if self.rate_limit is not None else None
        return (None if rate is None else rate.of(data, "rateLimit.key"),
                None if self.concurrency_key is None else self.concurrency_key.of(data, "concurrencyKey"))


def check_priority(value: Any, where: str = "priority") -> int:
    """``value`` as a priority.

    Raises:
        InvalidEmitError: not an integer from -1000 to 1000.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise InvalidEmitError(f"{where} must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, got {value!r}")
    return value
