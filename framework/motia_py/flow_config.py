"""Parsing the flow-control keys of ``infrastructure.queue`` (``rateLimit``, ``globalConcurrency``,
``concurrencyKey``, ``concurrencyLimit``, ``priority``) into a :class:`~.flow_control.FlowSpec`.

Like every config parser (:mod:`.config_keys`), it raises :class:`~.errors.StepConfigError` naming the
field, whatever it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Final

from .config_keys import count, duration, normalise_keys, number, shown
from .errors import StepConfigError
from .flow_control import PRIORITY_MAX, PRIORITY_MIN, FlowKey, FlowSpec, RateLimitSpec

_RATE_KEYS: Final = {"limit", "period", "key"}
_PATH_HINT: Final = "a field path such as 'customerId' or 'customer.id', or a function of the event data"


def _key(value: Any, where: str) -> FlowKey:
    if isinstance(value, str):
        if not value or any(not part for part in value.split(".")):
            raise StepConfigError(f"'{where}' must be {_PATH_HINT}, got {shown(value)}", field=where)
        return FlowKey(path=value)
    if callable(value):
        try:
            inspect.signature(value).bind(None)
        except TypeError:
            raise StepConfigError(f"'{where}' must take one argument (the event data)", field=where) from None
        except ValueError:
            pass  # no signature to read (a builtin): it is called as it is
        return FlowKey(fn=value)
    raise StepConfigError(f"'{where}' must be {_PATH_HINT}, got {shown(value)}", field=where)


def _rate(value: Any, where: str) -> RateLimitSpec:
    if not isinstance(value, Mapping):
        raise StepConfigError(f"'{where}' must be a table/dict {{limit, period, key?}}, got {shown(value)}",
                              field=where)
    rate = normalise_keys(value, set(_RATE_KEYS), set(), where)
    for k in ("limit", "period"):
        if k not in rate:
            raise StepConfigError(f"'{where}' needs '{k}'", field=f"{where}.{k}",
                                  hint="e.g. {'limit': 10, 'period': 1} allows 10 starts per second")
    return RateLimitSpec(limit=count(rate["limit"], f"{where}.limit", minimum=1),
                         period_s=duration(rate["period"], f"{where}.period", minimum=0.001),
                         key=None if rate.get("key") is None else _key(rate["key"], f"{where}.key"))


def parse_flow(queue: Mapping[str, Any], where: str = "infrastructure.queue") -> FlowSpec:
    """The :class:`~.flow_control.FlowSpec` of an ``infrastructure.queue`` table (keys already snake_case).

    Raises:
        StepConfigError: a value of the wrong type or out of range, naming the field.
    """
    conc_key = queue.get("concurrency_key")
    if queue.get("concurrency_limit") is not None and conc_key is None:
        raise StepConfigError(f"'{where}.concurrencyLimit' needs 'concurrencyKey'", field=f"{where}.concurrencyLimit",
                              hint="use 'globalConcurrency' to limit the step's running handlers as a whole")
    rate, limit, total = queue.get("rate_limit"), queue.get("concurrency_limit"), queue.get("global_concurrency")
    return FlowSpec(
        priority=int(number(queue.get("priority", 0), f"{where}.priority", minimum=PRIORITY_MIN,
                            maximum=PRIORITY_MAX, integer=True)),
        rate_limit=None if rate is None else _rate(rate, f"{where}.rateLimit"),
        global_concurrency=0 if total is None else count(total, f"{where}.globalConcurrency", minimum=1),
        concurrency_key=None if conc_key is None else _key(conc_key, f"{where}.concurrencyKey"),
        concurrency_limit=1 if limit is None else count(limit, f"{where}.concurrencyLimit", minimum=1),
    )
