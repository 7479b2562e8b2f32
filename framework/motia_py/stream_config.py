"""Stream files: what users write (``config`` of a ``*.stream.py`` / ``*_stream.py``) -> a frozen
:class:`StreamSpec`.

Motia's keys, camelCase or snake_case::

    config = {
        "name": "jobProgress",                       # ctx.streams.jobProgress, and the clients' streamName
        "schema": JobProgress,                       # pydantic model class or JSON-schema dict (items)
        "baseConfig": {"storageType": "default"},    # items live in the project's backend
        "canAccess": lambda subscription, auth: ..., # optional: may this client join? (sync or async)
    }

Unknown keys are errors that suggest the nearest valid key, as for steps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from msgspec import Struct

from .config_keys import normalise_keys
from .errors import StepConfigError
from .schema import Schema, to_schema

STREAM_SUFFIXES: Final = (".stream.py", "_stream.py")
NAMESPACE_PREFIX: Final = "__motia_py_stream:"
"""Stream items are kept in the state store under ``__motia_py_stream:<name>`` (a reserved namespace)."""

_KEYS: Final = {"name", "schema", "base_config", "can_access"}
_BASE_KEYS: Final = {"storage_type", "factory"}

CanAccess = Callable[[dict[str, Any], Any], Any]
"""``canAccess(subscription, auth_context) -> bool`` (or an awaitable of it); ``subscription`` is
``{"groupId": ..., "id": ...}`` (``id`` None for a whole group)."""


class StreamSpec(Struct, frozen=True, eq=False):  # identity equality: specs hold callables
    """Everything the runtime knows about one stream, checked when it was discovered."""

    name: str
    file: Path
    schema: Schema | None = None
    can_access: CanAccess | None = None
    line: int | None = None

    @property
    def namespace(self) -> str:
        """The reserved state namespace that holds this stream's items."""
        return NAMESPACE_PREFIX + self.name


def build_stream(config: Any, file: Path, line: int | None = None) -> StreamSpec:
    """Check a stream file's ``config`` and freeze it into a :class:`StreamSpec`.

    Raises:
        StepConfigError: the first problem found, naming the field and giving a hint.
    """
    if not isinstance(config, Mapping):
        raise StepConfigError(f"a stream's 'config' must be a dict, not {type(config).__name__}", field="config",
                              hint="config = {'name': 'todo', 'schema': Todo, 'baseConfig': {'storageType': "
                                   "'default'}}")
    cfg = normalise_keys(config, set(_KEYS), set(), "")
    name = cfg.get("name")
    if not isinstance(name, str) or not name.strip():
        raise StepConfigError("a stream needs a non-empty 'name'", field="name")
    base = cfg.get("base_config") or {}
    if not isinstance(base, Mapping):
        raise StepConfigError("'baseConfig' must be a dict such as {'storageType': 'default'}", field="baseConfig")
    base = normalise_keys(base, set(_BASE_KEYS), set(), "baseConfig")
    storage = base.get("storage_type", "default")
    if storage != "default":
        raise StepConfigError(f"'baseConfig.storageType' {storage!r} is not supported", field="baseConfig.storageType",
                              hint="use 'default': items live in the project's backend (memory, SQLite or Redis)")
    if "factory" in base:
        raise StepConfigError("'baseConfig.factory' is only for storageType 'custom', which motia-py does not "
                              "support", field="baseConfig.factory", hint="remove it")
    return StreamSpec(name=name, file=file, schema=to_schema(cfg.get("schema"), "schema"),
                      can_access=_can_access(cfg.get("can_access")), line=line)


def _can_access(value: Any) -> CanAccess | None:
    if value is None:
        return None
    if not callable(value):
        raise StepConfigError(f"'canAccess' must be a function (subscription, auth_context), not "
                              f"{type(value).__name__}", field="canAccess")
    try:
        params = [p for p in inspect.signature(value).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        variadic = any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(value).parameters.values())
    except (TypeError, ValueError):
        return value  # type: ignore[no-any-return]
    required = [p for p in params if p.default is p.empty]
    if len(required) > 2 or (len(params) < 2 and not variadic):
        got = ", ".join(p.name for p in params)
        raise StepConfigError(f"'canAccess' takes (subscription, auth_context), but it is canAccess({got})",
                              field="canAccess", hint="def can_access(subscription, auth_context): ...")
    return value  # type: ignore[no-any-return]


def is_stream_file(name: str) -> bool:
    """True for ``*.stream.py`` and ``*_stream.py`` file names."""
    return name.endswith(STREAM_SUFFIXES)
