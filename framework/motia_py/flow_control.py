"""Flow control in a step's config: ``infrastructure.queue`` keys ``rateLimit {limit, period, key?}``,
``globalConcurrency``, ``concurrencyKey`` + ``concurrencyLimit`` and ``priority`` -> a frozen
:class:`FlowSpec`; and the keys and priority of one event, computed when it is published.

The backend enforces the limits when it claims (:class:`~motia_py.backends.records.FlowControl`, see
``QueueStore``); it never runs user code: a delivery's keys are computed here, by the process that
publishes the event, and stored with it.

A key is a dotted field path into the event data (``"customerId"``, ``"customer.id"``) or a function
``key(data)`` called with the event data (the decoded JSON, before input validation) in the process that
publishes the event; keep it pure and fast. Its value becomes text: a string as it is, ``null`` or a
missing field as ``""``, anything else as its JSON text (``42``, ``true``). Deliveries with equal texts
share a limit.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .backends.records import FlowControl
from .errors import InvalidEmitError, StepConfigError
from .suggest import did_you_mean

PRIORITY_MIN: Final = -1000
PRIORITY_MAX: Final = 1000
QUEUE_KEYS: Final = frozenset({"rate_limit", "global_concurrency", "concurrency_key", "concurrency_limit", "priority"})
"""The ``infrastructure.queue`` keys of this module (snake_case; camelCase is accepted too)."""
_RATE_KEYS: Final = ("limit", "period", "key")


@dataclass(frozen=True, slots=True, eq=False)  # identity equality: may hold a function
class FlowKey:
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


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    """``rateLimit``: at most ``limit`` handler starts per ``period_s`` seconds (per ``key`` value)."""

    limit: int
    period_s: float
    key: FlowKey | None = None


@dataclass(frozen=True, slots=True)
class FlowSpec:
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
        return FlowControl(rate_limit=rate.limit if rate else 0, rate_period_s=rate.period_s if rate else 1.0,
                           rate_keyed=bool(rate and rate.key), global_concurrency=self.global_concurrency,
                           key_concurrency=self.concurrency_limit if self.concurrency_key else 0)

    @property
    def keyed(self) -> bool:
        """Whether an event's keys must be computed for this step."""
        return self.concurrency_key is not None or (self.rate_limit is not None and self.rate_limit.key is not None)

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


def _int(value: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None
                                                                                     and value > maximum):
        top = f" and <= {maximum}" if maximum is not None else ""
        raise StepConfigError(f"'{where}' must be an integer >= {minimum}{top}, got {value!r}", field=where)
    return value


def _key(value: Any, where: str) -> FlowKey:
    if isinstance(value, str):
        if not value or any(not part for part in value.split(".")):
            raise StepConfigError(f"'{where}' must be a field path such as 'customerId' or 'customer.id', "
                                  f"got {value!r}", field=where)
        return FlowKey(path=value)
    if callable(value):
        try:
            inspect.signature(value).bind(None)
        except TypeError:
            raise StepConfigError(f"'{where}' must take one argument (the event data)", field=where) from None
        except ValueError:
            pass  # a builtin without a signature: trust it
        return FlowKey(fn=value)
    raise StepConfigError(f"'{where}' must be a field path (a string) or a function of the event data, "
                          f"got {value!r}", field=where)


def _rate(value: Any, where: str) -> RateLimitSpec:
    if not isinstance(value, Mapping):
        raise StepConfigError(f"'{where}' must be a table/dict {{limit, period, key?}}", field=where)
    for k in value:
        if k not in _RATE_KEYS:
            raise StepConfigError(f"unknown key '{k}' in '{where}'", field=f"{where}.{k}",
                                  hint=did_you_mean(str(k), list(_RATE_KEYS)) or "valid keys: limit, period, key")
    for k in ("limit", "period"):
        if k not in value:
            raise StepConfigError(f"'{where}' needs '{k}'", field=f"{where}.{k}",
                                  hint="e.g. {'limit': 10, 'period': 1} allows 10 starts per second")
    period = value["period"]
    if isinstance(period, bool) or not isinstance(period, int | float) or not 0 < period <= 86_400 * 366:
        raise StepConfigError(f"'{where}.period' must be a number of seconds > 0, got {period!r}",
                              field=f"{where}.period")
    key = value.get("key")
    return RateLimitSpec(limit=_int(value["limit"], f"{where}.limit", 1, 1_000_000), period_s=float(period),
                         key=None if key is None else _key(key, f"{where}.key"))


def parse_flow(queue: Mapping[str, Any], where: str = "infrastructure.queue") -> FlowSpec:
    """The :class:`FlowSpec` of an ``infrastructure.queue`` table (its keys already snake_case).

    Raises:
        StepConfigError: a value of the wrong type or out of range, naming the field.
    """
    rate = queue.get("rate_limit")
    conc_key = queue.get("concurrency_key")
    if "concurrency_limit" in queue and conc_key is None:
        raise StepConfigError(f"'{where}.concurrencyLimit' needs 'concurrencyKey'", field=f"{where}.concurrencyLimit",
                              hint="use 'globalConcurrency' to limit the step's running handlers as a whole")
    priority = queue.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise StepConfigError(f"'{where}.priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, "
                              f"got {priority!r}", field=f"{where}.priority")
    return FlowSpec(
        priority=priority,
        rate_limit=None if rate is None else _rate(rate, f"{where}.rateLimit"),
        global_concurrency=0 if queue.get("global_concurrency") is None else _int(
            queue["global_concurrency"], f"{where}.globalConcurrency", 1),
        concurrency_key=None if conc_key is None else _key(conc_key, f"{where}.concurrencyKey"),
        concurrency_limit=_int(queue.get("concurrency_limit", 1), f"{where}.concurrencyLimit", 1),
    )
