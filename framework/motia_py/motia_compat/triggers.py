"""The trigger builders of Motia 1.0: ``http``, ``queue``, ``cron``, ``state``, ``stream`` (and ``api``, the
deprecated name of ``http``). A misspelt keyword is a :class:`~motia_py.errors.StepConfigError` with
the nearest valid one, reported by ``motia-py validate`` like every config error.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import StepConfigError
from ..suggest import did_you_mean
from .types import ApiTrigger, CronTrigger, QueueConfig, QueueTrigger, StateTrigger, StreamTrigger

_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")


def _refuse(builder: str, unknown: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in unknown:
        hint = did_you_mean(key, known) or f"its keywords: {', '.join(known)}"
        raise StepConfigError(f"{builder}() got an unknown keyword {key!r}", field=key, hint=hint)


def http(method: str, path: str, *, body_schema: Any = None, response_schema: dict[int, Any] | None = None,
         query_params: list[Any] | None = None, middleware: list[Any] | None = None, condition: Any = None,
         **unknown: Any) -> ApiTrigger:
    """An HTTP trigger: ``http("POST", "/orders/:id", body_schema=..., condition=...)``."""
    _refuse("http", unknown, ("body_schema", "response_schema", "query_params", "middleware", "condition"))
    verb = method.upper() if isinstance(method, str) else method
    if verb not in _METHODS:
        hint = did_you_mean(str(verb), _METHODS) or f"one of {', '.join(_METHODS)}"
        raise StepConfigError(f"http(): {method!r} is not an HTTP method", field="method", hint=hint)
    return ApiTrigger(path=path, method=verb, condition=condition, body_schema=body_schema,
                      response_schema=response_schema, query_params=query_params, middleware=middleware)


def api(method: str, path: str, **options: Any) -> ApiTrigger:
    """Deprecated name of :func:`http`."""
    warnings.warn("api() is deprecated, use http() instead", DeprecationWarning, stacklevel=2)
    return http(method, path, **options)


def queue(topic: str, *, input: Any = None, config: QueueConfig | Mapping[str, Any] | None = None,
          condition: Any = None, **unknown: Any) -> QueueTrigger:
    """A queue trigger: ``queue("order.created", input=Schema, config=QueueConfig(...), condition=...)``."""
    _refuse("queue", unknown, ("input", "config", "condition"))
    if isinstance(config, Mapping):
        config = QueueConfig.model_validate(config)
    return QueueTrigger(topic=topic, condition=condition, input=input, config=config)


def cron(expression: str, *, condition: Any = None, **unknown: Any) -> CronTrigger:
    """A cron trigger: 6 fields with seconds first (``"0 */5 * * * *"``), or 7 with a year last."""
    _refuse("cron", unknown, ("condition",))
    return CronTrigger(expression=expression, condition=condition)


def state(*, condition: Any = None, **unknown: Any) -> StateTrigger:
    """A state trigger: runs when state of the step's namespace changes (``condition`` filters)."""
    _refuse("state", unknown, ("condition",))
    return StateTrigger(condition=condition)


def stream(stream_name: str, *, group_id: str | None = None, item_id: str | None = None, condition: Any = None,
           **unknown: Any) -> StreamTrigger:
    """A stream trigger: runs when an item of the stream (of one group, or one item) changes."""
    _refuse("stream", unknown, ("group_id", "item_id", "condition"))
    return StreamTrigger(stream_name=stream_name, group_id=group_id, item_id=item_id, condition=condition)
