"""The config of a state-triggered step (``type: "state"``): which state it watches, and its condition.

::

    config = {
        "type": "state",
        "name": "OnJobStatus",
        "flows": ["job-processing"],
        "watch": {"namespace": "jobs", "group": "jobs"},  # both optional (see below)
        "condition": lambda input, ctx: input["new_value"]["status"] == "failed",  # optional
    }

    async def handler(input, ctx):  # input = {"group_id", "item_id", "old_value", "new_value"}
        ...

- ``watch.namespace``: the state namespace; by default the one the step's own ``ctx.state`` uses (its
  first flow's namespace).
- ``watch.group``: one group of it; by default every group.
- ``condition(input, ctx)``: run before the handler (sync or async); when false the change is
  acknowledged without running the handler.

Motia 1.0's ``state(condition=...)`` trigger maps onto this with both ``watch`` keys left to their
defaults and its condition as ``condition``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final

from msgspec import Struct

from .errors import StepConfigError

RESERVED_PREFIX: Final = "__motia_py"
WATCH_KEYS: Final = {"namespace", "group"}

Condition = Callable[[Any, Any], Any]
"""``condition(input, ctx) -> bool`` (or an awaitable of it)."""


class StateWatch(Struct, frozen=True, eq=False):  # identity equality: holds a callable
    """What a state-triggered step watches (``namespace`` None: the step's own namespace)."""

    namespace: str | None = None
    group: str | None = None
    condition: Condition | None = None


def parse_watch(watch: Mapping[str, Any], condition: Any) -> StateWatch:
    """Check the ``watch`` table (keys already normalised) and the ``condition``.

    Raises:
        StepConfigError: naming the field.
    """
    values: dict[str, str | None] = {}
    for key in ("namespace", "group"):
        value = watch.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise StepConfigError(f"'watch.{key}' must be a non-empty string", field=f"watch.{key}")
        values[key] = value
    namespace = values["namespace"]
    if namespace is not None and namespace.startswith(RESERVED_PREFIX):
        raise StepConfigError(f"'watch.namespace' {namespace!r} is reserved for motia-py's own records",
                              field="watch.namespace", hint="watch a flow's state namespace")
    if condition is not None:
        if not callable(condition):
            raise StepConfigError(f"'condition' must be a function (input, ctx), not {type(condition).__name__}",
                                  field="condition")
        _check_arity(condition)
    return StateWatch(namespace=namespace, group=values["group"], condition=condition)


def _check_arity(fn: Callable[..., Any]) -> None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(required) > 2 or (len(positional) < 2 and not variadic):
        got = ", ".join(p.name for p in params)
        raise StepConfigError(f"'condition' takes (input, ctx), but it is condition({got})", field="condition",
                              hint="def condition(input, ctx): return input['new_value'] is not None")
