"""The key vocabulary of step configs and the parsers of their fields.

Keys are kept in snake_case; camelCase (``virtualEmits``) is accepted everywhere. Every parser raises
:class:`~motia_py.errors.StepConfigError` naming the field, never anything else, whatever it is given:
hostile values (``10**400``, ``NaN``, a NUL byte, an object whose ``repr`` raises) included.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import StepConfigError
from .flow_control import QUEUE_KEYS as FLOW_KEYS
from .spec import StepType
from .suggest import did_you_mean, suggest

COMMON = {"type", "name", "description", "flows", "emits", "virtual_emits", "virtual_subscribes"}
IGNORED = {"include_files"}  # Motia cloud only
KEYS: dict[StepType, set[str]] = {
    StepType.EVENT: COMMON | {"subscribes", "input", "infrastructure", "transactional"},
    StepType.CRON: COMMON | {"cron", "timezone", "infrastructure", "transactional"},
    StepType.API: COMMON | {"path", "method", "body_schema", "response_schema", "query_params", "middleware",
                            "transactional"},
    StepType.NOOP: COMMON,
    StepType.STATE: COMMON | {"watch", "condition", "infrastructure", "transactional"},
}
INFRA_KEYS = {"handler", "queue", "cron"}
HANDLER_KEYS = {"timeout"}
HANDLER_IGNORED = {"ram", "cpu"}  # Motia cloud only
QUEUE_KEYS = {"type", "max_retries", "visibility_timeout", "delay_seconds", "concurrency", "backoff",
              "dedup_window"} | FLOW_KEYS
BACKOFF_KEYS = {"type", "delay", "max_delay", "jitter"}
CRON_POLICY_KEYS = {"overlap", "missed"}
EMIT_KEYS = {"topic", "label", "conditional", "schema"}
QUERY_PARAM_KEYS = {"name", "description", "schema", "default", "required"}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

MAX_DURATION_S = 10 * 365 * 86_400.0
"""The longest duration a config may give (10 years): past it, backends overflow their time stamps."""
MAX_COUNT = 2**31 - 1
"""The largest count (retries, concurrency) a config may give: it must fit every backend's integers."""

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def snake(key: str) -> str:
    """``virtualEmits`` -> ``virtual_emits`` (snake_case passes through)."""
    return _CAMEL.sub(r"_\1", key).lower()


def camel(key: str) -> str:
    """``virtual_emits`` -> ``virtualEmits``."""
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for an error message: shortened, and safe for any value (a 5,000-digit int, or
    an object whose ``__repr__`` raises, cannot turn an error message into a traceback)."""
    try:
        text = repr(value)
    except Exception:  # a user's broken __repr__, or an int past sys.get_int_max_str_digits()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def encodable(text: str) -> bool:
    """True when ``text`` can be written as UTF-8 (no lone surrogate such as ``'\\ud800'``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalise_keys(raw: Mapping[str, Any], allowed: set[str], ignored: set[str], where: str) -> dict[str, Any]:
    """Snake-case the keys of ``raw`` and reject unknown ones, suggesting the nearest valid key."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not encodable(key):
            raise StepConfigError(f"config keys must be strings, got {shown(key)}", field=where or None)
        k = snake(key)
        path = f"{where}.{key}" if where else key
        if k in ignored:
            continue
        if k not in allowed:
            camel_style = key != key.lower()
            shown_keys = {camel(a) if camel_style else a for a in allowed}
            best = suggest(key, shown_keys) or suggest(k, allowed)
            if best is not None and not camel_style:
                best = best if best in allowed else snake(best)
            raise StepConfigError(
                f"unknown key {shown(key)}" + (f" in '{where}'" if where else ""),
                field=path,
                hint=f"did you mean '{best}'?" if best else f"valid keys: {', '.join(sorted(shown_keys))}",
            )
        if k in out:
            raise StepConfigError(f"key '{key}' is given twice (camelCase and snake_case)", field=path)
        out[k] = value
    return out


def text(cfg: Mapping[str, Any], key: str) -> str:
    """An optional free-text field (``description``): a string, ``""`` when absent or ``None``."""
    value = cfg.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str) or not encodable(value):
        raise StepConfigError(f"'{camel(key)}' must be a string", field=camel(key))
    return value


def check_name(value: Any, where: str, field: str | None = None) -> str:
    """A name, topic or flow: a non-empty string without control characters or lone surrogates
    (backends store it as text, and logs and terminals print it). ``field`` defaults to ``where``."""
    field = field or where
    if not isinstance(value, str) or not value.strip():
        raise StepConfigError(f"'{where}' must be a non-empty string, got {shown(value)}", field=field)
    if _CONTROL.search(value) or not encodable(value):
        raise StepConfigError(f"'{where}' must not contain control characters or lone surrogates, got "
                              f"{shown(value)}", field=field)
    return value


def str_list(cfg: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """A list of names (``flows``, ``subscribes``): ``[]`` when absent."""
    value = cfg.get(key) or []
    where = camel(key)
    if isinstance(value, str):
        raise StepConfigError(f"'{where}' must be a list of strings, not a string", field=where,
                              hint=f"write [{shown(value)}]")
    if not isinstance(value, list | tuple):
        raise StepConfigError(f"'{where}' must be a list of non-empty strings", field=where)
    return tuple(check_name(v, f"{where}[{i}]", where) for i, v in enumerate(value))


def number(value: Any, where: str, *, minimum: float, maximum: float, integer: bool = False) -> Any:
    """A finite number (an integer when ``integer``) in ``[minimum, maximum]``; bools are refused."""
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise StepConfigError(f"'{where}' must be {kind} >= {minimum:g}, got {shown(value)}", field=where)
    if value < minimum or value > maximum:  # exact for ints of any size: no float() overflow
        raise StepConfigError(f"'{where}' must be {kind} from {minimum:g} to {maximum:g}, got {shown(value)}",
                              field=where)
    return value


def duration(value: Any, where: str, *, minimum: float) -> float:
    """A duration in seconds, finite, from ``minimum`` to :data:`MAX_DURATION_S`."""
    return float(number(value, where, minimum=minimum, maximum=MAX_DURATION_S))


def count(value: Any, where: str, *, minimum: int) -> int:
    """A whole count from ``minimum`` to :data:`MAX_COUNT`."""
    return int(number(value, where, minimum=minimum, maximum=MAX_COUNT, integer=True))


def boolean(value: Any, where: str) -> bool:
    """``true`` or ``false`` (no truthy strings or numbers)."""
    if not isinstance(value, bool):
        raise StepConfigError(f"'{where}' must be true or false, got {shown(value)}", field=where)
    return value


def values(kind: type[enum.Enum]) -> tuple[str, ...]:
    """The values of a closed vocabulary."""
    return tuple(str(m.value) for m in kind)


def choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, with a ``did you mean`` hint for a near miss."""
    if not isinstance(value, str) or value not in choices:
        near = did_you_mean(value, list(choices)) if isinstance(value, str) else None
        hint = near or f"one of {', '.join(choices)}"
        raise StepConfigError(f"'{where}' must be one of {', '.join(choices)}, got {shown(value)}", field=where,
                              hint=hint)
    return value


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    """A table/dict (``{}`` when ``None``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StepConfigError(f"'{where}' must be a table/dict", field=where)
    return value
