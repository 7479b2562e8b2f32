"""Typed step configs (``EventConfig``, ``CronConfig``, ``ApiConfig``, ``NoopConfig``): the alternative to
dicts, checked by pydantic. They share the dict path: :func:`motia_py.config.build_step` takes their
``to_dict()``.

This module (and pydantic with it) is imported only when a step file uses a typed config: ``from
motia_py import EventConfig`` loads it on first use, so projects of dict configs never pay for it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic
from pydantic.alias_generators import to_camel

from .config_keys import IGNORED, KEYS, camel, normalise_keys, snake
from .errors import StepConfigError
from .spec import StepType

__all__ = ["ApiConfig", "CronConfig", "EventConfig", "NoopConfig", "TypedConfig"]


class _BaseConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        arbitrary_types_allowed=True,
        frozen=True,
    )
    step_type: ClassVar[StepType] = StepType.EVENT

    name: str
    description: str = ""
    flows: list[str] = []
    emits: list[Any] = []
    virtual_emits: list[Any] = []
    virtual_subscribes: list[str] = []

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = KEYS[cls.step_type] | IGNORED
            normalise_keys(data, allowed, set(), "")
            data = {snake(k): v for k, v in data.items() if snake(k) not in IGNORED and k != "type"}
        return data

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _as_step_config_error(cls, data: Any, handler: pydantic.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(camel(str(p)) for p in err["loc"]) or None
            raise StepConfigError(f"{cls.__name__}: '{where}': {err['msg']}", field=where) from exc

    def to_dict(self) -> dict[str, Any]:
        """The config as a Motia-style dict (snake_case keys), with ``type`` set."""
        out = {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}
        out["name"] = self.name
        out["type"] = self.step_type.value
        return out


class EventConfig(_BaseConfig):
    """Config of an event step: ``subscribes`` topics, optional ``input`` schema."""

    step_type: ClassVar[StepType] = StepType.EVENT
    subscribes: list[str]
    input: Any = None
    infrastructure: dict[str, Any] | None = None
    transactional: bool | None = None


class CronConfig(_BaseConfig):
    """Config of a cron step: ``cron`` expression (5 fields, or 6 with seconds first)."""

    step_type: ClassVar[StepType] = StepType.CRON
    cron: str
    timezone: str = "UTC"
    infrastructure: dict[str, Any] | None = None
    transactional: bool | None = None


class ApiConfig(_BaseConfig):
    """Config of an API step: ``path``, ``method`` and optional schemas and middleware."""

    step_type: ClassVar[StepType] = StepType.API
    path: str
    method: str = "GET"
    body_schema: Any = None
    response_schema: dict[Any, Any] | None = None
    query_params: list[Any] = []
    middleware: list[Any] = []
    transactional: bool | None = None


class NoopConfig(_BaseConfig):
    """Config of a noop step: graph-only edges (``virtualEmits``, ``virtualSubscribes``)."""

    step_type: ClassVar[StepType] = StepType.NOOP


TypedConfig = EventConfig | CronConfig | ApiConfig | NoopConfig
